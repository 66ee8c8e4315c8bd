/**
 * Per-kernel profile of one forward pass: time, FLOPs and bytes of every tfjs kernel, grouped by kernel
 * (and by kernel and shapes), with the floor each group could reach on this machine: the larger of
 * FLOPs / peak FLOP/s and bytes / memory bandwidth, both peaks measured in the same run on the same backend
 * (a large matMul; for bandwidth a 64 MB copy on the CPU backends, a large add on webgpu).
 *
 *   deno run -A bench/profile.ts [--backend wasm|webgpu|cpu] [--model t2t_vit_14] [--batch 1]
 *                                [--img-size 224] [--threads N] [--reps 3] [--top 25] [--json out.json]
 *                                [--no-fused]
 *
 * Timing: `tf.profile` with the backend's own timer: wall time around each (synchronous) kernel on wasm and
 * cpu, GPU timestamp queries on webgpu (this script creates the WebGPU device itself, asking for
 * `timestamp-query`). The wasm figures are per-kernel wall times, so they include the load other processes
 * put on the machine; the script also reports the process CPU time of the timed forward passes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import * as tf from "@tensorflow/tfjs-core";
import { createModel, type ModelName, setBackend } from "../zoo/mod.ts";
import { configureKernels, kernelStatus } from "../zoo/kernels/mod.ts";
import { enableWasmThreads, wasmThreadsCount } from "../zoo/kernels/wasm_threads.ts";

const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "wasm" },
    model: { type: "string", default: "t2t_vit_14" },
    batch: { type: "string", default: "1" },
    "img-size": { type: "string", default: "224" },
    threads: { type: "string" },
    reps: { type: "string", default: "3" },
    top: { type: "string", default: "25" },
    json: { type: "string" },
    "no-fused": { type: "boolean", default: false },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "usage: deno run -A bench/profile.ts [--backend wasm|webgpu|cpu] [--model NAME] [--batch N] " +
      "[--img-size S] [--threads N] [--reps N] [--top N] [--json out.json] [--no-fused]",
  );
  Deno.exit(0);
}

const backend = values.backend as "wasm" | "webgpu" | "cpu";
const batch = Number(values.batch);
const imgSize = Number(values["img-size"]);
const reps = Number(values.reps);

/** Registers a webgpu backend on a device that has `timestamp-query` (when the adapter offers it). */
async function startWebGpuWithTimer(): Promise<string> {
  const { WebGPUBackend } = await import("@tensorflow/tfjs-backend-webgpu");
  const gpu = (navigator as unknown as { gpu?: GPU }).gpu;
  if (!gpu) throw new Error("no navigator.gpu");
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("no WebGPU adapter");
  const info = adapter.info;
  const desc = `${info.description || info.vendor} ${info.architecture}`.trim();
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("timestamp-query")
    ? ["timestamp-query"]
    : [];
  const requiredLimits: Record<string, number> = {};
  for (
    const k of [
      "maxComputeWorkgroupStorageSize",
      "maxComputeWorkgroupsPerDimension",
      "maxStorageBufferBindingSize",
      "maxBufferSize",
      "maxComputeWorkgroupSizeX",
      "maxComputeInvocationsPerWorkgroup",
    ] as const
  ) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  if (tf.findBackendFactory("webgpu")) tf.removeBackend("webgpu");
  tf.registerBackend("webgpu", () => new WebGPUBackend(device, info), 0);
  if (!(await tf.setBackend("webgpu"))) throw new Error("webgpu backend did not start");
  return `${desc}${requiredFeatures.length ? "" : " (no timestamp-query: kernel times are 0)"}`;
}

let adapterDesc = "";
if (backend === "webgpu") {
  adapterDesc = await startWebGpuWithTimer();
} else {
  if (backend === "wasm") enableWasmThreads(Number(values.threads ?? 1)); // 1 unless told: setBackend() takes every core
  await setBackend(backend);
}
configureKernels({ enabled: !values["no-fused"] });
tf.env().set("CHECK_COMPUTATION_FOR_ERRORS", false);

// ---------------------------------------------------------------------------------------------------------
// Machine peaks on this backend

async function timeIt(f: () => tf.Tensor, n: number): Promise<number> {
  const warm = f();
  await warm.data();
  warm.dispose();
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const y = f();
    await y.data();
    best = Math.min(best, performance.now() - t0);
    y.dispose();
  }
  return best;
}

const peakN = backend === "cpu" ? 256 : 1024;
const pa = tf.randomNormal([peakN, peakN]), pb = tf.randomNormal([peakN, peakN]);
const mmMs = await timeIt(() => tf.matMul(pa, pb), 3);
const peakFlops = (2 * peakN ** 3) / (mmMs / 1000);
let bandwidth: number;
if (backend === "webgpu") {
  // what one element-wise pass moves per second on this adapter (dispatch included)
  const big = tf.randomNormal([1 << 22]);
  const addMs = await timeIt(() => tf.add(big, big), 3);
  bandwidth = (3 * 4 * (1 << 22)) / (addMs / 1000); // two reads, one write
  big.dispose();
} else {
  // the CPU's copy bandwidth (64 MB, read + write)
  const src = new Float32Array(1 << 24), dst = new Float32Array(1 << 24);
  dst.set(src);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    dst.set(src);
    best = Math.min(best, performance.now() - t0);
  }
  bandwidth = (2 * 4 * (1 << 24)) / (best / 1000);
}
tf.dispose([pa, pb]);

// ---------------------------------------------------------------------------------------------------------
// FLOPs and bytes per kernel

type Shape = number[];
const size = (s: Shape | null) => (s ? s.reduce((a, b) => a * b, 1) : 0);

function flopsOf(name: string, ins: (Shape | null)[], outs: Shape[]): number {
  const out = size(outs[0] ?? null);
  switch (name) {
    case "_FusedMatMul":
    case "BatchMatMul": {
      // a is (batch, M, K) or (batch, K, M), unbroadcast: K = size(a) / (batch * M) = size(a) * N / size(out)
      const n = outs[0][outs[0].length - 1];
      return 2 * size(outs[0]) * (size(ins[0]) * n / out);
    }
    case "DepthwiseConv2dNative":
    case "Conv2D": {
      const f = ins[1]!;
      return 2 * out * f[0] * f[1] * (name === "Conv2D" ? f[2] : 1);
    }
    case "Erf":
      return 20 * out;
    case "Exp":
    case "Rsqrt":
      return 10 * out;
    case "Softmax":
      return 15 * out;
    case "T2tAttention": {
      // qkv (B*N, 3C): two products of 2 N^2 C per sample
      const [rows, width] = ins[0]!;
      return 4 * (rows / batch) * rows * (width / 3);
    }
    case "T2tLinear": {
      // x (rows, in) @ w^T (in, out) + epilogue; out is the output's width (a range of w's rows or all)
      const [rows, inF] = ins[0]!;
      return 2 * rows * inF * outs[0][1] + out;
    }
    case "T2tPerformer": {
      // kqv (B*T, 3 emb), w (m, emb): k w^T and q w^T (2 T m emb each), kp^T v (2 m T emb), qp z (2 T m emb)
      const [rows, width] = ins[0]!;
      const emb = width / 3, m = ins[1]![0];
      return 8 * rows * m * emb + 20 * 2 * rows * m;
    }
    case "T2tGelu":
      return 30 * out;
    case "T2tLayerNorm":
      return 8 * out;
    case "T2tSoftmax":
      return 15 * out;
    default:
      return out; // element-wise, reductions, copies: about one op per element
  }
}

// ---------------------------------------------------------------------------------------------------------

const model = await createModel(values.model as ModelName, { imgSize });
const x = tf.randomNormal([batch, 3, imgSize, imgSize]) as tf.Tensor4D;
const first0 = performance.now();
{
  const y = model.forward(x);
  await y.data();
  y.dispose();
}
const firstMs = performance.now() - first0;

// plain timed runs (no profiler): wall and process CPU time
const walls: number[] = [];
const cpu0 = process.cpuUsage();
for (let i = 0; i < reps; i++) {
  const t0 = performance.now();
  const y = model.forward(x);
  await y.data();
  walls.push(performance.now() - t0);
  y.dispose();
}
const cpu1 = process.cpuUsage(cpu0);
walls.sort((a, b) => a - b);
const wallMs = walls[(walls.length - 1) >> 1];
const cpuMs = (cpu1.user + cpu1.system) / 1000 / reps;

interface Group {
  key: string;
  calls: number;
  ms: number;
  flops: number;
  bytes: number;
}
const byKernel = new Map<string, Group>();
const byShape = new Map<string, Group>();
let profiled = 0;
for (let r = 0; r < reps; r++) {
  const prof = await tf.profile(async () => {
    const y = model.forward(x);
    await y.data();
    y.dispose();
  });
  for (const k of prof.kernels) {
    // leaves only: custom gradients and composite ops show up as scopes around their kernels
    if (!tf.getKernel(k.name, tf.getBackend())) continue;
    const ins = k.inputShapes as (Shape | null)[];
    const outs = k.outputShapes as Shape[];
    const ms = Number(k.kernelTimeMs) || 0;
    const bytes = 4 * (ins.reduce((s, i) => s + size(i), 0) + outs.reduce((s, o) => s + size(o), 0));
    const viewOnly = k.name === "Reshape" || k.name === "Identity";
    const flops = flopsOf(k.name, ins, outs);
    for (
      const [map, key] of [
        [byKernel, k.name],
        [byShape, `${k.name} ${ins.map((s) => s ? `[${s.join(",")}]` : "-").join(" ")}`],
      ] as const
    ) {
      const g = map.get(key) ?? { key, calls: 0, ms: 0, flops: 0, bytes: 0 };
      g.calls += 1 / reps;
      g.ms += ms / reps;
      g.flops += Math.max(flops, 0) / reps;
      g.bytes += (viewOnly ? 0 : bytes) / reps;
      map.set(key, g);
    }
    profiled += ms / reps;
  }
}

const floor = (g: Group) => Math.max(g.flops / peakFlops, g.bytes / bandwidth) * 1000;
const pad = (s: string | number, n: number) => String(s).padStart(n);
const top = Number(values.top);
const header = `${backend}${adapterDesc ? ` (${adapterDesc})` : ""}${
  backend === "wasm" ? `, ${wasmThreadsCount()} thread(s)` : ""
}, ${values.model} @${imgSize}, batch ${batch}; fused kernels: ${kernelStatus()}`;
console.log(header);
console.log(
  `peaks measured here: matMul ${peakN}^3 ${(peakFlops / 1e9).toFixed(1)} GFLOP/s, add ${
    (bandwidth / 1e9).toFixed(1)
  } GB/s; first call ${firstMs.toFixed(0)} ms; forward median ${wallMs.toFixed(1)} ms wall, ${
    cpuMs.toFixed(1)
  } ms process CPU; sum of kernel times ${profiled.toFixed(1)} ms`,
);

function table(title: string, groups: Group[]) {
  console.log(`\n${title}`);
  console.log("  ms/fwd   share  calls   GFLOP      MB   floor ms  kernel");
  for (const g of groups.slice(0, top)) {
    console.log(
      `${pad(g.ms.toFixed(2), 8)} ${pad((100 * g.ms / profiled).toFixed(1) + "%", 7)} ${
        pad(Math.round(g.calls), 6)
      } ${pad((g.flops / 1e9).toFixed(3), 7)} ${pad((g.bytes / 1e6).toFixed(1), 7)} ${
        pad(floor(g).toFixed(2), 10)
      }  ${g.key}`,
    );
  }
}
const sorted = (m: Map<string, Group>) => [...m.values()].sort((a, b) => b.ms - a.ms);
table("by kernel", sorted(byKernel));
table("by kernel and input shapes", sorted(byShape));

if (values.json) {
  const out = {
    date: new Date().toISOString(),
    backend,
    adapter: adapterDesc || undefined,
    model: values.model,
    imgSize,
    batch,
    threads: backend === "wasm" ? wasmThreadsCount() : undefined,
    peakGflops: peakFlops / 1e9,
    bandwidthGBs: bandwidth / 1e9,
    firstMs,
    wallMs,
    cpuMs,
    kernelMs: profiled,
    byKernel: sorted(byKernel).map((g) => ({ ...g, floorMs: floor(g) })),
    byShape: sorted(byShape).map((g) => ({ ...g, floorMs: floor(g) })),
  };
  const tmp = `${values.json}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(out, null, 1) + "\n");
  await Deno.rename(tmp, values.json);
}
x.dispose();
model.dispose();
