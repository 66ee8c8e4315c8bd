/**
 * Our WebAssembly kernels next to tfjs-backend-wasm: one context per wasm backend instance, holding the GEMM
 * (`wasm_gemm.ts`) and the fused kernels (`wasm_ops.ts`) instantiated on the backend's own memory (so they
 * read and write tensors in place), and a cache of packed right-hand operands that lives as long as their
 * tensors (the backend's `disposeData` is wrapped to drop them).
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { type GemmExports, gemmSupported, instantiateGemm, MR, NR, panelsPerBlock } from "./wasm_gemm.ts";
import { instantiateOps, type OpsExports } from "./wasm_ops.ts";
import { KernelPool } from "./wasm_pool.ts";
import {
  type Epilogue,
  EXERCISE,
  EXERCISE_BYTES,
  exerciseKernels,
  GEMM_COLS,
  GEMM_ROWS,
  gemmRange,
  guidedChunks,
  NO_EPILOGUE,
  SCRATCH_BYTES,
  warmKernels,
} from "./wasm_tasks.ts";

/** Most threads a pool may have (scratch is reserved for this many). */
const MAX_THREADS = 8;

/** The parts of tfjs-backend-wasm's backend object used here. */
export interface WasmBackend {
  /** The emscripten module. */
  wasm: {
    _malloc(bytes: number): number;
    _free(ptr: number): void;
    asm?: { memory?: WebAssembly.Memory };
  };
  /** Tensor data by data id: `memoryOffset` is a byte address in the heap. */
  dataIdMap: { get(dataId: unknown): { memoryOffset: number } | undefined; has(dataId: unknown): boolean };
  /** Allocates an output tensor. */
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  /** Frees a tensor's data when its reference count reaches zero. */
  disposeData(dataId: unknown, force?: boolean): boolean;
}

/** A packed right-hand operand (see `packB`). */
export interface Packed {
  /** Byte address of the packed floats. */
  ptr: number;
  /** Depth. */
  k: number;
  /** Columns. */
  n: number;
  /** Whether it was packed from the transposed layout. */
  transposed: boolean;
  /** Data id of the bias packed with it, or null. */
  bias: unknown;
}

/** Our kernels on one wasm backend. */
export interface WasmContext {
  /** The backend. */
  backend: WasmBackend;
  /** Its heap. */
  memory: WebAssembly.Memory;
  /** The GEMM. */
  gemm: GemmExports;
  /** The fused kernels. */
  ops: OpsExports;
  /** GEMM scratch for the partial panels: one block of `SCRATCH_BYTES` per thread, this thread's first. */
  scratch: number;
  /** The thread pool, when the heap is shared and threads were asked for. */
  pool?: KernelPool;
  /** Packed operands by data id (at most one per layout). */
  packed: Map<unknown, Packed[]>;
}

const contexts = new WeakMap<object, WasmContext | null>();
const knownMemories = new WeakMap<object, WebAssembly.Memory>();

/** Records the memory of a backend's emscripten module (the threaded build does not export it). */
export function registerWasmMemory(module: object, memory: WebAssembly.Memory): void {
  knownMemories.set(module, memory);
}

/** The context of `backend`, created on first use; null when our kernels cannot run there. */
export function wasmContext(backend: WasmBackend): WasmContext | null {
  let c = contexts.get(backend);
  if (c !== undefined) return c;
  c = null;
  const memory = backend.wasm.asm?.memory ?? knownMemories.get(backend.wasm);
  if (memory && gemmSupported()) {
    const shared = typeof SharedArrayBuffer === "function" && memory.buffer instanceof SharedArrayBuffer;
    const packed = new Map<unknown, Packed[]>();
    c = {
      backend,
      memory,
      gemm: instantiateGemm(memory, shared),
      ops: instantiateOps(memory, shared),
      scratch: backend.wasm._malloc(SCRATCH_BYTES * MAX_THREADS),
      packed,
    };
    warmKernels({ gemm: c.gemm, ops: c.ops, memory });
    const scratch = backend.wasm._malloc(EXERCISE_BYTES);
    exerciseKernels({ gemm: c.gemm, ops: c.ops, memory }, scratch);
    backend.wasm._free(scratch);
    const dispose = backend.disposeData.bind(backend);
    backend.disposeData = (dataId: unknown, force?: boolean) => {
      const done = dispose(dataId, force);
      if (!backend.dataIdMap.has(dataId)) {
        const ps = packed.get(dataId);
        if (ps) {
          for (const p of ps) backend.wasm._free(p.ptr);
          packed.delete(dataId);
        }
      }
      return done;
    };
  }
  contexts.set(backend, c);
  return c;
}

/** The context of the backend a kernel runs on; throws (naming `what`) where our kernels cannot run. */
export function requireWasmContext(backend: unknown, what: string): WasmContext {
  const c = wasmContext(backend as WasmBackend);
  if (!c) throw new Error(`${what} need WebAssembly relaxed SIMD`);
  return c;
}

/** Byte address of a tensor's data. */
export function addressOf(c: WasmContext, t: tf.TensorInfo): number {
  // emscripten hands out addresses as signed 32-bit numbers; above 2 GiB they come back negative
  return c.backend.dataIdMap.get(t.dataId)!.memoryOffset >>> 0;
}

/** A float view of the heap (make it after any allocation: growing the heap detaches old views). */
export function heapF32(c: WasmContext, byteOffset: number, length: number): Float32Array {
  return new Float32Array(c.memory.buffer, byteOffset >>> 0, length);
}

/** Number of packed operands cached for the active wasm backend (tests and diagnostics). */
export function wasmPackedCount(): number {
  const engine = tf.engine() as unknown as { registry: Record<string, object | undefined> };
  const be = engine.registry["wasm"];
  const c = be ? contexts.get(be) : undefined;
  return c ? [...c.packed.values()].reduce((n, ps) => n + ps.length, 0) : 0;
}

/**
 * Starts a pool of `threads` threads (the caller included) for the kernels of `backend`, whose heap must be
 * shared (the threaded build). Resolves to the number of threads in use (1: no pool).
 */
export async function startWasmPool(backend: WasmBackend, threads: number): Promise<number> {
  const c = wasmContext(backend);
  if (!c || threads < 2) return 1;
  if (c.pool) return c.pool.threads;
  if (!(typeof SharedArrayBuffer === "function" && c.memory.buffer instanceof SharedArrayBuffer)) return 1;
  c.pool = await KernelPool.start(
    { gemm: c.gemm, ops: c.ops, memory: c.memory },
    Math.min(threads, MAX_THREADS),
    c.scratch,
  );
  // each worker's own instances of the kernels, exercised before the first forward pass
  const t = c.pool.threads;
  const scratch = backend.wasm._malloc(EXERCISE_BYTES * t);
  try {
    c.pool.run(EXERCISE, [2000, 0, scratch], t);
  } finally {
    backend.wasm._free(scratch);
  }
  return t;
}

/** Smallest product (in multiply-adds) worth splitting between threads. */
const PARALLEL_MACS = 1 << 20;

/**
 * `C = A B + bias` for `m` rows (see `wasm_gemm.ts`), then the epilogue (GELU, a residual), split between
 * the pool's threads when there is a pool and enough work: into chunks of row tiles when there are enough
 * rows, else of column panels, big chunks first and smaller ones towards the end (`guidedStart`).
 */
export function runGemm(
  c: WasmContext,
  pa: number,
  lda: number,
  pb: number,
  pc: number,
  ldc: number,
  m: number,
  n: number,
  k: number,
  epi: Epilogue = NO_EPILOGUE,
): void {
  const block = panelsPerBlock(k);
  const pool = c.pool;
  if (pool && m * n * k >= PARALLEL_MACS) {
    const t = pool.threads;
    const tiles = Math.ceil(m / MR), panels = Math.ceil(n / NR);
    const byRows = tiles >= 2 * t || tiles >= panels;
    const units = byRows ? tiles : panels;
    // a guided split: big chunks first, then smaller and smaller ones, so that a thread that starts late or
    // runs slow is caught up by the others and whichever finishes first waits for little (197 rows on 2
    // threads: 8 chunks of 9, 6, 5, 4, 3, 2, 2 and 2 six-row tiles; equal chunks of 4-5 tiles were 3-7%
    // slower, interleaved, at batch 1 and 8)
    const parts = guidedChunks(units, t);
    if (parts >= 2) {
      const params = [
        pa,
        lda,
        pb,
        pc,
        ldc,
        m,
        n,
        k,
        block,
        c.scratch,
        t,
        units,
        epi.gelu ? 1 : 0,
        epi.res,
        epi.ldr,
      ];
      pool.run(byRows ? GEMM_ROWS : GEMM_COLS, params, parts);
      return;
    }
  }
  gemmRange(
    { gemm: c.gemm, ops: c.ops, memory: c.memory },
    pa,
    lda,
    pb,
    pc,
    ldc,
    m,
    n,
    0,
    n,
    k,
    c.scratch,
    block,
    epi,
    0,
  );
}

/** Threads of `backend`'s kernel pool (1: none). */
export function wasmPoolThreads(backend: WasmBackend): number {
  return contexts.get(backend)?.pool?.threads ?? 1;
}

/** Chunks each thread of the active wasm backend's pool has run (diagnostics; empty without a pool). */
export function wasmPoolChunks(): number[] {
  const engine = tf.engine() as unknown as { registry: Record<string, object | undefined> };
  const be = engine.registry["wasm"];
  return (be ? contexts.get(be)?.pool?.chunksRun() : undefined) ?? [];
}

/** Runs the pool's barrier check (see `KernelPool.barrier`); true without a pool. */
export function wasmPoolBarrier(): boolean {
  const engine = tf.engine() as unknown as { registry: Record<string, object | undefined> };
  const be = engine.registry["wasm"];
  const pool = be ? contexts.get(be)?.pool : undefined;
  return pool ? pool.barrier() : true;
}

/**
 * How many times the active wasm backend's pool threads poll before blocking while they wait (see `SPIN` in
 * `wasm_tasks.ts`); sets it when `polls` is given. 0 without a pool.
 */
export function wasmPoolSpin(polls?: number): number {
  const engine = tf.engine() as unknown as { registry: Record<string, object | undefined> };
  const be = engine.registry["wasm"];
  const pool = be ? contexts.get(be)?.pool : undefined;
  if (!pool) return 0;
  if (polls !== undefined) pool.spinPolls = polls;
  return pool.spinPolls;
}
