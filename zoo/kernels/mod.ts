/**
 * Speed: our own kernels for the T2T-ViT hot paths, used by the layers when they can run.
 *
 * - wasm: a relaxed-SIMD (fused multiply-add) GEMM replacing tfjs-backend-wasm's XNNPACK matrix products,
 *   fused GELU, LayerNorm, scaled softmax and multi-head attention in WebAssembly SIMD, and tfjs's
 *   multi-threaded build started in Deno ({@linkcode enableWasmThreads}).
 * - webgpu: fused WGSL kernels for the same operations, the soft split as a gather, and the token
 *   performer's attention in four dispatches.
 *
 * The layers use them by themselves (the fused operations in `fused.ts` are internal); this module controls
 * them: turn them off for comparisons ({@linkcode configureKernels}), start wasm multi-threaded
 * ({@linkcode enableWasmThreads}, before the wasm backend starts).
 *
 * @example
 * ```ts ignore
 * import { enableWasmThreads, kernelStatus } from "./mod.ts";
 * import { createModel, setBackend, tf } from "../mod.ts";
 * enableWasmThreads(navigator.hardwareConcurrency); // before the wasm backend starts
 * await setBackend("wasm");
 * const model = await createModel("t2t_vit_14");
 * const logits = tf.tidy(() => model.forward(tf.zeros([1, 3, 224, 224])));
 * console.log(kernelStatus()); // "on (wasm: relaxed-SIMD GEMM, fused ops)"
 * ```
 *
 * @module
 */

export {
  configureKernels,
  type KernelOptions,
  kernelsEnabled,
  kernelStatus,
  prepareKernels,
} from "./fused.ts";
export {
  enableWasmThreads,
  MAX_WASM_THREADS,
  wasmThreadsCount,
  wasmThreadsError,
  wasmThreadsSupported,
} from "./wasm_threads.ts";
export { resetWasmGemmCounters, wasmGemmCounters } from "./wasm_matmul.ts";
export { wasmPoolChunks, wasmPoolSpin } from "./wasm_runtime.ts";
export { POOL_WORKER_FILE, setPoolWorkerUrl } from "./wasm_pool.ts";
