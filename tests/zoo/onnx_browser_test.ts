/**
 * The README's browser example, in real headless Chromium: a page imports onnxruntime-web (the installed
 * package's own `ort.webgpu.min.mjs`, as the README does from a CDN), creates an `InferenceSession` on an
 * exported T2T-ViT-7 (reference fill() weights) with `executionProviders: ["webgpu", "wasm"]`, runs the
 * reference input, and posts the logits back; they must match the official ones within 5e-5.
 *
 * Needs a Chromium binary (`chromium`, `chromium-browser`, `google-chrome`, or `T2T_CHROMIUM=/path`); without
 * one the test is reported as ignored, unless `T2T_REQUIRE_CHROMIUM=1`, which makes that a failure.
 */
import assert from "node:assert/strict";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { fillInput } from "../../src/core/fill.ts";
import { setBackend } from "../../zoo/mod.ts";
import { exportOnnx } from "../../zoo/onnx_export.ts";
import { loadOnnxRuntime, ONNX_RUNTIME_VERSION } from "../../zoo/onnx_engine.ts";
import { ref } from "../support/fixtures.ts";
import { filledModel, maxAbsDiff } from "../support/zoo.ts";

function findChromium(): string | undefined {
  const env = Deno.env.get("T2T_CHROMIUM");
  const candidates = env ? [env] : ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
  for (const c of candidates) {
    for (const dir of c.includes("/") ? [""] : (Deno.env.get("PATH") ?? "").split(":")) {
      const p = dir ? `${dir}/${c}` : c;
      try {
        if (Deno.statSync(p).isFile) return p;
      } catch { /* not here */ }
    }
  }
  return undefined;
}

const chromium = findChromium();
const required = Deno.env.get("T2T_REQUIRE_CHROMIUM") === "1";

const PAGE = `<!doctype html><meta charset="utf-8"><title>t2t-vit onnxruntime-web</title>
<script type="module">
const post = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
try {
  const ort = await import("/ort/ort.webgpu.min.mjs");
  const session = await ort.InferenceSession.create("/model.onnx", { executionProviders: ["webgpu", "wasm"] });
  const pixels = new Float32Array(await (await fetch("/input.bin")).arrayBuffer());
  const { logits } = await session.run({ input: new ort.Tensor("float32", pixels, [2, 3, 224, 224]) });
  const adapter = await navigator.gpu?.requestAdapter().catch(() => null);
  await post({ logits: Array.from(logits.data), dims: logits.dims, webgpu: !!adapter });
} catch (e) {
  await post({ error: String(e?.stack ?? e) });
}
</script>`;

Deno.test({
  name: "browser: the README's onnxruntime-web example runs an exported T2T-ViT-7 in headless Chromium",
  ignore: !chromium && !required,
  async fn() {
    assert.ok(chromium, "no Chromium found (T2T_REQUIRE_CHROMIUM=1): install chromium or set T2T_CHROMIUM");
    // the installed onnxruntime-web package (installs it on first use)
    await loadOnnxRuntime("web");
    const entry = import.meta.resolve(`npm:onnxruntime-web@${ONNX_RUNTIME_VERSION}`);
    const dist = new URL(".", entry);
    await setBackend("wasm");
    const model = await filledModel("t2t_vit_7");
    let onnx: Uint8Array;
    try {
      onnx = exportOnnx(model);
    } finally {
      model.dispose();
    }
    const input = fillInput(2, 224);
    const { promise: result, resolve } = Promise.withResolvers<
      { logits?: number[]; error?: string; webgpu?: boolean }
    >();
    const headers = {
      // cross-origin isolation, so onnxruntime-web may use its threaded build
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
    };
    const types: Record<string, string> = { mjs: "text/javascript", wasm: "application/wasm" };
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/") return new Response(PAGE, { headers: { ...headers, "content-type": "text/html" } });
      if (path === "/model.onnx") return new Response(onnx.slice().buffer as ArrayBuffer, { headers });
      if (path === "/input.bin") return new Response(input.buffer as ArrayBuffer, { headers });
      if (path === "/result" && req.method === "POST") {
        resolve(JSON.parse(await req.text()));
        return new Response("ok");
      }
      if (path.startsWith("/ort/") && /^[\w.-]+$/.test(path.slice(5))) {
        try {
          const file = await Deno.readFile(new URL(path.slice(5), dist));
          const ext = path.split(".").pop()!;
          return new Response(file.buffer as ArrayBuffer, {
            headers: { ...headers, "content-type": types[ext] ?? "application/octet-stream" },
          });
        } catch {
          return new Response("not found", { status: 404 });
        }
      }
      return new Response("not found", { status: 404 });
    });
    const profile = await Deno.makeTempDir();
    const browser = new Deno.Command(chromium!, {
      args: [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        `--user-data-dir=${profile}`,
        `http://127.0.0.1:${server.addr.port}/`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const r = await Promise.race([
        result,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("no result from the page within 180 s")), 180_000);
        }),
      ]);
      assert.equal(r.error, undefined, r.error);
      const want = (await readSafetensors(ref("outputs/t2t_vit_7.safetensors"))).tensors;
      const e = maxAbsDiff(r.logits!, toFloat32(want.get("logits")!));
      console.log(
        `headless Chromium, onnxruntime-web ${ONNX_RUNTIME_VERSION}: logits within ${e.toExponential(2)} ` +
          `(WebGPU adapter in the page: ${r.webgpu ? "yes" : "none, so the wasm provider ran"})`,
      );
      assert.ok(e <= 5e-5, `logits ${e}`);
    } finally {
      clearTimeout(timer);
      try {
        browser.kill("SIGTERM");
      } catch { /* already gone */ }
      await browser.status;
      await server.shutdown();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    }
  },
});
