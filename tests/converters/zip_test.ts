import assert from "node:assert/strict";
import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { CheckpointError } from "../../src/core/errors.ts";
import { FileSource, MemorySource } from "../../converters/source.ts";
import { crc32Js, useNativeZlib, ZipArchive } from "../../converters/zip.ts";
import { parseCheckpoint } from "../../converters/checkpoint.ts";
import { selectWeights } from "../../converters/weights.ts";
import { f32bytes, makeZip, type ZipFileSpec } from "../support/checkpoint_builders.ts";
import { ref } from "../support/fixtures.ts";
import { timeBound } from "../support/timing.ts";

const enc = new TextEncoder();

function open(bytes: Uint8Array, name = "test.zip"): ZipArchive {
  return ZipArchive.open(new MemorySource(bytes, name));
}

function u32at(b: Uint8Array, sig: number, from = 0): number {
  for (let p = from; p + 4 <= b.length; p++) {
    if (new DataView(b.buffer, b.byteOffset + p, 4).getUint32(0, true) === sig) return p;
  }
  return -1;
}

function lastSig(b: Uint8Array, sig: number): number {
  for (let p = b.length - 4; p >= 0; p--) {
    if (new DataView(b.buffer, b.byteOffset + p, 4).getUint32(0, true) === sig) return p;
  }
  return -1;
}

function expectZipError(bytes: Uint8Array, re: RegExp, what: string, readAll = false) {
  assert.throws(() => {
    const z = open(bytes);
    if (readAll) { for (const e of z.entries.values()) z.read(e); }
  }, (e: unknown) => {
    assert.ok(e instanceof CheckpointError, `${what}: ${e}`);
    assert.match(e.message, re, what);
    assert.ok(e.message.includes("test.zip"), `${what}: names the file`);
    return true;
  });
}

const files: ZipFileSpec[] = [
  { name: "archive/data.pkl", data: enc.encode("pickle bytes") },
  { name: "archive/data/0", data: f32bytes([1, 2, 3]) },
  { name: "archive/version", data: enc.encode("3\n") },
];

Deno.test("zip: stored entries, ZIP32 and ZIP64, are views of the input (no copy)", () => {
  for (const zip64 of [false, true]) {
    const bytes = makeZip(files, { zip64 });
    const z = open(bytes);
    assert.deepEqual([...z.entries.keys()], files.map((f) => f.name));
    for (const f of files) {
      const got = z.read(z.entries.get(f.name)!);
      assert.deepEqual(got, f.data);
      assert.equal(got.buffer, bytes.buffer, "a view of the input buffer");
    }
  }
});

Deno.test("zip: a real PyTorch archive: ZIP64, 64-byte aligned records, same bytes through a file", () => {
  const path = ref("checkpoints/tiny-train.pth.tar");
  const bytes = Deno.readFileSync(path);
  const mem = open(bytes, path);
  const fs = FileSource.open(path);
  try {
    const file = ZipArchive.open(fs);
    assert.equal(mem.entries.size, 273);
    for (const e of mem.entries.values()) {
      if (e.name.includes("/data/")) assert.equal(mem.dataOffset(e) % 64, 0, `${e.name} aligned`);
      assert.deepEqual(file.read(file.entries.get(e.name)!), mem.read(e));
    }
  } finally {
    fs.close();
  }
});

Deno.test("zip: deflated entries (from other tools) are inflated and CRC-checked; a deflated checkpoint converts", () => {
  const big = new Uint8Array(100_000).fill(7);
  const z = open(
    makeZip([{ name: "a/x", data: big, deflate: true }, { name: "a/y", data: f32bytes([5]), deflate: true }]),
  );
  assert.deepEqual(z.read(z.entries.get("a/x")!), big);
  assert.ok(z.entries.get("a/x")!.compressedSize < 1000);
  // the whole t2t tiny checkpoint re-zipped with deflate (as `zip -r` would)
  const src = open(Deno.readFileSync(ref("checkpoints/tiny-state-dict.pth")));
  const redone = makeZip(
    [...src.entries.values()].map((e) => ({ name: e.name, data: src.read(e), deflate: true })),
  );
  const ck = parseCheckpoint(redone, "deflated.pth");
  const sel = selectWeights(ck.root);
  assert.equal(sel.tensors.size, 56);
  const orig = selectWeights(parseCheckpoint(Deno.readFileSync(ref("checkpoints/tiny-state-dict.pth"))).root);
  for (const [k, t] of sel.tensors) assert.deepEqual(t.read().data, orig.tensors.get(k)!.read().data);
});

Deno.test("zip: corrupt central directories and lying records are CheckpointErrors", () => {
  const good = makeZip(files, { zip64: true });
  const plain = makeZip(files);
  const cd = u32at(good, 0x02014b50);
  const eocd = lastSig(good, 0x06054b50);
  const eocdPlain = lastSig(plain, 0x06054b50);
  const mutate = (base: Uint8Array, f: (b: Uint8Array, dv: DataView) => void) => {
    const b = base.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  const cases: [string, Uint8Array, RegExp, boolean?][] = [
    ["truncated (no end record)", good.subarray(0, good.length - 30), /end-of-central-directory|ZIP64/],
    ["too short", good.subarray(0, 10), /too short/],
    ["directory signature", mutate(good, (b) => (b[cd] = 0)), /central directory entry 0 is corrupt/],
    [
      "millions of entries declared",
      mutate(plain, (_b, dv) => {
        dv.setUint16(eocdPlain + 8, 0xfffe, true);
        dv.setUint16(eocdPlain + 10, 0xfffe, true);
      }),
      /65534 entries cannot fit/,
    ],
    [
      "ZIP64 count of 2^40",
      mutate(good, (_b, dv) => {
        const rec = lastSig(good, 0x06064b50);
        dv.setBigUint64(rec + 24, 2n ** 40n, true);
        dv.setBigUint64(rec + 32, 2n ** 40n, true);
      }),
      /cannot fit/,
    ],
    [
      "directory offset past the end",
      mutate(plain, (_b, dv) => dv.setUint32(eocdPlain + 16, 0x7fffffff, true)),
      /runs past its end record/,
    ],
    [
      "ZIP64 locator points nowhere",
      mutate(good, (_b, dv) => dv.setBigUint64(lastSig(good, 0x07064b50) + 8, 2n ** 50n, true)),
      /out of range/,
    ],
    [
      "multi-disk",
      mutate(plain, (_b, dv) => dv.setUint16(eocdPlain + 4, 1, true)),
      /multi-disk/,
    ],
    [
      "local header offset past the data",
      mutate(good, (_b, dv) => dv.setUint32(cd + 42, good.length - 10, true)),
      /past the data area/,
    ],
    [
      "declared size beyond the file",
      mutate(good, (_b, dv) => {
        dv.setUint32(cd + 20, 0x7ffffff0, true);
        dv.setUint32(cd + 24, 0x7ffffff0, true);
      }),
      /more than the file holds/,
    ],
    [
      "encrypted",
      mutate(good, (_b, dv) => dv.setUint16(cd + 8, 1, true)),
      /encrypted/,
    ],
    [
      "local header signature",
      mutate(good, (b) => (b[0] = 0x51)),
      /local header of 'archive\/data.pkl' is corrupt/,
      true,
    ],
    [
      "local name differs",
      mutate(good, (b) => (b[30] = 0x41)),
      /local header names 'Archive\/data.pkl'/,
      true,
    ],
    [
      "CRC mismatch",
      mutate(good, (b) => (b[30 + "archive/data.pkl".length] ^= 1)),
      /CRC-32 of 'archive\/data.pkl'/,
      true,
    ],
    [
      "unsupported compression",
      mutate(good, (_b, dv) => {
        dv.setUint16(cd + 10, 12, true);
        dv.setUint16(8, 12, true);
      }),
      /compression method 12/,
      true,
    ],
    [
      "stored sizes disagree",
      mutate(good, (_b, dv) => dv.setUint32(cd + 24, 3, true)),
      /declares 3 bytes but stores/,
      true,
    ],
  ];
  // duplicate names
  cases.push([
    "duplicate entry",
    makeZip([files[0], files[0]]),
    /duplicate entry 'archive\/data.pkl'/,
  ]);
  for (const [what, bytes, re, readAll] of cases) expectZipError(bytes, re, what, readAll);
  assert.ok(eocd > 0);
});

Deno.test("zip: deflate bombs and size lies are refused before memory follows them", () => {
  const data = new Uint8Array(1 << 20); // 1 MiB of zeros deflates to ~1 KiB
  const z = makeZip([{ name: "a/x", data, deflate: true }]);
  const cd = u32at(z, 0x02014b50);
  const lie = (size: number) => {
    const b = z.slice();
    new DataView(b.buffer).setUint32(cd + 24, size, true);
    return b;
  };
  // declares 4 GB from ~1 KB: impossible for deflate, refused without inflating
  const t = performance.now();
  expectZipError(lie(0xfffffff0), /more than deflate can expand/, "ratio", true);
  // declares less than it inflates to: inflation stops at the declared size
  expectZipError(lie(1000), /inflate|inflates to/, "short", true);
  // declares more than it inflates to
  expectZipError(lie((1 << 20) + 5), /inflates to 1048576 bytes, not the declared 1048581/, "long", true);
  // garbage deflate stream
  const junk = makeZip([{ name: "a/x", data: new Uint8Array(50).fill(1), deflate: true }]);
  const p = 30 + 3;
  junk[p] = 0xff;
  junk[p + 1] = 0xff;
  expectZipError(junk, /inflate|CRC/, "junk", true);
  assert.ok(performance.now() - t < 1000);
  // sanity: the untouched archive inflates
  const ok = open(z);
  assert.equal(ok.read(ok.entries.get("a/x")!).length, 1 << 20);
  assert.equal(zlib.crc32(Buffer.from(data)) >>> 0, ok.entries.get("a/x")!.crc32);
});

Deno.test("zip: damaging the real t2t_vit_7 directory is caught", () => {
  const bytes = Deno.readFileSync(ref("checkpoints/t2t_vit_7.pth.tar"));
  const cd = lastSig(bytes, 0x02014b50);
  for (const at of [cd, cd + 20, cd + 28, cd + 42, bytes.length - 22, bytes.length - 6]) {
    const b = bytes.slice();
    b[at] ^= 0xff;
    b[at + 1] ^= 0x5a;
    assert.throws(
      () => {
        const ck = parseCheckpoint(b, "t2t_vit_7.pth.tar");
        for (const t of selectWeights(ck.root).tensors.values()) t.read();
      },
      (e: unknown) => e instanceof CheckpointError,
      `damage at ${at}`,
    );
  }
});

Deno.test("zip: hundreds of thousands of real entries are parsed quickly, then refused as not a checkpoint", () => {
  const files: ZipFileSpec[] = [];
  const empty = new Uint8Array(0);
  for (let i = 0; i < 200_000; i++) files.push({ name: `a/${i}`, data: empty });
  const bytes = makeZip(files, { zip64: true });
  const t = performance.now();
  assert.equal(open(bytes).entries.size, 200_000);
  assert.throws(() => parseCheckpoint(bytes, "many.pth"), /200000 entries has no <folder>\/data.pkl record/);
  const ms = performance.now() - t;
  assert.ok(ms < timeBound(1000), `took ${ms.toFixed(0)} ms`);
});

Deno.test("zip without native zlib (as in browsers): JavaScript CRC-32 and inflate, same results and limits", () => {
  // the CRC-32 against zlib's, every length around the 8-byte stride
  let seed = 1;
  const rnd = new Uint8Array(5000).map(() => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
  for (const n of [0, 1, 7, 8, 9, 15, 16, 17, 63, 1000, 4999, 5000]) {
    const b = rnd.subarray(5000 - n);
    assert.equal(
      crc32Js(b),
      zlib.crc32(Buffer.from(b.buffer, b.byteOffset, b.byteLength)) >>> 0,
      `length ${n}`,
    );
  }
  useNativeZlib(false);
  try {
    const big = new Uint8Array(100_000).map((_, i) => (i * 7) & 0xff);
    const z = open(makeZip([{ name: "a/x", data: big, deflate: true }]));
    assert.deepEqual(z.read(z.entries.get("a/x")!), big);
    // a real checkpoint, stored: every record's CRC checked in JavaScript
    const ck = parseCheckpoint(Deno.readFileSync(ref("checkpoints/t2t_vit_7.pth.tar")), "t2t_vit_7.pth.tar");
    assert.ok(selectWeights(ck.root).tensors.size > 50);
    const zeros = makeZip([{ name: "a/x", data: new Uint8Array(1 << 20), deflate: true }]);
    const cd = u32at(zeros, 0x02014b50);
    const lie = (size: number) => {
      const b = zeros.slice();
      new DataView(b.buffer).setUint32(cd + 24, size, true);
      return b;
    };
    expectZipError(lie(1000), /inflate|inflates to/, "short", true);
    expectZipError(lie((1 << 20) + 5), /inflates to 1048576 bytes, not the declared 1048581/, "long", true);
    const corrupt = makeZip([{ name: "a/x", data: f32bytes([1, 2, 3, 4]) }]);
    corrupt[30 + 3 + 2] ^= 1; // a data byte of the stored entry
    expectZipError(corrupt, /CRC-32/, "crc", true);
  } finally {
    useNativeZlib(true);
  }
});
