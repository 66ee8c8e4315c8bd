import assert from "node:assert/strict";
// npm:safetensors 0.0.1 ships a UMD bundle (CommonJS to Deno): its exports arrive on the default import.
import safetensorsJs from "safetensors";
import { SafetensorsError } from "../../src/core/errors.ts";
import {
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  writeSafetensors,
} from "../../converters/safetensors.ts";
import { convertCheckpoint } from "../../converters/convert.ts";
import type { TensorMap } from "../../src/core/types.ts";
import { ref, REFERENCE_DIR } from "../support/fixtures.ts";

const enc = new TextEncoder();

/** A safetensors file from a raw header string and a data area. */
function raw(header: string, data: Uint8Array = new Uint8Array(0), declared?: bigint): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function rejects(bytes: Uint8Array, re: RegExp, what: string) {
  assert.throws(() => parseSafetensors(bytes, "bad.safetensors"), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `${what}: ${e}`);
    assert.match(e.message, re, what);
    assert.ok(e.message.startsWith("bad.safetensors"), `${what}: names the file`);
    return true;
  });
}

Deno.test("safetensors: every reference file parses", async () => {
  const files = [
    ...[...Deno.readDirSync(`${REFERENCE_DIR}outputs`)].map((e) => `outputs/${e.name}`),
    "images/expected.safetensors",
    ...["", "-fp16", "-bf16", "-views"].map((s) => `checkpoints/tiny-expected${s}.safetensors`),
  ];
  for (const f of files) {
    const { tensors } = await readSafetensors(ref(f));
    assert.ok(tensors.size > 0, f);
  }
});

Deno.test("safetensors: the reader enforces the format", () => {
  const f32x2 = new Uint8Array(8);
  const ok = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  assert.equal(parseSafetensors(raw(ok, f32x2)).tensors.get("a")!.shape[0], 2);
  const cases: [string, Uint8Array, RegExp][] = [
    ["shorter than 8 bytes", new Uint8Array(5), /shorter than the 8-byte/],
    ["header past the end", raw(ok, f32x2, 10_000n), /runs past the end/],
    ["header length 2^64-1", raw(ok, f32x2, 2n ** 64n - 1n), /runs past the end/],
    [
      "invalid UTF-8",
      raw('{"\xff":1}'.replace("\xff", "\u00ff"), f32x2).map((b, i) => (i === 10 ? 0xff : b)),
      /UTF-8|JSON/,
    ],
    ["not JSON", raw("{nope", f32x2), /malformed header JSON/],
    ["not an object", raw("[1,2]", f32x2), /not a JSON object/],
    ["trailing garbage", raw(ok + "x", f32x2), /trailing bytes|malformed/],
    [
      "unknown dtype",
      raw('{"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}', f32x2),
      /unsupported dtype "F128"/,
    ],
    ["negative dim", raw('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', f32x2), /bad shape/],
    ["fractional dim", raw('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', f32x2), /bad shape/],
    [
      "huge shape",
      raw('{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}', f32x2),
      /bad shape/,
    ],
    ["reversed offsets", raw('{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', f32x2), /reversed/],
    [
      "offsets past the data",
      raw('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', f32x2),
      /bad shape|run past the data/,
    ],
    ["size mismatch", raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}', f32x2), /needs 4/],
    [
      "gap",
      raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32x2),
      /gap in data before offset 4/,
    ],
    [
      "overlap",
      raw(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        f32x2,
      ),
      /overlaps/,
    ],
    ["not covering", raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32x2), /cover 4 of 8/],
    [
      "duplicate tensor",
      raw(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        f32x2,
      ),
      /duplicate key/,
    ],
    [
      "duplicate field",
      raw('{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32x2),
      /duplicate key/,
    ],
    [
      "metadata not strings",
      raw('{"__metadata__":{"n":1},' + ok.slice(1), f32x2),
      /metadata values must be strings/,
    ],
    [
      "metadata not an object",
      raw('{"__metadata__":[],' + ok.slice(1), f32x2),
      /__metadata__ is not an object/,
    ],
    ["entry not an object", raw('{"a":3}', f32x2), /tensor entry is not an object/],
  ];
  for (const [what, bytes, re] of cases) rejects(bytes, re, what);
  // padding spaces are allowed, empty tensors are fine, an empty file has no tensors
  assert.equal(parseSafetensors(raw(ok + "      ", f32x2)).tensors.size, 1);
  assert.deepEqual(
    parseSafetensors(raw('{"e":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]}}')).tensors.get("e")!.data
      .length,
    0,
  );
  assert.equal(parseSafetensors(raw("{}")).tensors.size, 0);
});

Deno.test("safetensors: the writer refuses what the reader would refuse, and round-trips", async () => {
  const t: TensorMap = new Map([["w", { dtype: "BF16", shape: [3], data: new Uint8Array(6).fill(1) }]]);
  const bytes = serializeSafetensors(t, { format: "pt" });
  const back = parseSafetensors(bytes);
  assert.deepEqual(back.metadata, { format: "pt" });
  assert.deepEqual(back.tensors.get("w")!.data, t.get("w")!.data);
  const hlen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + hlen) % 8, 0, "data starts 8-byte aligned");
  assert.throws(
    () => serializeSafetensors(new Map([["w", { dtype: "F32", shape: [3], data: new Uint8Array(8) }]])),
    SafetensorsError,
  );
  assert.throws(
    () =>
      serializeSafetensors(
        new Map([["__metadata__", { dtype: "F32", shape: [0], data: new Uint8Array(0) }]]),
      ),
    SafetensorsError,
  );
  assert.throws(() => serializeSafetensors(t, { n: 1 as unknown as string }), SafetensorsError);
  const dir = Deno.makeTempDirSync();
  try {
    await writeSafetensors(`${dir}/a.safetensors`, t);
    await assert.rejects(() => writeSafetensors(`${dir}/a.safetensors`, t), /already exists/);
    await writeSafetensors(`${dir}/a.safetensors`, t, {}, { force: true });
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.safetensors"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/**
 * npm:safetensors 0.0.1 treats every header key as a tensor (it crashes on `__metadata__`) and reads the
 * header length from byte 0 of the ArrayBuffer. Give it a fresh buffer with the same data area and the same
 * tensor entries, minus `__metadata__`; it then checks our offsets, dtypes and shapes independently.
 */
function withoutMetadata(bytes: Uint8Array): Uint8Array {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  delete header.__metadata__;
  return raw(JSON.stringify(header), bytes.subarray(8 + n));
}

Deno.test("safetensors: npm:safetensors, a second reader, sees exactly our converted tensors", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    for (
      const [file, dtype] of [["t2t_vit_7.pth.tar", "keep"], ["tiny-views.pth", "f16"], [
        "tiny-bf16-legacy.pth",
        "keep",
      ]] as const
    ) {
      const output = `${dir}/${file}.safetensors`;
      await convertCheckpoint(ref(`checkpoints/${file}`), { output, dtype });
      const bytes = Deno.readFileSync(output);
      const theirs = new safetensorsJs.SafeTensor(withoutMetadata(bytes));
      const ours = parseSafetensors(bytes, output);
      const names = [...theirs.metadata.keys()].filter((k: string) => k !== "__metadata__");
      assert.deepEqual(names, [...ours.tensors.keys()], file);
      for (const [k, t] of ours.tensors) {
        const info = theirs.metadata.get(k);
        assert.equal(info.dtype, t.dtype, `${file} ${k}`);
        assert.deepEqual(info.shape, t.shape, `${file} ${k}`);
        assert.deepEqual(theirs.getTensor(k), t.data, `${file} ${k}`);
      }
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
