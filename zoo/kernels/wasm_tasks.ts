/**
 * The work the wasm kernels split into chunks, shared by the calling thread and the pool's workers
 * (`wasm_pool.ts`): row or column ranges of a GEMM, and (sample, head) pairs of an attention. Parameters
 * travel in a shared control block; every thread runs chunks with its own instances of the GEMM and the fused
 * kernels on the same (shared) heap.
 *
 * @module
 */

import { type GemmExports, MR, NR, packB, packedSize, panelsPerBlock } from "./wasm_gemm.ts";
import type { OpsExports } from "./wasm_ops.ts";

/** One thread's kernels on the heap. */
export interface Kernels {
  /** The GEMM. */
  gemm: GemmExports;
  /** The fused kernels. */
  ops: OpsExports;
  /** The heap. */
  memory: WebAssembly.Memory;
}

/** Slots of the control block (32-bit). */
export const SEQ = 0, NEXT = 1, NCHUNK = 2, DONE = 3, CLOSED = 4, TYPE = 5;
/** First parameter slot. */
export const PARAMS = 8;
/** First per-worker busy flag. */
export const BUSY = 32;
/** First per-thread count of chunks run (the caller first). */
export const STATS = 64;
/** Size of the control block in 32-bit slots (at most 32 threads). */
export const CTL_SLOTS = 96;
/** Bytes of GEMM scratch per thread. */
export const SCRATCH_BYTES = NR * MR * 4;

/** Task types. */
export const GEMM_ROWS = 1, GEMM_COLS = 2, ATTENTION = 3, BARRIER = 4;

/** Query rows per attention step: score blocks stay below 2^22 floats. */
export const MAX_SCORES = 1 << 22;

/** Floats of one thread's attention buffers for `tokens` tokens of head size `d`. */
export function attentionBufferFloats(tokens: number, d: number): number {
  const chunk = Math.max(1, Math.min(tokens, Math.floor(MAX_SCORES / tokens)));
  return packedSize(d, tokens) + packedSize(tokens, d) + chunk * tokens;
}

function f32(memory: WebAssembly.Memory, byteOffset: number, length: number): Float32Array {
  return new Float32Array(memory.buffer, byteOffset, length);
}

/**
 * Attention of sample `b`, head `h` of `qkv` (`(B * N, 3 H d)` at `qkv`) into `out` (`(B * N, H d)`), using
 * `buffers` (a block of {@linkcode attentionBufferFloats} floats) and a GEMM `scratch`.
 */
export function attentionHead(
  k: Kernels,
  qkv: number,
  out: number,
  b: number,
  h: number,
  tokens: number,
  heads: number,
  d: number,
  scale: number,
  buffers: number,
  scratch: number,
): void {
  const n = tokens, dim = heads * d, width = 3 * dim, ld = width * 4;
  const chunk = Math.max(1, Math.min(n, Math.floor(MAX_SCORES / n)));
  const kt = buffers, vp = kt + packedSize(d, n) * 4, scores = vp + packedSize(n, d) * 4;
  const q = qkv + b * n * ld + h * d * 4, kAddr = q + dim * 4, vAddr = q + 2 * dim * 4;
  const span = (n - 1) * width + d;
  packB(f32(k.memory, kAddr, span), d, n, true, undefined, f32(k.memory, kt, packedSize(d, n)), width);
  packB(f32(k.memory, vAddr, span), n, d, false, undefined, f32(k.memory, vp, packedSize(n, d)), width);
  const o = out + (b * n * dim + h * d) * 4;
  for (let r = 0; r < n; r += chunk) {
    const m = Math.min(chunk, n - r);
    k.gemm.gemm(q + r * ld, ld, kt, scores, n * 4, m, n, d, scratch, panelsPerBlock(d));
    k.ops.softmax(scores, scores, m, n, scale);
    k.gemm.gemm(scores, n * 4, vp, o + r * dim * 4, dim * 4, m, d, n, scratch, panelsPerBlock(n));
  }
}

/** Runs chunk `i` of the task in the control block on thread `thread` (0: the calling thread). */
export function runChunk(k: Kernels, ctl: Uint32Array, ctlF: Float32Array, i: number, thread: number): void {
  ctl[STATS + thread]++;
  const p = (j: number) => ctl[PARAMS + j];
  const type = ctl[TYPE];
  if (type === GEMM_ROWS || type === GEMM_COLS) {
    const [pa, lda, pb, pc, ldc, m, n, kk, block, per, scratchBase] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map(
      p,
    );
    const scratch = scratchBase + thread * SCRATCH_BYTES;
    if (type === GEMM_ROWS) {
      const r0 = i * per;
      k.gemm.gemm(pa + r0 * lda, lda, pb, pc + r0 * ldc, ldc, Math.min(per, m - r0), n, kk, scratch, block);
    } else {
      const j0 = i * per * NR;
      const panelBytes = (kk + 1) * NR * 4;
      k.gemm.gemm(
        pa,
        lda,
        pb + i * per * panelBytes,
        pc + j0 * 4,
        ldc,
        m,
        Math.min(per * NR, n - j0),
        kk,
        scratch,
        block,
      );
    }
  } else if (type === BARRIER) {
    // every thread takes one chunk and waits for all the others (a check that all threads run)
    const a = new Int32Array(ctl.buffer);
    Atomics.add(a, PARAMS + 1, 1);
    const deadline = Date.now() + p(0);
    while (Atomics.load(a, PARAMS + 1) < ctl[NCHUNK] && Date.now() < deadline) {
      Atomics.wait(a, PARAMS + 2, 0, 1);
    }
  } else if (type === ATTENTION) {
    const [qkv, out, tokens, heads, d, buffers, stride, scratchBase] = [0, 1, 2, 3, 4, 5, 6, 7].map(p);
    const scale = ctlF[PARAMS + 8];
    const b = Math.floor(i / heads), h = i % heads;
    attentionHead(
      k,
      qkv,
      out,
      b,
      h,
      tokens,
      heads,
      d,
      scale,
      buffers + thread * stride,
      scratchBase + thread * SCRATCH_BYTES,
    );
  }
}
