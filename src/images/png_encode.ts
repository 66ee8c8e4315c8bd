/**
 * A small PNG encoder for 8-bit gray, RGB and RGBA images (attention maps, previews): each row is filtered
 * with the PNG filter that minimises the sum of absolute differences (libpng's heuristic), and the data is
 * zlib-compressed with `fflate` — pure JavaScript, so it runs in browsers too.
 *
 * @module
 */

import { zlibSync } from "fflate";
import { ImageError } from "../core/errors.ts";
import { checkImageSize } from "./image.ts";
import { PNG_SIGNATURE, pngChunk } from "./png_chunks.ts";

/** Pixels to encode: `data[(y * width + x) * channels + c]`. */
export interface PngPixels {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 1 (gray), 3 (RGB) or 4 (RGBA). Defaults to 3. */
  channels?: 1 | 3 | 4;
  /** `width * height * channels` bytes. */
  data: Uint8Array;
}

/** Options of {@link encodePng}. */
export interface PngEncodeOptions {
  /** zlib level 0..9 (default 6). */
  level?: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
  /** `tEXt` chunks to add, e.g. `{ Software: "t2t-vit" }` (Latin-1 keys of 1..79 characters). */
  text?: Record<string, string>;
}

function paeth(a: number, b: number, c: number): number {
  const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * Encodes 8-bit pixels as a PNG file.
 *
 * @example
 * ```ts
 * import { encodePng } from "./png_encode.ts";
 * const png = encodePng({ width: 2, height: 1, data: new Uint8Array([255, 0, 0, 0, 0, 255]) });
 * await Deno.writeFile("two-pixels.png", png);
 * ```
 */
export function encodePng(img: PngPixels, opts: PngEncodeOptions = {}): Uint8Array {
  const ch = img.channels ?? 3;
  if (ch !== 1 && ch !== 3 && ch !== 4) throw new ImageError(`cannot encode ${ch} channels as PNG`);
  checkImageSize(img.width, img.height);
  const { width: w, height: h, data } = img;
  if (data.length !== w * h * ch) {
    throw new ImageError(`pixel data has ${data.length} bytes, expected ${w * h * ch} for ${w}x${h}x${ch}`);
  }
  const bpl = w * ch;
  const raw = new Uint8Array(h * (bpl + 1));
  const cand = Array.from({ length: 5 }, () => new Uint8Array(bpl));
  const zero = new Uint8Array(bpl);
  for (let y = 0; y < h; y++) {
    const cur = data.subarray(y * bpl, (y + 1) * bpl);
    const prev = y > 0 ? data.subarray((y - 1) * bpl, y * bpl) : zero;
    let best = 0, bestSum = Infinity;
    for (let f = 0; f < 5; f++) {
      const out = cand[f];
      let sum = 0;
      for (let i = 0; i < bpl; i++) {
        const a = i >= ch ? cur[i - ch] : 0, b = prev[i], c = i >= ch ? prev[i - ch] : 0;
        const p = f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, c);
        const v = (cur[i] - p) & 0xff;
        out[i] = v;
        sum += v < 128 ? v : 256 - v;
      }
      if (sum < bestSum) {
        bestSum = sum;
        best = f;
      }
    }
    raw[y * (bpl + 1)] = best;
    raw.set(cand[best], y * (bpl + 1) + 1);
  }
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, w);
  dv.setUint32(4, h);
  ihdr[8] = 8;
  ihdr[9] = ch === 1 ? 0 : ch === 3 ? 2 : 6;
  const parts = [PNG_SIGNATURE, pngChunk("IHDR", ihdr)];
  for (const [k, v] of Object.entries(opts.text ?? {})) {
    // deno-lint-ignore no-control-regex
    if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(k) || /[^\x00-\xff]/.test(v)) {
      throw new ImageError(
        `tEXt keyword/value must be Latin-1 (keyword 1-79 characters): ${JSON.stringify(k)}`,
      );
    }
    const t = new Uint8Array(k.length + 1 + v.length);
    for (let i = 0; i < k.length; i++) t[i] = k.charCodeAt(i);
    for (let i = 0; i < v.length; i++) t[k.length + 1 + i] = v.charCodeAt(i);
    parts.push(pngChunk("tEXt", t));
  }
  parts.push(
    pngChunk("IDAT", zlibSync(raw, { level: opts.level ?? 6 })),
    pngChunk("IEND", new Uint8Array(0)),
  );
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
