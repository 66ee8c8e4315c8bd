/**
 * The browser build in a real headless Chromium (Debian's `chromium`, driven by `puppeteer-core`), on
 * 127.0.0.1: the bundle `deno task build:web` makes (built here by the same function) loads with no `node:`
 * import left, `t2t_vit_7` matches the official outputs on wasm (<= 5e-5; one thread, and threads on a
 * cross-origin-isolated page) and on Chromium's SwiftShader WebGPU adapter (<= 2e-4), the converter reads a
 * `.pth.tar` from bytes in the page, preprocessing is exact on the PNG references, missing wasm binaries are a
 * typed, retryable error, error names survive minification, and the demo page classifies an image (its
 * screenshot goes to web/dist/screenshot.png; with T2T_UPDATE_SCREENSHOT=1 also to web/screenshot.png).
 *
 * Without Chromium the test is reported as ignored, unless T2T_REQUIRE_BROWSER=1 (CI), where it fails.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { buildWeb, BUNDLE_FILE, nodeImports, WORKER_FILE } from "../../web/build.ts";
import { findChromium, ROOT, startRig } from "../support/browser.ts";

// page-side code (run by Chromium) reaches the DOM; this file is type-checked without the DOM library
// deno-lint-ignore no-explicit-any
declare const document: any;

const chromium = findChromium();
const required = Deno.env.get("T2T_REQUIRE_BROWSER") === "1";
const BUNDLE = "/web/dist/t2t-vit.js";

/** Runs `fn(bundle, arg)` in the page with the bundle imported; returns its (JSON-able) result. */
// deno-lint-ignore no-explicit-any
type PageFn<A, R> = (t: any, arg: A) => Promise<R>;
async function inPage<A, R>(page: Page, fn: PageFn<A, R>, arg: A): Promise<R> {
  return await page.evaluate(
    async (src: string, bundle: string, a: unknown) => {
      const t = await import(bundle);
      const f = new Function(`return (${src})`)();
      return await f(t, a);
    },
    fn.toString(),
    BUNDLE,
    arg,
  ) as R;
}

/**
 * In the page: t2t_vit_7 with the reference's filled weights on `backend`, the first `batch` samples of
 * `fill_input(2, 224)`; the largest differences from the official features and logits.
 */
// deno-lint-ignore no-explicit-any
const parityInPage: PageFn<{ backend: string; threads: number; batch: number; repeat: boolean }, any> =
  async (
    t,
    a,
  ) => {
    const out: Record<string, unknown> = {};
    out.backend = await t.setBackend(a.backend, { wasmThreads: a.threads });
    out.threads = t.wasmThreadsCount();
    out.isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
    out.kernels = t.kernelStatus();
    out.adapter = t.webGpuAdapter() ?? null;
    const get = async (p: string) => new Uint8Array(await (await fetch(p)).arrayBuffer());
    const man = await (await fetch("/tests/fixtures/reference/manifest.json")).json();
    const weights = new Map();
    for (const [k, shape] of man.t2t_vit_7.state_dict) {
      weights.set(k, { dtype: "F32", shape, data: new Uint8Array(t.fill(k, shape).buffer) });
    }
    const ref = t.parseSafetensors(
      await get("/tests/fixtures/reference/outputs/t2t_vit_7.safetensors"),
      "ref",
    );
    const tf = t.tf;
    const before = tf.memory().numTensors;
    const model = await t.createModel("t2t_vit_7", { weights });
    const x = tf.tensor4d(t.fillInput(2, 224).subarray(0, a.batch * 3 * 224 * 224), [a.batch, 3, 224, 224]);
    const diff = (got: Float32Array, want: Float32Array) => {
      let d = 0;
      for (let i = 0; i < got.length; i++) {
        const e = Math.abs(got[i] - want[i]);
        if (!(e <= d)) d = e;
      }
      return d;
    };
    const t0 = performance.now();
    const logits = model.forward(x);
    const l = await logits.data();
    out.firstMs = performance.now() - t0;
    let again;
    if (a.repeat) {
      const t1 = performance.now();
      again = model.forward(x);
      await again.data();
      out.secondMs = performance.now() - t1;
    }
    const f = model.forwardFeatures(x);
    out.logits = diff(l, t.toFloat32(ref.tensors.get("logits")).subarray(0, a.batch * 1000));
    out.features = diff(await f.data(), t.toFloat32(ref.tensors.get("features")).subarray(0, a.batch * 256));
    tf.dispose([x, logits, again, f]);
    model.dispose();
    out.leaked = tf.memory().numTensors - before;
    out.poolChunks = t.wasmPoolChunks();
    return out;
  };

Deno.test({
  name: "browser: the bundle in headless Chromium (wasm, threads, WebGPU, converter, images, demo page)",
  ignore: !chromium && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    assert.ok(
      chromium,
      "Chromium not found (apt-get install chromium, or set T2T_CHROMIUM); T2T_REQUIRE_BROWSER=1",
    );
    const built = await buildWeb();
    console.log(
      `built web/dist in ${built.seconds.toFixed(1)} s, bundle ${(built.bundleBytes / 1e6).toFixed(2)} MB`,
    );

    await t.step("the bundles import no node: module", async () => {
      for (const f of [BUNDLE_FILE, WORKER_FILE]) {
        const code = await Deno.readTextFile(`${built.dir}/${f}`);
        assert.deepEqual(nodeImports(code), [], f);
      }
      // the check itself catches every form
      assert.deepEqual(
        nodeImports(
          `import a from"node:fs";export{b}from'node:os';import"node:zlib";await import("node:url");`,
        ),
        ["node:fs", "node:os", "node:url", "node:zlib"],
      );
    });

    const rig = await startRig(chromium);
    try {
      await t.step(
        "wasm binaries missing: a typed error naming where it looked, then a retry works",
        async () => {
          const { page, errors } = await rig.open("web/index.html");
          const r = await inPage(page, async (t) => {
            const res: Record<string, unknown> = {};
            for (const attempt of ["wasm", undefined]) {
              try {
                await t.setBackend(attempt, { wasmPaths: "/nowhere/" });
                res[`${attempt}`] = `started ${t.currentBackend()}`;
              } catch (e) {
                const err = e as Error;
                res[`${attempt}`] = {
                  name: err.name,
                  typed: e instanceof t.WasmBinariesError,
                  message: err.message,
                };
              }
            }
            res.retry = await t.setBackend("wasm", { wasmPaths: "/web/dist/" });
            res.backend = t.tf.getBackend();
            // error names survive minification
            try {
              t.parseCheckpoint(new Uint8Array([80, 75, 3, 4, 1, 2, 3]), "junk.pth");
            } catch (e) {
              res.checkpointError = [(e as Error).name, e instanceof t.CheckpointError];
            }
            try {
              await t.ParallelModel.create("t2t_vit_7", { workers: 2 });
            } catch (e) {
              res.parallel = [(e as Error).name, (e as Error).message];
            }
            return res;
          }, null);
          for (const k of ["wasm", "undefined"]) {
            const e = r[k] as { name: string; typed: boolean; message: string };
            assert.equal(e.name, "WasmBinariesError", `${k}: ${JSON.stringify(e)}`);
            assert.ok(e.typed);
            assert.match(e.message, /\/nowhere\/tfjs-backend-wasm-simd\.wasm.*HTTP 404.*wasmPaths/);
          }
          assert.equal(r.retry, "wasm");
          assert.equal(r.backend, "wasm");
          assert.deepEqual(r.checkpointError, ["CheckpointError", true]);
          const [pname, pmsg] = r.parallel as [string, string];
          assert.equal(pname, "ModelError");
          assert.match(pmsg, /Deno only/);
          // the two failed HEAD requests show up as console errors; nothing else may
          assert.deepEqual(errors.filter((e) => !/404/.test(e)), []);
          await page.close();
        },
      );

      await t.step("wasm, one thread: t2t_vit_7 matches the official outputs (5e-5)", async () => {
        const { page, errors } = await rig.open("web/index.html");
        const r = await inPage(page, parityInPage, { backend: "wasm", threads: 1, batch: 2, repeat: true });
        console.log(`  wasm 1 thread: ${JSON.stringify(r)}`);
        assert.equal(r.backend, "wasm");
        assert.equal(r.isolated, false);
        assert.equal(r.threads, 1);
        assert.ok(r.logits <= 5e-5 && r.features <= 5e-5, JSON.stringify(r));
        assert.equal(r.leaked, 0);
        assert.deepEqual(errors, []);
        await page.close();
      });

      await t.step(
        "wasm on a cross-origin-isolated page: threads, our kernels on the shared heap, same outputs",
        async () => {
          const { page, errors } = await rig.open("web/index.html", { isolated: true });
          const r = await inPage(page, parityInPage, { backend: "wasm", threads: 2, batch: 2, repeat: true });
          console.log(`  wasm 2 threads (isolated): ${JSON.stringify(r)}`);
          assert.equal(r.isolated, true);
          assert.equal(r.threads, 2);
          assert.match(r.kernels, /relaxed-SIMD GEMM/);
          // both threads of the pool ran chunks
          assert.equal(r.poolChunks.length, 2);
          assert.ok(r.poolChunks.every((n: number) => n > 0), JSON.stringify(r.poolChunks));
          assert.ok(r.logits <= 5e-5 && r.features <= 5e-5, JSON.stringify(r));
          assert.equal(r.leaked, 0);
          assert.deepEqual(errors, []);
          await page.close();
        },
      );

      await t.step(
        "cross-origin isolated, one thread: tfjs's threaded build, its memory captured for our kernels",
        async () => {
          const { page, errors } = await rig.open("web/index.html", { isolated: true });
          const r = await inPage(page, parityInPage, {
            backend: "wasm",
            threads: 1,
            batch: 1,
            repeat: false,
          });
          console.log(`  wasm 1 thread (isolated): ${JSON.stringify(r)}`);
          assert.equal(r.isolated, true);
          assert.equal(r.threads, 1);
          assert.match(r.kernels, /relaxed-SIMD GEMM/);
          assert.ok(r.logits <= 5e-5 && r.features <= 5e-5, JSON.stringify(r));
          assert.deepEqual(errors, []);
          await page.close();
        },
      );

      await t.step(
        "the converter in the page: t2t_vit_7.pth.tar from bytes reproduces the official outputs",
        async () => {
          const { page, errors } = await rig.open("web/index.html");
          const r = await inPage(page, async (t) => {
            await t.setBackend("wasm");
            const get = async (p: string) => new Uint8Array(await (await fetch(p)).arrayBuffer());
            const bytes = await get("/tests/fixtures/reference/checkpoints/t2t_vit_7.pth.tar");
            const t0 = performance.now();
            const model = await t.loadModel(bytes);
            const loadMs = performance.now() - t0;
            const want = t.parseSafetensors(
              await get("/tests/fixtures/reference/outputs/t2t_vit_7.official-init.safetensors"),
              "ref",
            ).tensors;
            const x = t.tf.tensor4d(t.fillInput(2, 224), [2, 3, 224, 224]);
            const l = await model.forward(x).data();
            const w = t.toFloat32(want.get("logits"));
            let d = 0;
            for (let i = 0; i < w.length; i++) d = Math.max(d, Math.abs(w[i] - l[i]));
            // a corrupted byte in a tensor record is caught by the (JavaScript) CRC-32 check
            const bad = bytes.slice();
            bad[bytes.length >> 1] ^= 0xff;
            let corrupt = "";
            try {
              await t.loadModel(bad);
            } catch (e) {
              corrupt = `${(e as Error).name}: ${(e as Error).message}`;
            }
            // to safetensors bytes in the page; the file-writing converter says what to use instead
            const { bytes: st } = t.convertToSafetensorsBytes(bytes, { describe: t.describeWeights });
            const parsed = t.parseSafetensors(st, "converted");
            let writer = "";
            try {
              await t.convertCheckpoint("t2t_vit_7.pth.tar");
            } catch (e) {
              writer = `${(e as Error).name}: ${(e as Error).message}`;
            }
            return {
              name: model.name,
              loadMs,
              logits: d,
              corrupt,
              converted: [parsed.tensors.size, parsed.metadata.architecture],
              writer,
            };
          }, null);
          console.log(`  converter in the page: ${JSON.stringify(r)}`);
          assert.equal(r.name, "t2t_vit_7");
          assert.ok(r.logits <= 5e-5, JSON.stringify(r));
          assert.match(r.corrupt, /^CheckpointError: .*CRC-32/);
          assert.deepEqual(r.converted, [r.converted[0], "t2t_vit_7"]);
          assert.ok(r.converted[0] > 50);
          assert.match(r.writer, /^T2tVitError: .*needs a file system \(Deno\).*convertToSafetensorsBytes/);
          assert.deepEqual(errors, []);
          await page.close();
        },
      );

      await t.step("preprocessing in the page is exact on the PNG references", async () => {
        const { page, errors } = await rig.open("web/index.html");
        const r = await inPage(page, async (t) => {
          const dir = "/tests/fixtures/reference/images/";
          const exp = t.parseSafetensors(
            new Uint8Array(await (await fetch(dir + "expected.safetensors")).arrayBuffer()),
            "expected",
          ).tensors;
          const res: Record<string, number> = {};
          for (const [key, raw] of exp) {
            const [kind, file] = key.split(":");
            const img = await t.readImage(dir + file); // a string is a URL in a browser
            const tr = kind === "cifar"
              ? t.cifarTransform(224)
              : t.evalTransform(t.pretrainedCfgOf(t.MODEL_CONFIGS.t2t_vit_14));
            const { tensor } = t.preprocessImage(img, tr);
            const want = t.toFloat32(raw);
            let d = tensor.length === want.length ? 0 : Infinity;
            for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(tensor[i] - want[i]));
            res[key] = d;
          }
          return res;
        }, null);
        console.log(`  preprocessing: ${JSON.stringify(r)}`);
        const pngs = Object.entries(r).filter(([k]) => k.endsWith(".png"));
        assert.ok(pngs.length >= 5, JSON.stringify(r));
        for (const [k, d] of pngs) assert.equal(d, 0, k);
        // JPEG: within 3 levels of libjpeg-turbo (as in Deno); 3 levels / 255 / min std < 0.06
        for (const [k, d] of Object.entries(r).filter(([k]) => !k.endsWith(".png"))) assert.ok(d < 0.06, k);
        assert.deepEqual(errors, []);
        await page.close();
      });

      await t.step("WebGPU on SwiftShader: t2t_vit_7 matches the official outputs (2e-4)", async () => {
        const { page, errors } = await rig.open("web/index.html");
        const hasGpu = await page.evaluate(() => "gpu" in navigator);
        assert.ok(hasGpu, "navigator.gpu is missing in Chromium (--enable-unsafe-webgpu)");
        // the first sample only: SwiftShader is slow, and fill_input depends on the flat index only
        const r = await inPage(page, parityInPage, {
          backend: "webgpu",
          threads: 1,
          batch: 1,
          repeat: false,
        });
        console.log(`  webgpu: ${JSON.stringify(r)}`);
        assert.equal(r.backend, "webgpu");
        assert.ok(r.adapter?.isSoftware, JSON.stringify(r.adapter));
        assert.ok(r.logits <= 2e-4 && r.features <= 2e-4, JSON.stringify(r));
        assert.equal(r.leaked, 0);
        assert.deepEqual(errors, []);
        await page.close();
      });

      await t.step(
        "the demo page: weights and image picked from disk, top-5, attention, clear errors",
        async () => {
          const { page, errors } = await rig.open("web/index.html", { isolated: true });
          await page.setViewport({ width: 1100, height: 820 });
          await page.waitForFunction(() => (globalThis as { t2tDemo?: { ready: boolean } }).t2tDemo?.ready);
          const upload = async (sel: string, file: string) => {
            const input = await page.$(sel);
            assert.ok(input, sel);
            await (input as unknown as { uploadFile(...p: string[]): Promise<void> }).uploadFile(file);
          };
          const lastError = () =>
            page.$eval("#error", (e) => (e as unknown as { innerText: string }).innerText);
          // bad weights first: a clear, typed message, nothing loaded
          const junk = await Deno.makeTempFile({ suffix: ".pth.tar" });
          await Deno.writeFile(junk, new TextEncoder().encode("this is not a checkpoint"));
          try {
            await upload("#weights-file", junk);
            await page.waitForFunction(() => document.getElementById("error")!.innerText.length > 0);
            assert.match(await lastError(), /^(CheckpointError|WeightsError|SafetensorsError): .*\.pth\.tar/);
            // a bad image
            const notImage = await Deno.makeTempFile({ suffix: ".png" });
            await Deno.writeFile(notImage, new Uint8Array([1, 2, 3, 4, 5]));
            await upload("#image-file", notImage);
            await page.waitForFunction(() => /ImageError/.test(document.getElementById("error")!.innerText));
            await Deno.remove(notImage);
          } finally {
            await Deno.remove(junk);
          }
          // a weights URL that is not there: the typed error names it
          await page.type("#weights-url", "missing.safetensors");
          await page.click("#load-url");
          await page.waitForFunction(() =>
            /missing\.safetensors/.test(document.getElementById("error")!.innerText)
          );
          assert.match(
            await lastError(),
            /^WeightsError: missing\.safetensors: cannot read weights: HTTP 404/,
          );
          // the real thing: the official-layout checkpoint, converted in the page, and a photo
          await upload("#weights-file", `${ROOT}tests/fixtures/reference/checkpoints/t2t_vit_7.pth.tar`);
          await page.waitForFunction(() =>
            /t2t_vit_7 \(1000 classes/.test(document.getElementById("status")!.innerText)
          );
          await upload("#image-file", `${ROOT}tests/fixtures/reference/images/landscape.png`);
          await page.waitForFunction(() =>
            /landscape\.png: /.test(document.getElementById("image-info")!.innerText)
          );
          await page.click("#run");
          await page.waitForFunction(() => (globalThis as { t2tDemo?: { runs: number } }).t2tDemo!.runs >= 1);
          const shown = await page.evaluate(() => ({
            rows: document.querySelectorAll("#top5 tr").length,
            timings: document.getElementById("timings")!.innerText,
            error: document.getElementById("error")!.innerText,
            status: document.getElementById("status")!.innerText,
            // the overlay is drawn: not a blank canvas
            overlayColours: (() => {
              const c = document.getElementById("overlay");
              const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
              const seen = new Set<number>();
              for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
              return seen.size;
            })(),
            // deno-lint-ignore no-explicit-any
            top: (globalThis as any).t2tDemo.top,
          }));
          console.log(`  demo: ${shown.status} | ${shown.timings.replaceAll("\n", "; ")}`);
          assert.equal(shown.rows, 5);
          assert.equal(shown.error, "");
          assert.match(shown.status, /wasm, \d+ threads?/);
          assert.match(shown.timings, /forward on wasm/);
          assert.ok(shown.overlayColours > 20, `overlay has ${shown.overlayColours} colours`);
          const probs = shown.top.map((p: { probability: number }) => p.probability);
          assert.ok(probs.every((p: number, i: number) => p > 0 && (i === 0 || p <= probs[i - 1])));
          const shot = await page.screenshot({ type: "png", fullPage: true });
          await Deno.writeFile(`${built.dir}/screenshot.png`, shot);
          if (Deno.env.get("T2T_UPDATE_SCREENSHOT") === "1") {
            const tmp = `${ROOT}web/screenshot.png.tmp`;
            await Deno.writeFile(tmp, shot);
            await Deno.rename(tmp, `${ROOT}web/screenshot.png`);
          }
          // the missing weights URL's 404 is the only resource error
          assert.deepEqual(errors.filter((e) => !/404/.test(e)), []);
          await page.close();
        },
      );
    } finally {
      await rig.close();
    }
  },
});
