/**
 * The fused operations the layers call: each returns the fused kernel's result when one runs here (fused
 * kernels on, a backend that registers it, no gradient being recorded), or `undefined`, in which case the
 * caller computes the same thing with generic tfjs ops.
 *
 * The fused kernels have no gradients: while a gradient tape records (`tf.grad`, `tf.variableGrads`, the
 * trainer), every call here returns `undefined`, so training always runs the generic, differentiable path.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import {
  ATTENTION,
  CLASS_ATTENTION,
  GELU,
  LAYER_NORM,
  LINEAR,
  LINEAR_OUT_ALIGN,
  PERFORMER,
  SOFTMAX,
  UNFOLD,
} from "./names.ts";
import { gemmSupported } from "./wasm_gemm.ts";
import { type WasmBackend, wasmContext } from "./wasm_runtime.ts";
import { kernelsOn, setKernelsOn } from "./state.ts";
import { installKernels } from "../backend/registry.ts";
import { prepackLinears } from "./wasm_matmul.ts";

/** Options of {@linkcode configureKernels}. */
export interface KernelOptions {
  /** Use the fused kernels and the wasm GEMM where they exist (default true). */
  enabled?: boolean;
}

/**
 * Turns our kernels on or off: the fused kernels (wasm, webgpu) and the relaxed-SIMD GEMM that replaces
 * tfjs-backend-wasm's matrix products. Off: tfjs's own kernels everywhere (for comparisons).
 */
export function configureKernels(opts: KernelOptions): void {
  if (opts.enabled !== undefined) setKernelsOn(opts.enabled);
  prepareKernels();
}

/** Whether our kernels are on. */
export function kernelsEnabled(): boolean {
  return kernelsOn();
}

/** The active backend's name, without starting one (`tf.getBackend()` would start the best available). */
function activeBackend(): string | undefined {
  return (tf.engine() as unknown as { backendName?: string | null }).backendName ?? undefined;
}

/**
 * Installs our kernels for the active backend (once; `zoo/backend/registry.ts`). `setBackend()` and the
 * model factories do it when a backend starts; call it after starting one with `tf.setBackend` directly.
 */
export function prepareKernels(): void {
  const be = activeBackend();
  if (be) installKernels(be);
}

/** A one-line description of what runs: for profiles and benchmarks. */
export function kernelStatus(): string {
  if (!kernelsOn()) return "off (tfjs kernels)";
  const be = activeBackend();
  if (be === "wasm") {
    return gemmSupported() ? "on (wasm: relaxed-SIMD GEMM, fused ops)" : "on (no relaxed SIMD)";
  }
  if (be === "webgpu") return "on (webgpu: fused ops)";
  return `on (none for ${be ?? "no backend yet"})`;
}

/** Whether a gradient tape is recording (`tf.grad`, `tf.variableGrads`, the trainer). */
export function gradientsRecording(): boolean {
  const state = (tf.engine() as unknown as { state: { gradientDepth: number } }).state;
  return state.gradientDepth > 0;
}

function usable(kernel: string, ...xs: tf.Tensor[]): boolean {
  if (!kernelsOn()) return false;
  const be = activeBackend();
  // under a gradient tape: only wasm kernels whose gradient is registered (training: wasm_backward.ts)
  if (gradientsRecording() && !(be === "wasm" && tf.getGradient(kernel))) return false;
  if (be !== "wasm" && be !== "webgpu") return false;
  if (be === "wasm" && !gemmSupported()) return false;
  // a heap we cannot reach (a wasm backend started around our factory wrapper): the generic ops
  if (be === "wasm" && !wasmContext(tf.backend() as unknown as WasmBackend)) return false;
  if (!tf.getKernel(kernel, be!)) return false;
  return xs.every((x) => x.dtype === "float32");
}

/** Exact-form GELU of `x` by the fused kernel, or `undefined` (use the generic ops). */
export function fusedGelu(x: tf.Tensor): tf.Tensor | undefined {
  if (!usable(GELU, x)) return undefined;
  return tf.engine().runKernel(GELU, { x }) as tf.Tensor;
}

/** LayerNorm of `x` over its last axis by the fused kernel, or `undefined`. */
export function fusedLayerNorm(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
): tf.Tensor | undefined {
  if (!usable(LAYER_NORM, x, gamma, beta)) return undefined;
  return tf.engine().runKernel(LAYER_NORM, { x, gamma, beta }, { eps }) as tf.Tensor;
}

/** `softmax(scale * x)` over the last axis by the fused kernel, or `undefined`. */
export function fusedSoftmax(x: tf.Tensor, scale: number): tf.Tensor | undefined {
  if (!usable(SOFTMAX, x)) return undefined;
  return tf.engine().runKernel(SOFTMAX, { x }, { scale }) as tf.Tensor;
}

/**
 * Multi-head attention from a fused projection `qkv (B * N, 3 C)` (per token: q, k, v, each `heads` x `d`,
 * PyTorch's `reshape(B, N, 3, H, d)` order) to `(B * N, C)` with the heads concatenated per token, by the
 * fused kernel, or `undefined`.
 */
export function fusedAttention(
  qkv: tf.Tensor2D,
  batch: number,
  heads: number,
  scale: number,
): tf.Tensor2D | undefined {
  if (!usable(ATTENTION, qkv)) return undefined;
  return tf.engine().runKernel(ATTENTION, { qkv }, { batch, heads, scale }) as tf.Tensor2D;
}

/**
 * The attention of the class tokens alone: `q (B, C)`, each sample's class-token query, against the keys and
 * values `k`, `v` `(B * N, C)` of its tokens (heads of `C / heads` channels), to `(B, C)` with the heads
 * concatenated, `softmax(scale q k^T) v` per sample and head, by the fused kernel, or `undefined`.
 */
export function fusedClassAttention(
  q: tf.Tensor2D,
  k: tf.Tensor2D,
  v: tf.Tensor2D,
  batch: number,
  heads: number,
  scale: number,
): tf.Tensor2D | undefined {
  if (!usable(CLASS_ATTENTION, q, k, v)) return undefined;
  return tf.engine().runKernel(CLASS_ATTENTION, { q, k, v }, { batch, heads, scale }) as tf.Tensor2D;
}

/**
 * The soft split (`nn.Unfold(kernel, stride, padding)` + `transpose(1, 2)`) of an NHWC map `x (B, H, W, C)`
 * to `(B, Ho, Wo, C * kernel^2)` by the fused kernel, or `undefined`.
 */
export function fusedUnfold(
  x: tf.Tensor4D,
  kernel: number,
  stride: number,
  padding: number,
): tf.Tensor4D | undefined {
  if (!usable(UNFOLD, x)) return undefined;
  return tf.engine().runKernel(UNFOLD, { x }, { kernel, stride, padding }) as tf.Tensor4D;
}

/**
 * The same soft split of an NCHW image `x (B, C, H, W)`, read as it is (no transpose to NHWC first), by the
 * wasm kernel, or `undefined`: elsewhere, and while a gradient is recorded (its gradient is NHWC's).
 */
export function fusedUnfoldChannelsFirst(
  x: tf.Tensor4D,
  kernel: number,
  stride: number,
  padding: number,
): tf.Tensor4D | undefined {
  if (activeBackend() !== "wasm" || gradientsRecording() || !usable(UNFOLD, x)) return undefined;
  return tf.engine().runKernel(UNFOLD, { x }, {
    kernel,
    stride,
    padding,
    channelsFirst: true,
  }) as tf.Tensor4D;
}

/**
 * The token performer's attention (`Token_performer.single_attn` up to, not including, the projection) from
 * its fused projection `kqv (B * T, 3 emb)` (per token: k, q, v) and random features `w (m, emb)`:
 * `(B * T, emb)`, `y = qp (v^T kp)^T / (qp . sum_t kp + eps)` with `prm_exp` features `kp`, `qp`, by the
 * fused kernel, or `undefined`.
 */
export function fusedPerformer(
  kqv: tf.Tensor2D,
  w: tf.Tensor2D,
  batch: number,
  eps: number,
): tf.Tensor2D | undefined {
  if (!usable(PERFORMER, kqv, w)) return undefined;
  return tf.engine().runKernel(PERFORMER, { kqv, w }, { batch, eps }) as tf.Tensor2D;
}

/**
 * `residual + act(x w^T + bias)` for `x (rows, in)` and a PyTorch weight `w (out, in)`, act GELU when
 * `gelu`, by the fused kernel (the GEMM with its epilogue), or `undefined`. The residual is
 * `(rows, out)`, or with `residualColumn` its columns `residualColumn .. residualColumn + out` (read in place).
 * With `outputs`, only outputs `start .. start + count` (rows of `w`) are computed, from the weight as it is;
 * `undefined` also when `start` is not a multiple of {@linkcode LINEAR_OUT_ALIGN}.
 */
export function fusedLinear(
  x: tf.Tensor2D,
  w: tf.Tensor,
  bias: tf.Tensor | undefined,
  gelu: boolean,
  residual: tf.Tensor | undefined,
  residualColumn = 0,
  outputs?: OutputRange,
): tf.Tensor2D | undefined {
  const inputs = [x, w, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  if (!usable(LINEAR, ...inputs)) return undefined;
  const [rows, inF] = x.shape;
  if (w.rank !== 2 || w.shape[1] !== inF) {
    throw new Error(`T2tLinear: x [${x.shape}] does not match the weight [${w.shape}] (out, in)`);
  }
  const outStart = outputs?.start ?? 0;
  const out = outputs?.count ?? w.shape[0];
  if (outputs) {
    checkOutputRange(outputs, w.shape[0]);
    if (outStart % LINEAR_OUT_ALIGN !== 0) return undefined;
  }
  if (
    residual &&
    (residual.rank !== 2 || residual.shape[0] !== rows || (residual.shape[1] ?? 0) < residualColumn + out ||
      !Number.isInteger(residualColumn) || residualColumn < 0)
  ) {
    throw new Error(
      `T2tLinear: residual [${residual.shape}] from column ${residualColumn} does not cover [${rows},${out}]`,
    );
  }
  const named: Record<string, tf.Tensor> = { x, w };
  if (bias) named.bias = bias;
  if (residual) named.residual = residual;
  const attrs: tf.NamedAttrMap = { gelu, residualColumn };
  if (outputs) Object.assign(attrs, { outStart, outCount: out });
  return tf.engine().runKernel(LINEAR, named, attrs) as tf.Tensor2D;
}

/** A range of a linear layer's outputs (rows of its `(out, in)` weight). */
export interface OutputRange {
  /** First output. */
  start: number;
  /** Number of outputs. */
  count: number;
}

/** Throws unless `range` is a non-empty range of whole outputs within `0 .. outputs`. */
export function checkOutputRange(range: OutputRange, outputs: number): void {
  const { start, count } = range;
  if (
    !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 1 || start + count > outputs
  ) {
    throw new RangeError(`linear: outputs ${start}..${start + count} are not within the layer's ${outputs}`);
  }
}

/** The attention a forward pass runs on the most tokens (see {@linkcode prepareWeights}). */
export interface AttentionSize {
  /** Tokens of each sample. */
  tokens: number;
  /** Channels of a head. */
  headDim: number;
}

/**
 * Prepares a model's weights for the active backend's kernels at load time rather than on the first
 * forward pass: on wasm, every linear layer's weight (`<name>.weight` of rank 2, with `<name>.bias`) and the
 * performers' random features (`<name>.w`) are packed for the GEMM, and the heap grows by
 * `activationBytes` (what a forward pass is expected to use), plus the attention kernel's buffers for
 * `attention` on every thread when given, now rather than during the first pass. A no-op elsewhere.
 */
export function prepareWeights(
  state: Map<string, tf.Tensor>,
  activationBytes = 0,
  attention?: AttentionSize,
): void {
  const pairs: { weight: tf.Tensor; bias?: tf.Tensor }[] = [];
  for (const [key, weight] of state) {
    if (weight.rank !== 2) continue;
    if (key.endsWith(".weight")) pairs.push({ weight, bias: state.get(key.slice(0, -7) + ".bias") });
    else if (key.endsWith(".w")) pairs.push({ weight });
  }
  prepackLinears(pairs, activationBytes, attention);
}
