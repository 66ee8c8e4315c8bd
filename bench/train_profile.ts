/**
 * Per-kernel profile of one training micro-batch (forward in training mode, cross-entropy, backward through
 * `tf.variableGrads`): time, calls and bytes of every tfjs kernel the step runs, grouped by kernel and by kernel
 * and input shapes, so that the biggest costs of a fine-tuning step are visible.
 *
 *   deno run -A bench/train_profile.ts [--model t2t_vit_7] [--batch 3] [--img-size 224] [--threads 2]
 *                                      [--reps 2] [--top 30] [--kernels on|off]
 *
 * Timing: `tf.profile` with the wasm backend's timer (wall time around each synchronous kernel), so the figures
 * include what other processes take from the machine; run it under the timing lock.
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import * as tf from "@tensorflow/tfjs-core";
import { createModel, type ModelName, setBackend } from "../zoo/mod.ts";
import { configureKernels, enableWasmThreads, kernelStatus, wasmThreadsCount } from "../zoo/kernels/mod.ts";
import { disposeGradients, lossAndGradients } from "../src/train/mod.ts";
import { Rng } from "../src/core/rng.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "t2t_vit_7" },
    batch: { type: "string", default: "3" },
    "img-size": { type: "string", default: "224" },
    threads: { type: "string", default: "2" },
    reps: { type: "string", default: "2" },
    top: { type: "string", default: "30" },
    kernels: { type: "string", default: "on" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "usage: deno run -A bench/train_profile.ts [--model NAME] [--batch N] [--img-size S] [--threads N] " +
      "[--reps N] [--top N] [--kernels on|off]",
  );
  Deno.exit(0);
}
const batch = Number(values.batch), imgSize = Number(values["img-size"]), reps = Number(values.reps);
enableWasmThreads(Number(values.threads));
await setBackend("wasm");
configureKernels({ enabled: values.kernels !== "off" });
tf.env().set("CHECK_COMPUTATION_FOR_ERRORS", false);

const model = await createModel(values.model as ModelName, { numClasses: 10, imgSize, dropPathRate: 0.1 });
const x = tf.randomNormal([batch, 3, imgSize, imgSize]) as tf.Tensor4D;
const labels = Array.from({ length: batch }, (_, i) => i % 10);
const step = () => {
  const r = lossAndGradients(model, x, labels, { training: true, rng: new Rng(1) });
  r.loss.dataSync();
  r.loss.dispose();
  r.logits.dispose();
  disposeGradients(r.grads);
};
step(); // packing, first allocations
const walls: number[] = [], cpus: number[] = [];
for (let i = 0; i < reps; i++) {
  const t0 = performance.now(), c0 = process.cpuUsage();
  step();
  walls.push(performance.now() - t0);
  const c1 = process.cpuUsage(c0);
  cpus.push((c1.user + c1.system) / 1000);
}

type Shape = number[];
const size = (s: Shape | null) => (s ? s.reduce((a, b) => a * b, 1) : 0);
interface Group {
  key: string;
  calls: number;
  ms: number;
  bytes: number;
}
const byKernel = new Map<string, Group>(), byShape = new Map<string, Group>();
let profiled = 0;
for (let r = 0; r < reps; r++) {
  const prof = await tf.profile(() => step());
  for (const k of prof.kernels) {
    if (!tf.getKernel(k.name, "wasm")) continue;
    const ins = k.inputShapes as (Shape | null)[], outs = k.outputShapes as Shape[];
    const ms = Number(k.kernelTimeMs) || 0;
    const bytes = 4 * (ins.reduce((s, i) => s + size(i), 0) + outs.reduce((s, o) => s + size(o), 0));
    for (
      const [map, key] of [
        [byKernel, k.name],
        [byShape, `${k.name} ${ins.map((s) => s ? `[${s.join(",")}]` : "-").join(" ")}`],
      ] as const
    ) {
      const g = map.get(key) ?? { key, calls: 0, ms: 0, bytes: 0 };
      g.calls += 1 / reps;
      g.ms += ms / reps;
      g.bytes += bytes / reps;
      map.set(key, g);
    }
    profiled += ms / reps;
  }
}
const pad = (s: string | number, n: number) => String(s).padStart(n);
console.log(
  `wasm, ${wasmThreadsCount()} thread(s), ${values.model} @${imgSize}, micro-batch ${batch}; kernels: ${kernelStatus()}`,
);
console.log(
  `step (forward + backward) ${walls.map((w) => w.toFixed(0)).join(", ")} ms wall, ${
    cpus.map((w) => w.toFixed(0)).join(", ")
  } ms process CPU (all threads); sum of kernel times ${profiled.toFixed(0)} ms`,
);
function table(title: string, groups: Group[]) {
  console.log(`\n${title}`);
  console.log("  ms/step   share  calls      MB  kernel");
  for (const g of groups.slice(0, Number(values.top))) {
    console.log(
      `${pad(g.ms.toFixed(1), 9)} ${pad((100 * g.ms / profiled).toFixed(1) + "%", 7)} ${
        pad(Math.round(g.calls), 6)
      } ${pad((g.bytes / 1e6).toFixed(0), 7)}  ${g.key}`,
    );
  }
}
const sorted = (m: Map<string, Group>) => [...m.values()].sort((a, b) => b.ms - a.ms);
table("by kernel", sorted(byKernel));
table("by kernel and input shapes", sorted(byShape));
x.dispose();
model.dispose();
