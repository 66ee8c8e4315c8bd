/**
 * Reading PyTorch checkpoints (`torch.save` files) without Python and without executing any pickle code.
 *
 * The format is detected from the bytes, never the extension: a zip archive (torch >= 1.6; `.pth.tar` files
 * are zips too) or the legacy stream (magic number, protocol, sys info, main pickle, storage keys, raw
 * storages). Tensors come back as lazy {@link TorchTensor} records; their bytes are read (and bounds-checked)
 * only when materialised, so a file can be inspected or half-converted without reading all of it.
 *
 * @module
 */

import { CheckpointError } from "../src/core/errors.ts";
import { isDeno, readBytes } from "../src/core/platform.ts";
import { readRegularFile } from "../src/core/files.ts";
import {
  keyText,
  NeedMoreData,
  PyDict,
  pyRepr,
  pyTypeName,
  type PyValue,
  unpickle,
  type UnpickleOptions,
} from "./pickle.ts";
import { type ByteSource, FileSource, MemorySource } from "./source.ts";
import {
  resolveTorchGlobal,
  type StorageBacking,
  storageClassDType,
  TorchStorage,
  TorchTensor,
} from "./torch_globals.ts";
import { isZip, ZipArchive, type ZipEntry } from "./zip.ts";

/** The two serialization formats of `torch.save`. */
export type CheckpointFormat = "zip" | "legacy";

/** The legacy format's magic number (pickled first in every legacy file). */
export const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
/** The legacy format's protocol version. */
export const LEGACY_PROTOCOL = 1001;

/** A parsed checkpoint: the unpickled object tree (tensors as lazy {@link TorchTensor}s) and its provenance. */
export class Checkpoint implements Disposable {
  /** File path or label. */
  readonly file: string;
  /** Serialization format. */
  readonly format: CheckpointFormat;
  /** The unpickled object (usually a dict). */
  readonly root: PyValue;
  /** Zip archives: the record folder (`archive`, or the saved file's stem such as `t2t_vit_7.pth`). */
  readonly recordPrefix: string | null;
  /** Byte order of the tensor data (zip `byteorder` record; legacy data is always little-endian). */
  readonly byteOrder: "little" | "big";
  /** Pickle protocol of the main pickle. */
  readonly protocol: number;
  /** The bytes behind the tensors. */
  readonly source: ByteSource;

  /** @internal built by {@link parseCheckpoint} and {@link openCheckpoint}. */
  constructor(init: {
    file: string;
    format: CheckpointFormat;
    root: PyValue;
    recordPrefix: string | null;
    byteOrder: "little" | "big";
    protocol: number;
    source: ByteSource;
  }) {
    this.file = init.file;
    this.format = init.format;
    this.root = init.root;
    this.recordPrefix = init.recordPrefix;
    this.byteOrder = init.byteOrder;
    this.protocol = init.protocol;
    this.source = init.source;
  }

  /** Closes the underlying file (checkpoints opened with {@link openCheckpoint}). */
  close(): void {
    this.source.close();
  }

  /** Same as {@link Checkpoint.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Names the format of a file from its first bytes: `zip`, `legacy`, or a description of what else it is.
 *
 * @example
 * ```ts
 * import { sniffFormat } from "./checkpoint.ts";
 * sniffFormat(new Uint8Array([0x50, 0x4b, 3, 4])); // "zip"
 * ```
 */
export function sniffFormat(
  head: Uint8Array,
): CheckpointFormat | "safetensors" | "tar" | "pickle" | "unknown" {
  if (isZip(head)) return "zip";
  if (head.length >= 2 && head[0] === 0x80 && head[1] <= 5) {
    // A legacy file starts with a pickle of its magic number (framed with protocol >= 4).
    try {
      const first = unpickle(head, { resolveGlobal: () => undefined });
      if (first.value === LEGACY_MAGIC) return "legacy";
    } catch {
      // not a small leading pickle: some other pickle
    }
  }
  if (head.length >= 262 && new TextDecoder().decode(head.subarray(257, 262)) === "ustar") return "tar";
  if (head.length >= 9 && head[8] === 0x7b) {
    const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
    if (n > 1n && n < 100_000_000n) return "safetensors";
  }
  if (head.length >= 2 && head[0] === 0x80 && head[1] <= 5) return "pickle";
  return "unknown";
}

function describeFormatProblem(kind: string): string {
  switch (kind) {
    case "safetensors":
      return "this is already a safetensors file, not a PyTorch checkpoint";
    case "tar":
      return "tar-based checkpoints (PyTorch < 0.4) are not supported; re-save with a newer torch";
    case "pickle":
      return "a plain pickle, not a torch.save checkpoint (no legacy magic number)";
    default:
      return "not a PyTorch checkpoint (neither a zip archive nor the legacy torch.save format)";
  }
}

/**
 * Parses a checkpoint held in memory. Tensor data stays in `bytes` and is viewed, not copied.
 *
 * @param bytes the whole file
 * @param file name for error messages
 * @throws {UnsafePickleError} when the pickle names a global outside the allowlist (nothing is executed)
 * @throws {CheckpointError} for anything malformed
 *
 * @example
 * ```ts ignore
 * import { parseCheckpoint } from "./checkpoint.ts";
 * const ckpt = parseCheckpoint(await Deno.readFile("tiny-state-dict.pth"), "tiny-state-dict.pth");
 * console.log(ckpt.format); // "zip"
 * ```
 */
export function parseCheckpoint(bytes: Uint8Array, file = "<memory>"): Checkpoint {
  return load(new MemorySource(bytes, file));
}

/**
 * Opens a checkpoint file for streaming: only the directory and pickle are read now; tensor bytes are read
 * with positioned reads when materialised. Close it (or use `using`) when done.
 *
 * @throws {UnsafePickleError} when the pickle names a global outside the allowlist (nothing is executed)
 * @throws {CheckpointError} for anything malformed
 *
 * @example
 * ```ts ignore
 * import { openCheckpoint } from "./checkpoint.ts";
 * using ckpt = openCheckpoint("81.5_T2T_ViT_14.pth.tar");
 * console.log(ckpt.format, ckpt.recordPrefix);
 * ```
 */
export function openCheckpoint(path: string): Checkpoint {
  const src = FileSource.open(path);
  try {
    return load(src);
  } catch (e) {
    src.close();
    throw e;
  }
}

/**
 * Reads a checkpoint from a path (whole file into memory) or from bytes. The result needs no closing.
 *
 * @example
 * ```ts ignore
 * import { readCheckpoint } from "./checkpoint.ts";
 * const ckpt = await readCheckpoint("t2t_vit_7.pth.tar");
 * console.log((ckpt.root as Map<unknown, unknown>).keys());
 * ```
 */
export async function readCheckpoint(input: string | Uint8Array, file?: string): Promise<Checkpoint> {
  if (typeof input !== "string") return parseCheckpoint(input, file);
  let bytes: Uint8Array;
  if (isDeno() && !/^(https?|blob|data|file):/i.test(input)) {
    // a local path: refused before opening unless it is a regular file (a FIFO would block, a device never end)
    bytes = await readRegularFile(input, (msg, cause) => {
      throw new CheckpointError(msg, { file: input, cause });
    });
  } else {
    try {
      bytes = await readBytes(input);
    } catch (e) {
      throw new CheckpointError(`cannot read: ${(e as Error).message}`, { file: input, cause: e });
    }
  }
  return parseCheckpoint(bytes, file ?? input);
}

function load(src: ByteSource): Checkpoint {
  const head = src.read(0, Math.min(src.size, 512));
  if (head.length === 0) throw new CheckpointError("file is empty", { file: src.name });
  const kind = sniffFormat(head);
  if (kind === "zip") return loadZip(src);
  if (kind === "legacy") return loadLegacy(src);
  throw new CheckpointError(describeFormatProblem(kind), { file: src.name });
}

// ---------------------------------------------------------------------------------------------------------
// zip format

function persistentTuple(pid: PyValue, n: number[], file: string, offset: number): readonly PyValue[] {
  if (!Array.isArray(pid) || !n.includes(pid.length) || pid[0] !== "storage") {
    throw new CheckpointError(
      `pickle: persistent id ${pyTypeName(pid)}${Array.isArray(pid) ? `(${pid.length})` : ""} is not a ` +
        `('storage', type, key, location, numel${n.includes(6) ? ", view" : ""}) tuple (at byte ${offset})`,
      { file, offset },
    );
  }
  return pid;
}

function loadZip(src: ByteSource): Checkpoint {
  const file = src.name;
  const zip = ZipArchive.open(src);
  // torch names records "<stem>/data.pkl" where <stem> is the saved file's name less its last extension
  // ("archive" for files saved to buffers); find it rather than assuming.
  const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length === 0) {
    const n = zip.entries.size;
    throw new CheckpointError(
      `zip archive with ${n} entries has no <folder>/data.pkl record: not a torch.save checkpoint`,
      { file },
    );
  }
  if (pkls.length > 1) {
    throw new CheckpointError(`zip archive has ${pkls.length} data.pkl records (${pkls.join(", ")})`, {
      file,
    });
  }
  const prefix = pkls[0].slice(0, -"/data.pkl".length);
  const entry = (name: string): ZipEntry | undefined => zip.entries.get(`${prefix}/${name}`);
  const small = (e: ZipEntry, what: string): Uint8Array => {
    if (e.size > 64) {
      throw new CheckpointError(`${what} record holds ${e.size} bytes, not a few characters`, {
        file,
        key: e.name,
      });
    }
    return zip.read(e);
  };
  const ver = entry("version") ?? entry(".data/version");
  if (ver) {
    // torch refuses unknown archive versions; we read the record so damage to it is noticed, and accept any
    // integer (the data layout has not changed across versions 1-3).
    const text = new TextDecoder().decode(small(ver, "version")).trim();
    if (!/^\d{1,6}$/.test(text)) {
      throw new CheckpointError(`version record says '${text.slice(0, 20)}', not a version number`, { file });
    }
  }
  let byteOrder: "little" | "big" = "little";
  const bo = entry("byteorder");
  if (bo) {
    const text = new TextDecoder().decode(small(bo, "byteorder")).trim();
    if (text !== "little" && text !== "big") {
      throw new CheckpointError(`byteorder record says '${text.slice(0, 20)}', not 'little' or 'big'`, {
        file,
      });
    }
    byteOrder = text;
  }
  const pkl = zip.read(zip.entries.get(pkls[0])!);
  const storages = new Map<string, TorchStorage>();
  const { value, protocol } = unpickle(pkl, {
    file,
    record: pkls[0],
    resolveGlobal: resolveTorchGlobal,
    persistentLoad: (pid, ctx) => {
      const t = persistentTuple(pid, [5], file, ctx.offset);
      const [, cls, key, location, numel] = t;
      const dtype = storageClassDType(cls);
      if (!dtype) {
        throw new CheckpointError(
          `pickle: persistent id names storage type ${pyTypeName(cls)}, not a torch storage class`,
          { file, offset: ctx.offset },
        );
      }
      if (typeof key !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(key)) {
        throw new CheckpointError(`pickle: bad storage key ${pyRepr(key)}`, {
          file,
        });
      }
      if (typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) {
        throw new CheckpointError(`pickle: storage '${key}' has a bad element count ${pyRepr(numel)}`, {
          file,
        });
      }
      const cacheKey = `${key}:${dtype.name}`;
      const have = storages.get(cacheKey);
      if (have) return have;
      const name = `${prefix}/data/${key}`;
      const rec = zip.entries.get(name);
      if (!rec) throw new CheckpointError(`missing storage record '${name}'`, { file, key: name });
      const nbytes = numel * dtype.itemSize;
      if (!Number.isSafeInteger(nbytes) || rec.size !== nbytes) {
        throw new CheckpointError(
          `storage record '${name}' holds ${rec.size} bytes but the pickle declares ${numel} ${dtype.name} ` +
            `elements (${nbytes} bytes)`,
          { file, key: name },
        );
      }
      // Each read costs the bytes it returns: the record's CRC is checked once, deflated records are
      // inflated once (cached) and every inflation counts against the archive's budget.
      const backing: StorageBacking = {
        shared: true,
        bytes: (start, length) => zip.readRange(rec, start, length),
      };
      const s = new TorchStorage(
        key,
        dtype,
        keyText(location),
        nbytes,
        backing,
        byteOrder === "big",
      );
      storages.set(cacheKey, s);
      return s;
    },
  });
  return new Checkpoint({
    file,
    format: "zip",
    root: value,
    recordPrefix: prefix,
    byteOrder,
    protocol,
    source: src,
  });
}

// ---------------------------------------------------------------------------------------------------------
// legacy format

/** Unpickles one pickle starting at `offset` of a source, reading more of a file only as needed. */
function unpickleAt(
  src: ByteSource,
  offset: number,
  opts: Omit<UnpickleOptions, "offset" | "partial" | "available">,
): { value: PyValue; end: number; protocol: number } {
  const left = src.size - offset;
  if (src.inMemory) {
    const all = src.read(0, src.size);
    return unpickle(all, { ...opts, offset });
  }
  let chunk = Math.min(left, 1 << 20);
  for (;;) {
    const bytes = src.read(offset, chunk);
    try {
      const r = unpickle(bytes, { ...opts, partial: chunk < left, available: left });
      return { ...r, end: offset + r.end };
    } catch (e) {
      if (!(e instanceof NeedMoreData)) throw e;
      chunk = Math.min(left, chunk * 4);
    }
  }
}

function loadLegacy(src: ByteSource): Checkpoint {
  const file = src.name;
  const refuse = () => undefined;
  const magic = unpickleAt(src, 0, { file, resolveGlobal: refuse });
  if (magic.value !== LEGACY_MAGIC) {
    throw new CheckpointError("legacy magic number is wrong: not a torch.save file", { file });
  }
  const proto = unpickleAt(src, magic.end, { file, resolveGlobal: refuse });
  if (proto.value !== LEGACY_PROTOCOL) {
    throw new CheckpointError(`legacy protocol version ${pyRepr(proto.value)} is not ${LEGACY_PROTOCOL}`, {
      file,
    });
  }
  const sys = unpickleAt(src, proto.end, { file, resolveGlobal: refuse });
  if (!(sys.value instanceof PyDict)) throw new CheckpointError("legacy sys_info is not a dict", { file });

  const roots = new Map<string, TorchStorage>();
  const views = new Map<string, TorchStorage>();
  const offsets = new Map<string, number>(); // root key -> file offset of its data
  const rootBacking = (key: string): StorageBacking => ({
    shared: src.inMemory,
    bytes: (start, length) => {
      const at = offsets.get(key);
      if (at === undefined) throw new CheckpointError(`storage '${key}' has no data`, { file, key });
      return src.read(at + start, length);
    },
  });
  const main = unpickleAt(src, sys.end, {
    file,
    resolveGlobal: resolveTorchGlobal,
    persistentLoad: (pid, ctx) => {
      if (Array.isArray(pid) && pid[0] === "module") {
        throw new CheckpointError(
          "the file pickles a whole nn.Module ('module' persistent id), not weights; save its state_dict",
          { file, offset: ctx.offset },
        );
      }
      const t = persistentTuple(pid, [6], file, ctx.offset);
      const [, cls, rootKey, location, numel, view] = t;
      const dtype = storageClassDType(cls);
      if (!dtype) {
        throw new CheckpointError(
          `pickle: persistent id names storage type ${pyTypeName(cls)}, not a torch storage class`,
          { file, offset: ctx.offset },
        );
      }
      if (typeof rootKey !== "string" || rootKey.length > 64) {
        throw new CheckpointError(`pickle: bad storage key ${pyTypeName(rootKey)}`, {
          file,
          offset: ctx.offset,
        });
      }
      if (typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) {
        throw new CheckpointError(`pickle: storage '${rootKey}' has a bad element count ${pyRepr(numel)}`, {
          file,
        });
      }
      const nbytes = numel * dtype.itemSize;
      if (nbytes > src.size) {
        throw new CheckpointError(
          `storage '${rootKey}' declares ${nbytes} bytes, more than the whole file (${src.size})`,
          { file, key: rootKey },
        );
      }
      let root = roots.get(rootKey);
      if (!root) {
        root = new TorchStorage(rootKey, dtype, keyText(location), nbytes, rootBacking(rootKey));
        roots.set(rootKey, root);
      } else if (root.dtype !== dtype || root.nbytes !== nbytes) {
        throw new CheckpointError(`storage '${rootKey}' is declared twice with different types or sizes`, {
          file,
          key: rootKey,
        });
      }
      if (view === null) return root;
      // (view_key, offset, view_size) in elements: an old-style storage slice
      if (!Array.isArray(view) || view.length !== 3 || typeof view[0] !== "string") {
        throw new CheckpointError(`pickle: storage view metadata is a ${pyTypeName(view)}`, { file });
      }
      const [viewKey, off, size] = view;
      const have = views.get(viewKey);
      if (have) return have;
      if (
        typeof off !== "number" || typeof size !== "number" || !Number.isSafeInteger(off) ||
        !Number.isSafeInteger(size) || off < 0 || size < 0 || off + size > numel
      ) {
        throw new CheckpointError(
          `storage view '${viewKey}' (${pyRepr(off)}, ${pyRepr(size)}) is outside '${rootKey}'`,
          {
            file,
            key: viewKey,
          },
        );
      }
      const r = root;
      const s = new TorchStorage(viewKey, dtype, keyText(location), size * dtype.itemSize, {
        shared: src.inMemory,
        bytes: (start, length) => r.backing!.bytes(off * dtype.itemSize + start, length),
      });
      views.set(viewKey, s);
      return s;
    },
  });
  const keys = unpickleAt(src, main.end, { file, resolveGlobal: refuse });
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === "string")) {
    throw new CheckpointError("legacy storage key list is not a list of strings", { file });
  }
  let pos = keys.end;
  for (const key of keys.value as string[]) {
    const s = roots.get(key);
    if (!s) {
      throw new CheckpointError(`storage key list names '${key}', which the pickle never used`, {
        file,
        key,
      });
    }
    if (offsets.has(key)) throw new CheckpointError(`storage '${key}' is listed twice`, { file, key });
    const head = src.read(pos, 8);
    const dv = new DataView(head.buffer, head.byteOffset, 8);
    const count = dv.getBigInt64(0, true);
    const nbytes = BigInt(s.nbytes);
    if (count * BigInt(s.dtype.itemSize) !== nbytes) {
      throw new CheckpointError(
        `storage '${key}' holds ${count} elements on disk but the pickle declares ${
          s.nbytes / s.dtype.itemSize
        }`,
        { file, key, offset: pos },
      );
    }
    if (pos + 8 + s.nbytes > src.size) {
      throw new CheckpointError(
        `truncated: storage '${key}' needs bytes ${pos + 8}..${
          pos + 8 + s.nbytes
        } but the file has ${src.size}`,
        { file, key, offset: pos },
      );
    }
    offsets.set(key, pos + 8);
    pos += 8 + s.nbytes;
  }
  for (const key of roots.keys()) {
    if (!offsets.has(key)) {
      throw new CheckpointError(`missing storage record: '${key}' is used but has no data`, { file, key });
    }
  }
  return new Checkpoint({
    file,
    format: "legacy",
    root: main.value,
    recordPrefix: null,
    byteOrder: "little",
    protocol: main.protocol,
    source: src,
  });
}

/** Every tensor reachable from `value` (depth-limited, cycle-safe), with a path like `optimizer/state/0/exp_avg`. */
export function* walkTensors(value: PyValue, maxDepth = 16): Generator<[string, TorchTensor]> {
  const seen = new Set<unknown>();
  const stack: [PyValue, string, number][] = [[value, "", 0]];
  while (stack.length) {
    const [v, path, depth] = stack.pop()!;
    if (v instanceof TorchTensor) {
      yield [path, v];
      continue;
    }
    if (v === null || typeof v !== "object" || seen.has(v) || depth >= maxDepth) continue;
    seen.add(v);
    const kids: [PyValue, string][] = [];
    if (v instanceof Map) {
      for (const [k, c] of v) kids.push([c, path ? `${path}/${keyText(k)}` : keyText(k)]);
    } else if (Array.isArray(v)) v.forEach((c, i) => kids.push([c, path ? `${path}/${i}` : String(i)]));
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i][0], kids[i][1], depth + 1]);
  }
}

export { TorchStorage, TorchTensor };
