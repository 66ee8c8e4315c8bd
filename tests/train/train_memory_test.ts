// The step-memory planner: the estimate grows with image size, depth and width as measured; the micro-batch is
// the largest that fits; WebGPU's per-buffer limits bound it; nothing fitting is a MemoryPlanError naming the
// flag; recomputation lowers the estimate. Plus the wasm default of every core (issue 16), in child processes.
import assert from "node:assert/strict";
import { MODEL_CONFIGS } from "../../zoo/mod.ts";
import { estimateStepMemory, MemoryPlanError, planEvalBatch, planMicroBatch } from "../../src/train/mod.ts";

const MB = 2 ** 20;
const wasmBudget = { backend: "wasm", total: 3072 * MB, source: "test" };

Deno.test("estimateStepMemory: per image, within the measured peaks' range, recomputation much lower", () => {
  const c7 = MODEL_CONFIGS.t2t_vit_7, c14 = MODEL_CONFIGS.t2t_vit_14;
  const e7 = estimateStepMemory(c7, 4.3e6, { imgSize: 224 });
  const e14 = estimateStepMemory(c14, 21.5e6, { imgSize: 224 });
  // measured (tfjs peak, marginal image at batch 2-5): t2t_vit_7 at 224 ~700 MB; the estimate is an upper bound
  assert.ok(e7.perImage > 690 * MB && e7.perImage < 900 * MB, `${e7.perImage / MB}`);
  assert.ok(e14.perImage > 1343 * MB, `${e14.perImage / MB}`);
  assert.equal(e7.fixed, 4.3e6 * 4 * 4);
  const r14 = estimateStepMemory(c14, 21.5e6, { imgSize: 224, checkpointBlocks: true });
  assert.ok(r14.perImage < e14.perImage / 3);
  assert.ok(estimateStepMemory(c7, 4.3e6, { imgSize: 384 }).perImage > 3 * e7.perImage);
  assert.ok(estimateStepMemory(c7, 4.3e6, { imgSize: 224, optimizerBuffers: 2 }).fixed > e7.fixed);
});

Deno.test("estimateStepMemory, fused wasm path: an upper bound of its measured peaks, far below the generic path", () => {
  const c7 = MODEL_CONFIGS.t2t_vit_7, c14 = MODEL_CONFIGS.t2t_vit_14, c24 = MODEL_CONFIGS.t2t_vit_24;
  const fused = (c: typeof c7, p: number, img: number, checkpointBlocks = false) =>
    estimateStepMemory(c, p, { imgSize: img, fused: true, checkpointBlocks }).perImage;
  // measured on wasm (tfjs peak, marginal image): 232, 370 and 639 MB at 224; t2t_vit_7 at 384 600 MB (batch 1)
  assert.ok(
    fused(c7, 4.3e6, 224) > 232 * MB && fused(c7, 4.3e6, 224) < 320 * MB,
    `${fused(c7, 4.3e6, 224) / MB}`,
  );
  assert.ok(fused(c14, 21.5e6, 224) > 370 * MB);
  assert.ok(fused(c24, 64.1e6, 224) > 639 * MB);
  assert.ok(fused(c7, 4.3e6, 384) > 600 * MB);
  // recomputed, batch 1: 152 MB, and 224 MB of which 86 MB are t2t_vit_14's weight gradients (in `fixed`)
  assert.ok(fused(c7, 4.3e6, 224, true) > 152 * MB);
  assert.ok(fused(c14, 21.5e6, 224, true) > (224 - 86) * MB);
  assert.ok(fused(c7, 4.3e6, 224) < estimateStepMemory(c7, 4.3e6, { imgSize: 224 }).perImage / 2);
  // the eval figure does not depend on it
  assert.equal(
    estimateStepMemory(c7, 4.3e6, { imgSize: 224, fused: true }).evalPerImage,
    estimateStepMemory(c7, 4.3e6, { imgSize: 224 }).evalPerImage,
  );
  // the README's command on wasm: t2t_vit_14 at 224, batch 128, SGD: 26 chunks of 5
  const m14 = estimateStepMemory(c14, 21.5e6, { imgSize: 224, fused: true });
  const p14 = planMicroBatch({ memory: m14, batch: 128, imgSize: 224, budget: wasmBudget });
  assert.deepEqual([p14.microBatch, p14.chunks], [5, 26]);
  // a batch of 16 in as few chunks as fit, evenly sized: 8 + 8, not 11 + 5
  const memory = {
    perImage: 267 * MB,
    fixed: 69 * MB,
    largestTensorPerImage: MB,
    evalPerImage: 0,
    weights: 0,
  };
  const p = planMicroBatch({ memory, batch: 16, imgSize: 224, budget: wasmBudget });
  assert.deepEqual([p.microBatch, p.chunks], [8, 2]);
});

Deno.test("planMicroBatch: largest fit, requested checked, per-buffer limits, typed refusal naming the flag", () => {
  const memory = {
    perImage: 500 * MB,
    fixed: 100 * MB,
    largestTensorPerImage: 10 * MB,
    evalPerImage: 0,
    weights: 0,
  };
  const wasm = { backend: "wasm", total: 3072 * MB, source: "test" };
  const p = planMicroBatch({ memory, batch: 128, imgSize: 32, budget: wasm });
  assert.equal(p.microBatch, 5);
  assert.equal(p.chunks, 26);
  assert.match(p.summary, /^micro-batch 5 \(26 chunks per batch of 128\): about \d+ MB per step of 3072 MB/);
  assert.equal(planMicroBatch({ memory, batch: 4, imgSize: 32, budget: wasm }).microBatch, 4);
  assert.equal(planMicroBatch({ memory, batch: 128, imgSize: 32, budget: wasm, requested: 2 }).microBatch, 2);
  assert.throws(
    () => planMicroBatch({ memory, batch: 128, imgSize: 32, budget: wasm, requested: 16 }),
    (e: Error) =>
      e instanceof MemoryPlanError &&
      /--micro-batch 16 does not fit.*use --micro-batch 5 or less/.test(e.message),
  );
  const gpu = { backend: "webgpu", total: 64e9, maxTensor: 128 * MB, source: "test" };
  assert.equal(planMicroBatch({ memory, batch: 128, imgSize: 32, budget: gpu }).microBatch, 12);
  assert.throws(
    () =>
      planMicroBatch({ memory: { ...memory, perImage: 4000 * MB }, batch: 8, imgSize: 224, budget: wasm }),
    (e: Error) =>
      e instanceof MemoryPlanError && /one image does not fit the wasm backend at 224 px/.test(e.message) &&
      /--img-size or --checkpoint-blocks/.test(e.message),
  );
});

Deno.test("planEvalBatch: --test-batch, or what an eval forward fits (measured ~137 MB per t2t_vit_14 image)", () => {
  const wasm = { backend: "wasm", total: 3072 * MB, source: "test" };
  const m14 = estimateStepMemory(MODEL_CONFIGS.t2t_vit_14, 21.5e6, { imgSize: 224 });
  assert.ok(m14.evalPerImage > 137 * MB);
  const b = planEvalBatch(m14, 100, 224, wasm);
  assert.ok(b >= 4 && b < 22, String(b));
  assert.equal(planEvalBatch(m14, 3, 224, wasm), 3);
  assert.equal(planEvalBatch({ ...m14, evalPerImage: 8000 * MB }, 100, 224, wasm), 1);
});

async function threadsIn(code: string): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return Number(text.split("\n").pop());
}

Deno.test({
  name: "wasm defaults to every core (navigator.hardwareConcurrency); wasmThreads overrides",
  sanitizeResources: false,
  fn: async () => {
    const head = `import { setBackend } from "./zoo/mod.ts";
import { wasmThreadsCount, wasmThreadsSupported } from "./zoo/kernels/wasm_threads.ts";`;
    const cores = Math.min(8, navigator.hardwareConcurrency || 1);
    const byDefault = await threadsIn(`${head}
await setBackend("wasm"); console.log(wasmThreadsSupported() ? wasmThreadsCount() : -1);`);
    if (byDefault !== -1) assert.equal(byDefault, cores);
    const one = await threadsIn(`${head}
await setBackend("wasm", { wasmThreads: 1 }); console.log(wasmThreadsCount());`);
    assert.equal(one, 1);
  },
});
