import assert from "node:assert/strict";
import { StagedWriter } from "../../converters/staged_writer.ts";
import { bytesEqual } from "../../converters/convert.ts";
import { safetensorsHeader, serializeSafetensors } from "../../converters/safetensors.ts";
import type { RawTensor } from "../../src/core/types.ts";

const CHUNK = 64;

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + 7) & 255;
  return b;
}

/** Streams `sizes` through a StagedWriter the way convertCheckpoint does and compares with serializeSafetensors. */
function check(sizes: number[], chunk = CHUNK): void {
  const tensors = new Map<string, RawTensor>();
  sizes.forEach((n, i) => tensors.set(`t${i}`, { dtype: "U8", shape: [n], data: bytes(n, i) }));
  const want = serializeSafetensors(tensors, { format: "pt" });
  const out: Uint8Array[] = [];
  // The sink copies: the writer may reuse its staging buffer after each call.
  const w = new StagedWriter((b) => out.push(b.slice()), chunk);
  w.put(safetensorsHeader(
    [...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, nbytes: t.data.length })),
    { format: "pt" },
  ));
  for (const t of tensors.values()) w.put(t.data);
  w.flush();
  const got = new Uint8Array(out.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of out) got.set(b, (o += b.length) - b.length);
  assert.equal(w.written, want.length, `sizes ${sizes}`);
  assert.deepEqual(got, want, `sizes ${sizes}`);
}

Deno.test("StagedWriter: output equals serializeSafetensors for every buffering case", () => {
  const q = CHUNK >> 2;
  const cases: number[][] = [
    [0],
    [1],
    [CHUNK - 1],
    [CHUNK],
    [CHUNK + 1],
    [5 * CHUNK + 3],
    [q - 1, q, q + 1],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5 * CHUNK],
    [5 * CHUNK, 1, 2, 3, 0, 4],
    [3, CHUNK - 1, 3, CHUNK, 3, CHUNK + 1, 0, 3],
    [q - 1, q - 1, q - 1, q - 1, q - 1, q],
  ];
  for (const c of cases) check(c);
  // Every size from 0 to 3 chunks after a few staged bytes.
  for (let n = 0; n <= 3 * CHUNK; n++) check([5, n, 7]);
});

Deno.test("StagedWriter: the default 4 MiB chunk around the 1 MiB pass-through size that broke the old writer", () => {
  const MiB = 1 << 20;
  for (
    const sizes of [
      [100, MiB - 1, MiB, MiB + 1, 7],
      [3, 4 * MiB - 1, 5, 4 * MiB, 5, 4 * MiB + 1, 0, 9],
      [MiB, 1, 2, 3],
      Array.from({ length: 40 }, (_, i) => (i % 7 === 6 ? MiB + i : 1000 + i)),
    ]
  ) {
    const tensors = new Map<string, RawTensor>();
    sizes.forEach((n, i) => tensors.set(`t${i}`, { dtype: "U8", shape: [n], data: bytes(n, i) }));
    const want = serializeSafetensors(tensors, { format: "pt" });
    const got = new Uint8Array(want.length);
    let o = 0;
    const w = new StagedWriter((b) => {
      got.set(b, o);
      o += b.length;
    });
    w.put(want.subarray(0, want.length - sizes.reduce((a, b) => a + b, 0))); // the header
    for (const t of tensors.values()) w.put(t.data);
    w.flush();
    assert.equal(o, want.length);
    assert.ok(bytesEqual(got, want), `sizes ${sizes}`);
  }
});

Deno.test("StagedWriter: rejects a non-positive chunk", () => {
  assert.throws(() => new StagedWriter(() => {}, 0), RangeError);
});
