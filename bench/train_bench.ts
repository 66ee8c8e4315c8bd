/**
 * Training benchmark: images per second of a full fine-tuning step (official CIFAR train transform from
 * 32×32 bytes to 224, forward in training mode, cross-entropy, backward, SGD update with the transfer
 * script's parameter groups) for t2t_vit_7 and t2t_vit_14 at 224 and batch 16, on every backend present.
 *
 *   deno run -A bench/train_bench.ts [--backends webgpu,wasm,cpu] [--models t2t_vit_7,t2t_vit_14]
 *                                    [--batch 16] [--img-size 224] [--steps 2] [--micro-batch auto|N]
 *                                    [--json bench/out/train.json] [--kernels on|off] [--threads N]
 *                                    [--torch DIR] [--torch-blas DIR] [--python PATH] [--rounds N]
 *
 * `--torch DIR` adds the official PyTorch code's step as a contender in the same run (same models, batch,
 * image size, steps and thread count; `bench/torch_train_step.py`): DIR holds the authors' `models/` folder
 * (a clone of their repository), the timm helpers it imports come from `bench/torch_shim/`, and `--python`
 * names an interpreter with PyTorch (default /usr/bin/python3, Debian's python3-torch). Its rows are printed
 * with the ratio of our images/s to PyTorch's. `--torch-blas DIR` adds the same PyTorch step once more with
 * `LD_LIBRARY_PATH=DIR` (a folder holding another `libblas.so.3`, e.g. OpenBLAS's from Debian's
 * `libopenblas0-pthread` unpacked there: Debian's python3-torch calls whatever `libblas.so.3` the system
 * has, by default the unoptimised reference BLAS), with OpenBLAS's pool on the `--threads` count and torch's
 * own (OpenMP) pool on one thread: both pools at full size compete for the cores (about 2x slower on 2
 * cores). `--rounds N` runs every contender N times, alternating (ours, PyTorch, ours, ...), so that a machine
 * shared with other work loads them alike; the ratio is taken between the medians.
 *
 * `--micro-batch auto` (the default) lets the trainer plan the largest micro-batch that fits the backend
 * (`src/train/memory.ts`); `--checkpoint-blocks` recomputes block activations in the backward pass.
 * `--kernels off` runs tfjs's own kernels only (no wasm GEMM, no fused kernels: see zoo/kernels; with them on,
 * training on wasm runs the fused GELU, LayerNorm, attention and soft split with their wasm backward kernels,
 * `zoo/kernels/wasm_backward.ts`); `--threads N` starts the wasm backend multi-threaded.
 *
 * Each (backend, model) runs in its own process (the wasm heap never shrinks): one untimed first step
 * (XNNPACK packing, shader compilation, optimizer buffers), then `--steps` timed steps. On wasm the batch is
 * split into micro-batches (gradient accumulation; same gradient, one optimizer step per batch of 16) as the
 * memory planner decides, because a whole batch of 16 at 224 needs more than the 4 GB a wasm heap can hold.
 */
import { parseArgs } from "node:util";
import { type BackendName, createModel, type ModelName, setBackend, tf, webGpuAdapter } from "../zoo/mod.ts";
import { SGD, Trainer, transferParamGroups } from "../src/train/mod.ts";
import { cifarBatches, type CifarSplit } from "../src/data/mod.ts";
import { configureKernels, enableWasmThreads, wasmThreadsCount } from "../zoo/kernels/mod.ts";

const { values } = parseArgs({
  options: {
    backends: { type: "string" },
    models: { type: "string", default: "t2t_vit_7,t2t_vit_14" },
    batch: { type: "string", default: "16" },
    "img-size": { type: "string", default: "224" },
    steps: { type: "string", default: "2" },
    "micro-batch": { type: "string", default: "auto" },
    json: { type: "string" },
    kernels: { type: "string", default: "on" },
    threads: { type: "string", default: "1" },
    "checkpoint-blocks": { type: "boolean" },
    torch: { type: "string" },
    python: { type: "string", default: "/usr/bin/python3" },
    "torch-blas": { type: "string" },
    rounds: { type: "string", default: "1" },
    child: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});

/** One measured configuration, as written to the JSON output (read back by bench/run.ts). */
export interface TrainRow {
  backend: string;
  kernels: boolean;
  threads: number;
  model: string;
  batch: number;
  microBatch: number;
  imgSize: number;
  firstStepS: number;
  stepS: number;
  imagesPerSecond: number;
  adapter?: string;
  error?: string;
}

const batch = Number(values.batch), imgSize = Number(values["img-size"]), steps = Number(values.steps);

const microOption = values["micro-batch"] === "auto" ? "auto" as const : Number(values["micro-batch"]);

async function child(spec: string): Promise<TrainRow> {
  const [backend, model] = spec.split(":") as [BackendName, ModelName];
  if (backend === "wasm") enableWasmThreads(Number(values.threads));
  await setBackend(backend);
  configureKernels({ enabled: values.kernels !== "off" });
  const adapter = backend === "webgpu" ? webGpuAdapter() : undefined;
  const net = await createModel(model, { numClasses: 10, imgSize, dropPathRate: 0.1 });
  const opt = new SGD(transferParamGroups(net.trainableVariables(), { lr: 0.01, transferRatio: 0.01 }), {
    lr: 0.01,
    momentum: 0.9,
    weightDecay: 5e-4,
  });
  const trainer = new Trainer(net, opt, {
    microBatch: microOption,
    checkpointBlocks: values["checkpoint-blocks"] ? true : "auto",
  });
  const plan = trainer.plan(batch, imgSize);
  const microBatch = plan?.microBatch ?? batch;
  if (plan) console.error(`${backend} ${model}: ${plan.summary}`);
  const n = batch * (steps + 1);
  const images = new Uint8Array(n * 3072);
  for (let i = 0; i < images.length; i++) images[i] = (i * 2654435761) >>> 24;
  const data: CifarSplit = {
    dataset: "cifar10",
    split: "train",
    count: n,
    images,
    labels: Uint8Array.from({ length: n }, (_, i) => i % 10),
    numClasses: 10,
    files: [],
  };
  const times: number[] = [];
  for (const { x, labels } of cifarBatches(data, { batchSize: batch, imgSize, train: true })) {
    const t0 = performance.now();
    await trainer.trainStep(x, labels);
    x.dispose();
    times.push((performance.now() - t0) / 1000);
    console.error(`${backend} ${model}: step ${times.length} ${times.at(-1)!.toFixed(1)} s`);
  }
  const timed = times.slice(1);
  const stepS = timed.reduce((a, b) => a + b, 0) / timed.length;
  opt.dispose();
  net.dispose();
  return {
    backend,
    kernels: values.kernels !== "off",
    threads: backend === "wasm" ? Math.max(1, wasmThreadsCount()) : 1,
    model,
    batch,
    microBatch,
    imgSize,
    firstStepS: times[0],
    stepS,
    imagesPerSecond: batch / stepS,
    adapter: adapter
      ? `${adapter.description || adapter.vendor}${adapter.isSoftware ? " (software)" : ""}`
      : undefined,
  };
}

if (values.help) {
  console.log(
    "usage: deno run -A bench/train_bench.ts [--backends webgpu,wasm,cpu] [--models t2t_vit_7,t2t_vit_14] " +
      "[--batch 16] [--img-size 224] [--steps 2] [--micro-batch auto|N] [--json out.json] [--kernels on|off] " +
      "[--threads N] [--checkpoint-blocks] [--torch DIR] [--torch-blas DIR] [--python PATH] [--rounds N]",
  );
} else if (values.child) {
  console.log(JSON.stringify(await child(values.child)));
  tf.disposeVariables();
} else {
  const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  const hasWebGpu = gpu ? (await gpu.requestAdapter().catch(() => null)) !== null : false;
  const backends = values.backends?.split(",") ?? [...(hasWebGpu ? ["webgpu"] : []), "wasm"];
  const models = values.models!.split(",");
  const rounds = Math.max(1, Number(values.rounds));
  const torchRuns: { label: string; env?: Record<string, string>; torchThreads?: number }[] = values.torch
    ? [
      { label: "pytorch" },
      ...(values["torch-blas"]
        ? [{
          label: "pytorch+blas",
          // OpenBLAS's pool does the products on all threads; torch's OpenMP pool stays at one thread (both
          // at full size compete for the cores: about 2x slower here)
          env: { LD_LIBRARY_PATH: values["torch-blas"], OPENBLAS_NUM_THREADS: values.threads! },
          torchThreads: 1,
        }]
        : []),
    ]
    : [];
  const rows: TrainRow[] = [];
  console.log(`deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} logical cores`);
  console.log("backend       model        batch  micro  first step s  step s   img/s");
  for (let round = 0; round < rounds; round++) {
    for (const model of models) {
      for (const backend of backends) {
        const row = await ours(backend, model);
        rows.push(row);
        printRow(backend, row);
      }
      for (const t of torchRuns) {
        const row = await official(model, t.label, t.env, t.torchThreads);
        rows.push(row);
        printRow(t.label, row);
      }
    }
  }
  if (torchRuns.length) {
    console.log(`\nmedians of ${rounds} round(s), ours against the official code's step:`);
    const median = (v: number[]) => {
      const s = [...v].sort((a, b) => a - b);
      return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    };
    const ips = (backend: string, model: string) =>
      median(
        rows.filter((r) => r.backend === backend && r.model === model && !r.error).map((r) =>
          r.imagesPerSecond
        ),
      );
    for (const model of models) {
      for (const t of torchRuns) {
        const theirs = ips(t.label, model);
        for (const backend of backends) {
          const mine = ips(backend, model);
          console.log(
            `  ${backend} ${model}: ${mine.toFixed(2)} img/s, ${t.label} ${theirs.toFixed(2)} img/s: ${
              (mine / theirs).toFixed(2)
            }x`,
          );
        }
      }
    }
  }
  if (values.json) {
    const dir = values.json.includes("/") ? values.json.slice(0, values.json.lastIndexOf("/")) : ".";
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(values.json, JSON.stringify(rows, null, 1) + "\n");
  }
}

/** Our step for one backend and model, in a child process. */
async function ours(backend: string, model: string): Promise<TrainRow> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--child",
      `${backend}:${model}`,
      "--batch",
      String(batch),
      "--img-size",
      String(imgSize),
      "--steps",
      String(steps),
      "--micro-batch",
      values["micro-batch"]!,
      "--kernels",
      values.kernels!,
      "--threads",
      values.threads!,
      ...(values["checkpoint-blocks"] ? ["--checkpoint-blocks"] : []),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    return {
      backend,
      kernels: values.kernels !== "off",
      threads: Number(values.threads),
      model,
      batch,
      microBatch: NaN,
      imgSize,
      firstStepS: NaN,
      stepS: NaN,
      imagesPerSecond: NaN,
      error: `exit ${out.code}`,
    };
  }
}

/** The official code's step (`torch_train_step.py`) for one model, labelled `label`, with extra `env`. */
async function official(
  model: string,
  label: string,
  env?: Record<string, string>,
  torchThreads?: number,
): Promise<TrainRow> {
  const threads = Number(values.threads);
  const out = await new Deno.Command(values.python!, {
    args: [
      new URL("./torch_train_step.py", import.meta.url).pathname,
      values.torch!,
      model,
      String(batch),
      String(imgSize),
      String(steps),
      String(torchThreads ?? threads),
    ],
    env,
    stdout: "piped",
    stderr: "inherit",
  }).output().catch(() => ({ code: -1, stdout: new TextEncoder().encode("") }));
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  try {
    return { ...JSON.parse(line), backend: label, threads }; // the threads the products ran on
  } catch {
    return {
      backend: label,
      kernels: false,
      threads,
      model,
      batch,
      microBatch: batch,
      imgSize,
      firstStepS: NaN,
      stepS: NaN,
      imagesPerSecond: NaN,
      error:
        `exit ${out.code} (needs PyTorch in ${values.python} and the official models/ in ${values.torch})`,
    };
  }
}

function printRow(backend: string, row: TrainRow): void {
  console.log(
    `${backend.padEnd(13)} ${row.model.padEnd(12)} ${String(batch).padStart(5)} ${
      String(row.microBatch).padStart(6)
    } ` +
      `${row.firstStepS.toFixed(1).padStart(13)} ${row.stepS.toFixed(1).padStart(7)} ${
        row.imagesPerSecond.toFixed(2).padStart(7)
      }` +
      (row.error ? `  ${row.error}` : "") + (row.adapter ? `  ${row.adapter}` : ""),
  );
}
