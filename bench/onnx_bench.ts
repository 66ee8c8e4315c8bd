/**
 * ONNX Runtime beside tfjs wasm, in one process and one run: the same model (same weights) exported to ONNX
 * and run by `OnnxModel` on onnxruntime-node, against the tfjs model on the wasm backend with our kernels.
 * Contenders alternate within each round, so load from other processes hits them alike; the table gives
 * medians and the ratio of each to tfjs wasm. A script that prints figures, not a test.
 *
 *   deno run -A bench/onnx_bench.ts [--models t2t_vit_7,t2t_vit_14] [--batches 1,8] [--rounds 7]
 *                                   [--ort-threads 1,2] [--wasm-threads 1] [--json out.json]
 */
import { parseArgs } from "node:util";
import { enableWasmThreads, kernelStatus, wasmThreadsCount } from "../zoo/kernels/mod.ts";
import { createModel, exportOnnx, type ModelName, OnnxModel, setBackend, tf } from "../mod.ts";

const args = parseArgs({
  options: {
    models: { type: "string", default: "t2t_vit_7,t2t_vit_14" },
    batches: { type: "string", default: "1,8" },
    rounds: { type: "string", default: "7" },
    "ort-threads": { type: "string", default: "1,2" },
    "wasm-threads": { type: "string", default: "1" },
    json: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (args.values.help) {
  console.log(
    "usage: deno run -A bench/onnx_bench.ts [--models ...] [--batches 1,8] [--rounds N] [--ort-threads 1,2] [--wasm-threads N] [--json out.json]",
  );
  Deno.exit(0);
}
const models = args.values.models!.split(",") as ModelName[];
const batches = args.values.batches!.split(",").map(Number);
const rounds = Number(args.values.rounds);
const ortThreads = args.values["ort-threads"]!.split(",").map(Number);
const wasmThreads = Number(args.values["wasm-threads"]);

if (wasmThreads > 1) await enableWasmThreads(wasmThreads);
await setBackend("wasm");
console.log(
  `deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} logical cores; tfjs wasm: our kernels ` +
    `${kernelStatus()}, ${Math.max(1, wasmThreadsCount())} thread(s); ${rounds} alternating rounds, medians`,
);

interface Row {
  model: string;
  batch: number;
  engine: string;
  setupMs: number;
  firstMs: number;
  medianMs: number;
  imagesPerSecond: number;
  ratioToWasm: number;
}
const rows: Row[] = [];
const fmt = (v: number, d = 0) => v.toFixed(d).padStart(9);

console.log(
  "model            batch  engine                      setup ms  first ms  median ms   img/s  vs wasm",
);
for (const name of models) {
  const model = await createModel(name);
  const t0 = performance.now();
  const bytes = exportOnnx(model);
  const exportMs = performance.now() - t0;
  const contenders: { engine: string; setupMs: number; run: (x: tf.Tensor4D) => Promise<void> }[] = [{
    engine: "tfjs wasm",
    setupMs: 0,
    run: async (x) => {
      const y = model.forward(x);
      await y.data();
      y.dispose();
    },
  }];
  const onnxModels: OnnxModel[] = [];
  for (const threads of ortThreads) {
    const s0 = performance.now();
    const m = await OnnxModel.create(bytes, { intraOpNumThreads: threads });
    onnxModels.push(m);
    contenders.push({
      engine: `onnxruntime-node, ${threads} thr`,
      setupMs: exportMs + performance.now() - s0,
      run: async (x) => {
        const y = await m.forward(x);
        y.dispose();
      },
    });
  }
  for (const batch of batches) {
    const x = tf.randomNormal([batch, 3, 224, 224]) as tf.Tensor4D;
    const first: number[] = [];
    const times: number[][] = contenders.map(() => []);
    for (let r = -1; r < rounds; r++) {
      for (const [i, c] of contenders.entries()) {
        const s = performance.now();
        await c.run(x);
        const ms = performance.now() - s;
        if (r < 0) first[i] = ms;
        else times[i].push(ms);
      }
    }
    const med = times.map((t) => t.sort((a, b) => a - b)[(t.length - 1) >> 1]);
    for (const [i, c] of contenders.entries()) {
      const row: Row = {
        model: name,
        batch,
        engine: c.engine,
        setupMs: c.setupMs,
        firstMs: first[i],
        medianMs: med[i],
        imagesPerSecond: (1000 * batch) / med[i],
        ratioToWasm: med[0] / med[i],
      };
      rows.push(row);
      console.log(
        `${name.padEnd(16)} ${String(batch).padStart(5)}  ${c.engine.padEnd(26)} ${fmt(c.setupMs)} ${
          fmt(row.firstMs)
        } ${fmt(row.medianMs)} ${fmt(row.imagesPerSecond, 2)} ${fmt(row.ratioToWasm, 2)}x`,
      );
    }
    x.dispose();
  }
  for (const m of onnxModels) await m.dispose();
  model.dispose();
}
if (args.values.json) await Deno.writeTextFile(args.values.json, JSON.stringify(rows, null, 1));
