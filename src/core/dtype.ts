/**
 * Float dtype conversion for `--dtype`, bit-exact with PyTorch's `.float()`, `.half()` and `.bfloat16()`:
 * widening is exact, narrowing rounds to nearest even, NaN becomes torch's canonical NaN (`sign|0x7E00` for
 * float16, `0x7FC0` for bfloat16), overflow becomes infinity, float64 narrows through float32 as torch does.
 * Works on whole buffers with integer bit operations (no per-element allocation), optionally into a reused
 * output buffer so streaming conversion does not grow memory.
 *
 * @module
 */

import type { DType, RawTensor } from "./types.ts";

/** The float dtypes {@link castFloatInto} converts between. */
export type FloatDType = "F64" | "F32" | "F16" | "BF16";

/** True for the four floating-point dtypes. */
export function isFloatDType(d: DType): d is FloatDType {
  return d === "F64" || d === "F32" || d === "F16" || d === "BF16";
}

/**
 * Whether every value is finite (no NaN, no infinity): a test of the exponent bits of four values at a time,
 * about 7x faster than `Number.isFinite` per value on a checkpoint's worth of tensors.
 *
 * @example
 * ```ts
 * import { allFinite } from "./dtype.ts";
 * allFinite(new Float32Array([1, -2, 0])); // true
 * allFinite(new Float32Array([1, NaN])); // false
 * ```
 */
export function allFinite(values: Float32Array): boolean {
  const u = new Int32Array(values.buffer, values.byteOffset, values.length);
  const n4 = u.length & ~3;
  // NaN and the infinities are the floats whose exponent bits are all ones
  let a = 0, b = 0, c = 0, d = 0;
  for (let i = 0; i < n4; i += 4) {
    a |= ~u[i] & 0x7f800000 ? 0 : 1;
    b |= ~u[i + 1] & 0x7f800000 ? 0 : 1;
    c |= ~u[i + 2] & 0x7f800000 ? 0 : 1;
    d |= ~u[i + 3] & 0x7f800000 ? 0 : 1;
  }
  for (let i = n4; i < u.length; i++) a |= ~u[i] & 0x7f800000 ? 0 : 1;
  return (a | b | c | d) === 0;
}

/** float32 bits to float16 bits, rounding to nearest even (torch's `fp16_ieee_from_fp32_value`). */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const mag = x & 0x7fffffff;
  if (mag >= 0x38800000 && mag < 0x47800000) {
    // normal float16 range [2^-14, 65536): round the 13 dropped bits to nearest even in one add (a carry
    // into the exponent is correct, and 65520..65535 carries into infinity), then rebias the exponent
    return sign | (((mag + 0xfff + ((mag >>> 13) & 1)) >>> 13) - 0x1c000);
  }
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant ? 0x7e00 : 0x7c00);
  const e = exp - 112;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** float32 bits to bfloat16 bits, rounding to nearest even (torch's `round_to_nearest_even`). */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float16 bits to float32 bits (exact). */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // subnormal: normalise
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

let f16Table: Uint32Array | null = null;

function f16ToF32Table(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h);
  }
  return f16Table;
}

/** A typed view of `data` when aligned, else an aligned copy. */
function view<T>(
  data: Uint8Array,
  C: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number },
): T {
  const n = data.byteLength / C.BYTES_PER_ELEMENT;
  if (data.byteOffset % C.BYTES_PER_ELEMENT === 0) return new C(data.buffer, data.byteOffset, n);
  return new C(data.slice().buffer, 0, n);
}

const SIZE: Record<FloatDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

/**
 * Converts a float tensor to another float dtype, bit-exact with torch. Non-float tensors and same-dtype
 * tensors are returned unchanged. With `out` (at least the result's byte size), the result is written there
 * and its `data` is a view of `out`.
 *
 * @example
 * ```ts
 * import { castFloatInto } from "./dtype.ts";
 * const t = { dtype: "F32" as const, shape: [1], data: new Uint8Array(new Float32Array([0.1]).buffer) };
 * new Uint16Array(castFloatInto(t, "F16").data.buffer)[0]; // 0x2e66
 * ```
 */
export function castFloatInto(t: RawTensor, dtype: FloatDType, out?: Uint8Array): RawTensor {
  if (t.dtype === dtype || !isFloatDType(t.dtype)) return t;
  const n = t.data.byteLength / SIZE[t.dtype];
  const bytes = n * SIZE[dtype];
  let dst: Uint8Array;
  if (out && out.byteLength >= bytes && out.byteOffset % 8 === 0) dst = out.subarray(0, bytes);
  else dst = new Uint8Array(bytes);
  // Bring the source to float32 bits (exact except F64, which rounds once as torch's .float() does).
  let bits: Uint32Array;
  if (t.dtype === "F32") bits = view(t.data, Uint32Array);
  else if (dtype === "F32") bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
  else bits = new Uint32Array(n);
  if (t.dtype === "F64") {
    new Float32Array(bits.buffer, bits.byteOffset, n).set(view(t.data, Float64Array));
  } else if (t.dtype === "F16") {
    const src = view(t.data, Uint16Array);
    const table = f16ToF32Table();
    for (let i = 0; i < n; i++) bits[i] = table[src[i]];
  } else if (t.dtype === "BF16") {
    const src = view(t.data, Uint16Array);
    for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
  }
  if (dtype === "F32") {
    if (t.dtype === "F32") dst.set(t.data);
    else if (bits.buffer !== dst.buffer || bits.byteOffset !== dst.byteOffset) {
      dst.set(new Uint8Array(bits.buffer, bits.byteOffset, bytes));
    }
  } else if (dtype === "F64") {
    new Float64Array(dst.buffer, dst.byteOffset, n).set(new Float32Array(bits.buffer, bits.byteOffset, n));
  } else {
    const o = new Uint16Array(dst.buffer, dst.byteOffset, n);
    if (dtype === "F16") { for (let i = 0; i < n; i++) o[i] = f32BitsToF16(bits[i]); }
    else for (let i = 0; i < n; i++) o[i] = f32BitsToBf16(bits[i]);
  }
  return { dtype, shape: t.shape, data: dst };
}
