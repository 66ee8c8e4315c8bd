/**
 * A pool of threads for our wasm kernels on a shared heap (tfjs-backend-wasm's threaded build): the caller
 * and `workers` workers run the chunks of a task (GEMM row or column ranges, attention heads), claiming them
 * from a shared counter. The caller works too, and only waits for chunks a worker has already claimed: a
 * worker that is not scheduled (a busy machine) never holds the caller up.
 *
 * The workers are `node:worker_threads` workers in Deno (running `wasm_pool_worker.ts`), module web workers
 * in a browser (running the bundled `t2t-vit-pool-worker.js`, see {@linkcode setPoolWorkerUrl}).
 *
 * @module
 */

import { isDeno, nodeBuiltin } from "../../src/core/platform.ts";
import {
  BARRIER,
  BUSY,
  CLOSED,
  CTL_SLOTS,
  DEFAULT_SPIN_POLLS,
  DONE,
  FAILED,
  failureOf,
  type Kernels,
  NCHUNK,
  NEXT,
  PARAMS,
  runChunkSafely,
  SCRATCH_BYTES,
  SEQ,
  SPIN,
  spinThenWait,
  STATS,
  TYPE,
} from "./wasm_tasks.ts";

/** The part of a worker (node:worker_threads' or the web's) the pool uses. */
interface PoolWorker {
  terminate(): unknown;
}

type NodeWorkerThreads = {
  Worker: new (path: string, opts: { workerData: unknown }) => PoolWorker & {
    once(ev: "message" | "error", f: (v: unknown) => void): void;
    unref(): void;
  };
};
type NodeUrl = { fileURLToPath(u: URL): string };

/** The file name of the bundled pool worker (`deno task build:web` writes it next to the bundle). */
export const POOL_WORKER_FILE = "t2t-vit-pool-worker.js";

let poolWorkerUrl: string | URL | undefined;

/**
 * Where a browser finds the kernel pool's worker script (default: `t2t-vit-pool-worker.js` next to the
 * module that holds this code, i.e. next to the bundle). Only needed when the bundle and the worker script
 * are served from different places.
 */
export function setPoolWorkerUrl(url: string | URL | undefined): void {
  poolWorkerUrl = url;
}

function startWorker(
  memory: WebAssembly.Memory,
  ctlBuffer: SharedArrayBuffer,
  id: number,
  workers: PoolWorker[],
): Promise<void> {
  if (isDeno()) {
    const wt = nodeBuiltin<NodeWorkerThreads>("worker_threads");
    const url = nodeBuiltin<NodeUrl>("url");
    if (!wt || !url) return Promise.reject(new Error("node:worker_threads is not available"));
    const path = url.fileURLToPath(new URL("./wasm_pool_worker.ts", import.meta.url));
    return new Promise<void>((resolve, reject) => {
      const w = new wt.Worker(path, { workerData: { memory, ctlBuffer, id } });
      workers.push(w);
      w.once("message", () => {
        w.unref(); // the workers block in Atomics.wait; they must not keep the process alive
        resolve();
      });
      w.once("error", reject);
    });
  }
  const src = poolWorkerUrl ?? new URL(`./${POOL_WORKER_FILE}`, import.meta.url);
  return new Promise<void>((resolve, reject) => {
    const w = new Worker(src, { type: "module", name: `t2t-vit kernel pool ${id}` });
    workers.push(w);
    w.onmessage = () => resolve();
    w.onerror = (ev) => {
      ev.preventDefault();
      reject(
        new Error(`the kernel pool's worker ${String(src)} failed to start (${ev.message || "not found?"})`),
      );
    };
    w.postMessage({ memory, ctlBuffer, id });
  });
}

/**
 * Whether this thread may block in `Atomics.wait` (not a browser's main thread, which must spin instead, as
 * emscripten's runtime does there).
 */
function threadCanBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0); // "not-equal" at once where allowed
    return true;
  } catch {
    return false;
  }
}

/** A started pool. */
export class KernelPool {
  readonly #block = threadCanBlock();
  readonly #ctl: Uint32Array;
  readonly #ctl32: Int32Array;
  readonly #ctlF: Float32Array;
  readonly #workers: PoolWorker[];
  readonly #kernels: Kernels;
  /** Byte address of `threads` GEMM scratch blocks (one per thread, the caller first). */
  readonly scratch: number;

  private constructor(
    kernels: Kernels,
    workers: PoolWorker[],
    ctlBuffer: SharedArrayBuffer,
    scratch: number,
  ) {
    this.#kernels = kernels;
    this.#workers = workers;
    this.#ctl = new Uint32Array(ctlBuffer);
    this.#ctl32 = new Int32Array(ctlBuffer);
    this.#ctlF = new Float32Array(ctlBuffer);
    this.scratch = scratch;
  }

  /**
   * Starts `threads - 1` workers on the shared `memory` (the caller is the remaining thread). `scratch` holds
   * `threads` blocks of GEMM scratch.
   */
  static async start(kernels: Kernels, threads: number, scratch: number): Promise<KernelPool> {
    const ctlBuffer = new SharedArrayBuffer(CTL_SLOTS * 4);
    Atomics.store(new Int32Array(ctlBuffer), SPIN, DEFAULT_SPIN_POLLS);
    const workers: PoolWorker[] = [];
    try {
      await Promise.all(
        Array.from({ length: threads - 1 }, (_, id) => startWorker(kernels.memory, ctlBuffer, id, workers)),
      );
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
    return new KernelPool(kernels, workers, ctlBuffer, scratch);
  }

  /** Polls before a waiting thread blocks (see `SPIN` in `wasm_tasks.ts`). */
  get spinPolls(): number {
    return Atomics.load(this.#ctl32, SPIN);
  }

  set spinPolls(n: number) {
    Atomics.store(this.#ctl32, SPIN, Math.max(0, Math.floor(n)));
  }

  /** Threads, the caller included. */
  get threads(): number {
    return this.#workers.length + 1;
  }

  /**
   * Runs chunks `0 .. chunks - 1` of a task of `type` with integer `params` (and float `floats` after them)
   * on all threads; returns when every chunk is done.
   */
  run(type: number, params: number[], chunks: number, floats: number[] = []): void {
    const ctl = this.#ctl, ctl32 = this.#ctl32;
    ctl[TYPE] = type;
    params.forEach((v, i) => (ctl[PARAMS + i] = v >>> 0));
    floats.forEach((v, i) => (this.#ctlF[PARAMS + params.length + i] = v));
    Atomics.store(ctl32, NCHUNK, chunks);
    Atomics.store(ctl32, FAILED, 0);
    Atomics.store(ctl32, DONE, 0);
    Atomics.store(ctl32, NEXT, 0);
    const seq = Atomics.add(ctl32, SEQ, 1) + 1;
    Atomics.notify(ctl32, SEQ);
    let done = 0;
    for (let i = Atomics.add(ctl32, NEXT, 1); i < chunks; i = Atomics.add(ctl32, NEXT, 1)) {
      runChunkSafely(this.#kernels, ctl, ctl32, this.#ctlF, i, 0, "the kernel pool's calling thread");
      done = Atomics.add(ctl32, DONE, 1) + 1;
    }
    // chunks claimed by workers
    while ((done = Atomics.load(ctl32, DONE)) < chunks) spinThenWait(ctl32, DONE, done, 5, this.#block);
    // close the task, then wait for workers still inside it (they find nothing left to claim); workers that
    // announce themselves later see it closed
    Atomics.store(ctl32, CLOSED, seq);
    for (let w = 0; w < this.#workers.length; w++) {
      let b: number;
      while ((b = Atomics.load(ctl32, BUSY + w)) !== 0) spinThenWait(ctl32, BUSY + w, b, 5, this.#block);
    }
    // a chunk that threw (a trap in a kernel: a bug) fails the task; the pool stays usable
    const failure = failureOf(ctl32);
    if (failure !== undefined) throw new Error(`a wasm kernel task (type ${ctl[TYPE]}) failed in ${failure}`);
  }

  /**
   * A task of one chunk per thread in which each chunk waits (up to `timeoutMs`) until all threads hold one:
   * returns whether every thread took part (a health check for tests).
   */
  barrier(timeoutMs = 10_000): boolean {
    const before = this.chunksRun();
    this.run(BARRIER, [timeoutMs, 0], this.threads);
    const after = this.chunksRun();
    return after.every((v, i) => v === before[i] + 1);
  }

  /** Chunks each thread has run so far (the caller first). */
  chunksRun(): number[] {
    return Array.from({ length: this.threads }, (_, i) => this.#ctl[STATS + i]);
  }

  /** Stops the workers. */
  stop(): void {
    for (const w of this.#workers) w.terminate();
  }
}

export { SCRATCH_BYTES };
