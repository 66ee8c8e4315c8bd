/**
 * Gradient parity with the official PyTorch code (tests/fixtures/reference/outputs/<variant>.safetensors): with
 * every state_dict tensor set to `fill(key, shape)`, the input `fillInput(2, img_size)` and the model in eval
 * mode, the mean cross-entropy against labels [3, 7] equals `loss` and the gradients of all trainable
 * parameters, computed by `lossAndGradients` (tf.variableGrads), equal the reference's `grad.*` tensors within
 * 1e-4 relative (||ours - ref|| / ||ref||). With `microBatch: 1` the two samples' gradients are computed one
 * after the other and averaged (the models have no batch statistics, so this is the same gradient), which
 * halves the activations held for the backward pass: the larger variants need it to fit the 4 GB wasm heap.
 */
import assert from "node:assert/strict";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import type { TensorMap } from "../../src/core/types.ts";
import { fill, fillInput } from "../../src/core/fill.ts";
import { disposeGradients, lossAndGradients } from "../../src/train/mod.ts";
import { type BackendName, createModel, type ModelName, setBackend, tf } from "../../zoo/mod.ts";
import { manifest, ref } from "./fixtures.ts";

/** Relative error ||a - b|| / ||b||. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d) / Math.sqrt(n);
}

/** Runs the parity check for one manifest entry on one backend; returns timings and errors for the log. */
export async function checkGradients(
  entry: string,
  backend: BackendName,
  opts: { microBatch?: number } = {},
) {
  const tol = 1e-4;
  await setBackend(backend);
  const m = manifest()[entry];
  assert.ok(m, `no manifest entry ${entry}`);
  const reference = await readSafetensors(ref(`outputs/${entry.replace("@", "_")}.safetensors`));
  const weights: TensorMap = new Map();
  for (const [k, shape] of m.state_dict) {
    const v = fill(k, shape);
    weights.set(k, { dtype: "F32", shape, data: new Uint8Array(v.buffer) });
  }
  const start = tf.memory().numTensors;
  const model = await createModel(m.factory as ModelName, { weights, imgSize: m.img_size });
  const t0 = performance.now();
  const x = tf.tensor4d(fillInput(2, m.img_size), [2, 3, m.img_size, m.img_size]);
  const { loss, logits, grads } = lossAndGradients(model, x, [3, 7], { microBatch: opts.microBatch });
  const lossV = (await loss.data())[0];
  const seconds = (performance.now() - t0) / 1000;
  const errors: Record<string, number> = {};
  try {
    const refLoss = toFloat32(reference.tensors.get("loss")!)[0];
    errors.loss = Math.abs(lossV - refLoss) / Math.abs(refLoss);
    assert.ok(errors.loss < tol, `${entry}/${backend}: loss ${lossV} vs ${refLoss}`);
    errors.logits = relErr(await logits.data(), toFloat32(reference.tensors.get("logits")!));
    let n = 0;
    for (const [key, t] of reference.tensors) {
      if (!key.startsWith("grad.")) continue;
      const name = key.slice(5);
      const g = grads.get(name);
      assert.ok(g, `${entry}/${backend}: no gradient for ${name}`);
      assert.deepEqual(g.shape, t.shape, `${entry}/${backend}: gradient shape of ${name}`);
      errors[name] = relErr(await g.data(), toFloat32(t));
      assert.ok(errors[name] < tol, `${entry}/${backend}: grad ${name} relative error ${errors[name]}`);
      n++;
    }
    assert.equal(n, 5);
    // every trainable parameter got a gradient, and nothing else did
    assert.deepEqual([...grads.keys()].sort(), [...model.trainableVariables().keys()].sort());
    // ... which are exactly the parameters PyTorch marks requires_grad
    assert.equal([...grads.values()].reduce((a, g) => a + g.size, 0), m.params_trainable);
  } finally {
    loss.dispose();
    logits.dispose();
    disposeGradients(grads);
    x.dispose();
  }
  model.dispose();
  assert.equal(tf.memory().numTensors, start, `${entry}/${backend}: leaked tensors`);
  return { seconds, errors };
}

/**
 * Registers one test per manifest entry: gradients on `backend` equal the reference's (see checkGradients).
 * `testOptions` adds `Deno.test` options (the WebGPU gate).
 */
export function gradientTests(
  entries: string[],
  backend: BackendName,
  opts: { microBatch?: number } = {},
  testOptions: Partial<Deno.TestDefinition> = {},
): void {
  for (const entry of entries) {
    Deno.test({
      name: `gradients = official PyTorch: ${entry} (${backend})`,
      sanitizeResources: false,
      ...testOptions,
      fn: async () => {
        const r = await checkGradients(entry, backend, opts);
        console.log(
          `${entry} ${backend}: ${r.seconds.toFixed(1)} s, max relative error ${
            Math.max(...Object.values(r.errors)).toExponential(1)
          }`,
        );
      },
    });
  }
}
