/**
 * Checkpoint to safetensors conversion: pick the weights, recognise the architecture, optionally change the
 * float dtype, and write a safetensors file whose metadata records where everything came from. Files are
 * streamed tensor by tensor (peak memory is about one tensor, not the checkpoint), written to a temporary
 * file and renamed into place, and can be verified bit for bit afterwards.
 *
 * @module
 */

import { CheckpointError, SafetensorsError, T2tVitError } from "../src/errors.ts";
import { type ArchitectureInfo, detectArchitecture } from "./arch.ts";
import { type Checkpoint, openCheckpoint, parseCheckpoint } from "./checkpoint.ts";
import { FileSource } from "./source.ts";
import { StagedWriter } from "./staged_writer.ts";
import { releaseTempFile, sameFile, tempPathFor, trackTempFile, yieldForSignals } from "../src/files.ts";
import { parseSafetensors, safetensorsHeader, serializeSafetensors } from "./safetensors.ts";
import { castFloatInto, type FloatDType } from "./dtype.ts";
import type { TorchTensor } from "./torch_globals.ts";
import { type DType, DTYPE_SIZE, type RawTensor, type TensorMap } from "./types.ts";
import { type DroppedEntry, selectWeights } from "./weights.ts";

/** `--dtype`: keep each tensor's dtype, or convert floating-point tensors (integer tensors are always kept). */
export type DTypeOption = "keep" | "f32" | "f16" | "bf16";

/**
 * A conversion's output may be at most `MAX_OUTPUT_FACTOR` times the checkpoint's size plus
 * {@link MAX_OUTPUT_SLACK} bytes (room for tied weights, small expanded views and float16 widened to float32);
 * more means views that repeat storage data, memory the file does not back.
 */
export const MAX_OUTPUT_FACTOR = 4;
/** See {@link MAX_OUTPUT_FACTOR}: 64 MiB. */
export const MAX_OUTPUT_SLACK: number = 64 << 20;

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

/** Options of {@link planConversion}, {@link convertCheckpoint} and {@link convertToSafetensorsBytes}. */
export interface ConvertOptions {
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
export interface ConversionPlan {
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
  /** The recognised architecture. */
  architecture: ArchitectureInfo;
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
 * console.log(plan.weightsKey, plan.architecture.name, plan.tensors.length); // state_dict_ema t2t_vit_7 111
 * ```
 */
export function planConversion(ckpt: Checkpoint, opts: ConvertOptions = {}): ConversionPlan {
  const dtypeOpt = opts.dtype ?? "keep";
  if (!DTYPE_OPTIONS.includes(dtypeOpt)) {
    throw new T2tVitError(`unknown dtype option '${dtypeOpt}' (use ${DTYPE_OPTIONS.join(", ")})`);
  }
  const sel = selectWeights(ckpt.root, { key: opts.key, file: ckpt.file });
  const source = opts.sourceName ?? basename(ckpt.file);
  const arch = detectArchitecture(sel.tensors, { hints: [sel.archHint, source] });
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
  // Tensors may share storage (tied weights) or repeat it (expanded views), so the output can exceed the
  // file; but a small file whose pickle points thousands of tensors at one storage would make gigabytes
  // from nothing. Refuse output beyond a small multiple of the bytes the file really has.
  const limit = MAX_OUTPUT_FACTOR * ckpt.source.size + MAX_OUTPUT_SLACK;
  if (dataBytes > limit) {
    throw new CheckpointError(
      `the weights would make ${dataBytes} bytes of output from a file of ${ckpt.source.size} bytes: its ` +
        `tensors repeat the same storage data (more than ${MAX_OUTPUT_FACTOR}x the file + ` +
        `${MAX_OUTPUT_SLACK >> 20} MiB); refusing`,
      { file: ckpt.file },
    );
  }
  const metadata: Record<string, string> = {
    format: "pt",
    architecture: arch.name,
    source,
    weights_key: sel.key ?? "",
  };
  if (arch.imgSize !== null) metadata.img_size = String(arch.imgSize);
  metadata.num_classes = String(arch.numClasses);
  if (arch.candidates.length > 1) metadata.architecture_candidates = arch.candidates.join(",");
  if (arch.family !== null) metadata.config = JSON.stringify(configKwargs(arch));
  if (dtypeOpt !== "keep") metadata.dtype = dtypeOpt;
  return {
    file: ckpt.file,
    format: ckpt.format,
    weightsKey: sel.key,
    strippedPrefix: sel.strippedPrefix,
    dropped: sel.dropped,
    architecture: arch,
    tensors,
    metadata,
    dataBytes,
  };
}

/**
 * The architecture as the official constructor's keyword arguments (snake_case, the form of the reference
 * files' `config` metadata and of the zoo's `configFromKwargs`). Unknown values are left out rather than
 * guessed: a custom model's head count cannot be read from its weights.
 *
 * @example
 * ```ts ignore
 * import { configKwargs, detectArchitecture } from "./mod.ts";
 * configKwargs(detectArchitecture(shapes)); // { img_size: 224, tokens_type: "performer", embed_dim: 256, ... }
 * ```
 */
export function configKwargs(arch: ArchitectureInfo): Record<string, unknown> {
  const blockType = {
    t2t_vit: "vit",
    t2t_vit_se: "se",
    t2t_vit_ghost: "ghost",
    t2t_vit_dense: "dense",
  } as const;
  const out: Record<string, unknown> = {
    img_size: arch.imgSize,
    tokens_type: arch.tokensType,
    embed_dim: arch.embedDim,
    // dense models count blocks through block_config; the official factory leaves depth at its default
    depth: arch.family === "t2t_vit_dense" ? null : arch.depth,
    num_heads: arch.numHeads,
    mlp_ratio: arch.mlpRatio,
    token_dim: arch.tokenDim,
    num_classes: arch.numClasses,
    in_chans: arch.inChans,
  };
  if (arch.family !== null && arch.family !== "t2t_vit") out.block_type = blockType[arch.family];
  if (arch.blockConfig) out.block_config = arch.blockConfig;
  if (arch.growthRate !== undefined) out.growth_rate = arch.growthRate;
  for (const k of Object.keys(out)) if (out[k] === null || out[k] === undefined) delete out[k];
  return out;
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
export function convertToSafetensorsBytes(
  input: Uint8Array | Checkpoint,
  opts: ConvertOptions & { file?: string } = {},
): { bytes: Uint8Array; plan: ConversionPlan } {
  const ckpt = input instanceof Uint8Array ? parseCheckpoint(input, opts.file ?? "<memory>") : input;
  const plan = planConversion(ckpt, opts);
  const tensors: TensorMap = new Map();
  for (const p of plan.tensors) tensors.set(p.name, materialize(p, ckpt.file));
  return { bytes: serializeSafetensors(tensors, plan.metadata), plan };
}

/** Options of {@link convertCheckpoint}. */
export interface ConvertFileOptions extends ConvertOptions {
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
export interface ConvertResult extends ConversionPlan {
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
 * console.log(r.output, r.architecture.name, r.weightsKey); // 81.5_T2T_ViT_14.safetensors t2t_vit_14 ...
 * ```
 */
export function convertCheckpoint(input: string, opts: ConvertFileOptions = {}): Promise<ConvertResult> {
  // Synchronous I/O inside, yielding now and then so SIGINT/SIGTERM can remove the temporary file.
  return Promise.resolve().then(() => convertSync(input, opts));
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
function headerBytes(plan: ConversionPlan): Uint8Array {
  return safetensorsHeader(
    plan.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, nbytes: t.nbytes })),
    plan.metadata,
  );
}

async function convertSync(input: string, opts: ConvertFileOptions): Promise<ConvertResult> {
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
        const header = headerBytes(plan);
        const writer = new StagedWriter((b) => writeAll(f, b));
        const put = (b: Uint8Array) => writer.put(b);
        put(header);
        size = header.length;
        const progress: ConvertProgress = {
          tensorsDone: 0,
          tensorsTotal: plan.tensors.length,
          bytesDone: 0,
          bytesTotal: plan.dataBytes,
        };
        // Each tensor is written before the next is read, so file reads and dtype conversions can each
        // reuse one buffer: memory stays at about the largest tensor.
        if (ckpt.source instanceof FileSource) ckpt.source.reuseBuffers = true;
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
          size += raw.data.length;
          progress.tensorsDone++;
          progress.bytesDone += raw.data.length;
          opts.onProgress?.({ ...progress });
          await yieldForSignals();
        }
        writer.flush();
      } finally {
        if (ckpt.source instanceof FileSource) ckpt.source.reuseBuffers = false;
        f.close();
      }
      // Prove the file before it takes the output's name: a failed check leaves nothing behind.
      await yieldForSignals(0); // a signal that came during the writes is handled here, not after the rename
      if (verify) verifyOutput(tmp, plan, ckpt.file, output);
      await yieldForSignals(0);
      if (opts.force) Deno.renameSync(tmp, output);
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
    return { ...plan, output, outputBytes: size, verified: verify };
  } finally {
    ckpt.close();
  }
}

/**
 * Re-reads a written safetensors file with the strict reader and compares its metadata and every tensor
 * (dtype, shape, bytes) with the plan's source tensors.
 *
 * @throws {SafetensorsError} naming the first tensor that differs
 */
export function verifyOutput(output: string, plan: ConversionPlan, file?: string, name = output): void {
  const st = parseSafetensors(Deno.readFileSync(output), name);
  function fail(msg: string, key?: string): never {
    throw new SafetensorsError(`verify failed: ${msg}`, { file: name, key });
  }
  if (JSON.stringify(st.metadata) !== JSON.stringify(plan.metadata)) {
    const a = Object.entries(st.metadata).sort();
    const b = Object.entries(plan.metadata).sort();
    if (JSON.stringify(a) !== JSON.stringify(b)) fail("metadata differs");
  }
  if (st.tensors.size !== plan.tensors.length) {
    fail(`${st.tensors.size} tensors, expected ${plan.tensors.length}`);
  }
  for (const p of plan.tensors) {
    const got = st.tensors.get(p.name);
    if (!got) fail("missing", p.name);
    const want = materialize(p, file);
    if (got.dtype !== want.dtype) fail(`dtype ${got.dtype}, expected ${want.dtype}`, p.name);
    if (got.shape.join(",") !== want.shape.join(",")) {
      fail(`shape [${got.shape}], expected [${want.shape}]`, p.name);
    }
    if (!bytesEqual(got.data, want.data)) fail("bytes differ", p.name);
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
