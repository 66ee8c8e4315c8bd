/**
 * The fused T2T kernels on tfjs-backend-wasm: `T2tGelu`, `T2tLayerNorm`, `T2tSoftmax`, `T2tAttention`,
 * `T2tClassAttention`, `T2tLinear`, `T2tPerformer` and `T2tUnfold` (see `names.ts`), registered as tfjs
 * kernels for the `wasm` backend and run by our WebAssembly code in the backend's heap.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import {
  ATTENTION,
  CLASS_ATTENTION,
  GELU,
  kernelConfigs,
  LAYER_NORM,
  LINEAR,
  PERFORMER,
  SOFTMAX,
  UNFOLD,
} from "./names.ts";
import { linearKernel, packedWeight } from "./wasm_matmul.ts";
import {
  attendRows,
  ATTENTION as ATTENTION_TASK,
  attentionBufferFloats,
  attentionHead,
  directSteps,
  GELU as GELU_TASK,
  LAYER_NORM as LAYER_NORM_TASK,
  PERFORMER as PERFORMER_TASK,
  performerBufferFloats,
  performerSample,
  pooledSteps,
  type Product,
  UNFOLD as UNFOLD_TASK,
  unfoldRow,
} from "./wasm_tasks.ts";
import { addressOf, requireWasmContext, runGemm } from "./wasm_runtime.ts";

type Args = Parameters<tf.KernelFunc>[0];

function context(args: Args) {
  return requireWasmContext(args.backend, "the fused wasm kernels");
}

function geluKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const x = args.inputs.x as tf.TensorInfo;
  const out = c.backend.makeOutput([...x.shape], "float32");
  const n = tf.util.sizeFromShape(x.shape);
  if (c.pool && n >= 1 << 16) {
    const parts = 2 * c.pool.threads;
    c.pool.run(GELU_TASK, [addressOf(c, x), addressOf(c, out), n, parts], parts);
  } else {
    c.ops.gelu(addressOf(c, x), addressOf(c, out), n);
  }
  return out;
}

function layerNormKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const { x, gamma, beta } = args.inputs as Record<string, tf.TensorInfo>;
  const { eps } = args.attrs as unknown as { eps: number };
  const cols = x.shape[x.shape.length - 1];
  const out = c.backend.makeOutput([...x.shape], "float32");
  const rows = tf.util.sizeFromShape(x.shape) / cols;
  const args_ = [addressOf(c, x), addressOf(c, out), rows, cols, addressOf(c, gamma), addressOf(c, beta)];
  if (c.pool && rows >= 2 * c.pool.threads && rows * cols >= 1 << 18) {
    const parts = Math.min(rows, 2 * c.pool.threads);
    c.pool.run(LAYER_NORM_TASK, [...args_, parts], parts, [eps]);
  } else {
    c.ops.layerNorm(args_[0], args_[1], rows, cols, args_[4], args_[5], eps);
  }
  return out;
}

function softmaxKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const x = args.inputs.x as tf.TensorInfo;
  const { scale } = args.attrs as unknown as { scale: number };
  const cols = x.shape[x.shape.length - 1];
  const out = c.backend.makeOutput([...x.shape], "float32");
  c.ops.softmax(addressOf(c, x), addressOf(c, out), tf.util.sizeFromShape(x.shape) / cols, cols, scale);
  return out;
}

/**
 * Multi-head attention from the fused projection: `qkv (B * N, 3 C)` (per token q, k, v, each heads x d) to
 * `(B * N, C)` with the heads concatenated per token, `softmax(scale q k^T) v` per sample and head. The
 * heads are read in place (strided), nothing is transposed; (sample, head) pairs are split between the
 * pool's threads when there is a pool.
 */
function attentionKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const qkv = args.inputs.qkv as tf.TensorInfo;
  const { batch, heads, scale } = args.attrs as unknown as { batch: number; heads: number; scale: number };
  const [rows, width] = qkv.shape;
  const n = rows / batch, dim = width / 3, d = dim / heads;
  const out = c.backend.makeOutput([rows, dim], "float32");
  const threads = c.pool && batch * heads * n * n * d >= 1 << 18 ? c.pool.threads : 1;
  // query row blocks per (sample, head): at least two chunks per thread, blocks of at least 32 rows
  const blocks = threads > 1
    ? Math.max(1, Math.min(Math.ceil((2 * threads) / (batch * heads)), Math.floor(n / 32)))
    : 1;
  const stride = attentionBufferFloats(n, d) * 4;
  const wasm = c.backend.wasm;
  const buffers = wasm._malloc(stride * threads);
  try {
    const qa = addressOf(c, qkv), oa = addressOf(c, out);
    if (threads > 1) {
      const params = [qa, oa, n, heads, d, buffers, stride, c.scratch, blocks];
      c.pool!.run(ATTENTION_TASK, params, batch * heads * blocks, [scale]);
    } else {
      const k = { gemm: c.gemm, ops: c.ops, memory: c.memory };
      for (let b = 0; b < batch; b++) {
        for (let h = 0; h < heads; h++) {
          attentionHead(k, qa, oa, b, h, n, heads, d, scale, buffers, c.scratch);
        }
      }
    }
  } finally {
    wasm._free(buffers);
  }
  return out;
}

/**
 * The class tokens' attention (`T2tClassAttention`, see `names.ts`): per sample and head, one query row
 * against every token's keys and values (packed per head, about 20 us each), on the calling thread.
 */
function classAttentionKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const { q, k, v } = args.inputs as Record<string, tf.TensorInfo>;
  const { batch, heads, scale } = args.attrs as unknown as { batch: number; heads: number; scale: number };
  const [rows, dim] = k.shape;
  const n = rows / batch, d = dim / heads, ld = dim * 4;
  const out = c.backend.makeOutput([batch, dim], "float32");
  const wasm = c.backend.wasm;
  const buffers = wasm._malloc(attentionBufferFloats(n, d) * 4);
  try {
    const kern = { gemm: c.gemm, ops: c.ops, memory: c.memory };
    const qa = addressOf(c, q), ka = addressOf(c, k), va = addressOf(c, v), oa = addressOf(c, out);
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < heads; h++) {
        const at = (b * n * dim + h * d) * 4, row = (b * dim + h * d) * 4;
        const head = { keys: ka + at, ldk: ld, values: va + at, ldv: ld, tokens: n, d };
        attendRows(kern, head, qa + row, ld, oa + row, ld, 1, scale, buffers, c.scratch);
      }
    }
  } finally {
    wasm._free(buffers);
  }
  return out;
}

/**
 * The token performer's attention (`T2tPerformer`, see `names.ts`): one sample per chunk on the pool's
 * threads, each a few GEMMs and the fused `prm_exp` (`wasm_tasks.ts` `performerSample`).
 */
function performerKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const { kqv, w } = args.inputs as Record<string, tf.TensorInfo>;
  const { batch, eps } = args.attrs as unknown as { batch: number; eps: number };
  const [rows, width] = kqv.shape;
  const t = rows / batch, emb = width / 3, m = w.shape[0];
  const pw = packedWeight(c, w, emb, m);
  const out = c.backend.makeOutput([rows, emb], "float32");
  const threads = c.pool && batch > 1 ? c.pool.threads : 1;
  const stride = performerBufferFloats(t, emb, m) * 4;
  const wasm = c.backend.wasm;
  const buffers = wasm._malloc(stride * threads);
  try {
    const qa = addressOf(c, kqv), oa = addressOf(c, out);
    if (threads > 1) {
      c.pool!.run(PERFORMER_TASK, [qa, oa, t, emb, m, pw, buffers, stride, c.scratch], batch, [eps]);
    } else {
      // one sample (or no pool): each product, and each step of rows, split between the threads instead
      const k = { gemm: c.gemm, ops: c.ops, memory: c.memory };
      const product: Product = (pa, lda, pb, pc, ldc, rows, n, depth) =>
        runGemm(c, pa, lda, pb, pc, ldc, rows, n, depth);
      const pool = c.pool;
      const steps = pool && t * emb >= 1 << 15
        ? pooledSteps(
          (type, params, chunks, floats) => pool.run(type, params, chunks, floats),
          2 * pool.threads,
        )
        : directSteps(k);
      for (let b = 0; b < batch; b++) {
        performerSample(k, qa, oa, b, t, emb, m, pw, eps, buffers, c.scratch, product, steps);
      }
    }
  } finally {
    wasm._free(buffers);
  }
  return out;
}

/**
 * The soft split (`T2tUnfold`, see `names.ts`; an NHWC input, or NCHW with `channelsFirst`): output rows split
 * between the pool's threads.
 */
function unfoldKernel(args: Args): tf.TensorInfo {
  const c = context(args);
  const x = args.inputs.x as tf.TensorInfo;
  const { kernel, stride, padding, channelsFirst = false } = args.attrs as unknown as {
    kernel: number;
    stride: number;
    padding: number;
    channelsFirst?: boolean;
  };
  const [batch, h, w, ch] = channelsFirst ? [x.shape[0], x.shape[2], x.shape[3], x.shape[1]] : x.shape;
  const ho = Math.floor((h + 2 * padding - kernel) / stride) + 1;
  const wo = Math.floor((w + 2 * padding - kernel) / stride) + 1;
  const out = c.backend.makeOutput([batch, ho, wo, ch * kernel * kernel], "float32");
  const xa = addressOf(c, x), oa = addressOf(c, out);
  const dims = [h, w, ch, ho, wo, kernel, stride, padding, channelsFirst ? 1 : 0];
  const rows = batch * ho;
  if (c.pool && rows * wo * ch * kernel * kernel >= 1 << 16) {
    c.pool.run(UNFOLD_TASK, [xa, oa, ...dims], rows);
  } else {
    const k = { gemm: c.gemm, ops: c.ops, memory: c.memory };
    for (let i = 0; i < rows; i++) unfoldRow(k, xa, oa, i, dims);
  }
  return out;
}

/** Our fused kernels for the `wasm` backend, by kernel name (`zoo/backend/registry.ts` registers them). */
export const WASM_KERNELS: readonly tf.KernelConfig[] = kernelConfigs("wasm", [
  [GELU, geluKernel],
  [LAYER_NORM, layerNormKernel],
  [SOFTMAX, softmaxKernel],
  [ATTENTION, attentionKernel],
  [CLASS_ATTENTION, classAttentionKernel],
  [LINEAR, linearKernel],
  [PERFORMER, performerKernel],
  [UNFOLD, unfoldKernel],
]);
