/**
 * Regression tests for what the fuzzer and the allocation audit found in the safetensors reader and writer,
 * the pickle machine's text opcodes and the dtype helpers: each input here used to escape as an untyped error,
 * hang for seconds to minutes, or silently lose data.
 */

import assert from "node:assert/strict";
import { CheckpointError, SafetensorsError } from "../../src/core/errors.ts";
import {
  castFloat,
  numberToBf16,
  numberToF16,
  parseSafetensors,
  safetensorsHeader,
  serializeSafetensors,
} from "../../converters/safetensors.ts";
import { castFloatInto } from "../../src/core/dtype.ts";
import { keyText, pyRepr, unpickle } from "../../converters/pickle.ts";
import { resolveTorchGlobal } from "../../converters/torch_globals.ts";
import type { RawTensor, TensorMap } from "../../src/core/types.ts";
import { OP, Pickle } from "../support/checkpoint_builders.ts";

const enc = new TextEncoder();

function file(header: string, data = new Uint8Array(0)): Uint8Array {
  const h = enc.encode(header);
  const b = new Uint8Array(8 + h.length + data.length);
  new DataView(b.buffer).setBigUint64(0, BigInt(h.length), true);
  b.set(h, 8);
  b.set(data, 8 + h.length);
  return b;
}

Deno.test("safetensors: malformed strings in the header are SafetensorsErrors, not SyntaxErrors", () => {
  // found by the fuzzer: JSON.parse of one key threw a bare SyntaxError out of parseSafetensors
  for (
    const [what, header] of [
      ["a bad escape", '{"a\\q":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'],
      ["a raw control character", '{"a\u0001":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'],
      ["a short unicode escape", '{"a\\u12":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'],
      ["a bad escape in metadata", '{"__metadata__":{"k":"v\\x"}}'],
      ["a lone backslash at the end", '{"a\\'],
    ]
  ) {
    assert.throws(() => parseSafetensors(file(header), "s.safetensors"), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `${what}: ${e}`);
      assert.match(e.message, /^s\.safetensors: (malformed|unterminated)/, what);
      return true;
    });
  }
});

Deno.test("safetensors: dtype names from Object.prototype are unsupported dtypes", () => {
  for (const dtype of ["toString", "constructor", "__proto__", "hasOwnProperty", "valueOf"]) {
    const b = file(JSON.stringify({ w: { dtype, shape: [], data_offsets: [0, 4] } }), new Uint8Array(4));
    assert.throws(() => parseSafetensors(b, "s.safetensors"), /'w': unsupported dtype/);
    const t = { dtype, shape: [1], data: new Uint8Array(4) } as unknown as RawTensor;
    assert.throws(() => serializeSafetensors(new Map([["w", t]])), /unsupported dtype/);
  }
});

Deno.test("safetensors: '__proto__' is an ordinary tensor name and metadata key, written and read back", () => {
  const t: RawTensor = { dtype: "F32", shape: [2], data: new Uint8Array(new Float32Array([1, 2]).buffer) };
  const tensors: TensorMap = new Map([["__proto__", t], ["constructor", t]]);
  const meta: Record<string, string> = { format: "pt" };
  Object.defineProperty(meta, "__proto__", { value: "kept", enumerable: true });
  const bytes = serializeSafetensors(tensors, meta);
  const back = parseSafetensors(bytes, "proto.safetensors");
  assert.deepEqual([...back.tensors.keys()], ["__proto__", "constructor"]);
  assert.deepEqual([...new Float32Array(back.tensors.get("__proto__")!.data.slice().buffer)], [1, 2]);
  assert.ok(Object.hasOwn(back.metadata, "__proto__"));
  assert.equal(back.metadata["__proto__" as string], "kept");
  assert.equal(Object.getPrototypeOf(back.metadata), Object.prototype, "the prototype is untouched");
  // the header writer refuses what the reader would
  assert.throws(
    () =>
      safetensorsHeader([{ name: "a", dtype: "F32", shape: [2], nbytes: 8 }, {
        name: "a",
        dtype: "F32",
        shape: [2],
        nbytes: 8,
      }]),
    /duplicate tensor name/,
  );
  assert.throws(() => safetensorsHeader([{ name: "a", dtype: "F32", shape: [2], nbytes: 4 }]), /has 4 bytes/);
});

Deno.test("safetensors: long runs of padding, digits and spaces cost linear time", () => {
  // a regex trim (/ +$/) took 82 s on this header
  const t0 = performance.now();
  assert.throws(() => parseSafetensors(file("{" + " ".repeat(400_000) + "x"), "s"), SafetensorsError);
  // padding after a valid header is still accepted
  const ok = file(
    JSON.stringify({ w: { dtype: "U8", shape: [1], data_offsets: [0, 1] } }) + " ".repeat(100_000),
    new Uint8Array(1),
  );
  assert.equal(parseSafetensors(ok, "s").tensors.get("w")!.data.length, 1);
  assert.ok(performance.now() - t0 < 1000);
});

Deno.test("pickle: FLOAT and STRING lines are parsed in linear time, with Python's meaning", () => {
  const load = (b: Uint8Array) => unpickle(b, { file: "f.pkl", resolveGlobal: resolveTorchGlobal }).value;
  const float = (s: string) => load(new Pickle().raw(OP.FLOAT).line(s).stop().bytesOut());
  assert.equal(float("1.5"), 1.5);
  assert.equal(float("-2.5e-3"), -0.0025);
  assert.equal(float(".5"), 0.5);
  assert.equal(float("7."), 7);
  assert.equal(float("1e5"), 100000);
  assert.equal(float("inf"), Infinity);
  assert.equal(float("-inf"), -Infinity);
  assert.ok(Number.isNaN(float("nan")));
  for (const bad of ["1.2.3", "e5", ".", "1e", "--1", "0x10"]) {
    assert.throws(() => float(bad), CheckpointError, bad);
  }
  const t0 = performance.now();
  // a backtracking regex took 7.5 s on 100k digits and minutes on a megabyte
  assert.throws(() => float("1".repeat(1_000_000) + "x"), /bad FLOAT/);
  assert.equal(float("9".repeat(400) + ".5"), Infinity);
  const str = (s: string) => load(new Pickle().raw(OP.STRING).line(s).stop().bytesOut());
  assert.equal(str("'abc'   "), "abc");
  assert.throws(() => str("'" + " ".repeat(1_000_000) + "x"), /must be quoted/);
  assert.ok(performance.now() - t0 < 1000, `${performance.now() - t0} ms`);
});

Deno.test("pickle: pyRepr and keyText are bounded however deep or large the value", () => {
  let deep: unknown = 1;
  for (let i = 0; i < 200_000; i++) deep = Object.freeze([deep]);
  const r = pyRepr(deep);
  assert.ok(r.length <= 80 && r.startsWith("(((("), r);
  assert.equal(keyText("w"), "w");
  assert.equal(keyText(3), "3");
  assert.equal(keyText(Object.freeze([1, "a"])), "(1, 'a')");
  assert.equal(pyRepr(Object.freeze([1])), "(1,)");
  assert.equal(pyRepr([null, true, 2.5]), "[None, True, 2.5]");
  assert.equal(pyRepr("x".repeat(1000)).length, 80);
  const cyclic: unknown[] = [];
  cyclic.push(cyclic);
  assert.ok(pyRepr(cyclic).length <= 80);
});

Deno.test("dtype helpers: numberToF16/numberToBf16 and castFloat agree with dtype.ts (torch's rounding, canonical NaN)", () => {
  const values = [0, -0, 1, -1, 0.1, 65504, 65520, 1e-8, 6e-8, 3.4e38, Infinity, -Infinity, NaN, -NaN, 1 / 3];
  const f32 = new Float32Array(values);
  const t: RawTensor = { dtype: "F32", shape: [values.length], data: new Uint8Array(f32.buffer) };
  for (const d of ["F16", "BF16"] as const) {
    const a = new Uint16Array(castFloat(t, d).data.slice().buffer);
    const b = new Uint16Array(castFloatInto(t, d).data.slice().buffer);
    assert.deepEqual(a, b, d);
    const one = values.map((v) => d === "F16" ? numberToF16(v) : numberToBf16(v));
    assert.deepEqual([...a], one, `${d} per number`);
  }
  // every NaN payload becomes torch's canonical NaN
  const nan = new Float32Array(new Uint32Array([0x7f800001, 0xffc12345, 0x7fffffff]).buffer);
  for (const v of nan) {
    assert.equal(numberToBf16(v), 0x7fc0);
    assert.equal(numberToF16(v) & 0x7fff, 0x7e00);
  }
});
