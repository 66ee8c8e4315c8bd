/**
 * The deterministic weight and input fill of the reference data (`tests/fixtures/reference/README.md`):
 * every value is a pure function of a tensor's name and the element's flat index, so parity tests rebuild
 * the exact weights the official PyTorch code was run with, and benchmarks get realistic-looking weights.
 *
 * @module
 */

import { fnv1a32 } from "./hash.ts";

export { fnv1a32 };

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * `count` values `unit(name, i)` in [0, 1), as float64.
 *
 * @example
 * ```ts
 * import { unit } from "./fill.ts";
 * unit("input", 4); // Float64Array [0.64302361..., 0.92034459..., 0.1919834..., 0.224527...]
 * ```
 */
export function unit(name: string, count: number): Float64Array {
  const h = fnv1a32(name);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    out[i] = (mix32((h + Math.imul(i, 0x9e3779b9)) >>> 0) >>> 8) / 16777216;
  }
  return out;
}

/**
 * The reference fill of a state_dict tensor `name` with `shape`, as float32 (C order).
 *
 * @example
 * ```ts
 * import { fill } from "./fill.ts";
 * fill("blocks.0.norm1.weight", [4]); // Float32Array [0.91709065, 0.9515681, 1.0127422, 0.95385045]
 * ```
 */
export function fill(name: string, shape: readonly number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  // The same float64 expressions as the reference, in one loop without per-element calls (5x faster).
  const kind = name.endsWith(".w")
    ? 0
    : shape.length === 1 && name.endsWith("weight")
    ? 1
    : name.endsWith("bias")
    ? 2
    : 3;
  const h = fnv1a32(name);
  for (let i = 0; i < n; i++) {
    let x = (h + Math.imul(i, 0x9e3779b9)) >>> 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    const u = (x >>> 8) / 16777216;
    out[i] = kind === 0
      ? (2 * u - 1) * 1.7320508
      : kind === 1
      ? 1 + (u - 0.5) * 0.2
      : kind === 2
      ? (u - 0.5) * 0.04
      : (2 * u - 1) * 0.0346410162;
  }
  return out;
}

/**
 * The reference input `fill_input(batch, size)`: NCHW float32 of shape `[batch, chans, size, size]`.
 *
 * @example
 * ```ts
 * import { fillInput } from "./fill.ts";
 * const x = fillInput(2, 32); // 2 * 3 * 32 * 32 values in [-2, 2)
 * ```
 */
export function fillInput(batch: number, size: number, chans = 3): Float32Array {
  const u = unit("input", batch * chans * size * size);
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) out[i] = (2 * u[i] - 1) * 2;
  return out;
}
