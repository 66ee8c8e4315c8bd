/**
 * tfjs-backend-wasm's `_FusedMatMul` and `BatchMatMul` kernels on the relaxed-SIMD GEMM of `wasm_gemm.ts`,
 * working in place in the backend's heap.
 *
 * The right operand is packed into 8-column panels (with the bias) once per tensor and kept until tfjs frees
 * that tensor (the backend's `disposeData` is wrapped to drop the packed copy): model weights are packed on
 * first use, activations (attention keys and values) once per product. A transposed left operand (weight
 * gradients) is transposed into a temporary block first. Cases the GEMM does not cover (fused activations
 * other than none, non-float32 tensors) go to the original XNNPACK kernels, as does everything when the
 * runtime lacks relaxed SIMD.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { NR, packedSize } from "./wasm_gemm.ts";
import { kernelsOn } from "./state.ts";
import {
  addressOf,
  heapF32,
  requireWasmContext,
  runGemm,
  type WasmBackend,
  type WasmContext,
  wasmContext,
} from "./wasm_runtime.ts";
import { backwardOps } from "./wasm_backward_ops.ts";
import { attentionBufferFloats, pooledPack, TRANSPOSE, TRANSPOSE_COLUMNS } from "./wasm_tasks.ts";
import type { AttentionSize } from "./fused.ts";

let counters = { gemm: 0, fallback: 0, packs: 0 };

/** How many products ran on the GEMM, fell back to XNNPACK, and how many right operands were packed. */
export function wasmGemmCounters(): { gemm: number; fallback: number; packs: number } {
  return { ...counters };
}

/** Resets {@linkcode wasmGemmCounters}. */
export function resetWasmGemmCounters(): void {
  counters = { gemm: 0, fallback: 0, packs: 0 };
}

/**
 * Packs `k` x `n` floats at byte address `src` (row-major with rows `stride` floats apart, or the transposed
 * layout) with an optional bias into a new heap block; the caller frees it.
 */
export function packToHeap(
  c: WasmContext,
  src: number,
  k: number,
  n: number,
  transposed: boolean,
  stride: number,
  bias?: tf.TensorInfo,
): number {
  const floats = packedSize(k, n);
  const ptr = c.backend.wasm._malloc(floats * 4);
  counters.packs++;
  const biasAt = bias ? addressOf(c, bias) : 0;
  const pool = c.pool;
  if (pool && k * n >= 1 << 16) {
    // by panels on the pool (a weight of t2t_vit_14 at load, a slice of a deep product in training)
    pooledPack(
      (type, params, chunks) => pool.run(type, params, chunks),
      2 * pool.threads,
      src,
      k,
      n,
      transposed,
      stride * 4,
      biasAt,
      ptr,
    );
  } else c.gemm.pack(src, k, n, transposed ? 1 : 0, stride * 4, biasAt, ptr);
  return ptr;
}

/**
 * The packed form of batch `index` of `b` (`(batch, K, N)`, or `(batch, N, K)` when transposed) with `bias`;
 * cached for operands that are one matrix (weights), temporary otherwise.
 */
function packedOf(
  c: WasmContext,
  b: tf.TensorInfo,
  index: number,
  k: number,
  n: number,
  transposed: boolean,
  bias: tf.TensorInfo | undefined,
): { ptr: number; temporary: boolean } {
  const single = tf.util.sizeFromShape(b.shape) === k * n;
  const biasId = bias?.dataId ?? null;
  // a weight may be cached in both layouts (training multiplies by W^T forward and by W backward)
  const cached = single ? c.packed.get(b.dataId) ?? [] : [];
  if (single) {
    const p = cached.find((q) => q.transposed === transposed);
    if (p && p.k === k && p.n === n) {
      if (p.bias !== biasId) {
        // same weight, another bias: rewrite the bias rows
        const biasVals = bias ? heapF32(c, addressOf(c, bias), n) : undefined;
        const dst = heapF32(c, p.ptr, packedSize(k, n));
        for (let panel = 0; panel * NR < n; panel++) {
          const base = panel * (k + 1) * NR;
          for (let j = 0; j < NR; j++) {
            const col = panel * NR + j;
            dst[base + j] = biasVals && col < n ? biasVals[col] : 0;
          }
        }
        p.bias = biasId;
      }
      return { ptr: p.ptr, temporary: false };
    }
    if (p) {
      c.backend.wasm._free(p.ptr);
      cached.splice(cached.indexOf(p), 1);
    }
  }
  const src = addressOf(c, b) + index * k * n * 4;
  const ptr = packToHeap(c, src, k, n, transposed, transposed ? k : n, bias);
  if (single) {
    cached.push({ ptr, k, n, transposed, bias: biasId });
    c.packed.set(b.dataId, cached);
    return { ptr, temporary: false };
  }
  return { ptr, temporary: true };
}

/** Depths above which a product goes in slices of the depth ({@linkcode deepProduct}). */
const DEEP = 2048;
/** Depth of one slice. */
const SLICE = 1024;

/**
 * `C (m, n) = A B (+ bias)` for a deep product (`k` above {@linkcode DEEP}: the weight gradients of
 * training, whose depth is every token of the batch): in slices of about {@linkcode SLICE} of the depth,
 * each slice's product added to the previous slices' sum by the GEMM's epilogue (two blocks taking turns,
 * the last one `pc`), so that A's row tiles and B's panels stay in cache instead of streaming from memory
 * once per panel. `b` is not cached packed (it is an activation).
 */
function deepProduct(
  c: WasmContext,
  pa: number,
  b: tf.TensorInfo,
  k: number,
  n: number,
  transposed: boolean,
  bias: tf.TensorInfo | undefined,
  pc: number,
  m: number,
): void {
  const slices = Math.ceil(k / SLICE), kc = Math.ceil(k / slices);
  const wasm = c.backend.wasm;
  const tmp = wasm._malloc(m * n * 4);
  try {
    // the last slice lands in pc
    let dst = slices % 2 === 1 ? pc : tmp, prev = 0;
    for (let s = 0; s < slices; s++) {
      const k0 = s * kc, depth = Math.min(kc, k - k0);
      const src = addressOf(c, b) + (transposed ? k0 : k0 * n) * 4;
      // packed on the pool (packing is a tenth of a deep product's time on one thread)
      const ptr = packToHeap(c, src, depth, n, transposed, transposed ? k : n, s === 0 ? bias : undefined);
      try {
        runGemm(c, pa + k0 * 4, k * 4, ptr, dst, n * 4, m, n, depth, { gelu: false, res: prev, ldr: n * 4 });
      } finally {
        wasm._free(ptr);
      }
      prev = dst;
      dst = dst === pc ? tmp : pc;
    }
  } finally {
    wasm._free(tmp);
  }
}

/**
 * A new heap block holding the transposes of `batch` consecutive `rows x cols` matrices at `src` (the caller
 * frees it), split between the pool's threads by groups of columns when there is a pool and enough work.
 */
function transposedLeft(c: WasmContext, src: number, batch: number, rows: number, cols: number): number {
  const size = rows * cols, pool = c.pool;
  const ptr = c.backend.wasm._malloc(batch * size * 4);
  if (pool && batch * size >= 1 << 16) {
    const groups = Math.ceil(cols / TRANSPOSE_COLUMNS), units = batch * groups;
    const parts = Math.min(units, 2 * pool.threads);
    pool.run(TRANSPOSE, [src, ptr, rows, cols, groups, units, parts], parts);
  } else {
    const bw = backwardOps(c.memory);
    for (let i = 0; i < batch; i++) {
      bw.transpose(src + i * size * 4, ptr + i * size * 4, rows, cols, cols * 4, rows * 4);
    }
  }
  return ptr;
}

/**
 * `a (..., M, K) @ b (..., K, N)` (+ bias) on the GEMM, or `undefined` when the case is not covered.
 */
function gemmProduct(
  backend: WasmBackend,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
  bias: tf.TensorInfo | undefined,
): tf.TensorInfo | undefined {
  if (!kernelsOn() || a.dtype !== "float32" || b.dtype !== "float32") return undefined;
  if (a.shape.length < 2 || b.shape.length < 2) return undefined;
  if (bias && (bias.dtype !== "float32" || bias.shape.length !== 1)) return undefined;
  const c = wasmContext(backend);
  if (!c) return undefined;
  const ar = a.shape.length, br = b.shape.length;
  const m = a.shape[ar - (transposeA ? 1 : 2)], k = a.shape[ar - (transposeA ? 2 : 1)];
  const n = transposeB ? b.shape[br - 2] : b.shape[br - 1];
  const kb = transposeB ? b.shape[br - 1] : b.shape[br - 2];
  if (k !== kb || m === 0 || n === 0 || k === 0) return undefined;
  if (bias && bias.shape[0] !== n) return undefined;
  const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) return undefined;
  const batchDims = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batch = Math.max(batchA, batchB);
  const out = backend.makeOutput([...batchDims, m, n], "float32");
  counters.gemm++;
  // a transposed left operand (weight gradients): its matrices transposed into a temporary block first
  const aT = transposeA ? transposedLeft(c, addressOf(c, a), batchA, k, m) : 0;
  const aAddr = transposeA ? aT : addressOf(c, a);
  try {
    if (batchB === 1) {
      // one product with all of a's rows
      if (k > DEEP) {
        deepProduct(c, aAddr, b, k, n, transposeB, bias, addressOf(c, out), m * batchA);
        return out;
      }
      const { ptr, temporary } = packedOf(c, b, 0, k, n, transposeB, bias);
      runGemm(c, aAddr, k * 4, ptr, addressOf(c, out), n * 4, m * batchA, n, k);
      if (temporary) backend.wasm._free(ptr);
      return out;
    }
    for (let i = 0; i < batch; i++) {
      const { ptr, temporary } = packedOf(c, b, i, k, n, transposeB, bias);
      const pa = aAddr + (batchA === 1 ? 0 : i * m * k * 4);
      const pc = addressOf(c, out) + i * m * n * 4;
      runGemm(c, pa, k * 4, ptr, pc, n * 4, m, n, k);
      if (temporary) backend.wasm._free(ptr);
    }
    return out;
  } finally {
    if (aT) backend.wasm._free(aT);
  }
}

/** The packed form of `w^T` for a weight `w (n, k)`, cached with `w` (see `wasm_gemm.ts`). */
export function packedWeight(c: WasmContext, w: tf.TensorInfo, k: number, n: number): number {
  return packedOf(c, w, 0, k, n, true, undefined).ptr;
}

/** Contexts whose backend has had its own kernels warmed (see {@linkcode prepackLinears}). */
const tfjsWarmed = new WeakSet<WasmContext>();

/**
 * Packs every `(weight, bias)` pair of linear layers now (as `T2tLinear` would on first use), so that the
 * first forward pass does not pay for it. A no-op off wasm or without the GEMM.
 */
export function prepackLinears(
  pairs: { weight: tf.Tensor; bias?: tf.Tensor }[],
  activationBytes = 0,
  attention?: AttentionSize,
): void {
  const engine = tf.engine() as unknown as { backendName?: string | null };
  if (engine.backendName !== "wasm" || !kernelsOn()) return;
  const c = wasmContext(tf.backend() as unknown as WasmBackend);
  if (!c) return;
  for (const { weight, bias } of pairs) {
    if (weight.rank !== 2 || weight.dtype !== "float32") continue;
    const [n, k] = weight.shape;
    if (bias && (bias.rank !== 1 || bias.shape[0] !== n || bias.dtype !== "float32")) continue;
    packedOf(c, weight, 0, k, n, true, bias);
  }
  // grow the heap now to what a forward pass will use (growing a shared heap in the middle of the first
  // forward pass is slow), and write to it so that the system maps its pages now too (a first touch
  // costs a page fault); the block is freed at once and reused by the allocator
  if (attention) {
    activationBytes += attentionBufferFloats(attention.tokens, attention.headDim) * 4 *
      (c.pool?.threads ?? 1);
  }
  if (activationBytes > 0) {
    const ptr = c.backend.wasm._malloc(activationBytes);
    new Uint8Array(c.memory.buffer, ptr, activationBytes).fill(0);
    c.backend.wasm._free(ptr);
  }
  // tfjs's own kernels a forward pass uses around ours, a few times on some thousands of values: the engine
  // runs a WebAssembly function with its baseline compiler until it has done enough work to be optimised
  // (once per backend: later models find them optimised)
  if (tfjsWarmed.has(c)) return;
  tfjsWarmed.add(c);
  for (let i = 0; i < 4; i++) {
    tf.tidy(() => {
      const x = tf.transpose(tf.ones([1, 3, 64, 64]), [0, 2, 3, 1]);
      const y = tf.concat([tf.slice(x, [0, 0, 0, 0], [1, 1, 64, 3]), tf.reshape(x, [1, 64, 64, 3])], 1);
      tf.add(y, tf.broadcastTo(tf.ones([1, 1, 1, 3]), y.shape));
      tf.slice(tf.reshape(y, [65 * 64, 3]), [0, 1], [65 * 64, 2]);
    });
  }
}

/**
 * `T2tLinear` on wasm: `residual + act(x W^T + b)` for `x (rows, in)` and a PyTorch weight `w (out, in)`
 * (packed once, from its own layout, and kept with it), with the activation (`gelu`) and the residual
 * applied by each GEMM chunk to its own rows while they are in cache.
 */
export function linearKernel(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackend;
  const c = requireWasmContext(backend, "T2tLinear's kernels");
  const { x, w, bias, residual } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { gelu, residualColumn = 0, outStart = 0, outCount = 0 } = args.attrs as unknown as {
    gelu: boolean;
    residualColumn?: number;
    outStart?: number;
    outCount?: number;
  };
  const [rows, k] = x!.shape, all = w!.shape[0];
  const n = outCount > 0 ? outCount : all;
  if (outStart % NR !== 0 || outStart < 0 || outStart + n > all) {
    throw new Error(
      `T2tLinear: outputs ${outStart}..${outStart + n} of ${all} are not a range of whole panels`,
    );
  }
  const out = backend.makeOutput([rows, n], "float32");
  counters.gemm++;
  // panel p of the packed weight holds outputs 8p .. 8p + 7 (bias included): a range of outputs starting at
  // a panel's edge is the panels from there on
  const ptr = packedOf(c, w!, 0, k, all, true, bias).ptr + (outStart / NR) * (k + 1) * NR * 4;
  // the residual: (rows, n), or columns residualColumn.. of a wider (rows, width) matrix
  const epi = residual
    ? { gelu, res: addressOf(c, residual) + residualColumn * 4, ldr: residual.shape[1] * 4 }
    : { gelu, res: 0, ldr: n * 4 };
  runGemm(c, addressOf(c, x!), k * 4, ptr, addressOf(c, out), n * 4, rows, n, k, epi);
  return out;
}

/** The parts of tfjs-backend-wasm's backend object the XNNPACK path uses. */
type XnnBackend = WasmBackend & { typedArrayFromHeap(t: tf.TensorInfo): Float32Array };

/** Transposed copies of right operands for XNNPACK, by data id, per backend (freed with their tensor). */
const transposedCopies = new WeakMap<object, Map<unknown, tf.TensorInfo>>();

function transposedCache(backend: XnnBackend): Map<unknown, tf.TensorInfo> {
  let cache = transposedCopies.get(backend);
  if (!cache) {
    const c = new Map<unknown, tf.TensorInfo>();
    cache = c;
    transposedCopies.set(backend, c);
    const dispose = backend.disposeData.bind(backend);
    backend.disposeData = (dataId: unknown, force?: boolean) => {
      const done = dispose(dataId, force);
      const t = c.get(dataId);
      if (t && !backend.dataIdMap.has(dataId)) {
        c.delete(dataId);
        dispose(t.dataId, true);
      }
      return done;
    };
  }
  return cache;
}

/** `x` with its last two axes swapped, as a new tensor of the backend (the caller frees it). */
function swapLast2(backend: XnnBackend, x: tf.TensorInfo): tf.TensorInfo {
  const r = x.shape.length;
  const perm = [...Array(r - 2).keys(), r - 1, r - 2];
  const transpose = tf.getKernel(tf.Transpose, "wasm")!.kernelFunc;
  return transpose(
    { inputs: { x }, attrs: { perm } as unknown as tf.NamedAttrMap, backend } as never,
  ) as tf.TensorInfo;
}

/** A view of `t` with another shape (same data). */
function reshaped(t: tf.TensorInfo, shape: number[]): tf.TensorInfo {
  return { dataId: t.dataId, shape, dtype: t.dtype };
}

/**
 * `a (..., M, K) @ b (..., K, N)` (or `b (..., N, K)` when `transposeB`) + bias on tfjs-backend-wasm's own
 * kernel, arranged for its fast path: XNNPACK multiplies quickly only 2-D products of untransposed
 * operands (transposed or batched ones are 10-15x slower, and 4.22 adds a fused bias wrongly to those), so
 * a transposed weight is transposed once and kept until the weight is freed (the repacking belongs to this
 * kernel, not to the layers), a's batch folds into rows, and batched products run one 2-D product per batch.
 */
function xnnProduct(
  backend: XnnBackend,
  original: tf.KernelFunc,
  attrs: tf.NamedAttrMap,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeB: boolean,
  bias: tf.TensorInfo | undefined,
): tf.TensorInfo {
  const ar = a.shape.length, br = b.shape.length;
  const m = a.shape[ar - 2], k = a.shape[ar - 1];
  const n = transposeB ? b.shape[br - 2] : b.shape[br - 1];
  const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
  const batchDims = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const run = (x: tf.TensorInfo, y: tf.TensorInfo) =>
    original({
      inputs: bias ? { a: x, b: y, bias } : { a: x, b: y },
      attrs: { ...attrs, transposeA: false, transposeB: false },
      backend,
    } as never) as tf.TensorInfo;
  // tfjs's kernels take rank-3 operands (tf.matMul reshapes to them before running a kernel)
  if (batchB === 1) {
    let bt = reshaped(b, [1, k, n]);
    if (transposeB) {
      const cache = transposedCache(backend);
      let t = cache.get(b.dataId);
      if (!t) {
        t = swapLast2(backend, reshaped(b, [1, n, k]));
        cache.set(b.dataId, t);
      }
      bt = t;
    }
    const out = run(reshaped(a, [1, batchA * m, k]), bt);
    out.shape = [...batchDims, m, n];
    return out;
  }
  const bb = transposeB ? swapLast2(backend, b) : b;
  const out = backend.makeOutput([...batchDims, m, n], "float32");
  try {
    for (let i = 0; i < batchB; i++) {
      // fresh operands each time: XNNPACK caches its packed weights by the right operand's id
      const ai = backend.makeOutput([1, m, k], "float32"), bi = backend.makeOutput([1, k, n], "float32");
      const ia = batchA === 1 ? 0 : i;
      backend.typedArrayFromHeap(ai).set(
        backend.typedArrayFromHeap(a).subarray(ia * m * k, (ia + 1) * m * k),
      );
      backend.typedArrayFromHeap(bi).set(backend.typedArrayFromHeap(bb).subarray(i * k * n, (i + 1) * k * n));
      const oi = run(ai, bi);
      backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(oi), i * m * n);
      for (const t of [ai, bi, oi]) backend.disposeData(t.dataId);
    }
  } finally {
    if (bb !== b) backend.disposeData(bb.dataId);
  }
  return out;
}

/**
 * One product for both kernels: the GEMM (which transposes a transposed left operand into a temporary block
 * first), or XNNPACK through {@linkcode xnnProduct} (a transposed left operand transposed by tfjs first:
 * neither takes one as it is).
 */
function product(args: Parameters<tf.KernelFunc>[0], original: tf.KernelFunc): tf.TensorInfo {
  const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { transposeA, transposeB, activation } = args.attrs as unknown as {
    transposeA: boolean;
    transposeB: boolean;
    activation?: string;
  };
  const plain = (activation === undefined || activation === "linear") && !preluActivationWeights;
  if (
    !plain || a!.dtype !== "float32" || b!.dtype !== "float32" || a!.shape.length < 2 || b!.shape.length < 2
  ) {
    counters.fallback++;
    return original(args) as tf.TensorInfo;
  }
  const backend = args.backend as unknown as XnnBackend;
  // the GEMM transposes a transposed left operand itself (our transpose kernel, on the pool)
  const out = gemmProduct(backend, a!, b!, transposeA, transposeB, bias);
  if (out) return out;
  counters.fallback++;
  const left = transposeA ? swapLast2(backend, a!) : a!;
  try {
    return xnnProduct(backend, original, args.attrs ?? {}, left, b!, transposeB, bias);
  } finally {
    if (left !== a) backend.disposeData(left.dataId);
  }
}

/**
 * Replaces the wasm backend's `_FusedMatMul` and `BatchMatMul` kernels with {@linkcode product}: the
 * relaxed-SIMD GEMM where it runs, tfjs's XNNPACK kernels arranged for their fast path otherwise (and for
 * fused activations). Wraps the current kernels, so it runs once, from `zoo/backend/registry.ts`; a no-op
 * without tfjs-backend-wasm.
 *
 * @returns whether the kernels are installed
 */
export function installWasmGemm(): boolean {
  const fused = tf.getKernel(tf._FusedMatMul, "wasm");
  const batch = tf.getKernel(tf.BatchMatMul, "wasm");
  if (!fused || !batch) return false;
  for (const cfg of [fused, batch]) {
    const original = cfg.kernelFunc;
    tf.unregisterKernel(cfg.kernelName, "wasm");
    tf.registerKernel({
      ...cfg,
      kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => product(args, original)) as tf.KernelFunc,
    });
  }
  return true;
}
