/**
 * A pthread of tfjs-backend-wasm's multi-threaded SIMD build, as a Deno (node:worker_threads) worker.
 *
 * Emscripten's own worker script (`wasmWorkerContents` in tfjs-backend-wasm) cannot run in Deno: it is handed
 * to `new Worker()` as a blob URL, which Deno's `node:worker_threads` rejects, and it loads the main script
 * with `importScripts`, which Deno lacks. This module speaks the same protocol with the emscripten runtime
 * of the main thread (`load`, `run`, `cancel`, `processProxyingQueue`), loading the same build's JavaScript
 * glue through the npm package instead. It is started by `wasm_threads.ts`; it is not meant to be imported.
 *
 * @module
 */

import { parentPort } from "node:worker_threads";
// the same package as the main thread's tfjs-backend-wasm: glue and binary must match
import factory from "@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js";

let Module = {};
let initializedJS = false;
const pendingQueues = [];

function post(msg) {
  parentPort.postMessage(msg);
}

// the glue calls this once its runtime is ready in this thread
globalThis.startWorker = (instance) => {
  Module = instance;
  post({ cmd: "loaded" });
};

function load(data) {
  Module.wasmModule = data.wasmModule;
  for (const handler of data.handlers) {
    Module[handler] = (...args) => post({ cmd: "callHandler", handler, args });
  }
  Module.wasmMemory = data.wasmMemory;
  Module.buffer = data.wasmMemory.buffer;
  Module.ENVIRONMENT_IS_PTHREAD = true;
  Module.instantiateWasm = (info, receiveInstance) => {
    const instance = new WebAssembly.Instance(Module.wasmModule, info);
    receiveInstance(instance);
    Module.wasmModule = null;
    return instance.exports;
  };
  factory(Module);
}

function run(data) {
  Module.__emscripten_thread_init(data.pthread_ptr, 0, 0, 1);
  Module.establishStackSpace();
  Module.PThread.receiveObjectTransfer(data);
  Module.PThread.threadInitTLS();
  if (!initializedJS) {
    for (const queue of pendingQueues) Module.executeNotifiedProxyingQueue(queue);
    pendingQueues.length = 0;
    initializedJS = true;
  }
  try {
    Module.invokeEntryPoint(data.start_routine, data.arg);
  } catch (ex) {
    if (ex === "unwind") return;
    if (ex instanceof Module.ExitStatus) {
      if (!Module.keepRuntimeAlive()) Module.__emscripten_thread_exit(ex.status);
      return;
    }
    throw ex;
  }
}

parentPort.on("message", (data) => {
  try {
    if (data.cmd === "load") load(data);
    else if (data.cmd === "run") run(data);
    else if (data.cmd === "cancel") {
      if (Module._pthread_self()) Module.__emscripten_thread_exit(-1);
    } else if (data.cmd === "processProxyingQueue") {
      if (initializedJS) Module.executeNotifiedProxyingQueue(data.queue);
      else pendingQueues.push(data.queue);
    }
  } catch (ex) {
    if (Module.__emscripten_thread_crashed) Module.__emscripten_thread_crashed();
    throw ex;
  }
});
