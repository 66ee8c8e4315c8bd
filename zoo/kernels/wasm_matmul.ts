/**
 * tfjs-backend-wasm's `_FusedMatMul` and `BatchMatMul` kernels on the relaxed-SIMD GEMM of `wasm_gemm.ts`,
 * working in place in the backend's heap.
 *
 * The right operand is packed into 8-column panels (with the bias) once per tensor and kept until tfjs frees
 * that tensor (the backend's `disposeData` is wrapped to drop the packed copy): model weights are packed on
 * first use, activations (attention keys and values) once per product. Cases the GEMM does not cover (a
 * transposed left operand, fused activations other than none, non-float32 tensors) go to the original
 * XNNPACK kernels, as does everything when the runtime lacks relaxed SIMD.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { gemmSupported, NR, packB, packedSize } from "./wasm_gemm.ts";
import { kernelsOn } from "./state.ts";
import {
  addressOf,
  heapF32,
  runGemm,
  type WasmBackend,
  type WasmContext,
  wasmContext,
} from "./wasm_runtime.ts";

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
  // views after the allocation (it may grow the heap)
  const rows = transposed ? n : k;
  const view = heapF32(c, src, (rows - 1) * stride + (transposed ? k : n));
  const biasVals = bias ? heapF32(c, addressOf(c, bias), n) : undefined;
  packB(view, k, n, transposed, biasVals, heapF32(c, ptr, floats), stride);
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
  if (single) {
    const p = c.packed.get(b.dataId);
    if (p && p.k === k && p.n === n && p.transposed === transposed) {
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
      c.packed.delete(b.dataId);
    }
  }
  const src = addressOf(c, b) + index * k * n * 4;
  const ptr = packToHeap(c, src, k, n, transposed, transposed ? k : n, bias);
  if (single) {
    c.packed.set(b.dataId, { ptr, k, n, transposed, bias: biasId });
    return { ptr, temporary: false };
  }
  return { ptr, temporary: true };
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
  if (!kernelsOn() || transposeA || a.dtype !== "float32" || b.dtype !== "float32") return undefined;
  if (a.shape.length < 2 || b.shape.length < 2) return undefined;
  if (bias && (bias.dtype !== "float32" || bias.shape.length !== 1)) return undefined;
  const c = wasmContext(backend);
  if (!c) return undefined;
  const ar = a.shape.length, br = b.shape.length;
  const m = a.shape[ar - 2], k = a.shape[ar - 1];
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
  if (batchB === 1) {
    // one product with all of a's rows
    const { ptr, temporary } = packedOf(c, b, 0, k, n, transposeB, bias);
    runGemm(c, addressOf(c, a), k * 4, ptr, addressOf(c, out), n * 4, m * batchA, n, k);
    if (temporary) backend.wasm._free(ptr);
    return out;
  }
  for (let i = 0; i < batch; i++) {
    const { ptr, temporary } = packedOf(c, b, i, k, n, transposeB, bias);
    const pa = addressOf(c, a) + (batchA === 1 ? 0 : i * m * k * 4);
    const pc = addressOf(c, out) + i * m * n * 4;
    runGemm(c, pa, k * 4, ptr, pc, n * 4, m, n, k);
    if (temporary) backend.wasm._free(ptr);
  }
  return out;
}

/**
 * Replaces the wasm backend's `_FusedMatMul` and `BatchMatMul` kernels with the relaxed-SIMD GEMM (falling
 * back to the originals for what it does not cover). Wraps the current kernels, so it runs once, from
 * `zoo/backend/registry.ts`; a no-op without tfjs-backend-wasm.
 *
 * @returns whether the kernels are installed
 */
export function installWasmGemm(): boolean {
  if (!gemmSupported()) return false;
  const fused = tf.getKernel(tf._FusedMatMul, "wasm");
  const batch = tf.getKernel(tf.BatchMatMul, "wasm");
  if (!fused || !batch) return false;
  const fusedFn = fused.kernelFunc;
  const batchFn = batch.kernelFunc;
  tf.unregisterKernel(tf._FusedMatMul, "wasm");
  tf.registerKernel({
    ...fused,
    kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => {
      const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
      const { transposeA, transposeB, activation } = args.attrs as unknown as {
        transposeA: boolean;
        transposeB: boolean;
        activation?: string;
      };
      if ((activation === undefined || activation === "linear") && !preluActivationWeights) {
        const out = gemmProduct(args.backend as unknown as WasmBackend, a!, b!, transposeA, transposeB, bias);
        if (out) return out;
      }
      counters.fallback++;
      return fusedFn(args);
    }) as tf.KernelFunc,
  });
  tf.unregisterKernel(tf.BatchMatMul, "wasm");
  tf.registerKernel({
    ...batch,
    kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => {
      const { a, b } = args.inputs as Record<string, tf.TensorInfo>;
      const { transposeA, transposeB } = args.attrs as unknown as {
        transposeA: boolean;
        transposeB: boolean;
      };
      const out = gemmProduct(
        args.backend as unknown as WasmBackend,
        a,
        b,
        transposeA,
        transposeB,
        undefined,
      );
      if (out) return out;
      counters.fallback++;
      return batchFn(args);
    }) as tf.KernelFunc,
  });
  return true;
}
