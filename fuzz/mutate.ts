/**
 * The fuzzer's seed corpus (the real checkpoints and safetensors files of the reference data) and its
 * mutators: generic damage (bit flips, byte sets, truncation, deletions, duplicated chunks, splices from other
 * files) and structure-aware edits aimed at the fields parsers trust (zip sizes, offsets, counts and ZIP64
 * extras; zip directory reordering, duplication, deletion and renaming; pickle lengths, memo indices,
 * integers and opcodes, re-packed into the archive with a valid CRC so they reach the unpickler; legacy
 * storage counts; safetensors header length, offsets, shapes, dtypes, keys and metadata).
 *
 * @module
 */

import { makeZip, OP, type ZipFileSpec } from "../tests/support/checkpoint_builders.ts";
import { sniffFormat } from "../converters/checkpoint.ts";
import { MemorySource } from "../converters/source.ts";
import { ZipArchive } from "../converters/zip.ts";
import type { Rng } from "../src/core/rng.ts";
import { below, count as drawCount } from "./rng.ts";
import { amplifyCase } from "./amplify.ts";
import {
  type Field,
  type LegacyMap,
  mapLegacy,
  mapPickle,
  mapSafetensors,
  mapZip,
  type PickleMap,
  type SafetensorsMap,
  type ZipMap,
} from "./structure.ts";

/**
 * What a fuzz case feeds. `amplify` cases are not mutations of the corpus but files built from scratch by
 * `amplify.ts` (memo reuse, nested copies, many views, deflate ratios, image bombs).
 */
export type Target = "zip" | "legacy" | "pickle" | "safetensors" | "amplify";

/** Every target. */
export const TARGETS: readonly Target[] = ["zip", "legacy", "pickle", "safetensors", "amplify"];

/** A seed file and its structure map. */
export interface Seed {
  /** File name (relative to the reference folder). */
  name: string;
  /** Its kind. */
  kind: "zip" | "legacy" | "safetensors";
  /** The valid original. */
  bytes: Uint8Array;
  /** `[start, end)` ranges where damage reaches parsing logic (headers, pickles, directories). */
  regions: [number, number][];
  /** Zip: the archive map. */
  zip?: ZipMap;
  /** Zip: the entries, for re-packing with a mutated pickle. */
  entries?: ZipFileSpec[];
  /** Zip: index of `<prefix>/data.pkl` in `entries`. */
  pklIndex?: number;
  /** Zip: the data.pkl map (offsets relative to the record). */
  pkl?: PickleMap;
  /** Legacy: the pickles and storage counts. */
  legacy?: LegacyMap;
  /** Safetensors: the header. */
  st?: SafetensorsMap;
}

/** The seed corpus. */
export interface Corpus {
  /** Every seed. */
  seeds: Seed[];
  /** Seeds by target. */
  byTarget: Record<Target, Seed[]>;
}

/** Options of {@link loadCorpus}. */
export interface CorpusOptions {
  /** Leave out files bigger than this (default: none). */
  maxBytes?: number;
}

function walk(dir: string, out: string[], rel = ""): void {
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) walk(path, out, `${rel}${e.name}/`);
    else out.push(`${rel}${e.name}`);
  }
}

/** Loads and maps every checkpoint and safetensors file under the reference folder. */
export function loadCorpus(referenceDir: string, opts: CorpusOptions = {}): Corpus {
  const files: string[] = [];
  walk(referenceDir.replace(/\/$/, ""), files);
  const seeds: Seed[] = [];
  for (const name of files) {
    if (!/\.(pth|tar|pt|safetensors)$/.test(name)) continue;
    const bytes = Deno.readFileSync(`${referenceDir.replace(/\/$/, "")}/${name}`);
    if (opts.maxBytes !== undefined && bytes.length > opts.maxBytes) continue;
    const kind = sniffFormat(bytes.subarray(0, 512));
    if (kind === "zip") seeds.push(zipSeed(name, bytes));
    else if (kind === "legacy") {
      const legacy = mapLegacy(bytes);
      if (!legacy) throw new Error(`${name}: cannot map the legacy file`);
      const regions: [number, number][] = legacy.pickles.map((p) => [p.start, p.end]);
      for (const c of legacy.counts) regions.push([c.at, c.at + 8]);
      seeds.push({ name, kind: "legacy", bytes, regions, legacy });
    } else if (name.endsWith(".safetensors")) {
      const st = mapSafetensors(bytes);
      if (!st) throw new Error(`${name}: cannot map the safetensors header`);
      seeds.push({ name, kind: "safetensors", bytes, regions: [[0, 8 + st.headerLen]], st });
    }
  }
  // Torch writes stored archives; other tools deflate. One deflated copy of a small checkpoint puts the
  // inflate path (declared sizes, ratios, CRCs of inflated data) under the same mutations.
  const small = seeds.find((s) => s.kind === "zip" && s.name.endsWith("tiny-state-dict.pth"));
  if (small) {
    const deflated = makeZip(small.entries!.map((e) => ({ ...e, deflate: true })), { zip64: true });
    seeds.push(zipSeed(`${small.name}#deflated`, deflated));
  }
  const byTarget: Record<Target, Seed[]> = {
    zip: seeds.filter((s) => s.kind === "zip"),
    legacy: seeds.filter((s) => s.kind === "legacy"),
    pickle: seeds.filter((s) => s.kind === "legacy" || s.pkl !== undefined),
    safetensors: seeds.filter((s) => s.kind === "safetensors"),
    amplify: [],
  };
  return { seeds, byTarget };
}

function zipSeed(name: string, bytes: Uint8Array): Seed {
  const zip = mapZip(bytes);
  if (!zip) throw new Error(`${name}: cannot map the zip archive`);
  const archive = ZipArchive.open(new MemorySource(bytes, name));
  const entries: ZipFileSpec[] = [];
  let pklIndex = -1;
  for (const e of archive.entries.values()) {
    if (/^[^/]+\/data\.pkl$/.test(e.name)) pklIndex = entries.length;
    entries.push({ name: e.name, data: archive.read(e) });
  }
  const pkl = pklIndex >= 0 ? mapPickle(entries[pklIndex].data) ?? undefined : undefined;
  const regions = [...zip.regions];
  if (pklIndex >= 0) {
    const e = archive.entries.get(entries[pklIndex].name)!;
    const at = archive.dataOffset(e);
    regions.push([at, at + e.compressedSize]);
  }
  return { name, kind: "zip", bytes, regions, zip, entries, pklIndex, pkl };
}

/** A mutated input. */
export interface Mutant {
  /** The bytes to feed. */
  bytes: Uint8Array;
  /** For pickle cases: the mutated pickle alone (fed to the bare unpickler too). */
  pickle?: Uint8Array;
  /** What was done, in order. */
  steps: string[];
}

// ---------------------------------------------------------------------------------------------------------
// byte-level helpers

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function splice(
  b: Uint8Array,
  at: number,
  remove: number,
  insert: Uint8Array = new Uint8Array(0),
): Uint8Array {
  return concat([b.subarray(0, at), insert, b.subarray(at + remove)]);
}

function writeLE(b: Uint8Array, at: number, width: number, v: bigint): void {
  let x = BigInt.asUintN(width * 8, v);
  for (let i = 0; i < width && at + i < b.length; i++) {
    b[at + i] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** Interesting replacement values for an integer field. */
function fieldValue(rng: Rng, f: Field, fileLen: number): bigint {
  const bits = BigInt(f.width * 8);
  const max = (1n << bits) - 1n;
  const v = BigInt(f.value);
  const choices: (() => bigint)[] = [
    () => 0n,
    () => 1n,
    () => v + 1n,
    () => v - 1n,
    () => v + BigInt(below(rng, 64) - 32),
    () => v * 2n,
    () => v / 2n,
    () => max,
    () => max - 1n,
    () => (1n << (bits - 1n)) - 1n,
    () => 1n << (bits - 1n),
    () => BigInt(fileLen),
    () => BigInt(fileLen) - 1n,
    () => BigInt(fileLen) + 1n,
    () => BigInt(rng.nextU32()) & max,
    () => v ^ (1n << BigInt(below(rng, f.width * 8))),
  ];
  if (f.width === 8) {
    choices.push(
      () => 1n << 53n,
      () => (1n << 53n) - 1n,
      () => (1n << 53n) + 1n,
      () => 1n << 32n,
      () => 1n << 63n,
    );
  }
  if (f.signed) choices.push(() => -1n, () => -BigInt(below(rng, 1000)));
  return rng.pick(choices)();
}

function setField(b: Uint8Array, rng: Rng, f: Field, base = 0): string {
  const v = fieldValue(rng, f, b.length);
  writeLE(b, base + f.at, f.width, v);
  return `${f.name}@${base + f.at}: ${f.value} -> ${v}`;
}

/** A position: 60% of the time a byte of the structure regions (each byte equally likely), else anywhere. */
function position(rng: Rng, len: number, regions: [number, number][]): number {
  if (len === 0) return 0;
  if (regions.length && rng.chance(0.6)) {
    let total = 0;
    for (const [s, e] of regions) total += Math.max(0, Math.min(e, len) - s);
    let k = below(rng, total);
    for (const [s, e] of regions) {
      const n = Math.max(0, Math.min(e, len) - s);
      if (k < n) return s + k;
      k -= n;
    }
  }
  return below(rng, len);
}

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, 0x0a, 0x28, 0x2e, 0x50, 0x4b];

function chunkLen(rng: Rng): number {
  return rng.pick([1, 2, 4, 8, 16, 1 + below(rng, 64), 1 + below(rng, 4096)]);
}

// ---------------------------------------------------------------------------------------------------------
// generic mutators

type Generic = "flip" | "set" | "truncate" | "delete" | "dup" | "splice" | "zero" | "extend";

const GENERIC: Record<Generic, number> = {
  flip: 5,
  set: 3,
  truncate: 2,
  delete: 1.5,
  dup: 1.5,
  splice: 1.5,
  zero: 1,
  extend: 0.5,
};

function generic(
  b: Uint8Array,
  rng: Rng,
  regions: [number, number][],
  corpus: Corpus,
): [Uint8Array, string] {
  const kind = rng.weighted(GENERIC);
  const len = b.length;
  switch (kind) {
    case "flip": {
      const out = b.slice();
      const n = drawCount(rng, 8);
      const at: number[] = [];
      for (let i = 0; i < n && len; i++) {
        const p = position(rng, len, regions);
        out[p] ^= 1 << below(rng, 8);
        at.push(p);
      }
      return [out, `flip ${n} bit(s) @${at.join(",")}`];
    }
    case "set": {
      const out = b.slice();
      const n = drawCount(rng, 6);
      const at: string[] = [];
      for (let i = 0; i < n && len; i++) {
        const p = position(rng, len, regions);
        out[p] = rng.chance(0.7) ? rng.pick(INTERESTING_BYTES) : below(rng, 256);
        at.push(`${p}=${out[p]}`);
      }
      return [out, `set ${at.join(",")}`];
    }
    case "truncate": {
      const cut = rng.chance(0.3)
        ? Math.max(0, len - 1 - below(rng, Math.min(len, 200)))
        : position(rng, len, regions);
      return [b.slice(0, cut), `truncate to ${cut}`];
    }
    case "delete": {
      const p = position(rng, len, regions);
      const n = Math.min(chunkLen(rng), len - p);
      return [splice(b, p, n), `delete ${n} @${p}`];
    }
    case "dup": {
      const from = position(rng, len, regions);
      const n = Math.min(chunkLen(rng), len - from);
      const chunk = b.slice(from, from + n);
      const to = position(rng, len, regions);
      if (rng.chance(0.5)) return [splice(b, to, 0, chunk), `duplicate ${n} from ${from}, inserted @${to}`];
      const out = b.slice();
      out.set(chunk.subarray(0, Math.max(0, len - to)), to);
      return [out, `duplicate ${n} from ${from}, over @${to}`];
    }
    case "splice": {
      const other = rng.pick(corpus.seeds);
      const from = position(rng, other.bytes.length, other.regions);
      const n = Math.min(chunkLen(rng), other.bytes.length - from);
      const chunk = other.bytes.slice(from, from + n);
      const to = position(rng, len, regions);
      if (rng.chance(0.5)) {
        return [splice(b, to, 0, chunk), `splice ${n} from ${other.name}@${from}, inserted @${to}`];
      }
      const out = b.slice();
      out.set(chunk.subarray(0, Math.max(0, len - to)), to);
      return [out, `splice ${n} from ${other.name}@${from}, over @${to}`];
    }
    case "zero": {
      const p = position(rng, len, regions);
      const n = Math.min(chunkLen(rng), len - p);
      const out = b.slice();
      out.fill(0, p, p + n);
      return [out, `zero ${n} @${p}`];
    }
    case "extend": {
      const extra = new Uint8Array(1 + below(rng, 256));
      for (let i = 0; i < extra.length; i++) extra[i] = below(rng, 256);
      return [concat([b, extra]), `append ${extra.length} random bytes`];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// pickle mutators (on a pickle's own bytes; offsets relative to `base` in the buffer)

const STRUCTURAL_OPS = [
  OP.MARK,
  OP.STOP,
  OP.POP,
  OP.POP_MARK,
  OP.DUP,
  OP.NONE,
  OP.BINPERSID,
  OP.REDUCE,
  OP.BUILD,
  OP.APPEND,
  OP.APPENDS,
  OP.DICT,
  OP.EMPTY_DICT,
  OP.LIST,
  OP.EMPTY_LIST,
  OP.OBJ,
  OP.SETITEM,
  OP.SETITEMS,
  OP.TUPLE,
  OP.EMPTY_TUPLE,
  OP.TUPLE1,
  OP.TUPLE2,
  OP.TUPLE3,
  OP.NEWOBJ,
  OP.NEWOBJ_EX,
  OP.NEWTRUE,
  OP.NEWFALSE,
  OP.EMPTY_SET,
  OP.ADDITEMS,
  OP.FROZENSET,
  OP.STACK_GLOBAL,
  OP.MEMOIZE,
  OP.NEXT_BUFFER,
  OP.READONLY_BUFFER,
];

const enc = new TextEncoder();

/** Snippets a fuzzer may insert between opcodes: hostile globals must come out as UnsafePickleError. */
const SNIPPETS: [string, Uint8Array][] = [
  ["GLOBAL os.system", enc.encode("cos\nsystem\n")],
  ["GLOBAL builtins.eval", enc.encode("cbuiltins\neval\n")],
  ["GLOBAL torch.FloatStorage", enc.encode("ctorch\nFloatStorage\n")],
  ["GLOBAL collections.OrderedDict", enc.encode("ccollections\nOrderedDict\n")],
  ["GLOBAL torch._utils._rebuild_tensor_v2", enc.encode("ctorch._utils\n_rebuild_tensor_v2\n")],
  ["EXT1 1", new Uint8Array([OP.EXT1, 1])],
  ["LONG_BINGET 2^32-1", new Uint8Array([OP.LONG_BINGET, 0xff, 0xff, 0xff, 0xff])],
  ["LONG_BINPUT 2^32-1", new Uint8Array([OP.LONG_BINPUT, 0xff, 0xff, 0xff, 0xff])],
  ["BININT -1", new Uint8Array([OP.BININT, 0xff, 0xff, 0xff, 0xff])],
  ["BININT 2^31-1", new Uint8Array([OP.BININT, 0xff, 0xff, 0xff, 0x7f])],
  ["LONG1 2^63", new Uint8Array([OP.LONG1, 9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0])],
  ["INT 10^30", enc.encode("I1000000000000000000000000000000\n")],
  ["BINFLOAT NaN", new Uint8Array([OP.BINFLOAT, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1])],
  ["FRAME 2^40", new Uint8Array([OP.FRAME, 0, 0, 0, 0, 0, 1, 0, 0])],
  ["BINUNICODE 2^31", new Uint8Array([OP.BINUNICODE, 0, 0, 0, 0x80])],
  ["PERSID 0", enc.encode("P0\n")],
  ["storage pid", enc.encode("(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI1000000000000\ntQ")],
];

type PickleMut = "len" | "memo" | "int" | "op" | "del" | "dupop" | "insert" | "snippet" | "flip" | "truncate";

const PICKLE_MUTS: Record<PickleMut, number> = {
  len: 3,
  memo: 2,
  int: 3,
  op: 2,
  del: 1.5,
  dupop: 1,
  insert: 1.5,
  snippet: 1.5,
  flip: 2,
  truncate: 0.5,
};

/** Mutates the pickle at `[map.start, map.end)` inside `b` (returns a new buffer). */
function mutatePickle(b: Uint8Array, map: PickleMap, rng: Rng, label: string): [Uint8Array, string] {
  let kind = rng.weighted(PICKLE_MUTS);
  if (kind === "len" && !map.lengths.length) kind = "flip";
  if (kind === "memo" && !map.memo.length) kind = "int";
  if (kind === "int" && !map.ints.length) kind = "op";
  const ops = map.ops;
  const anyOp = () => ops[below(rng, ops.length)];
  switch (kind) {
    case "len":
    case "memo":
    case "int": {
      const out = b.slice();
      const list = kind === "len" ? map.lengths : kind === "memo" ? map.memo : map.ints;
      const f = rng.pick(list);
      return [out, `${label} ${setField(out, rng, f)}`];
    }
    case "op": {
      const o = anyOp();
      const out = b.slice();
      const to = rng.chance(0.7) ? rng.pick(STRUCTURAL_OPS) : below(rng, 256);
      out[o.pos] = to;
      return [out, `${label} opcode @${o.pos} 0x${o.op.toString(16)} -> 0x${to.toString(16)}`];
    }
    case "del": {
      const o = anyOp();
      return [splice(b, o.pos, o.end - o.pos), `${label} delete opcode 0x${o.op.toString(16)} @${o.pos}`];
    }
    case "dupop": {
      const o = anyOp();
      const at = anyOp().pos;
      const n = 1 + below(rng, 4);
      const last = ops[Math.min(ops.indexOf(o) + n - 1, ops.length - 1)];
      const chunk = b.slice(o.pos, last.end);
      return [splice(b, at, 0, chunk), `${label} copy opcodes ${o.pos}..${last.end} to @${at}`];
    }
    case "insert": {
      const at = anyOp().pos;
      const op = rng.pick(STRUCTURAL_OPS);
      return [splice(b, at, 0, new Uint8Array([op])), `${label} insert opcode 0x${op.toString(16)} @${at}`];
    }
    case "snippet": {
      const at = anyOp().pos;
      const [what, bytes] = rng.pick(SNIPPETS);
      return [splice(b, at, 0, bytes), `${label} insert ${what} @${at}`];
    }
    case "flip": {
      const out = b.slice();
      const p = map.start + below(rng, map.end - map.start);
      out[p] ^= 1 << below(rng, 8);
      return [out, `${label} flip @${p}`];
    }
    case "truncate": {
      const p = map.start + below(rng, map.end - map.start);
      return [splice(b, p, map.end - p), `${label} cut at ${p}`];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// zip mutators

function zipDirEdit(seed: Seed, rng: Rng): [Uint8Array, string] {
  const b = seed.bytes;
  const zm = seed.zip!;
  const chunks = zm.central.map((c) => b.slice(c.at, c.at + c.length));
  const n = chunks.length;
  let what: string;
  const kind = rng.pick(["swap", "duplicate", "delete", "rename", "reverse", "local", "method", "flags"]);
  const i = below(rng, n);
  const j = below(rng, n);
  switch (kind) {
    case "swap":
      [chunks[i], chunks[j]] = [chunks[j], chunks[i]];
      what = `swap entries ${i} and ${j}`;
      break;
    case "duplicate":
      chunks.splice(j, 0, chunks[i].slice());
      what = `duplicate entry ${i} at ${j}`;
      break;
    case "delete":
      chunks.splice(i, 1);
      what = `delete entry ${i} (${zm.central[i].name})`;
      break;
    case "rename": {
      const c = chunks[i];
      const nameLen = c[28] | (c[29] << 8);
      if (nameLen) {
        const k = below(rng, nameLen);
        c[46 + k] = rng.pick([0x2f, 0x2e, 0x41, 0x00, 0xc3, 0xff, c[46 + k] ^ 1]);
      }
      what = `rename entry ${i}`;
      break;
    }
    case "reverse":
      chunks.reverse();
      what = "reverse the directory";
      break;
    case "local": {
      // point entry i at entry j's local header (two names sharing one header)
      const src = chunks[j];
      const dst = chunks[i];
      dst.set(src.subarray(42, 46), 42);
      what = `entry ${i} uses entry ${j}'s local header`;
      break;
    }
    case "method": {
      const m = rng.pick([8, 12, 14, 99, 0xffff]);
      chunks[i][10] = m & 0xff;
      chunks[i][11] = m >> 8;
      what = `entry ${i} method ${m}`;
      break;
    }
    default: {
      chunks[i][8] |= rng.pick([1, 8, 0x40, 0x2000]);
      what = `entry ${i} flags ${chunks[i][8]}`;
    }
  }
  const fixCounts = rng.chance(0.85);
  return [
    rebuildTail(b, zm, chunks, fixCounts),
    `zip directory: ${what}${fixCounts ? "" : " (counts left)"}`,
  ];
}

/** Rewrites the central directory and end records after `cdOffset` with `chunks` as the entries. */
function rebuildTail(b: Uint8Array, zm: ZipMap, chunks: Uint8Array[], fixCounts: boolean): Uint8Array {
  const head = b.subarray(0, zm.cdOffset);
  const cd = concat(chunks);
  const parts: Uint8Array[] = [head, cd];
  const count = BigInt(fixCounts ? chunks.length : zm.central.length);
  const size = BigInt(fixCounts ? cd.length : zm.cdSize);
  if (zm.zip64Record >= 0) {
    const rec = b.slice(zm.zip64Record, zm.zip64Record + 56);
    writeLE(rec, 24, 8, count);
    writeLE(rec, 32, 8, count);
    writeLE(rec, 40, 8, size);
    writeLE(rec, 48, 8, BigInt(zm.cdOffset));
    const loc = b.slice(zm.zip64Locator, zm.zip64Locator + 20);
    writeLE(loc, 8, 8, BigInt(head.length + cd.length));
    parts.push(rec, loc);
  }
  const eocd = b.slice(zm.eocd);
  if ((eocd[10] | (eocd[11] << 8)) !== 0xffff) {
    writeLE(eocd, 8, 2, count);
    writeLE(eocd, 10, 2, count);
  }
  if ((eocd[12] & eocd[13] & eocd[14] & eocd[15]) !== 0xff) writeLE(eocd, 12, 4, size);
  parts.push(eocd);
  return concat(parts);
}

/** The zip archive again, with `pkl` as its data.pkl (valid CRC and sizes, ZIP64 end records). */
function repack(seed: Seed, pkl: Uint8Array): Uint8Array {
  const files = seed.entries!.map((e, i) => (i === seed.pklIndex ? { name: e.name, data: pkl } : e));
  return makeZip(files, { zip64: true });
}

// ---------------------------------------------------------------------------------------------------------
// safetensors mutators

const DTYPES: unknown[] = [
  "F64",
  "F32",
  "F16",
  "BF16",
  "I64",
  "I32",
  "I16",
  "I8",
  "U8",
  "BOOL",
  "F8_E4M3",
  "U64",
  "toString",
  "__proto__",
  "constructor",
  "",
  3,
  null,
];

function interestingNumber(rng: Rng, v: number, dataLen: number): unknown {
  return rng.pick<() => unknown>([
    () => v + 1,
    () => v - 1,
    () => v + rng.pick([2, 4, 8]),
    () => v * 2,
    () => 0,
    () => -1,
    () => dataLen,
    () => dataLen + 1,
    () => 2 ** 31,
    () => 2 ** 32,
    () => 2 ** 53,
    () => 2 ** 53 - 1,
    () => 2 ** 64,
    () => 1e300,
    () => v + 0.5,
    () => String(v),
    () => null,
    () => [v],
  ])();
}

function stEdit(seed: Seed, rng: Rng): [Uint8Array, string] {
  const st = seed.st!;
  const b = seed.bytes;
  const dataStart = 8 + st.headerLen;
  const dataLen = b.length - dataStart;
  const header = structuredClone(st.header) as Record<string, unknown>;
  const keys = Object.keys(header).filter((k) => k !== "__metadata__");
  const key = keys.length ? rng.pick(keys) : "x";
  const entry = (header[key] ?? {}) as Record<string, unknown>;
  let what: string;
  let text: string | null = null;
  const kind = rng.pick([
    "offset",
    "offset",
    "shape",
    "shape",
    "dtype",
    "swap",
    "remove",
    "duplicate",
    "metadata",
    "proto",
    "entry",
    "text",
  ]);
  switch (kind) {
    case "offset": {
      const offs = entry.data_offsets as number[];
      const i = below(rng, 2);
      const nv = interestingNumber(rng, offs[i], dataLen);
      entry.data_offsets = i === 0 ? [nv, offs[1]] : [offs[0], nv];
      what = `'${key}'.data_offsets[${i}] ${offs[i]} -> ${JSON.stringify(nv)}`;
      break;
    }
    case "shape": {
      const shape = [...(entry.shape as number[])];
      const r = below(rng, 5);
      if (r === 0 || shape.length === 0) shape.push(rng.pick([1, 2, 0, 2 ** 26]));
      else if (r === 1) shape.pop();
      else if (r === 2) shape.splice(0, shape.length, 2 ** 26, 2 ** 26, 2 ** 26, 2 ** 26);
      else {
        const i = below(rng, shape.length);
        shape[i] = interestingNumber(rng, shape[i], dataLen) as number;
      }
      entry.shape = shape;
      what = `'${key}'.shape -> ${JSON.stringify(shape)}`;
      break;
    }
    case "dtype": {
      entry.dtype = rng.pick(DTYPES);
      what = `'${key}'.dtype -> ${JSON.stringify(entry.dtype)}`;
      break;
    }
    case "swap": {
      const other = header[rng.pick(keys)] as Record<string, unknown>;
      [entry.data_offsets, other.data_offsets] = [other.data_offsets, entry.data_offsets];
      what = `swap data_offsets of '${key}' with another tensor`;
      break;
    }
    case "remove":
      delete header[key];
      what = `remove '${key}'`;
      break;
    case "duplicate": {
      const json = JSON.stringify(header);
      const dup = `${JSON.stringify(key)}:${JSON.stringify(entry)}`;
      text = json.slice(0, -1) + "," + dup + "}";
      what = `duplicate key '${key}'`;
      break;
    }
    case "metadata": {
      header.__metadata__ = rng.pick<unknown>([
        { a: 1 },
        { a: null },
        { a: { b: "c" } },
        ["x"],
        "text",
        null,
        { format: "pt", x: "y".repeat(below(rng, 100)) },
      ]);
      what = `__metadata__ -> ${JSON.stringify(header.__metadata__).slice(0, 40)}`;
      break;
    }
    case "proto": {
      const json = JSON.stringify(header);
      const inner = rng.chance(0.5)
        ? `"__proto__":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`
        : `"__metadata__":{"__proto__":"x"}`;
      text = "{" + inner + (json.length > 2 ? "," + json.slice(1) : "}");
      what = `header with ${inner.slice(0, 30)}`;
      break;
    }
    case "entry": {
      header[key] = rng.pick<unknown>([null, [], "F32", 1, { ...entry, extra: 1 }, {}]);
      what = `'${key}' -> ${JSON.stringify(header[key])}`;
      break;
    }
    default: {
      const json = JSON.stringify(header);
      const p = below(rng, json.length);
      const ins = rng.pick([
        "\\q",
        "\u0000",
        "\\u12",
        '"',
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\\",
        "\ud800",
        "0".repeat(50),
      ]);
      text = json.slice(0, p) + ins + json.slice(p);
      what = `header text: insert ${JSON.stringify(ins).slice(0, 20)} @${p}`;
    }
  }
  let hdr: Uint8Array = enc.encode(text ?? JSON.stringify(header));
  if (rng.chance(0.3)) {
    const pad = new Uint8Array(below(rng, 16)).fill(0x20);
    hdr = concat([hdr, pad]);
  }
  const fixLen = rng.chance(0.9);
  const len = new Uint8Array(8);
  writeLE(len, 0, 8, BigInt(fixLen ? hdr.length : st.headerLen));
  return [
    concat([len, hdr, b.subarray(dataStart)]),
    `safetensors header: ${what}${fixLen ? "" : " (length kept)"}`,
  ];
}

// ---------------------------------------------------------------------------------------------------------
// per-target case generation

/** Makes one mutated input for `target` from a seed chosen by `rng`. */
export function mutate(corpus: Corpus, target: Target, rng: Rng): { seed: Seed; mutant: Mutant } {
  if (target === "amplify") {
    const c = amplifyCase(rng);
    const seed: Seed = { name: "(generated)", kind: "zip", bytes: c.bytes, regions: [] };
    return { seed, mutant: { bytes: c.bytes, pickle: c.pickle, steps: c.steps } };
  }
  const seeds = corpus.byTarget[target];
  if (!seeds.length) throw new Error(`no seed files for target ${target}`);
  // The 34 MB full-size checkpoint is the slowest seed: use it for 1 case in 50.
  const big = seeds.filter((s) => s.bytes.length > 8_000_000);
  const small = seeds.filter((s) => s.bytes.length <= 8_000_000);
  const seed = big.length && (rng.chance(0.02) || !small.length) ? rng.pick(big) : rng.pick(small);
  const steps: string[] = [];
  let bytes = seed.bytes;
  let pickle: Uint8Array | undefined;
  const n = drawCount(rng, 4);
  if (target === "pickle") {
    if (seed.kind === "zip") {
      let pkl = seed.entries![seed.pklIndex!].data;
      for (let i = 0; i < n; i++) {
        const map = mapPickle(pkl) ?? seed.pkl!;
        const [out, what] = mutatePickle(pkl, map, rng, "data.pkl");
        pkl = out;
        steps.push(what);
      }
      pickle = pkl;
      bytes = repack(seed, pkl);
    } else {
      for (let i = 0; i < n; i++) {
        const legacy = i === 0 ? seed.legacy! : mapLegacy(bytes) ?? seed.legacy!;
        const which = rng.chance(0.7) ? 3 : below(rng, 5);
        const [out, what] = mutatePickle(bytes, legacy.pickles[which], rng, `pickle ${which}`);
        bytes = out;
        steps.push(what);
      }
      const main = seed.legacy!.pickles[3];
      pickle = bytes.subarray(main.start);
    }
    return { seed, mutant: { bytes, pickle, steps } };
  }
  for (let i = 0; i < n; i++) {
    const first = i === 0;
    let kind = "generic";
    if (first) {
      if (target === "zip") kind = rng.weighted({ generic: 4, field: 3, dir: 1.5, pickle: 1.5 });
      else if (target === "legacy") kind = rng.weighted({ generic: 4, count: 1.5, pickle: 3 });
      else kind = rng.weighted({ generic: 3, hlen: 1, json: 5 });
    }
    let what: string;
    switch (kind) {
      case "field": {
        const out = bytes.slice();
        what = setField(out, rng, rng.pick(seed.zip!.fields));
        bytes = out;
        break;
      }
      case "dir":
        [bytes, what] = zipDirEdit(seed, rng);
        break;
      case "pickle":
        if (seed.kind === "zip") {
          const [pkl, w] = mutatePickle(seed.entries![seed.pklIndex!].data, seed.pkl!, rng, "data.pkl");
          bytes = repack(seed, pkl);
          what = w;
        } else {
          const which = rng.chance(0.6) ? 3 : below(rng, 5);
          [bytes, what] = mutatePickle(bytes, seed.legacy!.pickles[which], rng, `pickle ${which}`);
        }
        break;
      case "count": {
        const out = bytes.slice();
        what = setField(out, rng, rng.pick(seed.legacy!.counts));
        bytes = out;
        break;
      }
      case "hlen": {
        const out = bytes.slice();
        what = setField(out, rng, { at: 0, width: 8, name: "header length", value: seed.st!.headerLen });
        bytes = out;
        break;
      }
      case "json":
        [bytes, what] = stEdit(seed, rng);
        break;
      default:
        [bytes, what] = generic(bytes, rng, seed.regions, corpus);
    }
    steps.push(what);
  }
  return { seed, mutant: { bytes, steps } };
}
