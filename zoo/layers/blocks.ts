/**
 * Feed-forward layers and backbone blocks: `Mlp`, `Mlp_ghost`, the pre-norm transformer `Block` in its
 * standard, SE and ghost forms, the dense block (`t2t_vit_dense.Block`, which appends `growth_rate` new
 * channels) and the dense `Transition` (linear + GELU halving the width).
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import { Attention, type AttentionOptions, GhostAttention } from "./attention.ts";
import { LayerNorm, Linear } from "./linear.ts";
import { classRows, type Ctx, dropout, dropPath, gelu } from "./ops.ts";
import type { ParamStore } from "./params.ts";

/** `Mlp`: fc1, exact GELU, dropout, fc2, dropout. */
export class Mlp {
  readonly fc1: Linear;
  readonly fc2: Linear;

  /** Registers `fc1` and `fc2` under the current scope. */
  constructor(
    store: ParamStore,
    inFeatures: number,
    hidden: number,
    outFeatures: number,
    readonly drop: number,
  ) {
    this.fc1 = new Linear(store, "fc1", inFeatures, hidden);
    this.fc2 = new Linear(store, "fc2", hidden, outFeatures);
  }

  /** Applies the MLP to `(rows, in)`; plus `residual` when given (fused into the last product when there is no dropout to apply). */
  apply(x: tf.Tensor, ctx: Ctx, residual?: tf.Tensor): tf.Tensor {
    if (!ctx.training || this.drop <= 0) {
      return this.fc2.apply(this.fc1.apply(x, { gelu: true }), { residual });
    }
    const y = dropout(
      this.fc2.apply(dropout(this.fc1.apply(x, { gelu: true }), this.drop, ctx)),
      this.drop,
      ctx,
    );
    return residual ? tf.add(residual, y) : y;
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.fc1.dispose();
    this.fc2.dispose();
  }
}

/**
 * `Mlp_ghost`: `x1 = GELU(fc1 x)` (square), two per-channel scaled copies `GELU(w2 * x1)`, `GELU(w3 * x1)`,
 * concatenated to `3 C` and projected back by `fc2`.
 */
export class GhostMlp {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly cheap2: tf.Variable;
  readonly cheap3: tf.Variable;

  /** Registers `fc1`, `fc2`, `cheap_operation2` and `cheap_operation3` under the current scope. */
  constructor(store: ParamStore, dim: number, hidden: number, readonly drop: number) {
    this.fc1 = new Linear(store, "fc1", dim, dim);
    this.fc2 = new Linear(store, "fc2", hidden, dim);
    const init = { kind: "kaimingUniform", fanIn: 1 } as const;
    this.cheap2 = store.add("cheap_operation2.weight", [dim, 1, 1], init);
    this.cheap3 = store.add("cheap_operation3.weight", [dim, 1, 1], init);
  }

  /** Applies the ghost MLP to `(rows, C)`. */
  apply(x: tf.Tensor, ctx: Ctx): tf.Tensor {
    const c = this.cheap2.shape[0];
    const x1 = gelu(this.fc1.apply(x));
    const x2 = gelu(tf.mul(x1, tf.reshape(this.cheap2, [c])));
    const x3 = gelu(tf.mul(x1, tf.reshape(this.cheap3, [c])));
    const h = dropout(tf.concat([x1, x2, x3], 1), this.drop, ctx);
    return dropout(this.fc2.apply(h), this.drop, ctx);
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.fc1.dispose();
    this.fc2.dispose();
  }
}

/** Options of a backbone block. */
export interface BlockOptions extends AttentionOptions {
  /** `mlp_ratio`: hidden width = `floor(dim * mlpRatio)`. */
  mlpRatio: number;
  /** Dropout after projections and in the MLP (`drop_rate`). */
  drop: number;
  /** Stochastic depth rate of this block. */
  dropPath: number;
}

/** Kinds of backbone block. */
export type BlockKind = "vit" | "se" | "ghost";

/** A backbone block. */
export interface BackboneLayer {
  /** `(B * N, C_in)` to `(B * N, C_out)`. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor;
  /**
   * In inference, the output rows of the class tokens alone (rows `0, N, 2N, ..` of `apply`), `(B, C_out)`,
   * computed for them alone where it can; for a classifier's last block.
   */
  applyClassTokens?(x: tf.Tensor2D, batch: number, ctx: Ctx): tf.Tensor2D;
  /** Frees cached tensors. */
  dispose(): void;
}

/** Pre-norm transformer block: `x + attn(norm1 x)`, then `x + mlp(norm2 x)` (with drop-path). */
export class Block implements BackboneLayer {
  readonly norm1: LayerNorm;
  readonly attn: Attention | GhostAttention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp | GhostMlp;

  /** Registers `norm1`, `attn`, `norm2`, `mlp` under the current scope. */
  constructor(
    store: ParamStore,
    readonly dim: number,
    readonly kind: BlockKind,
    readonly opts: BlockOptions,
  ) {
    this.norm1 = new LayerNorm(store, "norm1", dim);
    this.attn = store.scope(
      "attn",
      () =>
        kind === "ghost"
          ? new GhostAttention(store, dim, opts)
          : new Attention(store, dim, opts, kind === "se"),
    );
    this.norm2 = new LayerNorm(store, "norm2", dim);
    const hidden = Math.floor(dim * opts.mlpRatio);
    this.mlp = store.scope(
      "mlp",
      () =>
        kind === "ghost"
          ? new GhostMlp(store, dim, hidden, opts.drop)
          : new Mlp(store, dim, hidden, dim, opts.drop),
    );
  }

  /** See {@linkcode BackboneLayer.apply}. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor {
    const p = this.opts.dropPath;
    if ((!ctx.training || p <= 0) && this.attn instanceof Attention && this.mlp instanceof Mlp) {
      // no drop-path: the residual adds go into the products' epilogues
      const a = this.attn.apply(this.norm1.apply(x), batch, ctx, x);
      return this.mlp.apply(this.norm2.apply(a), ctx, a);
    }
    const a = tf.add(x, dropPath(this.attn.apply(this.norm1.apply(x), batch, ctx), p, batch, ctx));
    return tf.add(a, dropPath(this.mlp.apply(this.norm2.apply(a), ctx), p, batch, ctx));
  }

  /**
   * The block's output for the class tokens alone, `(B, C)` from `x (B * N, C)`: rows `0, N, 2N, ..` of
   * {@linkcode apply} in inference, for a classifier's last block (only its class tokens reach the head):
   * every token's keys and values, but the queries, the projection and the MLP of the class tokens (see
   * the attention layers' `applyClassTokens` for what each form computes).
   */
  applyClassTokens(x: tf.Tensor2D, batch: number, ctx: Ctx): tf.Tensor2D {
    if (ctx.training) throw new Error("Block.applyClassTokens: inference only");
    const n1 = this.norm1.apply(x) as tf.Tensor2D, xc = classRows(x, batch);
    const a = this.attn instanceof Attention
      ? this.attn.applyClassTokens(n1, batch, xc, ctx)
      : this.attn.applyClassTokens(n1, batch, xc);
    if (this.mlp instanceof Mlp) return this.mlp.apply(this.norm2.apply(a), ctx, a) as tf.Tensor2D;
    return tf.add(a, this.mlp.apply(this.norm2.apply(a), ctx)) as tf.Tensor2D;
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.attn.dispose();
    this.mlp.dispose();
  }
}

/** The dense block: a pre-norm block whose output goes through `dense_linear` to `growthRate` new channels, concatenated to its input. */
export class DenseBlock implements BackboneLayer {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly denseLinear: Linear;

  /** Registers `norm1`, `attn`, `norm2`, `mlp`, `dense_linear` under the current scope. */
  constructor(
    store: ParamStore,
    readonly dim: number,
    readonly growthRate: number,
    readonly opts: BlockOptions,
  ) {
    this.norm1 = new LayerNorm(store, "norm1", dim);
    this.attn = store.scope("attn", () => new Attention(store, dim, opts));
    this.norm2 = new LayerNorm(store, "norm2", dim);
    const hidden = Math.floor(dim * opts.mlpRatio);
    this.mlp = store.scope("mlp", () => new Mlp(store, dim, hidden, dim, opts.drop));
    this.denseLinear = new Linear(store, "dense_linear", dim, growthRate);
  }

  /** `(B * N, C)` to `(B * N, C + growthRate)`. */
  apply(x: tf.Tensor, batch: number, ctx: Ctx): tf.Tensor {
    const p = this.opts.dropPath;
    let y = tf.add(x, dropPath(this.attn.apply(this.norm1.apply(x), batch, ctx), p, batch, ctx));
    y = tf.add(y, dropPath(this.mlp.apply(this.norm2.apply(y), ctx), p, batch, ctx));
    return tf.concat([x, this.denseLinear.apply(y)], 1);
  }

  /** The output for the class tokens alone, `(B, C + growthRate)`, in inference (see {@linkcode Block.applyClassTokens}). */
  applyClassTokens(x: tf.Tensor2D, batch: number, ctx: Ctx): tf.Tensor2D {
    if (ctx.training) throw new Error("DenseBlock.applyClassTokens: inference only");
    const xc = classRows(x, batch);
    const a = this.attn.applyClassTokens(this.norm1.apply(x) as tf.Tensor2D, batch, xc, ctx);
    const y = this.mlp.apply(this.norm2.apply(a), ctx, a);
    return tf.concat([xc, this.denseLinear.apply(y)], 1) as tf.Tensor2D;
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.attn.dispose();
    this.mlp.dispose();
    this.denseLinear.dispose();
  }
}

/** The dense variant's `Transition`: `GELU(linear x)`. */
export class Transition implements BackboneLayer {
  readonly linear: Linear;

  /** Registers `linear` under the current scope. */
  constructor(store: ParamStore, inFeatures: number, outFeatures: number) {
    this.linear = new Linear(store, "linear", inFeatures, outFeatures);
  }

  /** `(B * N, C_in)` to `(B * N, C_out)`. */
  apply(x: tf.Tensor): tf.Tensor {
    return gelu(this.linear.apply(x));
  }

  /** Frees cached tensors. */
  dispose(): void {
    this.linear.dispose();
  }
}
