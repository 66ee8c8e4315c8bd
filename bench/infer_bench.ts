/**
 * Inference benchmark of the zoo: images per second of t2t_vit_7, t2t_vit_14 and t2t_vit_24 at batch 1 and 8
 * on every backend present, and the first call's time (XNNPACK weight packing on wasm, shader compilation on
 * webgpu), next to the PyTorch and ONNX Runtime figures for this kind of machine.
 *
 *   deno run -A bench/infer_bench.ts [--backends wasm,webgpu,cpu] [--models t2t_vit_7,t2t_vit_14,t2t_vit_24]
 *                                    [--batches 1,8] [--reps 5] [--budget 20] [--json bench/out/infer.json]
 *                                    [--workers N] [--kernels on|off] [--threads N]
 *
 * With `--workers N` (N > 1), wasm is also measured as a `ParallelModel` of N workers (batches split
 * between them). `--kernels off` runs tfjs's own kernels only (no wasm GEMM, no fused kernels: see
 * zoo/kernels); `--threads N` starts the wasm backend multi-threaded (`enableWasmThreads`). `bench/run.ts`
 * runs this once per configuration, in separate processes.
 * Each configuration runs once untimed-for-throughput (the first call, reported separately), then up to
 * `--reps` timed runs within `--budget` seconds (at least one); the median is reported.
 */
import { parseArgs } from "node:util";
import {
  type BackendName,
  createModel,
  type ModelName,
  ParallelModel,
  setBackend,
  tf,
  webGpuAdapter,
} from "../zoo/mod.ts";
import { configureKernels, enableWasmThreads, kernelStatus, wasmThreadsCount } from "../zoo/kernels/mod.ts";

const args = parseArgs({
  options: {
    backends: { type: "string" },
    models: { type: "string", default: "t2t_vit_7,t2t_vit_14,t2t_vit_24" },
    batches: { type: "string", default: "1,8" },
    reps: { type: "string", default: "5" },
    budget: { type: "string", default: "20" },
    json: { type: "string" },
    workers: { type: "string", default: "0" },
    kernels: { type: "string", default: "on" },
    threads: { type: "string", default: "1" },
    help: { type: "boolean", short: "h" },
  },
});
if (args.values.help) {
  console.log(
    "usage: deno run -A bench/infer_bench.ts [--backends wasm,webgpu,cpu] [--models ...] [--batches 1,8] [--reps N] [--budget S] [--json out.json] [--workers N] [--kernels on|off] [--threads N]",
  );
  Deno.exit(0);
}

const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const hasWebGpu = gpu ? (await gpu.requestAdapter()) !== null : false;
// `--backends=` (empty): none, e.g. to measure only the `--workers` pool
const backends =
  (args.values.backends === ""
    ? []
    : args.values.backends?.split(",") ?? ["wasm", ...(hasWebGpu ? ["webgpu"] : []), "cpu"]) as BackendName[];
const models = args.values.models!.split(",") as ModelName[];
const batches = args.values.batches!.split(",").map(Number);
const reps = Number(args.values.reps);
const budgetMs = Number(args.values.budget) * 1000;
const workers = Number(args.values.workers);
const kernels = args.values.kernels !== "off";
enableWasmThreads(Number(args.values.threads)); // also for 1: setBackend() would otherwise take every core

/** One measured configuration, as written to the JSON output (read back by bench/run.ts). */
export interface InferRow {
  backend: string;
  kernels: boolean;
  threads: number;
  model: string;
  batch: number;
  firstMs: number;
  medianMs: number;
  imagesPerSecond: number;
  runs: number;
}

const rows: InferRow[] = [];
const fmt = (v: number, d = 0) => v.toFixed(d).padStart(8);

console.log(
  `deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} logical cores; PyTorch 1.13 reference: ` +
    "t2t_vit_14 batch 1 281 ms, batch 8 5.4 img/s (ONNX Runtime 42 ms, 26 img/s)",
);
console.log("backend  model            batch  first ms  median ms  img/s   runs");
for (const backend of backends) {
  try {
    await setBackend(backend);
  } catch (e) {
    console.log(`${backend}: not available (${(e as Error).message})`);
    continue;
  }
  configureKernels({ enabled: kernels });
  if (backend === "webgpu") {
    const a = webGpuAdapter();
    console.log(`webgpu adapter: ${a?.description || a?.vendor} (software: ${a?.isSoftware})`);
  }
  const threads = backend === "wasm" ? Math.max(1, wasmThreadsCount()) : 1;
  console.log(`${backend}: our kernels ${kernelStatus()}, ${threads} thread(s)`);
  for (const name of models) {
    const model = await createModel(name);
    for (const batch of batches) {
      const x = tf.randomNormal([batch, 3, 224, 224]) as tf.Tensor4D;
      const run = async () => {
        const t0 = performance.now();
        const y = model.forward(x);
        await y.data();
        y.dispose();
        return performance.now() - t0;
      };
      const firstMs = await run();
      const times: number[] = [];
      const start = performance.now();
      while (times.length < reps && (times.length === 0 || performance.now() - start < budgetMs)) {
        times.push(await run());
      }
      times.sort((a, b) => a - b);
      const medianMs = times[(times.length - 1) >> 1];
      const row = {
        backend,
        kernels,
        threads,
        model: name,
        batch,
        firstMs,
        medianMs,
        imagesPerSecond: (1000 * batch) / medianMs,
        runs: times.length,
      };
      rows.push(row);
      console.log(
        `${backend.padEnd(8)} ${name.padEnd(16)} ${String(batch).padStart(5)} ${fmt(firstMs)} ${
          fmt(medianMs)
        }  ${fmt(row.imagesPerSecond, 2)} ${String(times.length).padStart(5)}`,
      );
      x.dispose();
    }
    model.dispose();
  }
}

async function measure(
  run: () => Promise<number>,
): Promise<{ firstMs: number; medianMs: number; runs: number }> {
  const firstMs = await run();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < reps && (times.length === 0 || performance.now() - start < budgetMs)) {
    times.push(await run());
  }
  times.sort((a, b) => a - b);
  return { firstMs, medianMs: times[(times.length - 1) >> 1], runs: times.length };
}

if (workers > 1) {
  await setBackend("wasm");
  configureKernels({ enabled: kernels });
  for (const name of models) {
    const pool = await ParallelModel.create(name, { workers });
    for (const batch of batches.filter((b) => b > 1)) {
      const x = tf.randomNormal([batch, 3, 224, 224]) as tf.Tensor4D;
      const r = await measure(async () => {
        const t0 = performance.now();
        const y = await pool.forward(x);
        y.dispose();
        return performance.now() - t0;
      });
      const row = {
        backend: `wasm x${workers}`,
        kernels,
        threads: 1,
        model: name,
        batch,
        ...r,
        imagesPerSecond: (1000 * batch) / r.medianMs,
      };
      rows.push(row);
      console.log(
        `${row.backend.padEnd(8)} ${name.padEnd(16)} ${String(batch).padStart(5)} ${fmt(r.firstMs)} ${
          fmt(r.medianMs)
        }  ${fmt(row.imagesPerSecond, 2)} ${String(r.runs).padStart(5)}`,
      );
      x.dispose();
    }
    pool.dispose();
  }
}

if (args.values.json) {
  const out = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    cores: navigator.hardwareConcurrency,
    webgpuAdapter: webGpuAdapter() ?? null,
    rows,
  };
  const path = args.values.json;
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(out, null, 2) + "\n");
  await Deno.rename(tmp, path);
  console.log(`wrote ${path}`);
}
