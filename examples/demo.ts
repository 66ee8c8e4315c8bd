/**
 * The quick start, end to end on an embedded default: no download, nothing but this repository.
 *
 * It reads the official checkpoint bundled with the tests (`t2t_vit_7.pth.tar`, the authors' initialisation in
 * the layout of their released files) straight from PyTorch's format, builds T2T-ViT-7 with it, classifies the
 * reference input, prints the top-5 ImageNet classes and the time of each step, and checks the logits against
 * those the official PyTorch code produced for the same weights and input.
 *
 * ```sh
 * deno task demo                                   # best backend, bundled checkpoint
 * deno task demo --backend cpu
 * deno task demo --weights t2t_vit_14.safetensors  # your converted weights (any variant)
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readSafetensors, toFloat32 } from "../converters/safetensors.ts";
import { T2tVitError } from "../src/core/errors.ts";
import { fillInput } from "../src/core/fill.ts";
import { IMAGENET_CLASSES } from "../src/labels.ts";
import { type BackendName, loadModel, setBackend, tf, webGpuAdapter } from "../zoo/mod.ts";

const FIXTURES = new URL("../tests/fixtures/reference/", import.meta.url);

const { values } = parseArgs({
  options: {
    backend: { type: "string" },
    weights: { type: "string" },
    runs: { type: "string", default: "3" },
    threads: { type: "string", default: "1" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "usage: deno task demo [--backend webgpu|wasm|cpu] [--threads N (wasm)] [--weights file.safetensors|.pth] [--runs N]",
  );
  Deno.exit(0);
}

const ms = (t0: number) => `${(performance.now() - t0).toFixed(0)} ms`;

try {
  let t0 = performance.now();
  const backend = await setBackend(values.backend as BackendName | undefined, {
    wasmThreads: Number(values.threads),
  });
  const adapter = backend === "webgpu" ? ` (${webGpuAdapter()?.description || "adapter"})` : "";
  console.log(`backend      ${backend}${adapter}, ready in ${ms(t0)}`);

  const weights = values.weights ?? new URL("checkpoints/t2t_vit_7.pth.tar", FIXTURES).pathname;
  t0 = performance.now();
  const model = await loadModel(weights);
  console.log(
    `model        ${model.name}, ${
      (model.parameterCount() / 1e6).toFixed(1)
    }M parameters, from ${weights} in ${ms(t0)}`,
  );

  // the reference input of the parity tests: deterministic values in [-2, 2), NCHW like PyTorch
  const size = model.config.imgSize;
  const x = tf.tensor4d(fillInput(1, size), [1, 3, size, size]);
  t0 = performance.now();
  let logits = model.forward(x);
  const scores = await logits.data();
  console.log(`first call   ${ms(t0)} (on WebGPU: shader compilation included; wasm packs weights at load)`);
  const runs = Math.max(1, Number(values.runs));
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    logits.dispose();
    t0 = performance.now();
    logits = model.forward(x);
    await logits.data();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`forward      ${times[(times.length - 1) >> 1].toFixed(0)} ms (median of ${runs}, batch 1)`);

  const probs = tf.softmax(logits);
  const p = await probs.data();
  const top = [...p.keys()].sort((a, b) => p[b] - p[a]).slice(0, 5);
  console.log("top-5");
  for (const i of top) {
    const label = model.config.numClasses === 1000 ? IMAGENET_CLASSES[i] : `class ${i}`;
    console.log(`  ${(100 * p[i]).toFixed(2).padStart(6)}%  ${String(i).padStart(4)}  ${label}`);
  }
  if (values.weights === undefined) {
    // the bundled checkpoint has random (official-init) weights: the classes mean nothing, the numbers do
    const ref = await readSafetensors(
      new URL("outputs/t2t_vit_7.official-init.safetensors", FIXTURES).pathname,
    );
    const want = toFloat32(ref.tensors.get("logits")!).subarray(0, 1000);
    let err = 0;
    for (let i = 0; i < 1000; i++) err = Math.max(err, Math.abs(scores[i] - want[i]));
    console.log(
      `parity       max |logit - official PyTorch logit| = ${
        err.toExponential(2)
      } (untrained weights: the classes are arbitrary)`,
    );
  }
  tf.dispose([x, logits, probs]);
  model.dispose();
} catch (e) {
  if (e instanceof T2tVitError) {
    console.error(`demo: ${e.message}`);
    Deno.exit(1);
  }
  throw e;
}
