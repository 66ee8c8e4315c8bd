/**
 * The tfjs-core instance every part of this package uses, and tfjs's tensor types under the same name.
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
  export type Tensor = tfc.Tensor;
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
  export type Variable = tfc.Variable;
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
  /** A kernel gradient registration (`tf.registerGradient`). */
  export type GradConfig = tfc.GradConfig;
  /** What a custom gradient's forward function receives to keep tensors for its backward pass. */
  export type GradSaveFunc = tfc.GradSaveFunc;
  /** A tfjs optimizer (`tf.train.adam(...)` etc.). */
  export type Optimizer = tfc.Optimizer;
}
