/**
 * The one tensor representation that flows from converters to models: a dtype, a shape and contiguous
 * little-endian bytes in C order. Keys are PyTorch state_dict names, unchanged end to end.
 *
 * @module
 */

/** Element types, named as safetensors names them. */
export type DType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/**
 * A named tensor's contents: `data` holds `product(shape) * DTYPE_SIZE[dtype]` bytes, little-endian, C order.
 * `data` may be a view into a larger buffer (a mapped file); copy it if you need to keep it past that buffer.
 */
export interface RawTensor {
  /** Element type. */
  dtype: DType;
  /** Dimensions; `[]` is a scalar. */
  shape: number[];
  /** Contiguous little-endian bytes. */
  data: Uint8Array;
}

/** An ordered map of PyTorch key to tensor (insertion order is the checkpoint's order). */
export type TensorMap = Map<string, RawTensor>;

/** Anything with a shape, keyed by state_dict name: a TensorMap, selected checkpoint tensors, or plain shapes. */
export type ShapeMap = ReadonlyMap<string, { readonly shape: readonly number[] }>;
