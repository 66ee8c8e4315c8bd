/**
 * Checkpoint to safetensors conversion: pick the weights, recognise the architecture, optionally change the
 * float dtype, and write a safetensors file whose metadata records where everything came from. Files are
 * streamed tensor by tensor (peak memory is about one tensor, not the checkpoint), written to a temporary
 * file and renamed into place, and can be verified bit for bit afterwards.
 *
 * @module
 */

import { CheckpointError, SafetensorsError, T2tVitError } from "../src/core/errors.ts";
import { requireDeno } from "../src/core/platform.ts";
import { type Checkpoint, openCheckpoint, parseCheckpoint } from "./checkpoint.ts";
import { FileSource } from "./source.ts";
import { StagedWriter } from "./staged_writer.ts";
import { readSafetensors, safetensorsHeader, serializeSafetensors } from "./safetensors.ts";
import { castFloatInto, type FloatDType } from "../src/core/dtype.ts";
import { TorchTensor } from "./torch_globals.ts";
import { PyDict } from "./pickle.ts";
import { torchArchiveName, TorchZipWriter } from "./torch_writer.ts";
import { type DType, DTYPE_SIZE, type RawTensor, type ShapeMap, type TensorMap } from "../src/core/types.ts";
import { releaseTempFile, sameFile, tempPathFor, trackTempFile, yieldForSignals } from "../src/core/files.ts";
import { checkWeightBytes, type DroppedEntry, selectWeights } from "./weights.ts";

/** `--dtype`: keep each tensor's dtype, or convert floating-point tensors (integer tensors are always kept). */
export type DTypeOption = "keep" | "f32" | "f16" | "bf16";

/** The accepted {@link DTypeOption} values. */
export const DTYPE_OPTIONS: readonly DTypeOption[] = Object.freeze(["keep", "f32", "f16", "bf16"]);

/** Progress of a conversion, reported after each tensor. */
export interface ConvertProgress {
  /** Tensors written so far. */
  tensorsDone: number;
  /** Tensors in total. */
  tensorsTotal: number;
  /** Data bytes written so far. */
  bytesDone: number;
  /** Data bytes in total. */
  bytesTotal: number;
}

/**
 * What a model family makes of a checkpoint's weights (the converter knows file formats, not models): the
 * description the plan records as `architecture`, and the metadata written with the tensors. The zoo's
 * `describeWeights` is the T2T-ViT one.
 */
export type Describe<A> = (
  tensors: ShapeMap,
  hints: (string | null | undefined)[],
) => { architecture: A; metadata: Record<string, string> };

/** Options of {@link planConversion}, {@link convertCheckpoint} and {@link convertToSafetensorsBytes}. */
export interface ConvertOptions<A = null> {
  /**
   * Recognises the model (default: none; the plan's `architecture` is then null and the metadata only says
   * where the weights came from). Hints are the checkpoint's `arch`/`args.model` and the source file name.
   */
  describe?: Describe<A>;
  /** Take the weights from this key instead of the default choice (see `selectWeights`). */
  key?: string;
  /** Output float dtype (default `keep`). */
  dtype?: DTypeOption;
  /** The source file name recorded in metadata (default: the checkpoint's file name without directories). */
  sourceName?: string;
}

/** One tensor of a planned conversion. */
export interface PlannedTensor {
  /** state_dict name (prefix stripped). */
  name: string;
  /** Its dtype in the checkpoint (torch name, e.g. `float32`). */
  sourceDtype: string;
  /** Its dtype in the output. */
  dtype: DType;
  /** Shape. */
  shape: number[];
  /** Output bytes. */
  nbytes: number;
  /** The checkpoint's tensor record. */
  tensor: TorchTensor;
}

/** What a conversion will do: chosen weights, detected architecture, output tensors and metadata. */
export interface ConversionPlan<A = null> {
  /** The checkpoint file. */
  file: string;
  /** Its format. */
  format: "zip" | "legacy";
  /** Where the weights come from (null: the top level). */
  weightsKey: string | null;
  /** Prefix stripped from every name, if any. */
  strippedPrefix: string | null;
  /** What was not converted. */
  dropped: DroppedEntry[];
  /** What `describe` recognised (null without it). */
  architecture: A;
  /** Output tensors in checkpoint order. */
  tensors: PlannedTensor[];
  /** Output metadata (all strings). */
  metadata: Record<string, string>;
  /** Total output data bytes. */
  dataBytes: number;
}

function basename(p: string): string {
  const parts = p.split(/[\\/]/);
  return parts[parts.length - 1];
}

function outputDtype(src: DType, opt: DTypeOption): DType {
  if (opt === "keep" || !(src === "F32" || src === "F64" || src === "F16" || src === "BF16")) return src;
  return opt === "f32" ? "F32" : opt === "f16" ? "F16" : "BF16";
}

/**
 * The default output path: the input with `.pth.tar`, `.pth`, `.pt`, `.bin`, `.tar` or `.ckpt` replaced by
 * `.safetensors`.
 *
 * @example
 * ```ts
 * import { defaultOutputPath } from "./convert.ts";
 * defaultOutputPath("ckpt/81.5_T2T_ViT_14.pth.tar"); // "ckpt/81.5_T2T_ViT_14.safetensors"
 * ```
 */
export function defaultOutputPath(input: string): string {
  return input.replace(/(\.pth\.tar|\.pth|\.pt|\.bin|\.tar|\.ckpt)$/i, "") + ".safetensors";
}

/**
 * Decides what a conversion will write, reading nothing but the checkpoint's pickle: which weights, which
 * architecture, each output tensor's dtype and size, and the metadata.
 *
 * @throws {CheckpointError} when no weights can be found or a tensor's dtype cannot be written
 *
 * @example
 * ```ts ignore
 * import { openCheckpoint, planConversion } from "./mod.ts";
 * using ckpt = openCheckpoint("t2t_vit_7.pth.tar");
 * const plan = planConversion(ckpt);
 * console.log(plan.weightsKey, plan.tensors.length); // state_dict_ema 111
 * ```
 */
export function planConversion<A = null>(ckpt: Checkpoint, opts: ConvertOptions<A> = {}): ConversionPlan<A> {
  const dtypeOpt = opts.dtype ?? "keep";
  if (!DTYPE_OPTIONS.includes(dtypeOpt)) {
    throw new T2tVitError(`unknown dtype option '${dtypeOpt}' (use ${DTYPE_OPTIONS.join(", ")})`);
  }
  const sel = selectWeights(ckpt.root, { key: opts.key, file: ckpt.file });
  const source = opts.sourceName ?? basename(ckpt.file);
  const described = opts.describe?.(sel.tensors, [sel.archHint, source]);
  const tensors: PlannedTensor[] = [];
  let dataBytes = 0;
  for (const [name, t] of sel.tensors) {
    const src = t.dtype;
    if (!src) {
      throw new CheckpointError(`tensor dtype ${t.torchDtype.name} cannot be written to safetensors`, {
        file: ckpt.file,
        key: name,
      });
    }
    if (name === "__metadata__") {
      throw new CheckpointError("a tensor named '__metadata__' cannot be written to safetensors", {
        file: ckpt.file,
      });
    }
    const dtype = outputDtype(src, dtypeOpt);
    const nbytes = t.numel * DTYPE_SIZE[dtype];
    tensors.push({ name, sourceDtype: t.torchDtype.name, dtype, shape: [...t.shape], nbytes, tensor: t });
    dataBytes += nbytes;
  }
  checkWeightBytes(dataBytes, ckpt.source.size, ckpt.file);
  const metadata: Record<string, string> = {
    format: "pt",
    ...described?.metadata,
    source,
    weights_key: sel.key ?? "",
  };
  if (dtypeOpt !== "keep") metadata.dtype = dtypeOpt;
  return {
    file: ckpt.file,
    format: ckpt.format,
    weightsKey: sel.key,
    strippedPrefix: sel.strippedPrefix,
    dropped: sel.dropped,
    architecture: (described ? described.architecture : null) as A,
    tensors,
    metadata,
    dataBytes,
  };
}

/**
 * Materialises one planned tensor in its output dtype. With `out`, a dtype conversion writes into it (the
 * result is then only valid until `out` is reused).
 */
export function materialize(p: PlannedTensor, file?: string, out?: Uint8Array): RawTensor {
  const raw = p.tensor.read(file);
  if (raw.dtype === p.dtype) return raw;
  return castFloatInto(raw, p.dtype as FloatDType, out);
}

/**
 * Converts a checkpoint held in memory (or already parsed) to safetensors bytes.
 *
 * @example
 * ```ts ignore
 * import { convertToSafetensorsBytes } from "./mod.ts";
 * const { bytes, plan } = convertToSafetensorsBytes(await Deno.readFile("tiny-cifar.pth"), { dtype: "f16" });
 * ```
 */
export function convertToSafetensorsBytes<A = null>(
  input: Uint8Array | Checkpoint,
  opts: ConvertOptions<A> & { file?: string } = {},
): { bytes: Uint8Array; plan: ConversionPlan<A> } {
  const ckpt = input instanceof Uint8Array ? parseCheckpoint(input, opts.file ?? "<memory>") : input;
  const plan = planConversion(ckpt, opts);
  const tensors: TensorMap = new Map();
  for (const p of plan.tensors) tensors.set(p.name, materialize(p, ckpt.file));
  return { bytes: serializeSafetensors(tensors, plan.metadata), plan };
}

/** Options of {@link convertCheckpoint}. */
export interface ConvertFileOptions<A = null> extends ConvertOptions<A> {
  /** Output path (default {@link defaultOutputPath} of the input). */
  output?: string;
  /** Overwrite an existing output (default: refuse). */
  force?: boolean;
  /**
   * Re-read the written file and compare every tensor bit for bit with the checkpoint before it is renamed
   * into place (default true; a failure removes it).
   */
  verify?: boolean;
  /** Called after each tensor is written. */
  onProgress?: (p: ConvertProgress) => void;
}

/** What {@link convertCheckpoint} did. */
export interface ConvertResult<A = null> extends ConversionPlan<A> {
  /** The file written. */
  output: string;
  /** Its size in bytes. */
  outputBytes: number;
  /** True when the output was verified (the default). */
  verified: boolean;
}

/**
 * Converts a checkpoint file to a safetensors file, streaming tensor by tensor through a temporary file that
 * is renamed into place only when complete.
 *
 * @throws {UnsafePickleError} when the checkpoint's pickle reaches a global outside the allowlist
 * @throws {CheckpointError} for malformed checkpoints, missing keys, out-of-bounds tensors
 * @throws {SafetensorsError} when the output exists (without `force`), cannot be written, or fails `verify`
 *
 * @example
 * ```ts ignore
 * import { convertCheckpoint } from "./mod.ts";
 * const r = await convertCheckpoint("81.5_T2T_ViT_14.pth.tar", { verify: true });
 * console.log(r.output, r.weightsKey, r.verified); // 81.5_T2T_ViT_14.safetensors state_dict_ema true
 * ```
 */
export function convertCheckpoint<A = null>(
  input: string,
  opts: ConvertFileOptions<A> = {},
): Promise<ConvertResult<A>> {
  // Synchronous I/O inside; async for callers and future streaming sources.
  return Promise.resolve().then(() => {
    requireDeno(
      "convertCheckpoint (it writes a file)",
      "convertToSafetensorsBytes on the checkpoint's bytes",
    );
    return convertSync(input, opts);
  });
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

function writeAll(f: Deno.FsFile, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) off += f.writeSync(bytes.subarray(off));
}

/** Builds the safetensors header for a plan (the layout `serializeSafetensors` writes). */
function headerBytes(plan: ConversionPlan<unknown>): Uint8Array {
  return safetensorsHeader(
    plan.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, nbytes: t.nbytes })),
    plan.metadata,
  );
}

async function convertSync<A>(input: string, opts: ConvertFileOptions<A>): Promise<ConvertResult<A>> {
  const output = opts.output ?? defaultOutputPath(input);
  // By the file, not the spelling: `dir/./in.pth`, a symlink or a hard link to the input is the input.
  if (output === input || sameFile(output, input)) {
    throw new SafetensorsError("output would overwrite the input", { file: output });
  }
  if (!opts.force && exists(output)) {
    throw new SafetensorsError("already exists (use --force to overwrite)", { file: output });
  }
  const ckpt = openCheckpoint(input);
  try {
    const plan = planConversion(ckpt, opts);
    const verify = opts.verify !== false;
    const size = await writeVerified(output, opts.force ?? false, async (put) => {
      const header = headerBytes(plan);
      put(header);
      const progress: ConvertProgress = {
        tensorsDone: 0,
        tensorsTotal: plan.tensors.length,
        bytesDone: 0,
        bytesTotal: plan.dataBytes,
      };
      // Each tensor is written before the next is read, so file reads and dtype conversions can each
      // reuse one buffer: memory stays at about the largest tensor. Not when tensors share a storage (views
      // of one flat buffer): the checkpoint then keeps the storage it read last, so each storage is read
      // (and its CRC checked) once instead of once per tensor, which made such files quadratic.
      const uses = new Map<unknown, number>();
      for (const p of plan.tensors) uses.set(p.tensor.storage, (uses.get(p.tensor.storage) ?? 0) + 1);
      const shared = [...uses.values()].some((n) => n > 1);
      if (ckpt.source instanceof FileSource && !shared) ckpt.source.reuseBuffers = true;
      try {
        const largest = plan.tensors.reduce(
          (m, p) => Math.max(m, p.tensor.dtype === p.dtype ? 0 : p.nbytes),
          0,
        );
        const convertBuf = largest ? new Uint8Array(largest) : undefined;
        for (const p of plan.tensors) {
          const raw = materialize(p, ckpt.file, convertBuf);
          if (raw.data.length !== p.nbytes) {
            throw new CheckpointError(`materialised ${raw.data.length} bytes, expected ${p.nbytes}`, {
              file: ckpt.file,
              key: p.name,
            });
          }
          put(raw.data);
          progress.tensorsDone++;
          progress.bytesDone += raw.data.length;
          opts.onProgress?.({ ...progress });
          await yieldForSignals();
        }
      } finally {
        if (ckpt.source instanceof FileSource) ckpt.source.reuseBuffers = false;
      }
    }, verify ? (tmp) => verifyOutput(tmp, plan, ckpt.file, output) : undefined);
    return { ...plan, output, outputBytes: size, verified: verify };
  } finally {
    ckpt.close();
  }
}

/**
 * Writes a file the safe way: `write` streams its bytes (through a {@link StagedWriter}) into a temporary
 * file next to `output`, `check` (when given) proves the temporary file, and only then does it take the
 * output's name; any failure removes it, so nothing half-written or unproven is left. Returns the size.
 */
async function writeVerified(
  output: string,
  force: boolean,
  write: (put: (bytes: Uint8Array) => void) => void | Promise<void>,
  check?: (tmp: string) => void,
): Promise<number> {
  const tmp = tempPathFor(output);
  trackTempFile(tmp); // SIGINT/SIGTERM remove it (tracked before it exists: no window without a handler)
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(tmp, { write: true, createNew: true });
  } catch (e) {
    releaseTempFile(tmp);
    throw new SafetensorsError(`cannot write: ${(e as Error).message}`, { file: output, cause: e });
  }
  let size = 0;
  try {
    try {
      const writer = new StagedWriter((b) => writeAll(f, b));
      await write((b) => writer.put(b));
      writer.flush();
      size = writer.written;
    } finally {
      f.close();
    }
    // a signal that came during the writes is handled here, before the check and the rename
    await yieldForSignals(0);
    // Prove the file before it takes the output's name: a failed check leaves nothing behind.
    check?.(tmp);
    await yieldForSignals(0);
    if (force) Deno.renameSync(tmp, output);
    else {
      // link() fails if the output appeared meanwhile: never clobber without force.
      try {
        Deno.linkSync(tmp, output);
        Deno.removeSync(tmp);
      } catch (e) {
        if (e instanceof Deno.errors.AlreadyExists) {
          throw new SafetensorsError("already exists (use --force to overwrite)", { file: output });
        }
        if (exists(output)) throw e;
        Deno.renameSync(tmp, output);
      }
    }
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* already gone */ }
    if (e instanceof T2tVitError) throw e;
    throw new SafetensorsError(`cannot write: ${(e as Error).message}`, { file: output, cause: e });
  } finally {
    releaseTempFile(tmp);
  }
  return size;
}

/**
 * Re-reads a written safetensors file and compares it with the plan: the header, parsed back as JSON, must put
 * every tensor (name, dtype, shape, offsets) where the plan does and hold the planned metadata, and be byte for
 * byte the header the plan serialises to; the file exactly as long as header and data; and every tensor's
 * bytes equal to the source tensor materialised again from the checkpoint.
 * Streams with positioned reads: memory stays at about two tensors, not the file.
 *
 * @throws {SafetensorsError} naming the first tensor that differs
 */
export function verifyOutput(
  output: string,
  plan: ConversionPlan<unknown>,
  file?: string,
  name = output,
): void {
  function fail(msg: string, key?: string): never {
    throw new SafetensorsError(`verify failed: ${msg}`, { file: name, key });
  }
  const src = FileSource.open(output);
  try {
    const header = headerBytes(plan);
    if (src.size !== header.length + plan.dataBytes) {
      fail(`file is ${src.size} bytes, expected ${header.length + plan.dataBytes}`);
    }
    const onDisk = src.read(0, header.length).slice();
    const n = Number(new DataView(onDisk.buffer).getBigUint64(0, true));
    if (n !== header.length - 8) fail(`header length ${n}, expected ${header.length - 8}`);
    // Read the header back as JSON, independently of the code that wrote it: every entry where the plan
    // puts it, the metadata as planned, nothing else.
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(onDisk.subarray(8)));
    } catch (e) {
      fail(`header is not JSON: ${(e as Error).message}`);
    }
    if (JSON.stringify(parsed.__metadata__ ?? {}) !== JSON.stringify(plan.metadata)) fail("metadata differs");
    if (Object.keys(parsed).filter((k) => k !== "__metadata__").length !== plan.tensors.length) {
      fail(`header lists ${Object.keys(parsed).length} entries, expected ${plan.tensors.length} tensors`);
    }
    let at = 0;
    for (const p of plan.tensors) {
      const e = Object.hasOwn(parsed, p.name) ? parsed[p.name] as Record<string, unknown> : undefined;
      if (!e) fail("missing from the header", p.name);
      const want = JSON.stringify([p.dtype, p.shape, [at, at + p.nbytes]]);
      const got = JSON.stringify([e.dtype, e.shape, e.data_offsets]);
      if (got !== want) fail(`header entry ${got} (dtype, shape, offsets), expected ${want}`, p.name);
      at += p.nbytes;
    }
    // and byte for byte the header the writer's serialiser makes (padding included)
    if (!bytesEqual(onDisk, header)) fail("header bytes differ from the serialised plan");
    src.reuseBuffers = true;
    let pos = header.length;
    for (const p of plan.tensors) {
      const want = materialize(p, file);
      if (want.data.length !== p.nbytes) {
        fail(`source materialised ${want.data.length} bytes, expected ${p.nbytes}`, p.name);
      }
      if (!bytesEqual(src.read(pos, p.nbytes), want.data)) fail("bytes differ", p.name);
      pos += p.nbytes;
    }
  } finally {
    src.close();
  }
}

/** Bytewise equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  const n4 = a.length & ~3;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const x = new Int32Array(a.buffer, a.byteOffset, n4 / 4);
    const y = new Int32Array(b.buffer, b.byteOffset, n4 / 4);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  } else {
    for (let i = 0; i < n4; i++) if (a[i] !== b[i]) return false;
  }
  for (let i = n4; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Options of {@link exportTorchCheckpoint}. */
export interface ExportOptions {
  /** Output path (default {@link defaultTorchOutputPath} of the input). */
  output?: string;
  /**
   * Put the weights under this key (`state_dict_ema`, the official release layout; `state_dict`); default: a
   * bare `OrderedDict`, what `torch.save(model.state_dict(), f)` writes.
   */
  wrap?: string | null;
  /** Overwrite an existing output (default: refuse). */
  force?: boolean;
  /**
   * Re-read the written file with the checkpoint reader and compare every tensor bit for bit with the input
   * before it is renamed into place (default true; a failure removes it).
   */
  verify?: boolean;
  /** Called after each tensor is written. */
  onProgress?: (p: ConvertProgress) => void;
}

/** What {@link exportTorchCheckpoint} did. */
export interface ExportResult {
  /** The safetensors file read. */
  input: string;
  /** The `.pth` file written. */
  output: string;
  /** Its size in bytes. */
  outputBytes: number;
  /** The name of its records (`<archiveName>/data.pkl`): the output's stem, as PyTorch names them. */
  archiveName: string;
  /** The key the weights were put under, or null for a bare state dict. */
  wrap: string | null;
  /** Tensors written. */
  tensors: number;
  /** Tensor data bytes. */
  dataBytes: number;
  /** The input's metadata (`architecture`, … when it was converted or trained here). */
  metadata: Record<string, string>;
  /** True when the output was verified (the default). */
  verified: boolean;
}

/**
 * The default `.pth` path for a safetensors input: `.safetensors` replaced by `.pth`.
 *
 * @example
 * ```ts
 * import { defaultTorchOutputPath } from "./convert.ts";
 * defaultTorchOutputPath("out/best.safetensors"); // "out/best.pth"
 * ```
 */
export function defaultTorchOutputPath(input: string): string {
  return input.replace(/\.safetensors$/i, "") + ".pth";
}

/**
 * Converts a safetensors file to a `torch.save` zip file (`.pth`) that `torch.load(f, weights_only=True)`
 * reads and the official model's `load_state_dict` accepts: an `OrderedDict` of the tensors in file order,
 * each in its own typed storage, optionally under `opts.wrap` (`{"state_dict_ema": …}`, the layout of the
 * official release files). Streams through a temporary file that is verified (every tensor re-read with the
 * checkpoint reader and compared bit for bit) and renamed into place only when complete. Memory: the input
 * file, read once.
 *
 * @throws {SafetensorsError} when the input is not a valid safetensors file, the output exists (without
 *   `force`), cannot be written, or fails verification
 *
 * @example
 * ```ts ignore
 * import { exportTorchCheckpoint } from "./mod.ts";
 * const r = await exportTorchCheckpoint("best.safetensors", { wrap: "state_dict_ema" }); // best.pth
 * console.log(r.output, r.tensors, r.verified);
 * ```
 */
export async function exportTorchCheckpoint(input: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const output = opts.output ?? defaultTorchOutputPath(input);
  if (output === input || sameFile(output, input)) {
    throw new SafetensorsError("output would overwrite the input", { file: output });
  }
  if (!opts.force && exists(output)) {
    throw new SafetensorsError("already exists (use --force to overwrite)", { file: output });
  }
  const wrap = opts.wrap ?? null;
  if (wrap === "") throw new T2tVitError("the key to put the weights under is empty");
  const st = await readSafetensors(input);
  const archiveName = torchArchiveName(output);
  const verify = opts.verify !== false;
  let dataBytes = 0;
  for (const t of st.tensors.values()) dataBytes += t.data.length;
  const size = await writeVerified(output, opts.force ?? false, (put) => {
    const w = new TorchZipWriter(put, archiveName, { wrap });
    w.begin([...st.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })));
    const progress: ConvertProgress = {
      tensorsDone: 0,
      tensorsTotal: st.tensors.size,
      bytesDone: 0,
      bytesTotal: dataBytes,
    };
    for (const t of st.tensors.values()) {
      w.tensor(t);
      progress.tensorsDone++;
      progress.bytesDone += t.data.length;
      opts.onProgress?.({ ...progress });
    }
    w.end();
  }, verify ? (tmp) => verifyTorchOutput(tmp, st.tensors, wrap, output) : undefined);
  return {
    input,
    output,
    outputBytes: size,
    archiveName,
    wrap,
    tensors: st.tensors.size,
    dataBytes,
    metadata: st.metadata,
    verified: verify,
  };
}

/**
 * Re-reads a written `.pth` file with the checkpoint reader and checks that it holds exactly `tensors`: an
 * `OrderedDict` (under `wrap` when given) with the same names in the same order, dtypes, shapes and bytes.
 *
 * @throws {SafetensorsError} naming the first tensor that differs
 */
export function verifyTorchOutput(
  path: string,
  tensors: ReadonlyMap<string, RawTensor>,
  wrap: string | null,
  name = path,
): void {
  function fail(msg: string, key?: string): never {
    throw new SafetensorsError(`verify failed: ${msg}`, { file: name, key });
  }
  using ckpt = openCheckpoint(path);
  // each tensor is compared before the next is read: one reused read buffer
  if (ckpt.source instanceof FileSource) ckpt.source.reuseBuffers = true;
  let dict = ckpt.root;
  if (wrap !== null) {
    if (!(dict instanceof PyDict) || dict.size !== 1 || !dict.has(wrap)) {
      fail(`not a dict holding only '${wrap}'`);
    }
    dict = dict.get(wrap)!;
  }
  if (!(dict instanceof PyDict) || dict.pyClass !== "collections.OrderedDict") fail("not an OrderedDict");
  if (dict.size !== tensors.size) fail(`${dict.size} entries, expected ${tensors.size}`);
  const names = [...tensors.keys()];
  let i = 0;
  for (const [k, v] of dict) {
    const key = names[i++];
    if (k !== key) fail(`entry ${i - 1} is ${JSON.stringify(k)}, expected '${key}'`);
    if (!(v instanceof TorchTensor)) fail("not a tensor", key);
    const want = tensors.get(key)!;
    const got = v.read(name);
    if (got.dtype !== want.dtype) fail(`dtype ${got.dtype}, expected ${want.dtype}`, key);
    if (got.shape.join(",") !== want.shape.join(",")) {
      fail(`shape [${got.shape}], expected [${want.shape}]`, key);
    }
    if (!bytesEqual(got.data, want.data)) fail("bytes differ", key);
  }
}
