/**
 * `deno task bench`: inference and training benchmarks of every backend side by side in one run, each
 * figure also given as a ratio to a baseline measured in the same run (wasm with tfjs's own kernels, at the
 * same model and batch), plus the checkpoint conversion benchmark. Every configuration runs in its own
 * process (`bench/infer_bench.ts`, `bench/train_bench.ts`, `bench/convert_bench.ts`), one after another.
 *
 *   deno task bench [--models t2t_vit_7,t2t_vit_14,t2t_vit_24] [--batches 1,8] [--reps 3] [--budget 15]
 *                   [--threads N] [--no-train] [--train-models t2t_vit_7] [--train-batch 16]
 *                   [--webgpu-batches 1] [--quick] [--torch DIR] [--torch-blas DIR] [--no-cpu-compare]
 *                   [--md bench/out/run.md] [--json bench/out/run.json]
 *
 * Configurations: wasm with tfjs's kernels (the baseline), wasm with ours (zoo/kernels: relaxed-SIMD GEMM,
 * fused kernels), wasm with ours on N threads, wasm with ours in N data-parallel workers (batches > 1),
 * webgpu with tfjs's kernels and with ours (where an adapter exists; on a software adapter only
 * `--webgpu-batches`, default 1), and tfjs's plain JavaScript cpu backend (batch 1); then `bench/cpu_bench.ts`:
 * ours on every thread count beside the official PyTorch code (`--torch DIR`, the authors' repository) and
 * ONNX Runtime, same weights, alternating rounds, ratios, peak RSS, first call. The machine's load
 * average is recorded before and after: on a shared machine, compare ratios rather than absolute times.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { InferRow as InferBenchRow } from "./infer_bench.ts";
import type { TrainRow as TrainBenchRow } from "./train_bench.ts";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "t2t_vit_7,t2t_vit_14,t2t_vit_24" },
    batches: { type: "string", default: "1,8" },
    reps: { type: "string", default: "3" },
    budget: { type: "string", default: "15" },
    threads: { type: "string", default: String(navigator.hardwareConcurrency || 1) },
    "no-train": { type: "boolean", default: false },
    "train-models": { type: "string", default: "t2t_vit_7" },
    "train-batch": { type: "string", default: "16" },
    "webgpu-batches": { type: "string" },
    "no-cpu": { type: "boolean", default: false },
    "no-cpu-compare": { type: "boolean", default: false },
    torch: { type: "string" },
    "torch-blas": { type: "string" },
    quick: { type: "boolean", default: false },
    md: { type: "string", default: "bench/out/run.md" },
    json: { type: "string", default: "bench/out/run.json" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "usage: deno task bench [--models a,b] [--batches 1,8] [--reps N] [--budget S] [--threads N] [--no-train] " +
      "[--train-models a,b] [--train-batch N] [--webgpu-batches 1] [--no-cpu] [--quick] [--torch DIR] " +
      "[--no-cpu-compare] [--md out.md] [--json out.json]",
  );
  Deno.exit(0);
}

const here = new URL(".", import.meta.url).pathname;
const models = values.quick ? "t2t_vit_7" : values.models!;
const batches = values.quick ? "1" : values.batches!;
const threads = Math.max(1, Number(values.threads));
const outDir = `${here}out`;
await Deno.mkdir(outDir, { recursive: true });

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "n/a";
  }
}

function cpuName(): string {
  try {
    const m = /model name\s*:\s*(.+)/.exec(Deno.readTextFileSync("/proc/cpuinfo"));
    return m ? m[1].trim() : "unknown CPU";
  } catch {
    return "unknown CPU";
  }
}

interface Adapter {
  description: string;
  software: boolean;
}

async function webgpuAdapter(): Promise<Adapter | undefined> {
  const gpu = (navigator as unknown as { gpu?: GPU }).gpu;
  if (!gpu) return undefined;
  const a = await gpu.requestAdapter().catch(() => null);
  if (!a) return undefined;
  const i = a.info;
  const description = `${i.description || i.vendor || "unknown"}${
    i.architecture ? ` (${i.architecture})` : ""
  }`;
  return {
    description,
    software: i.isFallbackAdapter === true ||
      /llvmpipe|lavapipe|softpipe|swiftshader|software|basic render|warp/i.test(
        `${i.description} ${i.vendor}`,
      ),
  };
}

/** Runs a bench script in its own process; returns its stdout (stderr goes to ours). */
async function child(script: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${here}${script}`, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const out = new TextDecoder().decode(r.stdout);
  return { ok: r.success, out };
}

interface InferRow extends InferBenchRow {
  config: string;
}

interface InferConfig {
  name: string;
  args: string[];
  /** Keep only rows whose backend matches (the workers run also reports nothing else). */
  backend?: string;
}

const adapter = await webgpuAdapter();
const webgpuBatches = values["webgpu-batches"] ?? (adapter?.software ? "1" : batches);
const configs: InferConfig[] = [
  { name: "wasm, tfjs kernels (baseline)", args: ["--backends", "wasm", "--kernels", "off"] },
  { name: "wasm, our kernels", args: ["--backends", "wasm"] },
];
if (threads > 1) {
  configs.push({
    name: `wasm, our kernels, ${threads} threads`,
    args: ["--backends", "wasm", "--threads", String(threads)],
  });
  const big = batches.split(",").filter((b) => Number(b) > 1).join(",");
  if (big) {
    configs.push({
      name: `wasm, our kernels, ${threads} workers`,
      args: ["--backends=", "--workers", String(threads), "--batches", big],
    });
  }
}
if (adapter) {
  configs.push(
    {
      name: "webgpu, tfjs kernels",
      args: ["--backends", "webgpu", "--kernels", "off", "--batches", webgpuBatches],
    },
    { name: "webgpu, our kernels", args: ["--backends", "webgpu", "--batches", webgpuBatches] },
  );
}
if (!values["no-cpu"]) {
  configs.push({
    name: "cpu (tfjs JavaScript)",
    args: ["--backends", "cpu", "--batches", "1", "--reps", "1"],
  });
}

const started = new Date();
const load0 = loadAverage();
console.log(
  `bench: ${started.toISOString()}, deno ${Deno.version.deno}, ${cpuName()}, ${navigator.hardwareConcurrency} ` +
    `logical cores, load average ${load0}; webgpu: ${adapter ? adapter.description : "none"}`,
);

const infer: InferRow[] = [];
for (const cfg of configs) {
  console.log(`\n== inference: ${cfg.name}`);
  const json = `${outDir}/run-infer-${Deno.pid}.json`;
  const base = ["--models", models, "--batches", batches, "--reps", values.reps!, "--budget", values.budget!];
  // later flags win in parseArgs: the configuration's own --batches/--reps override the defaults
  const { ok, out } = await child("infer_bench.ts", [...base, ...cfg.args, "--json", json]);
  Deno.stdout.writeSync(new TextEncoder().encode(out));
  if (!ok) {
    console.log(`(${cfg.name} failed)`);
    continue;
  }
  try {
    const rows = JSON.parse(await Deno.readTextFile(json)).rows as Omit<InferRow, "config">[];
    for (const r of rows) infer.push({ config: cfg.name, ...r });
  } finally {
    await Deno.remove(json).catch(() => {});
  }
}

interface TrainRow extends TrainBenchRow {
  config: string;
}

const train: TrainRow[] = [];
if (!values["no-train"] && !values.quick) {
  const trainConfigs: InferConfig[] = [
    { name: "wasm, tfjs kernels (baseline)", args: ["--backends", "wasm", "--kernels", "off"] },
    { name: "wasm, our kernels", args: ["--backends", "wasm"] },
  ];
  if (threads > 1) {
    trainConfigs.push({
      name: `wasm, our kernels, ${threads} threads`,
      args: ["--backends", "wasm", "--threads", String(threads)],
    });
  }
  // a software adapter needs minutes per training step at 224: only on a real GPU
  if (adapter && !adapter.software) trainConfigs.push({ name: "webgpu", args: ["--backends", "webgpu"] });
  for (const cfg of trainConfigs) {
    console.log(`\n== training: ${cfg.name}`);
    const json = `${outDir}/run-train-${Deno.pid}.json`;
    const { ok, out } = await child("train_bench.ts", [
      "--models",
      values["train-models"]!,
      "--batch",
      values["train-batch"]!,
      ...cfg.args,
      "--json",
      json,
    ]);
    Deno.stdout.writeSync(new TextEncoder().encode(out));
    if (!ok) continue;
    try {
      const rows = JSON.parse(await Deno.readTextFile(json)) as Omit<TrainRow, "config">[];
      for (const r of rows) train.push({ config: cfg.name, ...r });
    } finally {
      await Deno.remove(json).catch(() => {});
    }
  }
}

// CPU inference beside the official PyTorch code and ONNX Runtime (each optional, skipped with a note)
let cpu = "";
if (!values["no-cpu-compare"]) {
  console.log("\n== CPU inference beside PyTorch and ONNX Runtime (bench/cpu_bench.ts)");
  const cpuMd = `${outDir}/run-cpu-${Deno.pid}.md`;
  const args = ["--models", models, "--batches", batches, "--md", cpuMd, "--json", `${outDir}/cpu.json`];
  if (values.torch) args.push("--torch", values.torch);
  if (values["torch-blas"]) args.push("--torch-blas", values["torch-blas"]);
  if (values.quick) args.push("--rounds", "2");
  const { ok, out } = await child("cpu_bench.ts", args);
  Deno.stdout.writeSync(new TextEncoder().encode(out));
  if (ok) cpu = await Deno.readTextFile(cpuMd);
  await Deno.remove(cpuMd).catch(() => {});
}

let convert: string[] = [];
if (!values.quick) {
  console.log("\n== checkpoint conversion");
  const { out } = await child("convert_bench.ts", ["--runs", "2"]);
  Deno.stdout.writeSync(new TextEncoder().encode(out));
  convert = out.trim().split("\n").filter((l) => /^(input|time|throughput|peak|output)/.test(l));
}

const load1 = loadAverage();

// ---------------------------------------------------------------------------------------------------------
// Report: ratios to the baseline at the same model and batch

const BASE = configs[0].name;
const baseOf = (model: string, batch: number) =>
  infer.find((r) => r.config === BASE && r.model === model && r.batch === batch);

const lines: string[] = [];
lines.push(
  `Measured ${
    started.toISOString().slice(0, 10)
  } with \`deno task bench\`: Deno ${Deno.version.deno}, ${cpuName()}, ` +
    `${navigator.hardwareConcurrency} logical cores (load average ${load0} before, ${load1} after); WebGPU adapter: ` +
    `${adapter ? `${adapter.description}${adapter.software ? ", a software adapter" : ""}` : "none"}.`,
);
lines.push("");
lines.push(
  "Inference (224x224, median of timed runs after a first call; speed-up = baseline time / time, baseline = " +
    "wasm with tfjs's kernels at the same model and batch, measured in the same run):",
);
lines.push("");
lines.push("| configuration | model | batch | first call ms | median ms | images/s | speed-up |");
lines.push("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
for (const model of models.split(",")) {
  for (const r of infer.filter((x) => x.model === model)) {
    const b = baseOf(model, r.batch);
    const ratio = b ? (b.medianMs / r.medianMs).toFixed(2) + "x" : "n/a";
    lines.push(
      `| ${r.config} | ${r.model} | ${r.batch} | ${r.firstMs.toFixed(0)} | ${r.medianMs.toFixed(0)} | ${
        r.imagesPerSecond.toFixed(2)
      } | ${ratio} |`,
    );
  }
}
lines.push("");
lines.push(
  "For reference, on this kind of machine (issue 3): the official PyTorch code (PyTorch 1.13, 2 threads) " +
    "takes 281 ms for t2t_vit_14 at batch 1 and does 5.4 images/s at batch 8; ONNX Runtime 1.30 in Node " +
    "42 ms and 26 images/s.",
);
if (train.length) {
  const tb = (model: string) => train.find((r) => r.config === BASE && r.model === model);
  lines.push("");
  lines.push(
    `Training (a full SGD step: CIFAR transform to ${train[0].imgSize}, forward in training mode, loss, ` +
      "backward, update; speed-up against wasm with tfjs's kernels):",
  );
  lines.push("");
  lines.push("| configuration | model | batch (micro) | first step s | step s | images/s | speed-up |");
  lines.push("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of train) {
    const b = tb(r.model);
    const ratio = b && Number.isFinite(r.stepS) ? (b.stepS / r.stepS).toFixed(2) + "x" : "n/a";
    lines.push(
      `| ${r.config} | ${r.model} | ${r.batch} (${r.microBatch}) | ${r.firstStepS.toFixed(1)} | ${
        r.stepS.toFixed(2)
      } | ${r.imagesPerSecond.toFixed(2)} | ${ratio} |`,
    );
  }
}
if (cpu) {
  lines.push("");
  lines.push(cpu.trim());
}
if (convert.length) {
  lines.push("");
  lines.push("Checkpoint conversion (`bench/convert_bench.ts`):");
  lines.push("");
  for (const l of convert) lines.push(`    ${l}`);
}
const md = lines.join("\n") + "\n";
console.log("\n" + md);

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}
await writeAtomic(values.md!, md);
await writeAtomic(
  values.json!,
  JSON.stringify(
    {
      date: started.toISOString(),
      deno: Deno.version.deno,
      cpu: cpuName(),
      cores: navigator.hardwareConcurrency,
      loadAverage: { before: load0, after: load1 },
      webgpu: adapter ?? null,
      baseline: BASE,
      inference: infer,
      training: train,
      cpuComparison: cpu,
      conversion: convert,
    },
    null,
    1,
  ) + "\n",
);
console.log(`wrote ${values.md} and ${values.json}`);
