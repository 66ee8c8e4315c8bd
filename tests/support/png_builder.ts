/**
 * An independent PNG writer for the image tests: any colour type and bit depth, palettes, tRNS, Adam7
 * interlacing, and every scanline filter type in turn (row r uses filter r % 5), so the decoder is tested on
 * files whose pixel values the test chose. Deliberately shares no code with src/images.
 */

import { deflateSync } from "node:zlib";

const CRC = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC[n] = c >>> 0;
}

function crc(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC[(c ^ x) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One serialized chunk. */
export function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc(out.subarray(4, 8 + data.length)));
  return out;
}

/** What to write. `samples` holds `channels` values per pixel, row-major, each in 0..2^bitDepth-1. */
export interface PngSpec {
  width: number;
  height: number;
  colorType: 0 | 2 | 3 | 4 | 6;
  bitDepth: 1 | 2 | 4 | 8 | 16;
  samples: ArrayLike<number>;
  palette?: [number, number, number][];
  trns?: number[];
  interlace?: boolean;
}

/** Samples per pixel of each colour type. */
export const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as const;

function scanlines(spec: PngSpec, xs: number[], ys: number[]): Uint8Array {
  const ch = CHANNELS[spec.colorType], d = spec.bitDepth;
  const bpl = Math.ceil((xs.length * ch * d) / 8);
  const bpp = Math.max(1, (ch * d) >> 3);
  const out = new Uint8Array(ys.length * (bpl + 1));
  let prev = new Uint8Array(bpl);
  ys.forEach((y, r) => {
    const raw = new Uint8Array(bpl);
    let bit = 0;
    for (const x of xs) {
      for (let c = 0; c < ch; c++) {
        const v = spec.samples[(y * spec.width + x) * ch + c];
        if (d === 16) {
          raw[bit >> 3] = v >> 8;
          raw[(bit >> 3) + 1] = v & 255;
        } else if (d === 8) raw[bit >> 3] = v;
        else raw[bit >> 3] |= v << (8 - d - (bit & 7));
        bit += d;
      }
    }
    const ft = r % 5;
    out[r * (bpl + 1)] = ft;
    for (let i = 0; i < bpl; i++) {
      const a = i >= bpp ? raw[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let p = 0;
      if (ft === 1) p = a;
      else if (ft === 2) p = b;
      else if (ft === 3) p = (a + b) >> 1;
      else if (ft === 4) {
        const q = a + b - c, pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[r * (bpl + 1) + 1 + i] = (raw[i] - p) & 255;
    }
    prev = raw;
  });
  return out;
}

const range = (a: number, n: number, s: number) => {
  const r: number[] = [];
  for (let i = a; i < n; i += s) r.push(i);
  return r;
};

/** The raw (filtered, uncompressed) image data of a spec. */
export function rawImageData(spec: PngSpec): Uint8Array {
  if (!spec.interlace) return scanlines(spec, range(0, spec.width, 1), range(0, spec.height, 1));
  const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [
    0,
    1,
    1,
    2,
  ]];
  const parts = passes.map(([x0, y0, sx, sy]) => {
    const xs = range(x0, spec.width, sx), ys = range(y0, spec.height, sy);
    return xs.length && ys.length ? scanlines(spec, xs, ys) : new Uint8Array(0);
  });
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

/** A complete PNG file for `spec` (the IDAT optionally split in two chunks). */
export function buildPng(spec: PngSpec, opts: { splitIdat?: boolean } = {}): Uint8Array {
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, spec.width);
  dv.setUint32(4, spec.height);
  ihdr[8] = spec.bitDepth;
  ihdr[9] = spec.colorType;
  ihdr[12] = spec.interlace ? 1 : 0;
  const z = new Uint8Array(deflateSync(rawImageData(spec)));
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr)];
  if (spec.palette) parts.push(chunk("PLTE", new Uint8Array(spec.palette.flat())));
  if (spec.trns) parts.push(chunk("tRNS", new Uint8Array(spec.trns)));
  if (opts.splitIdat) {
    const h = z.length >> 1;
    parts.push(chunk("IDAT", z.subarray(0, h)), chunk("IDAT", z.subarray(h)));
  } else parts.push(chunk("IDAT", z));
  parts.push(chunk("IEND", new Uint8Array(0)));
  return concat(parts);
}

/** Deterministic pseudo-random samples in 0..max-1. */
export function samplesFor(count: number, max: number, seed = 1): number[] {
  const out: number[] = [];
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push((s >>> 8) % max);
  }
  return out;
}
