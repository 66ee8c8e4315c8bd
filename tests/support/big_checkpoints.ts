/**
 * Full-size checkpoints for the converter's tests, built from `fill()` and streamed to disk tensor by tensor
 * in the layouts users have (the official release file, a training save with optimizer state, the CIFAR
 * transfer save in the legacy format, bare float16 / bfloat16 state dicts, views of one flat storage).
 * Zip files are written as PyTorch's writer writes them (stored records named after the file's stem, data
 * aligned to 64 bytes with an `FB` padding field, sizes in data descriptors, ZIP64 end records); nothing
 * here uses the package's own writers. Test-only.
 */

import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { fill } from "../../src/core/fill.ts";
import { LEGACY_MAGIC } from "../../converters/checkpoint.ts";
import { OP, Pickle } from "./checkpoint_builders.ts";

const enc = new TextEncoder();

/** The layouts {@link buildCheckpoint} writes. */
export type Layout = "release" | "training" | "cifar-legacy" | "views" | "fp16" | "bf16-legacy";

/** What the converter should find in a built checkpoint. */
export interface BuiltCheckpoint {
  /** The file. */
  path: string;
  /** The key the converter should take the weights from (null: the top level). */
  weightsKey: string | null;
  /** The dtype the converter keeps (`F32`, `F16`, `BF16`). */
  dtype: "F32" | "F16" | "BF16";
  /** Its size in bytes. */
  bytes: number;
}

/** float32 values rounded to float16 (V8's `Float16Array`, an oracle independent of the package). */
export function toF16Bytes(v: Float32Array): Uint8Array {
  // deno-lint-ignore no-explicit-any
  const F16 = (globalThis as any).Float16Array as new (a: ArrayLike<number>) => ArrayBufferView;
  const h = new F16(v);
  return new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
}

/** float32 values rounded to bfloat16, to nearest even (no NaNs in fill()). */
export function toBf16Bytes(v: Float32Array): Uint8Array {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  const out = new Uint16Array(v.length);
  for (let i = 0; i < u.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
  return new Uint8Array(out.buffer);
}

/** Values of a tensor by name and shape (`fill`, or a cache of it). */
export type Values = (name: string, shape: number[]) => Float32Array;

/** The bytes a tensor holds in a layout's dtype. */
export function expectedBytes(
  name: string,
  shape: number[],
  dtype: "F32" | "F16" | "BF16",
  values: Values = fill,
): Uint8Array {
  const v = values(name, shape);
  if (dtype === "F16") return toF16Bytes(v);
  if (dtype === "BF16") return toBf16Bytes(v);
  return new Uint8Array(v.buffer);
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function contiguous(shape: number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** A buffered file writer. */
class Out {
  pos = 0;
  private buf = new Uint8Array(1 << 20);
  private n = 0;
  constructor(private f: Deno.FsFile) {}
  write(b: Uint8Array): void {
    if (b.length > this.buf.length - this.n) this.flush();
    if (b.length >= this.buf.length) this.direct(b);
    else {
      this.buf.set(b, this.n);
      this.n += b.length;
    }
    this.pos += b.length;
  }
  private direct(b: Uint8Array): void {
    let o = 0;
    while (o < b.length) o += this.f.writeSync(b.subarray(o));
  }
  flush(): void {
    if (this.n) this.direct(this.buf.subarray(0, this.n));
    this.n = 0;
  }
}

/** Streams a zip archive the way PyTorch's writer does. */
class ZipStream {
  private central: { name: Uint8Array; crc: number; size: number; offset: number }[] = [];
  private cur: { name: Uint8Array; crc: number; size: number; offset: number } | null = null;
  constructor(private out: Out) {}
  begin(name: string): void {
    const nameBytes = enc.encode(name);
    const offset = this.out.pos;
    const start = offset + 30 + nameBytes.length + 4;
    const pad = (64 - (start % 64)) % 64;
    const h = new Uint8Array(30 + nameBytes.length + 4 + pad);
    const dv = new DataView(h.buffer);
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(6, 0x0808, true); // sizes in a data descriptor, UTF-8
    dv.setUint16(26, nameBytes.length, true);
    dv.setUint16(28, 4 + pad, true);
    h.set(nameBytes, 30);
    dv.setUint16(30 + nameBytes.length, 0x4246, true);
    dv.setUint16(32 + nameBytes.length, pad, true);
    h.fill(0x5a, 34 + nameBytes.length);
    this.out.write(h);
    this.cur = { name: nameBytes, crc: 0, size: 0, offset };
  }
  data(b: Uint8Array): void {
    const c = this.cur!;
    c.crc = zlib.crc32(Buffer.from(b.buffer, b.byteOffset, b.byteLength), c.crc) >>> 0;
    c.size += b.length;
    this.out.write(b);
  }
  end(): void {
    const c = this.cur!;
    const d = new Uint8Array(16);
    const dv = new DataView(d.buffer);
    dv.setUint32(0, 0x08074b50, true);
    dv.setUint32(4, c.crc, true);
    dv.setUint32(8, c.size, true);
    dv.setUint32(12, c.size, true);
    this.out.write(d);
    this.central.push(c);
    this.cur = null;
  }
  record(name: string, b: Uint8Array): void {
    this.begin(name);
    this.data(b);
    this.end();
  }
  finish(): void {
    const cdStart = this.out.pos;
    for (const e of this.central) {
      const c = new Uint8Array(46 + e.name.length);
      const dv = new DataView(c.buffer);
      dv.setUint32(0, 0x02014b50, true);
      dv.setUint16(8, 0x0808, true);
      dv.setUint32(16, e.crc, true);
      dv.setUint32(20, e.size, true);
      dv.setUint32(24, e.size, true);
      dv.setUint16(28, e.name.length, true);
      dv.setUint32(42, e.offset, true);
      c.set(e.name, 46);
      this.out.write(c);
    }
    const cdSize = this.out.pos - cdStart;
    const n = this.central.length;
    const z64 = this.out.pos;
    const t = new Uint8Array(56 + 20 + 22);
    const dv = new DataView(t.buffer);
    dv.setUint32(0, 0x06064b50, true);
    dv.setBigUint64(4, 44n, true);
    dv.setUint16(12, 0x031e, true);
    dv.setUint16(14, 45, true);
    dv.setBigUint64(24, BigInt(n), true);
    dv.setBigUint64(32, BigInt(n), true);
    dv.setBigUint64(40, BigInt(cdSize), true);
    dv.setBigUint64(48, BigInt(cdStart), true);
    dv.setUint32(56, 0x07064b50, true);
    dv.setBigUint64(64, BigInt(z64), true);
    dv.setUint32(72, 1, true);
    dv.setUint32(76, 0x06054b50, true);
    dv.setUint16(84, Math.min(n, 0xffff), true);
    dv.setUint16(86, Math.min(n, 0xffff), true);
    dv.setUint32(88, cdSize, true);
    dv.setUint32(92, cdStart, true);
    this.out.write(t);
  }
}

/** A storage to write: its key, class, element count and (lazily made) bytes. */
interface Storage {
  key: string;
  cls: string;
  numel: number;
  bytes: () => Uint8Array;
}

/** Pickles a tensor as torch.save does (`_rebuild_tensor_v2` on a persistent storage id). */
function tensor(
  p: Pickle,
  s: Storage,
  shape: number[],
  opts: { offset?: number; stride?: number[]; legacy?: boolean } = {},
): void {
  p.global("torch._utils", "_rebuild_tensor_v2");
  p.mark();
  p.mark().str("storage").global("torch", s.cls).str(s.key).str("cpu").int(s.numel);
  if (opts.legacy) p.none();
  p.tuple().binpersid();
  p.int(opts.offset ?? 0).value(shape).value(opts.stride ?? contiguous(shape)).bool(false);
  p.global("collections", "OrderedDict").emptyTuple().reduce();
  p.tuple().reduce();
}

/** A dict (or OrderedDict) from entries whose values write themselves. */
function dict(p: Pickle, entries: [string | number, () => void][], ordered = false): void {
  if (ordered) p.global("collections", "OrderedDict").emptyTuple().reduce();
  else p.dict();
  if (!entries.length) return;
  p.mark();
  for (const [k, v] of entries) {
    p.value(k);
    v();
  }
  p.setitems();
}

function namespace(p: Pickle, fields: Record<string, unknown>): void {
  p.global("argparse", "Namespace").emptyTuple().newobj();
  p.value(new Map(Object.entries(fields))).build();
}

function writeZip(path: string, pickle: Uint8Array, storages: Storage[]): void {
  const f = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    const out = new Out(f);
    const z = new ZipStream(out);
    const stem = path.split("/").pop()!.replace(/\.[^.]*$/, "");
    z.record(`${stem}/data.pkl`, pickle);
    for (const s of storages) z.record(`${stem}/data/${s.key}`, s.bytes());
    z.record(`${stem}/version`, enc.encode("3\n"));
    z.finish();
    out.flush();
  } finally {
    f.close();
  }
}

function writeLegacy(path: string, pickle: Uint8Array, storages: Storage[]): void {
  const f = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    const out = new Out(f);
    out.write(new Pickle().proto(2).int(LEGACY_MAGIC).stop().bytesOut());
    out.write(new Pickle().proto(2).int(1001).stop().bytesOut());
    out.write(
      new Pickle().proto(2).value(
        new Map<string, unknown>([
          ["protocol_version", 1001],
          ["little_endian", true],
          ["type_sizes", new Map([["short", 2], ["int", 4], ["long", 4]])],
        ]),
      ).stop().bytesOut(),
    );
    out.write(pickle);
    const keys = new Pickle().proto(2).list().mark();
    for (const s of storages) keys.str(s.key);
    out.write(keys.raw(OP.APPENDS).stop().bytesOut());
    for (const s of storages) {
      const n = new Uint8Array(8);
      new DataView(n.buffer).setBigInt64(0, BigInt(s.numel), true);
      out.write(n);
      out.write(s.bytes());
    }
    out.flush();
  } finally {
    f.close();
  }
}

/**
 * Writes a full-size checkpoint of `stateDict` (manifest keys and shapes, values `fill(key, shape)`) in
 * `layout` to `path`, streaming storage by storage (memory: about the largest storage).
 */
export function buildCheckpoint(
  path: string,
  layout: Layout,
  stateDict: [string, number[]][],
  info: { arch: string; imgSize: number },
  values: Values = fill,
): BuiltCheckpoint {
  const storages: Storage[] = [];
  const f32 = (key: string, name: string, shape: number[], flip = false): Storage => ({
    key,
    cls: "FloatStorage",
    numel: numel(shape),
    bytes: () => {
      const v = fill(name, shape);
      // state_dict differs from state_dict_ema (sign flipped) so picking the wrong one is caught
      if (flip) { for (let i = 0; i < v.length; i++) v[i] = -v[i]; }
      return new Uint8Array(v.buffer);
    },
  });
  const zeros = (key: string, shape: number[]): Storage => ({
    key,
    cls: "FloatStorage",
    numel: numel(shape),
    bytes: () => new Uint8Array(4 * numel(shape)),
  });
  const args = {
    model: info.arch,
    img_size: info.imgSize,
    lr: 0.001,
    weight_decay: 0.05,
    epochs: 310,
    model_ema: true,
    model_ema_decay: 0.99996,
    drop_path: 0.1,
  };
  const p = new Pickle().proto(2);
  const stateDictOf = (prefix: string, make: (k: string, shape: number[], i: number) => Storage) => () =>
    dict(
      p,
      stateDict.map(([k, shape], i) => [prefix + k, () => {
        const s = make(k, shape, i);
        storages.push(s);
        tensor(p, s, shape);
      }]),
      true,
    );
  let weightsKey: string | null;
  let dtype: BuiltCheckpoint["dtype"] = "F32";
  let legacy = false;
  const n = stateDict.length;
  switch (layout) {
    case "release":
    case "training": {
      // timm's CheckpointSaver: epoch, arch, state_dict, [optimizer], version, args, metric, state_dict_ema
      weightsKey = "state_dict_ema";
      const entries: [string, () => void][] = [
        ["epoch", () => p.int(309)],
        ["arch", () => p.str(info.arch)],
        ["state_dict", stateDictOf("", (k, shape, i) => f32(String(i), k, shape, true))],
      ];
      if (layout === "training") {
        // AdamW state of every parameter: step, exp_avg, exp_avg_sq (full size)
        entries.push(["optimizer", () =>
          dict(p, [
            ["state", () =>
              dict(
                p,
                stateDict.map(([, shape], i) => [i, () =>
                  dict(p, [
                    ["step", () => {
                      const s: Storage = {
                        key: `s${i}`,
                        cls: "FloatStorage",
                        numel: 1,
                        bytes: () => new Uint8Array(new Float32Array([1234]).buffer),
                      };
                      storages.push(s);
                      tensor(p, s, []);
                    }],
                    ["exp_avg", () => {
                      const s = zeros(`a${i}`, shape);
                      storages.push(s);
                      tensor(p, s, shape);
                    }],
                    ["exp_avg_sq", () => {
                      const s = zeros(`b${i}`, shape);
                      storages.push(s);
                      tensor(p, s, shape);
                    }],
                  ])]
                ),
              )],
            ["param_groups", () => {
              p.list().mark();
              dict(p, [
                ["lr", () => p.float(0.001)],
                ["betas", () => p.value([0.9, 0.999])],
                ["eps", () => p.float(1e-8)],
                ["weight_decay", () => p.float(0.05)],
                ["amsgrad", () => p.bool(false)],
                ["params", () => {
                  p.list().mark();
                  for (let i = 0; i < n; i++) p.int(i);
                  p.raw(OP.APPENDS);
                }],
              ]);
              p.raw(OP.APPENDS);
            }],
          ])]);
        entries.push([
          "amp_scaler",
          () =>
            dict(p, [["scale", () => p.float(65536)], ["growth_factor", () => p.float(2)], [
              "_growth_tracker",
              () => p.int(1234),
            ]]),
        ]);
      }
      entries.push(
        ["version", () => p.int(2)],
        ["args", () => namespace(p, args)],
        ["metric", () => p.float(81.5)],
        ["state_dict_ema", stateDictOf("", (k, shape, i) => f32(String(n + i), k, shape))],
      );
      dict(p, entries);
      break;
    }
    case "cifar-legacy": {
      // the official transfer_learning.py: torch.save({'net': net.state_dict(), 'acc', 'epoch'}) of a
      // DataParallel model, in the legacy format
      weightsKey = "net";
      legacy = true;
      dict(p, [
        ["net", () =>
          dict(
            p,
            stateDict.map(([k, shape], i) => ["module." + k, () => {
              const s = f32(String(94000000 + i), k, shape);
              storages.push(s);
              tensor(p, s, shape, { legacy: true });
            }]),
            true,
          )],
        ["acc", () => p.float(97.51)],
        ["epoch", () => p.int(59)],
      ]);
      break;
    }
    case "views": {
      // every tensor a view of one flat storage (as after flattening parameters into one buffer); the
      // largest 2-D weight is stored transposed and viewed through strides
      weightsKey = "state_dict";
      let total = 0;
      const offsets: number[] = [];
      for (const [, shape] of stateDict) {
        offsets.push(total);
        total += numel(shape);
      }
      let tIdx = -1;
      stateDict.forEach(([, shape], i) => {
        if (shape.length === 2 && (tIdx < 0 || numel(shape) > numel(stateDict[tIdx][1]))) tIdx = i;
      });
      const flat: Storage = {
        key: "0",
        cls: "FloatStorage",
        numel: total,
        bytes: () => {
          const all = new Float32Array(total);
          stateDict.forEach(([k, shape], i) => {
            const v = values(k, shape);
            if (i === tIdx) {
              const [r, c] = shape;
              for (let a = 0; a < r; a++) {
                for (let b = 0; b < c; b++) all[offsets[i] + b * r + a] = v[a * c + b];
              }
            } else all.set(v, offsets[i]);
          });
          return new Uint8Array(all.buffer);
        },
      };
      storages.push(flat);
      dict(p, [["state_dict", () =>
        dict(
          p,
          stateDict.map(([k, shape], i) => [k, () =>
            tensor(p, flat, shape, {
              offset: offsets[i],
              stride: i === tIdx ? [1, shape[0]] : undefined,
            })]
          ),
          true,
        )]]);
      break;
    }
    case "fp16":
    case "bf16-legacy": {
      // a bare state dict (torch.save(model.half().state_dict()))
      weightsKey = null;
      legacy = layout === "bf16-legacy";
      dtype = layout === "fp16" ? "F16" : "BF16";
      const cls = layout === "fp16" ? "HalfStorage" : "BFloat16Storage";
      dict(
        p,
        stateDict.map(([k, shape], i) => [k, () => {
          const s: Storage = {
            key: String(i),
            cls,
            numel: numel(shape),
            bytes: () => expectedBytes(k, shape, dtype, values),
          };
          storages.push(s);
          tensor(p, s, shape, { legacy });
        }]),
        true,
      );
      break;
    }
  }
  const pickle = p.stop().bytesOut();
  if (legacy) writeLegacy(path, pickle, storages);
  else writeZip(path, pickle, storages);
  return { path, weightsKey, dtype, bytes: Deno.statSync(path).size };
}
