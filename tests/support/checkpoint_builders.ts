/**
 * Test helpers that build pickles, zip archives and torch.save files byte by byte, so tests can make hostile
 * and broken checkpoints without Python. Nothing here is part of the package.
 */

import zlib from "node:zlib";
import { Buffer } from "node:buffer";

const enc = new TextEncoder();

/** Pickle opcodes by name. */
export const OP = {
  MARK: 0x28,
  STOP: 0x2e,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
  FLOAT: 0x46,
  INT: 0x49,
  BININT: 0x4a,
  BININT1: 0x4b,
  LONG: 0x4c,
  BININT2: 0x4d,
  NONE: 0x4e,
  PERSID: 0x50,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  STRING: 0x53,
  BINSTRING: 0x54,
  SHORT_BINSTRING: 0x55,
  UNICODE: 0x56,
  BINUNICODE: 0x58,
  APPEND: 0x61,
  BUILD: 0x62,
  GLOBAL: 0x63,
  DICT: 0x64,
  EMPTY_DICT: 0x7d,
  APPENDS: 0x65,
  GET: 0x67,
  BINGET: 0x68,
  INST: 0x69,
  LONG_BINGET: 0x6a,
  LIST: 0x6c,
  EMPTY_LIST: 0x5d,
  OBJ: 0x6f,
  PUT: 0x70,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  SETITEM: 0x73,
  TUPLE: 0x74,
  EMPTY_TUPLE: 0x29,
  SETITEMS: 0x75,
  BINFLOAT: 0x47,
  PROTO: 0x80,
  NEWOBJ: 0x81,
  EXT1: 0x82,
  EXT2: 0x83,
  EXT4: 0x84,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  LONG4: 0x8b,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e,
  EMPTY_SET: 0x8f,
  ADDITEMS: 0x90,
  FROZENSET: 0x91,
  NEWOBJ_EX: 0x92,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
  BYTEARRAY8: 0x96,
  NEXT_BUFFER: 0x97,
  READONLY_BUFFER: 0x98,
} as const;

/** A chainable pickle writer. */
export class Pickle {
  /** The bytes so far. */
  readonly out: number[] = [];
  private memo = 0;

  /** Raw bytes. */
  raw(...b: (number | Uint8Array | number[])[]): this {
    for (const x of b) {
      if (typeof x === "number") this.out.push(x);
      else for (const y of x) this.out.push(y);
    }
    return this;
  }
  /** A line of text followed by a newline (for text opcodes). */
  line(s: string): this {
    return this.raw(enc.encode(s + "\n"));
  }
  /** PROTO n. */
  proto(n = 2): this {
    return this.raw(OP.PROTO, n);
  }
  /** MARK. */
  mark(): this {
    return this.raw(OP.MARK);
  }
  /** STOP. */
  stop(): this {
    return this.raw(OP.STOP);
  }
  /** None. */
  none(): this {
    return this.raw(OP.NONE);
  }
  /** True/False. */
  bool(b: boolean): this {
    return this.raw(b ? OP.NEWTRUE : OP.NEWFALSE);
  }
  /** An int with the smallest binary opcode (LONG1 for big or negative-beyond-int32 values). */
  int(n: number | bigint): this {
    if (typeof n === "number" && Number.isInteger(n) && n >= 0 && n < 256) return this.raw(OP.BININT1, n);
    if (typeof n === "number" && Number.isInteger(n) && n >= 0 && n < 65536) {
      return this.raw(OP.BININT2, n & 0xff, n >> 8);
    }
    if (typeof n === "number" && Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31) {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setInt32(0, n, true);
      return this.raw(OP.BININT, b);
    }
    return this.raw(OP.LONG1, ...encodeLong(BigInt(n)));
  }
  /** A float (BINFLOAT). */
  float(x: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, x, false);
    return this.raw(OP.BINFLOAT, b);
  }
  /** A str (BINUNICODE). */
  str(s: string): this {
    const b = enc.encode(s);
    return this.raw(OP.BINUNICODE, u32(b.length), b);
  }
  /** bytes (BINBYTES). */
  bytes(b: Uint8Array): this {
    return this.raw(OP.BINBYTES, u32(b.length), b);
  }
  /** GLOBAL module name (protocol 0-2 style). */
  global(module: string, name: string): this {
    return this.raw(OP.GLOBAL).line(module).line(name);
  }
  /** STACK_GLOBAL (protocol 4 style). */
  stackGlobal(module: string, name: string): this {
    return this.str(module).str(name).raw(OP.STACK_GLOBAL);
  }
  /** TUPLE of the items since the last MARK. */
  tuple(): this {
    return this.raw(OP.TUPLE);
  }
  /** EMPTY_TUPLE. */
  emptyTuple(): this {
    return this.raw(OP.EMPTY_TUPLE);
  }
  /** REDUCE. */
  reduce(): this {
    return this.raw(OP.REDUCE);
  }
  /** BUILD. */
  build(): this {
    return this.raw(OP.BUILD);
  }
  /** NEWOBJ. */
  newobj(): this {
    return this.raw(OP.NEWOBJ);
  }
  /** EMPTY_DICT. */
  dict(): this {
    return this.raw(OP.EMPTY_DICT);
  }
  /** SETITEM. */
  setitem(): this {
    return this.raw(OP.SETITEM);
  }
  /** SETITEMS. */
  setitems(): this {
    return this.raw(OP.SETITEMS);
  }
  /** EMPTY_LIST. */
  list(): this {
    return this.raw(OP.EMPTY_LIST);
  }
  /** APPEND. */
  append(): this {
    return this.raw(OP.APPEND);
  }
  /** BINPERSID. */
  binpersid(): this {
    return this.raw(OP.BINPERSID);
  }
  /** BINPUT to the next memo slot. */
  put(): this {
    return this.raw(OP.BINPUT, this.memo++ & 0xff);
  }
  /** Any value made of None/bool/int/float/str/bytes/arrays (tuples)/Maps (dicts). */
  value(v: unknown): this {
    if (v === null) return this.none();
    if (typeof v === "boolean") return this.bool(v);
    if (typeof v === "number" && Number.isInteger(v)) return this.int(v);
    if (typeof v === "bigint") return this.int(v);
    if (typeof v === "number") return this.float(v);
    if (typeof v === "string") return this.str(v);
    if (v instanceof Uint8Array) return this.bytes(v);
    if (Array.isArray(v)) {
      this.mark();
      for (const x of v) this.value(x);
      return this.tuple();
    }
    if (v instanceof Map) {
      this.dict();
      if (v.size === 0) return this;
      this.mark();
      for (const [k, x] of v) this.value(k).value(x);
      return this.setitems();
    }
    throw new Error(`cannot pickle ${String(v)}`);
  }
  /** The bytes. */
  bytesOut(): Uint8Array {
    return new Uint8Array(this.out);
  }
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

/** Python's two's-complement little-endian long encoding, length-prefixed with one byte (LONG1). */
export function encodeLong(n: bigint): number[] {
  if (n === 0n) return [0];
  const out: number[] = [];
  let x = n;
  for (;;) {
    out.push(Number(x & 0xffn));
    x >>= 8n;
    const last = out[out.length - 1];
    if ((x === 0n && !(last & 0x80)) || (x === -1n && last & 0x80)) break;
  }
  return [out.length, ...out];
}

/** A tensor to put in a built checkpoint. */
export interface TensorSpec {
  /** Storage key. */
  key: string;
  /** Storage class name (`FloatStorage`). */
  storage: string;
  /** Storage element count declared in the persistent id. */
  numel: number;
  /** Storage offset. */
  offset?: number;
  /** Size. */
  shape: number[];
  /** Stride (default contiguous). */
  stride?: number[];
}

function contiguous(shape: number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/**
 * Pickles `{topKey: OrderedDict(name -> tensor)}` the way torch.save does (zip persistent ids by default,
 * legacy 6-tuples with `legacy`). With `topKey` null the OrderedDict is the root.
 */
export function torchPickle(
  tensors: [string, TensorSpec][],
  opts: { topKey?: string | null; legacy?: boolean; extra?: (p: Pickle) => void } = {},
): Uint8Array {
  const p = new Pickle().proto(2);
  const topKey = opts.topKey === undefined ? "state_dict" : opts.topKey;
  if (topKey !== null) p.dict().str(topKey);
  p.global("collections", "OrderedDict").emptyTuple().reduce();
  if (tensors.length) {
    p.mark();
    for (const [name, t] of tensors) {
      p.str(name).global("torch._utils", "_rebuild_tensor_v2");
      p.mark();
      p.mark().str("storage").global("torch", t.storage).str(t.key).str("cpu").int(t.numel);
      if (opts.legacy) p.none();
      p.tuple().binpersid();
      p.int(t.offset ?? 0).value(t.shape).value(t.stride ?? contiguous(t.shape)).bool(false);
      p.global("collections", "OrderedDict").emptyTuple().reduce();
      p.tuple().reduce();
    }
    p.setitems();
  }
  if (topKey !== null) p.setitem();
  opts.extra?.(p);
  return p.stop().bytesOut();
}

/** A zip entry to write. */
export interface ZipFileSpec {
  /** Path in the archive. */
  name: string;
  /** Contents. */
  data: Uint8Array;
  /** Deflate it (default stored). */
  deflate?: boolean;
}

/** Writes a zip archive (ZIP64 end records with `zip64`, as PyTorch writes them). */
export function makeZip(files: ZipFileSpec[], opts: { zip64?: boolean } = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const name = enc.encode(f.name);
    const payload = f.deflate ? new Uint8Array(zlib.deflateRawSync(Buffer.from(f.data))) : f.data;
    const crc = zlib.crc32(Buffer.from(f.data)) >>> 0;
    const lh = new Uint8Array(30 + name.length);
    const dv = new DataView(lh.buffer);
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(4, 20, true);
    dv.setUint16(8, f.deflate ? 8 : 0, true);
    dv.setUint32(14, crc, true);
    dv.setUint32(18, payload.length, true);
    dv.setUint32(22, f.data.length, true);
    dv.setUint16(26, name.length, true);
    lh.set(name, 30);
    const ch = new Uint8Array(46 + name.length);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, f.deflate ? 8 : 0, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, payload.length, true);
    cv.setUint32(24, f.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    ch.set(name, 46);
    central.push(ch);
    parts.push(lh, payload);
    offset += lh.length + payload.length;
  }
  const cdOffset = offset;
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  for (const c of central) parts.push(c);
  offset += cdSize;
  if (opts.zip64) {
    const rec = new Uint8Array(56);
    const rv = new DataView(rec.buffer);
    rv.setUint32(0, 0x06064b50, true);
    rv.setBigUint64(4, 44n, true);
    rv.setUint16(12, 45, true);
    rv.setUint16(14, 45, true);
    rv.setBigUint64(24, BigInt(files.length), true);
    rv.setBigUint64(32, BigInt(files.length), true);
    rv.setBigUint64(40, BigInt(cdSize), true);
    rv.setBigUint64(48, BigInt(cdOffset), true);
    const loc = new Uint8Array(20);
    const lv = new DataView(loc.buffer);
    lv.setUint32(0, 0x07064b50, true);
    lv.setBigUint64(8, BigInt(offset), true);
    lv.setUint32(16, 1, true);
    parts.push(rec, loc);
  }
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, opts.zip64 ? 0xffff : files.length, true);
  ev.setUint16(10, opts.zip64 ? 0xffff : files.length, true);
  ev.setUint32(12, opts.zip64 ? 0xffffffff : cdSize, true);
  ev.setUint32(16, opts.zip64 ? 0xffffffff : cdOffset, true);
  parts.push(eocd);
  return concat(parts);
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A zip checkpoint: `<prefix>/data.pkl`, `<prefix>/version`, and `<prefix>/data/<key>` records. */
export function makeZipCheckpoint(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  opts: { prefix?: string; byteorder?: string; zip64?: boolean } = {},
): Uint8Array {
  const prefix = opts.prefix ?? "archive";
  const files: ZipFileSpec[] = [{ name: `${prefix}/data.pkl`, data: pickle }];
  if (opts.byteorder) files.push({ name: `${prefix}/byteorder`, data: enc.encode(opts.byteorder) });
  for (const [k, v] of Object.entries(storages)) files.push({ name: `${prefix}/data/${k}`, data: v });
  files.push({ name: `${prefix}/version`, data: enc.encode("3\n") });
  return makeZip(files, { zip64: opts.zip64 ?? true });
}

/** A legacy torch.save file: magic, protocol, sys_info, main pickle, key list, storages. */
export function makeLegacyCheckpoint(
  pickle: Uint8Array,
  storages: [string, Uint8Array, number][],
): Uint8Array {
  const magic = new Pickle().proto(2).int(0x1950a86a20f9469cfc6cn).stop().bytesOut();
  const proto = new Pickle().proto(2).int(1001).stop().bytesOut();
  const sys = new Pickle().proto(2).value(
    new Map<string, unknown>([
      ["protocol_version", 1001],
      ["little_endian", true],
      ["type_sizes", new Map([["short", 2], ["int", 4], ["long", 4]])],
    ]),
  ).stop().bytesOut();
  const keys = new Pickle().proto(2).list();
  if (storages.length) {
    keys.mark();
    for (const [k] of storages) keys.str(k);
    keys.raw(OP.APPENDS);
  }
  const parts = [magic, proto, sys, pickle, keys.stop().bytesOut()];
  for (const [, data, numel] of storages) {
    const n = new Uint8Array(8);
    new DataView(n.buffer).setBigInt64(0, BigInt(numel), true);
    parts.push(n, data);
  }
  return concat(parts);
}

/** float32 values as little-endian bytes. */
export function f32bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}
