/**
 * Structure maps of the fuzzer's seed files: where the length, size, offset, count and index fields of a zip
 * archive, a pickle stream and a safetensors header are, so mutations can aim at the fields a parser trusts
 * instead of only at tensor data. Computed once per seed file from the valid original.
 *
 * @module
 */

import { type PyValue, unpickle } from "../converters/pickle.ts";
import { resolveTorchGlobal, storageClassDType, TorchStorage } from "../converters/torch_globals.ts";

/** A little-endian integer field at a byte offset (or big-endian for pickle floats, not mapped here). */
export interface Field {
  /** Byte offset in the file. */
  at: number;
  /** Width in bytes: 1, 2, 4 or 8. */
  width: 1 | 2 | 4 | 8;
  /** Signed (pickle BININT, LONG4, BINSTRING lengths). */
  signed?: boolean;
  /** What it is, for case descriptions (`cd[3].csize`, `pkl BINUNICODE len`). */
  name: string;
  /** Its value in the original file. */
  value: number;
}

/** One opcode of a pickle stream. */
export interface PickleOp {
  /** Offset of the opcode byte. */
  pos: number;
  /** The opcode. */
  op: number;
  /** Offset just past its argument. */
  end: number;
}

/** A scanned pickle: its opcodes and the integer fields inside their arguments. */
export interface PickleMap {
  /** Offset of the first opcode. */
  start: number;
  /** Offset just past STOP. */
  end: number;
  /** Opcodes in order. */
  ops: PickleOp[];
  /** Length fields (string/bytes/long lengths, FRAME sizes). */
  lengths: Field[];
  /** Memo indices (GET/PUT forms). */
  memo: Field[];
  /** Integer values (BININT*, where shapes, strides, offsets and numels live). */
  ints: Field[];
}

/** A zip central-directory entry, as bytes and offsets. */
export interface ZipCentral {
  /** Offset of the entry in the file. */
  at: number;
  /** Its length (46 + name + extra + comment). */
  length: number;
  /** Entry name. */
  name: string;
  /** Local header offset. */
  local: number;
}

/** Where a zip archive's records are. */
export interface ZipMap {
  /** End-of-central-directory record offset. */
  eocd: number;
  /** ZIP64 end record offset, or -1. */
  zip64Record: number;
  /** ZIP64 locator offset, or -1. */
  zip64Locator: number;
  /** Central directory offset and size. */
  cdOffset: number;
  /** Central directory size. */
  cdSize: number;
  /** Central entries. */
  central: ZipCentral[];
  /** Every integer field of the end records, central entries and local headers (incl. ZIP64 extras). */
  fields: Field[];
  /** `[start, end)` byte ranges of headers and directory: where damage reaches parsing logic. */
  regions: [number, number][];
}

const le = (b: Uint8Array, p: number, w: number): number => {
  let v = 0;
  for (let i = w - 1; i >= 0; i--) v = v * 256 + b[p + i];
  return v;
};

function u32(b: Uint8Array, p: number): number {
  return le(b, p, 4);
}

/** Finds the last occurrence of a 4-byte little-endian signature at or before `from`. */
function lastSig(b: Uint8Array, sig: number, from = b.length - 4): number {
  for (let p = from; p >= 0; p--) if (b[p] === 0x50 && b[p + 1] === 0x4b && u32(b, p) === sig) return p;
  return -1;
}

/** Maps a valid zip archive. Returns null when the bytes are not one. */
export function mapZip(b: Uint8Array): ZipMap | null {
  const eocd = lastSig(b, 0x06054b50);
  if (eocd < 0) return null;
  const fields: Field[] = [];
  const f = (at: number, width: 1 | 2 | 4 | 8, name: string) =>
    fields.push({ at, width, name, value: le(b, at, width) });
  f(eocd + 4, 2, "eocd.disk");
  f(eocd + 6, 2, "eocd.cdDisk");
  f(eocd + 8, 2, "eocd.countDisk");
  f(eocd + 10, 2, "eocd.count");
  f(eocd + 12, 4, "eocd.cdSize");
  f(eocd + 16, 4, "eocd.cdOffset");
  f(eocd + 20, 2, "eocd.commentLen");
  let cdOffset = le(b, eocd + 16, 4);
  let cdSize = le(b, eocd + 12, 4);
  let count = le(b, eocd + 10, 2);
  let zip64Record = -1;
  let zip64Locator = -1;
  const regions: [number, number][] = [[eocd, b.length]];
  if (eocd >= 20 && u32(b, eocd - 20) === 0x07064b50) {
    zip64Locator = eocd - 20;
    f(zip64Locator + 4, 4, "zip64loc.disk");
    f(zip64Locator + 8, 8, "zip64loc.recordOffset");
    f(zip64Locator + 16, 4, "zip64loc.disks");
    zip64Record = le(b, zip64Locator + 8, 8);
    if (zip64Record + 56 <= b.length && u32(b, zip64Record) === 0x06064b50) {
      f(zip64Record + 4, 8, "zip64.recordSize");
      f(zip64Record + 16, 4, "zip64.disk");
      f(zip64Record + 20, 4, "zip64.cdDisk");
      f(zip64Record + 24, 8, "zip64.countDisk");
      f(zip64Record + 32, 8, "zip64.count");
      f(zip64Record + 40, 8, "zip64.cdSize");
      f(zip64Record + 48, 8, "zip64.cdOffset");
      count = le(b, zip64Record + 32, 8);
      cdSize = le(b, zip64Record + 40, 8);
      cdOffset = le(b, zip64Record + 48, 8);
      regions.push([zip64Record, eocd]);
    } else zip64Record = -1;
  }
  regions.push([cdOffset, cdOffset + cdSize]);
  const central: ZipCentral[] = [];
  const dec = new TextDecoder();
  let p = cdOffset;
  for (let i = 0; i < count && p + 46 <= b.length && u32(b, p) === 0x02014b50; i++) {
    const nameLen = le(b, p + 28, 2);
    const extraLen = le(b, p + 30, 2);
    const commentLen = le(b, p + 32, 2);
    const name = dec.decode(b.subarray(p + 46, p + 46 + nameLen));
    const tag = `cd[${i}]`;
    f(p + 8, 2, `${tag}.flags`);
    f(p + 10, 2, `${tag}.method`);
    f(p + 16, 4, `${tag}.crc`);
    f(p + 20, 4, `${tag}.csize`);
    f(p + 24, 4, `${tag}.usize`);
    f(p + 28, 2, `${tag}.nameLen`);
    f(p + 30, 2, `${tag}.extraLen`);
    f(p + 32, 2, `${tag}.commentLen`);
    f(p + 34, 2, `${tag}.diskStart`);
    f(p + 42, 4, `${tag}.localOffset`);
    let local = le(b, p + 42, 4);
    // extra fields: ids and lengths, and the ZIP64 values
    let q = p + 46 + nameLen;
    const qEnd = q + extraLen;
    while (q + 4 <= qEnd) {
      const id = le(b, q, 2);
      const len = le(b, q + 2, 2);
      f(q + 2, 2, `${tag}.extra[${id}].len`);
      if (id === 1) {
        for (let r = q + 4, k = 0; r + 8 <= q + 4 + len; r += 8, k++) {
          f(r, 8, `${tag}.zip64[${k}]`);
          if (k === 0 && le(b, p + 24, 4) !== 0xffffffff && le(b, p + 42, 4) === 0xffffffff) {
            local = le(b, r, 8);
          }
        }
      }
      q += 4 + len;
    }
    central.push({ at: p, length: 46 + nameLen + extraLen + commentLen, name, local });
    if (local + 30 <= b.length && u32(b, local) === 0x04034b50) {
      const lt = `local[${i}]`;
      f(local + 6, 2, `${lt}.flags`);
      f(local + 8, 2, `${lt}.method`);
      f(local + 14, 4, `${lt}.crc`);
      f(local + 18, 4, `${lt}.csize`);
      f(local + 22, 4, `${lt}.usize`);
      f(local + 26, 2, `${lt}.nameLen`);
      f(local + 28, 2, `${lt}.extraLen`);
      const lNameLen = le(b, local + 26, 2);
      const lExtraLen = le(b, local + 28, 2);
      let r = local + 30 + lNameLen;
      const rEnd = r + lExtraLen;
      while (r + 4 <= rEnd) {
        f(r + 2, 2, `${lt}.extra[${le(b, r, 2)}].len`);
        if (le(b, r, 2) === 1) {
          for (let s = r + 4, k = 0; s + 8 <= r + 4 + le(b, r + 2, 2); s += 8, k++) {
            f(s, 8, `${lt}.zip64[${k}]`);
          }
        }
        r += 4 + le(b, r + 2, 2);
      }
      regions.push([local, local + 30 + lNameLen + lExtraLen]);
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  return { eocd, zip64Record, zip64Locator, cdOffset, cdSize, central, fields, regions };
}

/** Bytes of each pickle opcode's fixed-size argument; -1 = a text line, -2 = two lines; absent = none. */
const FIXED: Record<number, number> = {
  0x80: 1, // PROTO
  0x4b: 1, // BININT1
  0x68: 1, // BINGET
  0x71: 1, // BINPUT
  0x82: 1, // EXT1
  0x4d: 2, // BININT2
  0x83: 2, // EXT2
  0x4a: 4, // BININT
  0x84: 4, // EXT4
  0x6a: 4, // LONG_BINGET
  0x72: 4, // LONG_BINPUT
  0x95: 8, // FRAME
  0x47: 8, // BINFLOAT
  0x49: -1, // INT
  0x4c: -1, // LONG
  0x46: -1, // FLOAT
  0x53: -1, // STRING
  0x56: -1, // UNICODE
  0x70: -1, // PUT
  0x67: -1, // GET
  0x50: -1, // PERSID
  0x63: -2, // GLOBAL
  0x69: -2, // INST
};

/** Opcodes followed by a length and that many bytes: [length width, signed]. */
const COUNTED: Record<number, [1 | 4 | 8, boolean]> = {
  0x55: [1, false], // SHORT_BINSTRING
  0x43: [1, false], // SHORT_BINBYTES
  0x8c: [1, false], // SHORT_BINUNICODE
  0x8a: [1, false], // LONG1
  0x54: [4, true], // BINSTRING
  0x58: [4, false], // BINUNICODE
  0x42: [4, false], // BINBYTES
  0x8b: [4, true], // LONG4
  0x8d: [8, false], // BINUNICODE8
  0x8e: [8, false], // BINBYTES8
  0x96: [8, false], // BYTEARRAY8
};

const NAMES: Record<number, string> = {
  0x55: "SHORT_BINSTRING",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8a: "LONG1",
  0x54: "BINSTRING",
  0x58: "BINUNICODE",
  0x42: "BINBYTES",
  0x8b: "LONG4",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x96: "BYTEARRAY8",
  0x68: "BINGET",
  0x71: "BINPUT",
  0x6a: "LONG_BINGET",
  0x72: "LONG_BINPUT",
  0x4b: "BININT1",
  0x4d: "BININT2",
  0x4a: "BININT",
  0x95: "FRAME",
};

/** Every opcode the scanner knows without arguments (so an unknown byte ends the scan). */
const NO_ARG = new Set([
  0x28,
  0x2e,
  0x30,
  0x31,
  0x32,
  0x4e,
  0x51,
  0x52,
  0x61,
  0x62,
  0x64,
  0x7d,
  0x65,
  0x6c,
  0x5d,
  0x6f,
  0x73,
  0x74,
  0x29,
  0x75,
  0x81,
  0x85,
  0x86,
  0x87,
  0x88,
  0x89,
  0x8f,
  0x90,
  0x91,
  0x92,
  0x93,
  0x94,
  0x97,
  0x98,
]);

/** Scans one pickle from `start` to its STOP. Returns null when the bytes are not a well-formed pickle. */
export function mapPickle(b: Uint8Array, start = 0): PickleMap | null {
  const ops: PickleOp[] = [];
  const lengths: Field[] = [];
  const memo: Field[] = [];
  const ints: Field[] = [];
  let p = start;
  while (p < b.length) {
    const op = b[p];
    const pos = p;
    p++;
    const fixed = FIXED[op];
    const counted = COUNTED[op];
    if (counted) {
      const [w, signed] = counted;
      if (p + w > b.length) return null;
      const n = le(b, p, w);
      lengths.push({ at: p, width: w, signed, name: `pkl ${NAMES[op]} len`, value: n });
      p += w + n;
    } else if (fixed === -1 || fixed === -2) {
      for (let k = 0; k < -fixed; k++) {
        const nl = b.indexOf(0x0a, p);
        if (nl < 0) return null;
        p = nl + 1;
      }
    } else if (fixed !== undefined) {
      if (p + fixed > b.length) return null;
      const name = `pkl ${NAMES[op] ?? op.toString(16)}`;
      const field: Field = { at: p, width: fixed as 1 | 2 | 4 | 8, name, value: le(b, p, fixed) };
      if (op === 0x68 || op === 0x71 || op === 0x6a || op === 0x72) memo.push(field);
      else if (op === 0x4b || op === 0x4d || op === 0x4a) ints.push({ ...field, signed: op === 0x4a });
      else if (op === 0x95) lengths.push(field);
      p += fixed;
    } else if (!NO_ARG.has(op)) return null;
    ops.push({ pos, op, end: p });
    if (op === 0x2e) return { start, end: p, ops, lengths, memo, ints };
  }
  return null;
}

/** A legacy torch.save file: its five pickles and the storages' element-count fields. */
export interface LegacyMap {
  /** The magic, protocol, sys_info, main and key-list pickles. */
  pickles: PickleMap[];
  /** The 8-byte element count before each storage's data. */
  counts: Field[];
}

/**
 * Maps a legacy file. The storages' sizes come from the main pickle's persistent ids (read with the project's
 * own unpickler on the valid original), their order from the key list.
 */
export function mapLegacy(b: Uint8Array): LegacyMap | null {
  const pickles: PickleMap[] = [];
  let p = 0;
  for (let i = 0; i < 5; i++) {
    const m = mapPickle(b, p);
    if (!m) return null;
    pickles.push(m);
    p = m.end;
  }
  const sizes = new Map<string, number>();
  try {
    unpickle(b, {
      offset: pickles[3].start,
      resolveGlobal: resolveTorchGlobal,
      persistentLoad: (pid) => {
        const dtype = Array.isArray(pid) ? storageClassDType(pid[1]) : undefined;
        if (!Array.isArray(pid) || !dtype || typeof pid[2] !== "string" || typeof pid[4] !== "number") {
          throw new Error("not a legacy storage id");
        }
        sizes.set(pid[2], pid[4] * dtype.itemSize);
        return new TorchStorage(pid[2], dtype, "cpu", pid[4] * dtype.itemSize, null);
      },
    });
  } catch {
    return null;
  }
  let keys: PyValue;
  try {
    keys = unpickle(b, { offset: pickles[4].start, resolveGlobal: () => undefined }).value;
  } catch {
    return null;
  }
  const counts: Field[] = [];
  if (Array.isArray(keys)) {
    for (const k of keys) {
      const nbytes = sizes.get(String(k));
      if (nbytes === undefined || p + 8 > b.length) break;
      counts.push({ at: p, width: 8, name: `legacy storage '${String(k)}' count`, value: le(b, p, 8) });
      p += 8 + nbytes;
    }
  }
  return { pickles, counts };
}

/** A safetensors file's header. */
export interface SafetensorsMap {
  /** Header length (the u64 at offset 0). */
  headerLen: number;
  /** The parsed header. */
  header: Record<string, unknown>;
}

/** Maps a valid safetensors file, or null. */
export function mapSafetensors(b: Uint8Array): SafetensorsMap | null {
  if (b.length < 8) return null;
  const n = le(b, 0, 8);
  if (n > b.length - 8) return null;
  try {
    const header = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + n)));
    return { headerLen: n, header };
  } catch {
    return null;
  }
}
