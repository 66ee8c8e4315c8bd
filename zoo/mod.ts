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

import * as tfc from "@tensorflow/tfjs-core";

/**
 * The tfjs-core instance the models use: the `@tensorflow/tfjs-core` module itself (ops, `tidy`, `memory`,
 * `variableGrads`, optimizers...). Its tensor types are available as `tf.Tensor4D` etc. too.
 */
export const tf: typeof tfc = tfc;

/**
 * tfjs-core's tensor types under `tf`, so that `tf.Tensor4D` works in type positions as with
 * `import * as tf from "@tensorflow/tfjs-core"`. (A namespace re-export of the whole module would work too,
 * but `deno doc` would then document all of tfjs-core as part of this package.)
 */
export declare namespace tf {
  /** A tensor of any rank (tfjs `Tensor`). */
  export type Tensor<R extends tfc.Rank = tfc.Rank> = tfc.Tensor<R>;
  /** A rank-0 tensor. */
  export type Scalar = tfc.Scalar;
  /** A rank-1 tensor. */
  export type Tensor1D = tfc.Tensor1D;
  /** A rank-2 tensor. */
  export type Tensor2D = tfc.Tensor2D;
  /** A rank-3 tensor. */
  export type Tensor3D = tfc.Tensor3D;
  /** A rank-4 tensor (images: NCHW for the models). */
  export type Tensor4D = tfc.Tensor4D;
  /** A rank-5 tensor. */
  export type Tensor5D = tfc.Tensor5D;
  /** A mutable tensor (model parameters). */
  export type Variable<R extends tfc.Rank = tfc.Rank> = tfc.Variable<R>;
  /** Tensor ranks. */
  export type Rank = tfc.Rank;
  /** Element types: `"float32" | "int32" | "bool" | "complex64" | "string"`. */
  export type DataType = tfc.DataType;
  /** What tensor constructors accept. */
  export type TensorLike = tfc.TensorLike;
  /** A map of names to tensors. */
  export type NamedTensorMap = tfc.NamedTensorMap;
  /** Anything `tf.tidy` can return. */
  export type TensorContainer = tfc.TensorContainer;
  /** A tfjs optimizer (`tf.train.adam(...)` etc.). */
  export type Optimizer = tfc.Optimizer;
}

export {
  type BackendName,
  type BackendOptions,
  currentBackend,
  ensureBackend,
  locateWasmBinaries,
  setBackend,
  webGpuAdapter,
  type WebGpuAdapterSummary,
} from "../src/backend.ts";
export {
  type BlockType,
  configFromKwargs,
  DEFAULT_CONFIG,
  IMAGENET_MEAN,
  IMAGENET_STD,
  MODEL_CONFIGS,
  MODEL_NAMES,
  type ModelName,
  type PretrainedCfg,
  pretrainedCfgOf,
  resolveConfig,
  type T2tVitConfig,
  type T2tVitConfigInit,
  type TokensType,
} from "./configs.ts";
export {
  createModel,
  type CreateOptions,
  loadModel,
  MODEL_CLASSES,
  type ModelClass,
  readWeights,
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
} from "./models.ts";
export {
  type ForwardOptions,
  type LoadOptions,
  type LoadReport,
  type ModelInit,
  T2tVit,
} from "../src/model.ts";
export { resizePosEmbed, sinusoidTable } from "../src/layers/position.ts";
export type { DType, RawTensor, TensorMap } from "../converters/types.ts";
export { ParallelModel, type ParallelOptions } from "./parallel.ts";
