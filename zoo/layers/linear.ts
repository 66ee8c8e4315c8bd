/**
 * `nn.Linear` and `nn.LayerNorm` with PyTorch's parameter names and shapes.
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import type { Init, ParamStore } from "./params.ts";
import { layerNorm } from "./ops.ts";

/**
 * The transpose of a variable, kept and refreshed whenever the variable is assigned new values (its data id
 * changes). tfjs-backend-wasm multiplies fast only by untransposed right operands, and caches XNNPACK's
 * packed weights per tensor, so a stable transposed copy is what makes inference fast there.
 */
export class TransposedCache {
  #t: tf.Tensor2D | undefined;
  #for: unknown;

  /** Caches the transpose of `source` (a 2-D variable, or a reshapeable one when `shape2d` is given). */
  constructor(readonly source: tf.Variable, readonly shape2d?: [number, number]) {}

  /** The transposed values (owned by the cache: don't dispose). */
  get(): tf.Tensor2D {
    if (this.#t === undefined || this.#for !== this.source.dataId || this.#t.isDisposed) {
      this.#t?.dispose();
      const src = this.source;
      const shape = this.shape2d;
      this.#t = tf.keep(tf.tidy(() => tf.transpose(shape ? tf.reshape(src, shape) : src) as tf.Tensor2D));
      this.#for = this.source.dataId;
    }
    return this.#t;
  }

  /** Frees the cached copy. */
  dispose(): void {
    this.#t?.dispose();
    this.#t = undefined;
  }
}

/** `y = x W^T + b` with `weight (out, in)` and `bias (out)`, on inputs of any rank (last axis = in). */
export class Linear {
  /** `weight`, shape `(outFeatures, inFeatures)`. */
  readonly weight: tf.Variable;
  /** `bias`, shape `(outFeatures)`, when the layer has one. */
  readonly bias?: tf.Variable;
  readonly #wT: TransposedCache;

  /** Registers `<name>.weight` (trunc_normal std 0.02, as the official `_init_weights`) and `<name>.bias`. */
  constructor(
    store: ParamStore,
    name: string,
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: { bias?: boolean; weightInit?: Init; trainable?: boolean } = {},
  ) {
    const trainable = opts.trainable ?? true;
    const [w, b] = store.scope(name, () => [
      store.add(
        "weight",
        [outFeatures, inFeatures],
        opts.weightInit ?? { kind: "truncNormal", std: 0.02 },
        trainable,
      ),
      (opts.bias ?? true) ? store.add("bias", [outFeatures], { kind: "zeros" }, trainable) : undefined,
    ]);
    this.weight = w!;
    this.bias = b;
    this.#wT = new TransposedCache(this.weight);
  }

  /**
   * Applies the layer to `x (..., in)`, giving `(..., out)`. Like every layer method, it leaves its
   * intermediates to the caller's `tf.tidy`.
   */
  apply(x: tf.Tensor): tf.Tensor {
    if (x.rank === 2) return linear2d(x as tf.Tensor2D, this.weight, this.bias, this.#wT.get());
    const x2 = tf.reshape(x, [x.size / this.inFeatures, this.inFeatures]) as tf.Tensor2D;
    const y = linear2d(x2, this.weight, this.bias, this.#wT.get());
    return tf.reshape(y, [...x.shape.slice(0, -1), this.outFeatures]);
  }

  /** Frees the cached transposed weight (the variables belong to the model's store). */
  dispose(): void {
    this.#wT.dispose();
  }
}

/**
 * `x W^T + b` for 2-D `x`, computed as `x @ wT` (+ bias) with the cached transpose `wT`, and a custom
 * gradient that needs no transposed products either: `dx = dy W`, `dW = dy^T x`, `db = sum(dy)`.
 */
export function linear2d(
  x: tf.Tensor2D,
  w: tf.Tensor,
  b: tf.Tensor | undefined,
  wT: tf.Tensor2D,
): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xx, ww, bb] = args as tf.Tensor[];
    save([xx, ww]);
    const value = b
      ? tf.fused.matMul({ a: xx as tf.Tensor2D, b: wT, bias: bb })
      : tf.matMul(xx as tf.Tensor2D, wT);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw] = saved as tf.Tensor2D[];
        const grads = [tf.matMul(dy as tf.Tensor2D, sw), tf.matMul(tf.transpose(dy as tf.Tensor2D), sx)];
        if (b) grads.push(tf.sum(dy, 0));
        return grads;
      },
    };
  });
  return (b ? f(x, w, b) : f(x, w)) as tf.Tensor2D;
}

/** `nn.LayerNorm(dim)`: eps 1e-5, `weight` ones and `bias` zeros at initialisation. */
export class LayerNorm {
  /** Scale, shape `(dim)`. */
  readonly weight: tf.Variable;
  /** Shift, shape `(dim)`. */
  readonly bias: tf.Variable;

  /** Registers `<name>.weight` and `<name>.bias`. */
  constructor(store: ParamStore, name: string, readonly dim: number, readonly eps = 1e-5) {
    const [w, b] = store.scope(name, () => [
      store.add("weight", [dim], { kind: "ones" }),
      store.add("bias", [dim], { kind: "zeros" }),
    ]);
    this.weight = w;
    this.bias = b;
  }

  /** Normalises the last axis of `x`. */
  apply(x: tf.Tensor): tf.Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}
