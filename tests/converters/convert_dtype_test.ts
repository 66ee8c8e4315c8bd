import assert from "node:assert/strict";
import { allFinite, castFloatInto, f16BitsToF32, f32BitsToBf16, f32BitsToF16 } from "../../src/core/dtype.ts";
import { Rng } from "../../src/core/rng.ts";
import { f16ToNumber } from "../../converters/safetensors.ts";
import type { RawTensor } from "../../src/core/types.ts";

const u32 = new Uint32Array(1);
const f32 = new Float32Array(u32.buffer);

function bitsOf(x: number): number {
  f32[0] = x;
  return u32[0];
}
function valueOf(bits: number): number {
  u32[0] = bits;
  return f32[0];
}

/** An independent oracle: the nearest float16 by search, ties to the even code. */
function nearestF16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // beyond max + half an ulp
  let lo = 0;
  let hi = 0x7bff;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (f16ToNumber(mid) <= a) lo = mid;
    else hi = mid - 1;
  }
  const below = lo;
  const above = Math.min(lo + 1, 0x7c00);
  const dBelow = a - f16ToNumber(below);
  const dAbove = above === 0x7c00 ? Infinity : f16ToNumber(above) - a;
  const pick = dBelow < dAbove ? below : dAbove < dBelow ? above : (below & 1 ? above : below);
  return sign | pick;
}

Deno.test("dtype: float16 widening is exact for all 65536 codes and narrows back to itself", () => {
  for (let h = 0; h < 65536; h++) {
    const bits = f16BitsToF32(h);
    const v = valueOf(bits);
    const want = f16ToNumber(h);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(v));
      assert.equal(f32BitsToF16(bits), (h & 0x8000) | 0x7e00, "NaN becomes torch's canonical NaN");
      continue;
    }
    assert.ok(Object.is(v, want), `code ${h.toString(16)}`);
    assert.equal(f32BitsToF16(bits), h, `round trip ${h.toString(16)}`);
  }
});

Deno.test("dtype: float32 to float16 rounds to nearest even (against a search oracle)", () => {
  const edge = [
    0,
    -0,
    1,
    65504,
    65519.99,
    65520,
    1e-8,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -26,
    2 ** -14,
    Infinity,
    -Infinity,
  ];
  const samples: number[] = [...edge];
  const rng = Rng.derive(7, "float16 rounding"); // this test's own stream, whatever else runs
  for (let i = 0; i < 200_000; i++) {
    const b = rng.nextU32();
    // bias toward the float16 range: exponents 100..145
    const e = 100 + (b % 46);
    samples.push(valueOf(((b & 0x80000000) | (e << 23) | (rng.nextU32() & 0x7fffff)) >>> 0));
  }
  for (const x of samples) {
    const v = Math.fround(x);
    assert.equal(f32BitsToF16(bitsOf(v)), nearestF16(v), `${v}`);
  }
});

Deno.test("dtype: float32 to bfloat16 rounds to nearest even; NaN is 0x7FC0 as in torch", () => {
  const rng = Rng.derive(7, "bfloat16 rounding");
  for (let i = 0; i < 200_000; i++) {
    const b = rng.nextU32();
    const got = f32BitsToBf16(b);
    const v = valueOf(b);
    if (Number.isNaN(v)) {
      assert.equal(got, 0x7fc0);
      continue;
    }
    // oracle in doubles: the truncated bfloat16 below |v| and the next one up (0x7F80 past the largest is
    // infinity, reached from 2^128 as if the exponent were unbounded); nearer wins, ties to the even code
    const mag = b & 0x7fffffff;
    const downMag = mag & 0x7fff0000;
    const e = downMag >>> 23;
    const dv = valueOf(downMag);
    const upv = dv + 2 ** ((e === 0 ? 1 : e) - 127 - 7);
    const x = Math.abs(v);
    const code = downMag >>> 16;
    const pick = x - dv < upv - x ? code : upv - x < x - dv ? code + 1 : (code & 1 ? code + 1 : code);
    assert.equal(got, ((b >>> 16) & 0x8000) | pick, `bits ${b.toString(16)}`);
  }
});

Deno.test("dtype: castFloatInto converts whole tensors, into a reused buffer, leaving non-floats alone", () => {
  const values = [0.1, -2.5, 65504, 1e-7, 3e38, -0];
  const t: RawTensor = { dtype: "F32", shape: [6], data: new Uint8Array(new Float32Array(values).buffer) };
  const out = new Uint8Array(64);
  const h = castFloatInto(t, "F16", out);
  assert.equal(h.data.buffer, out.buffer, "written into the given buffer");
  assert.deepEqual(
    [...new Uint16Array(h.data.slice().buffer)],
    values.map((v) => f32BitsToF16(bitsOf(Math.fround(v)))),
  );
  const back = castFloatInto({ ...h, data: h.data.slice() }, "F32");
  assert.deepEqual(
    [...new Float32Array(back.data.buffer)],
    [...new Uint16Array(h.data.slice().buffer)].map(f16ToNumber),
  );
  // F64 narrows through float32 (torch's .half() of a double goes through float too)
  const d: RawTensor = {
    dtype: "F64",
    shape: [2],
    data: new Uint8Array(new Float64Array([0.1, 1 / 3]).buffer),
  };
  assert.deepEqual([...new Float32Array(castFloatInto(d, "F32").data.buffer)], [
    Math.fround(0.1),
    Math.fround(1 / 3),
  ]);
  assert.equal(new Uint16Array(castFloatInto(d, "BF16").data.buffer)[0], f32BitsToBf16(bitsOf(0.1)));
  // BF16 -> F16 and F32 -> F64 go through exact float32 bits
  const bf: RawTensor = { dtype: "BF16", shape: [1], data: new Uint8Array(new Uint16Array([0x3dcd]).buffer) };
  assert.equal(new Uint16Array(castFloatInto(bf, "F16").data.buffer)[0], f32BitsToF16(0x3dcd0000));
  assert.deepEqual([...new Float64Array(castFloatInto(t, "F64").data.buffer)], values.map(Math.fround));
  // unaligned sources are handled
  const buf = new Uint8Array(25);
  buf.set(t.data, 1);
  const un = castFloatInto({ dtype: "F32", shape: [6], data: buf.subarray(1) }, "BF16");
  assert.deepEqual(un.data, castFloatInto(t, "BF16").data);
  const ints: RawTensor = { dtype: "I64", shape: [1], data: new Uint8Array(8) };
  assert.equal(castFloatInto(ints, "F16"), ints);
  assert.equal(castFloatInto(t, "F32"), t);
});

Deno.test("dtype: allFinite finds NaN and both infinities at every position of short and long arrays, and only them", () => {
  const special = [NaN, Infinity, -Infinity, new Float32Array(new Uint32Array([0x7fc00001]).buffer)[0]];
  const finite = [0, -0, 1e-45, -3.4028234663852886e38, 3.4028234663852886e38, 1.17549435e-38, -1.5];
  for (let n = 0; n <= 11; n++) {
    const v = new Float32Array(n).map((_, i) => finite[i % finite.length]);
    assert.equal(allFinite(v), true, `finite, length ${n}`);
    for (let at = 0; at < n; at++) {
      for (const x of special) {
        const w = v.slice();
        w[at] = x;
        assert.equal(allFinite(w), false, `${x} at ${at} of ${n}`);
      }
    }
  }
  // a view at an offset into a larger buffer sees only its own values
  const big = new Float32Array(4099).fill(0.25);
  big[0] = NaN;
  big[4098] = Infinity;
  assert.equal(allFinite(big.subarray(1, 4098)), true);
  assert.equal(allFinite(big.subarray(0, 4098)), false);
  assert.equal(allFinite(big.subarray(1)), false);
});
