/**
 * Pillow 9.4's `Image.resize` for 8-bit RGB images, bit for bit (`libImaging/Resample.c`,
 * `ImagingResample`): a separable convolution, horizontal pass first then vertical, whose filter support
 * is widened by the downscale factor (antialiasing); coefficients are normalised to sum 1, converted to
 * fixed point with 22 fractional bits (`PRECISION_BITS = 32 - 8 - 2`), accumulated from a rounding bias of
 * 2^21, and clipped to 8 bits after each pass. The vertical pass reads only the rows the horizontal pass
 * produced (the `ybox_first..ybox_last` window). Nearest-neighbour resizing follows `ImagingScaleAffine`.
 *
 * `reducing_gap` (Pillow's optional box pre-reduction) is not part of this: torchvision 0.14's `Resize`
 * calls `img.resize(size, resample)` without it.
 *
 * @module
 */

import { ImageError } from "../core/errors.ts";
import { checkImageSize, type RgbImage } from "./image.ts";

/** Pillow's resampling filters (`Image.Resampling`). */
export type ResampleFilter = "nearest" | "box" | "bilinear" | "hamming" | "bicubic" | "lanczos";

/** A source region `[x0, y0, x1, y1]` in (fractional) pixels, as Pillow's `box` argument. */
export type ResizeBox = [number, number, number, number];

interface Filter {
  fn: (x: number) => number;
  support: number;
}

const HAMMING_A = Math.fround(0.54), HAMMING_B = Math.fround(0.46); // float literals in the C source

const FILTERS: Record<Exclude<ResampleFilter, "nearest">, Filter> = {
  box: { fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0), support: 0.5 },
  bilinear: {
    fn: (x) => {
      x = Math.abs(x);
      return x < 1 ? 1 - x : 0;
    },
    support: 1,
  },
  hamming: {
    fn: (x) => {
      x = Math.abs(x);
      if (x === 0) return 1;
      if (x >= 1) return 0;
      x *= Math.PI;
      return (Math.sin(x) / x) * (HAMMING_A + HAMMING_B * Math.cos(x));
    },
    support: 1,
  },
  bicubic: {
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
    support: 2,
  },
  lanczos: {
    fn: (x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0),
    support: 3,
  },
};

function sinc(x: number): number {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** Fixed-point filter taps of one pass: for output i, taps `k[i * ksize + j]` on inputs `min[i] + j`. */
interface Coeffs {
  ksize: number;
  min: Int32Array;
  count: Int32Array;
  k: Int32Array;
}

/** `precompute_coeffs` followed by `normalize_coeffs_8bpc`. */
function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number, filter: Filter): Coeffs {
  // in0/in1 are C floats; their difference is computed in float then widened.
  const scale = Math.fround(Math.fround(in1) - Math.fround(in0)) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const min = new Int32Array(outSize), count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = Math.fround(in0) + (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = filter.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      // (int)(±0.5 + v * 2^22): truncation toward zero
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    min[xx] = xmin;
    count[xx] = Math.max(xmax, 0);
  }
  return { ksize, min, count, k };
}

/** Pillow's `clip8`: `ss >> 22` clamped to 0..255 (an arithmetic shift, i.e. floor). */
function clip8(ss: number): number {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function resampleHorizontal(
  src: Uint8Array,
  srcW: number,
  rowOffset: number,
  rows: number,
  outW: number,
  c: Coeffs,
): Uint8Array {
  const out = new Uint8Array(outW * rows * 3);
  for (let yy = 0; yy < rows; yy++) {
    const rowBase = (yy + rowOffset) * srcW * 3;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = c.min[xx], n = c.count[xx], kb = xx * c.ksize;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let x = 0; x < n; x++) {
        const kv = c.k[kb + x], p = rowBase + (x + xmin) * 3;
        s0 += src[p] * kv;
        s1 += src[p + 1] * kv;
        s2 += src[p + 2] * kv;
      }
      const o = (yy * outW + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

function resampleVertical(src: Uint8Array, w: number, outH: number, c: Coeffs, rowShift: number): Uint8Array {
  const out = new Uint8Array(w * outH * 3);
  const stride = w * 3;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.min[yy] - rowShift, n = c.count[yy], kb = yy * c.ksize;
    for (let xx = 0; xx < w; xx++) {
      let s0 = HALF, s1 = HALF, s2 = HALF;
      let p = ymin * stride + xx * 3;
      for (let y = 0; y < n; y++, p += stride) {
        const kv = c.k[kb + y];
        s0 += src[p] * kv;
        s1 += src[p + 1] * kv;
        s2 += src[p + 2] * kv;
      }
      const o = (yy * w + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** `ImagingScaleAffine` with nearest neighbour, as Pillow's `_resize` uses for `NEAREST`. */
function resizeNearest(img: RgbImage, width: number, height: number, box: ResizeBox): RgbImage {
  const a0 = (box[2] - box[0]) / width, a4 = (box[3] - box[1]) / height;
  const coord = (v: number) => (v < 0 ? -1 : Math.trunc(v));
  const xin = new Int32Array(width);
  let xo = box[0] + a0 * 0.5;
  for (let x = 0; x < width; x++, xo += a0) xin[x] = coord(xo);
  const out = new Uint8Array(width * height * 3);
  let yo = box[1] + a4 * 0.5;
  for (let y = 0; y < height; y++, yo += a4) {
    const yi = coord(yo);
    if (yi < 0 || yi >= img.height) continue; // Pillow leaves such pixels at the fill (0)
    for (let x = 0; x < width; x++) {
      const xi = xin[x];
      if (xi < 0 || xi >= img.width) continue;
      const s = (yi * img.width + xi) * 3, o = (y * width + x) * 3;
      out[o] = img.data[s];
      out[o + 1] = img.data[s + 1];
      out[o + 2] = img.data[s + 2];
    }
  }
  return { width, height, data: out };
}

/**
 * Resizes like Pillow 9.4's `img.resize((width, height), filter, box)` on an RGB image.
 *
 * @example
 * ```ts
 * import { resizeImage } from "./resize.ts";
 * const img = { width: 4, height: 2, data: new Uint8Array(24).fill(200) };
 * const small = resizeImage(img, 2, 1, "bicubic"); // 2x1, all 200
 * ```
 */
export function resizeImage(
  img: RgbImage,
  width: number,
  height: number,
  filter: ResampleFilter = "bicubic",
  box?: ResizeBox,
): RgbImage {
  checkImageSize(width, height);
  const b: ResizeBox = box ?? [0, 0, img.width, img.height];
  if (b[0] < 0 || b[1] < 0 || b[2] > img.width || b[3] > img.height || b[2] - b[0] < 0 || b[3] - b[1] < 0) {
    throw new ImageError(`resize box [${b.join(", ")}] is outside the ${img.width}x${img.height} image`);
  }
  if (
    width === img.width && height === img.height && b[0] === 0 && b[1] === 0 && b[2] === width &&
    b[3] === height
  ) {
    return { width, height, data: img.data.slice() }; // Pillow returns a copy
  }
  if (filter === "nearest") return resizeNearest(img, width, height, b);
  const f = FILTERS[filter];
  if (!f) throw new ImageError(`unknown resampling filter ${JSON.stringify(filter)}`);
  const needH = width !== img.width || b[0] !== 0 || b[2] !== width;
  const needV = height !== img.height || b[1] !== 0 || b[3] !== height;
  const vert = precomputeCoeffs(img.height, b[1], b[3], height, f);
  const yFirst = vert.min[0];
  const yLast = vert.min[height - 1] + vert.count[height - 1];
  let cur = img.data, curW = img.width, rowShift = 0;
  if (needH) {
    const horiz = precomputeCoeffs(img.width, b[0], b[2], width, f);
    cur = resampleHorizontal(img.data, img.width, yFirst, yLast - yFirst, width, horiz);
    curW = width;
    rowShift = yFirst;
  }
  if (needV) {
    return { width: curW, height, data: resampleVertical(cur, curW, height, vert, rowShift) };
  }
  return { width: curW, height: needH ? yLast - yFirst : img.height, data: needH ? cur : img.data.slice() };
}
