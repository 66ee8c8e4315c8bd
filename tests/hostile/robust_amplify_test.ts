/**
 * Amplification: small hostile files whose construction (not their declared sizes) makes a reader copy,
 * inflate, re-read or decode far more than the file holds. Every case is built here, byte by byte, and must
 * end in a typed error or a correct result within a time bound (scaled by `T2T_TIME_SLACK`) and a bound on
 * peak memory growth that is a small multiple of the input. Memory is measured in a child process of its own
 * (this file run with `--child`), as in `robust_bombs_test.ts`.
 *
 * Covered: allowlisted callables that copy their argument (`set`, `frozenset`, `OrderedDict`, `torch.Size`,
 * `argparse.Namespace`, `bytearray`, `_codecs.encode`) and BUILD replayed through memo references; the
 * STRING opcode's per-byte memory; the dropped-entry report over a shared dict; many small views of one big
 * stored or deflated record; deflate ratios; oversized text; big-endian tensors sharing a storage range;
 * PNG data inflating past its header; JPEG comment padding and scan counts; a safetensors `config` asking for
 * a huge model; a CIFAR file of the wrong size.
 */

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import {
  CheckpointError,
  DatasetError,
  ImageError,
  ModelError,
  type T2tVitError,
} from "../../src/core/errors.ts";
import { MAX_TEXT_BYTES, unpickle, workBudget } from "../../converters/pickle.ts";
import { resolveTorchGlobal, TorchStorage } from "../../converters/torch_globals.ts";
import { openCheckpoint, parseCheckpoint, walkTensors } from "../../converters/checkpoint.ts";
import { convertToSafetensorsBytes, planConversion } from "../../converters/convert.ts";
import { toFloat32 } from "../../converters/safetensors.ts";
import { serializeSafetensors } from "../../converters/safetensors.ts";
import { decodePng } from "../../src/images/png.ts";
import { decodeJpeg, MAX_JPEG_SCANS } from "../../src/images/jpeg.ts";
import { readCifar } from "../../src/data/cifar.ts";
import { loadModel } from "../../zoo/models.ts";
import {
  f32bytes,
  makeZip,
  makeZipCheckpoint,
  OP,
  Pickle,
  type TensorSpec,
  torchPickle,
} from "../support/checkpoint_builders.ts";
import { chunk } from "../support/png_builder.ts";
import { progressiveGrayJpeg } from "../support/jpeg_builder.ts";
import { timeBound } from "../support/timing.ts";
import { type Measured, registerChildGroups, runGroupsAndPrint } from "../support/child_groups.ts";

const MiB = 1 << 20;
const CASES: [string, () => void | Promise<void>][] = [];
function group(name: string, fn: () => void | Promise<void>): void {
  CASES.push([name, fn]);
}

const measured: Measured[] = [];

function rss(field: "VmRSS" | "VmHWM"): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(Deno.readTextFileSync("/proc/self/status"))![1]) *
    1024;
}

/** Runs `f`: it must finish within `ms` (times the slack) and grow peak memory by less than `maxBytes`. */
async function bounded(what: string, f: () => unknown, ms: number, maxBytes: number): Promise<void> {
  let base: number | null = null;
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    base = rss("VmRSS");
  } catch { /* not Linux */ }
  const t = performance.now();
  await f();
  const took = performance.now() - t;
  const growth = base === null ? null : rss("VmHWM") - base;
  measured.push({
    what,
    ms: Number(took.toFixed(1)),
    growthMiB: growth === null ? null : +(growth / MiB).toFixed(1),
  });
  assert.ok(took < timeBound(ms), `${what} took ${took.toFixed(0)} ms (bound ${timeBound(ms)} ms)`);
  if (growth !== null) {
    assert.ok(growth < maxBytes, `${what}: memory grew by ${(growth / MiB).toFixed(1)} MiB`);
  }
}

/** Expects `f` to throw a typed error of `type` whose message matches `re`. */
async function refuses(
  what: string,
  f: () => unknown,
  type: typeof T2tVitError,
  re: RegExp,
  ms = 1000,
  maxBytes = 96 * MiB,
): Promise<void> {
  await bounded(
    what,
    async () => {
      let err: unknown = null;
      try {
        await f();
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof type, `${what}: expected ${type.name}, got ${err}`);
      assert.match((err as Error).message, re, what);
    },
    ms,
    maxBytes,
  );
}

// ---------------------------------------------------------------------------------------------------------
// pickle constructions

const storageLoad = (pid: unknown) => {
  const t = pid as unknown[];
  return new TorchStorage(
    String(t[2]),
    { name: "float32", dtype: "F32", itemSize: 4 },
    "cpu",
    4 * Number(t[4]),
    null,
  );
};
const run = (bytes: Uint8Array) =>
  unpickle(bytes, { file: "amp.pkl", resolveGlobal: resolveTorchGlobal, persistentLoad: storageLoad });

/** A pickle that memoizes `build(p)` as memo 0, then applies `call(p)` `times` times, keeping the results. */
function replay(build: (p: Pickle) => void, call: (p: Pickle) => void, times: number): Uint8Array {
  const p = new Pickle().proto(2);
  p.raw(OP.EMPTY_LIST);
  build(p);
  p.raw(OP.LONG_BINPUT, 0, 0, 0, 0, OP.POP);
  p.raw(OP.MARK);
  for (let i = 0; i < times; i++) call(p);
  p.raw(OP.APPENDS);
  return p.stop().bytesOut();
}
const get0 = (p: Pickle) => p.raw(OP.LONG_BINGET, 0, 0, 0, 0);
const N = 200_000; // elements of the memoized container (about 400 KB of pickle)
const TIMES = 100_000; // calls replaying it (about 1 MB of pickle): 2e10 element copies unbounded
const bigList = (p: Pickle) => {
  p.raw(OP.EMPTY_LIST, OP.MARK);
  for (let i = 0; i < N; i++) p.raw(OP.BININT1, i & 0xff);
  p.raw(OP.APPENDS);
};
const bigTuple = (p: Pickle) => {
  p.raw(OP.MARK);
  for (let i = 0; i < N; i++) p.raw(OP.BININT1, i & 0xff);
  p.raw(OP.TUPLE);
};
const bigDict = (p: Pickle) => {
  p.raw(OP.EMPTY_DICT, OP.MARK);
  for (let i = 0; i < N / 2; i++) p.int(i + 256).raw(OP.NONE);
  p.raw(OP.SETITEMS);
};
const bigStr = (p: Pickle) => p.str("x".repeat(N * 4));
const bigBytes = (p: Pickle) => p.bytes(new Uint8Array(N * 4));
const callWith = (mod: string, name: string) => (p: Pickle) => {
  p.global(mod, name).raw(OP.MARK);
  get0(p);
  p.raw(OP.TUPLE, OP.REDUCE);
};

group("allowlisted callables replaying a big memoized argument hit the work budget", async () => {
  const cases: [string, (p: Pickle) => void, (p: Pickle) => void][] = [
    ["builtins.set(list)", bigList, callWith("builtins", "set")],
    ["builtins.frozenset(list)", bigList, callWith("builtins", "frozenset")],
    ["collections.OrderedDict(dict)", bigDict, callWith("collections", "OrderedDict")],
    ["torch.Size(tuple)", bigTuple, callWith("torch", "Size")],
    ["builtins.bytearray(bytes)", bigBytes, callWith("builtins", "bytearray")],
    ["_codecs.encode(str, latin1)", bigStr, (p) => {
      p.global("_codecs", "encode").raw(OP.MARK);
      get0(p);
      p.str("latin1").raw(OP.TUPLE, OP.REDUCE);
    }],
    ["argparse.Namespace(*tuple) via REDUCE", bigTuple, (p) => {
      p.global("argparse", "Namespace");
      get0(p);
      p.raw(OP.REDUCE);
    }],
    ["argparse.Namespace(*tuple) via NEWOBJ", bigTuple, (p) => {
      p.global("argparse", "Namespace");
      get0(p);
      p.raw(OP.NEWOBJ);
    }],
    ["BUILD with a big memoized state dict", bigDict, (p) => {
      p.global("collections", "OrderedDict").raw(OP.EMPTY_TUPLE, OP.REDUCE);
      get0(p);
      p.raw(OP.BUILD);
    }],
    ["BUILD with a (dict, slots) state", bigDict, (p) => {
      p.global("argparse", "Namespace").raw(OP.EMPTY_TUPLE, OP.NEWOBJ);
      get0(p);
      get0(p);
      p.raw(OP.TUPLE2, OP.BUILD);
    }],
    ["_rebuild_tensor_v2 with a big memoized size tuple", bigTuple, (p) => {
      p.global("torch._utils", "_rebuild_tensor_v2").raw(OP.MARK);
      p.raw(OP.MARK).str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).raw(OP.TUPLE);
      p.raw(OP.BINPERSID).int(0);
      get0(p);
      get0(p);
      p.bool(false).raw(OP.NONE, OP.TUPLE, OP.REDUCE);
    }],
  ];
  for (const [what, build, call] of cases) {
    const bytes = replay(build, call, TIMES);
    await refuses(
      `${what} x ${TIMES} (${(bytes.length / 1e6).toFixed(1)} MB)`,
      () => run(bytes),
      CheckpointError,
      /bytes of copying/,
      1500,
      64 * MiB + 2 * workBudget(bytes.length),
    );
  }
  // a few copies (as real checkpoints make) are within the budget and give the right value
  const smallList = (p: Pickle) => {
    p.raw(OP.EMPTY_LIST, OP.MARK);
    for (let i = 0; i < 10_000; i++) p.raw(OP.BININT1, i & 0xff);
    p.raw(OP.APPENDS);
  };
  const fine = replay(smallList, callWith("builtins", "set"), 3);
  const v = run(fine).value as Set<unknown>[];
  assert.equal(v.length, 3);
  assert.equal(v[2].size, 256);
});

group("the STRING opcode takes bytes, not a number per byte", async () => {
  const body = "\\x41".repeat(4 * MiB) + "b".repeat(12 * MiB); // 28 MB of text for 16 MB of bytes
  const bytes = new Uint8Array([OP.PROTO, 2, OP.STRING, ...new TextEncoder().encode(`'${body}'\n`), OP.STOP]);
  await bounded(
    "STRING of 16 MB",
    () => {
      const s = run(bytes).value as string;
      assert.equal(s.length, 16 * MiB);
    },
    3000,
    200 * MiB,
  );
  await refuses(
    `a BINUNICODE over ${MAX_TEXT_BYTES >> 20} MiB`,
    () => {
      const b = new Uint8Array(MAX_TEXT_BYTES + 8);
      b.set([OP.BINUNICODE]);
      new DataView(b.buffer).setUint32(1, MAX_TEXT_BYTES + 1, true);
      b[b.length - 1] = OP.STOP;
      return run(b);
    },
    CheckpointError,
    /exceeds the \d+-byte limit/,
  );
});

group("a module named 'constructor' is reported by its name", async () => {
  const b = new Pickle().proto(2).global("constructor", "system").stop().bytesOut();
  await refuses("GLOBAL constructor.system", () => run(b), CheckpointError, /'constructor\.system'/);
  const c = new Pickle().proto(2).global("__proto__", "toString").stop().bytesOut();
  await refuses("GLOBAL __proto__.toString", () => run(c), CheckpointError, /'__proto__\.toString'/);
});

// ---------------------------------------------------------------------------------------------------------
// checkpoint constructions

group("the dropped-entry report walks a shared dict once, not once per key", async () => {
  const K = 40_000;
  const p = new Pickle().proto(2).raw(OP.EMPTY_DICT);
  // memo 0: a dict of K entries
  p.raw(OP.EMPTY_DICT, OP.MARK);
  for (let i = 0; i < K; i++) p.int(i + 256).raw(OP.NONE);
  p.raw(OP.SETITEMS, OP.LONG_BINPUT, 0, 0, 0, 0, OP.POP);
  p.raw(OP.MARK);
  for (let i = 0; i < K; i++) {
    p.str(`k${i}`);
    get0(p);
  }
  p.raw(OP.SETITEMS);
  const w: [string, TensorSpec][] = [["w", { key: "0", storage: "FloatStorage", numel: 4, shape: [4] }]];
  const inner = torchPickle(w, { topKey: null });
  // root["state_dict"] = the tensors (reuse torchPickle's body without its PROTO and STOP)
  p.str("state_dict").raw(inner.subarray(2, inner.length - 1)).raw(OP.SETITEM);
  const file = makeZipCheckpoint(p.stop().bytesOut(), { "0": f32bytes([1, 2, 3, 4]) });
  await bounded(
    `${K} keys sharing one ${K}-entry dict`,
    () => {
      const plan = planConversion(parseCheckpoint(file, "shared.pth"));
      assert.equal(plan.dropped.length, K);
      assert.match(plan.dropped[0].what, /dict with 40000 keys/);
    },
    1500,
    128 * MiB,
  );
});

/** A zip checkpoint with `views` tensors of 4 elements each, spread over one storage of `numel` floats. */
function manyViews(numel: number, views: number, deflate: boolean): Uint8Array {
  const tensors: [string, TensorSpec][] = [];
  const step = Math.floor((numel - 4) / views);
  for (let i = 0; i < views; i++) {
    tensors.push([`t${i}`, { key: "0", storage: "FloatStorage", numel, offset: i * step, shape: [4] }]);
  }
  const data = new Uint8Array(numel * 4);
  new Float32Array(data.buffer).forEach((_, i, a) => (a[i] = i % 1000));
  const pkl = torchPickle(tensors);
  return makeZip([
    { name: "archive/data.pkl", data: pkl },
    { name: "archive/data/0", data, deflate },
    { name: "archive/version", data: new TextEncoder().encode("3\n") },
  ], { zip64: true });
}

group("many small views of one big record cost the bytes they use", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-amp-" });
  try {
    for (const deflate of [false, true]) {
      const file = manyViews(4 * MiB, 3000, deflate); // a 16 MiB record, 3000 views
      const path = `${dir}/views-${deflate}.pth`;
      Deno.writeFileSync(path, file);
      const what = `3000 views of a 16 MiB ${deflate ? "deflated" : "stored"} record`;
      const check = (root: unknown) => {
        let n = 0;
        for (const [, t] of walkTensors(root as never)) {
          const v = toFloat32(t.read());
          assert.equal(v[0], (t.storageOffset) % 1000);
          n++;
        }
        assert.equal(n, 3000);
      };
      await bounded(`${what}, in memory`, () => check(parseCheckpoint(file, "v.pth").root), 2000, 128 * MiB);
      await bounded(
        `${what}, from the file`,
        () => {
          using ckpt = openCheckpoint(path);
          check(ckpt.root);
        },
        2000,
        128 * MiB,
      );
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

group("deflated records are refused beyond the archive's inflate budget", async () => {
  // 256 MiB of zeros deflate to ~260 KB: far past 16x the file + 64 MiB
  const zeros = new Uint8Array(256 * MiB);
  const file = makeZip([
    {
      name: "archive/data.pkl",
      data: torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 64 * MiB, shape: [64 * MiB] }]]),
    },
    { name: "archive/data/0", data: zeros, deflate: true },
    { name: "archive/version", data: new TextEncoder().encode("3\n") },
  ], { zip64: true });
  await refuses(
    `a 256 MiB deflated record in a ${(file.length / 1e3).toFixed(0)} KB file`,
    () => {
      for (const [, t] of walkTensors(parseCheckpoint(file, "bomb.pth").root)) t.read();
    },
    CheckpointError,
    /decompression bomb/,
  );
  // a deflated data.pkl holding a string past the text limit is refused by the same budget before decoding
  const pkl = new Uint8Array(80 * MiB + 10);
  pkl.set([OP.PROTO, 2, OP.BINUNICODE]);
  new DataView(pkl.buffer).setUint32(3, 80 * MiB, true);
  pkl.fill(0x41, 7, 7 + 80 * MiB);
  pkl[7 + 80 * MiB] = OP.STOP;
  const text = makeZip([{ name: "archive/data.pkl", data: pkl, deflate: true }], { zip64: true });
  await refuses(
    "an 80 MiB string in a deflated pickle",
    () => parseCheckpoint(text, "text.pth"),
    CheckpointError,
    /decompression bomb|exceeds/,
    2000,
    160 * MiB,
  );
});

group("big-endian tensors on one storage range read right, twice", async () => {
  const be = new Uint8Array(16);
  const dv = new DataView(be.buffer);
  [1.5, -2, 3.25, 1e-3].forEach((v, i) => dv.setFloat32(4 * i, v, false));
  const spec: TensorSpec = { key: "0", storage: "FloatStorage", numel: 4, shape: [4] };
  const file = makeZipCheckpoint(torchPickle([["a", spec], ["b", spec]]), { "0": be }, { byteorder: "big" });
  const dir = Deno.makeTempDirSync({ prefix: "t2t-be-" });
  try {
    Deno.writeFileSync(`${dir}/be.pth`, file);
    await bounded(
      "big-endian shared storage",
      () => {
        for (const ckpt of [parseCheckpoint(file, "be.pth"), openCheckpoint(`${dir}/be.pth`)]) {
          const { plan, bytes } = convertToSafetensorsBytes(ckpt);
          ckpt.close();
          assert.equal(plan.tensors.length, 2);
          const st = new Float32Array(bytes.slice(bytes.length - 32).buffer);
          assert.deepEqual([...st], [1.5, -2, 3.25, 1e-3, 1.5, -2, 3.25, 1e-3].map(Math.fround));
        }
      },
      500,
      32 * MiB,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------
// images, configs, datasets

group("a 16x16 PNG whose data inflates to 256 MiB is refused after a few MiB", async () => {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, 16);
  v.setUint32(4, 16);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const idat = new Uint8Array(zlib.deflateSync(Buffer.alloc(256 * MiB), { level: 9 }));
  const png = new Uint8Array([
    137,
    80,
    78,
    71,
    13,
    10,
    26,
    10,
    ...chunk("IHDR", ihdr),
    ...chunk("IDAT", idat),
    ...chunk("IEND", new Uint8Array(0)),
  ]);
  await refuses(
    `PNG bomb (${(png.length / 1e3).toFixed(0)} KB)`,
    () => decodePng(png, "bomb.png"),
    ImageError,
    /decompression bomb/,
    500,
    48 * MiB,
  );
  // a 12000x12000 gray PNG whose every byte is zero: exactly the data its header implies, 1000:1
  const big = new Uint8Array(13);
  new DataView(big.buffer).setUint32(0, 12000);
  new DataView(big.buffer).setUint32(4, 12000);
  big[8] = 8;
  const zeros = new Uint8Array(zlib.deflateSync(Buffer.alloc(12000 * 12001), { level: 9 }));
  const flat = new Uint8Array([
    ...[137, 80, 78, 71, 13, 10, 26, 10],
    ...chunk("IHDR", big),
    ...chunk("IDAT", zeros),
    ...chunk("IEND", new Uint8Array(0)),
  ]);
  await refuses(
    `a 144-megapixel PNG from ${(flat.length / 1e3).toFixed(0)} KB`,
    () => decodePng(flat, "flat.png"),
    ImageError,
    /decompression bomb/,
    500,
    48 * MiB,
  );
});

group("JPEG guards count entropy-coded bytes only, and cap scans", async () => {
  // a 4096x4096 frame whose scan holds 1% of the bits it needs, padded with 5 MB of comments
  const full = progressiveGrayJpeg(4096, 4096, 1, 5_000_000);
  const cut = full.length - 2 - Math.floor((4096 * 4096) / 64 / 8 * 0.99);
  const padded = new Uint8Array([...full.subarray(0, cut), 0xff, 0xd9]);
  await refuses(
    "JPEG padded with 5 MB of comments",
    () => decodeJpeg(padded, "pad.jpg"),
    ImageError,
    /cannot be coded/,
    500,
    48 * MiB,
  );
  const many = progressiveGrayJpeg(512, 512, 20_000);
  await refuses(
    `JPEG with 20,000 scans (${(many.length / 1e3).toFixed(0)} KB)`,
    () => decodeJpeg(many, "scans.jpg"),
    ImageError,
    new RegExp(`more than ${MAX_JPEG_SCANS} scans`),
    500,
    48 * MiB,
  );
  // an honestly coded 100-megapixel frame at one bit per block: far more pixels per byte than any photo
  const flat = progressiveGrayJpeg(10000, 10000, 1);
  await refuses(
    `a 100-megapixel JPEG from ${(flat.length / 1e3).toFixed(0)} KB`,
    () => decodeJpeg(flat, "flat.jpg"),
    ImageError,
    /decompression bomb/,
    500,
    48 * MiB,
  );
  // within the limits it decodes
  await bounded(
    "JPEG with 200 scans",
    () => {
      const img = decodeJpeg(progressiveGrayJpeg(512, 512, 200), "ok.jpg");
      assert.equal(img.width, 512);
    },
    2000,
    96 * MiB,
  );
});

group("a safetensors config asking for a huge model is refused before anything is built", async () => {
  for (
    const config of [
      '{"embed_dim": 4000000, "depth": 1, "num_heads": 1}',
      '{"embed_dim": 64, "depth": 10000000, "num_heads": 1}',
      '{"embed_dim": 768, "depth": 12, "num_heads": 12, "img_size": 65536}',
      '{"num_heads": 8, "growth_rate": 64, "block_config": [100000000]}',
    ]
  ) {
    const bytes = serializeSafetensors(new Map(), { config });
    await refuses(
      `${bytes.length}-byte file with config ${config}`,
      () => loadModel(bytes),
      ModelError,
      /limit|refusing to build|exceeds/,
      500,
      32 * MiB,
    );
  }
});

group("a CIFAR file of the wrong size is refused from stat, unread", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-cifar-" });
  try {
    const f = Deno.openSync(`${dir}/test_batch.bin`, { write: true, create: true });
    f.truncateSync(3_000_000_001); // sparse
    f.close();
    await refuses(
      "sparse 3 GB CIFAR file",
      () => readCifar(dir, "cifar10", "test"),
      DatasetError,
      /is 3000000001 bytes/,
      300,
      16 * MiB,
    );
    Deno.removeSync(`${dir}/test_batch.bin`);
    const w = Deno.openSync(`${dir}/test_batch.bin`, { write: true, create: true });
    w.truncateSync(3073 * 200_000); // whole records, but far too many
    w.close();
    await refuses(
      "600 MB CIFAR file of whole records",
      () => readCifar(dir, "cifar10", "test", { strictCounts: false }),
      DatasetError,
      /more than the 100000/,
      300,
      16 * MiB,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------

if (Deno.args.includes("--child")) {
  await runGroupsAndPrint(CASES, measured);
} else if (!import.meta.main) {
  registerChildGroups(import.meta.url, CASES, "amplification", (r) => {
    for (const m of r.measured) console.log(`${m.what}: ${m.ms} ms, +${m.growthMiB} MiB`);
  });
}
