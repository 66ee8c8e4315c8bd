/**
 * Backend selection: the automatic choice, the wasm binaries located in the installed package, our WebGPU
 * device creation (against a stand-in adapter that behaves like Deno's: features tfjs would request wrongly,
 * info unreadable after requestDevice), clear errors, and the faster wasm Slice kernel.
 */
import assert from "node:assert/strict";
import { T2tVitError } from "../../src/core/errors.ts";
import { type AdapterLike, type GpuLike, requestWebGpuDevice } from "../../zoo/backend/backend.ts";
import { currentBackend, locateWasmBinaries, setBackend, tf } from "../../zoo/mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "setBackend() picks the best available: webgpu only on a hardware adapter, else wasm",
  ...opts,
  fn: async () => {
    const name = await setBackend();
    assert.equal(tf.getBackend(), name);
    assert.equal(currentBackend(), name);
    const gpu = (globalThis.navigator as { gpu?: GpuLike }).gpu;
    const adapter = gpu ? await gpu.requestAdapter() : null;
    const info = adapter?.info as { description?: string; isFallbackAdapter?: boolean } | undefined;
    const software = !adapter || info?.isFallbackAdapter === true ||
      /llvmpipe|lavapipe|swiftshader/i.test(info?.description ?? "");
    assert.equal(name, software ? "wasm" : "webgpu");
  },
});

Deno.test("the wasm binaries are found in the installed @tensorflow/tfjs-backend-wasm package", () => {
  const dir = locateWasmBinaries();
  assert.ok(dir, "not found");
  assert.match(dir, /tfjs-backend-wasm[@/].*dist\/$/);
  for (
    const f of [
      "tfjs-backend-wasm.wasm",
      "tfjs-backend-wasm-simd.wasm",
      "tfjs-backend-wasm-threaded-simd.wasm",
    ]
  ) {
    assert.ok(Deno.statSync(new URL(f, dir)).size > 100_000, f);
  }
});

Deno.test("switching backends, and a clear error for an unknown one", async () => {
  assert.equal(await setBackend("cpu"), "cpu");
  assert.equal(tf.getBackend(), "cpu");
  assert.equal(await setBackend("wasm"), "wasm");
  assert.equal(tf.getBackend(), "wasm");
  await assert.rejects(
    setBackend("webgl" as never),
    (e: unknown) => e instanceof T2tVitError && /unknown backend 'webgl'/.test(String(e)),
  );
});

/** An adapter that behaves like Deno's: rejects nested feature lists, and its info is gone after requestDevice. */
function fakeGpu(description: string, fallback = false): { gpu: GpuLike; calls: unknown[] } {
  const calls: unknown[] = [];
  let consumed = false;
  const adapter: AdapterLike = {
    features: new Set(["timestamp-query", "bgra8unorm-storage", "shader-f16"]),
    limits: {
      maxComputeWorkgroupStorageSize: 32768,
      maxComputeWorkgroupsPerDimension: 65535,
      maxStorageBufferBindingSize: 134217728,
      maxBufferSize: 2147483647,
      maxComputeWorkgroupSizeX: 256,
      maxComputeInvocationsPerWorkgroup: 256,
      maxTextureDimension2D: 8192,
    },
    get info() {
      if (consumed) throw new TypeError("adapter consumed");
      return {
        vendor: "acme",
        architecture: "rdna9",
        device: "0x1234",
        description,
        isFallbackAdapter: fallback,
      };
    },
    requestDevice(desc) {
      calls.push(desc);
      if (!desc.requiredFeatures.every((f) => typeof f === "string")) {
        throw new TypeError("requiredFeatures: expected a sequence of GPUFeatureName");
      }
      consumed = true;
      return Promise.resolve({ fake: "device" });
    },
  };
  return { gpu: { requestAdapter: () => Promise.resolve(adapter) }, calls };
}

Deno.test("our WebGPU device creation: info read before requestDevice, flat features, adapter limits", async () => {
  const { gpu, calls } = fakeGpu("Radeon 9000");
  const { device, adapterInfo } = await requestWebGpuDevice(gpu);
  assert.deepEqual(device, { fake: "device" });
  assert.deepEqual(adapterInfo, {
    vendor: "acme",
    architecture: "rdna9",
    device: "0x1234",
    description: "Radeon 9000",
    isSoftware: false,
  });
  const desc = calls[0] as { requiredFeatures: unknown[]; requiredLimits: Record<string, number> };
  assert.deepEqual(desc.requiredFeatures, []);
  assert.equal(desc.requiredLimits.maxStorageBufferBindingSize, 134217728);
  assert.equal(desc.requiredLimits.maxComputeWorkgroupStorageSize, 32768);
  assert.ok(!("maxTextureDimension2D" in desc.requiredLimits));
});

Deno.test("software adapters are recognised (fallback flag or llvmpipe/lavapipe/SwiftShader)", async () => {
  for (
    const [desc, fallback] of [["llvmpipe (LLVM 15.0.6, 256 bits)", false], ["SwiftShader Device", false], [
      "x",
      true,
    ]] as const
  ) {
    const { adapterInfo } = await requestWebGpuDevice(fakeGpu(desc, fallback).gpu);
    assert.ok(adapterInfo.isSoftware, desc);
  }
  await assert.rejects(requestWebGpuDevice(null), /navigator\.gpu is undefined/);
  await assert.rejects(requestWebGpuDevice({ requestAdapter: () => Promise.resolve(null) }), /no adapter/);
});

Deno.test("the wasm Slice kernel (heap views, no full copies) equals the cpu backend's", async () => {
  await setBackend("wasm");
  const cases: [number[], number[], number[]][] = [
    [[10], [3], [4]],
    [[4, 5], [1, 2], [2, 3]],
    [[4, 5], [0, 0], [4, 5]],
    [[6, 7, 8], [2, 0, 0], [1, 7, 8]], // contiguous
    [[6, 7, 8], [1, 2, 3], [3, -1, 4]],
    [[2, 3, 4, 5], [1, 1, 1, 1], [1, 2, 3, 4]],
    [[2, 3, 4, 5, 6], [0, 1, 0, 2, 1], [2, 1, 4, 2, 5]],
    [[2, 3, 2, 3, 2, 3], [1, 0, 1, 0, 1, 0], [1, 3, 1, 2, 1, 3]],
    [[5, 5], [2, 2], [0, 3]], // empty
  ];
  for (const [shape, begin, size] of cases) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = Float32Array.from({ length: n }, (_, i) => i * 0.5 - 3);
    await setBackend("cpu");
    const want = tf.slice(tf.tensor(values, shape), begin, size);
    const wantData = await want.data();
    const wantShape = want.shape;
    await setBackend("wasm");
    const x = tf.tensor(values, shape);
    const got = tf.slice(x, begin, size);
    assert.deepEqual(got.shape, wantShape);
    assert.deepEqual(await got.data(), wantData, JSON.stringify([shape, begin, size]));
    const xi = tf.tensor(Int32Array.from(values, Math.round), shape, "int32");
    const gi = tf.slice(xi, begin, size);
    assert.equal(gi.dtype, "int32");
    tf.dispose([want, x, got, xi, gi]);
  }
});

Deno.test("without node_modules (Deno's global npm cache), the wasm binaries are still found", async () => {
  const root = new URL("../../", import.meta.url);
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { locateWasmBinaries, setBackend, tf } from ${
        JSON.stringify(new URL("zoo/mod.ts", root).href)
      };\n` +
        `const backend = await setBackend("wasm");\n` +
        `const s = tf.sum(tf.tensor1d([1, 2, 3]));\n` +
        `console.log(JSON.stringify({ dir: locateWasmBinaries(), backend, sum: (await s.data())[0] }));\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--cached-only",
        "--node-modules-dir=none",
        "--config",
        new URL("deno.json", root).pathname,
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    if (!out.success && /cached-only|not found in cache|could not find/i.test(stderr)) {
      console.log("the global npm cache lacks the packages here; nothing to check");
      return;
    }
    assert.ok(out.success, stderr);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    assert.equal(r.backend, "wasm");
    assert.equal(r.sum, 6);
    assert.ok(!String(r.dir).includes("/node_modules/"), r.dir);
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("wasm binaries not where wasmPaths says: a WasmBinariesError naming the place, no cpu fallback, retryable", async () => {
  const root = new URL("../../", import.meta.url);
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { setBackend, tf, WasmBinariesError } from ${JSON.stringify(new URL("mod.ts", root).href)};\n` +
        `const out = {};\n` +
        `for (const name of ["wasm", undefined]) {\n` +
        `  try { await setBackend(name, { wasmPaths: "/nowhere/" }); out[String(name)] = tf.getBackend(); }\n` +
        `  catch (e) { out[String(name)] = [e.name, e instanceof WasmBinariesError, e.message]; }\n` +
        `}\n` +
        `out.retry = await setBackend("wasm");\n` +
        `out.sum = (await tf.sum(tf.tensor1d([1, 2, 3])).data())[0];\n` +
        `console.log(JSON.stringify(out));\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", new URL("deno.json", root).pathname, script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    for (const k of ["wasm", "undefined"]) {
      const [name, typed, message] = r[k];
      assert.equal(name, "WasmBinariesError", k);
      assert.ok(typed, k);
      // the threaded build where wasm starts threads (the default: every core), else the SIMD one
      assert.match(
        message,
        /\/nowhere\/tfjs-backend-wasm(-threaded)?-simd\.wasm \(no such file\).*wasmPaths/,
        k,
      );
    }
    assert.equal(r.retry, "wasm");
    assert.equal(r.sum, 6);
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("error classes carry their names as strings (they survive minification)", async () => {
  const errors = await import("../../src/core/errors.ts");
  const { OptimizerError } = await import("../../src/train/optim.ts");
  for (const [exported, cls] of [...Object.entries(errors), ["OptimizerError", OptimizerError]] as const) {
    // the error classes (the module's functions, such as `printable`, are not classes)
    if (typeof cls !== "function" || !(cls.prototype instanceof Error)) continue;
    const c = cls as unknown as { errorName?: string; new (m: string): Error };
    assert.ok(Object.hasOwn(c, "errorName"), `${exported} has no own errorName`);
    assert.equal(c.errorName, exported);
    assert.equal(new c("x").name, exported);
  }
  class Mine extends T2tVitError {}
  assert.equal(new Mine("x").name, "Mine");
});
