/**
 * The T2T-ViT model zoo on TensorFlow.js (tfjs-core with the webgpu, wasm and cpu backends): every official
 * variant with PyTorch's parameter names, strict weight loading and the official numerics.
 *
 * @example
 * ```ts ignore
 * import { createModel, setBackend, tf } from "./mod.ts";
 * await setBackend("wasm");
 * const model = await createModel("t2t_vit_7"); // official random init; pass { weights } for real ones
 * const logits = model.forward(tf.zeros([1, 3, 224, 224]) as tf.Tensor4D); // (1, 1000)
 * logits.dispose();
 * model.dispose();
 * ```
 *
 * @module
 */

export { tf } from "../src/core/tf.ts";

export {
  type ArchitectureInfo,
  configKwargs,
  describeWeights,
  detectArchitecture,
  type DetectedTokensType,
  type DetectOptions,
  type ShapeMap,
} from "./arch.ts";
export {
  type BackendName,
  type BackendOptions,
  currentBackend,
  ensureBackend,
  locateWasmBinaries,
  setBackend,
  webGpuAdapter,
  type WebGpuAdapterSummary,
} from "./backend/backend.ts";
export {
  installGradients,
  installKernels,
  installTrainingKernels,
  REGISTRY_PATCHES,
  type RegistryPatch,
} from "./backend/registry.ts";
export { BACKEND_STATE, type BackendState } from "./kernels/state.ts";
export {
  type BlockType,
  CONFIG_LIMITS,
  CONFIG_PARAMETER_SLACK,
  configForWeights,
  configFromKwargs,
  configFromMetadata,
  DEFAULT_CONFIG,
  IMAGENET_MEAN,
  IMAGENET_STD,
  isModelName,
  minParameterCount,
  MODEL_CONFIGS,
  MODEL_NAMES,
  type ModelName,
  type PretrainedCfg,
  pretrainedCfgOf,
  resolveConfig,
  type T2tVitConfig,
  type T2tVitConfigInit,
  type TokensType,
  VARIANTS,
} from "./configs.ts";
export {
  createModel,
  type CreateOptions,
  loadModel,
  MODEL_CLASSES,
  type ModelClass,
  T2tVit10,
  T2tVit12,
  T2tVit14,
  T2tVit14Resnext,
  T2tVit14Se,
  T2tVit14Wide,
  T2tVit16Ghost,
  T2tVit19,
  T2tVit24,
  T2tVit7,
  T2tVitDense,
  T2tVitT14,
  T2tVitT19,
  T2tVitT24,
  tensorElements,
} from "./models.ts";
export {
  checkpointFilter,
  type FilteredWeights,
  type FilterTarget,
  PATCH_STRIDE,
  posEmbedGrid,
  readWeights,
  resizePosEmbedTensor,
  type StateDict,
  type WeightsFile,
} from "./loader.ts";
export { type ForwardOptions, type LoadOptions, type LoadReport, type ModelInit, T2tVit } from "./model.ts";
export { resizePosEmbed, sinusoidTable } from "./layers/position.ts";
export { ARCHITECTURE_KEY, architectureOf } from "./metadata.ts";
export type { DType, RawTensor, TensorMap } from "../src/core/types.ts";
export {
  DEFAULT_WEIGHTS_URL,
  PRETRAINED_TAGS,
  PRETRAINED_WEIGHTS,
  type PretrainedDataset,
  pretrainedFor,
  type PretrainedTag,
  type PretrainedWeights,
  resolvePretrained,
  weightsUrl,
} from "./pretrained.ts";
export {
  type DownloadProgress,
  ensurePretrained,
  formatProgress,
  type HubOptions,
  loadPretrainedBytes,
  offlineFromEnv,
  type PretrainedBytes,
  pretrainedCacheDir,
  type PretrainedFiles,
} from "./hub.ts";
export { ParallelModel, type ParallelOptions } from "./parallel.ts";
export { exportOnnx, ONNX_OPSET_RANGE, type OnnxExportOptions } from "./onnx_export.ts";
export {
  loadOnnxRuntime,
  ONNX_RUNTIME_VERSION,
  OnnxModel,
  type OnnxModelInfo,
  type OnnxModelOptions,
  type OnnxRuntimeKind,
  type OnnxRuntimeModule,
  type OnnxRuntimeSession,
  type OnnxRuntimeTensor,
} from "./onnx_engine.ts";
