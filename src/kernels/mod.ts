/**
 * Speed: our own kernels for the T2T-ViT hot paths, used by the layers when they can run.
 *
 * - wasm: a relaxed-SIMD (fused multiply-add) GEMM replacing tfjs-backend-wasm's XNNPACK matrix products,
 *   fused GELU, LayerNorm, scaled softmax and multi-head attention in WebAssembly SIMD, and tfjs's
 *   multi-threaded build started in Deno ({@linkcode enableWasmThreads}).
 * - webgpu: fused WGSL kernels for the same operations.
 *
 * @module
 */

export {
  configureKernels,
  fusedAttention,
  fusedGelu,
  fusedLayerNorm,
  fusedSoftmax,
  fusedUnfold,
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
