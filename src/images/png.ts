/**
 * PNG decoding to 8-bit RGB exactly as Pillow 9.4 opens a PNG and converts it with `convert("RGB")`.
 *
 * Pixel data comes from `fast-png` (pure ESM JavaScript, so it runs in browsers too). fast-png cannot
 * de-interlace Adam7 images of bit depth 1, 2 or 4 (upstream image-js/fast-png#51), so those few images are
 * unfiltered and de-interlaced here. Every chunk's CRC is checked first, so a corrupt or truncated file is an
 * {@link ImageError} naming the file rather than a garbled picture.
 *
 * Pillow's conversions, reproduced bit for bit:
 * - gray 1/2/4-bit (modes `1` and `L`): scaled to 0..255 (×255, ×85, ×17), replicated;
 * - gray 16-bit (mode `I`): **clipped** to 0..255 (not scaled — Pillow's `I` → `RGB` clips), replicated;
 * - RGB/RGBA/gray+alpha 16-bit: the most significant byte of each sample;
 * - alpha (RGBA, LA, tRNS) is dropped, never composited;
 * - palette images: the palette's RGB; indices beyond the palette get Pillow's default gray ramp (i, i, i).
 *
 * @module
 */

import { decode as decodeFastPng } from "fast-png";
import { Unzlib, unzlibSync } from "fflate";
import { ImageError } from "../core/errors.ts";
import { checkCodedSize, checkImageSize, type RgbImage } from "./image.ts";
import { type PngChunk, readPngChunks } from "./png_chunks.ts";

/** What the IHDR chunk says about a PNG, and the mode Pillow 9.4 opens it in. */
export interface PngHeader {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Bits per sample: 1, 2, 4, 8 or 16. */
  bitDepth: number;
  /** PNG colour type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA. */
  colorType: number;
  /** Adam7 interlacing. */
  interlaced: boolean;
  /** The Pillow mode the file opens in: `1`, `L`, `I`, `RGB`, `P`, `LA` or `RGBA`. */
  mode: string;
}

const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const VALID_DEPTHS: Record<number, number[]> = {
  0: [1, 2, 4, 8, 16],
  2: [8, 16],
  3: [1, 2, 4, 8],
  4: [8, 16],
  6: [8, 16],
};

function pillowMode(colorType: number, depth: number): string {
  switch (colorType) {
    case 0:
      return depth === 1 ? "1" : depth === 16 ? "I" : "L";
    case 2:
      return "RGB";
    case 3:
      return "P";
    case 4:
      return depth === 16 ? "RGBA" : "LA"; // Pillow opens 16-bit gray+alpha as RGBA ("LA;16B")
    default:
      return "RGBA";
  }
}

/** Parses and validates the IHDR chunk (the first chunk). */
export function parsePngHeader(chunks: PngChunk[], file?: string): PngHeader {
  const ihdr = chunks[0];
  if (!ihdr || ihdr.type !== "IHDR" || ihdr.data.length !== 13) {
    throw new ImageError("corrupt PNG file (the first chunk is not a 13-byte IHDR)", { file });
  }
  const d = ihdr.data;
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const width = dv.getUint32(0), height = dv.getUint32(4);
  const bitDepth = d[8], colorType = d[9];
  if (!(colorType in VALID_DEPTHS)) {
    throw new ImageError(`corrupt PNG file (unknown colour type ${colorType})`, { file });
  }
  if (!VALID_DEPTHS[colorType].includes(bitDepth)) {
    throw new ImageError(`corrupt PNG file (bit depth ${bitDepth} is invalid for colour type ${colorType})`, {
      file,
    });
  }
  if (d[10] !== 0 || d[11] !== 0 || d[12] > 1) {
    throw new ImageError(
      `unsupported PNG (compression ${d[10]}, filter ${d[11]}, interlace ${d[12]})`,
      { file },
    );
  }
  checkImageSize(width, height, file);
  return {
    width,
    height,
    bitDepth,
    colorType,
    interlaced: d[12] === 1,
    mode: pillowMode(colorType, bitDepth),
  };
}

/** A decoded PNG: RGB pixels as Pillow's `convert("RGB")` makes them, plus the header. */
export interface DecodedPng extends RgbImage {
  /** The file's header and Pillow mode. */
  header: PngHeader;
}

/**
 * Decodes PNG bytes to 8-bit RGB as Pillow 9.4's `Image.open(f).convert("RGB")` does.
 * Throws {@link ImageError} (with `file` in the message) for anything that is not a valid PNG.
 *
 * @example
 * ```ts
 * import { decodePng } from "./png.ts";
 * const img = decodePng(await Deno.readFile("cat.png"), "cat.png");
 * console.log(img.width, img.height, img.header.mode);
 * ```
 */
export function decodePng(bytes: Uint8Array, file?: string): DecodedPng {
  const chunks = readPngChunks(bytes, file);
  const header = parsePngHeader(chunks, file);
  const plte = chunks.find((c) => c.type === "PLTE");
  if (header.colorType === 3 && !plte) {
    throw new ImageError("corrupt PNG file (palette image without PLTE)", { file });
  }
  if (!chunks.some((c) => c.type === "IDAT")) {
    throw new ImageError("corrupt PNG file (no IDAT chunk)", { file });
  }
  const palette = plte ? readPalette(plte.data, file) : undefined;
  checkIdatSize(chunks, header, file);
  let samples: Uint8Array | Uint16Array;
  if (header.interlaced && header.bitDepth < 8) {
    samples = decodeAdam7LowDepth(chunks, header, file);
  } else {
    let decoded;
    try {
      decoded = decodeFastPng(bytes);
    } catch (e) {
      throw new ImageError(`corrupt PNG file (${e instanceof Error ? e.message : String(e)})`, {
        file,
        cause: e,
      });
    }
    if (decoded.width !== header.width || decoded.height !== header.height) {
      throw new ImageError("corrupt PNG file (decoder disagrees about the size)", { file });
    }
    samples = header.bitDepth < 8 ? unpackRows(decoded.data as Uint8Array, header, file) : decoded.data as
      | Uint8Array
      | Uint16Array;
    const expected = header.width * header.height * CHANNELS[header.colorType];
    if (samples.length !== expected) {
      throw new ImageError(`corrupt PNG file (${samples.length} samples decoded, expected ${expected})`, {
        file,
      });
    }
  }
  return { width: header.width, height: header.height, data: samplesToRgb(samples, header, palette), header };
}

/** The bytes of filtered scanlines a PNG's header implies (all seven Adam7 passes when interlaced). */
export function pngRawSize(h: PngHeader): number {
  const bits = CHANNELS[h.colorType] * h.bitDepth;
  const rows = (w: number, n: number) => (w > 0 && n > 0 ? n * (1 + Math.ceil((w * bits) / 8)) : 0);
  if (!h.interlaced) return rows(h.width, h.height);
  let total = 0;
  for (const [x0, y0, dx, dy] of ADAM7) {
    total += rows(Math.ceil((h.width - x0) / dx), Math.ceil((h.height - y0) / dy));
  }
  return total;
}

/** Slack over {@link pngRawSize} that trailing bytes after the image data may take (Pillow ignores them). */
const IDAT_SLACK = 1 << 16;

/**
 * Inflates the IDAT stream in small steps, counting, and refuses it as soon as it passes what the header
 * implies: a 16x16 image whose data inflates to a gigabyte costs a few milliseconds, not gigabytes.
 */
function checkIdatSize(chunks: PngChunk[], h: PngHeader, file?: string): void {
  let coded = 0;
  for (const c of chunks) if (c.type === "IDAT") coded += c.data.length;
  checkCodedSize(h.width, h.height, coded, "image data", file);
  const cap = pngRawSize(h) + IDAT_SLACK;
  let total = 0;
  const tooBig = new ImageError(
    `corrupt PNG file (the image data inflates past the ${cap - IDAT_SLACK} bytes a ${h.width}x${h.height} ` +
      "header implies: a decompression bomb)",
    { file },
  );
  const z = new Unzlib((chunk) => {
    total += chunk.length;
    if (total > cap) throw tooBig;
  });
  const STEP = 4096; // at most ~4 MiB of output per step (deflate expands at most ~1032:1)
  try {
    for (const c of chunks) {
      if (c.type !== "IDAT") continue;
      for (let i = 0; i < c.data.length; i += STEP) z.push(c.data.subarray(i, i + STEP));
    }
  } catch (e) {
    if (e === tooBig) throw e;
    // malformed streams are reported by the decoder with its own message
  }
}

function readPalette(data: Uint8Array, file?: string): Uint8Array {
  if (data.length % 3 !== 0 || data.length === 0 || data.length > 768) {
    throw new ImageError(`corrupt PNG file (PLTE of ${data.length} bytes)`, { file });
  }
  // Pillow starts every palette as the gray ramp and overwrites the entries the file gives.
  const pal = new Uint8Array(768);
  for (let i = 0; i < 256; i++) pal[i * 3] = pal[i * 3 + 1] = pal[i * 3 + 2] = i;
  pal.set(data);
  return pal;
}

/** Unpacks rows of 1/2/4-bit samples (each row padded to a byte) into one byte per sample. */
function unpackRows(packed: Uint8Array, h: PngHeader, file?: string): Uint8Array {
  const d = h.bitDepth, bpl = Math.ceil(h.width * d / 8), mask = (1 << d) - 1;
  if (packed.length < bpl * h.height) {
    throw new ImageError("truncated PNG image data", { file });
  }
  const out = new Uint8Array(h.width * h.height);
  for (let y = 0; y < h.height; y++) {
    const row = y * bpl;
    for (let x = 0; x < h.width; x++) {
      const bit = x * d;
      out[y * h.width + x] = (packed[row + (bit >> 3)] >> (8 - d - (bit & 7))) & mask;
    }
  }
  return out;
}

function samplesToRgb(s: Uint8Array | Uint16Array, h: PngHeader, palette?: Uint8Array): Uint8Array {
  const n = h.width * h.height;
  const out = new Uint8Array(n * 3);
  const d = h.bitDepth;
  switch (h.colorType) {
    case 0: {
      const scale = d < 8 ? 255 / ((1 << d) - 1) : 1;
      for (let i = 0; i < n; i++) {
        const v = d === 16 ? Math.min(s[i], 255) : s[i] * scale; // mode I -> RGB clips
        out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = v;
      }
      break;
    }
    case 3: {
      const pal = palette!;
      for (let i = 0; i < n; i++) {
        const p = s[i] * 3;
        out[i * 3] = pal[p];
        out[i * 3 + 1] = pal[p + 1];
        out[i * 3 + 2] = pal[p + 2];
      }
      break;
    }
    case 4:
    case 2:
    case 6: {
      const ch = CHANNELS[h.colorType];
      const shift = d === 16 ? 8 : 0; // 16-bit: most significant byte (Pillow's ";16B" unpackers)
      for (let i = 0; i < n; i++) {
        if (ch === 2) {
          out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = s[i * 2] >> shift;
        } else {
          out[i * 3] = s[i * ch] >> shift;
          out[i * 3 + 1] = s[i * ch + 1] >> shift;
          out[i * 3 + 2] = s[i * ch + 2] >> shift;
        }
      }
      break;
    }
  }
  return out;
}

const ADAM7: readonly [number, number, number, number][] = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

/** Adam7 de-interlacing of a 1/2/4-bit (hence single-channel) image: one byte per sample out. */
function decodeAdam7LowDepth(chunks: PngChunk[], h: PngHeader, file?: string): Uint8Array {
  const idat = chunks.filter((c) => c.type === "IDAT");
  const total = idat.reduce((a, c) => a + c.data.length, 0);
  const z = new Uint8Array(total);
  let o = 0;
  for (const c of idat) {
    z.set(c.data, o);
    o += c.data.length;
  }
  let raw: Uint8Array;
  try {
    raw = unzlibSync(z);
  } catch (e) {
    throw new ImageError(`corrupt PNG file (${e instanceof Error ? e.message : String(e)})`, {
      file,
      cause: e,
    });
  }
  const d = h.bitDepth, mask = (1 << d) - 1;
  const out = new Uint8Array(h.width * h.height);
  let pos = 0;
  for (const [x0, y0, dx, dy] of ADAM7) {
    const pw = Math.ceil((h.width - x0) / dx), ph = Math.ceil((h.height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const bpl = Math.ceil(pw * d / 8);
    let prev: Uint8Array = new Uint8Array(bpl);
    for (let r = 0; r < ph; r++) {
      if (pos + 1 + bpl > raw.length) throw new ImageError("truncated PNG image data", { file });
      const line = unfilter(raw[pos], raw.subarray(pos + 1, pos + 1 + bpl), prev, 1, file);
      pos += 1 + bpl;
      const y = y0 + r * dy;
      for (let i = 0; i < pw; i++) {
        const bit = i * d;
        out[y * h.width + x0 + i * dx] = (line[bit >> 3] >> (8 - d - (bit & 7))) & mask;
      }
      prev = line;
    }
  }
  return out;
}

/** Reverses one scanline's filter (https://www.w3.org/TR/png-3/#9Filter-types). */
function unfilter(type: number, line: Uint8Array, prev: Uint8Array, bpp: number, file?: string): Uint8Array {
  const n = line.length, out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const a = i >= bpp ? out[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
    let p: number;
    switch (type) {
      case 0:
        p = 0;
        break;
      case 1:
        p = a;
        break;
      case 2:
        p = b;
        break;
      case 3:
        p = (a + b) >> 1;
        break;
      case 4: {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        break;
      }
      default:
        throw new ImageError(`corrupt PNG file (unknown filter type ${type})`, { file });
    }
    out[i] = (line[i] + p) & 0xff;
  }
  return out;
}
