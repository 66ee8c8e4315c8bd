/**
 * `nn.Linear` and `nn.LayerNorm` with PyTorch's parameter names and shapes.
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import type { Init, ParamStore } from "./params.ts";
import { gelu, layerNorm } from "./ops.ts";
import { checkOutputRange, fusedLinear, type OutputRange } from "../kernels/fused.ts";
import { biasGrad, weightGrad } from "../kernels/wasm_backward.ts";

/** `y = x W^T + b` with `weight (out, in)` and `bias (out)`, on inputs of any rank (last axis = in). */
export class Linear {
  /** `weight`, shape `(outFeatures, inFeatures)`. */
  readonly weight: tf.Variable;
  /** `bias`, shape `(outFeatures)`, when the layer has one. */
  readonly bias?: tf.Variable;

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
  }

  /**
   * Applies the layer to `x (..., in)`, giving `(..., out)`; with `gelu`, GELU of that; with a `residual`
   * (shaped like the result), `residual + ` that. With `residualColumn`, the residual is instead columns
   * `residualColumn ..` of a wider 2-D `residual (rows, >= residualColumn + out)` (a slice of a fused
   * projection, read in place where the fused kernel runs). With `outputs`, only the layer's outputs
   * `start .. start + count` are computed (as `apply(x)` sliced to those columns, without computing the
   * rest), and the result and the residual have `count` columns. Where a fused kernel runs (inference on
   * wasm), the product, bias, GELU and residual are one kernel. Like every layer method, it leaves its
   * intermediates to the caller's `tf.tidy`.
   */
  apply(
    x: tf.Tensor,
    opts: { gelu?: boolean; residual?: tf.Tensor; residualColumn?: number; outputs?: OutputRange } = {},
  ): tf.Tensor {
    const gelu_ = opts.gelu ?? false;
    const x2 = (x.rank === 2 ? x : tf.reshape(x, [x.size / this.inFeatures, this.inFeatures])) as tf.Tensor2D;
    const range = opts.outputs;
    if (range) checkOutputRange(range, this.outFeatures);
    const outF = range?.count ?? this.outFeatures;
    const column = opts.residualColumn;
    const r2 = opts.residual && column === undefined && opts.residual.rank !== 2
      ? tf.reshape(opts.residual, [x2.shape[0], outF])
      : opts.residual;
    let y: tf.Tensor | undefined = fusedLinear(x2, this.weight, this.bias, gelu_, r2, column ?? 0, range);
    if (!y) {
      const w = range ? tf.slice(this.weight, [range.start, 0], [outF, this.inFeatures]) : this.weight;
      const b = range && this.bias ? tf.slice(this.bias, [range.start], [outF]) : this.bias;
      y = linear2d(x2, w, b);
      if (gelu_) y = gelu(y);
      if (r2) {
        y = tf.add(column === undefined ? r2 : tf.slice(r2, [0, column], [x2.shape[0], outF]), y);
      }
    }
    return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), outF]);
  }

  /** Nothing to free: the variables belong to the model's store (kept for the layers' common shape). */
  dispose(): void {}
}

/**
 * `x W^T + b` for 2-D `x` and a PyTorch `(out, in)` weight, as one product with a transposed right operand
 * (each backend's kernel arranges the weight as it needs: zoo/kernels), with a custom gradient:
 * `dx = dy W`, `dW = dy^T x`, `db = sum(dy)`.
 */
export function linear2d(x: tf.Tensor2D, w: tf.Tensor, b: tf.Tensor | undefined): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xx, ww, bb] = args as tf.Tensor[];
    save([xx, ww]);
    const value = b
      ? tf.fused.matMul({ a: xx as tf.Tensor2D, b: ww as tf.Tensor2D, transposeB: true, bias: bb })
      : tf.matMul(xx as tf.Tensor2D, ww as tf.Tensor2D, false, true);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw] = saved as tf.Tensor2D[];
        const grads = [tf.matMul(dy as tf.Tensor2D, sw), weightGrad(dy as tf.Tensor2D, sx)];
        if (b) grads.push(biasGrad(dy));
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
