/**
 * Position embeddings: the sinusoid table T2T-ViT starts with, and the bicubic resize of a learned or loaded
 * table to another image size (what the official `resize_pos_embed` intends).
 *
 * @module
 */

/**
 * The official `get_sinusoid_encoding(n_position, d_hid)` without its batch axis: row `pos`, column `j` is
 * `sin` (even `j`) or `cos` (odd `j`) of `pos / 10000^(2 * floor(j / 2) / d)`, computed in float64 and
 * rounded once to float32, as numpy does there.
 *
 * @example
 * ```ts
 * import { sinusoidTable } from "./position.ts";
 * const t = sinusoidTable(197, 384); // Float32Array of 197 * 384 values
 * ```
 */
export function sinusoidTable(nPosition: number, dim: number): Float32Array {
  const out = new Float32Array(nPosition * dim);
  const denom = new Float64Array(dim);
  for (let j = 0; j < dim; j++) denom[j] = Math.pow(10000, (2 * Math.floor(j / 2)) / dim);
  for (let pos = 0; pos < nPosition; pos++) {
    for (let j = 0; j < dim; j++) {
      const angle = pos / denom[j];
      out[pos * dim + j] = j % 2 === 0 ? Math.sin(angle) : Math.cos(angle);
    }
  }
  return out;
}

/** PyTorch's cubic convolution kernel with A = -0.75 (`upsample_bicubic2d`), the 4 tap weights for `t`. */
function cubicWeights(t: number, out: Float64Array): void {
  const A = -0.75;
  const cc1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const cc2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  out[0] = cc2(t + 1);
  out[1] = cc1(t);
  out[2] = cc1(1 - t);
  out[3] = cc2(2 - t);
}

/**
 * Interpolation taps of a 1-D bicubic resize from `inSize` to `outSize` as `F.interpolate(mode="bicubic",
 * align_corners=False)` computes them: source coordinate `(o + 0.5) * in/out - 0.5` (not clamped), 4 taps
 * around its floor, indices clamped to the border.
 */
function bicubicTaps(inSize: number, outSize: number): { idx: Int32Array; w: Float64Array } {
  const idx = new Int32Array(outSize * 4);
  const w = new Float64Array(outSize * 4);
  const scale = inSize / outSize;
  const tmp = new Float64Array(4);
  for (let o = 0; o < outSize; o++) {
    const src = (o + 0.5) * scale - 0.5;
    const f = Math.floor(src);
    cubicWeights(src - f, tmp);
    for (let t = 0; t < 4; t++) {
      idx[o * 4 + t] = Math.min(Math.max(f - 1 + t, 0), inSize - 1);
      w[o * 4 + t] = tmp[t];
    }
  }
  return { idx, w };
}

/**
 * Resizes a position embedding `(1, 1 + g*g, dim)` (class row first) to `(1, 1 + G*G, dim)`: the class row
 * is kept and the `g x g` grid is resized bicubically (PyTorch `F.interpolate`, `align_corners=False`, A = -0.75).
 *
 * @param values the embedding, `(1 + oldGrid^2) * dim` float32 values in row-major order
 * @returns `(1 + newGrid^2) * dim` values
 *
 * @example
 * ```ts
 * import { resizePosEmbed } from "./position.ts";
 * const big = resizePosEmbed(new Float32Array(197 * 384), 384, 14, 24); // 577 * 384 values
 * ```
 */
export function resizePosEmbed(
  values: Float32Array,
  dim: number,
  oldGrid: number,
  newGrid: number,
): Float32Array {
  if (values.length !== (1 + oldGrid * oldGrid) * dim) {
    throw new RangeError(`pos_embed has ${values.length} values, expected ${(1 + oldGrid * oldGrid) * dim}`);
  }
  const out = new Float32Array((1 + newGrid * newGrid) * dim);
  out.set(values.subarray(0, dim));
  const { idx, w } = bicubicTaps(oldGrid, newGrid);
  // separable: first along x for the 4 source rows, then along y (as PyTorch's kernel does), in float64
  const row = new Float64Array(4 * dim);
  for (let oy = 0; oy < newGrid; oy++) {
    for (let ox = 0; ox < newGrid; ox++) {
      row.fill(0);
      for (let ty = 0; ty < 4; ty++) {
        const sy = idx[oy * 4 + ty];
        for (let tx = 0; tx < 4; tx++) {
          const sx = idx[ox * 4 + tx];
          const wx = w[ox * 4 + tx];
          const base = 1 + sy * oldGrid + sx;
          for (let c = 0; c < dim; c++) row[ty * dim + c] += wx * values[base * dim + c];
        }
      }
      const dst = (1 + oy * newGrid + ox) * dim;
      for (let c = 0; c < dim; c++) {
        let acc = 0;
        for (let ty = 0; ty < 4; ty++) acc += w[oy * 4 + ty] * row[ty * dim + c];
        out[dst + c] = acc;
      }
    }
  }
  return out;
}
