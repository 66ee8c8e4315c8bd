/**
 * A worker of the wasm kernel pool (`wasm_pool.ts`): instantiates the GEMM and the fused kernels on the
 * shared heap, then waits on the control block for chunks to run. Not meant to be imported. In Deno it runs
 * as a `node:worker_threads` worker (its data in `workerData`); in a browser as a module web worker (bundled
 * as `t2t-vit-pool-worker.js`), whose first message carries the same data.
 *
 * @module
 */

import { nodeBuiltin } from "../../src/core/platform.ts";
import { instantiateGemm } from "./wasm_gemm.ts";
import { instantiateOps } from "./wasm_ops.ts";
import {
  BUSY,
  CLOSED,
  DONE,
  type Kernels,
  NCHUNK,
  NEXT,
  runChunkSafely,
  SEQ,
  spinThenWait,
  warmKernels,
} from "./wasm_tasks.ts";

interface Start {
  memory: WebAssembly.Memory;
  ctlBuffer: SharedArrayBuffer;
  id: number;
}

const wt = nodeBuiltin<{ parentPort: { postMessage(m: unknown): void } | null; workerData: unknown }>(
  "worker_threads",
);
if (wt?.parentPort) {
  const port = wt.parentPort;
  serve(wt.workerData as Start, (m) => port.postMessage(m));
} else {
  const scope = globalThis as unknown as {
    onmessage: ((ev: MessageEvent<Start>) => void) | null;
    postMessage(m: unknown): void;
  };
  scope.onmessage = (ev) => {
    scope.onmessage = null;
    serve(ev.data, (m) => scope.postMessage(m));
  };
}

function serve({ memory, ctlBuffer, id }: Start, post: (m: unknown) => void): void {
  const kernels: Kernels = { gemm: instantiateGemm(memory, true), ops: instantiateOps(memory, true), memory };
  const ctl = new Uint32Array(ctlBuffer);
  const ctl32 = new Int32Array(ctlBuffer);
  const ctlF = new Float32Array(ctlBuffer);
  warmKernels(kernels);
  // the task sequence number before announcing readiness: the pool may start a task (the start-up exercise,
  // which waits for every thread) as soon as it hears from us, and a worker that read the number after that
  // would wait for the next task instead
  let last = Atomics.load(ctl32, SEQ);
  post("ready");
  while (true) {
    spinThenWait(ctl32, SEQ, last, Infinity, true);
    const seq = Atomics.load(ctl32, SEQ);
    last = seq;
    // announce, then check the task is still open (the caller closes it once all chunks are done, and waits
    // for announced workers before it starts another task)
    Atomics.store(ctl32, BUSY + id, seq);
    if (Atomics.load(ctl32, CLOSED) < seq) {
      const n = Atomics.load(ctl32, NCHUNK);
      for (let i = Atomics.add(ctl32, NEXT, 1); i < n; i = Atomics.add(ctl32, NEXT, 1)) {
        runChunkSafely(kernels, ctl, ctl32, ctlF, i, id + 1, `the kernel pool's worker ${id + 1}`);
        Atomics.add(ctl32, DONE, 1);
        Atomics.notify(ctl32, DONE);
      }
    }
    Atomics.store(ctl32, BUSY + id, 0);
    Atomics.notify(ctl32, BUSY + id);
  }
}
