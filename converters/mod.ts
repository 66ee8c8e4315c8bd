/**
 * Converters: read PyTorch checkpoints (zip and legacy `torch.save` files) without executing pickle code,
 * pick the weights, recognise the T2T-ViT architecture, and write safetensors.
 *
 * @example
 * ```ts ignore
 * import { convertCheckpoint } from "./mod.ts";
 * const r = await convertCheckpoint("81.5_T2T_ViT_14.pth.tar");
 * console.log(r.output, r.architecture.name, r.tensors.length);
 * ```
 *
 * @module
 */

export * from "./types.ts";
export * from "./safetensors.ts";
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
  DEFAULT_WEIGHT_KEYS,
  describeValue,
  type DroppedEntry,
  type SelectOptions,
  selectWeights,
  type WeightSelection,
} from "./weights.ts";
export {
  type ArchFamily,
  type ArchitectureInfo,
  detectArchitecture,
  type DetectedTokensType,
  type DetectOptions,
  KNOWN_ARCHITECTURES,
  type KnownArchitecture,
  type ShapeMap,
} from "./arch.ts";
export {
  castFloatInto,
  f16BitsToF32,
  f32BitsToBf16,
  f32BitsToF16,
  type FloatDType,
  isFloatDType,
} from "./dtype.ts";
export {
  bytesEqual,
  configKwargs,
  type ConversionPlan,
  convertCheckpoint,
  type ConvertFileOptions,
  type ConvertOptions,
  type ConvertProgress,
  type ConvertResult,
  convertToSafetensorsBytes,
  defaultOutputPath,
  DTYPE_OPTIONS,
  type DTypeOption,
  materialize,
  MAX_OUTPUT_FACTOR,
  MAX_OUTPUT_SLACK,
  planConversion,
  type PlannedTensor,
  verifyOutput,
} from "./convert.ts";
