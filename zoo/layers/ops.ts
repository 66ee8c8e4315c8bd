/**
 * Functional building blocks shared by the layers: exact GELU, LayerNorm, dropout, drop-path and the
 * attention core. They are backend-neutral: where a backend wants operands arranged differently (wasm's
 * XNNPACK wants untransposed 2-D products), its kernels do it (zoo/kernels).
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import { fusedGelu, fusedLayerNorm, fusedSoftmax, gradientsRecording } from "../kernels/fused.ts";

/** Per-call state of a forward pass. */
export interface Ctx {
  /** Training mode: dropout and drop-path active. */
  readonly training: boolean;
  /** Where intermediate activations are recorded, if anywhere (tests and diagnostics). */
  readonly taps?: Map<string, tf.Tensor>;
  /** Attention probabilities of each backbone block, when requested. */
  readonly attentions?: tf.Tensor[];
  /** Seeds of the random ops (dropout, drop-path), drawn in call order; unset: tfjs draws from `Math.random`. */
  readonly seed?: () => number;
}

/**
 * Whether a forward pass may free each stage's intermediates as soon as the stage is done (no gradient
 * tape needs them, no taps or attention maps are being collected): then at most one block's activations
 * are alive at a time, not the whole network's.
 */
export function freeAsYouGo(ctx: Ctx): boolean {
  return !ctx.taps && !ctx.attentions && !gradientsRecording();
}

/**
 * `f(x)`; when `free`, in its own `tf.tidy`, and `x` (an intermediate the caller is done with, never a
 * caller's input) is disposed afterwards.
 */
export function stage<T extends tf.Tensor>(free: boolean, x: tf.Tensor, f: (x: tf.Tensor) => T): T {
  if (!free) return f(x);
  const y = tf.tidy(() => f(x));
  x.dispose();
  return y;
}

/**
 * GELU in its exact form `0.5 x (1 + erf(x / sqrt 2))`, as PyTorch's `nn.GELU()` (tfjs's erf is accurate to
 * 2e-7 on every backend; the tanh approximation would move logits by ~2e-4).
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  // one fused pass where a kernel exists (inference on wasm and webgpu); the generic ops otherwise
  const fused = fusedGelu(x);
  if (fused) return fused;
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)));
}

/** LayerNorm over the last axis with PyTorch's biased variance and `eps` inside the square root. */
export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps = 1e-5): tf.Tensor {
  const fused = fusedLayerNorm(x, weight, bias, eps);
  if (fused) return fused;
  return tf.tidy(() => {
    const axis = x.rank - 1;
    const mean = tf.mean(x, axis, true);
    const centered = tf.sub(x, mean);
    const variance = tf.mean(tf.square(centered), axis, true);
    const normed = tf.mul(centered, tf.rsqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(normed, weight), bias);
  });
}

/** Dropout with rate `p` (inverted scaling), only in training mode. */
export function dropout(x: tf.Tensor, p: number, ctx: Ctx): tf.Tensor {
  if (!ctx.training || p <= 0) return x;
  return tf.dropout(x, p, undefined, ctx.seed?.());
}

/**
 * Stochastic depth (timm's `DropPath`): in training, each sample's residual branch is zeroed with
 * probability `p` and the survivors scaled by `1 / (1 - p)`. `x` is `(B * N, C)` with `batch` samples.
 */
export function dropPath(x: tf.Tensor, p: number, batch: number, ctx: Ctx): tf.Tensor {
  if (!ctx.training || p <= 0) return x;
  return tf.tidy(() => {
    const keep = 1 - p;
    const mask = tf.floor(tf.add(tf.randomUniform([batch, 1, 1], 0, 1, "float32", ctx.seed?.()), keep));
    const shape = x.shape;
    const x3 = tf.reshape(x, [batch, -1, shape[shape.length - 1]]);
    return tf.reshape(tf.mul(tf.div(x3, keep), mask), shape);
  });
}

/** Each sample's first row (its class token) of `x (B * N, C)`: rows `0, N, 2N, ..`, as `(B, C)`. */
export function classRows(x: tf.Tensor, batch: number): tf.Tensor2D {
  const [rows, c] = x.shape;
  const n = rows / batch;
  if (n === 1) return x as tf.Tensor2D;
  return tf.reshape(tf.slice(tf.reshape(x, [batch, n, c]), [0, 0, 0], [batch, 1, c]), [batch, c]);
}

/** Largest attention score block computed at once (elements), to bound memory for long sequences. */
const MAX_SCORE_ELEMENTS = 1 << 23;

/**
 * Scaled dot-product attention on `(G, N, d)` queries, keys and values (G = batch x heads):
 * `softmax(scale * q k^T) v`, with the scale applied to `q` first (`scaleFirst`, as the official token
 * transformer does) or to the scores (as the backbone does). Query rows are processed in chunks so that the
 * score matrix never exceeds 2^23 elements per step (rows are independent under softmax, so this is exact).
 *
 * @returns the output `(G, N, d)` and, when `keepProbs`, the probabilities `(G, N, N)`.
 */
export function attentionCore(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  scale: number,
  opts: { scaleFirst: boolean; attnDrop: number; ctx: Ctx; keepProbs?: boolean },
): { out: tf.Tensor3D; probs?: tf.Tensor3D } {
  const [g, n, d] = q.shape;
  const nk = k.shape[1];
  // softmax of the scaled scores qs (.., r, d) @ k^T; scale and softmax in one fused kernel where one runs
  const probsOf = (qs: tf.Tensor): tf.Tensor => {
    if (opts.scaleFirst) return tf.softmax(tf.matMul(tf.mul(qs, scale), k, false, true));
    const raw = tf.matMul(qs, k, false, true);
    return fusedSoftmax(raw, scale) ?? tf.softmax(tf.mul(raw, scale));
  };
  return tf.tidy(() => {
    const outs: tf.Tensor[] = [];
    const probs: tf.Tensor[] = [];
    const rows = Math.max(1, Math.min(n, Math.floor(MAX_SCORE_ELEMENTS / (nk * g))));
    for (let r = 0; r < n; r += rows) {
      const qc = rows >= n ? q : tf.slice(q, [0, r, 0], [g, Math.min(rows, n - r), d]);
      let p = probsOf(qc);
      if (opts.keepProbs) probs.push(p);
      p = dropout(p, opts.attnDrop, opts.ctx);
      outs.push(tf.matMul(p, v));
    }
    const out = (outs.length === 1 ? outs[0] : tf.concat(outs, 1)) as tf.Tensor3D;
    if (!opts.keepProbs) return { out };
    return { out, probs: (probs.length === 1 ? probs[0] : tf.concat(probs, 1)) as tf.Tensor3D };
  });
}
