/**
 * FNV-1a, the one string hash of the package (the reference fill's per-tensor seed, `Rng.derive`'s stream ids).
 *
 * @module
 */

/** FNV-1a 32-bit hash of the UTF-8 bytes of `s`. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}
