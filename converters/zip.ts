/**
 * A strict, read-only zip reader for PyTorch checkpoints (torch >= 1.6 writes stored, ZIP64 archives with
 * 64-byte-aligned tensor data). Stored entries are returned as views of the source bytes when they are in
 * memory (no copy); deflated entries from other tools are inflated under a size cap. Every declared offset and
 * size is checked against the bytes that are really there, and CRC-32s are verified. CRC-32 and inflate use
 * the runtime's native zlib where there is one (Deno, Node: several GB/s), else JavaScript (browsers:
 * `fflate`'s streaming inflate and a table-driven CRC-32).
 *
 * @module
 */

import { Inflate } from "fflate";
import { CheckpointError } from "../src/core/errors.ts";
import { nodeBuiltin } from "../src/core/platform.ts";
import type { ByteSource } from "./source.ts";

/** One file of a zip archive, as its central directory describes it. */
export interface ZipEntry {
  /** Path inside the archive. */
  readonly name: string;
  /** 0 = stored, 8 = deflated. */
  readonly method: number;
  /** General-purpose flags. */
  readonly flags: number;
  /** CRC-32 of the uncompressed data. */
  readonly crc32: number;
  /** Size of the stored (possibly compressed) data. */
  readonly compressedSize: number;
  /** Size once uncompressed. */
  readonly size: number;
  /** Offset of the local file header. */
  readonly localHeaderOffset: number;
}

/** Options of {@link ZipArchive.read}. */
export interface ZipReadOptions {
  /** Verify the entry's CRC-32 (default true; it runs at several GB/s). */
  verifyCrc?: boolean;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
/** Deflate cannot expand data by more than about 1032:1; a declared size beyond that is a lie. */
const MAX_DEFLATE_RATIO = 1032;
/**
 * Everything an archive inflates, over its whole life (re-reads included), may total at most
 * `INFLATE_FACTOR` times the file's size plus {@link INFLATE_SLACK}: a small file cannot make gigabytes.
 * Torch writes stored archives; other tools' deflated weights compress about 1.1:1.
 */
export const INFLATE_FACTOR = 16;
/** See {@link INFLATE_FACTOR}: 32 MiB. */
export const INFLATE_SLACK: number = 32 << 20;
/** Inflated records kept for re-reads (the most recently used first out), in bytes. */
const INFLATE_CACHE_BYTES = 256 << 20;
/** Chunk size of a stored record's one-time CRC pass over a file. */
const CRC_CHUNK = 4 << 20;

/** True when `head` starts like a zip archive (a local file header or an empty archive's end record). */
export function isZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b &&
    ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6));
}

function u16(b: Uint8Array, p: number): number {
  return b[p] | (b[p + 1] << 8);
}
function u32(b: Uint8Array, p: number): number {
  return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
}
function u64(b: Uint8Array, p: number, what: string, file: string): number {
  const lo = u32(b, p);
  const hi = u32(b, p + 4);
  if (hi >= 0x200000) throw new CheckpointError(`zip: ${what} ${hi}:${lo} is beyond 2^53`, { file });
  return hi * 0x100000000 + lo;
}

/** A zip archive's directory, with random access to its entries through a {@link ByteSource}. */
export class ZipArchive {
  /** The bytes. */
  readonly source: ByteSource;
  /** Entries by name, in central-directory order. */
  readonly entries: Map<string, ZipEntry>;
  /** Where the central directory starts: no entry's data may reach past it. */
  readonly centralDirectoryOffset: number;
  private readonly dataOffsets = new Map<string, number>();
  /** Stored records whose CRC-32 has been checked once (later reads are slices). */
  private readonly crcChecked = new Set<string>();
  /** Inflated records, least recently used first. */
  private readonly inflatedCache = new Map<string, Uint8Array>();
  private inflatedCacheBytes = 0;
  /** Bytes inflated so far, charged against {@link ZipArchive.inflateBudget}. */
  inflatedBytes = 0;
  /** The most this archive may inflate in total (see {@link INFLATE_FACTOR}). */
  readonly inflateBudget: number;

  private constructor(source: ByteSource, entries: Map<string, ZipEntry>, cdOffset: number) {
    this.source = source;
    this.entries = entries;
    this.centralDirectoryOffset = cdOffset;
    this.inflateBudget = INFLATE_FACTOR * source.size + INFLATE_SLACK;
  }

  /** Throws a CheckpointError about the archive. */
  private static fail(source: ByteSource, msg: string, key?: string): never {
    throw new CheckpointError(`zip: ${msg}`, { file: source.name, key });
  }

  /**
   * Reads the end-of-central-directory record (ZIP64 when needed) and the central directory.
   *
   * @throws {CheckpointError} for a missing or corrupt directory, counts or offsets that the file does not
   *   back, duplicate names, encrypted or multi-disk archives
   *
   * @example
   * ```ts ignore
   * import { FileSource } from "./source.ts";
   * import { ZipArchive } from "./zip.ts";
   * const zip = ZipArchive.open(FileSource.open("t2t_vit_7.pth.tar"));
   * console.log([...zip.entries.keys()].slice(0, 2)); // ["t2t_vit_7.pth/data.pkl", "t2t_vit_7.pth/data/0"]
   * ```
   */
  static open(source: ByteSource): ZipArchive {
    const file = source.name;
    const size = source.size;
    if (size < 22) ZipArchive.fail(source, `file of ${size} bytes is too short for a zip archive`);
    const tailLen = Math.min(size, 22 + 0xffff);
    const tailStart = size - tailLen;
    const tail = source.read(tailStart, tailLen);
    let eocd = -1;
    for (let p = tailLen - 22; p >= 0; p--) {
      if (tail[p] === 0x50 && tail[p + 1] === 0x4b && u32(tail, p) === SIG_EOCD) {
        if (p + 22 + u16(tail, p + 20) <= tailLen) {
          eocd = p;
          break;
        }
      }
    }
    if (eocd < 0) ZipArchive.fail(source, "no end-of-central-directory record (truncated or not a zip)");
    const eocdAbs = tailStart + eocd;
    const disk = u16(tail, eocd + 4);
    const cdDisk = u16(tail, eocd + 6);
    let countDisk = u16(tail, eocd + 8);
    let count = u16(tail, eocd + 10);
    let cdSize = u32(tail, eocd + 12);
    let cdOffset = u32(tail, eocd + 16);
    let cdLimit = eocdAbs; // the directory must end before the record that describes it
    const needs64 = count === 0xffff || countDisk === 0xffff || cdSize === 0xffffffff ||
      cdOffset === 0xffffffff;
    if (needs64 || (eocdAbs >= 20 && u32(source.read(eocdAbs - 20, 4), 0) === SIG_ZIP64_LOCATOR)) {
      if (eocdAbs < 20) ZipArchive.fail(source, "ZIP64 locator missing");
      const loc = source.read(eocdAbs - 20, 20);
      if (u32(loc, 0) !== SIG_ZIP64_LOCATOR) ZipArchive.fail(source, "ZIP64 locator missing");
      if (u32(loc, 16) > 1) ZipArchive.fail(source, "multi-disk archives are not supported");
      const recOff = u64(loc, 8, "ZIP64 end record offset", file);
      if (recOff + 56 > eocdAbs - 20) {
        ZipArchive.fail(source, `ZIP64 end record offset ${recOff} is out of range`);
      }
      const rec = source.read(recOff, 56);
      if (u32(rec, 0) !== SIG_ZIP64_EOCD) ZipArchive.fail(source, "ZIP64 end record signature is wrong");
      if (u32(rec, 16) !== 0 || u32(rec, 20) !== 0) {
        ZipArchive.fail(source, "multi-disk archives are not supported");
      }
      const c64 = u64(rec, 32, "entry count", file);
      const s64 = u64(rec, 40, "central directory size", file);
      const o64 = u64(rec, 48, "central directory offset", file);
      // The 32-bit fields hold either the 0xFF.. sentinel or the same value as the ZIP64 record.
      if (
        (count !== 0xffff && count !== c64) || (cdSize !== 0xffffffff && cdSize !== s64) ||
        (cdOffset !== 0xffffffff && cdOffset !== o64)
      ) {
        ZipArchive.fail(source, "the ZIP32 and ZIP64 end records disagree");
      }
      countDisk = u64(rec, 24, "entry count", file);
      count = c64;
      cdSize = s64;
      cdOffset = o64;
      cdLimit = recOff;
    } else if (disk !== 0 || cdDisk !== 0) {
      ZipArchive.fail(source, "multi-disk archives are not supported");
    }
    if (countDisk !== count) ZipArchive.fail(source, "multi-disk archives are not supported");
    if (cdOffset + cdSize > cdLimit) {
      ZipArchive.fail(
        source,
        `central directory (${cdSize} bytes at ${cdOffset}) runs past its end record at ${cdLimit}`,
      );
    }
    if (count * 46 > cdSize) {
      ZipArchive.fail(source, `${count} entries cannot fit in a central directory of ${cdSize} bytes`);
    }
    const cd = source.read(cdOffset, cdSize);
    const entries = new Map<string, ZipEntry>();
    const names = new TextDecoder("utf-8", { fatal: false });
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || u32(cd, p) !== SIG_CENTRAL) {
        ZipArchive.fail(source, `central directory entry ${i} is corrupt (at offset ${cdOffset + p})`);
      }
      const flags = u16(cd, p + 8);
      const method = u16(cd, p + 10);
      const crc = u32(cd, p + 16);
      let csize = u32(cd, p + 20);
      let usize = u32(cd, p + 24);
      const nameLen = u16(cd, p + 28);
      const extraLen = u16(cd, p + 30);
      const commentLen = u16(cd, p + 32);
      let diskStart = u16(cd, p + 34);
      let local = u32(cd, p + 42);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cdSize) ZipArchive.fail(source, `central directory entry ${i} runs past the directory`);
      const name = decodeName(cd, p + 46, nameLen, names);
      // ZIP64 extended information: the 0xFFFFFFFF fields, in order usize, csize, local offset, disk.
      if (usize === 0xffffffff || csize === 0xffffffff || local === 0xffffffff || diskStart === 0xffff) {
        let q = p + 46 + nameLen;
        const qEnd = q + extraLen;
        let found = false;
        while (q + 4 <= qEnd) {
          const id = u16(cd, q);
          const len = u16(cd, q + 2);
          if (q + 4 + len > qEnd) break;
          if (id === 0x0001) {
            let r = q + 4;
            const take = (what: string): number => {
              if (r + 8 > q + 4 + len) {
                ZipArchive.fail(source, `ZIP64 extra field of '${name}' is short`, name);
              }
              const v = u64(cd, r, what, file);
              r += 8;
              return v;
            };
            if (usize === 0xffffffff) usize = take("size");
            if (csize === 0xffffffff) csize = take("compressed size");
            if (local === 0xffffffff) local = take("local header offset");
            if (diskStart === 0xffff) {
              if (r + 4 > q + 4 + len) {
                ZipArchive.fail(source, `ZIP64 extra field of '${name}' is short`, name);
              }
              diskStart = u32(cd, r);
            }
            found = true;
            break;
          }
          q += 4 + len;
        }
        if (!found) ZipArchive.fail(source, `entry '${name}' needs a ZIP64 extra field and has none`, name);
      }
      if (diskStart !== 0) ZipArchive.fail(source, "multi-disk archives are not supported");
      if (flags & 1) ZipArchive.fail(source, `entry '${name}' is encrypted`, name);
      if (local + 30 > cdOffset) {
        ZipArchive.fail(source, `entry '${name}' has its header at ${local}, past the data area`, name);
      }
      if (csize > cdOffset - local) {
        ZipArchive.fail(source, `entry '${name}' declares ${csize} bytes, more than the file holds`, name);
      }
      if (entries.has(name)) ZipArchive.fail(source, `duplicate entry '${name}'`, name);
      entries.set(name, {
        name,
        method,
        flags,
        crc32: crc,
        compressedSize: csize,
        size: usize,
        localHeaderOffset: local,
      });
      p = end;
    }
    return new ZipArchive(source, entries, cdOffset);
  }

  /** Where an entry's data starts (parses and checks its local header once). */
  dataOffset(entry: ZipEntry): number {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    const s = this.source;
    // Take every field before the next read: a reusing source may overwrite `h`.
    const h = s.read(entry.localHeaderOffset, 30);
    const sig = u32(h, 0);
    const method = u16(h, 8);
    const nameLen = u16(h, 26);
    const extraLen = u16(h, 28);
    if (sig !== SIG_LOCAL) {
      ZipArchive.fail(
        s,
        `local header of '${entry.name}' is corrupt (at ${entry.localHeaderOffset})`,
        entry.name,
      );
    }
    const start = entry.localHeaderOffset + 30 + nameLen + extraLen;
    if (start > this.centralDirectoryOffset) {
      ZipArchive.fail(s, `local header of '${entry.name}' runs into the central directory`, entry.name);
    }
    const localName = new TextDecoder().decode(s.read(entry.localHeaderOffset + 30, nameLen));
    if (localName !== entry.name) {
      ZipArchive.fail(
        s,
        `local header names '${localName}' where the directory says '${entry.name}'`,
        entry.name,
      );
    }
    if (method !== entry.method) {
      ZipArchive.fail(
        s,
        `local header and directory disagree on the compression of '${entry.name}'`,
        entry.name,
      );
    }
    if (start + entry.compressedSize > this.centralDirectoryOffset) {
      ZipArchive.fail(s, `data of '${entry.name}' runs into the central directory`, entry.name);
    }
    this.dataOffsets.set(entry.name, start);
    return start;
  }

  /**
   * The uncompressed bytes of an entry. Stored entries over an in-memory source are zero-copy views;
   * inflated entries are cached (do not modify them).
   *
   * @throws {CheckpointError} for unsupported compression, sizes that lie, a CRC mismatch, or an archive
   *   that inflates past its budget
   */
  read(entry: ZipEntry, opts: ZipReadOptions = {}): Uint8Array {
    const s = this.source;
    const start = this.dataOffset(entry);
    if (entry.method === 0) {
      this.checkStored(entry);
      const data = s.read(start, entry.size);
      if (opts.verifyCrc !== false && !this.crcChecked.has(entry.name)) {
        this.checkCrc(entry, crc32(data));
        this.crcChecked.add(entry.name);
      }
      return data;
    }
    return this.inflate(entry, start, opts.verifyCrc !== false);
  }

  /**
   * Bytes `[offset, offset + length)` of an entry's uncompressed data, checked against the entry's size.
   * A stored entry's CRC-32 is checked once, on its first read (a streamed pass for file sources); after that
   * each read costs only the bytes it returns, so many small views of one big record stay cheap. A deflated
   * entry is inflated once and cached while it fits the cache; every inflation counts against the archive's
   * {@link ZipArchive.inflateBudget}. The result may be a view of shared or reused memory: do not modify it.
   *
   * @throws {CheckpointError} as {@link ZipArchive.read}, or for a range outside the entry
   */
  readRange(entry: ZipEntry, offset: number, length: number): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > entry.size) {
      ZipArchive.fail(
        this.source,
        `bytes ${offset}..${offset + length} are outside '${entry.name}' (${entry.size} bytes)`,
        entry.name,
      );
    }
    const s = this.source;
    const start = this.dataOffset(entry);
    if (entry.method !== 0) return this.inflate(entry, start, true).subarray(offset, offset + length);
    this.checkStored(entry);
    if (!this.crcChecked.has(entry.name)) {
      let crc = 0;
      for (let p = 0; p < entry.size; p += CRC_CHUNK) {
        crc = crc32(s.read(start + p, Math.min(CRC_CHUNK, entry.size - p)), crc);
      }
      this.checkCrc(entry, crc >>> 0);
      this.crcChecked.add(entry.name);
    }
    return s.read(start + offset, length);
  }

  /** Refuses a stored entry whose two sizes differ. */
  private checkStored(entry: ZipEntry): void {
    if (entry.compressedSize !== entry.size) {
      ZipArchive.fail(
        this.source,
        `stored entry '${entry.name}' declares ${entry.size} bytes but stores ${entry.compressedSize}`,
        entry.name,
      );
    }
  }

  /** Refuses an entry whose data has another CRC-32 than the directory's. */
  private checkCrc(entry: ZipEntry, crc: number): void {
    if (crc !== entry.crc32) {
      ZipArchive.fail(
        this.source,
        `CRC-32 of '${entry.name}' is ${hex(crc)}, the directory says ${hex(entry.crc32)} (corrupt data)`,
        entry.name,
      );
    }
  }

  /** An entry's inflated bytes: from the cache, or inflated once against the archive's budget. */
  private inflate(entry: ZipEntry, start: number, verifyCrc: boolean): Uint8Array {
    const s = this.source;
    const cached = this.inflatedCache.get(entry.name);
    if (cached) {
      this.inflatedCache.delete(entry.name); // re-insert as the most recently used
      this.inflatedCache.set(entry.name, cached);
      return cached;
    }
    if (entry.method !== 8) {
      ZipArchive.fail(
        s,
        `entry '${entry.name}' uses compression method ${entry.method}; only stored (0) and deflate (8) are supported`,
        entry.name,
      );
    }
    if (entry.size > entry.compressedSize * MAX_DEFLATE_RATIO + 1024) {
      ZipArchive.fail(
        s,
        `deflated entry '${entry.name}' declares ${entry.size} bytes from ${entry.compressedSize}, ` +
          "more than deflate can expand",
        entry.name,
      );
    }
    if (this.inflatedBytes + entry.size > this.inflateBudget) {
      ZipArchive.fail(
        s,
        `inflating '${entry.name}' (${entry.size} bytes) would take the archive past ${this.inflateBudget} ` +
          `inflated bytes (${INFLATE_FACTOR}x its ${s.size} bytes + ${INFLATE_SLACK >> 20} MiB): a ` +
          "decompression bomb; refusing",
        entry.name,
      );
    }
    this.inflatedBytes += entry.size;
    const packed = s.read(start, entry.compressedSize);
    let data: Uint8Array;
    try {
      data = inflateRaw(packed, entry.size);
    } catch (e) {
      throw new CheckpointError(`zip: cannot inflate '${entry.name}': ${(e as Error).message}`, {
        file: s.name,
        key: entry.name,
        cause: e,
      });
    }
    if (data.byteLength !== entry.size) {
      ZipArchive.fail(
        s,
        `'${entry.name}' inflates to ${data.byteLength} bytes, not the declared ${entry.size}`,
        entry.name,
      );
    }
    if (verifyCrc) this.checkCrc(entry, crc32(data));
    if (data.byteLength <= INFLATE_CACHE_BYTES) {
      while (this.inflatedCacheBytes + data.byteLength > INFLATE_CACHE_BYTES) {
        const [name, old] = this.inflatedCache.entries().next().value!;
        this.inflatedCache.delete(name);
        this.inflatedCacheBytes -= old.byteLength;
      }
      this.inflatedCache.set(entry.name, data);
      this.inflatedCacheBytes += data.byteLength;
    }
    return data;
  }
}

/** Entry names: ASCII (every torch record) without a TextDecoder call, else UTF-8. */
function decodeName(b: Uint8Array, start: number, len: number, dec: TextDecoder): string {
  let s = "";
  for (let i = start; i < start + len; i++) {
    const c = b[i];
    if (c >= 0x80) return dec.decode(b.subarray(start, start + len));
    s += String.fromCharCode(c);
  }
  return s;
}

function hex(n: number): string {
  return "0x" + n.toString(16).padStart(8, "0");
}

type Zlib = typeof import("node:zlib");
/** The runtime's zlib (Deno, Node), looked up once; `null` in browsers. */
let nativeZlib: Zlib | null | undefined;

/** @internal Tests: `false` makes this module behave as in a browser (JavaScript CRC-32 and inflate). */
export function useNativeZlib(on: boolean): void {
  nativeZlib = on ? undefined : null;
}
function zlib(): Zlib | null {
  if (nativeZlib === undefined) {
    const z = nodeBuiltin<Zlib>("zlib");
    nativeZlib = z && typeof z.crc32 === "function" && typeof z.inflateRawSync === "function" ? z : null;
  }
  return nativeZlib;
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE) in JavaScript, slicing by 8 bytes (about 1 GB/s); the fallback where there is no zlib. */
export function crc32Js(data: Uint8Array, seed = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256 * 8);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
    for (let n = 0; n < 256; n++) {
      for (let t = 1; t < 8; t++) {
        const prev = crcTable[(t - 1) * 256 + n];
        crcTable[t * 256 + n] = (crcTable[prev & 0xff] ^ (prev >>> 8)) >>> 0;
      }
    }
  }
  const T = crcTable;
  let c = (seed ^ 0xffffffff) >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24))) >>> 0;
    c = T[1792 + (a & 0xff)] ^ T[1536 + ((a >>> 8) & 0xff)] ^ T[1280 + ((a >>> 16) & 0xff)] ^
      T[1024 + (a >>> 24)] ^ T[768 + data[i + 4]] ^ T[512 + data[i + 5]] ^ T[256 + data[i + 6]] ^
      T[data[i + 7]];
  }
  for (; i < n; i++) c = T[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * CRC-32 of `data`, continuing from `seed` (the CRC of the bytes before it): native zlib where there is one,
 * else {@linkcode crc32Js}.
 */
export function crc32(data: Uint8Array, seed = 0): number {
  const z = zlib();
  return z ? z.crc32(data, seed) >>> 0 : crc32Js(data, seed);
}

/**
 * Inflates raw deflate data that should come to `size` bytes; stops (and throws) as soon as it would come to
 * more, so a lying size costs no more than `size` bytes of memory.
 */
function inflateRaw(packed: Uint8Array, size: number): Uint8Array {
  const z = zlib();
  if (z) {
    const out = z.inflateRawSync(packed, { maxOutputLength: Math.max(1, size) });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }
  const out = new Uint8Array(size);
  let n = 0;
  const inf = new Inflate((chunk) => {
    if (n + chunk.length > size) throw new Error(`output exceeds the declared ${size} bytes`);
    out.set(chunk, n);
    n += chunk.length;
  });
  inf.push(packed, true);
  return n === size ? out : out.subarray(0, n);
}
