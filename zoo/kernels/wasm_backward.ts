/**
 * Gradients for the fused wasm kernels, so that training runs the same fused forward pass as inference:
 *
 * - `T2tGelu` -> `T2tGeluGrad` (`dx = dy (Phi(x) + x phi(x))`);
 * - `T2tLayerNorm` -> `T2tLayerNormGrad` (`dx`, `dgamma`, `dbeta` in one pass per row);
 * - `T2tAttention` -> `T2tAttentionGrad` (the whole multi-head attention backward pass from `qkv` and the
 *   output's gradient, on the relaxed-SIMD GEMM, split between the kernel pool's threads by (sample, head):
 *   `wasm_backward_tasks.ts`);
 * - `T2tUnfold` (the soft split; in {@linkcode WASM_BACKWARD_KERNELS} too) -> `T2tFold` (its adjoint, col2im: a scatter-add).
 *
 * The backward kernels run in the wasm backend's heap, in place. `fused.ts` uses a fused kernel while a
 * gradient tape records only on wasm and only when its gradient is registered, which
 * the training-only registry patch of `zoo/backend/registry.ts` does ({@linkcode WASM_GRADIENTS}):
 * inference alone never changes.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { ATTENTION, GELU, kernelConfigs, LAYER_NORM, UNFOLD } from "./names.ts";
import { addressOf, heapF32, requireWasmContext } from "./wasm_runtime.ts";
import { ATTENTION_GRAD as ATTENTION_GRAD_TASK } from "./wasm_tasks.ts";
import { attentionGradBufferFloats, attentionHeadGrad } from "./wasm_backward_tasks.ts";
import { backwardOps } from "./wasm_backward_ops.ts";
import { gemmSupported } from "./wasm_gemm.ts";
import { kernelsOn } from "./state.ts";

/** `T2tGeluGrad`: `{x, dy}` -> `dx`. */
export const GELU_GRAD = "T2tGeluGrad";
/** `T2tLayerNormGrad`: `{x, gamma, dy}`, `{eps}` -> `[dx, dgamma, dbeta]`. */
export const LAYER_NORM_GRAD = "T2tLayerNormGrad";
/** `T2tAttentionGrad`: `{qkv, dy}`, `{batch, heads, scale}` -> `dqkv` (shape of `qkv`). */
export const ATTENTION_GRAD = "T2tAttentionGrad";
/** `T2tColumnSum`: `{x}` `(..., cols)` -> `(cols)`, the sum over every other axis. */
export const COLUMN_SUM = "T2tColumnSum";
/** `T2tFold`: `{dy}` `(B, Ho, Wo, C*k*k)`, `{kernel, stride, padding, inputShape}` -> `(B, H, W, C)`. */
export const FOLD = "T2tFold";

type Args = Parameters<tf.KernelFunc>[0];

function context(args: Args) {
  return requireWasmContext(args.backend, "the fused wasm backward kernels");
}

function geluGradKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const { x, dy } = args.inputs as Record<string, tf.TensorInfo>;
  const out = c.backend.makeOutput([...x.shape], "float32");
  backwardOps(c.memory).geluGrad(
    addressOf(c, x),
    addressOf(c, dy),
    addressOf(c, out),
    tf.util.sizeFromShape(x.shape),
  );
  return out;
}

function columnSumKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const x = args.inputs.x as tf.TensorInfo;
  const cols = x.shape[x.shape.length - 1];
  const out = c.backend.makeOutput([cols], "float32");
  heapF32(c, addressOf(c, out), cols).fill(0);
  backwardOps(c.memory).colSum(
    addressOf(c, x),
    addressOf(c, out),
    tf.util.sizeFromShape(x.shape) / cols,
    cols,
  );
  return out;
}

/**
 * Whether training on the active backend runs the fused kernels and their wasm backward kernels: wasm with our
 * kernels on and WebAssembly relaxed SIMD (the memory planner of `src/train/memory.ts` counts on less memory).
 */
export function fusedTraining(): boolean {
  return tf.getBackend() === "wasm" && kernelsOn() && gemmSupported();
}

/**
 * The weight gradient `dy^T x` of a linear layer (`dy (rows, out)`, `x (rows, in)`): a transposed-left product
 * on wasm's GEMM (`wasm_matmul.ts` transposes the left operand into its own block), an explicit transpose
 * first where that GEMM does not run (tfjs-backend-wasm's transposed products are slow).
 */
export function weightGrad(dy: tf.Tensor2D, x: tf.Tensor2D): tf.Tensor2D {
  if (tf.getBackend() !== "wasm" || (kernelsOn() && gemmSupported())) return tf.matMul(dy, x, true, false);
  return tf.matMul(tf.transpose(dy), x);
}

/**
 * The sum of `dy (..., cols)` over all but its last axis (a bias gradient): one pass on wasm once the training
 * kernels are installed, `tf.sum` otherwise.
 */
export function biasGrad(dy: tf.Tensor): tf.Tensor {
  if (
    dy.dtype === "float32" && tf.getBackend() === "wasm" && kernelsOn() && tf.getKernel(COLUMN_SUM, "wasm")
  ) {
    return tf.engine().runKernel(COLUMN_SUM, { x: dy }) as tf.Tensor;
  }
  return tf.sum(dy, [...Array(dy.rank - 1).keys()]);
}

function layerNormGradKernel(args: Args): tf.TensorInfo[] {
  const c = context(args);
  const { x, gamma, dy } = args.inputs as Record<string, tf.TensorInfo>;
  const { eps } = args.attrs as unknown as { eps: number };
  const cols = x.shape[x.shape.length - 1];
  const size = tf.util.sizeFromShape(x.shape), rows = size / cols;
  const dx = c.backend.makeOutput([...x.shape], "float32");
  const dg = c.backend.makeOutput([cols], "float32");
  const db = c.backend.makeOutput([cols], "float32");
  heapF32(c, addressOf(c, dg), cols).fill(0);
  heapF32(c, addressOf(c, db), cols).fill(0);
  backwardOps(c.memory).layerNormGrad(
    addressOf(c, x),
    addressOf(c, dy),
    addressOf(c, gamma),
    addressOf(c, dx),
    addressOf(c, dg),
    addressOf(c, db),
    rows,
    cols,
    eps,
  );
  return [dx, dg, db];
}

function attentionGradKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const { qkv, dy } = args.inputs as Record<string, tf.TensorInfo>;
  const { batch, heads, scale } = args.attrs as unknown as { batch: number; heads: number; scale: number };
  const [rows, width] = qkv.shape;
  const n = rows / batch, dim = width / 3, d = dim / heads;
  const out = c.backend.makeOutput([rows, width], "float32");
  const threads = c.pool && batch * heads > 1 ? c.pool.threads : 1;
  const stride = attentionGradBufferFloats(n, d) * 4;
  const wasm = c.backend.wasm;
  const buffers = wasm._malloc(stride * threads);
  try {
    const qa = addressOf(c, qkv), ga = addressOf(c, dy), oa = addressOf(c, out);
    if (threads > 1) {
      c.pool!.run(ATTENTION_GRAD_TASK, [qa, ga, oa, n, heads, d, buffers, stride, c.scratch], batch * heads, [
        scale,
      ]);
    } else {
      const k = { gemm: c.gemm, ops: c.ops, memory: c.memory };
      for (let b = 0; b < batch; b++) {
        for (let h = 0; h < heads; h++) {
          attentionHeadGrad(k, qa, ga, oa, b, h, n, heads, d, scale, buffers, c.scratch);
        }
      }
    }
  } finally {
    wasm._free(buffers);
  }
  return out;
}

/**
 * The soft split of an NHWC map `x (B, H, W, C)` (given its NHWC `shape`; laid out NCHW when `channelsFirst`)
 * into `cols (B, Ho, Wo, C * k * k)` (`nn.Unfold` order per pixel: `c * k * k + i * k + j`), or, with `fold`,
 * its adjoint: `x += ` the sum of every copy in `cols` (col2im). Padding positions are zeros (unfold) or
 * dropped (fold); `cols` (unfold) or `x` (fold) must be zeroed.
 */
function unfoldOrFold(
  shape: readonly number[],
  k: number,
  s: number,
  p: number,
  x: Float32Array,
  cols: Float32Array,
  fold: boolean,
  channelsFirst = false,
): void {
  const [bN, h, w, ch] = shape;
  // element strides of a channel and of a pixel
  const [chStep, pixStep] = channelsFirst ? [h * w, 1] : [1, ch];
  const ho = Math.floor((h + 2 * p - k) / s) + 1, wo = Math.floor((w + 2 * p - k) / s) + 1;
  const kk = k * k, outC = ch * kk;
  for (let b = 0; b < bN; b++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        const ob = ((b * ho + oy) * wo + ox) * outC;
        for (let i = 0; i < k; i++) {
          const y = oy * s - p + i;
          if (y < 0 || y >= h) continue;
          for (let j = 0; j < k; j++) {
            const xx = ox * s - p + j;
            if (xx < 0 || xx >= w) continue;
            const ib = b * h * w * ch + (y * w + xx) * pixStep, oo = ob + i * k + j;
            if (fold) {
              for (let cc = 0; cc < ch; cc++) x[ib + cc * chStep] += cols[oo + cc * kk];
            } else {
              for (let cc = 0; cc < ch; cc++) cols[oo + cc * kk] = x[ib + cc * chStep];
            }
          }
        }
      }
    }
  }
}

function unfoldShape(shape: readonly number[], k: number, s: number, p: number): number[] {
  const [b, h, w, c] = shape;
  return [b, Math.floor((h + 2 * p - k) / s) + 1, Math.floor((w + 2 * p - k) / s) + 1, c * k * k];
}

function unfoldKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const x = args.inputs.x as tf.TensorInfo;
  const { kernel, stride, padding, channelsFirst = false } = args.attrs as unknown as {
    kernel: number;
    stride: number;
    padding: number;
    channelsFirst?: boolean;
  };
  const nhwc = channelsFirst ? [x.shape[0], x.shape[2], x.shape[3], x.shape[1]] : x.shape;
  const shape = unfoldShape(nhwc, kernel, stride, padding);
  const out = c.backend.makeOutput(shape, "float32");
  const o = heapF32(c, addressOf(c, out), tf.util.sizeFromShape(shape));
  const xs = heapF32(c, addressOf(c, x), tf.util.sizeFromShape(x.shape));
  o.fill(0);
  unfoldOrFold(nhwc, kernel, stride, padding, xs, o, false, channelsFirst);
  return out;
}

function foldKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const dy = args.inputs.dy as tf.TensorInfo;
  const { kernel, stride, padding, inputShape } = args.attrs as unknown as {
    kernel: number;
    stride: number;
    padding: number;
    inputShape: number[];
  };
  const out = c.backend.makeOutput([...inputShape], "float32");
  const o = heapF32(c, addressOf(c, out), tf.util.sizeFromShape(inputShape));
  const g = heapF32(c, addressOf(c, dy), tf.util.sizeFromShape(dy.shape));
  o.fill(0);
  unfoldOrFold(inputShape, kernel, stride, padding, o, g, true);
  return out;
}

type T = tf.Tensor;

/** The gradients of `T2tGelu`, `T2tLayerNorm`, `T2tAttention` and `T2tUnfold` through the backward kernels. */
export const WASM_GRADIENTS: readonly tf.GradConfig[] = [
  {
    kernelName: GELU,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({
      x: () => tf.engine().runKernel(GELU_GRAD, { x: saved[0], dy: dy as T }) as T,
    }),
  },
  {
    kernelName: LAYER_NORM,
    inputsToSave: ["x", "gamma"],
    gradFunc: (dy, saved, attrs) => {
      // one pass gives all three; each is handed out by the tape in its own tidy
      const [dx, dg, db] = tf.engine().runKernel(
        LAYER_NORM_GRAD,
        { x: saved[0], gamma: saved[1], dy: dy as T },
        attrs,
      ) as T[];
      return { x: () => dx, gamma: () => dg, beta: () => db };
    },
  },
  {
    kernelName: ATTENTION,
    inputsToSave: ["qkv"],
    gradFunc: (dy, saved, attrs) => ({
      qkv: () => tf.engine().runKernel(ATTENTION_GRAD, { qkv: saved[0], dy: dy as T }, attrs) as T,
    }),
  },
  {
    kernelName: UNFOLD,
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs) => ({
      x: () =>
        tf.engine().runKernel(FOLD, { dy: dy as T }, {
          ...attrs,
          inputShape: saved[0].shape,
        } as unknown as tf.NamedAttrMap) as T,
    }),
  },
];

/**
 * The wasm backward kernels and the wasm soft split (`T2tUnfold`, which training needs even where the
 * forward kernels are off), by kernel name; `zoo/backend/registry.ts` registers them for training on wasm,
 * with {@linkcode WASM_GRADIENTS}.
 */
export const WASM_BACKWARD_KERNELS: readonly tf.KernelConfig[] = kernelConfigs("wasm", [
  [GELU_GRAD, geluGradKernel],
  [LAYER_NORM_GRAD, layerNormGradKernel],
  [ATTENTION_GRAD, attentionGradKernel],
  [UNFOLD, unfoldKernel],
  [FOLD, foldKernel],
  [COLUMN_SUM, columnSumKernel],
]);
