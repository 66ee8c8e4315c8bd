/**
 * t2t-vit: the Tokens-to-Token Vision Transformer (T2T-ViT, Yuan et al., ICCV 2021) for Deno and the web.
 *
 * This entry holds what a user of the model needs: backends, the fourteen official variants, loading
 * converted weights, image classification and the errors. Everything else has its own
 * entry point:
 *
 * - `@t2t-vit/t2t-vit/converters`: the checkpoint readers (zip, legacy `torch.save`, the pickle VM, weight
 *   selection), the conversion plan and the safetensors reader and writer.
 * - `@t2t-vit/t2t-vit/zoo`: the whole zoo (configs, architecture detection and `describeWeights`, the
 *   converter's hook that records the architecture, position-embedding helpers).
 * - `@t2t-vit/t2t-vit/images`: decoding, Pillow-exact resizing, transforms, attention maps, PNG encoding.
 * - `@t2t-vit/t2t-vit/train`: losses, optimizers, schedules, the trainer, training checkpoints.
 * - `@t2t-vit/t2t-vit/data`: the CIFAR-10/100 readers and the official transfer-learning transforms.
 * - `@t2t-vit/t2t-vit/kernels`: our wasm and WebGPU kernels and their switches.
 * - `@t2t-vit/t2t-vit/convert`: the converter CLI as a function.
 *
 * @example
 * ```ts ignore
 * import { createModel, setBackend, tf } from "@t2t-vit/t2t-vit";
 * await setBackend("wasm");
 * const model = await createModel("t2t_vit_14", { weights: "t2t_vit_14.safetensors" });
 * const logits = tf.tidy(() => model.forward(tf.zeros([1, 3, 224, 224])));
 * ```
 *
 * @module
 */

// errors
export {
  CheckpointError,
  DatasetError,
  DownloadError,
  type ErrorContext,
  ImageError,
  ModelError,
  SafetensorsError,
  T2tVitError,
  UnsafePickleError,
  WasmBinariesError,
  WeightsError,
} from "./src/core/errors.ts";

// tensors
export { tf } from "./src/core/tf.ts";
export type { DType, RawTensor, TensorMap } from "./src/core/types.ts";
export type { WriteOptions } from "./src/core/atomic.ts";

// backends
export { type BackendName, type BackendOptions, currentBackend, setBackend } from "./zoo/backend/backend.ts";

// the zoo
export {
  type BlockType,
  configFromKwargs,
  MODEL_CONFIGS,
  MODEL_NAMES,
  type ModelName,
  type PretrainedCfg,
  type T2tVitConfig,
  type T2tVitConfigInit,
  type TokensType,
  VARIANTS,
} from "./zoo/configs.ts";
export {
  createModel,
  type CreateOptions,
  loadModel,
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
} from "./zoo/models.ts";
export {
  PRETRAINED_TAGS,
  PRETRAINED_WEIGHTS,
  type PretrainedTag,
  type PretrainedWeights,
  resolvePretrained,
} from "./zoo/pretrained.ts";
export {
  type DownloadProgress,
  ensurePretrained,
  type HubOptions,
  loadPretrainedBytes,
  pretrainedCacheDir,
} from "./zoo/hub.ts";
export { type ForwardOptions, type LoadOptions, type LoadReport, T2tVit } from "./zoo/model.ts";
export { ParallelModel, type ParallelOptions } from "./zoo/parallel.ts";

// ONNX: export, and ONNX Runtime as a second engine (the `export_onnx.ts` CLI)
export { exportOnnx, type OnnxExportOptions } from "./zoo/onnx_export.ts";
export { OnnxModel, type OnnxModelInfo, type OnnxModelOptions } from "./zoo/onnx_engine.ts";

// weights files (conversion: `./converters` or the `convert.ts` CLI)
export { readSafetensors, type Safetensors, writeSafetensors } from "./converters/safetensors.ts";

// classification
export { type DecodedImage, readImage } from "./src/images/decode.ts";
export type { RgbImage } from "./src/images/image.ts";
export type { Preprocess } from "./src/images/transforms.ts";
export type { ResampleFilter } from "./src/images/resize.ts";
export { classifyImages, type ClassifyOptions, type Prediction } from "./src/images/classify.ts";
export { IMAGENET_CLASSES } from "./src/labels.ts";
