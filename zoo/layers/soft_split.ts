/**
 * The T2T "soft split": PyTorch's `nn.Unfold(kernel, stride, padding)` followed by `transpose(1, 2)`, on NHWC
 * tensors. Each output token holds its patch channel-major (`c * k * k + i * k + j`), exactly as `nn.Unfold`.
 *
 * It runs as one depthwise convolution with a 0/1 kernel (multiplier `k * k`): every output is `1 * x`
 * plus zeros, so it is exact, and it is a single fast kernel on every backend. Its gradient (the "fold") is
 * the transposed convolution with the equivalent dense 0/1 kernel, which tfjs-backend-wasm also has (it lacks
 * the depthwise backward kernels).
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import { fusedUnfold, fusedUnfoldChannelsFirst } from "../kernels/fused.ts";

/** The `(k, k, C, k*k)` depthwise kernel picking offset `(i, j)` into multiplier channel `i * k + j`. */
function depthwiseKernel(k: number, c: number): tf.Tensor4D {
  const kk = k * k;
  const f = new Float32Array(kk * c * kk);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      for (let ch = 0; ch < c; ch++) f[((i * k + j) * c + ch) * kk + i * k + j] = 1;
    }
  }
  return tf.tensor4d(f, [k, k, c, kk]);
}

/** The `(k, k, C, C*k*k)` dense kernel with the same effect as {@link depthwiseKernel}. */
function denseKernel(k: number, c: number): tf.Tensor4D {
  const kk = k * k;
  const out = c * kk;
  const f = new Float32Array(kk * c * out);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      for (let ch = 0; ch < c; ch++) f[((i * k + j) * c + ch) * out + ch * kk + i * k + j] = 1;
    }
  }
  return tf.tensor4d(f, [k, k, c, out]);
}

/** Output size of an unfold along one axis. */
export function unfoldSize(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}

/** `nn.Unfold(kernel, stride, padding)` on NHWC inputs with `channels` channels. */
export class SoftSplit {
  #dw?: tf.Tensor4D;
  #dense?: tf.Tensor4D;

  /** A soft split of `channels`-channel maps. */
  constructor(
    readonly kernel: number,
    readonly stride: number,
    readonly padding: number,
    readonly channels: number,
  ) {}

  /**
   * The same split of an NCHW `x (B, C, H, W)`, read as it is, where a kernel does that (wasm, no gradient
   * being recorded), else `undefined` (transpose to NHWC and {@linkcode SoftSplit.apply}).
   */
  applyChannelsFirst(x: tf.Tensor4D): tf.Tensor4D | undefined {
    if (x.shape[1] !== this.channels) {
      throw new Error(`soft split: expected ${this.channels} channels, got ${x.shape[1]}`);
    }
    return fusedUnfoldChannelsFirst(x, this.kernel, this.stride, this.padding);
  }

  /**
   * `x (B, H, W, C)` to `(B, Ho, Wo, C * k * k)`: output pixel `(o, p)` holds the patch at
   * `(o * stride - padding, p * stride - padding)`, channel-major.
   */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    if (x.shape[3] !== this.channels) {
      throw new Error(`soft split: expected ${this.channels} channels, got ${x.shape[3]}`);
    }
    const { kernel: k, stride: s, padding: p, channels: c } = this;
    // a gather kernel where one runs here (inference); the 0/1 depthwise convolution otherwise
    const fused = fusedUnfold(x, k, s, p);
    if (fused) return fused;
    this.#dw ??= tf.keep(depthwiseKernel(this.kernel, this.channels));
    const dw = this.#dw;
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const xx = args[0] as tf.Tensor4D;
      return {
        value: tf.depthwiseConv2d(xx, dw, s, p),
        gradFunc: (dy: tf.Tensor) => {
          this.#dense ??= tf.keep(denseKernel(k, c));
          return tf.conv2dTranspose(dy as tf.Tensor4D, this.#dense, xx.shape, s, p);
        },
      };
    });
    return f(x) as tf.Tensor4D;
  }

  /** Frees the kernels. */
  dispose(): void {
    this.#dw?.dispose();
    this.#dense?.dispose();
    this.#dw = this.#dense = undefined;
  }
}
