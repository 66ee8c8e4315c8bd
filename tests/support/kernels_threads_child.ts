/**
 * Child process of kernels_wasm_test.ts: starts the wasm backend multi-threaded (2 threads: tfjs's threaded
 * build for a shared heap, our kernel pool on it), runs t2t_vit_7 against the official outputs with our
 * kernels, checks that both threads of the pool run and that the build's pre-created pthread workers were
 * stand-ins, and prints one JSON line.
 */
import {
  enableWasmThreads,
  prepareKernels,
  wasmGemmCounters,
  wasmThreadsCount,
} from "../../zoo/kernels/mod.ts";
import { setBackend, tf } from "../../zoo/mod.ts";
import { wasmPoolBarrier, wasmPoolChunks, wasmPoolSpin } from "../../zoo/kernels/wasm_runtime.ts";
import { wasmPthreadStandIns } from "../../zoo/kernels/wasm_threads.ts";
import { checkForwardParity } from "./zoo.ts";

const worker = globalThis.Worker;
const workerProperty = Object.getOwnPropertyDescriptor(globalThis, "Worker");
enableWasmThreads(2);
const t0 = performance.now();
await setBackend("wasm");
const startMs = performance.now() - t0;
// the start-up exercise is one chunk per thread, each waiting for all the others to take theirs
const startChunks = wasmPoolChunks();
prepareKernels();
const spinDefault = wasmPoolSpin();
const { errors } = await checkForwardParity("t2t_vit_7", "wasm", 5e-5, { batch: 1 });
// threads that block at once between tasks (no polling) compute the same thing
wasmPoolSpin(0);
const { errors: errorsNoSpin } = await checkForwardParity("t2t_vit_7", "wasm", 5e-5, { batch: 1 });
const spinAfter = wasmPoolSpin();
wasmPoolSpin(spinDefault);
const heap = (tf.backend() as unknown as { wasm: { HEAPF32: Float32Array } }).wasm.HEAPF32;
console.log(JSON.stringify({
  threads: wasmThreadsCount(),
  shared: heap.buffer instanceof SharedArrayBuffer,
  gemm: wasmGemmCounters().gemm,
  maxError: Math.max(...Object.values(errors), ...Object.values(errorsNoSpin)),
  spinDefault,
  spinAfter,
  workerRestored: globalThis.Worker === worker &&
    JSON.stringify(Object.getOwnPropertyDescriptor(globalThis, "Worker")) === JSON.stringify(workerProperty),
  standIns: wasmPthreadStandIns(),
  startMs,
  allThreadsRun: wasmPoolBarrier(),
  chunks: wasmPoolChunks(),
  startChunks,
}));
