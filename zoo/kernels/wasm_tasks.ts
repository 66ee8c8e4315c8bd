/**
 * The work the wasm kernels split into chunks, shared by the calling thread and the pool's workers
 * (`wasm_pool.ts`): row or column ranges of a GEMM, (sample, head) pairs of an attention, samples of the
 * token performer and row ranges of its steps, output rows of the soft split, rows of LayerNorm, ranges of
 * GELU, and panel ranges of a packing or column groups of a transpose. Parameters
 * travel in a shared control block; every thread runs chunks with its own instances of the GEMM and the fused
 * kernels on the same (shared) heap.
 *
 * @module
 */

import { type GemmExports, MR, NR, packedSize, panelsPerBlock } from "./wasm_gemm.ts";
import type { OpsExports } from "./wasm_ops.ts";
import { attentionHeadGrad } from "./wasm_backward_tasks.ts";
import { backwardOps } from "./wasm_backward_ops.ts";

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
/**
 * Control slot set (to 1) by the first chunk of a task that threw: the other chunks of the task are then
 * skipped (counted done without running), and the caller throws once the task is over.
 */
export const FAILED = 7;
/** First slot of the failed chunk's error message (UTF-16 code units, two per slot; length first). */
export const MESSAGE = 96;
/** Code units of an error message the control block holds. */
const MESSAGE_UNITS = 2 * 63;
/** Size of the control block in 32-bit slots (at most 32 threads). */
export const CTL_SLOTS = MESSAGE + 64;
/** Bytes of GEMM scratch per thread. */
export const SCRATCH_BYTES = NR * MR * 4;

/**
 * Control slot holding how many times a waiting thread polls before it blocks in `Atomics.wait`. Tasks of a
 * forward pass follow each other within tens to hundreds of microseconds, and a thread that blocked takes a
 * futex wake-up to resume (slow in virtual machines, where an idle virtual CPU is halted), so workers poll
 * for a while first; a pool that is idle for longer blocks and costs nothing.
 */
export const SPIN = 6;

/** Default of the {@linkcode SPIN} slot: a few hundred microseconds of polling (measured: 10-25% faster forward passes at batch 1 than 4096 polls or none). */
export const DEFAULT_SPIN_POLLS = 1 << 17;

/** Waits while `a[i]` equals `v`: polls `a[SPIN]` times first, then blocks (up to `ms`) when `block`. */
export function spinThenWait(a: Int32Array, i: number, v: number, ms: number, block: boolean): void {
  const polls = Atomics.load(a, SPIN);
  for (let n = 0; n < polls; n++) if (Atomics.load(a, i) !== v) return;
  if (block) Atomics.wait(a, i, v, ms);
}

/**
 * Runs chunk `i` (see {@linkcode runChunk}; `ctl32` is `ctl` as signed integers) unless a chunk of the task
 * already failed; a chunk that throws marks the task failed and leaves its message (prefixed with `who`) in
 * the control block. Never throws, so that every claimed chunk is counted done and nobody waits for a thread
 * that died.
 */
export function runChunkSafely(
  k: Kernels,
  ctl: Uint32Array,
  ctl32: Int32Array,
  ctlF: Float32Array,
  i: number,
  thread: number,
  who: string,
): void {
  if (Atomics.load(ctl32, FAILED) !== 0) return;
  try {
    runChunk(k, ctl, ctlF, i, thread);
  } catch (e) {
    if (Atomics.compareExchange(ctl32, FAILED, 0, 1) !== 0) return;
    const text = `${who}: ${e instanceof Error ? e.message : String(e)}`.slice(0, MESSAGE_UNITS);
    const units = new Uint16Array(ctl.buffer, (MESSAGE + 1) * 4, MESSAGE_UNITS);
    for (let j = 0; j < text.length; j++) units[j] = text.charCodeAt(j);
    Atomics.store(ctl32, MESSAGE, text.length);
  }
}

/** The message of the task's failed chunk (see {@linkcode runChunkSafely}), or `undefined`. */
export function failureOf(ctl32: Int32Array): string | undefined {
  if (Atomics.load(ctl32, FAILED) === 0) return undefined;
  const units = new Uint16Array(ctl32.buffer, (MESSAGE + 1) * 4, Atomics.load(ctl32, MESSAGE));
  return String.fromCharCode(...units);
}

/**
 * Start of chunk `i` of a guided split of `units` between `threads` threads: each chunk takes a `1 / (2
 * threads)` share of the units left (at least a 32nd of them, at least one), so chunks shrink towards the end
 * of a task, and a thread that runs out of work waits for a small chunk, not an average one. `units` when
 * chunk `i` does not exist.
 */
export function guidedStart(i: number, units: number, threads: number): number {
  const min = Math.max(1, Math.ceil(units / 32));
  let start = 0;
  for (let j = 0; j < i && start < units; j++) {
    start += Math.max(min, Math.ceil((units - start) / (2 * threads)));
  }
  return Math.min(start, units);
}

/** Number of chunks of a guided split (see {@linkcode guidedStart}). */
export function guidedChunks(units: number, threads: number): number {
  let n = 0;
  while (guidedStart(n, units, threads) < units) n++;
  return n;
}

/** Task types. */
export const GEMM_ROWS = 1,
  GEMM_COLS = 2,
  ATTENTION = 3,
  BARRIER = 4,
  PERFORMER = 5,
  UNFOLD = 6,
  LAYER_NORM = 7,
  GELU = 8,
  EXERCISE = 10,
  PERFORMER_STEP = 11,
  TRANSPOSE = 12,
  PACK = 13;
/** Columns of a {@linkcode TRANSPOSE} task's unit (the transpose kernel's group). */
export const TRANSPOSE_COLUMNS = 8;
/** {@linkcode PERFORMER_STEP}'s steps (its first parameter). */
export const STEP_PRM_EXP = 0, STEP_ROW_DIVIDE = 1;
/** Parameter slots of a {@linkcode PERFORMER_STEP} task (the float follows them). */
const STEP_PARAMS = 8;
/** Task type of the attention backward pass (`wasm_backward.ts`): (sample, head) pairs. */
export const ATTENTION_GRAD = 9;

/** Query rows per attention step: score blocks stay below 2^22 floats. */
export const MAX_SCORES = 1 << 22;

/** Floats of one thread's attention buffers for `tokens` tokens of head size `d`. */
export function attentionBufferFloats(tokens: number, d: number): number {
  const chunk = Math.max(1, Math.min(tokens, Math.floor(MAX_SCORES / tokens)));
  return packedSize(d, tokens) + packedSize(tokens, d) + chunk * tokens;
}

/**
 * Attention of query rows `rowStart .. rowEnd` (default all) of sample `b`, head `h` of `qkv`
 * (`(B * N, 3 H d)` at `qkv`) into `out` (`(B * N, H d)`), using `buffers` (a block of
 * {@linkcode attentionBufferFloats} floats) and a GEMM `scratch` (see {@linkcode attendRows}).
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
  rowStart = 0,
  rowEnd = tokens,
): void {
  const n = tokens, dim = heads * d, ld = 3 * dim * 4;
  const q = qkv + b * n * ld + h * d * 4;
  const o = out + (b * n * dim + h * d) * 4;
  const head: AttentionHead = { keys: q + dim * 4, ldk: ld, values: q + 2 * dim * 4, ldv: ld, tokens: n, d };
  attendRows(
    k,
    head,
    q + rowStart * ld,
    ld,
    o + rowStart * dim * 4,
    dim * 4,
    rowEnd - rowStart,
    scale,
    buffers,
    scratch,
  );
}

/** One head's keys and values: `tokens` rows of `d` values each, at byte addresses, row strides in bytes. */
export interface AttentionHead {
  /** Address of the first key. */
  keys: number;
  /** Row stride of the keys. */
  ldk: number;
  /** Address of the first value. */
  values: number;
  /** Row stride of the values. */
  ldv: number;
  /** Keys (and values). */
  tokens: number;
  /** Head size. */
  d: number;
}

/**
 * `softmax(scale q k^T) v` of `rows` queries (`d` values each at `q`, rows `ldq` bytes apart) against one
 * head's keys and values, into `out` (rows `ldo` bytes apart), using `buffers` (a block of
 * {@linkcode attentionBufferFloats} floats) and a GEMM `scratch`: the keys packed transposed and the values
 * packed once, then blocks of query rows through the GEMM, the softmax and the GEMM again.
 */
export function attendRows(
  k: Kernels,
  head: AttentionHead,
  q: number,
  ldq: number,
  out: number,
  ldo: number,
  rows: number,
  scale: number,
  buffers: number,
  scratch: number,
): void {
  const { tokens: n, d } = head;
  const chunk = Math.max(1, Math.min(n, Math.floor(MAX_SCORES / n)));
  const kt = buffers, vp = kt + packedSize(d, n) * 4, scores = vp + packedSize(n, d) * 4;
  k.gemm.pack(head.keys, d, n, 1, head.ldk, 0, kt);
  k.gemm.pack(head.values, n, d, 0, head.ldv, 0, vp);
  for (let r = 0; r < rows; r += chunk) {
    const m = Math.min(chunk, rows - r);
    k.gemm.gemm(q + r * ldq, ldq, kt, scores, n * 4, m, n, d, scratch, panelsPerBlock(d));
    k.ops.softmax(scores, scores, m, n, scale);
    k.gemm.gemm(scores, n * 4, vp, out + r * ldo, ldo, m, d, n, scratch, panelsPerBlock(n));
  }
}

/** What the GEMM tasks apply to their results: GELU, then a residual `res` (rows `ldr` bytes apart; 0: none). */
export interface Epilogue {
  /** Exact-form GELU of `A B + bias`. */
  gelu: boolean;
  /** Byte address of the residual added last (rows aligned with C's), or 0. */
  res: number;
  /** Row stride of the residual in bytes. */
  ldr: number;
}

/** No epilogue. */
export const NO_EPILOGUE: Epilogue = { gelu: false, res: 0, ldr: 0 };

/**
 * Columns `j0 .. j0 + cols` of `rows` rows of `C = A B + bias` (A at `pa`, C at `pc`, both starting at the
 * first row; `pb` the whole packed B of `n` columns), then the epilogue on those results, while they are
 * still in cache. `r0` is the first row's index (for the residual).
 */
export function gemmRange(
  k: Kernels,
  pa: number,
  lda: number,
  pb: number,
  pc: number,
  ldc: number,
  rows: number,
  n: number,
  j0: number,
  cols: number,
  depth: number,
  scratch: number,
  block: number,
  epi: Epilogue,
  r0: number,
): void {
  if (rows <= 0 || cols <= 0) return;
  const panelBytes = (depth + 1) * NR * 4;
  k.gemm.gemm(pa, lda, pb + (j0 / NR) * panelBytes, pc + j0 * 4, ldc, rows, cols, depth, scratch, block);
  if (!epi.gelu && !epi.res) return;
  const contiguous = cols === n && ldc === n * 4 && (!epi.res || epi.ldr === ldc);
  const spans = contiguous ? 1 : rows, width = contiguous ? rows * n : cols;
  for (let r = 0; r < spans; r++) {
    const c = pc + r * ldc + j0 * 4;
    if (epi.gelu) k.ops.gelu(c, c, width);
    if (epi.res) k.ops.add(c, epi.res + (r0 + r) * epi.ldr + j0 * 4, c, width);
  }
}

/** `C = A B` on packed B (`pa, lda, pb, pc, ldc, m, n, k`, see `wasm_gemm.ts`). */
export type Product = (
  pa: number,
  lda: number,
  pb: number,
  pc: number,
  ldc: number,
  m: number,
  n: number,
  k: number,
) => void;

/** The GEMM on this thread alone. */
export function directProduct(k: Kernels, scratch: number): Product {
  return (pa, lda, pb, pc, ldc, m, n, depth) =>
    k.gemm.gemm(pa, lda, pb, pc, ldc, m, n, depth, scratch, panelsPerBlock(depth));
}

/** Floats of one thread's buffers for the performer of `t` tokens, width `emb`, `m` random features. */
export function performerBufferFloats(t: number, emb: number, m: number): number {
  return 3 * t * m + packedSize(t, emb) + packedSize(m, emb + 1) + t * (emb + 1) + m * (emb + 1);
}

/**
 * How {@linkcode performerSample} runs its steps besides the products: `prmExp`, `rowDivide` (`OpsExports`)
 * and the packing of v (`GemmExports.pack`, untransposed, no bias) on this thread, or split between threads.
 */
export interface PerformerSteps {
  /** `prm_exp` of `rows` rows (see `OpsExports.prmExp`). */
  prmExp(px: number, ldx: number, cols: number, pz: number, m: number, rows: number, shift: number): void;
  /** `po[r, i] = py[r, i] / (py[r, cols] + eps)` (see `OpsExports.rowDivide`). */
  rowDivide(py: number, ldy: number, cols: number, po: number, rows: number, eps: number): void;
  /** Packs `src (k, n)` (rows `lds` bytes apart) into panels at `out`. */
  pack(src: number, k: number, n: number, lds: number, out: number): void;
}

/** The steps on this thread alone. */
export function directSteps(k: Kernels): PerformerSteps {
  return {
    prmExp: (px, ldx, cols, pz, m, rows, shift) => k.ops.prmExp(px, ldx, cols, pz, m, rows, shift),
    rowDivide: (py, ldy, cols, po, rows, eps) => k.ops.rowDivide(py, ldy, cols, po, rows, eps),
    pack: (src, kk, n, lds, out) => k.gemm.pack(src, kk, n, 0, lds, 0, out),
  };
}

/**
 * The steps split into at most `parts` chunks on the pool: rows for `prmExp` and `rowDivide` (one
 * {@linkcode PERFORMER_STEP} task each), 8-column panels for `pack` ({@linkcode pooledPack}). `run` is the
 * pool's `run`.
 */
export function pooledSteps(
  run: (type: number, params: number[], chunks: number, floats?: number[]) => void,
  parts: number,
): PerformerSteps {
  const task = (step: number, args: number[], units: number, float = 0) => {
    const chunks = Math.max(1, Math.min(parts, units));
    const params = [step, ...args, chunks];
    while (params.length < STEP_PARAMS) params.push(0);
    run(PERFORMER_STEP, params, chunks, [float]);
  };
  return {
    prmExp: (px, ldx, cols, pz, m, rows, shift) =>
      task(STEP_PRM_EXP, [px, ldx, cols, pz, m, rows], rows, shift),
    rowDivide: (py, ldy, cols, po, rows, eps) => task(STEP_ROW_DIVIDE, [py, ldy, cols, po, rows], rows, eps),
    pack: (src, kk, n, lds, out) => pooledPack(run, parts, src, kk, n, false, lds, 0, out),
  };
}

/**
 * `GemmExports.pack` split into at most `parts` chunks of 8-column panels on the pool (`run` is the pool's
 * `run`): `src (k, n)`, or `(n, k)` when `transposed`, rows `lds` bytes apart; `bias` a byte address or 0.
 */
export function pooledPack(
  run: (type: number, params: number[], chunks: number) => void,
  parts: number,
  src: number,
  k: number,
  n: number,
  transposed: boolean,
  lds: number,
  bias: number,
  out: number,
): void {
  const chunks = Math.max(1, Math.min(parts, Math.ceil(n / NR)));
  run(PACK, [src, k, n, transposed ? 1 : 0, lds, bias, out, chunks], chunks);
}

/**
 * The token performer's attention for sample `b` of `kqv` (`(B * t, 3 emb)`, per token k, q, v) into `out`
 * (`(B * t, emb)`), with `pw` the random features `w (m, emb)` packed as `w^T`:
 * `kp = exp(k w^T - |k|^2 / 2) / sqrt m` (and `qp` alike), `y = qp (kp^T v) / (qp . sum_t kp + eps)`, the
 * denominator computed as one more column of the last product. `buffers` holds
 * {@linkcode performerBufferFloats} floats; `product` runs the products (default: on this thread).
 */
export function performerSample(
  k: Kernels,
  kqv: number,
  out: number,
  b: number,
  t: number,
  emb: number,
  m: number,
  pw: number,
  eps: number,
  buffers: number,
  scratch: number,
  product: Product = directProduct(k, scratch),
  steps: PerformerSteps = directSteps(k),
): void {
  const ld = 3 * emb * 4, e1 = emb + 1;
  const kAddr = kqv + b * t * ld, qAddr = kAddr + emb * 4, vAddr = kAddr + 2 * emb * 4;
  const kp = buffers, qp = kp + t * m * 4, kpT = qp + t * m * 4, vp = kpT + m * t * 4;
  const zp = vp + packedSize(t, emb) * 4, yp = zp + packedSize(m, e1) * 4, z = yp + t * e1 * 4;
  const shift = -0.5 * Math.log(m); // exp(.) / sqrt(m)
  product(kAddr, ld, pw, kp, m * 4, t, m, emb);
  steps.prmExp(kAddr, ld, emb, kp, m, t, shift);
  product(qAddr, ld, pw, qp, m * 4, t, m, emb);
  steps.prmExp(qAddr, ld, emb, qp, m, t, shift);
  // kp^T, and sum_t kp as the last column of z
  k.ops.transposeSum(kp, t, m, kpT, z + emb * 4, e1 * 4);
  // z[:, :emb] = kp^T v; then y' = qp z: (t, emb + 1), the last column qp . sum kp
  steps.pack(vAddr, t, emb, ld, vp);
  product(kpT, t * 4, vp, z, e1 * 4, m, emb, t);
  k.gemm.pack(z, m, e1, 0, e1 * 4, 0, zp);
  product(qp, m * 4, zp, yp, e1 * 4, t, e1, m);
  steps.rowDivide(yp, e1 * 4, emb, out + b * t * emb * 4, t, eps);
}

/**
 * Row `i` (sample `i / ho`, output row `i % ho`) of the soft split `nn.Unfold(kernel, stride, padding)` of a
 * map `x` (`(B, h, w, c)` NHWC, or `(B, c, h, w)` NCHW when `channelsFirst` is non-zero) into
 * `out (B, ho, wo, c * kernel^2)` (channel-major per pixel, zeros outside).
 */
export function unfoldRow(
  k: Kernels,
  x: number,
  out: number,
  i: number,
  [h, w, c, ho, wo, kernel, stride, padding, channelsFirst]: number[],
): void {
  const b = Math.floor(i / ho), oh = i % ho;
  const xb = x + b * h * w * c * 4, row = out + i * wo * c * kernel * kernel * 4;
  if (channelsFirst) k.ops.unfoldRuns(xb, row, h, w, c, wo, kernel, stride, padding, oh, w * 4, h * w * 4);
  else k.ops.unfoldRow(xb, row, h, w, c, wo, kernel, stride, padding, oh);
}

/**
 * Calls every kernel once on empty inputs (touching no memory), so that the engine compiles them now
 * rather than inside the first forward pass (engines compile WebAssembly functions lazily).
 */
export function warmKernels(k: Kernels): void {
  k.gemm.gemm(0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
  k.gemm.pack(0, 0, 0, 0, 0, 0, 0);
  k.gemm.pack(0, 0, 0, 1, 0, 0, 0);
  k.ops.gelu(0, 0, 0);
  k.ops.layerNorm(0, 0, 0, 0, 0, 0, 1e-5);
  k.ops.softmax(0, 0, 0, 0, 1);
  k.ops.exp(0, 0, 0, 0);
  k.ops.add(0, 0, 0, 0);
  k.ops.prmExp(0, 0, 0, 0, 0, 0, 0);
  k.ops.transposeSum(0, 0, 0, 0, 0, 0);
  k.ops.rowDivide(0, 0, 0, 0, 0, 0);
  k.ops.unfoldRow(0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  k.ops.unfoldRuns(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

/** Bytes of scratch {@linkcode exerciseKernels} works in. */
export const EXERCISE_BYTES = 1 << 20;

/**
 * Runs every kernel a few times on small inputs in `scratch` ({@linkcode EXERCISE_BYTES} bytes, zeroed here),
 * so that the engine's optimising compiler has taken them over before the first forward pass (engines run a
 * WebAssembly function with a baseline compiler first and optimise it once it has run enough).
 */
export function exerciseKernels(k: Kernels, scratch: number): void {
  new Uint8Array(k.memory.buffer, scratch, EXERCISE_BYTES).fill(0);
  const a = scratch, b = scratch + (1 << 18), c = scratch + (1 << 19), d = scratch + 3 * (1 << 18);
  for (let i = 0; i < 6; i++) {
    k.gemm.pack(a, 64, 64, i & 1, 256, 0, b);
    // every micro-kernel (a product's last row tile has 1 to 6 rows), full and partial panels
    for (let m = 61; m <= 66; m++) {
      for (let r = 0; r < 4; r++) {
        k.gemm.gemm(a, 256, b, c, 256, m, 64 - (r & 1) * 3, 64, d, panelsPerBlock(64));
      }
    }
    k.ops.gelu(a, c, 16384);
    k.ops.layerNorm(a, c, 64, 256, b, b, 1e-5);
    k.ops.softmax(a, c, 64, 256, 1);
    k.ops.add(a, b, c, 16384);
    k.ops.prmExp(a, 256, 64, c, 32, 256, 0);
    k.ops.transposeSum(a, 256, 32, c, b, 4);
    k.ops.rowDivide(a, 260, 64, c, 256, 1);
    for (let r = 0; r < 8; r++) {
      k.ops.unfoldRow(a, c, 56, 56, 3, 14, 7, 4, 2, r);
      k.ops.unfoldRuns(a, c, 56, 56, 3, 14, 7, 4, 2, r, 56 * 4, 56 * 56 * 4);
    }
  }
}

/** Runs chunk `i` of the task in the control block on thread `thread` (0: the calling thread). */
export function runChunk(k: Kernels, ctl: Uint32Array, ctlF: Float32Array, i: number, thread: number): void {
  ctl[STATS + thread]++;
  const p = (j: number) => ctl[PARAMS + j];
  const type = ctl[TYPE];
  if (type === GEMM_ROWS || type === GEMM_COLS) {
    const pa = p(0),
      lda = p(1),
      pb = p(2),
      pc = p(3),
      ldc = p(4),
      m = p(5),
      n = p(6),
      kk = p(7),
      block = p(8);
    const scratch = p(9) + thread * SCRATCH_BYTES, threads = p(10), units = p(11);
    const epi: Epilogue = { gelu: p(12) !== 0, res: p(13), ldr: p(14) };
    // chunk i of a guided split of the units (MR-row tiles or NR-column panels) between the threads
    const u0 = guidedStart(i, units, threads), u1 = guidedStart(i + 1, units, threads);
    if (type === GEMM_ROWS) {
      const r0 = u0 * MR, rows = Math.min(u1 * MR, m) - r0;
      gemmRange(k, pa + r0 * lda, lda, pb, pc + r0 * ldc, ldc, rows, n, 0, n, kk, scratch, block, epi, r0);
    } else {
      const j0 = u0 * NR, cols = Math.min(u1 * NR, n) - j0;
      gemmRange(k, pa, lda, pb, pc, ldc, m, n, j0, cols, kk, scratch, block, epi, 0);
    }
  } else if (type === PERFORMER) {
    const [kqv, out, t, emb, m, pw, buffers, stride, scratchBase] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(p);
    const eps = ctlF[PARAMS + 9];
    performerSample(
      k,
      kqv,
      out,
      i,
      t,
      emb,
      m,
      pw,
      eps,
      buffers + thread * stride,
      scratchBase + thread * SCRATCH_BYTES,
    );
  } else if (type === UNFOLD) {
    unfoldRow(k, p(0), p(1), i, [2, 3, 4, 5, 6, 7, 8, 9, 10].map(p));
  } else if (type === EXERCISE) {
    // every thread takes one chunk (waiting, by polling, up to p(0) ms for the others to join), then
    // exercises its own instances of the kernels in its own scratch block
    const a = new Int32Array(ctl.buffer);
    Atomics.add(a, PARAMS + 1, 1);
    const deadline = Date.now() + p(0);
    while (Atomics.load(a, PARAMS + 1) < ctl[NCHUNK] && Date.now() < deadline) { /* poll */ }
    exerciseKernels(k, p(2) + thread * EXERCISE_BYTES);
  } else if (type === BARRIER) {
    // every thread takes one chunk and waits for all the others (a check that all threads run)
    const a = new Int32Array(ctl.buffer);
    Atomics.add(a, PARAMS + 1, 1);
    const deadline = Date.now() + p(0);
    while (Atomics.load(a, PARAMS + 1) < ctl[NCHUNK] && Date.now() < deadline) {
      Atomics.wait(a, PARAMS + 2, 0, 1);
    }
  } else if (type === ATTENTION_GRAD) {
    const [qkv, dy, dqkv, tokens, heads, d, buffers, stride, scratchBase] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(
      p,
    );
    const b = Math.floor(i / heads), h = i % heads;
    const scratch = scratchBase + thread * SCRATCH_BYTES;
    attentionHeadGrad(
      k,
      qkv,
      dy,
      dqkv,
      b,
      h,
      tokens,
      heads,
      d,
      ctlF[PARAMS + 9],
      buffers + thread * stride,
      scratch,
    );
  } else if (type === ATTENTION) {
    const [qkv, out, tokens, heads, d, buffers, stride, scratchBase, blocks] = [0, 1, 2, 3, 4, 5, 6, 7, 8]
      .map(p);
    const scale = ctlF[PARAMS + 9];
    // chunk i: row block i % blocks of (sample, head) i / blocks
    const bh = Math.floor(i / blocks), rb = i % blocks;
    const b = Math.floor(bh / heads), h = bh % heads;
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
      Math.floor((rb * tokens) / blocks),
      Math.floor(((rb + 1) * tokens) / blocks),
    );
  } else if (type === PERFORMER_STEP) {
    // chunk i of parts: rows [i rows / parts, (i + 1) rows / parts), or panels likewise
    const step = p(0), f = ctlF[PARAMS + STEP_PARAMS];
    const [src, ld, cols, dst, width, rows, parts] = step === STEP_PRM_EXP
      ? [1, 2, 3, 4, 5, 6, 7].map(p)
      : [p(1), p(2), p(3), p(4), p(3), p(5), p(6)];
    const r0 = Math.floor((i * rows) / parts), r1 = Math.floor(((i + 1) * rows) / parts);
    if (r1 > r0) {
      if (step === STEP_PRM_EXP) {
        k.ops.prmExp(src + r0 * ld, ld, cols, dst + r0 * width * 4, width, r1 - r0, f);
      } else k.ops.rowDivide(src + r0 * ld, ld, cols, dst + r0 * width * 4, r1 - r0, f);
    }
  } else if (type === PACK) {
    // chunk i of parts: panels [i panels / parts, (i + 1) panels / parts)
    const [src, kk, n, transposed, lds, bias, out, parts] = [0, 1, 2, 3, 4, 5, 6, 7].map(p);
    const panels = Math.ceil(n / NR);
    const p0 = Math.floor((i * panels) / parts), p1 = Math.floor(((i + 1) * panels) / parts);
    const cols = Math.min(p1 * NR, n) - p0 * NR;
    if (cols > 0) {
      // panel p holds columns 8p.. of B: rows 8p.. of a transposed source
      const at = src + p0 * NR * (transposed ? lds : 4);
      k.gemm.pack(at, kk, cols, transposed, lds, bias ? bias + p0 * NR * 4 : 0, out + p0 * (kk + 1) * NR * 4);
    }
  } else if (type === TRANSPOSE) {
    // units: (matrix, group of eight columns); chunk i: units [i units / parts, (i + 1) units / parts)
    const [src, dst, rows, cols, groups, units, parts] = [0, 1, 2, 3, 4, 5, 6].map(p);
    const size = rows * cols * 4, bw = backwardOps(k.memory);
    const u1 = Math.floor(((i + 1) * units) / parts);
    for (let u = Math.floor((i * units) / parts); u < u1; u++) {
      const b = Math.floor(u / groups), c0 = (u % groups) * TRANSPOSE_COLUMNS;
      const n = Math.min(TRANSPOSE_COLUMNS, cols - c0);
      bw.transpose(src + b * size + c0 * 4, dst + b * size + c0 * rows * 4, rows, n, cols * 4, rows * 4);
    }
  } else if (type === GELU) {
    const [px, po, n, parts] = [0, 1, 2, 3].map(p);
    // chunk i: elements [i n / parts, (i + 1) n / parts), rounded to whole vectors
    const e0 = Math.floor((i * n) / parts / 4) * 4,
      e1 = i === parts - 1 ? n : Math.floor(((i + 1) * n) / parts / 4) * 4;
    k.ops.gelu(px + e0 * 4, po + e0 * 4, e1 - e0);
  } else if (type === LAYER_NORM) {
    const [px, po, rows, cols, pg, pb, parts] = [0, 1, 2, 3, 4, 5, 6].map(p);
    const r0 = Math.floor((i * rows) / parts), r1 = Math.floor(((i + 1) * rows) / parts);
    k.ops.layerNorm(px + r0 * cols * 4, po + r0 * cols * 4, r1 - r0, cols, pg, pb, ctlF[PARAMS + 7]);
  }
}
