/**
 * Multi-threaded wasm in Deno: tfjs-backend-wasm's threaded build (for its shared heap), with our kernel
 * pool on top.
 *
 * tfjs-backend-wasm ships a threaded SIMD build (emscripten pthreads, XNNPACK's thread pool), but never
 * starts it in Deno: it takes Deno for Node (where it turns threads off, tfjs #3830), and when forced on, its
 * emscripten runtime hands a blob URL to `node:worker_threads` (rejected by Deno), replaces the global
 * `Worker` with Node's, and caps the pool at half of `os.cpus()` (one thread on a 2-core machine).
 * {@linkcode enableWasmThreads} wraps the wasm backend's factory so that, while the backend starts:
 *
 * - the threaded build is chosen (`WASM_HAS_MULTITHREAD_SUPPORT`);
 * - the pthread workers run `wasm_pthread_worker.js` (a file path, which `node:worker_threads` accepts);
 * - `os.cpus()` reports enough cores for the requested count;
 * - where our kernel pool owns the threads (XNNPACK keeps one, so no pthread ever runs), the eight pthread
 *   workers the glue pre-creates are stand-ins that start nothing (real ones cost about 60 ms each to create
 *   in Deno: `setBackend("wasm")` took 400-470 ms, now 110-130 ms);
 *
 * and afterwards the global `Worker`, `URL.createObjectURL`, `os.cpus` and `WebAssembly.Memory` are
 * restored, the idle pre-created pthread workers are terminated and the rest `unref`'d (a script ends when
 * its work does). Where our relaxed-SIMD kernels run (`wasm_gemm.ts`), they get the threads: XNNPACK keeps
 * one and our pool (`wasm_pool.ts`) splits the GEMMs and attention heads over the shared heap; otherwise
 * XNNPACK gets them. If the threaded build cannot start, the backend starts single-threaded as before.
 *
 * Results are identical to the single-threaded ones (work is split by output rows, columns or heads).
 *
 * In a browser, tfjs starts its threaded build by itself on a cross-origin-isolated page (none of the Deno
 * fixes apply there); the wrapper then sets the thread count, captures the build's shared memory for our
 * kernels and starts our pool in module workers (`t2t-vit-pool-worker.js` next to the bundle, made by
 * `deno task build:web`). The memory is captured whichever build tfjs picks, even with one thread.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { setThreadsCount } from "@tensorflow/tfjs-backend-wasm";
import { isDeno, nodeBuiltin } from "../../src/core/platform.ts";
import { gemmSupported } from "./wasm_gemm.ts";
import { registerWasmMemory, startWasmPool, type WasmBackend, wasmPoolThreads } from "./wasm_runtime.ts";

/** The emscripten pthread bookkeeping the wasm module exposes (`Module.PThread`). */
interface PThreadLike {
  unusedWorkers: WorkerLike[];
  runningWorkers: WorkerLike[];
}

interface WorkerLike {
  unref?: () => void;
  terminate?: () => unknown;
}

/** What tfjs-backend-wasm's backend object holds (`backend.wasm` is the emscripten module). */
interface WasmBackendInternals {
  wasm?: { PThread?: PThreadLike; tfjs?: { getThreadsCount?: () => number } };
}

let requested = 0;
let wrapped = false;
let chosen = false;
let lastError: string | undefined;

/** The most threads tfjs's build can use (it pre-creates 8 pthread workers). */
export const MAX_WASM_THREADS = 8;

/**
 * Whether this runtime can run the threaded build: shared memory and atomics, plus `node:worker_threads` and
 * a local copy of this package in Deno, or a cross-origin-isolated page in a browser.
 */
export function wasmThreadsSupported(): boolean {
  if (typeof SharedArrayBuffer !== "function") return false;
  if (isDeno()) {
    if (!import.meta.url.startsWith("file:")) return false; // the pthread worker must be a local file
  } else if ((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated !== true) return false;
  try {
    // a module with a shared memory and an atomic load (wasm-feature-detect's threads probe)
    return WebAssembly.validate(
      new Uint8Array([
        0,
        97,
        115,
        109,
        1,
        0,
        0,
        0,
        1,
        4,
        1,
        96,
        0,
        0,
        3,
        2,
        1,
        0,
        5,
        4,
        1,
        3,
        1,
        1,
        10,
        11,
        1,
        9,
        0,
        65,
        0,
        254,
        16,
        2,
        0,
        26,
        11,
      ]),
    );
  } catch {
    return false;
  }
}

let captured: WebAssembly.Memory | undefined;

let standInsGiven = 0;

/**
 * How many pthread workers the last start of the threaded build in Deno asked for and got as stand-ins
 * (none started: see `PthreadStandIn`); 0 where it got real ones (diagnostics, tests).
 */
export function wasmPthreadStandIns(): number {
  return standInsGiven;
}

/**
 * The class the emscripten glue gets as `Worker` while the threaded build starts with our pool owning the
 * threads: the glue pre-creates eight pthread workers and loads the build into each (in Deno a worker costs
 * about 60 ms to create, half a second in all), but XNNPACK is then left one thread, so no pthread ever
 * runs on them and they are terminated as soon as the backend is up (`tidyWorkers`). These stand-ins answer
 * the glue's `load` with `loaded` and hold nothing; anything else sent to one is a change in how the build
 * uses its threads, reported as an error rather than left to hang.
 */
class PthreadStandIn {
  onmessage?: (e: { data: unknown }) => void;
  onerror?: (e: unknown) => void;
  constructor() {
    standInsGiven++;
  }
  on(): this {
    return this;
  }
  postMessage(message: unknown): void {
    const cmd = (message as { cmd?: unknown } | null)?.cmd;
    if (cmd === "load") {
      queueMicrotask(() => this.onmessage?.({ data: { cmd: "loaded" } }));
      return;
    }
    const why = `tfjs-backend-wasm sent '${
      String(cmd)
    }' to a pthread worker while our kernel pool owns the threads`;
    queueMicrotask(() => this.onerror?.(new Error(why)));
  }
  terminate(): Promise<number> {
    return Promise.resolve(0);
  }
  unref(): void {}
  ref(): void {}
}

/**
 * Runs `start` (the wasm backend's factory) with the threaded build's memory captured, and in Deno with
 * `threads > 1` with the start-up fixes of the module doc.
 */
function withPatches<T>(threads: number, start: () => Promise<T>, standIns = false): Promise<T> {
  const restores: (() => void)[] = [];
  const os = isDeno() && threads > 1 ? nodeBuiltin<{ cpus: () => unknown[] }>("os") : undefined;
  const url = os ? nodeBuiltin<{ fileURLToPath(u: URL): string }>("url") : undefined;
  if (os && url) {
    const workerPath = url.fileURLToPath(new URL("./wasm_pthread_worker.js", import.meta.url));
    const g = globalThis as { Worker?: unknown };
    const savedWorker = g.Worker;
    const savedCreate = URL.createObjectURL;
    const savedCpus = os.cpus;
    // the emscripten glue asks locateFile for its worker script, which tfjs answers with a blob URL of type
    // application/javascript: answer with our worker's path instead
    URL.createObjectURL = (obj: Blob) =>
      obj instanceof Blob && obj.type === "application/javascript" ? workerPath : savedCreate(obj);
    // XNNPACK's pool size is capped at os.cpus().length / 2 (it assumes hyper-threading)
    os.cpus = () => {
      const real = savedCpus.call(os);
      const want = 2 * threads;
      return real.length >= want ? real : Array.from({ length: want }, (_, i) => real[i % real.length]);
    };
    // the glue sets `globalThis.Worker` to node:worker_threads' Worker and creates its pthread workers with
    // it: while our pool owns the threads, it gets stand-ins instead
    standInsGiven = 0;
    const saved = Object.getOwnPropertyDescriptor(globalThis, "Worker");
    if (standIns) {
      let assigned: unknown = savedWorker;
      Object.defineProperty(globalThis, "Worker", {
        configurable: true,
        get: () => (typeof assigned === "function" && assigned !== savedWorker ? PthreadStandIn : assigned),
        set: (v: unknown) => {
          assigned = v;
        },
      });
    }
    restores.push(() => {
      URL.createObjectURL = savedCreate;
      os.cpus = savedCpus;
      // the glue replaced it with node:worker_threads' Worker
      if (saved) Object.defineProperty(globalThis, "Worker", saved);
      else delete g.Worker;
    });
  }
  // the threaded build creates its (shared) memory in JavaScript and does not export it: keep it for the GEMM
  const wasmNs = WebAssembly as unknown as { Memory: typeof WebAssembly.Memory };
  const SavedMemory = wasmNs.Memory;
  wasmNs.Memory = new Proxy(SavedMemory, {
    construct(target, args) {
      const mem = new target(...(args as [WebAssembly.MemoryDescriptor]));
      if (mem.buffer instanceof SharedArrayBuffer) captured = mem;
      return mem;
    },
  });
  const restore = () => {
    wasmNs.Memory = SavedMemory;
    for (const r of restores) r();
  };
  let p: Promise<T>;
  try {
    p = start();
  } catch (e) {
    restore();
    throw e;
  }
  return p.finally(restore);
}

function tidyWorkers(backend: unknown): void {
  const module = (backend as WasmBackendInternals).wasm;
  if (module && captured) registerWasmMemory(module, captured);
  captured = undefined;
  const pt = module?.PThread;
  if (!pt) return;
  // the pool's threads are running; the idle pre-created workers only hold memory
  for (const w of pt.unusedWorkers.splice(0)) w.terminate?.();
  for (const w of pt.runningWorkers) w.unref?.();
}

/**
 * Makes the wasm backend compute with `threads` threads (capped at {@linkcode MAX_WASM_THREADS}): it
 * starts tfjs's multi-threaded SIMD build and our kernel pool on its shared heap (see the module doc). Call
 * it before the wasm backend first starts (`setBackend("wasm")`). `threads` of 1 (or less) keeps the
 * single-threaded build. Calling it again before the start changes the count. On a machine whose cores are
 * busy with other work, extra threads gain little (the calling thread does whatever the others do not get
 * to), so leave it at 1 for many parallel single-threaded jobs.
 *
 * @returns whether the threaded build will be tried (false: this runtime cannot run it, or threads <= 1)
 *
 * @example
 * ```ts ignore
 * import { enableWasmThreads } from "./wasm_threads.ts";
 * import { setBackend } from "../backend/backend.ts";
 * enableWasmThreads(navigator.hardwareConcurrency);
 * await setBackend("wasm");
 * ```
 */
export function enableWasmThreads(threads: number = navigator.hardwareConcurrency || 1): boolean {
  const n = Math.max(1, Math.min(MAX_WASM_THREADS, Math.floor(threads)));
  chosen = true;
  const engine = tf.engine() as unknown as { registry: Record<string, unknown> };
  if (engine.registry["wasm"]) return wasmThreadsCount() > 1 && n > 1; // already started
  requested = n > 1 && wasmThreadsSupported() ? n : 1;
  wrapWasmFactory();
  return requested > 1;
}

/**
 * Wraps the wasm backend's factory once (idempotent; `setBackend("wasm")` calls it): the threaded build's
 * memory is captured for our kernels whichever build tfjs picks, and with {@linkcode enableWasmThreads}'s
 * count above 1 the threaded build and our pool are started.
 */
export function wrapWasmFactory(): void {
  if (wrapped) return;
  const original = tf.findBackendFactory("wasm");
  if (!original) return; // tfjs-backend-wasm not loaded
  tf.removeBackend("wasm");
  tf.registerBackend("wasm", async () => {
    // in Deno tfjs never picks the threaded build by itself; in a browser it does on an isolated page
    const threadedByItself = !isDeno() && wasmThreadsSupported();
    if (requested > 1) {
      tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
      // with our GEMM, our own pool runs the heavy kernels and XNNPACK keeps one thread (two pools of
      // spinning threads would fight over the cores); without it, XNNPACK gets the threads
      const ours = gemmSupported();
      setThreadsCount(ours ? 1 : requested);
      try {
        const backend = await withPatches(requested, async () => await original(), ours);
        tidyWorkers(backend);
        if (ours) await startWasmPool(backend as unknown as WasmBackend, requested);
        lastError = undefined;
        return backend;
      } catch (e) {
        lastError = (e as Error)?.message ?? String(e);
        if (threadedByItself) throw e; // the same build would be picked again
      }
    }
    if (!threadedByItself) tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    // one thread: XNNPACK would otherwise start one per core on an isolated page
    setThreadsCount(1);
    const backend = await withPatches(1, async () => await original());
    tidyWorkers(backend);
    return backend;
  }, 2);
  wrapped = true;
}

/** Whether {@linkcode enableWasmThreads} was called (else `setBackend` picks the machine's core count). */
export function wasmThreadsChosen(): boolean {
  return chosen;
}

/** The default thread count of the wasm backend: every core the machine offers (`navigator.hardwareConcurrency`). */
export function defaultWasmThreads(): number {
  const n = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency;
  return Math.max(1, Math.min(MAX_WASM_THREADS, Math.floor(n || 1)));
}

/**
 * Threads the running wasm backend computes with (our kernel pool's, or XNNPACK's when our GEMM is not
 * available; 1: single-threaded), or 0 before the wasm backend started.
 */
export function wasmThreadsCount(): number {
  const engine = tf.engine() as unknown as { registry: Record<string, unknown> };
  const be = engine.registry["wasm"] as WasmBackendInternals | undefined;
  if (!be) return 0;
  const pool = wasmPoolThreads(be as unknown as WasmBackend);
  const n = be.wasm?.tfjs?.getThreadsCount?.();
  return Math.max(pool, typeof n === "number" && n > 0 ? n : 1);
}

/** @internal The thread count asked for by {@linkcode enableWasmThreads} (1: none). */
export function wasmThreadsRequested(): number {
  return Math.max(1, requested);
}

/** Why the threaded build did not start, if it was tried and failed (the backend then runs single-threaded). */
export function wasmThreadsError(): string | undefined {
  return lastError;
}
