/**
 * A strict safetensors reader and writer (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON header, then the tensor data. The reader validates everything before it
 * trusts it: header bounds, UTF-8 and JSON, known dtypes, integral non-negative shapes whose byte size matches
 * the offsets, offsets that are contiguous, non-overlapping and cover the whole data area exactly, no
 * duplicate keys, and string-to-string metadata. Tensors come back as views of the file's bytes (no copy).
 *
 * @module
 */

import { SafetensorsError } from "../src/errors.ts";
import { type DType, DTYPE_SIZE, type RawTensor, type TensorMap } from "./types.ts";

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
        return JSON.parse(text.slice(start, i));
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
  // The format allows trailing spaces as padding.
  const header = parseJsonNoDuplicates(text.replace(/ +$/, ""), file);
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
        metadata[mk] = mv;
      }
      continue;
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      fail("tensor entry is not an object", file, key);
    }
    const info = raw as Record<string, unknown>;
    const dtype = info.dtype;
    if (typeof dtype !== "string" || !(dtype in DTYPE_SIZE)) {
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
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new SafetensorsError(`cannot read: ${(e as Error).message}`, { file: path, cause: e });
  }
  return parseSafetensors(bytes, path);
}

/**
 * Serializes tensors (in map order) and string metadata to safetensors bytes. The header is padded with
 * spaces so the data starts 8-byte aligned.
 *
 * @throws {SafetensorsError} when a tensor's byte length does not match its dtype and shape
 */
export function serializeSafetensors(tensors: TensorMap, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") fail("metadata values must be strings", undefined, k);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [key, t] of tensors) {
    if (key === "__metadata__") fail("'__metadata__' cannot name a tensor", undefined, key);
    if (!(t.dtype in DTYPE_SIZE)) fail(`unsupported dtype ${t.dtype}`, undefined, key);
    let count: number;
    try {
      count = checkedElementCount(t.shape, DTYPE_SIZE[t.dtype], Number.MAX_SAFE_INTEGER);
    } catch (e) {
      fail(`bad shape: ${(e as Error).message}`, undefined, key);
    }
    const need = count * DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== need) {
      fail(`has ${t.data.byteLength} bytes but ${t.dtype}[${t.shape}] needs ${need}`, undefined, key);
    }
    header[key] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + need] };
    offset += need;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) {
    const padded = new Uint8Array(json.byteLength + pad).fill(0x20);
    padded.set(json);
    json = padded;
  }
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let pos = 8 + json.byteLength;
  for (const t of tensors.values()) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** Options of {@link writeSafetensors} and {@link writeFileAtomic}. */
export interface WriteOptions {
  /** Overwrite an existing file (default false: an existing file is an error). */
  force?: boolean;
}

/**
 * Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a failure never
 * leaves a half-written file. Refuses to overwrite unless `force`.
 */
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array,
  opts: WriteOptions = {},
): Promise<void> {
  if (!opts.force) {
    try {
      await Deno.lstat(path);
      throw new SafetensorsError("already exists (use force to overwrite)", { file: path });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeFile(tmp, bytes, { createNew: true });
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(`cannot write: ${(e as Error).message}`, { file: path, cause: e });
  }
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
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata), opts);
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** float16 bits to a number. */
export function f16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** A number to float16 bits, rounding to nearest even (overflow gives infinity). */
export function numberToF16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** A number to bfloat16 bits (float32 rounded to nearest even; NaN kept quiet). */
export function numberToBf16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * The values of a tensor as float32 (widening F16, BF16, F64 and integer types; BOOL as 0/1).
 *
 * @example
 * ```ts
 * import { fromFloat32, toFloat32 } from "./safetensors.ts";
 * toFloat32(fromFloat32(new Float32Array([1, 2]), [2])); // Float32Array [1, 2]
 * ```
 */
export function toFloat32(t: RawTensor): Float32Array {
  const n = t.data.byteLength / DTYPE_SIZE[t.dtype];
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
 * Converts a floating-point tensor to another floating dtype (F32, F16 or BF16), rounding to nearest even when
 * narrowing. Widening is exact. Non-float tensors are returned unchanged.
 */
export function castFloat(t: RawTensor, dtype: "F32" | "F16" | "BF16"): RawTensor {
  if (
    t.dtype === dtype || !(t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F64")
  ) {
    return t;
  }
  const v = toFloat32(t);
  if (dtype === "F32") return { dtype, shape: t.shape, data: new Uint8Array(v.buffer) };
  const out = new Uint16Array(v.length);
  if (dtype === "F16") { for (let i = 0; i < v.length; i++) out[i] = numberToF16(v[i]); }
  else for (let i = 0; i < v.length; i++) out[i] = numberToBf16(v[i]);
  return { dtype, shape: t.shape, data: new Uint8Array(out.buffer) };
}
