/**
 * Names of the fused kernels, registered with tfjs for the backends that have them (`wasm`, `webgpu`) and
 * run through `tf.engine().runKernel`.
 *
 * @module
 */

import type * as tf from "@tensorflow/tfjs-core";

/** `T2tGelu`: `{x}` -> exact-form GELU of `x`. */
export const GELU = "T2tGelu";
/** `T2tLayerNorm`: `{x, gamma, beta}`, `{eps}` -> LayerNorm over the last axis. */
export const LAYER_NORM = "T2tLayerNorm";
/** `T2tSoftmax`: `{x}`, `{scale}` -> `softmax(scale * x)` over the last axis. */
export const SOFTMAX = "T2tSoftmax";
/** `T2tAttention`: `{qkv}` `(B*N, 3C)`, `{batch, heads, scale}` -> `(B*N, C)`, heads concatenated. */
export const ATTENTION = "T2tAttention";
/**
 * `T2tClassAttention`: `{q, k, v}` `(B, C)`, `(B*N, C)`, `(B*N, C)`, `{batch, heads, scale}` -> `(B, C)`:
 * each sample's class-token query against the keys and values of its `N` tokens, heads concatenated.
 */
export const CLASS_ATTENTION = "T2tClassAttention";
/**
 * `T2tUnfold`: `{x}` NHWC (NCHW with `channelsFirst`, wasm only, no gradient), `{kernel, stride, padding,
 * channelsFirst?}` -> `(B, Ho, Wo, C*k*k)`, `nn.Unfold` order per pixel.
 */
export const UNFOLD = "T2tUnfold";
/** `T2tPerformer`: `{kqv}` `(B*T, 3 emb)`, `{w}` `(m, emb)`, `{batch, eps}` -> the performer's `(B*T, emb)`. */
export const PERFORMER = "T2tPerformer";
/**
 * `T2tLinear`: `{x, w, bias?, residual?}` `(rows, in)`, `(out, in)`, `(out)`, `(rows, out)`,
 * `{gelu, residualColumn?, outStart?, outCount?}` -> `residual + act(x w^T + bias)` `(rows, out)`, act GELU
 * or the identity; with `residualColumn`, the residual is columns `residualColumn ..` of a wider
 * `(rows, width)` input; with `outCount`, only outputs `outStart .. outStart + outCount` (rows of `w` and
 * `bias`; `outStart` a multiple of {@linkcode LINEAR_OUT_ALIGN}) are computed, to `(rows, outCount)`.
 */
export const LINEAR = "T2tLinear";
/** What `T2tLinear`'s `outStart` must be a multiple of (the GEMM's panels of packed weight rows). */
export const LINEAR_OUT_ALIGN = 8;

/** A backend's kernel configs from `[kernel name, kernel function]` pairs (the kernel modules' lists). */
export function kernelConfigs(
  backendName: string,
  kernels: readonly (readonly [string, (args: never) => unknown])[],
): tf.KernelConfig[] {
  return kernels.map(([kernelName, fn]) => ({
    kernelName,
    backendName,
    kernelFunc: fn as unknown as tf.KernelFunc,
  }));
}
