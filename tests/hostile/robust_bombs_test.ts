/**
 * Resource bombs: inputs whose declared sizes, counts, depths or indices promise far more than the file
 * holds. Each must end in a clear typed error (or a correct result) quickly, without memory following the
 * promise: peak resident memory is measured around each bomb (Linux: the peak is reset through
 * /proc/self/clear_refs) and must stay within a small bound.
 *
 * The existing converter tests already cover lying deflate sizes, 200,000 real zip entries, declared entry
 * counts of 65,534 and 2^40, a million nested lists, 200,000 MARKs, a 2^32-1 memo index, lying string and
 * integer lengths and 2^53-element shapes in a zip; this file adds what they leave out.
 *
 * `deno test --parallel` runs every test module in one process, so resident memory is shared with whatever
 * else runs: the bombs therefore run in a child process of their own (this same file, run with
 * `deno run -A tests/robust_bombs_test.ts --child`), which reports each group's outcome, time and memory.
 */

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { CheckpointError, SafetensorsError } from "../../src/core/errors.ts";
import { unpickle } from "../../converters/pickle.ts";
import { resolveTorchGlobal } from "../../converters/torch_globals.ts";
import { parseCheckpoint, walkTensors } from "../../converters/checkpoint.ts";
import { convertToSafetensorsBytes, planConversion } from "../../converters/convert.ts";
import { describeWeights } from "../../zoo/arch.ts";
import { selectWeights } from "../../converters/weights.ts";
import { parseSafetensors } from "../../converters/safetensors.ts";
import { MemorySource } from "../../converters/source.ts";
import { ZipArchive } from "../../converters/zip.ts";
import {
  concat,
  f32bytes,
  makeLegacyCheckpoint,
  makeZipCheckpoint,
  OP,
  Pickle,
  type TensorSpec,
  torchPickle,
} from "../support/checkpoint_builders.ts";
import { timeBound } from "../support/timing.ts";
import { type Measured, registerChildGroups, runGroupsAndPrint } from "../support/child_groups.ts";

const enc = new TextEncoder();
const MiB = 1 << 20;

/** The groups of bombs, run in order by the child process. */
const GROUPS: [string, () => void][] = [];

function group(name: string, fn: () => void): void {
  GROUPS.push([name, fn]);
}

const measured: Measured[] = [];

/** Peak resident memory growth while `f` runs (null where /proc is not available). */
function peakGrowth(f: () => void): number | null {
  let base: number | null = null;
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    base = Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;
  } catch {
    base = null;
  }
  f();
  if (base === null) return null;
  return Number(/VmHWM:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024 - base;
}

/** Runs a bomb: it must end (error or not) within `ms` and grow memory by less than `maxBytes`. */
function bomb(what: string, f: () => void, opts: { ms?: number; maxBytes?: number } = {}) {
  const t = performance.now();
  const growth = peakGrowth(f);
  const ms = performance.now() - t;
  measured.push({
    what,
    ms: Number(ms.toFixed(1)),
    growthMiB: growth === null ? null : Number((growth / MiB).toFixed(1)),
  });
  assert.ok(ms < timeBound(opts.ms ?? 1000), `${what} took ${ms.toFixed(0)} ms`);
  if (growth !== null) {
    assert.ok(
      growth < (opts.maxBytes ?? 64 * MiB),
      `${what}: memory grew by ${(growth / MiB).toFixed(1)} MiB`,
    );
  }
}

/** Expects a typed error matching `re`. */
function refuses(
  what: string,
  f: () => unknown,
  re: RegExp,
  type: typeof CheckpointError | typeof SafetensorsError,
) {
  bomb(what, () =>
    assert.throws(f, (e: unknown) => {
      assert.ok(e instanceof type, `${what}: expected ${type.name}, got ${e}`);
      assert.match((e as Error).message, re, what);
      return true;
    }));
}

const W: TensorSpec = { key: "0", storage: "FloatStorage", numel: 4, shape: [4] };

group("zip sizes, offsets and counts that lie, in ZIP64 extra fields and end records", () => {
  // a central entry whose sizes live in a ZIP64 extra field (as torch writes large records)
  const entry = (usize: bigint, csize: bigint, local?: bigint) => {
    const name = enc.encode("archive/data/0");
    const data = f32bytes([1, 2, 3, 4]);
    const crc = zlib.crc32(Buffer.from(data)) >>> 0;
    const lh = new Uint8Array(30 + name.length);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, name.length, true);
    lh.set(name, 30);
    const extra = new Uint8Array(4 + 8 * (local === undefined ? 2 : 3));
    const ev = new DataView(extra.buffer);
    ev.setUint16(0, 1, true);
    ev.setUint16(2, extra.length - 4, true);
    ev.setBigUint64(4, usize, true);
    ev.setBigUint64(12, csize, true);
    if (local !== undefined) ev.setBigUint64(20, local, true);
    const ch = new Uint8Array(46 + name.length + extra.length);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, 0xffffffff, true);
    cv.setUint32(24, 0xffffffff, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, extra.length, true);
    cv.setUint32(42, local === undefined ? 0 : 0xffffffff, true);
    ch.set(name, 46);
    ch.set(extra, 46 + name.length);
    const eocd = new Uint8Array(22);
    const dv = new DataView(eocd.buffer);
    dv.setUint32(0, 0x06054b50, true);
    dv.setUint16(8, 1, true);
    dv.setUint16(10, 1, true);
    dv.setUint32(12, ch.length, true);
    dv.setUint32(16, lh.length + data.length, true);
    return concat([lh, data, ch, eocd]);
  };
  const open = (b: Uint8Array) => {
    const z = ZipArchive.open(new MemorySource(b, "bomb.zip"));
    for (const e of z.entries.values()) z.read(e);
  };
  // sanity: the honest ZIP64 entry reads
  open(entry(16n, 16n));
  open(entry(16n, 16n, 0n));
  refuses("ZIP64 size of 2^60", () => open(entry(2n ** 60n, 2n ** 60n)), /beyond 2\^53/, CheckpointError);
  refuses(
    "ZIP64 size of 2^52",
    () => open(entry(2n ** 52n, 2n ** 52n)),
    /more than the file holds/,
    CheckpointError,
  );
  refuses(
    "ZIP64 sizes that disagree",
    () => open(entry(2n ** 40n, 16n)),
    /declares 1099511627776 bytes but stores 16/,
    CheckpointError,
  );
  refuses(
    "ZIP64 local offset of 2^50",
    () => open(entry(16n, 16n, 2n ** 50n)),
    /past the data area/,
    CheckpointError,
  );
  refuses(
    "ZIP64 local offset of 2^64-1",
    () => open(entry(16n, 16n, 2n ** 64n - 1n)),
    /beyond 2\^53/,
    CheckpointError,
  );
  // a short ZIP64 extra field (a size promised but not there)
  const short = entry(16n, 16n);
  const at = short.length - 22 - 16 - 4; // the extra field header
  new DataView(short.buffer).setUint16(at + 2, 8, true);
  refuses(
    "ZIP64 extra field too short",
    () => open(short),
    /ZIP64 extra field|corrupt|runs past/,
    CheckpointError,
  );
  // an end record promising 4 billion entries in a 22-byte file
  const eocd = new Uint8Array(22);
  new DataView(eocd.buffer).setUint32(0, 0x06054b50, true);
  new DataView(eocd.buffer).setUint16(8, 0xffff, true);
  new DataView(eocd.buffer).setUint16(10, 0xffff, true);
  refuses(
    "65535 entries in an empty file",
    () => open(eocd),
    /ZIP64 locator missing|cannot fit/,
    CheckpointError,
  );
});

group("a million real directory entries are parsed in bounded time and memory", () => {
  // 1,000,000 central entries with distinct 6-byte names, all sharing one local header: a 52 MB directory.
  // Every entry is read and checked; the archive is then refused as not a checkpoint.
  const n = 1_000_000;
  const digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_";
  const nameLen = 6; // "a/" + 4 base-64 digits
  const local = new Uint8Array(30 + nameLen);
  new DataView(local.buffer).setUint32(0, 0x04034b50, true);
  new DataView(local.buffer).setUint16(26, nameLen, true);
  local.set(enc.encode("a/AAAA"), 30);
  const size = 46 + nameLen;
  const cd = new Uint8Array(size * n);
  const cv = new DataView(cd.buffer);
  for (let i = 0; i < n; i++) {
    const p = i * size;
    cv.setUint32(p, 0x02014b50, true);
    cv.setUint16(p + 28, nameLen, true);
    cd[p + 46] = 0x61;
    cd[p + 47] = 0x2f;
    for (let k = 0; k < 4; k++) cd[p + 48 + k] = digits.charCodeAt((i >> (6 * (3 - k))) & 63);
  }
  const rec = new Uint8Array(56);
  const rv = new DataView(rec.buffer);
  rv.setUint32(0, 0x06064b50, true);
  rv.setBigUint64(24, BigInt(n), true);
  rv.setBigUint64(32, BigInt(n), true);
  rv.setBigUint64(40, BigInt(cd.length), true);
  rv.setBigUint64(48, BigInt(local.length), true);
  const loc = new Uint8Array(20);
  new DataView(loc.buffer).setUint32(0, 0x07064b50, true);
  new DataView(loc.buffer).setBigUint64(8, BigInt(local.length + cd.length), true);
  new DataView(loc.buffer).setUint32(16, 1, true);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, 0xffff, true);
  ev.setUint16(10, 0xffff, true);
  ev.setUint32(12, 0xffffffff, true);
  ev.setUint32(16, 0xffffffff, true);
  const bytes = concat([local, cd, rec, loc, eocd]);
  bomb("a million directory entries", () => {
    assert.throws(
      () => parseCheckpoint(bytes, "million.pth"),
      /zip archive with 1000000 entries has no <folder>\/data.pkl record/,
    );
  }, { ms: 8000, maxBytes: 8 * bytes.length });
});

group("deeply nested pickle structures never overflow the stack anywhere downstream", () => {
  const depth = 100_000; // V8's stack overflows at about 10,000 frames
  const nest = (p: Pickle) => {
    p.int(1);
    for (let i = 0; i < depth; i++) p.raw(OP.TUPLE1);
  };
  const build = (extra: (p: Pickle) => void) =>
    makeZipCheckpoint(torchPickle([["w", W]], { extra }), { "0": f32bytes([1, 2, 3, 4]) });
  const cases: [string, Uint8Array][] = [
    [
      "as a dict key",
      build((p) => {
        nest(p);
        p.int(2).setitem();
      }),
    ],
    [
      "as a dict value",
      build((p) => {
        p.str("deep");
        nest(p);
        p.setitem();
      }),
    ],
    [
      "as a nested list of dicts",
      build((p) => {
        p.str("deep");
        for (let i = 0; i < depth; i++) p.raw(OP.EMPTY_DICT, OP.SHORT_BINUNICODE, 1, 0x6b);
        p.none();
        for (let i = 0; i < depth; i++) p.setitem();
        p.setitem();
      }),
    ],
    [
      "as an argparse.Namespace attribute name",
      build((p) => {
        p.str("args").global("argparse", "Namespace").emptyTuple().newobj().dict();
        nest(p);
        p.int(1).setitem().build().setitem();
      }),
    ],
    [
      "as a tensor's BUILD state",
      build((p) => {
        p.str("t").global("torch._utils", "_rebuild_tensor_v2").mark();
        p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).tuple()
          .binpersid();
        p.int(0).value([4]).value([1]).bool(false).none().tuple().reduce();
        nest(p);
        p.build().setitem();
      }),
    ],
    [
      "as a storage location",
      build((p) => {
        p.str("t").global("torch._utils", "_rebuild_tensor_v2").mark();
        p.mark().str("storage").global("torch", "FloatStorage").str("1");
        nest(p);
        p.int(4).tuple().binpersid();
        p.int(0).value([4]).value([1]).bool(false).none().tuple().reduce().setitem();
      }),
    ],
    [
      "as a torch.device argument",
      build((p) => {
        p.str("dev").global("torch", "device").mark();
        nest(p);
        p.tuple().reduce().setitem();
      }),
    ],
  ];
  for (const [what, bytes] of cases) {
    bomb(what, () => {
      try {
        const ck = parseCheckpoint(bytes, "deep.pth");
        for (const [, t] of walkTensors(ck.root)) t.read();
        selectWeights(ck.root, { key: "state_dict" });
        assert.throws(() => selectWeights(ck.root, { key: "nope" }), /no key 'nope'/);
        planConversion(ck, { describe: describeWeights });
        convertToSafetensorsBytes(ck, { describe: describeWeights });
      } catch (e) {
        // a clear refusal is fine; a RangeError (stack overflow) is not
        assert.ok(e instanceof CheckpointError, `${what}: ${e}`);
      }
    }, { ms: 3000 });
  }
});

group("shared memo references (a billion laughs) stay a DAG, never expanded", () => {
  // l0 = [t]; l(i+1) = [l(i), l(i)]: 2^60 paths to the one tensor, 60 lists in memory
  const p = new Pickle().proto(2).dict().str("state_dict").global("collections", "OrderedDict").emptyTuple()
    .reduce().mark().str("w").global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).tuple().binpersid();
  p.int(0).value([4]).value([1]).bool(false).none().tuple().reduce().raw(OP.BINPUT, 0).setitems().setitem();
  p.str("laughs").list().raw(OP.BINGET, 0).append();
  for (let i = 1; i <= 60; i++) {
    p.raw(OP.BINPUT, i, OP.POP).list().raw(OP.BINGET, i).append().raw(OP.BINGET, i).append();
  }
  p.setitem();
  const bytes = makeZipCheckpoint(p.stop().bytesOut(), { "0": f32bytes([1, 2, 3, 4]) });
  bomb("billion laughs", () => {
    const ck = parseCheckpoint(bytes, "laughs.pth");
    assert.equal([...walkTensors(ck.root, 100)].length, 2, "each reachable tensor is visited once");
    const r = convertToSafetensorsBytes(ck, { describe: describeWeights });
    assert.equal(r.plan.tensors.length, 1);
  });
});

group("memo indices, frames and lengths far beyond the data", () => {
  const load = (b: Uint8Array) => unpickle(b, { file: "memo.pkl", resolveGlobal: resolveTorchGlobal });
  refuses(
    "LONG_BINGET of a never-stored 2^32-1",
    () => load(new Pickle().raw(OP.LONG_BINGET, 0xff, 0xff, 0xff, 0xff).stop().bytesOut()),
    /memo index 4294967295 was never stored/,
    CheckpointError,
  );
  refuses(
    "GET of a 15-digit index",
    () => load(new Pickle().raw(OP.GET).line("999999999999999").stop().bytesOut()),
    /never stored/,
    CheckpointError,
  );
  refuses(
    "GET of a 100-digit index",
    () => load(new Pickle().raw(OP.GET).line("9".repeat(100)).stop().bytesOut()),
    /bad memo index/,
    CheckpointError,
  );
  bomb("a million memo entries at scattered indices", () => {
    const b: number[] = [];
    b.push(OP.NONE);
    for (let i = 0; i < 1_000_000; i++) {
      const k = (i * 2654435761) >>> 0;
      b.push(OP.LONG_BINPUT, k & 0xff, (k >> 8) & 0xff, (k >> 16) & 0xff, k >>> 24);
    }
    b.push(OP.STOP);
    assert.equal(load(new Uint8Array(b)).value, null);
  }, { ms: 3000, maxBytes: 256 * MiB });
  refuses(
    "FRAME of 2^50 bytes",
    () => load(new Pickle().proto(4).raw(OP.FRAME, 0, 0, 0, 0, 0, 0, 4, 0).none().stop().bytesOut()),
    /frame of 1125899906842624 bytes runs past the end/,
    CheckpointError,
  );
  refuses(
    "FRAME of 2^64-1 bytes",
    () => load(new Pickle().proto(4).raw(OP.FRAME, ...new Array(8).fill(0xff)).none().stop().bytesOut()),
    /does not fit/,
    CheckpointError,
  );
  refuses(
    "BINBYTES of 4 GB in a 10-byte pickle",
    () => load(new Pickle().raw(OP.BINBYTES, 0xff, 0xff, 0xff, 0xff).stop().bytesOut()),
    /truncated: needs 4294967295 more bytes/,
    CheckpointError,
  );
});

group("shapes whose element or byte count overflows 2^53, and views that expand their storage", () => {
  const data = { "0": f32bytes([1, 2, 3, 4]) };
  const zip = (t: TensorSpec) => makeZipCheckpoint(torchPickle([["w", t]]), data);
  const legacy = (t: TensorSpec) =>
    makeLegacyCheckpoint(torchPickle([["w", t]], { legacy: true }), [["0", f32bytes([1, 2, 3, 4]), 4]]);
  const read = (b: Uint8Array) => {
    const ck = parseCheckpoint(b, "shape.pth");
    for (const [, t] of walkTensors(ck.root)) t.read();
  };
  const cases: [string, TensorSpec, RegExp][] = [
    ["2^54 elements", { ...W, shape: [2 ** 27, 2 ** 27], stride: [0, 0] }, /more than 2\^53 elements/],
    [
      "2^53 elements exactly",
      { ...W, shape: [2 ** 53], stride: [0] },
      /size\[0\] is a int \(9007199254740992\), not an integer below 2\^53/,
    ],
    ["2^51 float32 = 2^53 bytes", { ...W, shape: [2 ** 51], stride: [0] }, /more than 2\^53 bytes/],
    [
      "an overflowing product in the middle",
      { ...W, shape: [2 ** 40, 2 ** 40, 0], stride: [0, 0, 0] },
      /2\^53/,
    ],
    [
      "a stride-0 view of 4 TB",
      { ...W, shape: [2 ** 20, 2 ** 20], stride: [0, 0] },
      /expanded views are refused/,
    ],
    ["a stride-0 view of 32 MiB", { ...W, shape: [8 * MiB], stride: [0] }, /repeats the elements/],
    [
      "a stride of 2^60",
      { ...W, shape: [2, 2], stride: [2 ** 60, 1] },
      /stride\[0\] is a int \(\d+\), not an integer below 2\^53/,
    ],
    [
      "a storage offset of 2^60",
      { ...W, offset: 2 ** 60 },
      /storage offset is a int \(\d+\), not an integer below 2\^53/,
    ],
  ];
  for (const [what, spec, re] of cases) {
    refuses(`${what} (zip)`, () => read(zip(spec)), re, CheckpointError);
    refuses(`${what} (legacy)`, () => read(legacy(spec)), re, CheckpointError);
  }
  // a small expansion (a broadcast buffer) is still materialised
  const ck = parseCheckpoint(zip({ ...W, shape: [3, 4], stride: [0, 1] }), "expand.pth");
  const [[, t]] = [...walkTensors(ck.root)];
  assert.deepEqual([...new Float32Array(t.read().data.slice().buffer)], [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
  // numel in a storage id whose byte size overflows: a DoubleStorage of 2^53-1 elements
  const dbl = makeZipCheckpoint(
    torchPickle([["w", { key: "0", storage: "DoubleStorage", numel: 2 ** 53 - 1, shape: [1] }]]),
    { "0": new Uint8Array(8) },
  );
  refuses(
    "a storage id of 2^53-1 doubles",
    () => read(dbl),
    /declares 9007199254740991 float64 elements/,
    CheckpointError,
  );
  // safetensors shapes
  const st = (shape: unknown, offs: unknown = [0, 16]) => {
    const h = enc.encode(JSON.stringify({ w: { dtype: "F32", shape, data_offsets: offs } }));
    const b = new Uint8Array(8 + h.length + 16);
    new DataView(b.buffer).setBigUint64(0, BigInt(h.length), true);
    b.set(h, 8);
    return b;
  };
  for (
    const [what, shape] of [
      ["[2^26]*4", [2 ** 26, 2 ** 26, 2 ** 26, 2 ** 26]],
      ["[2^53]", [2 ** 53]],
      ["[2^64]", [2 ** 64]],
      ["[2^31, 2^31, 0]", [2 ** 31, 2 ** 31, 0]],
      ["[1e300]", [1e300]],
    ] as const
  ) {
    refuses(
      `safetensors shape ${what}`,
      () => parseSafetensors(st(shape), "s.safetensors"),
      /bad shape|needs/,
      SafetensorsError,
    );
  }
  refuses(
    "safetensors offsets of 2^60",
    () => parseSafetensors(st([4], [0, 2 ** 60]), "s.safetensors"),
    /run past the data|non-negative integers/,
    SafetensorsError,
  );
});

group("one storage pointed at by thousands of tensors cannot multiply the output", () => {
  const n = 4000;
  const tensors: [string, TensorSpec][] = [];
  for (let i = 0; i < n; i++) {
    tensors.push([`w${i}`, { key: "0", storage: "FloatStorage", numel: 1 << 18, shape: [1 << 18] }]);
  }
  const bytes = makeZipCheckpoint(torchPickle(tensors), { "0": new Uint8Array(1 << 20) });
  // 1.6 MB of file, 4 GB of promised output
  refuses(
    "4000 views of one 1 MiB storage",
    () => convertToSafetensorsBytes(parseCheckpoint(bytes, "shared.pth")),
    /would make 4194304000 bytes of output from a file of \d+ bytes/,
    CheckpointError,
  );
  // tied weights (a few tensors sharing storage) still convert
  const tied = makeZipCheckpoint(
    torchPickle([["a", { ...W }], ["b", { ...W }], ["c", { ...W, shape: [2, 2] }]]),
    { "0": f32bytes([1, 2, 3, 4]) },
  );
  const r = convertToSafetensorsBytes(parseCheckpoint(tied, "tied.pth"));
  assert.deepEqual(r.plan.tensors.map((t) => t.name), ["a", "b", "c"]);
});

group("inputs that make regular expressions or loops quadratic stay linear", () => {
  const load = (b: Uint8Array) => unpickle(b, { file: "re.pkl", resolveGlobal: resolveTorchGlobal });
  // FLOAT with 300,000 digits and a bad tail (a backtracking regex takes minutes)
  refuses(
    "FLOAT of 300k digits",
    () => load(new Pickle().raw(OP.FLOAT).line("1".repeat(300_000) + "x").stop().bytesOut()),
    /bad FLOAT/,
    CheckpointError,
  );
  bomb("FLOAT of 300k digits that parses", () => {
    assert.equal(
      load(new Pickle().raw(OP.FLOAT).line("1".repeat(300_000)).stop().bytesOut()).value,
      Infinity,
    );
  });
  // STRING with 300,000 spaces before a bad tail
  refuses(
    "STRING with 300k spaces",
    () => load(new Pickle().raw(OP.STRING).line("'" + " ".repeat(300_000) + "x").stop().bytesOut()),
    /must be quoted/,
    CheckpointError,
  );
  // a safetensors header of 400,000 spaces then a non-space
  const h = enc.encode("{" + " ".repeat(400_000) + "x");
  const b = new Uint8Array(8 + h.length);
  new DataView(b.buffer).setBigUint64(0, BigInt(h.length), true);
  b.set(h, 8);
  refuses(
    "safetensors header of 400k spaces",
    () => parseSafetensors(b, "s.safetensors"),
    /malformed/,
    SafetensorsError,
  );
  // 64-deep JSON nesting is refused before it costs anything
  const deep = enc.encode("[".repeat(100_000) + "]".repeat(100_000));
  const d = new Uint8Array(8 + deep.length);
  new DataView(d.buffer).setBigUint64(0, BigInt(deep.length), true);
  d.set(deep, 8);
  refuses(
    "safetensors header nested 100k deep",
    () => parseSafetensors(d, "s.safetensors"),
    /nests too deeply/,
    SafetensorsError,
  );
  // a text opcode line of 2 MB without a newline
  refuses(
    "INT line of 2 MB without a newline",
    () => load(new Uint8Array([OP.INT, ...new Uint8Array(2_000_000).fill(0x31)])),
    /missing end of line/,
    CheckpointError,
  );
});

// ---------------------------------------------------------------------------------------------------------

if (import.meta.main && Deno.args.includes("--child")) {
  await runGroupsAndPrint(GROUPS, measured);
} else if (!import.meta.main) {
  registerChildGroups(import.meta.url, GROUPS, "bombs", (r) => {
    const worst = r.measured.reduce((m, b) => Math.max(m, b.growthMiB ?? 0), 0);
    const slowest = r.measured.reduce((m, b) => Math.max(m, b.ms), 0);
    console.log(`${r.measured.length} bombs, slowest ${slowest} ms, largest memory growth ${worst} MiB`);
  });
}
