/**
 * The tensor records a PyTorch pickle rebuilds, and the allowlist of globals the safe unpickler accepts,
 * modelled on `torch.load(weights_only=True)`: `collections.OrderedDict`, the `torch._utils._rebuild_*`
 * functions, the typed `torch.*Storage` classes, `torch.Size`, torch dtypes, `argparse.Namespace` (as inert
 * data), the numpy scalar/dtype/array globals training scripts leave in `metric` fields, `_codecs.encode`
 * (protocol 2's spelling of bytes), and a few inert builtins. Each entry is our own code building inert data;
 * nothing from the pickle is ever called.
 *
 * @module
 */

import { CheckpointError } from "../src/core/errors.ts";
import type { DType, RawTensor } from "../src/core/types.ts";
import {
  type CallContext,
  COPY_COST,
  type GlobalBehaviour,
  isTuple,
  keyText,
  PyDict,
  PyGlobal,
  PyObject,
  pyRepr,
  pyTypeName,
  type PyValue,
} from "./pickle.ts";

/** A torch dtype: its name, its safetensors dtype (null when safetensors has none), and element size. */
export interface TorchDType {
  /** Torch's name (`float32`, `bfloat16`, `complex64`...). */
  readonly name: string;
  /** The safetensors dtype, or null for dtypes this project cannot write (complex, quantized). */
  readonly dtype: DType | null;
  /** Bytes per element. */
  readonly itemSize: number;
}

function td(name: string, dtype: DType | null, itemSize: number): TorchDType {
  return { name, dtype, itemSize };
}

const DT = {
  float32: td("float32", "F32", 4),
  float64: td("float64", "F64", 8),
  float16: td("float16", "F16", 2),
  bfloat16: td("bfloat16", "BF16", 2),
  int64: td("int64", "I64", 8),
  int32: td("int32", "I32", 4),
  int16: td("int16", "I16", 2),
  int8: td("int8", "I8", 1),
  uint8: td("uint8", "U8", 1),
  bool: td("bool", "BOOL", 1),
  complex64: td("complex64", null, 8),
  complex128: td("complex128", null, 16),
  complex32: td("complex32", null, 4),
  qint8: td("qint8", null, 1),
  quint8: td("quint8", null, 1),
  qint32: td("qint32", null, 4),
  quint4x2: td("quint4x2", null, 1),
  quint2x4: td("quint2x4", null, 1),
} as const;

/** Typed storage classes (`torch.FloatStorage`...) by class name. */
export const STORAGE_CLASSES: Readonly<Record<string, TorchDType>> = {
  FloatStorage: DT.float32,
  DoubleStorage: DT.float64,
  HalfStorage: DT.float16,
  BFloat16Storage: DT.bfloat16,
  LongStorage: DT.int64,
  IntStorage: DT.int32,
  ShortStorage: DT.int16,
  CharStorage: DT.int8,
  ByteStorage: DT.uint8,
  BoolStorage: DT.bool,
  ComplexFloatStorage: DT.complex64,
  ComplexDoubleStorage: DT.complex128,
  QInt8Storage: DT.qint8,
  QUInt8Storage: DT.quint8,
  QInt32Storage: DT.qint32,
  QUInt4x2Storage: DT.quint4x2,
  QUInt2x4Storage: DT.quint2x4,
  UntypedStorage: DT.uint8,
};

/** Torch dtype globals (`torch.float32`, `torch.half`...) by attribute name. */
export const TORCH_DTYPES: Readonly<Record<string, TorchDType>> = {
  float32: DT.float32,
  float: DT.float32,
  float64: DT.float64,
  double: DT.float64,
  float16: DT.float16,
  half: DT.float16,
  bfloat16: DT.bfloat16,
  int64: DT.int64,
  long: DT.int64,
  int32: DT.int32,
  int: DT.int32,
  int16: DT.int16,
  short: DT.int16,
  int8: DT.int8,
  uint8: DT.uint8,
  bool: DT.bool,
  complex64: DT.complex64,
  cfloat: DT.complex64,
  complex128: DT.complex128,
  cdouble: DT.complex128,
  complex32: DT.complex32,
  chalf: DT.complex32,
};

/** Where a storage's bytes live; implemented by the zip and legacy loaders. */
export interface StorageBacking {
  /** Bytes `[start, start + length)` of the storage, little-endian. Bounds were checked by the caller. */
  bytes(start: number, length: number): Uint8Array;
  /**
   * True when returned bytes are views of memory that must not be modified. Readers never modify what a
   * backing returns either way ({@link TorchTensor.read} swaps big-endian data into a copy).
   */
  readonly shared: boolean;
}

/**
 * A torch storage: a flat run of elements that tensors view. Its bytes are read only when a tensor that uses
 * it is materialised.
 */
export class TorchStorage {
  /** The storage key (the zip record `data/<key>`, or the legacy root key). */
  readonly key: string;
  /** Element type of the storage class. */
  readonly dtype: TorchDType;
  /** Device it was saved from (`cpu`, `cuda:0`); the bytes are the same either way. */
  readonly location: string;
  /** Size in bytes. */
  readonly nbytes: number;
  /** Stored big-endian (a zip `byteorder` record saying `big`): bytes are swapped when read. */
  readonly bigEndian: boolean;
  /** @internal where the bytes come from; set by the loader (legacy storages get it after the pickle). */
  backing: StorageBacking | null;

  /** Records a storage; `backing` may be attached later. */
  constructor(
    key: string,
    dtype: TorchDType,
    location: string,
    nbytes: number,
    backing: StorageBacking | null,
    bigEndian = false,
  ) {
    this.key = key;
    this.dtype = dtype;
    this.location = location;
    this.nbytes = nbytes;
    this.backing = backing;
    this.bigEndian = bigEndian;
  }
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/**
 * The most bytes a view may materialise when it has more elements than its storage (strides that repeat
 * elements, as `expand` makes): 16 MiB. Anything larger is memory the file does not back.
 */
export const MAX_EXPANDED_VIEW_BYTES = 16 << 20;

/**
 * A tensor as a checkpoint describes it: dtype, shape, stride and offset into a {@link TorchStorage}. Nothing
 * is read until {@link TorchTensor.read} materialises it as contiguous little-endian bytes.
 */
export class TorchTensor {
  /** The storage it views. */
  readonly storage: TorchStorage;
  /** Element type. */
  readonly torchDtype: TorchDType;
  /** Dimensions. */
  readonly shape: number[];
  /** Strides in elements. */
  readonly stride: number[];
  /** Offset into the storage in elements. */
  readonly storageOffset: number;
  /** Whether it was a trainable parameter. */
  requiresGrad: boolean;
  /** Element count (validated not to exceed 2^53). */
  readonly numel: number;
  /** Attributes from a BUILD state (kept, never acted on). */
  state: PyValue = null;

  /**
   * Validates the view: integral non-negative sizes, strides and offset, an element count below 2^53, and
   * (for non-empty tensors) a last element inside the storage.
   *
   * @throws {CheckpointError} naming the file and what is wrong
   */
  constructor(
    storage: TorchStorage,
    dtype: TorchDType,
    storageOffset: number,
    shape: number[],
    stride: number[],
    requiresGrad: boolean,
    file: string,
  ) {
    const bad = (msg: string): never => {
      throw new CheckpointError(`tensor on storage '${storage.key}': ${msg}`, { file });
    };
    if (shape.length !== stride.length) bad(`shape [${shape}] and stride [${stride}] differ in length`);
    if (!Number.isSafeInteger(storageOffset) || storageOffset < 0) bad(`bad storage offset ${storageOffset}`);
    let numel = 1;
    for (let i = 0; i < shape.length; i++) {
      if (!Number.isSafeInteger(shape[i]) || shape[i] < 0) bad(`bad size ${shape[i]} in shape [${shape}]`);
      if (!Number.isSafeInteger(stride[i]) || stride[i] < 0) bad(`bad stride ${stride[i]} in [${stride}]`);
      numel *= shape[i];
      if (numel > MAX_SAFE) bad(`shape [${shape}] has more than 2^53 elements`);
    }
    if (numel * dtype.itemSize > MAX_SAFE) bad(`shape [${shape}] needs more than 2^53 bytes`);
    if (numel > 0) {
      let last = storageOffset;
      for (let i = 0; i < shape.length; i++) last += (shape[i] - 1) * stride[i];
      const capacity = Math.floor(storage.nbytes / dtype.itemSize);
      if (!(last < capacity)) {
        bad(
          `view (offset ${storageOffset}, shape [${shape}], stride [${stride}]) reaches element ${last} ` +
            `but the storage holds ${capacity} ${dtype.name} elements`,
        );
      }
      // More elements than the storage holds means strides that repeat elements (an `expand`ed tensor):
      // materialising it allocates memory the file does not back, so only small expansions are accepted.
      if (numel > capacity && numel * dtype.itemSize > MAX_EXPANDED_VIEW_BYTES) {
        bad(
          `view (shape [${shape}], stride [${stride}]) repeats the elements of its ${capacity}-element storage ` +
            `and would materialise ${numel * dtype.itemSize} bytes; expanded views are refused beyond ` +
            `${MAX_EXPANDED_VIEW_BYTES} bytes`,
        );
      }
    }
    this.storage = storage;
    this.torchDtype = dtype;
    this.storageOffset = storageOffset;
    this.shape = shape;
    this.stride = stride;
    this.requiresGrad = requiresGrad;
    this.numel = numel;
  }

  /** The safetensors dtype, or null when it has none (complex, quantized). */
  get dtype(): DType | null {
    return this.torchDtype.dtype;
  }

  /** Bytes once contiguous. */
  get nbytes(): number {
    return this.numel * this.torchDtype.itemSize;
  }

  /** True when the view is C-contiguous (size-1 dimensions ignored), so its bytes are one run. */
  get isContiguous(): boolean {
    let expected = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.stride[i] !== expected) return false;
      expected *= this.shape[i];
    }
    return true;
  }

  /** Keeps a BUILD state (as torch keeps Python attributes on a tensor); never interpreted. */
  setState(state: PyValue): void {
    this.state = state;
  }

  /**
   * Materialises the tensor as contiguous little-endian bytes in C order. A contiguous tensor of an
   * in-memory checkpoint is a view (no copy); strided views are gathered; big-endian data is swapped.
   *
   * @param file name for error messages
   * @throws {CheckpointError} when its dtype cannot be written or its storage is missing
   */
  read(file?: string): RawTensor {
    const dtype = this.torchDtype.dtype;
    const where = file ?? "<checkpoint>";
    if (!dtype) {
      throw new CheckpointError(
        `tensor dtype ${this.torchDtype.name} cannot be written to safetensors`,
        { file: where, key: this.storage.key },
      );
    }
    const backing = this.storage.backing;
    if (!backing) {
      throw new CheckpointError(`storage '${this.storage.key}' has no data`, {
        file: where,
        key: this.storage.key,
      });
    }
    const is = this.torchDtype.itemSize;
    if (this.numel === 0) return { dtype, shape: [...this.shape], data: new Uint8Array(0) };
    let data: Uint8Array;
    let owned: boolean;
    if (this.isContiguous) {
      data = backing.bytes(this.storageOffset * is, this.numel * is);
      owned = false; // a view of the source, of a cached record or of a reused read buffer
    } else {
      let last = this.storageOffset;
      for (let i = 0; i < this.shape.length; i++) last += (this.shape[i] - 1) * this.stride[i];
      const region = backing.bytes(this.storageOffset * is, (last - this.storageOffset + 1) * is);
      data = gather(region, this.shape, this.stride, is);
      owned = true;
    }
    if (this.storage.bigEndian && is > 1) {
      // Never swap bytes a backing handed out: they may be a cached record that another tensor on the same
      // storage range reads next (swapping it in place would corrupt both). Swap into a fresh copy.
      if (!owned) data = data.slice();
      swapBytes(data, is);
    }
    return { dtype, shape: [...this.shape], data };
  }
}

/** Copies a strided view (starting at byte 0 of `src`) into a new C-contiguous buffer. */
function gather(src: Uint8Array, shape: number[], stride: number[], is: number): Uint8Array {
  const nd = shape.length;
  let count = 1;
  for (const d of shape) count *= d;
  const out = new Uint8Array(count * is);
  const inner = shape[nd - 1];
  const innerStep = stride[nd - 1] * is;
  const idx = new Array<number>(nd).fill(0);
  let base = 0;
  let o = 0;
  for (;;) {
    if (innerStep === is) {
      out.set(src.subarray(base, base + inner * is), o);
      o += inner * is;
    } else {
      let s = base;
      for (let j = 0; j < inner; j++, s += innerStep) {
        for (let k = 0; k < is; k++) out[o++] = src[s + k];
      }
    }
    let d = nd - 2;
    for (; d >= 0; d--) {
      idx[d]++;
      base += stride[d] * is;
      if (idx[d] < shape[d]) break;
      base -= idx[d] * stride[d] * is;
      idx[d] = 0;
    }
    if (d < 0) return out;
  }
}

/** Reverses the byte order of each `is`-byte element in place. */
export function swapBytes(data: Uint8Array, is: number): void {
  for (let p = 0; p + is <= data.length; p += is) {
    for (let a = p, b = p + is - 1; a < b; a++, b--) {
      const t = data[a];
      data[a] = data[b];
      data[b] = t;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Argument checking helpers for the allowlisted callables.

function fail(ctx: CallContext, msg: string): never {
  throw new CheckpointError(`pickle: ${ctx.global}: ${msg} (at byte ${ctx.offset})`, {
    file: ctx.file,
    offset: ctx.offset,
  });
}

function int(ctx: CallContext, v: PyValue, what: string): number {
  if (typeof v === "number" && Number.isSafeInteger(v)) return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  fail(ctx, `${what} is a ${pyTypeName(v)} (${pyRepr(v, 40)}), not an integer below 2^53`);
}

function intTuple(ctx: CallContext, v: PyValue, what: string): number[] {
  if (!Array.isArray(v)) fail(ctx, `${what} is a ${pyTypeName(v)}, not a tuple`);
  ctx.charge(v.length, COPY_COST.element);
  const out = new Array<number>(v.length);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    out[i] = typeof x === "number" && Number.isSafeInteger(x) ? x : int(ctx, x, `${what}[${i}]`);
  }
  return out;
}

function argc(ctx: CallContext, args: readonly PyValue[], min: number, max: number): void {
  if (args.length < min || args.length > max) {
    fail(ctx, `takes ${min === max ? min : `${min} to ${max}`} arguments, got ${args.length}`);
  }
}

function asTensor(ctx: CallContext, v: PyValue, what: string): TorchTensor {
  if (!(v instanceof TorchTensor)) fail(ctx, `${what} is a ${pyTypeName(v)}, not a tensor`);
  return v;
}

function rebuildTensor(
  ctx: CallContext,
  storage: PyValue,
  offset: PyValue,
  size: PyValue,
  stride: PyValue,
  requiresGrad: PyValue,
  dtype?: TorchDType,
): TorchTensor {
  if (!(storage instanceof TorchStorage)) {
    fail(ctx, `storage is a ${pyTypeName(storage)}; a persistent storage reference is required`);
  }
  return new TorchTensor(
    storage,
    dtype ?? storage.dtype,
    int(ctx, offset, "storage offset"),
    intTuple(ctx, size, "size"),
    intTuple(ctx, stride, "stride"),
    requiresGrad === true,
    ctx.file,
  );
}

function dtypeArg(ctx: CallContext, v: PyValue): TorchDType {
  if (v instanceof PyGlobal && v.qualname.startsWith("torch.")) {
    const name = v.qualname.slice(6);
    if (Object.hasOwn(TORCH_DTYPES, name)) return TORCH_DTYPES[name];
  }
  fail(ctx, `dtype is a ${pyTypeName(v)}, not a torch dtype`);
}

function orderedDict(ctx: CallContext, args: readonly PyValue[]): PyDict {
  argc(ctx, args, 0, 1);
  const d = new PyDict("collections.OrderedDict");
  if (args.length === 1 && args[0] !== null) {
    const src = args[0];
    if (src instanceof PyDict || Array.isArray(src)) {
      ctx.charge(src instanceof PyDict ? src.size : src.length, COPY_COST.entry);
    }
    if (src instanceof PyDict) {
      for (const [k, v] of src) d.set(k, v);
    } else if (Array.isArray(src)) {
      for (const pair of src) {
        if (!Array.isArray(pair) || pair.length !== 2) fail(ctx, "items must be (key, value) pairs");
        d.set(pair[0], pair[1]);
      }
    } else fail(ctx, `cannot build from a ${pyTypeName(src)}`);
  }
  return d;
}

const NUMPY_KINDS: Record<
  string,
  { size: number; get: (dv: DataView, le: boolean) => number | bigint | boolean }
> = {
  f8: { size: 8, get: (dv, le) => dv.getFloat64(0, le) },
  f4: { size: 4, get: (dv, le) => dv.getFloat32(0, le) },
  i8: { size: 8, get: (dv, le) => dv.getBigInt64(0, le) },
  u8: { size: 8, get: (dv, le) => dv.getBigUint64(0, le) },
  i4: { size: 4, get: (dv, le) => dv.getInt32(0, le) },
  u4: { size: 4, get: (dv, le) => dv.getUint32(0, le) },
  i2: { size: 2, get: (dv, le) => dv.getInt16(0, le) },
  u2: { size: 2, get: (dv, le) => dv.getUint16(0, le) },
  i1: { size: 1, get: (dv) => dv.getInt8(0) },
  u1: { size: 1, get: (dv) => dv.getUint8(0) },
  b1: { size: 1, get: (dv) => dv.getUint8(0) !== 0 },
};

/** Decodes a numpy scalar (dtype record + raw bytes) to a JS value, or undefined for other kinds. */
function numpyScalarValue(dtype: PyValue, data: Uint8Array): PyValue | undefined {
  if (!(dtype instanceof PyObject) || typeof dtype.value !== "string") return undefined;
  const code = dtype.value.replace(/^[<>=|]/, "");
  const kind = Object.hasOwn(NUMPY_KINDS, code) ? NUMPY_KINDS[code] : undefined;
  if (!kind || data.length !== kind.size) return undefined;
  const state = dtype.attrs.get("__state__");
  const order = Array.isArray(state) && typeof state[1] === "string" ? state[1] : "<";
  const v = kind.get(new DataView(data.buffer, data.byteOffset, data.byteLength), order !== ">");
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v;
  return v;
}

function latin1Bytes(ctx: CallContext, s: string): Uint8Array {
  ctx.charge(s.length, COPY_COST.byte);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) fail(ctx, "string does not fit latin-1");
    out[i] = c;
  }
  return out;
}

const inert: GlobalBehaviour = {};

/** Behaviour of every allowlisted global, by `module.name`. */
const ALLOW: Record<string, GlobalBehaviour> = {
  "collections.OrderedDict": {
    call: (args, ctx) => orderedDict(ctx, args),
    construct: (args, _kw, ctx) => orderedDict(ctx, args),
  },
  "torch._utils._rebuild_tensor_v2": {
    call: (a, ctx) => {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      argc(ctx, a, 6, 7);
      return rebuildTensor(ctx, a[0], a[1], a[2], a[3], a[4]);
    },
  },
  "torch._utils._rebuild_tensor_v3": {
    call: (a, ctx) => {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
      argc(ctx, a, 7, 8);
      return rebuildTensor(ctx, a[0], a[1], a[2], a[3], a[4], dtypeArg(ctx, a[6]));
    },
  },
  "torch._utils._rebuild_tensor": {
    call: (a, ctx) => {
      // (storage, storage_offset, size, stride): PyTorch 0.4-era files
      argc(ctx, a, 4, 4);
      return rebuildTensor(ctx, a[0], a[1], a[2], a[3], false);
    },
  },
  "torch._utils._rebuild_parameter": {
    call: (a, ctx) => {
      // (data, requires_grad, backward_hooks)
      argc(ctx, a, 3, 3);
      const t = asTensor(ctx, a[0], "data");
      t.requiresGrad = a[1] === true;
      return t;
    },
  },
  "torch._utils._rebuild_parameter_with_state": {
    call: (a, ctx) => {
      // (data, requires_grad, backward_hooks, state)
      argc(ctx, a, 4, 4);
      const t = asTensor(ctx, a[0], "data");
      t.requiresGrad = a[1] === true;
      t.state = a[3];
      return t;
    },
  },
  "torch._tensor._rebuild_from_type_v2": {
    call: (a, ctx) => {
      // (func, new_type, args, state): func must itself be an allowlisted rebuild function.
      argc(ctx, a, 4, 4);
      const [func, newType, args, state] = a;
      if (
        !(func instanceof PyGlobal) || !func.behaviour.call ||
        !func.qualname.startsWith("torch._utils._rebuild")
      ) {
        fail(ctx, `func is ${pyTypeName(func)}, not an allowlisted torch._utils rebuild function`);
      }
      if (!(newType instanceof PyGlobal) || !TENSOR_TYPES.has(newType.qualname)) {
        fail(ctx, `new_type is ${pyTypeName(newType)}, not torch.Tensor or torch.nn.Parameter`);
      }
      if (!isTuple(args)) fail(ctx, `args is a ${pyTypeName(args)}, not a tuple`);
      const t = asTensor(ctx, func.behaviour.call(args, { ...ctx, global: func.qualname }), "result");
      if (state !== null) t.state = state;
      return t;
    },
  },
  "torch.Tensor": inert,
  "torch.nn.parameter.Parameter": inert,
  "torch.Size": {
    call: (a, ctx) => {
      argc(ctx, a, 0, 1);
      return Object.freeze(a.length ? intTuple(ctx, a[0], "size") : []);
    },
  },
  "torch.device": {
    call: (a, ctx) => {
      argc(ctx, a, 1, 2);
      const o = new PyObject("torch.device", [...a]);
      const type = keyText(a[0]);
      const index = a.length === 2 && a[1] !== null ? keyText(a[1]) : null;
      ctx.charge(type.length + (index?.length ?? 0), COPY_COST.char);
      o.value = index !== null ? `${type}:${index}` : type;
      return o;
    },
  },
  "torch.torch_version.TorchVersion": {
    call: (a, ctx) => {
      argc(ctx, a, 1, 1);
      if (typeof a[0] !== "string") fail(ctx, "version is not a string");
      return a[0];
    },
  },
  "argparse.Namespace": {
    construct: (args, kwargs, ctx) => {
      ctx.charge(args.length, COPY_COST.element);
      ctx.charge(kwargs?.size ?? 0, COPY_COST.entry);
      const o = new PyObject("argparse.Namespace", [...args]);
      if (kwargs) { for (const [k, v] of kwargs) o.attrs.set(keyText(k), v); }
      return o;
    },
    call: (args, ctx) => {
      ctx.charge(args.length, COPY_COST.element);
      return new PyObject("argparse.Namespace", [...args]);
    },
  },
  "_codecs.encode": {
    call: (a, ctx) => {
      // Protocol 2 pickles bytes as _codecs.encode(str, "latin1").
      argc(ctx, a, 1, 2);
      const [s, enc] = a;
      if (typeof s !== "string") fail(ctx, `argument is a ${pyTypeName(s)}, not a str`);
      const e = a.length === 2 ? keyText(enc).toLowerCase().replace(/[-_]/g, "") : "utf8";
      if (e === "latin1" || e === "iso88591") return latin1Bytes(ctx, s);
      if (e === "utf8") {
        ctx.charge(s.length, 3 * COPY_COST.byte); // UTF-8: up to 3 bytes per UTF-16 unit
        return new TextEncoder().encode(s);
      }
      if (e === "ascii") {
        for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) fail(ctx, "string does not fit ascii");
        return latin1Bytes(ctx, s);
      }
      fail(ctx, `encoding ${pyRepr(enc)} is not supported`);
    },
  },
  "builtins.set": {
    call: (a, ctx) => {
      argc(ctx, a, 0, 1);
      if (a.length && !Array.isArray(a[0])) fail(ctx, `argument is a ${pyTypeName(a[0])}`);
      ctx.charge(a.length ? (a[0] as PyValue[]).length : 0, COPY_COST.entry);
      return new Set<PyValue>(a.length ? (a[0] as PyValue[]) : []);
    },
  },
  "builtins.frozenset": {
    call: (a, ctx) => {
      argc(ctx, a, 0, 1);
      if (a.length && !Array.isArray(a[0])) fail(ctx, `argument is a ${pyTypeName(a[0])}`);
      ctx.charge(a.length ? (a[0] as PyValue[]).length : 0, COPY_COST.entry);
      return new Set<PyValue>(a.length ? (a[0] as PyValue[]) : []);
    },
  },
  "builtins.bytearray": {
    call: (a, ctx) => {
      argc(ctx, a, 0, 3);
      if (a.length === 0) return new Uint8Array(0);
      if (a[0] instanceof Uint8Array) {
        ctx.charge(a[0].length, COPY_COST.byte);
        return a[0].slice();
      }
      if (typeof a[0] === "string" && a.length >= 2) return latin1Bytes(ctx, a[0]);
      fail(ctx, `cannot build a bytearray from a ${pyTypeName(a[0])}`);
    },
  },
  "builtins.slice": {
    call: (a, ctx) => {
      argc(ctx, a, 1, 3);
      return new PyObject("builtins.slice", [...a]);
    },
  },
  "numpy.dtype": {
    call: (a, ctx) => {
      // np.dtype(str, align, copy); BUILD then gives (version, byteorder, ...).
      argc(ctx, a, 1, 3);
      if (typeof a[0] !== "string") fail(ctx, `type code is a ${pyTypeName(a[0])}`);
      const o = new PyObject("numpy.dtype", [...a]);
      o.value = a[0];
      return o;
    },
  },
  "numpy.core.multiarray.scalar": { call: numpyScalar },
  "numpy._core.multiarray.scalar": { call: numpyScalar },
  "numpy.core.multiarray._reconstruct": { call: numpyReconstruct },
  "numpy._core.multiarray._reconstruct": { call: numpyReconstruct },
  "numpy.ndarray": inert,
  "pathlib.PosixPath": { call: pathCall("pathlib.PosixPath", "/") },
  "pathlib.PurePosixPath": { call: pathCall("pathlib.PurePosixPath", "/") },
  "pathlib.WindowsPath": { call: pathCall("pathlib.WindowsPath", "\\") },
  "pathlib.PureWindowsPath": { call: pathCall("pathlib.PureWindowsPath", "\\") },
};

const TENSOR_TYPES = new Set(["torch.Tensor", "torch.nn.parameter.Parameter"]);

function numpyScalar(a: readonly PyValue[], ctx: CallContext): PyValue {
  // numpy.core.multiarray.scalar(dtype, bytes)
  argc(ctx, a, 1, 2);
  const o = new PyObject("numpy.scalar", [...a]);
  if (a.length === 2 && a[1] instanceof Uint8Array) {
    const v = numpyScalarValue(a[0], a[1]);
    if (v !== undefined) o.value = v;
  }
  return o;
}

function numpyReconstruct(a: readonly PyValue[], ctx: CallContext): PyValue {
  // numpy.core.multiarray._reconstruct(numpy.ndarray, shape, b"b"); BUILD gives the array's contents.
  argc(ctx, a, 3, 3);
  if (!(a[0] instanceof PyGlobal) || a[0].qualname !== "numpy.ndarray") {
    fail(ctx, `can only rebuild numpy.ndarray, not ${pyTypeName(a[0])}`);
  }
  return new PyObject("numpy.ndarray", []);
}

function pathCall(cls: string, sep: string): (a: readonly PyValue[], ctx: CallContext) => PyValue {
  return (a, ctx) => {
    let n = a.length;
    for (const p of a) {
      if (typeof p !== "string") fail(ctx, `path part is a ${pyTypeName(p)}`);
      n += p.length;
    }
    ctx.charge(n, COPY_COST.char);
    const o = new PyObject(cls, [...a]);
    o.value = (a as string[]).join(sep).replace(sep + sep, sep);
    return o;
  };
}

/** Every global the safe unpickler accepts (`module.name`), besides torch storage classes and dtypes. */
export const ALLOWED_GLOBALS: readonly string[] = Object.freeze([
  ...Object.keys(ALLOW),
  ...Object.keys(STORAGE_CLASSES).map((c) => `torch.${c}`),
  "torch.storage.UntypedStorage",
  "torch.storage.TypedStorage",
  ...Object.keys(TORCH_DTYPES).map((d) => `torch.${d}`),
]);

/** The storage class's dtype for a global used as a storage type in a persistent id, or undefined. */
export function storageClassDType(g: PyValue): TorchDType | undefined {
  if (!(g instanceof PyGlobal)) return undefined;
  const q = g.qualname;
  const name = q.startsWith("torch.cuda.")
    ? q.slice(11)
    : q.startsWith("torch.storage.")
    ? q.slice(14)
    : q.startsWith("torch.")
    ? q.slice(6)
    : null;
  if (name === null || name.includes(".") || !Object.hasOwn(STORAGE_CLASSES, name)) return undefined;
  return STORAGE_CLASSES[name];
}

/**
 * The allowlist resolver used for torch checkpoints: returns our inert behaviour for an allowed global, or
 * undefined so the unpickler refuses it.
 */
export function resolveTorchGlobal(module: string, name: string): GlobalBehaviour | undefined {
  const q = `${module}.${name}`;
  if (Object.hasOwn(ALLOW, q)) return ALLOW[q];
  if ((module === "torch" || module === "torch.cuda") && Object.hasOwn(STORAGE_CLASSES, name)) return inert;
  if (module === "torch.storage" && (name === "UntypedStorage" || name === "TypedStorage")) return inert;
  if (module === "torch" && Object.hasOwn(TORCH_DTYPES, name)) return inert;
  return undefined;
}
