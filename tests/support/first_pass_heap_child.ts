/**
 * Child process of kernels_wasm_test.ts: starts the wasm backend on 2 threads, builds `MODEL` at `IMG` px
 * (the first model in the process, so no earlier one has left a larger heap behind), runs one image through
 * it and prints one JSON line: the heap's size after loading and how much the first forward pass grew it.
 *
 *   deno run -A tests/support/first_pass_heap_child.ts MODEL IMG
 */
import { enableWasmThreads, prepareKernels } from "../../zoo/kernels/mod.ts";
import { createModel, type ModelName, setBackend, tf } from "../../zoo/mod.ts";

const [name, img] = Deno.args;
const imgSize = Number(img);
enableWasmThreads(2);
await setBackend("wasm");
prepareKernels();
const heapBytes = () =>
  (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength;
const model = await createModel(name as ModelName, { imgSize });
const afterLoad = heapBytes();
const x = tf.zeros([1, 3, imgSize, imgSize]) as tf.Tensor4D;
const y = model.forward(x);
await y.data();
const grewBy = heapBytes() - afterLoad;
tf.dispose([x, y]);
const weightBytes = model.parameterCount() * 4;
model.dispose();
console.log(JSON.stringify({ afterLoad, grewBy, weightBytes }));
