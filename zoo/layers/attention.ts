/**
 * Multi-head self-attention of the backbone blocks: the standard one (`transformer_block.Attention`), the
 * squeeze-and-excitation one (`t2t_vit_se.Attention` with `SELayer`) and the ghost one
 * (`t2t_vit_ghost.Attention_ghost`). Tokens flow as 2-D `(B * N, C)` tensors.
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import { Linear } from "./linear.ts";
import { fusedAttention, fusedClassAttention } from "../kernels/fused.ts";
import { attentionCore, classRows, type Ctx, dropout } from "./ops.ts";
import type { ParamStore } from "./params.ts";

/** Options shared by the attention layers. */
export interface AttentionOptions {
  /** Number of heads. */
  numHeads: number;
  /** Bias in the q/k/v projections (`qkv_bias`). */
  qkvBias: boolean;
  /** `qk_scale`; `null` means `head_dim ** -0.5`. */
  qkScale: number | null;
  /** Dropout on the attention probabilities. */
  attnDrop: number;
  /** Dropout after the output projection. */
  projDrop: number;
}

/** `(B * N, C)` to `(B * H, N, C / H)`. */
export function splitHeads(x: tf.Tensor, batch: number, tokens: number, heads: number): tf.Tensor3D {
  const c = x.shape[x.rank - 1];
  const d = c / heads;
  const t = tf.transpose(tf.reshape(x, [batch, tokens, heads, d]), [0, 2, 1, 3]);
  return tf.reshape(t, [batch * heads, tokens, d]);
}

/** `(B * H, N, d)` to `(B * N, H * d)` (heads concatenated per token, as PyTorch's `transpose(1, 2).reshape`). */
export function mergeHeads(x: tf.Tensor3D, batch: number, heads: number): tf.Tensor2D {
  const [, n, d] = x.shape;
  const t = tf.transpose(tf.reshape(x, [batch, heads, n, d]), [0, 2, 1, 3]);
  return tf.reshape(t, [batch * n, heads * d]);
}

/**
 * Splits a fused `(B * N, parts * C)` projection (PyTorch's `reshape(B, N, parts, H, d).permute(2, 0, 3, 1, 4)`)
 * into `parts` tensors of `(B * H, N, d)`. It uses one 4-D transpose and contiguous slices (wasm's 5-D
 * transposes and column slices are slow).
 */
export function splitFused(
  x: tf.Tensor,
  batch: number,
  tokens: number,
  parts: number,
  heads: number,
): tf.Tensor3D[] {
  const d = x.shape[x.rank - 1] / (parts * heads);
  const t = tf.transpose(tf.reshape(x, [batch, tokens, parts * heads, d]), [0, 2, 1, 3]); // (B, P*H, N, d)
  const per = heads * tokens * d;
  const t3 = tf.reshape(t, [batch, parts, per]);
  const out: tf.Tensor3D[] = [];
  for (let p = 0; p < parts; p++) {
    out.push(tf.reshape(tf.slice(t3, [0, p, 0], [batch, 1, per]), [batch * heads, tokens, d]));
  }
  return out;
}

/**
 * Multi-head attention of a fused projection `qkv (B * N, 3 C)` to `(B * N, C)` (heads concatenated per
 * token): the fused kernel when one runs here (inference without attention maps or attention dropout), else
 * split, {@linkcode attentionCore} and merge. Records the probabilities in `ctx.attentions` when asked.
 */
export function multiHead(
  qkv: tf.Tensor,
  batch: number,
  heads: number,
  scale: number,
  attnDrop: number,
  ctx: Ctx,
): tf.Tensor2D {
  const keepProbs = ctx.attentions !== undefined;
  if (!keepProbs && !(ctx.training && attnDrop > 0)) {
    const fused = fusedAttention(qkv as tf.Tensor2D, batch, heads, scale);
    if (fused) return fused;
  }
  const tokens = qkv.shape[0] / batch;
  const [q, k, v] = splitFused(qkv, batch, tokens, 3, heads);
  const { out, probs } = attentionCore(q, k, v, scale, { scaleFirst: false, attnDrop, ctx, keepProbs });
  if (probs) ctx.attentions!.push(tf.reshape(probs, [batch, heads, tokens, tokens]));
  return mergeHeads(out, batch, heads);
}

/**
 * The attention of the class tokens alone: `q (B, C)`, each sample's class-token query, against the keys
 * and values `k`, `v` `(B * N, C)` of all its tokens, to `(B, C)` with the heads concatenated: rows
 * `0, N, 2N, ..` of {@linkcode multiHead}'s result (scores scaled after the product, as the backbone
 * does): the fused kernel where one runs (wasm), else element-wise products and sums (one row of scores
 * per head is too small for a product).
 */
export function classTokenAttention(
  q: tf.Tensor2D,
  k: tf.Tensor2D,
  v: tf.Tensor2D,
  batch: number,
  heads: number,
  scale: number,
): tf.Tensor2D {
  const fused = fusedClassAttention(q, k, v, batch, heads, scale);
  if (fused) return fused;
  const [rows, c] = k.shape;
  const n = rows / batch, d = c / heads;
  const scores = tf.sum(tf.mul(tf.reshape(k, [batch, n, heads, d]), tf.reshape(q, [batch, 1, heads, d])), 3);
  const probs = tf.softmax(tf.mul(tf.transpose(scores, [0, 2, 1]), scale)); // (B, H, N)
  const weights = tf.reshape(tf.transpose(probs, [0, 2, 1]), [batch, n, heads, 1]);
  return tf.reshape(tf.sum(tf.mul(tf.reshape(v, [batch, n, heads, d]), weights), 1), [batch, c]);
}

function scaleOf(dim: number, opts: AttentionOptions): number {
  const headDim = Math.floor(dim / opts.numHeads);
  return opts.qkScale ?? Math.pow(headDim, -0.5);
}

/** `SELayer(channel, reduction=16)` of the SE variant: channel gates from the token mean. */
export class SELayer {
  readonly fc0: Linear;
  readonly fc2: Linear;

  /** Registers `<prefix>fc.0.weight` and `fc.2.weight` (no biases). */
  constructor(store: ParamStore, readonly channels: number, reduction = 16) {
    const hidden = Math.floor(channels / reduction);
    [this.fc0, this.fc2] = store.scope("fc", () => [
      new Linear(store, "0", channels, hidden, { bias: false }),
      new Linear(store, "2", hidden, channels, { bias: false }),
    ]);
  }

  /** `x (B * N, C)` times `sigmoid(fc2(relu(fc0(mean_N x))))` per sample and channel. */
  apply(x: tf.Tensor, batch: number): tf.Tensor {
    const c = this.channels;
    const x3 = tf.reshape(x, [batch, -1, c]);
    const y = tf.sigmoid(this.fc2.apply(tf.relu(this.fc0.apply(tf.mean(x3, 1)))));
    return tf.reshape(tf.mul(x3, tf.reshape(y, [batch, 1, c])), x.shape);
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.fc0.dispose();
    this.fc2.dispose();
  }
}

/** Attention of the backbone; with `se: true` the SE variant (gate after the projection). */
export class Attention {
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly se?: SELayer;
  readonly scale: number;

  /** Registers `qkv`, `proj` (and `se_layer`) under the current scope. */
  constructor(store: ParamStore, readonly dim: number, readonly opts: AttentionOptions, se = false) {
    this.scale = scaleOf(dim, opts);
    this.qkv = new Linear(store, "qkv", dim, dim * 3, { bias: opts.qkvBias });
    this.proj = new Linear(store, "proj", dim, dim);
    if (se) this.se = store.scope("se_layer", () => new SELayer(store, dim));
  }

  /**
   * `x (B * N, C)` to `(B * N, C)`; plus `residual` when given (fused into the projection when nothing
   * comes between them).
   */
  apply(x: tf.Tensor, batch: number, ctx: Ctx, residual?: tf.Tensor): tf.Tensor {
    const h = this.opts.numHeads;
    const heads = multiHead(this.qkv.apply(x), batch, h, this.scale, this.opts.attnDrop, ctx);
    if (!this.se && (!ctx.training || this.opts.projDrop <= 0)) return this.proj.apply(heads, { residual });
    let y = this.proj.apply(heads);
    if (this.se) y = this.se.apply(y, batch);
    y = dropout(y, this.opts.projDrop, ctx);
    return residual ? tf.add(residual, y) : y;
  }

  /**
   * The attention's output for the class tokens alone, plus `residual (B, C)`: rows `0, N, 2N, ..` of
   * {@linkcode apply} for `x (B * N, C)` in inference (no dropout). The standard form computes queries for
   * the class tokens only and projects nothing else (a third of the q/k/v projection and all the output
   * projection saved); the SE form's gate averages every token's output, so it computes them all and keeps
   * the class tokens'.
   */
  applyClassTokens(x: tf.Tensor2D, batch: number, residual: tf.Tensor2D, ctx: Ctx): tf.Tensor2D {
    if (this.se) return tf.add(residual, classRows(this.apply(x, batch, ctx), batch)) as tf.Tensor2D;
    const c = this.dim;
    const q = this.qkv.apply(classRows(x, batch), { outputs: { start: 0, count: c } }) as tf.Tensor2D;
    const k = this.qkv.apply(x, { outputs: { start: c, count: c } }) as tf.Tensor2D;
    const v = this.qkv.apply(x, { outputs: { start: 2 * c, count: c } }) as tf.Tensor2D;
    const heads = classTokenAttention(q, k, v, batch, this.opts.numHeads, this.scale);
    return this.proj.apply(heads, { residual }) as tf.Tensor2D;
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.qkv.dispose();
    this.proj.dispose();
    this.se?.dispose();
  }
}

/** A ghost projection of `x`: `lin x` concatenated with its copy scaled per channel by `w` `(C/2, 1, 1)`. */
function ghostProjection(lin: Linear, w: tf.Variable, x: tf.Tensor): tf.Tensor {
  const a = lin.apply(x);
  return tf.concat([a, tf.mul(a, tf.reshape(w, [w.shape[0]]))], 1);
}

/**
 * `Attention_ghost`: q, k and v each come from a half-width projection concatenated with a per-channel
 * scaled copy of itself (a depthwise 1x1 `Conv1d`, weights `(C/2, 1, 1)`).
 */
export class GhostAttention {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly cheapQ: tf.Variable;
  readonly cheapK: tf.Variable;
  readonly cheapV: tf.Variable;
  readonly proj: Linear;
  readonly scale: number;

  /** Registers `q`, `k`, `v`, `cheap_operation_{q,k,v}` and `proj` under the current scope. */
  constructor(store: ParamStore, readonly dim: number, readonly opts: AttentionOptions) {
    this.scale = scaleOf(dim, opts);
    const half = Math.floor(dim / 2);
    this.q = new Linear(store, "q", dim, half, { bias: opts.qkvBias });
    this.k = new Linear(store, "k", dim, half, { bias: opts.qkvBias });
    this.v = new Linear(store, "v", dim, half, { bias: opts.qkvBias });
    // nn.Conv1d default init: kaiming_uniform(a=sqrt(5)) with fan_in = in_channels / groups * kernel = 1
    const cheap = (n: string) =>
      store.add(`cheap_operation_${n}.weight`, [half, 1, 1], { kind: "kaimingUniform", fanIn: 1 });
    this.cheapQ = cheap("q");
    this.cheapK = cheap("k");
    this.cheapV = cheap("v");
    this.proj = new Linear(store, "proj", dim, dim);
  }

  /** `x (B * N, C)` to `(B * N, C)`. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor {
    const h = this.opts.numHeads;
    const ghost = (lin: Linear, w: tf.Variable) => ghostProjection(lin, w, x);
    // q, k and v side by side per token: the fused projection's layout
    const qkv = tf.concat([
      ghost(this.q, this.cheapQ),
      ghost(this.k, this.cheapK),
      ghost(this.v, this.cheapV),
    ], 1);
    const out = multiHead(qkv, batch, h, this.scale, this.opts.attnDrop, ctx);
    return dropout(this.proj.apply(out), this.opts.projDrop, ctx);
  }

  /**
   * The output for the class tokens alone, plus `residual (B, C)`: rows `0, N, 2N, ..` of
   * {@linkcode apply} for `x (B * N, C)` in inference, with queries and the projection of the class tokens
   * only.
   */
  applyClassTokens(x: tf.Tensor2D, batch: number, residual: tf.Tensor2D): tf.Tensor2D {
    const q = ghostProjection(this.q, this.cheapQ, classRows(x, batch)) as tf.Tensor2D;
    const k = ghostProjection(this.k, this.cheapK, x) as tf.Tensor2D;
    const v = ghostProjection(this.v, this.cheapV, x) as tf.Tensor2D;
    const heads = classTokenAttention(q, k, v, batch, this.opts.numHeads, this.scale);
    return tf.add(residual, this.proj.apply(heads)) as tf.Tensor2D;
  }

  /** Frees cached tensors. */
  dispose(): void {
    for (const l of [this.q, this.k, this.v, this.proj]) l.dispose();
  }
}
