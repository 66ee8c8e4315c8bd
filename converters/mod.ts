/**
 * Converters: read PyTorch checkpoints (zip and legacy `torch.save` files) without executing pickle code,
 * pick the weights and write safetensors, and write safetensors weights back as `torch.save` files. File
 * formats only: recognising a T2T-ViT is the zoo's `describeWeights`, passed in as the `describe` option.
 *
 * @example
 * ```ts ignore
 * import { convertCheckpoint } from "./mod.ts";
 * import { describeWeights } from "../zoo/mod.ts";
 * const r = await convertCheckpoint("81.5_T2T_ViT_14.pth.tar", { describe: describeWeights });
 * console.log(r.output, r.architecture.name, r.tensors.length);
 * ```
 *
 * @module
 */

export * from "../src/core/types.ts";
export * from "./safetensors.ts";
export { writeFileAtomic, type WriteOptions } from "../src/core/atomic.ts";
export { type ByteSource, FileSource, MemorySource } from "./source.ts";
export {
  INFLATE_FACTOR,
  INFLATE_SLACK,
  isZip,
  ZipArchive,
  type ZipEntry,
  type ZipReadOptions,
} from "./zip.ts";
export {
  type CallContext,
  COPY_COST,
  type GlobalBehaviour,
  isTuple,
  keyText,
  MAX_TEXT_BYTES,
  NeedMoreData,
  PyDict,
  PyGlobal,
  PyObject,
  pyRepr,
  pyTypeName,
  type PyValue,
  unpickle,
  type UnpickleOptions,
  type UnpickleResult,
  WORK_PER_BYTE,
  WORK_SLACK,
  workBudget,
} from "./pickle.ts";
export {
  ALLOWED_GLOBALS,
  MAX_EXPANDED_VIEW_BYTES,
  resolveTorchGlobal,
  STORAGE_CLASSES,
  type StorageBacking,
  storageClassDType,
  swapBytes,
  TORCH_DTYPES,
  type TorchDType,
  TorchStorage,
  TorchTensor,
} from "./torch_globals.ts";
export {
  Checkpoint,
  type CheckpointFormat,
  LEGACY_MAGIC,
  LEGACY_PROTOCOL,
  openCheckpoint,
  parseCheckpoint,
  readCheckpoint,
  sniffFormat,
  walkTensors,
} from "./checkpoint.ts";
export {
  checkWeightBytes,
  DEFAULT_WEIGHT_KEYS,
  describeValue,
  type DroppedEntry,
  MAX_OUTPUT_FACTOR,
  MAX_OUTPUT_SLACK,
  MODULE_PREFIX,
  type SelectOptions,
  selectWeights,
  stripModulePrefix,
  type WeightSelection,
} from "./weights.ts";
export {
  castFloatInto,
  f16BitsToF32,
  f32BitsToBf16,
  f32BitsToF16,
  type FloatDType,
  isFloatDType,
} from "../src/core/dtype.ts";
export {
  bytesEqual,
  type ConversionPlan,
  convertCheckpoint,
  type ConvertFileOptions,
  type ConvertOptions,
  type ConvertProgress,
  type ConvertResult,
  convertToSafetensorsBytes,
  defaultOutputPath,
  defaultTorchOutputPath,
  type Describe,
  DTYPE_OPTIONS,
  type DTypeOption,
  type ExportOptions,
  type ExportResult,
  exportTorchCheckpoint,
  materialize,
  planConversion,
  type PlannedTensor,
  verifyOutput,
  verifyTorchOutput,
} from "./convert.ts";
export {
  type PickledTensor,
  serializeTorchCheckpoint,
  STORAGE_CLASS_OF,
  TORCH_RECORD_ALIGNMENT,
  torchArchiveName,
  type TorchSaveOptions,
  torchStateDictPickle,
  TorchZipWriter,
} from "./torch_writer.ts";
export {
  type AttrValue,
  type DecodedAttribute,
  type DecodedModel,
  type DecodedNode,
  type DecodedTensor,
  decodeOnnxModel,
  encodeOnnxModel,
  type EncodeOptions,
  irVersionForOpset,
  type NodeOptions,
  ONNX_DTYPES,
  type OnnxDType,
  onnxDTypeName,
  OnnxError,
  OnnxGraphBuilder,
  type OnnxNode,
  type OnnxTensor,
  readOnnxMetadata,
  type ValueInfo,
} from "./onnx.ts";
