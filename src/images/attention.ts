/**
 * Attention maps as the official T2T-ViT README shows them: where the class token looks.
 *
 * - {@link classTokenAttention}: one block's attention of the class token to every patch token, averaged
 *   over heads;
 * - {@link attentionRollout}: attention rollout (Abnar & Zuidema, 2020): per block, heads averaged, the
 *   identity added for the residual path and rows renormalised, then the blocks multiplied through; the
 *   class token's row of the product;
 * - {@link renderAttention}: the map min-max normalised, upsampled bilinearly to the image, colour-mapped
 *   (jet or viridis) and alpha-blended over the image the model saw.
 *
 * Everything works on plain arrays (one sample's `(heads, N, N)` attention per block, token 0 the class
 * token), so it runs anywhere; {@link AttentionStack} is what the zoo's `forwardWithAttention` gives, per image.
 *
 * @module
 */

import { ImageError } from "../core/errors.ts";
import type { RgbImage } from "./image.ts";

/** One image's attention probabilities: per block, `(numHeads, numTokens, numTokens)` C-order, rows sum to 1. */
export interface AttentionStack {
  /** Heads per block. */
  numHeads: number;
  /** Tokens N, the class token (index 0) included. */
  numTokens: number;
  /** One array of `numHeads * numTokens * numTokens` per block, first block first. */
  blocks: Float32Array[];
}

function check(a: AttentionStack): void {
  const { numHeads: h, numTokens: n, blocks } = a;
  if (!(h > 0 && n > 1 && blocks.length > 0)) throw new ImageError("empty attention stack");
  for (const [i, b] of blocks.entries()) {
    if (b.length !== h * n * n) {
      throw new ImageError(`attention of block ${i} has ${b.length} values, expected ${h}x${n}x${n}`);
    }
  }
}

/** Heads-averaged `(N, N)` attention of one block. */
function headMean(b: Float32Array, h: number, n: number): Float64Array {
  const m = new Float64Array(n * n);
  for (let k = 0; k < h; k++) for (let i = 0; i < n * n; i++) m[i] += b[k * n * n + i];
  for (let i = 0; i < n * n; i++) m[i] /= h;
  return m;
}

/** Resolves a block index, negative counting from the end (-1 = last). */
function blockIndex(a: AttentionStack, block: number): number {
  const L = a.blocks.length;
  const k = block < 0 ? L + block : block;
  if (!Number.isInteger(block) || k < 0 || k >= L) {
    throw new ImageError(
      `block ${block} does not exist (the model has ${L} blocks: 0..${L - 1} or -${L}..-1)`,
    );
  }
  return k;
}

/**
 * The class token's attention to each patch token in block `block` (negative counts from the end; default
 * the last), averaged over heads. Length `numTokens - 1`, in token order (row-major over the patch grid).
 *
 * @example
 * ```ts
 * import { classTokenAttention } from "./attention.ts";
 * const uniform = new Float32Array(2 * 5 * 5).fill(0.2); // 2 heads, 1 + 4 tokens
 * classTokenAttention({ numHeads: 2, numTokens: 5, blocks: [uniform] }); // [0.2, 0.2, 0.2, 0.2]
 * ```
 */
export function classTokenAttention(a: AttentionStack, block = -1): Float32Array {
  check(a);
  const { numHeads: h, numTokens: n } = a;
  const b = a.blocks[blockIndex(a, block)];
  const out = new Float32Array(n - 1);
  for (let j = 1; j < n; j++) {
    let s = 0;
    for (let k = 0; k < h; k++) s += b[k * n * n + j];
    out[j - 1] = s / h;
  }
  return out;
}

/**
 * Attention rollout up to block `upTo` (default the last): `R = Â_upTo · … · Â_0` with
 * `Â = rownorm(mean_heads(A) + I)`; returns the class token's row of `R` over the patch tokens.
 * Only that row is needed, so it is computed as a vector-matrix chain (O(L·N²)).
 *
 * @example
 * ```ts
 * import { attentionRollout } from "./attention.ts";
 * const uniform = new Float32Array(1 * 3 * 3).fill(1 / 3);
 * attentionRollout({ numHeads: 1, numTokens: 3, blocks: [uniform, uniform] });
 * ```
 */
export function attentionRollout(a: AttentionStack, upTo = -1): Float32Array {
  check(a);
  const { numHeads: h, numTokens: n } = a;
  const last = blockIndex(a, upTo);
  let v = new Float64Array(n);
  v[0] = 1; // e_0: the class token's row
  for (let l = last; l >= 0; l--) {
    const m = headMean(a.blocks[l], h, n);
    for (let i = 0; i < n; i++) m[i * n + i] += 1;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += m[i * n + j];
      if (s > 0) { for (let j = 0; j < n; j++) m[i * n + j] /= s; }
    }
    const next = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const vi = v[i];
      if (vi === 0) continue;
      for (let j = 0; j < n; j++) next[j] += vi * m[i * n + j];
    }
    v = next;
  }
  return Float32Array.from(v.subarray(1));
}

/** Colour maps for {@link renderAttention}. */
export type Colormap = "jet" | "viridis" | "gray";

// matplotlib's jet: piecewise linear segments (x, value).
const JET: [number, number][][] = [
  [[0, 0], [0.35, 0], [0.66, 1], [0.89, 1], [1, 0.5]],
  [[0, 0], [0.125, 0], [0.375, 1], [0.64, 1], [0.91, 0], [1, 0]],
  [[0, 0.5], [0.11, 1], [0.34, 1], [0.65, 0], [1, 0]],
];

function piecewise(seg: [number, number][], t: number): number {
  for (let i = 1; i < seg.length; i++) {
    if (t <= seg[i][0]) {
      const [x0, y0] = seg[i - 1], [x1, y1] = seg[i];
      return y0 + ((t - x0) / (x1 - x0)) * (y1 - y0);
    }
  }
  return seg[seg.length - 1][1];
}

// A 6th-degree polynomial fit of matplotlib's viridis (within ~0.015 per channel).
const VIRIDIS = [
  [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
  [0.1050930431085774, 1.404613529898575, 1.384590162594685],
  [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
  [-4.634230498983486, -5.799100973351585, -19.33244095627987],
  [6.228269936347081, 14.17993336680509, 56.69055260068105],
  [4.776384997670288, -13.74514537774601, -65.35303263337234],
  [-5.435455855934631, 4.645852612178535, 26.3124352495832],
];

/**
 * The colour of `t` in [0, 1] (clamped) under a colour map, as 8-bit RGB.
 *
 * @example
 * ```ts
 * import { colormap } from "./attention.ts";
 * colormap("jet", 0); // [0, 0, 128]  (dark blue)
 * colormap("jet", 1); // [128, 0, 0]  (dark red)
 * ```
 */
export function colormap(name: Colormap, t: number): [number, number, number] {
  t = Number.isNaN(t) ? 0 : Math.min(1, Math.max(0, t));
  const to8 = (v: number) => Math.round(Math.min(1, Math.max(0, v)) * 255);
  if (name === "gray") return [to8(t), to8(t), to8(t)];
  if (name === "jet") {
    return [to8(piecewise(JET[0], t)), to8(piecewise(JET[1], t)), to8(piecewise(JET[2], t))];
  }
  if (name === "viridis") {
    const rgb = [0, 1, 2].map((c) => {
      let r = 0;
      for (let i = VIRIDIS.length - 1; i >= 0; i--) r = r * t + VIRIDIS[i][c];
      return to8(r);
    });
    return [rgb[0], rgb[1], rgb[2]];
  }
  throw new ImageError(`unknown colour map ${JSON.stringify(name)} (jet, viridis, gray)`);
}

/**
 * Bilinear resampling of a float grid to `outW x outH` (half-pixel centres, `align_corners=False`, edges
 * clamped — PyTorch's `F.interpolate(mode="bilinear")` for upsampling).
 */
export function upsampleBilinear(
  grid: ArrayLike<number>,
  gw: number,
  gh: number,
  outW: number,
  outH: number,
): Float32Array {
  if (grid.length !== gw * gh) throw new ImageError(`grid has ${grid.length} values, expected ${gw}x${gh}`);
  const out = new Float32Array(outW * outH);
  const src = (d: number, inN: number, outN: number) => Math.max(0, (d + 0.5) * (inN / outN) - 0.5);
  for (let y = 0; y < outH; y++) {
    const sy = src(y, gh, outH);
    const y0 = Math.min(Math.floor(sy), gh - 1), y1 = Math.min(y0 + 1, gh - 1), fy = sy - y0;
    for (let x = 0; x < outW; x++) {
      const sx = src(x, gw, outW);
      const x0 = Math.min(Math.floor(sx), gw - 1), x1 = Math.min(x0 + 1, gw - 1), fx = sx - x0;
      const top = grid[y0 * gw + x0] * (1 - fx) + grid[y0 * gw + x1] * fx;
      const bot = grid[y1 * gw + x0] * (1 - fx) + grid[y1 * gw + x1] * fx;
      out[y * outW + x] = top * (1 - fy) + bot * fy;
    }
  }
  return out;
}

/** Options of {@link renderAttention}. */
export interface RenderAttentionOptions {
  /** Weight of the heat map in the blend, 0..1 (default 0.5). */
  alpha?: number;
  /** Colour map (default `jet`). */
  colormap?: Colormap;
  /** Grid `[height, width]` of the patch tokens; default the square root of the map's length. */
  grid?: [number, number];
}

/**
 * Lays an attention map over an image: min-max normalised, upsampled bilinearly to the image size,
 * colour-mapped and alpha-blended (`(1 - alpha) * image + alpha * colour`, rounded).
 *
 * @example
 * ```ts
 * import { renderAttention } from "./attention.ts";
 * const image = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).fill(128) };
 * const map = new Float32Array(4).map((_, i) => i); // a 2x2 token grid
 * const overlay = renderAttention(image, map, { colormap: "viridis" }); // 32x32 RGB
 * ```
 */
export function renderAttention(
  image: RgbImage,
  map: ArrayLike<number>,
  opts: RenderAttentionOptions = {},
): RgbImage {
  const alpha = opts.alpha ?? 0.5;
  if (!(alpha >= 0 && alpha <= 1)) throw new ImageError(`alpha must be in [0, 1], got ${alpha}`);
  let gh: number, gw: number;
  if (opts.grid) [gh, gw] = opts.grid;
  else {
    gh = gw = Math.round(Math.sqrt(map.length));
  }
  if (gh * gw !== map.length) {
    throw new ImageError(`attention map of ${map.length} tokens does not fit a ${gh}x${gw} grid`);
  }
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < map.length; i++) {
    if (!Number.isFinite(map[i])) throw new ImageError("attention map holds NaN or infinite values");
    lo = Math.min(lo, map[i]);
    hi = Math.max(hi, map[i]);
  }
  const norm = Float32Array.from(map, (v) => (hi > lo ? (v - lo) / (hi - lo) : 0));
  const up = upsampleBilinear(norm, gw, gh, image.width, image.height);
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) lut.set(colormap(opts.colormap ?? "jet", i / 255), i * 3);
  const out = new Uint8Array(image.data.length);
  for (let i = 0; i < up.length; i++) {
    const q = Math.round(up[i] * 255) * 3;
    for (let c = 0; c < 3; c++) {
      out[i * 3 + c] = Math.round((1 - alpha) * image.data[i * 3 + c] + alpha * lut[q + c]);
    }
  }
  return { width: image.width, height: image.height, data: out };
}
