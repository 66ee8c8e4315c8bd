/**
 * A strict safetensors reader and writer (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON header, then the tensor data. The reader validates everything before it
 * trusts it: header bounds, UTF-8 and JSON, known dtypes, integral non-negative shapes whose byte size matches
 * the offsets, offsets that are contiguous, non-overlapping and cover the whole data area exactly, no
 * duplicate keys, and string-to-string metadata. Tensors come back as views of the file's bytes (no copy).
 *
 * @module
 */

import { SafetensorsError } from "../src/core/errors.ts";
import { writeFileAtomic, type WriteOptions } from "../src/core/atomic.ts";
import { type DType, DTYPE_SIZE, type RawTensor, type TensorMap } from "../src/core/types.ts";
import { castFloatInto, f16BitsToF32, f32BitsToBf16, f32BitsToF16 } from "../src/core/dtype.ts";
import { isDeno, readBytes, sourceOf } from "../src/core/platform.ts";
import { readRegularFile } from "../src/core/files.ts";

/** The largest header the reader accepts (100 MB, as the reference implementation does). */
export const MAX_HEADER_BYTES = 100_000_000;

/** A parsed safetensors file. */
export interface Safetensors {
  /** Tensors in file order of their data offsets. `data` views the input bytes. */
  tensors: TensorMap;
  /** The `__metadata__` map (empty when absent). */
  metadata: Record<string, string>;
}

function fail(msg: string, file?: string, key?: string): never {
  throw new SafetensorsError(msg, { file: file ?? "<safetensors>", key });
}

/**
 * Checks that a shape is a list of non-negative safe integers and returns its element count, refusing counts
 * that would overflow 2^53 or whose byte size exceeds `maxBytes`.
 */
export function checkedElementCount(shape: unknown, elemBytes: number, maxBytes: number): number {
  if (!Array.isArray(shape)) throw new TypeError("shape is not a list");
  let n = 1;
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new TypeError(`dimension ${JSON.stringify(d)} is not a non-negative integer`);
    }
    n *= d;
    if (!Number.isSafeInteger(n) || n * elemBytes > maxBytes) {
      throw new RangeError(`shape [${shape.join(", ")}] needs more bytes than the file holds`);
    }
  }
  return n;
}

/** Parses JSON that must not repeat a key within one object; returns the parsed value or throws. */
function parseJsonNoDuplicates(text: string, file?: string): unknown {
  // JSON.parse keeps the last duplicate silently; a reviver cannot see duplicates. Scan keys of the top-level
  // object and of each tensor entry with a small tokenizer first.
  let i = 0;
  const ws = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\n" || text[i] === "\r" || text[i] === "\t")) {
      i++;
    }
  };
  const str = (): string => {
    const start = i;
    i++; // opening quote
    while (i < text.length) {
      const c = text[i];
      if (c === "\\") i += 2;
      else if (c === '"') {
        i++;
        try {
          return JSON.parse(text.slice(start, i));
        } catch (e) {
          if (!(e instanceof SyntaxError)) throw e;
          // a bad escape or a raw control character
          throw new SafetensorsError(`malformed string in header JSON at byte ${start}`, {
            file: file ?? "<safetensors>",
            cause: e,
          });
        }
      } else i++;
    }
    fail("unterminated string in header", file);
  };
  const value = (depth: number): void => {
    if (depth > 64) fail("header nests too deeply", file);
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("malformed header JSON", file);
        const k = str();
        if (seen.has(k)) fail("duplicate key in header", file, k);
        seen.add(k);
        ws();
        if (text[i] !== ":") fail("malformed header JSON", file);
        i++;
        value(depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        fail("malformed header JSON", file);
      }
    } else if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        value(depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        fail("malformed header JSON", file);
      }
    } else if (c === '"') {
      str();
    } else {
      const m = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 40));
      if (!m) fail("malformed header JSON", file);
      i += m[0].length;
    }
  };
  value(0);
  ws();
  if (i !== text.length) fail("trailing bytes after header JSON", file);
  try {
    return JSON.parse(text);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw new SafetensorsError("malformed header JSON", { file: file ?? "<safetensors>", cause: e });
  }
}

/**
 * Parses and validates safetensors bytes. Tensors are views into `bytes`.
 *
 * @param bytes the whole file
 * @param file a name for error messages
 * @throws {SafetensorsError} naming the file and the tensor at fault
 *
 * @example
 * ```ts
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors(new Map([["w", { dtype: "F32", shape: [2], data: new Uint8Array(8) }]]));
 * const { tensors } = parseSafetensors(bytes, "w.safetensors");
 * tensors.get("w")!.shape; // [2]
 * ```
 */
export function parseSafetensors(bytes: Uint8Array, file?: string): Safetensors {
  if (bytes.byteLength < 8) {
    fail(`file is ${bytes.byteLength} bytes, shorter than the 8-byte header length`, file);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(bytes.byteLength - 8)) {
    fail(`header length ${n} runs past the end of the file (${bytes.byteLength} bytes)`, file);
  }
  if (n > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n} exceeds ${MAX_HEADER_BYTES}`, file);
  const headerLen = Number(n);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
  } catch (e) {
    throw new SafetensorsError("header is not valid UTF-8", { file: file ?? "<safetensors>", cause: e });
  }
  // The format allows trailing spaces as padding. (Trimmed by hand: the regex / +$/ is quadratic on a long
  // run of spaces followed by anything else, and the header is attacker-sized.)
  let textEnd = text.length;
  while (textEnd > 0 && text.charCodeAt(textEnd - 1) === 0x20) textEnd--;
  const header = parseJsonNoDuplicates(textEnd === text.length ? text : text.slice(0, textEnd), file);
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    fail("header is not a JSON object", file);
  }
  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { key: string; dtype: DType; shape: number[]; begin: number; end: number }[] = [];
  for (const [key, raw] of Object.entries(header as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        fail("__metadata__ is not an object", file);
      }
      for (const [mk, mv] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof mv !== "string") fail("metadata values must be strings", file, mk);
        setOwn(metadata, mk, mv);
      }
      continue;
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      fail("tensor entry is not an object", file, key);
    }
    const info = raw as Record<string, unknown>;
    const dtype = info.dtype;
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_SIZE, dtype)) {
      fail(`unsupported dtype ${JSON.stringify(dtype)}`, file, key);
    }
    const size = DTYPE_SIZE[dtype as DType];
    let count: number;
    try {
      count = checkedElementCount(info.shape, size, dataLen);
    } catch (e) {
      fail(`bad shape: ${(e as Error).message}`, file, key);
    }
    const offs = info.data_offsets;
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
    ) {
      fail("data_offsets must be two non-negative integers", file, key);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(`data_offsets [${begin}, ${end}] are reversed`, file, key);
    if (end > dataLen) {
      fail(`data_offsets [${begin}, ${end}] run past the data (${dataLen} bytes)`, file, key);
    }
    if (end - begin !== count * size) {
      fail(
        `data_offsets cover ${end - begin} bytes but ${dtype}[${info.shape}] needs ${count * size}`,
        file,
        key,
      );
    }
    entries.push({ key, dtype: dtype as DType, shape: info.shape as number[], begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of entries) {
    if (e.begin !== pos) {
      fail(
        e.begin < pos
          ? `data overlaps the previous tensor at offset ${e.begin}`
          : `gap in data before offset ${e.begin}`,
        file,
        e.key,
      );
    }
    pos = e.end;
  }
  if (pos !== dataLen) fail(`tensors cover ${pos} of ${dataLen} data bytes`, file);
  const tensors: TensorMap = new Map();
  for (const e of entries) {
    tensors.set(e.key, {
      dtype: e.dtype,
      shape: e.shape,
      data: bytes.subarray(dataStart + e.begin, dataStart + e.end),
    });
  }
  return { tensors, metadata };
}

/**
 * Reads and validates a safetensors file.
 *
 * @example
 * ```ts ignore
 * import { readSafetensors } from "./safetensors.ts";
 * const { tensors, metadata } = await readSafetensors("t2t_vit_14.safetensors");
 * ```
 */
export async function readSafetensors(path: string): Promise<Safetensors> {
  let bytes: Uint8Array;
  try {
    // a local path: one exact buffer (Deno); a URL (or any string in a browser): fetched
    // (a local path that is not a regular file, a FIFO or a device, is refused before it is opened)
    bytes = isDeno() && sourceOf(path).path !== undefined
      ? await readRegularFile(path, (msg, cause) => {
        throw new SafetensorsError(msg === "no such file" ? `cannot read: ${msg}` : msg, {
          file: path,
          cause,
        });
      })
      : await readBytes(path);
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(`cannot read: ${(e as Error).message}`, { file: path, cause: e });
  }
  return parseSafetensors(bytes, path);
}

/** One tensor's entry in a safetensors header. */
export interface HeaderEntry {
  /** Tensor name. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions. */
  shape: readonly number[];
  /** Data bytes (`product(shape) * DTYPE_SIZE[dtype]`). */
  nbytes: number;
}

/** Defines an own, enumerable property, so keys like `__proto__` are data, never the prototype. */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * The 8-byte length and the JSON header of a safetensors file whose tensors are laid out in `entries` order,
 * padded with spaces so the data starts 8-byte aligned. Checks what the reader would refuse: unknown dtypes,
 * bad shapes, byte sizes that do not match, `__metadata__` as a tensor name, duplicate names, non-string
 * metadata.
 *
 * @throws {SafetensorsError} naming the tensor at fault
 */
export function safetensorsHeader(
  entries: readonly HeaderEntry[],
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) {
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") fail("metadata values must be strings", undefined, k);
      setOwn(meta, k, v);
    }
    header.__metadata__ = meta;
  }
  let offset = 0;
  for (const e of entries) {
    const key = e.name;
    if (key === "__metadata__") fail("'__metadata__' cannot name a tensor", undefined, key);
    if (Object.hasOwn(header, key)) fail("duplicate tensor name", undefined, key);
    if (!Object.hasOwn(DTYPE_SIZE, e.dtype)) fail(`unsupported dtype ${e.dtype}`, undefined, key);
    let count: number;
    try {
      count = checkedElementCount(e.shape, DTYPE_SIZE[e.dtype], Number.MAX_SAFE_INTEGER);
    } catch (err) {
      fail(`bad shape: ${(err as Error).message}`, undefined, key);
    }
    const need = count * DTYPE_SIZE[e.dtype];
    if (e.nbytes !== need) {
      fail(`has ${e.nbytes} bytes but ${e.dtype}[${e.shape}] needs ${need}`, undefined, key);
    }
    setOwn(header, key, { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + need] });
    offset += need;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(out.length - 8), true);
  out.set(json, 8);
  return out;
}

/**
 * Serializes tensors (in map order) and string metadata to safetensors bytes. The header is padded with
 * spaces so the data starts 8-byte aligned.
 *
 * @throws {SafetensorsError} when a tensor's byte length does not match its dtype and shape
 */
export function serializeSafetensors(tensors: TensorMap, metadata: Record<string, string> = {}): Uint8Array {
  const entries: HeaderEntry[] = [];
  let total = 0;
  for (const [name, t] of tensors) {
    entries.push({ name, dtype: t.dtype, shape: t.shape, nbytes: t.data.byteLength });
    total += t.data.byteLength;
  }
  const header = safetensorsHeader(entries, metadata);
  const out = new Uint8Array(header.length + total);
  out.set(header);
  let pos = header.length;
  for (const t of tensors.values()) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}

/**
 * Writes tensors as a safetensors file, atomically (temporary file + rename).
 *
 * @example
 * ```ts ignore
 * import { fromFloat32, writeSafetensors } from "./safetensors.ts";
 * await writeSafetensors("out.safetensors", new Map([["w", fromFloat32(new Float32Array(4), [2, 2])]]), {
 *   format: "pt",
 * });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorMap,
  metadata: Record<string, string> = {},
  opts: WriteOptions = {},
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata), opts, SafetensorsError);
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** float16 bits to a number (exact: through the float32 bits of `f16BitsToF32`). */
export function f16ToNumber(h: number): number {
  u32buf[0] = f16BitsToF32(h);
  return f32buf[0];
}

/** A number to float16 bits: rounded to float32 first, then to nearest even, as torch's `.half()` does. */
export function numberToF16(v: number): number {
  f32buf[0] = v;
  return f32BitsToF16(u32buf[0]);
}

/** A number to bfloat16 bits: rounded to float32, then to nearest even; every NaN becomes torch's 0x7FC0. */
export function numberToBf16(v: number): number {
  f32buf[0] = v;
  return f32BitsToBf16(u32buf[0]);
}

/**
 * The values of a tensor as float32 (widening F16, BF16, F64 and integer types; BOOL as 0/1), in a new
 * array; with `view`, float32 data aligned to 4 bytes is returned as a view of the tensor's bytes instead
 * (for a caller that copies the values anyway, and never writes to them).
 *
 * @example
 * ```ts
 * import { fromFloat32, toFloat32 } from "./safetensors.ts";
 * toFloat32(fromFloat32(new Float32Array([1, 2]), [2])); // Float32Array [1, 2]
 * ```
 */
export function toFloat32(t: RawTensor, view = false): Float32Array {
  const n = t.data.byteLength / DTYPE_SIZE[t.dtype];
  if (view && t.dtype === "F32" && t.data.byteOffset % 4 === 0) {
    return new Float32Array(t.data.buffer, t.data.byteOffset, n);
  }
  const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Float32Array(n);
  switch (t.dtype) {
    case "F32":
      if (t.data.byteOffset % 4 === 0) out.set(new Float32Array(t.data.buffer, t.data.byteOffset, n));
      else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      break;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      break;
    case "F16":
      for (let i = 0; i < n; i++) out[i] = f16ToNumber(dv.getUint16(2 * i, true));
      break;
    case "BF16": {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      break;
    }
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      break;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true);
      break;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      break;
    case "U8":
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = t.data[i];
      break;
  }
  return out;
}

/**
 * Wraps float32 values as an F32 tensor (copying them into a fresh little-endian buffer).
 *
 * @throws {SafetensorsError} when the shape does not match the value count
 */
export function fromFloat32(values: Float32Array, shape: number[]): RawTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n !== values.length) fail(`shape [${shape}] holds ${n} values, got ${values.length}`);
  return { dtype: "F32", shape: [...shape], data: new Uint8Array(values.slice().buffer) };
}

/**
 * Converts a floating-point tensor to another floating dtype (F32, F16 or BF16), bit-exact with torch's
 * `.float()`, `.half()` and `.bfloat16()` (see `castFloatInto` in `dtype.ts`, which this calls). Widening is
 * exact. Non-float tensors are returned unchanged.
 */
export function castFloat(t: RawTensor, dtype: "F32" | "F16" | "BF16"): RawTensor {
  return castFloatInto(t, dtype);
}
