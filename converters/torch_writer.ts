/**
 * Writes `torch.save` zip files: the other direction of the converter, for taking weights back to PyTorch
 * (fine-tuning with the official code on many GPUs, say).
 *
 * The file is what `torch.save(state_dict, "model.pth")` writes: a zip archive of stored (uncompressed)
 * records named after the file's stem (`model/data.pkl`, `model/byteorder`, `model/data/0`, …,
 * `model/version`), each record's data aligned to 64 bytes with the same `FB` padding field PyTorch writes,
 * ZIP64 end records, and a protocol-2 `data.pkl` that references nothing but `collections.OrderedDict`,
 * `torch._utils._rebuild_tensor_v2` and the typed storage classes (`torch.FloatStorage`, …), so
 * `torch.load(f, weights_only=True)` accepts it. The pickle is byte for byte what PyTorch's pickler writes for
 * the same `OrderedDict` (memo slots included); `tests/fixtures/torch_export/` holds files PyTorch wrote to
 * compare with. Data is streamed: each tensor goes to the sink once, so memory stays at the pickle plus the
 * caller's tensors.
 *
 * @module
 */

import { crc32 } from "./zip.ts";
import { T2tVitError } from "../src/core/errors.ts";
import type { ByteSink } from "./staged_writer.ts";
import { type DType, DTYPE_SIZE, type RawTensor } from "../src/core/types.ts";

/** The typed storage class PyTorch pickles for each dtype (`torch.<name>`). */
export const STORAGE_CLASS_OF: Readonly<Record<DType, string>> = Object.freeze({
  F64: "DoubleStorage",
  F32: "FloatStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
});

/** The alignment of record data in PyTorch's zip files. */
export const TORCH_RECORD_ALIGNMENT = 64;

/** Options of {@link torchStateDictPickle} and {@link TorchZipWriter}. */
export interface TorchSaveOptions {
  /**
   * Put the state dict under this key of a dict (`{"state_dict_ema": OrderedDict}`, the layout of the official
   * release files); default: the OrderedDict itself, what `torch.save(model.state_dict(), f)` writes.
   */
  wrap?: string | null;
}

/** One tensor as {@link torchStateDictPickle} pickles it: its own storage, contiguous, offset 0. */
export interface PickledTensor {
  /** state_dict key. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Shape. */
  shape: readonly number[];
}

const enc = new TextEncoder();

const OP = {
  PROTO: 0x80,
  GLOBAL: 0x63,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  EMPTY_TUPLE: 0x29,
  EMPTY_DICT: 0x7d,
  MARK: 0x28,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  REDUCE: 0x52,
  SETITEM: 0x73,
  SETITEMS: 0x75,
  BINUNICODE: 0x58,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  NEWFALSE: 0x89,
  BINPERSID: 0x51,
  STOP: 0x2e,
} as const;

/**
 * A protocol-2 pickle emitter that memoises as CPython's pickler does: every string, global and non-empty
 * tuple is put in the next memo slot, and a global or constant string seen before is fetched from it.
 */
class Pickler {
  private chunks: number[] = [];
  private memo = 0;
  private shared = new Map<string, number>();

  raw(...b: number[]): void {
    for (const x of b) this.chunks.push(x);
  }
  private u32(n: number): void {
    this.raw(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  put(): number {
    const i = this.memo++;
    if (i < 256) this.raw(OP.BINPUT, i);
    else {
      this.raw(OP.LONG_BINPUT);
      this.u32(i);
    }
    return i;
  }
  get(i: number): void {
    if (i < 256) this.raw(OP.BINGET, i);
    else {
      this.raw(OP.LONG_BINGET);
      this.u32(i);
    }
  }
  /** A string object seen for the first time. */
  str(s: string): void {
    const b = enc.encode(s);
    this.raw(OP.BINUNICODE);
    this.u32(b.length);
    for (const x of b) this.chunks.push(x);
    this.put();
  }
  /** One object (a global, an interned string) that is pickled once and fetched from the memo afterwards. */
  once(id: string, write: () => void): void {
    const seen = this.shared.get(id);
    if (seen !== undefined) return this.get(seen);
    write();
    this.shared.set(id, this.memo - 1);
  }
  global(module: string, name: string): void {
    this.once(`global:${module}.${name}`, () => {
      this.raw(OP.GLOBAL, ...enc.encode(`${module}\n${name}\n`));
      this.put();
    });
  }
  constStr(s: string): void {
    this.once(`str:${s}`, () => this.str(s));
  }
  int(n: number): void {
    if (!Number.isSafeInteger(n)) throw new RangeError(`cannot pickle ${n} as an int`);
    if (n >= 0 && n < 0x100) this.raw(OP.BININT1, n);
    else if (n >= 0 && n < 0x10000) this.raw(OP.BININT2, n & 0xff, n >> 8);
    else if (n >= -(2 ** 31) && n < 2 ** 31) {
      this.raw(OP.BININT);
      this.u32(n >>> 0);
    } else {
      // LONG1: two's complement, little-endian, as few bytes as keep the sign
      const out: number[] = [];
      let x = BigInt(n);
      for (;;) {
        const byte = Number(x & 0xffn);
        out.push(byte);
        x >>= 8n;
        if ((x === 0n && !(byte & 0x80)) || (x === -1n && byte & 0x80)) break;
      }
      this.raw(OP.LONG1, out.length, ...out);
    }
  }
  /** A tuple of ints (memoised unless empty, as CPython does). */
  intTuple(items: readonly number[]): void {
    if (items.length === 0) return this.raw(OP.EMPTY_TUPLE);
    if (items.length > 3) this.raw(OP.MARK);
    for (const x of items) this.int(x);
    this.raw(
      items.length === 1
        ? OP.TUPLE1
        : items.length === 2
        ? OP.TUPLE2
        : items.length === 3
        ? OP.TUPLE3
        : OP.TUPLE,
    );
    this.put();
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.chunks);
  }
}

function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** Element count of a shape. */
function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The `data.pkl` of a `torch.save` zip file holding an `OrderedDict` of `tensors` (optionally under
 * `opts.wrap`), the i-th tensor in storage record `data/<i>`. Byte for byte what PyTorch 1.13 writes for the
 * same OrderedDict (protocol 2; SETITEMS in batches of 1000 as CPython's pickler batches them).
 *
 * @example
 * ```ts
 * import { torchStateDictPickle } from "./torch_writer.ts";
 * const pkl = torchStateDictPickle([{ name: "w", dtype: "F32", shape: [2, 3] }], { wrap: "state_dict_ema" });
 * console.assert(pkl[0] === 0x80 && pkl[1] === 2 && pkl[pkl.length - 1] === 0x2e);
 * ```
 */
export function torchStateDictPickle(
  tensors: readonly PickledTensor[],
  opts: TorchSaveOptions = {},
): Uint8Array {
  const p = new Pickler();
  p.raw(OP.PROTO, 2);
  const wrap = opts.wrap ?? null;
  if (wrap !== null) {
    p.raw(OP.EMPTY_DICT);
    p.put();
    p.str(wrap);
  }
  p.global("collections", "OrderedDict");
  p.raw(OP.EMPTY_TUPLE, OP.REDUCE);
  p.put();
  const BATCH = 1000;
  for (let start = 0; start < tensors.length; start += BATCH) {
    const batch = tensors.slice(start, start + BATCH);
    if (batch.length > 1) p.raw(OP.MARK);
    batch.forEach((t, j) => {
      p.str(t.name);
      p.global("torch._utils", "_rebuild_tensor_v2");
      p.raw(OP.MARK);
      // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
      p.raw(OP.MARK);
      p.constStr("storage");
      p.global("torch", STORAGE_CLASS_OF[t.dtype]);
      p.str(String(start + j));
      p.constStr("cpu");
      p.int(numelOf(t.shape));
      p.raw(OP.TUPLE);
      p.put();
      p.raw(OP.BINPERSID);
      // storage_offset, size, stride, requires_grad, backward_hooks = OrderedDict()
      p.int(0);
      p.intTuple(t.shape);
      p.intTuple(contiguousStrides(t.shape));
      p.raw(OP.NEWFALSE);
      p.global("collections", "OrderedDict");
      p.raw(OP.EMPTY_TUPLE, OP.REDUCE);
      p.put();
      p.raw(OP.TUPLE);
      p.put();
      p.raw(OP.REDUCE);
      p.put();
    });
    p.raw(batch.length > 1 ? OP.SETITEMS : OP.SETITEM);
  }
  if (wrap !== null) p.raw(OP.SETITEM);
  p.raw(OP.STOP);
  return p.bytes();
}

/**
 * The name PyTorch gives the records of a file: its name without directories and without its last
 * extension (`81.5_T2T_ViT_14.pth.tar` → `81.5_T2T_ViT_14.pth`, `model.pth` → `model`), `archive` when empty.
 *
 * @example
 * ```ts
 * import { torchArchiveName } from "./torch_writer.ts";
 * torchArchiveName("out/model.pth"); // "model"
 * ```
 */
export function torchArchiveName(path: string): string {
  const base = path.split(/[\\/]/).pop() ?? "";
  const dot = base.lastIndexOf(".");
  const stem = dot > 0 ? base.slice(0, dot) : base;
  return stem || "archive";
}

interface CentralEntry {
  name: Uint8Array;
  crc: number;
  size: number;
  offset: number;
}

const U32_MAX = 0xffffffff;

/**
 * Streams a `torch.save` zip file to a sink, record by record: {@link TorchZipWriter.begin} writes `data.pkl`
 * and `byteorder`, {@link TorchZipWriter.tensor} each tensor's storage in order, {@link TorchZipWriter.end}
 * the `version` record and the central directory.
 *
 * @example
 * ```ts
 * import { TorchZipWriter } from "./torch_writer.ts";
 * const parts: Uint8Array[] = [];
 * const w = new TorchZipWriter((b) => parts.push(b.slice()), "model");
 * const t = { dtype: "F32" as const, shape: [2], data: new Uint8Array(8) };
 * w.begin([{ name: "w", ...t }]);
 * w.tensor(t);
 * w.end();
 * ```
 */
export class TorchZipWriter {
  #sink: ByteSink;
  #prefix: string;
  #opts: TorchSaveOptions;
  #pos = 0;
  #central: CentralEntry[] = [];
  #expected: PickledTensor[] = [];
  #next = 0;
  #state: "new" | "tensors" | "done" = "new";

  /** A writer to `sink` whose records are named `<archiveName>/…` (see {@link torchArchiveName}). */
  constructor(sink: ByteSink, archiveName: string, opts: TorchSaveOptions = {}) {
    this.#sink = sink;
    this.#prefix = archiveName;
    this.#opts = opts;
  }

  /** Bytes written so far. */
  get size(): number {
    return this.#pos;
  }

  #emit(b: Uint8Array): void {
    if (b.length) this.#sink(b);
    this.#pos += b.length;
  }

  #record(name: string, data: Uint8Array): void {
    const nameBytes = enc.encode(`${this.#prefix}/${name}`);
    const offset = this.#pos;
    const size = data.length;
    const zip64 = size >= U32_MAX;
    const z64Len = zip64 ? 20 : 0;
    // PyTorch pads every record with an extra field 'FB' so its data starts on a 64-byte boundary.
    const start = offset + 30 + nameBytes.length + z64Len + 4;
    const pad = (TORCH_RECORD_ALIGNMENT - (start % TORCH_RECORD_ALIGNMENT)) % TORCH_RECORD_ALIGNMENT;
    const h = new Uint8Array(30 + nameBytes.length + z64Len + 4 + pad);
    const dv = new DataView(h.buffer);
    const crc = crc32(data);
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(4, zip64 ? 45 : 20, true); // version needed
    dv.setUint16(6, 0x0800, true); // UTF-8 names
    dv.setUint16(8, 0, true); // stored
    dv.setUint32(14, crc, true);
    dv.setUint32(18, zip64 ? U32_MAX : size, true);
    dv.setUint32(22, zip64 ? U32_MAX : size, true);
    dv.setUint16(26, nameBytes.length, true);
    dv.setUint16(28, z64Len + 4 + pad, true);
    h.set(nameBytes, 30);
    let p = 30 + nameBytes.length;
    if (zip64) {
      dv.setUint16(p, 0x0001, true);
      dv.setUint16(p + 2, 16, true);
      dv.setBigUint64(p + 4, BigInt(size), true);
      dv.setBigUint64(p + 12, BigInt(size), true);
      p += 20;
    }
    dv.setUint16(p, 0x4246, true); // "FB"
    dv.setUint16(p + 2, pad, true);
    h.fill(0x5a, p + 4); // 'Z', as PyTorch pads
    this.#emit(h);
    this.#emit(data);
    this.#central.push({ name: nameBytes, crc, size, offset });
  }

  /**
   * Writes `data.pkl` for `tensors` (in the order their storages will follow) and the `byteorder` record.
   */
  begin(tensors: readonly PickledTensor[]): void {
    if (this.#state !== "new") throw new T2tVitError("TorchZipWriter.begin called twice");
    for (const t of tensors) {
      if (!Object.hasOwn(STORAGE_CLASS_OF, t.dtype)) {
        throw new T2tVitError(`dtype ${t.dtype} of '${t.name}' has no torch storage class`);
      }
    }
    this.#expected = tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
    this.#record("data.pkl", torchStateDictPickle(this.#expected, this.#opts));
    this.#record("byteorder", enc.encode("little"));
    this.#state = "tensors";
  }

  /** Writes the next tensor's storage (its bytes, little-endian, C order). */
  tensor(t: RawTensor): void {
    if (this.#state !== "tensors") throw new T2tVitError("TorchZipWriter.tensor called outside begin/end");
    const want = this.#expected[this.#next];
    if (!want) throw new T2tVitError(`more tensors than the ${this.#expected.length} begin() announced`);
    const nbytes = numelOf(want.shape) * DTYPE_SIZE[want.dtype];
    if (t.dtype !== want.dtype || t.data.length !== nbytes || t.shape.join() !== want.shape.join()) {
      throw new T2tVitError(
        `tensor ${this.#next} ('${want.name}') is ${t.dtype}[${t.shape}] with ${t.data.length} bytes, ` +
          `announced as ${want.dtype}[${want.shape}]`,
      );
    }
    this.#record(`data/${this.#next++}`, t.data);
  }

  /** Writes the `version` record and the central directory (with ZIP64 end records, as PyTorch does). */
  end(): void {
    if (this.#state !== "tensors") throw new T2tVitError("TorchZipWriter.end called before begin or twice");
    if (this.#next !== this.#expected.length) {
      throw new T2tVitError(`${this.#next} of the ${this.#expected.length} announced tensors were written`);
    }
    this.#record("version", enc.encode("3\n"));
    const cdStart = this.#pos;
    for (const e of this.#central) {
      const big = e.size >= U32_MAX || e.offset >= U32_MAX;
      const extra = big ? 4 + (e.size >= U32_MAX ? 16 : 0) + (e.offset >= U32_MAX ? 8 : 0) : 0;
      const c = new Uint8Array(46 + e.name.length + extra);
      const dv = new DataView(c.buffer);
      dv.setUint32(0, 0x02014b50, true);
      dv.setUint16(4, 45, true); // made by (4.5)
      dv.setUint16(6, big ? 45 : 20, true);
      dv.setUint16(8, 0x0800, true);
      dv.setUint16(10, 0, true);
      dv.setUint32(16, e.crc, true);
      dv.setUint32(20, e.size >= U32_MAX ? U32_MAX : e.size, true);
      dv.setUint32(24, e.size >= U32_MAX ? U32_MAX : e.size, true);
      dv.setUint16(28, e.name.length, true);
      dv.setUint16(30, extra, true);
      dv.setUint32(42, e.offset >= U32_MAX ? U32_MAX : e.offset, true);
      c.set(e.name, 46);
      if (big) {
        let p = 46 + e.name.length;
        dv.setUint16(p, 0x0001, true);
        dv.setUint16(p + 2, extra - 4, true);
        p += 4;
        if (e.size >= U32_MAX) {
          dv.setBigUint64(p, BigInt(e.size), true);
          dv.setBigUint64(p + 8, BigInt(e.size), true);
          p += 16;
        }
        if (e.offset >= U32_MAX) dv.setBigUint64(p, BigInt(e.offset), true);
      }
      this.#emit(c);
    }
    const cdSize = this.#pos - cdStart;
    const n = this.#central.length;
    const z64At = this.#pos;
    const tail = new Uint8Array(56 + 20 + 22);
    const dv = new DataView(tail.buffer);
    dv.setUint32(0, 0x06064b50, true); // ZIP64 end of central directory record
    dv.setBigUint64(4, 44n, true);
    dv.setUint16(12, 45, true);
    dv.setUint16(14, 45, true);
    dv.setBigUint64(24, BigInt(n), true);
    dv.setBigUint64(32, BigInt(n), true);
    dv.setBigUint64(40, BigInt(cdSize), true);
    dv.setBigUint64(48, BigInt(cdStart), true);
    dv.setUint32(56, 0x07064b50, true); // its locator
    dv.setBigUint64(64, BigInt(z64At), true);
    dv.setUint32(72, 1, true);
    dv.setUint32(76, 0x06054b50, true); // end of central directory
    dv.setUint16(84, Math.min(n, 0xffff), true);
    dv.setUint16(86, Math.min(n, 0xffff), true);
    dv.setUint32(88, Math.min(cdSize, U32_MAX), true);
    dv.setUint32(92, Math.min(cdStart, U32_MAX), true);
    this.#emit(tail);
    this.#state = "done";
  }
}

/**
 * A whole `torch.save` zip file in memory (see {@link TorchZipWriter} for streaming to a file).
 *
 * @example
 * ```ts
 * import { serializeTorchCheckpoint } from "./torch_writer.ts";
 * const w = { dtype: "F32" as const, shape: [2], data: new Uint8Array(8) };
 * const bytes = serializeTorchCheckpoint(new Map([["w", w]]), "model", { wrap: "state_dict_ema" });
 * ```
 */
export function serializeTorchCheckpoint(
  tensors: ReadonlyMap<string, RawTensor>,
  archiveName = "archive",
  opts: TorchSaveOptions = {},
): Uint8Array {
  const parts: Uint8Array[] = [];
  const w = new TorchZipWriter((b) => parts.push(b), archiveName, opts);
  w.begin([...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })));
  for (const t of tensors.values()) w.tensor(t);
  w.end();
  const out = new Uint8Array(w.size);
  let o = 0;
  for (const b of parts) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}
