/**
 * A small seeded PRNG for the fuzzer: every case draws from its own generator, seeded from the run's seed
 * and the case index, so `--seed S --case N` replays exactly one case.
 *
 * @module
 */

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

/** A seeded generator (xoshiro128**). */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** Seeds the state from a 32-bit seed. */
  constructor(seed: number) {
    this.a = mix32(seed);
    this.b = mix32(this.a ^ 0x1234567);
    this.c = mix32(this.b ^ 0x89abcdef);
    this.d = mix32(this.c ^ 0x55555555) | 1;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** A uniform float in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** A uniform integer in [0, n) (n up to 2^53). */
  int(n: number): number {
    if (n <= 0) return 0;
    if (n <= 4294967296) return Math.floor(this.float() * n);
    return Math.floor((this.u32() * 4294967296 + this.u32()) / 18446744073709551616 * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** One key of a weight table, drawn in proportion to its weight. */
  weighted<K extends string>(table: Readonly<Record<K, number>>): K {
    const keys = Object.keys(table) as K[];
    let total = 0;
    for (const k of keys) total += table[k];
    let r = this.float() * total;
    for (const k of keys) {
      r -= table[k];
      if (r < 0) return k;
    }
    return keys[keys.length - 1];
  }

  /** A small count biased towards 1: 1 (60%), 2 (25%), 3-`max`. */
  count(max: number): number {
    const r = this.float();
    if (r < 0.6 || max <= 1) return 1;
    if (r < 0.85 || max <= 2) return 2;
    return 3 + this.int(max - 2);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
