/** Shared helpers of the kernel tests (wasm and WebGPU). */
import assert from "node:assert/strict";
import { configureKernels } from "../../zoo/kernels/mod.ts";

/** Deterministic values in [-1, 1). */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Runs `f` with our kernels off: the generic tfjs path the layers take without them. */
export function generic<T>(f: () => T): T {
  configureKernels({ enabled: false });
  try {
    return f();
  } finally {
    configureKernels({ enabled: true });
  }
}

/** Largest absolute difference (NaN counts as infinitely large). */
export function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (!(e <= d)) d = e;
  }
  return d;
}
