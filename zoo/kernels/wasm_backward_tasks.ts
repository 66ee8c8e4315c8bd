/**
 * The backward pass of the fused multi-head attention (`T2tAttention`, `wasm_kernels.ts`) for one (sample,
 * head) pair, on the relaxed-SIMD GEMM and the fused softmax, in place in the wasm heap: the kernel pool's
 * threads run these chunks (`wasm_tasks.ts`), the calling thread runs them itself when there is no pool.
 *
 * With `P = softmax(scale Q K^T)` and `O = P V` (per sample and head), and `dO` the gradient of `O`:
 * `dV = P^T dO`, `dP = dO V^T`, `dS = scale P * (dP - rowsum(P * dP))`, `dQ = dS K`, `dK = dS^T Q`.
 * `P` is recomputed (nothing of size `N^2` is kept between the forward and backward passes), query rows go in
 * chunks so that a thread's score blocks stay below {@linkcode MAX_GRAD_SCORES} floats, and the left operands
 * that the GEMM would need transposed (`P^T`, `dS^T`) are transposed into a buffer first.
 *
 * @module
 */

import { type GemmExports, packedSize, panelsPerBlock } from "./wasm_gemm.ts";
import type { OpsExports } from "./wasm_ops.ts";
import { backwardOps } from "./wasm_backward_ops.ts";

/** Most score-block floats (query rows x keys) one thread holds at a time in the attention backward pass. */
export const MAX_GRAD_SCORES = 1 << 20;

/** One thread's kernels on the heap (the shape of `wasm_tasks.ts`'s `Kernels`). */
interface Kernels {
  gemm: GemmExports;
  ops: OpsExports;
  memory: WebAssembly.Memory;
}

/** Query rows per chunk of the attention backward pass for `tokens` tokens. */
function gradChunk(tokens: number): number {
  return Math.max(1, Math.min(tokens, Math.floor(MAX_GRAD_SCORES / tokens)));
}

/** Floats of one thread's buffers for the attention backward pass of `tokens` tokens of head size `d`. */
export function attentionGradBufferFloats(tokens: number, d: number): number {
  const n = tokens, m = gradChunk(n);
  // K^T, V^T and K packed; dO and Q chunks packed; P, dP, a transpose; a partial dK / dV
  return 2 * packedSize(d, n) + packedSize(n, d) + 2 * packedSize(m, d) + 3 * m * n + n * d;
}

function f32(memory: WebAssembly.Memory, byteOffset: number, length: number): Float32Array {
  return new Float32Array(memory.buffer, byteOffset >>> 0, length);
}

/**
 * Gradient of sample `b`, head `h` of the fused attention: reads `qkv` (`(B * N, 3 H d)` at byte address `qkv`)
 * and the output's gradient `dy` (`(B * N, H d)`), writes that head's q, k and v columns of `dqkv` (same shape
 * as `qkv`), using `buffers` ({@linkcode attentionGradBufferFloats} floats) and a GEMM `scratch`.
 */
export function attentionHeadGrad(
  k: Kernels,
  qkv: number,
  dy: number,
  dqkv: number,
  b: number,
  h: number,
  tokens: number,
  heads: number,
  d: number,
  scale: number,
  buffers: number,
  scratch: number,
): void {
  const n = tokens, dim = heads * d, width = 3 * dim, ld = width * 4, ldo = dim * 4;
  const chunk = gradChunk(n);
  const mem = k.memory;
  const bw = backwardOps(mem);
  // buffers
  const kt = buffers;
  const vt = kt + packedSize(d, n) * 4;
  const kp = vt + packedSize(d, n) * 4;
  const doP = kp + packedSize(n, d) * 4;
  const qP = doP + packedSize(chunk, d) * 4;
  const pBuf = qP + packedSize(chunk, d) * 4;
  const dpBuf = pBuf + chunk * n * 4;
  const tBuf = dpBuf + chunk * n * 4;
  const part = tBuf + chunk * n * 4;
  // this head's columns
  const q = qkv + b * n * ld + h * d * 4, kAddr = q + dim * 4, vAddr = q + 2 * dim * 4;
  const dq = dqkv + b * n * ld + h * d * 4, dk = dq + dim * 4, dv = dq + 2 * dim * 4;
  const dO = dy + (b * n * dim + h * d) * 4;
  k.gemm.pack(kAddr, d, n, 1, ld, 0, kt);
  k.gemm.pack(vAddr, d, n, 1, ld, 0, vt);
  k.gemm.pack(kAddr, n, d, 0, ld, 0, kp);
  const blockD = panelsPerBlock(d), blockN = panelsPerBlock(n);
  for (let r = 0; r < n; r += chunk) {
    const m = Math.min(chunk, n - r);
    const blockM = panelsPerBlock(m);
    // P = softmax(scale Q_c K^T), dP = dO_c V^T
    k.gemm.gemm(q + r * ld, ld, kt, pBuf, n * 4, m, n, d, scratch, blockD);
    k.ops.softmax(pBuf, pBuf, m, n, scale);
    k.gemm.gemm(dO + r * ldo, ldo, vt, dpBuf, n * 4, m, n, d, scratch, blockD);
    // dV (+)= P^T dO_c
    bw.transpose(pBuf, tBuf, m, n, n * 4, m * 4);
    k.gemm.pack(dO + r * ldo, m, d, 0, ldo, 0, doP);
    accumulate(k, mem, tBuf, m * 4, doP, dv, ld, n, d, m, blockM, r === 0, part, scratch);
    // dS = scale P (dP - rowsum(P dP)); dQ_c = dS K
    bw.softmaxGrad(pBuf, dpBuf, m, n, scale);
    k.gemm.gemm(dpBuf, n * 4, kp, dq + r * ld, ld, m, d, n, scratch, blockN);
    // dK (+)= dS^T Q_c
    bw.transpose(dpBuf, tBuf, m, n, n * 4, m * 4);
    k.gemm.pack(q + r * ld, m, d, 0, ld, 0, qP);
    accumulate(k, mem, tBuf, m * 4, qP, dk, ld, n, d, m, blockM, r === 0, part, scratch);
  }
}

/** `C (rows, cols) = A B` into `c` (row stride `ldc` bytes) when `first`, else `C += A B` through `part`. */
function accumulate(
  k: Kernels,
  mem: WebAssembly.Memory,
  a: number,
  lda: number,
  pb: number,
  c: number,
  ldc: number,
  rows: number,
  cols: number,
  depth: number,
  block: number,
  first: boolean,
  part: number,
  scratch: number,
): void {
  if (first) {
    k.gemm.gemm(a, lda, pb, c, ldc, rows, cols, depth, scratch, block);
    return;
  }
  k.gemm.gemm(a, lda, pb, part, cols * 4, rows, cols, depth, scratch, block);
  const src = f32(mem, part, rows * cols);
  const stride = ldc / 4;
  const dst = f32(mem, c, (rows - 1) * stride + cols);
  for (let r = 0; r < rows; r++) {
    const o = r * stride, s = r * cols;
    for (let j = 0; j < cols; j++) dst[o + j] += src[s + j];
  }
}
