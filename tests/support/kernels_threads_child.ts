/**
 * Child process of kernels_wasm_test.ts: starts the wasm backend multi-threaded (2 threads: tfjs's threaded
 * build for a shared heap, our kernel pool on it), runs t2t_vit_7 against the official outputs with our
 * kernels, checks that both threads of the pool run, checks that a freshly built model's first forward pass
 * of one image finds its heap already grown, and prints one JSON line.
 */
import {
  enableWasmThreads,
  prepareKernels,
  wasmGemmCounters,
  wasmThreadsCount,
} from "../../zoo/kernels/mod.ts";
import { createModel, type ModelName, setBackend, tf } from "../../zoo/mod.ts";
import { wasmPoolBarrier, wasmPoolChunks, wasmPoolSpin } from "../../zoo/kernels/wasm_runtime.ts";
import { checkForwardParity } from "./zoo.ts";

const worker = globalThis.Worker;
enableWasmThreads(2);
await setBackend("wasm");
prepareKernels();
// the heap a first forward pass of one image finds: grown at load (growing a shared heap mid-pass is slow).
// First in this process, so that no earlier model left a larger heap behind.
const heapGrowth: Record<string, number> = {};
for (const [name, imgSize] of [["t2t_vit_7", 224]] as const) {
  const model = await createModel(name as ModelName, { imgSize });
  const bytes = () =>
    (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength;
  const before = bytes();
  const x = tf.zeros([1, 3, imgSize, imgSize]) as tf.Tensor4D;
  const y = model.forward(x);
  await y.data();
  heapGrowth[name] = bytes() - before;
  tf.dispose([x, y]);
  model.dispose();
}
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
  workerRestored: globalThis.Worker === worker,
  allThreadsRun: wasmPoolBarrier(),
  chunks: wasmPoolChunks(),
  heapGrowth,
}));
