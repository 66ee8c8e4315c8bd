/**
 * The fuzzer's amplification generator (target `amplify`): small files built from scratch whose
 * construction, rather than any declared size, asks a reader for far more work or memory than the file holds.
 * Mutating real checkpoints rarely stumbles on these, so they are generated with random parameters:
 *
 * - memo reuse: a big list, tuple, dict, str or bytes memoized once and handed, through memo references, to
 *   an allowlisted callable (`set`, `frozenset`, `OrderedDict`, `torch.Size`, `argparse.Namespace`,
 *   `bytearray`, `_codecs.encode`) or to BUILD thousands of times;
 * - nested copies: a copy of a copy of a copy (`OrderedDict(OrderedDict(...))`, `set` of a `Namespace`'s args);
 * - shared reports: thousands of keys holding one big dict;
 * - views: thousands of small tensors viewing one big stored or deflated record;
 * - deflate ratio: records of zeros deflated at about 1000:1, several of them;
 * - images: PNGs whose data inflates past the size the header implies, progressive JPEGs with thousands of
 *   scans or padded with comments.
 *
 * Every case is a zip checkpoint, a PNG or a JPEG; the readers must answer each within the harness's time
 * and memory limits (a typed error is a correct answer).
 *
 * @module
 */

import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { makeZip, OP, Pickle, type TensorSpec, torchPickle } from "../tests/support/checkpoint_builders.ts";
import { progressiveGrayJpeg } from "../tests/support/jpeg_builder.ts";
import { chunk } from "../tests/support/png_builder.ts";
import type { Rng } from "../src/core/rng.ts";

/** One generated case: the file, and the bare pickle for checkpoints. */
export interface AmplifyCase {
  /** The file's bytes (a zip checkpoint, a PNG or a JPEG). */
  bytes: Uint8Array;
  /** Checkpoints: the data.pkl alone. */
  pickle?: Uint8Array;
  /** What was built. */
  steps: string[];
}

const enc = new TextEncoder();
const deflatedZeros = new Map<number, Uint8Array>();

/** Raw-deflated zeros of `n` bytes (cached: a few sizes recur across cases). */
function zerosDeflated(n: number, zlibWrapped = false): Uint8Array {
  const key = zlibWrapped ? -n : n;
  let d = deflatedZeros.get(key);
  if (!d) {
    const z = Buffer.alloc(n);
    d = new Uint8Array(
      zlibWrapped ? zlib.deflateSync(z, { level: 9 }) : zlib.deflateRawSync(z, { level: 9 }),
    );
    deflatedZeros.set(key, d);
  }
  return d;
}

const W: [string, TensorSpec][] = [["w", { key: "0", storage: "FloatStorage", numel: 4, shape: [4] }]];

/** A zip checkpoint around `pkl` with one 4-float storage `0`. */
function checkpoint(pkl: Uint8Array, extra: { name: string; data: Uint8Array; deflate?: boolean }[] = []) {
  return makeZip([
    { name: "archive/data.pkl", data: pkl },
    { name: "archive/data/0", data: new Uint8Array(16) },
    ...extra,
    { name: "archive/version", data: enc.encode("3\n") },
  ], { zip64: true });
}

type Container = "list" | "tuple" | "dict" | "str" | "bytes";

function container(p: Pickle, kind: Container, n: number): void {
  switch (kind) {
    case "list":
      p.raw(OP.EMPTY_LIST, OP.MARK);
      for (let i = 0; i < n; i++) p.raw(OP.BININT1, i & 0xff);
      p.raw(OP.APPENDS);
      break;
    case "tuple":
      p.raw(OP.MARK);
      for (let i = 0; i < n; i++) p.raw(OP.BININT1, i & 0xff);
      p.raw(OP.TUPLE);
      break;
    case "dict":
      p.raw(OP.EMPTY_DICT, OP.MARK);
      for (let i = 0; i < n; i++) p.int(i + 256).raw(OP.NONE);
      p.raw(OP.SETITEMS);
      break;
    case "str":
      p.str("x".repeat(n));
      break;
    default:
      p.bytes(new Uint8Array(n));
  }
}

const get = (p: Pickle, i: number) => p.raw(OP.LONG_BINGET, i & 0xff, (i >> 8) & 0xff, 0, 0);
const put = (p: Pickle, i: number) => p.raw(OP.LONG_BINPUT, i & 0xff, (i >> 8) & 0xff, 0, 0);

/** The callables that copy an argument, with the container each takes and how it is called. */
const CALLS: { name: string; takes: Container[]; call: (p: Pickle) => void }[] = [
  { name: "builtins.set", takes: ["list"], call: (p) => reduce1(p, "builtins", "set") },
  { name: "builtins.frozenset", takes: ["list"], call: (p) => reduce1(p, "builtins", "frozenset") },
  {
    name: "collections.OrderedDict",
    takes: ["dict", "list"],
    call: (p) => reduce1(p, "collections", "OrderedDict"),
  },
  { name: "torch.Size", takes: ["tuple", "list"], call: (p) => reduce1(p, "torch", "Size") },
  { name: "builtins.bytearray", takes: ["bytes"], call: (p) => reduce1(p, "builtins", "bytearray") },
  {
    name: "_codecs.encode",
    takes: ["str"],
    call: (p) => {
      p.global("_codecs", "encode").raw(OP.MARK);
      get(p, 0);
      p.str(p.out.length % 2 ? "latin1" : "utf-8").raw(OP.TUPLE, OP.REDUCE);
    },
  },
  {
    name: "argparse.Namespace(*args)",
    takes: ["tuple"],
    call: (p) => {
      p.global("argparse", "Namespace");
      get(p, 0);
      p.raw(OP.NEWOBJ);
    },
  },
  {
    name: "BUILD",
    takes: ["dict"],
    call: (p) => {
      p.global("collections", "OrderedDict").raw(OP.EMPTY_TUPLE, OP.REDUCE);
      get(p, 0);
      p.raw(OP.BUILD);
    },
  },
];

function reduce1(p: Pickle, mod: string, name: string): void {
  p.global(mod, name).raw(OP.MARK);
  get(p, 0);
  p.raw(OP.TUPLE, OP.REDUCE);
}

/** `{"state_dict": OrderedDict(w), "x": [...]}` with `body` pushing the items of `x`. */
function withState(body: (p: Pickle) => void, pre?: (p: Pickle) => void): Uint8Array {
  const p = new Pickle().proto(2).raw(OP.EMPTY_DICT);
  pre?.(p);
  const inner = torchPickle(W, { topKey: null });
  p.str("state_dict").raw(inner.subarray(2, inner.length - 1)).raw(OP.SETITEM);
  p.str("x").raw(OP.EMPTY_LIST, OP.MARK);
  body(p);
  p.raw(OP.APPENDS, OP.SETITEM);
  return p.stop().bytesOut();
}

function memoReuse(rng: Rng, steps: string[]): Uint8Array {
  const c = rng.pick(CALLS);
  const kind = rng.pick(c.takes);
  const n = rng.pick([1000, 20_000, 100_000, 300_000]);
  const times = rng.pick([10, 1000, 20_000, 100_000]);
  steps.push(`memo reuse: ${c.name}(${kind} of ${n}) x ${times}`);
  return withState((p) => {
    for (let i = 0; i < times; i++) c.call(p);
  }, (p) => {
    container(p, kind, n);
    put(p, 0).raw(OP.POP);
  });
}

function nestedCopies(rng: Rng, steps: string[]): Uint8Array {
  const n = rng.pick([10_000, 100_000]);
  const depth = rng.pick([10, 1000, 30_000]);
  const how = rng.pick(["OrderedDict", "set-of-Namespace"]);
  steps.push(`nested copies: ${how} over ${n} items, ${depth} deep`);
  return withState((p) => {
    for (let i = 1; i <= depth; i++) {
      if (how === "OrderedDict") {
        p.global("collections", "OrderedDict").raw(OP.MARK);
        get(p, i - 1);
        p.raw(OP.TUPLE, OP.REDUCE);
      } else {
        p.global("builtins", "set").raw(OP.MARK);
        get(p, 0);
        p.raw(OP.TUPLE, OP.REDUCE);
      }
      put(p, i);
    }
  }, (p) => {
    container(p, how === "OrderedDict" ? "dict" : "list", n);
    put(p, 0).raw(OP.POP);
  });
}

function sharedReport(rng: Rng, steps: string[]): Uint8Array {
  const n = rng.pick([1000, 20_000, 60_000]);
  steps.push(`shared report: ${n} keys holding one ${n}-entry dict`);
  const p = new Pickle().proto(2).raw(OP.EMPTY_DICT);
  container(p, "dict", n);
  put(p, 0).raw(OP.POP, OP.MARK);
  for (let i = 0; i < n; i++) {
    p.str(`k${i}`);
    get(p, 0);
  }
  p.raw(OP.SETITEMS);
  const inner = torchPickle(W, { topKey: null });
  p.str("state_dict").raw(inner.subarray(2, inner.length - 1)).raw(OP.SETITEM);
  return p.stop().bytesOut();
}

function views(
  rng: Rng,
  steps: string[],
): { pkl: Uint8Array; extra: { name: string; data: Uint8Array; deflate?: boolean }[] } {
  const numel = rng.pick([1 << 18, 1 << 20, 4 << 20]);
  const count = rng.pick([100, 1000, 3000]);
  const deflate = rng.chance(0.5);
  const len = rng.pick([1, 4, 64]);
  steps.push(
    `views: ${count} views of ${len} floats over a ${numel * 4}-byte ${
      deflate ? "deflated" : "stored"
    } record`,
  );
  const tensors: [string, TensorSpec][] = [];
  const step = Math.max(1, Math.floor((numel - len) / count));
  for (let i = 0; i < count; i++) {
    tensors.push([`t${i}`, {
      key: "1",
      storage: "FloatStorage",
      numel,
      offset: (i * step) % (numel - len),
      shape: [len],
    }]);
  }
  return {
    pkl: torchPickle(tensors),
    extra: [{ name: "archive/data/1", data: new Uint8Array(numel * 4), deflate }],
  };
}

/** A zip checkpoint whose records are deflated zeros (raw bytes given directly, deflated once and cached). */
function deflateRatio(rng: Rng, steps: string[]): Uint8Array {
  const size = rng.pick([1 << 20, 8 << 20, 16 << 20]);
  const records = rng.pick([1, 4, 12]);
  steps.push(`deflate ratio: ${records} records of ${size} zero bytes`);
  const tensors: [string, TensorSpec][] = [];
  for (let r = 0; r < records; r++) {
    tensors.push([`r${r}`, { key: `z${r}`, storage: "FloatStorage", numel: size / 4, shape: [size / 4] }]);
  }
  return zipWithDeflated(torchPickle(tensors), records, size);
}

/**
 * A zip of data.pkl (stored) and `records` deflated records of `size` zeros named `archive/data/z<i>`, the
 * deflated bytes made once per size (deflating 16 MiB per case would slow the fuzzer down).
 */
function zipWithDeflated(pkl: Uint8Array, records: number, size: number): Uint8Array {
  const packed = zerosDeflated(size);
  const crc = zlib.crc32(Buffer.alloc(size)) >>> 0;
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  const add = (name: string, payload: Uint8Array, usize: number, crc32: number, method: number) => {
    const nm = enc.encode(name);
    const lh = new Uint8Array(30 + nm.length);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc32, true);
    lv.setUint32(18, payload.length, true);
    lv.setUint32(22, usize, true);
    lv.setUint16(26, nm.length, true);
    lh.set(nm, 30);
    const ch = new Uint8Array(46 + nm.length);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc32, true);
    cv.setUint32(20, payload.length, true);
    cv.setUint32(24, usize, true);
    cv.setUint16(28, nm.length, true);
    cv.setUint32(42, offset, true);
    ch.set(nm, 46);
    parts.push(lh, payload);
    central.push(ch);
    offset += lh.length + payload.length;
  };
  add("archive/data.pkl", pkl, pkl.length, zlib.crc32(Buffer.from(pkl)) >>> 0, 0);
  for (let r = 0; r < records; r++) add(`archive/data/z${r}`, packed, size, crc, 8);
  const cdOffset = offset;
  let cdSize = 0;
  for (const c of central) {
    parts.push(c);
    cdSize += c.length;
  }
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, central.length, true);
  ev.setUint16(10, central.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, cdOffset, true);
  parts.push(eocd);
  let n = 0;
  for (const x of parts) n += x.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const x of parts) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}

function pngBomb(rng: Rng, steps: string[]): Uint8Array {
  const side = rng.pick([1, 16, 256]);
  const inflated = rng.pick([1 << 16, 4 << 20, 64 << 20]);
  steps.push(`PNG: ${side}x${side} RGB whose data inflates to ${inflated} bytes`);
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, side);
  v.setUint32(4, side);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return new Uint8Array([
    137,
    80,
    78,
    71,
    13,
    10,
    26,
    10,
    ...chunk("IHDR", ihdr),
    ...chunk("IDAT", zerosDeflated(inflated, true)),
    ...chunk("IEND", new Uint8Array(0)),
  ]);
}

function jpegScans(rng: Rng, steps: string[]): Uint8Array {
  const side = rng.pick([64, 512, 2048]);
  const scans = rng.pick([1, 50, 300, 5000]);
  const pad = rng.pick([0, 0, 1 << 20, 4 << 20]);
  const cut = rng.chance(0.3);
  steps.push(
    `JPEG: ${side}x${side} progressive, ${scans} scans, ${pad} bytes of comments${
      cut ? ", scan data cut" : ""
    }`,
  );
  const j = progressiveGrayJpeg(side, side, scans, pad);
  if (!cut) return j;
  const keep = Math.max(pad + 200, Math.floor(j.length / 4));
  return new Uint8Array([...j.subarray(0, Math.min(keep, j.length - 2)), 0xff, 0xd9]);
}

/** Generates one amplification case. */
export function amplifyCase(rng: Rng): AmplifyCase {
  const steps: string[] = [];
  const kind = rng.weighted({ memo: 4, nested: 2, report: 1, views: 2, deflate: 2, png: 1, jpeg: 1 });
  switch (kind) {
    case "memo":
    case "nested":
    case "report": {
      const pkl = kind === "memo"
        ? memoReuse(rng, steps)
        : kind === "nested"
        ? nestedCopies(rng, steps)
        : sharedReport(rng, steps);
      return { bytes: checkpoint(pkl), pickle: pkl, steps };
    }
    case "views": {
      const { pkl, extra } = views(rng, steps);
      return { bytes: checkpoint(pkl, extra), pickle: pkl, steps };
    }
    case "deflate": {
      const bytes = deflateRatio(rng, steps);
      return { bytes, steps };
    }
    case "png":
      return { bytes: pngBomb(rng, steps), steps };
    default:
      return { bytes: jpegScans(rng, steps), steps };
  }
}
