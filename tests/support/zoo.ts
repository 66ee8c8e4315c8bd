/**
 * Helpers of the zoo's parity tests: the reference's filled weights and input, and the comparison of our
 * intermediate activations with the official ones (tests/fixtures/reference/outputs/<variant>.safetensors).
 */
import assert from "node:assert/strict";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import type { TensorMap } from "../../src/core/types.ts";
import { fill, fillInput } from "../../src/core/fill.ts";
import { traceForward } from "../../zoo/model.ts";
import { type BackendName, createModel, type ModelName, setBackend, type T2tVit, tf } from "../../zoo/mod.ts";
import { manifest, ref } from "./fixtures.ts";

/** Every state_dict tensor of a manifest entry set to `fill(key, shape)`, as raw F32 tensors. */
export function filledWeights(entry: string): TensorMap {
  const m = manifest()[entry];
  assert.ok(m, `no manifest entry ${entry}`);
  const out: TensorMap = new Map();
  for (const [k, shape] of m.state_dict) {
    const v = fill(k, shape);
    out.set(k, { dtype: "F32", shape, data: new Uint8Array(v.buffer) });
  }
  return out;
}

/** Builds the model of a manifest entry with the reference's filled weights. */
export function filledModel(entry: string): Promise<T2tVit> {
  const m = manifest()[entry];
  return createModel(m.factory as ModelName, { weights: filledWeights(entry), imgSize: m.img_size });
}

/** Largest absolute difference. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, `length ${a.length} vs ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (!(e <= d)) d = e; // NaN propagates
  }
  return d;
}

/** The reference activations this suite compares, and how to cut ours to their shape. */
const CHECKS: [string, string, (t: tf.Tensor) => tf.Tensor][] = [
  ["soft_split0_head", "soft_split0", (t) => tf.slice(t, [0, 0, 0], [1, 8, -1])],
  ["attention1_head", "attention1", (t) => tf.slice(t, [0, 0, 0], [1, 8, -1])],
  ["t2t_tokens", "t2t_tokens", (t) => t],
  ["block0", "block0", (t) => tf.slice(t, [0, 0, 0], [1, -1, -1])],
  ["features", "features", (t) => t],
  ["logits", "logits", (t) => t],
];

/**
 * Runs the manifest entry with filled weights on `backend` and compares soft_split0_head, attention1_head,
 * t2t_tokens, block0, features and logits with the official outputs, then the logits of `forward` and the
 * features of `forwardFeatures` (the user's path, without taps). Returns the errors and timings.
 * With `batch: 1` only the first sample of the reference input runs (`fill_input` depends on the flat index
 * only, so it is the first half of the batch-2 input) and the per-sample outputs are compared for it: half
 * the work, for the slow backends.
 */
export async function checkForwardParity(
  entry: string,
  backend: BackendName,
  tol: number,
  opts: { batch?: 1 | 2 } = {},
): Promise<{ errors: Record<string, number>; buildMs: number; forwardMs: number }> {
  const batch = opts.batch ?? 2;
  await setBackend(backend);
  const m = manifest()[entry];
  const reference = (await readSafetensors(ref(`outputs/${entry.replace("@", "_")}.safetensors`))).tensors;
  const before = tf.memory().numTensors;
  let t0 = performance.now();
  const model = await filledModel(entry);
  const buildMs = performance.now() - t0;
  const x = tf.tensor4d(fillInput(batch, m.img_size), [batch, 3, m.img_size, m.img_size]);
  const errors: Record<string, number> = {};
  try {
    t0 = performance.now();
    const taps = traceForward(model, x);
    await taps.get("logits")!.data();
    const forwardMs = performance.now() - t0;
    try {
      for (const [refName, ours, cut] of CHECKS) {
        const full = reference.get(refName)!;
        // per-sample outputs (leading axis 2): the first `batch` samples
        const all = toFloat32(full);
        const want = full.shape[0] === 2 && refName !== "soft_split0_head" && refName !== "attention1_head" &&
            refName !== "block0"
          ? all.subarray(0, (all.length / 2) * batch)
          : all;
        const got = tf.tidy(() => cut(taps.get(ours)!));
        const data = await got.data();
        got.dispose();
        errors[refName] = maxAbsDiff(data, want);
      }
    } finally {
      tf.dispose([...taps.values()]);
    }
    // and what users run: forward and forwardFeatures without taps (inference takes shortcuts there that
    // the traced pass, which keeps every intermediate, does not: the last block computes class tokens alone)
    for (const [refName, run] of [["logits", model.forward], ["features", model.forwardFeatures]] as const) {
      const full = reference.get(refName)!;
      const all = toFloat32(full);
      const y = run.call(model, x);
      const data = await y.data();
      y.dispose();
      errors[`${refName} (${run.name})`] = maxAbsDiff(data, all.subarray(0, (all.length / 2) * batch));
    }
    for (const [k, e] of Object.entries(errors)) {
      assert.ok(e <= tol, `${entry} on ${backend}: ${k} differs by ${e} (> ${tol})`);
    }
    return { errors, buildMs, forwardMs };
  } finally {
    x.dispose();
    model.dispose();
    // everything the model and the check made is gone
    assert.equal(tf.memory().numTensors, before, "tensors leaked");
  }
}

/** One-line summary of a parity run, for the test log. */
export function summary(
  entry: string,
  r: { errors: Record<string, number>; buildMs: number; forwardMs: number },
): string {
  const worst = Math.max(...Object.values(r.errors));
  return `${entry}: max error ${worst.toExponential(2)} (build ${r.buildMs.toFixed(0)} ms, forward ${
    r.forwardMs.toFixed(0)
  } ms)`;
}
