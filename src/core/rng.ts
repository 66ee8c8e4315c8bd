/**
 * The package's one seeded generator: training (data shuffling, random crops and flips, the dropout masks of
 * a training forward pass), the models' random initialisation, and the fuzzer's cases. Every draw is a pure
 * function of the seeds, so a training run resumed from a checkpoint (which records the seed and the step)
 * draws exactly what the uninterrupted run would have, and a fuzz case replays from its seed and index.
 *
 * @module
 */

import { fnv1a32 as hashString } from "./hash.ts";

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) >>> 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * A small, fast, seedable generator (xoshiro128**) with a serialisable state. {@linkcode Rng.splitmix} gives
 * the plain splitmix32 stream instead, the one the models' seeded initialisation draws from.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const r = Rng.derive(42, "shuffle", 0); // the stream for epoch 0's shuffle
 * const perm = r.permutation(10);
 * const u = r.uniform(); // in [0, 1)
 * ```
 */
export class Rng {
  #s: Uint32Array;
  /** splitmix32 mode: `#s[0]` is the whole state and a uniform takes one 32-bit draw. */
  #splitmix = false;

  /** A generator seeded from one or more 32-bit integers (mixed with splitmix32). */
  constructor(...seeds: number[]) {
    const st = { s: 0x6a09e667 };
    for (const x of seeds) {
      st.s = (st.s ^ (Math.floor(x) >>> 0)) >>> 0;
      splitmix32(st);
    }
    this.#s = new Uint32Array(4);
    do {
      for (let i = 0; i < 4; i++) this.#s[i] = splitmix32(st);
    } while ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0);
  }

  /** The generator for `(seed, purpose, ...counters)`: independent streams for independent uses. */
  static derive(seed: number, purpose: string, ...counters: number[]): Rng {
    const parts = [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0, hashString(purpose)];
    for (const c of counters) parts.push(c >>> 0, Math.floor(c / 2 ** 32) >>> 0);
    return new Rng(...parts);
  }

  /**
   * The splitmix32 stream of `seed` (one 32-bit draw per `uniform()`): what the models' parameter
   * initialisation draws, so that a seeded initialisation stays the same model.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const a = Rng.splitmix(7), b = Rng.splitmix(7);
   * a.normal() === b.normal(); // true
   * ```
   */
  static splitmix(seed = 0): Rng {
    const r = new Rng();
    r.#splitmix = true;
    r.#s = Uint32Array.of(((seed >>> 0) ^ 0x9e3779b9) >>> 0, 0, 0, 0);
    return r;
  }

  /** The next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.#s;
    if (this.#splitmix) {
      const st = { s: s[0] };
      const v = splitmix32(st);
      s[0] = st.s;
      return v;
    }
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A float64 uniform in [0, 1) with 53 random bits (32 in {@linkcode Rng.splitmix} mode). */
  uniform(): number {
    if (this.#splitmix) return this.nextU32() / 4294967296;
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** An integer uniform in [0, n), without modulo bias. */
  int(n: number): number {
    if (!(n >= 1) || n > 2 ** 32 || !Number.isInteger(n)) throw new RangeError(`Rng.int: bad bound ${n}`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** A standard normal value (Box-Muller on two uniforms). */
  normal(): number {
    let u = this.uniform();
    while (u <= 0) u = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.uniform() < p;
  }

  /** One element of a non-empty array, uniformly. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** One key of a table of weights, drawn in proportion to its weight. */
  weighted<K extends string>(table: Readonly<Record<K, number>>): K {
    const keys = Object.keys(table) as K[];
    let total = 0;
    for (const k of keys) total += table[k];
    let r = this.uniform() * total;
    for (const k of keys) {
      r -= table[k];
      if (r < 0) return k;
    }
    return keys[keys.length - 1];
  }

  /** A uniformly random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }

  /** The internal state (four 32-bit words), for checkpoints. */
  getState(): [number, number, number, number] {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  /** Restores a state from {@linkcode Rng.getState}. */
  setState(state: readonly number[]): void {
    if (state.length !== 4 || (!this.#splitmix && state.every((x) => (x >>> 0) === 0))) {
      throw new RangeError("Rng.setState: expected four 32-bit words, not all zero");
    }
    for (let i = 0; i < 4; i++) this.#s[i] = state[i] >>> 0;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
