/**
 * The fuzzer's seeds: every case draws from its own generator (the package's one `Rng`, `src/core/rng.ts`),
 * seeded from the run's seed and the case index, so `--seed S --case N` replays exactly one case. Plus two
 * draws only the fuzzer wants.
 *
 * @module
 */

import type { Rng } from "../src/core/rng.ts";

/** splitmix32-style mixing of a 32-bit value. */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The seed of case `index` of a run seeded with `seed`. */
export function caseSeed(seed: number, index: number): number {
  return mix32(mix32(seed >>> 0) ^ mix32((index * 0x27d4eb2d) >>> 0)) >>> 0;
}

/** A uniform integer in [0, n), and 0 when `n` is 0 or less (an empty range in a mutated file). */
export function below(rng: Rng, n: number): number {
  return n >= 1 ? rng.int(Math.min(Math.floor(n), 2 ** 32)) : 0;
}

/** A small count biased towards 1: 1 (60%), 2 (25%), 3-`max`. */
export function count(rng: Rng, max: number): number {
  const r = rng.uniform();
  if (r < 0.6 || max <= 1) return 1;
  if (r < 0.85 || max <= 2) return 2;
  return 3 + below(rng, max - 2);
}
