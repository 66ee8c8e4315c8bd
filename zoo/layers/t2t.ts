/**
 * The Tokens-to-Token module: three soft splits with a token performer (`Token_performer`) or token
 * transformer (`Token_transformer`) between them, and the final projection to the embedding width.
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import { splitFused } from "./attention.ts";
import { Mlp } from "./blocks.ts";
import { LayerNorm, Linear, linear2d } from "./linear.ts";
import { fusedAttention, fusedPerformer } from "../kernels/fused.ts";
import { attentionCore, type Ctx, dropout, freeAsYouGo, stage } from "./ops.ts";
import type { ParamStore } from "./params.ts";
import { SoftSplit, unfoldSize } from "./soft_split.ts";

/** A token layer: `(B * T, dim)` to `(B * T, inDim)`. */
export interface TokenLayer {
  /** Applies the layer to `batch` samples of `x.shape[0] / batch` tokens. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor;
  /** Frees cached tensors. */
  dispose(): void;
}

/**
 * `Token_performer(dim, in_dim, head_cnt=1, kernel_ratio=0.5, dp1=0.1, dp2=0.1)`: linear-complexity
 * attention with positive random features `w (m, emb)` (not trainable), `prm_exp(x) = exp(w x - |x|^2 / 2)
 * / sqrt(m)`, and the value `v` as skip connection.
 */
export class TokenPerformer implements TokenLayer {
  readonly emb: number;
  readonly m: number;
  readonly w: tf.Variable;
  readonly kqv: Linear;
  readonly proj: Linear;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;
  readonly mlp0: Linear;
  readonly mlp2: Linear;
  readonly epsilon = 1e-8;
  readonly dp1 = 0.1;
  readonly dp2 = 0.1;

  /** Registers `w`, `kqv`, `proj`, `norm1`, `norm2`, `mlp.0`, `mlp.2` under the current scope. */
  constructor(store: ParamStore, readonly dim: number, inDim: number, kernelRatio = 0.5) {
    this.emb = inDim;
    this.m = Math.floor(this.emb * kernelRatio);
    // `w` is a direct parameter, so it comes first in the state_dict
    this.w = store.add("w", [this.m, this.emb], { kind: "orthogonal", gain: Math.sqrt(this.m) }, false);
    this.kqv = new Linear(store, "kqv", dim, 3 * this.emb);
    this.proj = new Linear(store, "proj", this.emb, this.emb);
    this.norm1 = new LayerNorm(store, "norm1", dim);
    this.norm2 = new LayerNorm(store, "norm2", this.emb);
    [this.mlp0, this.mlp2] = store.scope("mlp", () => [
      new Linear(store, "0", this.emb, this.emb),
      new Linear(store, "2", this.emb, this.emb),
    ]);
  }

  /** `prm_exp` of `x (rows, emb)`: `(rows, m)`. */
  #prm(x: tf.Tensor2D): tf.Tensor2D {
    const xd = tf.div(tf.sum(tf.mul(x, x), 1, true), 2);
    const wtx = linear2d(x, this.w, undefined);
    return tf.div(tf.exp(tf.sub(wtx, xd)), Math.sqrt(this.m));
  }

  /** See {@linkcode TokenLayer.apply}. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor {
    const t = x.shape[0] / batch;
    const { emb, m } = this;
    const kqv = this.kqv.apply(this.norm1.apply(x)) as tf.Tensor2D;
    let y: tf.Tensor | undefined = fusedPerformer(kqv, this.w as tf.Tensor2D, batch, this.epsilon);
    let v2: tf.Tensor | undefined; // undefined: v is read in place from kqv's last emb columns
    if (y) {
      if (ctx.training) v2 = tf.slice(kqv, [0, 2 * emb], [batch * t, emb]);
    } else {
      const [k, q, v] = splitFused(kqv, batch, t, 3, 1); // (B, T, emb) each
      const kp = tf.reshape(this.#prm(tf.reshape(k, [batch * t, emb])), [batch, t, m]) as tf.Tensor3D;
      const qp = tf.reshape(this.#prm(tf.reshape(q, [batch * t, emb])), [batch, t, m]) as tf.Tensor3D;
      const d = tf.matMul(qp, tf.reshape(tf.sum(kp, 1), [batch, m, 1])); // (B, T, 1)
      const kptv = tf.matMul(v, kp, true, false); // (B, emb, m)
      y = tf.div(tf.matMul(qp, kptv, false, true), tf.add(d, this.epsilon)); // (B, T, emb)
      v2 = tf.reshape(v, [batch * t, emb]);
    }
    const y2 = tf.reshape(y, [batch * t, emb]);
    if (!ctx.training) {
      // no dropout: GELU and the residual adds go into the products' epilogues
      const a = this.proj.apply(y2, v2 ? { residual: v2 } : { residual: kqv, residualColumn: 2 * emb });
      return this.mlp2.apply(this.mlp0.apply(this.norm2.apply(a), { gelu: true }), { residual: a });
    }
    const a = tf.add(v2!, dropout(this.proj.apply(y2), this.dp1, ctx));
    const h = this.mlp2.apply(this.mlp0.apply(this.norm2.apply(a), { gelu: true }));
    return tf.add(a, dropout(h, this.dp2, ctx));
  }

  /** Frees cached tensors. */
  dispose(): void {
    for (const l of [this.kqv, this.proj, this.mlp0, this.mlp2]) l.dispose();
  }
}

/**
 * `Token_transformer(dim, in_dim, num_heads=1, mlp_ratio=1)`: single-head attention from `dim` to `in_dim`
 * channels with scale `dim ** -0.5` applied to q first, `v` as skip connection, then a residual MLP.
 */
export class TokenTransformer implements TokenLayer {
  readonly norm1: LayerNorm;
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly scale: number;

  /** Registers `norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp` under the current scope. */
  constructor(store: ParamStore, readonly dim: number, readonly inDim: number, mlpRatio = 1) {
    this.norm1 = new LayerNorm(store, "norm1", dim);
    [this.qkv, this.proj] = store.scope("attn", () => [
      new Linear(store, "qkv", dim, inDim * 3, { bias: false }),
      new Linear(store, "proj", inDim, inDim),
    ]);
    this.norm2 = new LayerNorm(store, "norm2", inDim);
    this.mlp = store.scope("mlp", () => new Mlp(store, inDim, Math.floor(inDim * mlpRatio), inDim, 0));
    // head_dim = dim // num_heads with one head; qk_scale is never passed to the T2T layers
    this.scale = Math.pow(dim, -0.5);
  }

  /** See {@linkcode TokenLayer.apply}. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor {
    const n = x.shape[0] / batch;
    const d = this.inDim;
    const qkv = this.qkv.apply(this.norm1.apply(x)) as tf.Tensor2D;
    let out: tf.Tensor | undefined = fusedAttention(qkv, batch, 1, this.scale);
    // the residual is v: read in place from qkv's last d columns, or the split's v
    let residual: { residual: tf.Tensor; residualColumn?: number } = { residual: qkv, residualColumn: 2 * d };
    if (!out) {
      const [q, k, v] = splitFused(qkv, batch, n, 3, 1);
      out = attentionCore(q, k, v, this.scale, { scaleFirst: true, attnDrop: 0, ctx }).out;
      residual = { residual: tf.reshape(v, [batch * n, d]) };
    }
    const a = this.proj.apply(tf.reshape(out, [batch * n, d]), residual);
    return this.mlp.apply(this.norm2.apply(a), ctx, a);
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.qkv.dispose();
    this.proj.dispose();
    this.mlp.dispose();
  }
}

/** `T2T_module`: image `(B, C, H, W)` to tokens `(B * H/16 * W/16, embedDim)`. */
export class T2TModule {
  readonly softSplit0: SoftSplit;
  readonly softSplit1: SoftSplit;
  readonly softSplit2: SoftSplit;
  readonly attention1: TokenLayer;
  readonly attention2: TokenLayer;
  readonly project: Linear;

  /** Registers `attention1`, `attention2`, `project` under the current scope. */
  constructor(
    store: ParamStore,
    readonly tokensType: "performer" | "transformer",
    readonly inChans: number,
    readonly embedDim: number,
    readonly tokenDim: number,
  ) {
    this.softSplit0 = new SoftSplit(7, 4, 2, inChans);
    this.softSplit1 = new SoftSplit(3, 2, 1, tokenDim);
    this.softSplit2 = new SoftSplit(3, 2, 1, tokenDim);
    const make = (dim: number) =>
      tokensType === "transformer"
        ? new TokenTransformer(store, dim, tokenDim, 1)
        : new TokenPerformer(store, dim, tokenDim, 0.5);
    this.attention1 = store.scope("attention1", () => make(inChans * 7 * 7));
    this.attention2 = store.scope("attention2", () => make(tokenDim * 3 * 3));
    this.project = new Linear(store, "project", tokenDim * 3 * 3, embedDim);
  }

  /** Token grid side after the three soft splits, for an image side `size`. */
  static gridSize(size: number): number {
    return unfoldSize(unfoldSize(unfoldSize(size, 7, 4, 2), 3, 2, 1), 3, 2, 1);
  }

  /** `x (B, C, H, W)` to `(B * h * w, embedDim)`; taps `soft_split0`, `attention1`. */
  apply(x: tf.Tensor4D, ctx: Ctx): { tokens: tf.Tensor2D; h: number; w: number } {
    const b = x.shape[0];
    // each stage's intermediates freed when it is done, where nothing else needs them
    const free = freeAsYouGo(ctx);
    // the first soft split reads the NCHW image as it is where a kernel can (wasm inference), else NHWC
    let grid = this.softSplit0.applyChannelsFirst(x) ??
      stage(free, tf.transpose(x, [0, 2, 3, 1]), (nhwc) => this.softSplit0.apply(nhwc as tf.Tensor4D));
    let [, gh, gw, c] = grid.shape;
    ctx.taps?.set("soft_split0", tf.reshape(grid, [b, gh * gw, c]));
    let t = stage(free, grid, (g) => this.attention1.apply(tf.reshape(g, [b * gh * gw, c]), b, ctx));
    ctx.taps?.set("attention1", tf.reshape(t, [b, gh * gw, this.tokenDim]));
    grid = stage(free, t, (tt) => this.softSplit1.apply(tf.reshape(tt, [b, gh, gw, this.tokenDim])));
    [, gh, gw, c] = grid.shape;
    t = stage(free, grid, (g) => this.attention2.apply(tf.reshape(g, [b * gh * gw, c]), b, ctx));
    grid = stage(free, t, (tt) => this.softSplit2.apply(tf.reshape(tt, [b, gh, gw, this.tokenDim])));
    [, gh, gw, c] = grid.shape;
    const tokens = stage(
      free,
      grid,
      (g) => this.project.apply(tf.reshape(g, [b * gh * gw, c])) as tf.Tensor2D,
    );
    return { tokens, h: gh, w: gw };
  }

  /** Frees cached tensors. */
  dispose(): void {
    for (const s of [this.softSplit0, this.softSplit1, this.softSplit2]) s.dispose();
    this.attention1.dispose();
    this.attention2.dispose();
    this.project.dispose();
  }
}
