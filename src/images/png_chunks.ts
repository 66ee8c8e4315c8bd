/**
 * PNG container basics shared by the decoder and the encoder: the signature, CRC-32 and the chunk layout
 * (https://www.w3.org/TR/png-3/#5Chunk-layout).
 *
 * @module
 */

import { ImageError } from "../core/errors.ts";

/** The 8-byte PNG signature. */
export const PNG_SIGNATURE: Uint8Array = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309, as PNG uses it) of `bytes`, continuing from `crc` (initially 0). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** One chunk of a PNG file: its 4-letter type and a view of its data. */
export interface PngChunk {
  /** Chunk type, e.g. `IHDR`. */
  type: string;
  /** The chunk's data (a view of the file's bytes). */
  data: Uint8Array;
  /** Byte offset of the chunk's length field in the file. */
  offset: number;
}

/** Whether `bytes` starts with the PNG signature. */
export function hasPngSignature(bytes: Uint8Array): boolean {
  if (bytes.length < 8) return false;
  for (let i = 0; i < 8; i++) if (bytes[i] !== PNG_SIGNATURE[i]) return false;
  return true;
}

/**
 * The chunks of a PNG file up to and including IEND, checking the signature, every chunk's bounds and CRC.
 * Throws an {@link ImageError} naming `file` on the first problem (truncation, bad CRC, missing IEND).
 */
export function readPngChunks(bytes: Uint8Array, file?: string): PngChunk[] {
  if (!hasPngSignature(bytes)) throw new ImageError("not a PNG file (bad signature)", { file });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks: PngChunk[] = [];
  let off = 8;
  for (;;) {
    if (off + 12 > bytes.length) {
      throw new ImageError("truncated PNG file (no IEND chunk)", { file, offset: off });
    }
    const length = dv.getUint32(off);
    const type = String.fromCharCode(bytes[off + 4], bytes[off + 5], bytes[off + 6], bytes[off + 7]);
    if (length > 0x7fffffff || off + 12 + length > bytes.length) {
      throw new ImageError(`truncated PNG file (chunk ${JSON.stringify(type)} runs past the end)`, {
        file,
        offset: off,
      });
    }
    const crc = dv.getUint32(off + 8 + length);
    if (crc32(bytes.subarray(off + 4, off + 8 + length)) !== crc) {
      throw new ImageError(`corrupt PNG file (CRC mismatch in chunk ${JSON.stringify(type)})`, {
        file,
        offset: off,
      });
    }
    chunks.push({ type, data: bytes.subarray(off + 8, off + 8 + length), offset: off });
    off += 12 + length;
    if (type === "IEND") return chunks;
  }
}

/** Serializes one chunk: length, type, data, CRC. */
export function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}
