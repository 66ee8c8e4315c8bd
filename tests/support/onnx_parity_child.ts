/**
 * Child process of tests/parity/onnx_parity_test.ts: exports each manifest entry given on the command line (with the
 * reference's fill() weights), runs it in ONNX Runtime at the full optimisation level with warnings logged,
 * and prints one JSON line per entry with the largest differences from the reference outputs. ONNX Runtime
 * logs from native code to stderr, which is why this runs in its own process: the parent reads the log.
 *
 * An entry may carry export options: `t2t_vit_7:opset=13`, `t2t_vit_14_se:opset=21`, `t2t_vit_7:batch=2`.
 */
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { fillInput } from "../../src/core/fill.ts";
import { setBackend } from "../../zoo/mod.ts";
import { encodeOnnxModel, OnnxGraphBuilder } from "../../converters/onnx.ts";
import { loadOnnxRuntime, OnnxModel } from "../../zoo/onnx_engine.ts";
import { manifest, ref } from "./fixtures.ts";
import { filledModel, maxAbsDiff } from "./zoo.ts";

await setBackend("cpu");
const all = manifest();
for (const arg of Deno.args) {
  if (arg === "control") {
    // a model ONNX Runtime warns about (an unused initializer): proves the parent sees warnings
    const g = new OnnxGraphBuilder("control");
    g.input("x", "float32", [1]);
    g.initializer("unused", "float32", [1], new Float32Array(1));
    g.node("Identity", ["x"], { outputs: ["y"] });
    g.output("y", "float32", [1]);
    const ort = await loadOnnxRuntime("node");
    const s = await ort.InferenceSession.create(encodeOnnxModel(g, { opset: 17 }), { logSeverityLevel: 2 });
    await s.release();
    continue;
  }
  const [entry, ...opts] = arg.split(":");
  const o = Object.fromEntries(opts.map((s) => s.split("=")));
  const m = all[entry];
  const t0 = performance.now();
  const model = await filledModel(entry);
  const onnx = await OnnxModel.create(model, {
    graphOptimizationLevel: "all",
    logSeverityLevel: 2,
    export: {
      opset: o.opset ? Number(o.opset) : undefined,
      dynamicBatch: o.batch === undefined,
      batchSize: o.batch ? Number(o.batch) : undefined,
    },
  });
  model.dispose();
  const t1 = performance.now();
  const out = await onnx.run(fillInput(2, m.img_size), 2, ["logits", "features"]);
  const t2 = performance.now();
  await onnx.dispose();
  const want = (await readSafetensors(ref(`outputs/${entry.replace("@", "_")}.safetensors`))).tensors;
  console.log(JSON.stringify({
    arg,
    logits: maxAbsDiff(out.logits, toFloat32(want.get("logits")!)),
    features: maxAbsDiff(out.features, toFloat32(want.get("features")!)),
    exportAndLoadMs: Math.round(t1 - t0),
    runMs: Math.round(t2 - t1),
  }));
}
