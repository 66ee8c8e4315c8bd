/**
 * Every reader a fuzz case is fed to, and the invariants checked on the way: only the project's typed errors
 * (T2tVitError subclasses) may escape; a conversion that succeeds must produce a file the strict reader
 * accepts with the very bytes that were materialised; the in-memory and the file-backed readers must agree;
 * a failed conversion leaves no output and no temporary file; a safetensors file the reader accepts must
 * survive the writer and read back identical.
 *
 * @module
 */

import { T2tVitError } from "../src/core/errors.ts";
import {
  type Checkpoint,
  openCheckpoint,
  parseCheckpoint,
  readCheckpoint,
  walkTensors,
} from "../converters/checkpoint.ts";
import {
  convertCheckpoint,
  convertToSafetensorsBytes,
  type DTypeOption,
  materialize,
  planConversion,
} from "../converters/convert.ts";
import { describeValue, selectWeights } from "../converters/weights.ts";
import { describeWeights } from "../zoo/arch.ts";
import { PyDict, type PyValue, unpickle } from "../converters/pickle.ts";
import { resolveTorchGlobal, storageClassDType, TorchStorage } from "../converters/torch_globals.ts";
import {
  castFloat,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  toFloat32,
} from "../converters/safetensors.ts";
import type { RawTensor, TensorMap } from "../src/core/types.ts";
import type { Target } from "./mutate.ts";
import { decodeImage } from "../src/images/decode.ts";

/** A broken invariant (as opposed to a typed error, which is a correct outcome). */
export class Finding extends Error {
  /** Short kind: `untyped-error`, `convert-output`, `file-disagrees`, `leftover-file`, `roundtrip`... */
  readonly kind: string;
  /** Makes a finding. */
  constructor(kind: string, message: string, cause?: unknown) {
    super(`${kind}: ${message}`, { cause });
    this.kind = kind;
  }
}

/** One case's input for the readers. */
export interface CaseInput {
  /** What is fed. */
  target: Target;
  /** The (mutated) file bytes. */
  bytes: Uint8Array;
  /** Pickle cases: the mutated pickle alone, for the bare unpickler. */
  pickle?: Uint8Array;
  /** Name for error messages. */
  name: string;
  /** Output dtype of the conversion step. */
  dtype: DTypeOption;
  /** Also write the bytes to a file and run the file-backed readers (slower). */
  fileMode: boolean;
  /** A private, empty temporary directory for the file mode. */
  tmpDir: string;
}

/** What happened: `ok`, or the first typed error's class and message pattern. */
export interface CaseOutcome {
  /** `ok` or the error class name (`CheckpointError`, `UnsafePickleError`, `SafetensorsError`...). */
  outcome: string;
  /** The first typed error's message with numbers and quoted names replaced (for counting kinds). */
  pattern?: string;
  /** The first typed error's message (first 300 characters). */
  message?: string;
}

/** Runs `f`; a typed error is returned, anything else becomes a {@link Finding}. */
function typed<T>(what: string, f: () => T): T | T2tVitError {
  try {
    return f();
  } catch (e) {
    if (e instanceof T2tVitError) return e;
    if (e instanceof Finding) throw e;
    throw new Finding("untyped-error", `${what}: ${(e as Error)?.name}: ${(e as Error)?.message}`, e);
  }
}

async function typedAsync<T>(what: string, f: () => Promise<T>): Promise<T | T2tVitError> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof T2tVitError) return e;
    if (e instanceof Finding) throw e;
    throw new Finding("untyped-error", `${what}: ${(e as Error)?.name}: ${(e as Error)?.message}`, e);
  }
}

/** The message of a typed error with the specifics (numbers, quoted names, file name) taken out. */
export function pattern(e: T2tVitError, file: string): string {
  return e.message.replaceAll(file, "<file>").replace(/'[^']*'/g, "'…'").replace(/"[^"]*"/g, '"…"')
    .replace(/0x[0-9a-f]+/gi, "N").replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, "N").replace(/\[[N, ]*\]/g, "[…]")
    .slice(0, 120);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Everything materialised from a checkpoint, by tensor path. */
function materializeAll(ckpt: Checkpoint, name: string): Map<string, RawTensor> | T2tVitError {
  return typed("materialise", () => {
    const out = new Map<string, RawTensor>();
    for (const [path, t] of walkTensors(ckpt.root)) out.set(path, t.read(name));
    return out;
  });
}

/** Inspects a checkpoint tree the way `convert --list` and reports do. */
function inspect(root: PyValue): void {
  if (root instanceof PyDict) { for (const v of root.values()) describeValue(v); }
  try {
    selectWeights(root);
  } catch (e) {
    if (!(e instanceof T2tVitError)) throw e;
  }
}

/** Checks that a conversion's output is a valid safetensors file holding exactly what was materialised. */
function checkConversion(ckpt: Checkpoint, name: string, dtype: DTypeOption): T2tVitError | null {
  const r = typed("convert", () => convertToSafetensorsBytes(ckpt, { dtype, describe: describeWeights }));
  if (r instanceof T2tVitError) return r;
  let st;
  try {
    st = parseSafetensors(r.bytes, "converted");
  } catch (e) {
    throw new Finding("convert-output", `our own output does not parse: ${(e as Error).message}`, e);
  }
  for (const p of r.plan.tensors) {
    const got = st.tensors.get(p.name);
    const want = materialize(p, name);
    if (!got || got.dtype !== want.dtype || !equalBytes(got.data, want.data)) {
      throw new Finding("convert-output", `tensor '${p.name}' differs from its materialised bytes`);
    }
  }
  if (st.tensors.size !== r.plan.tensors.length) throw new Finding("convert-output", "tensor count differs");
  return null;
}

function ls(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

/** The file-backed readers: positioned reads, legacy streaming, the streaming converter. */
async function checkFileReaders(
  input: CaseInput,
  memory: Map<string, RawTensor> | T2tVitError,
): Promise<void> {
  const path = `${input.tmpDir}/case.pth`;
  const out = `${input.tmpDir}/case.safetensors`;
  Deno.writeFileSync(path, input.bytes);
  try {
    const opened = typed("openCheckpoint", () => openCheckpoint(path));
    let fromFile: Map<string, RawTensor> | T2tVitError = opened instanceof T2tVitError ? opened : new Map();
    if (!(opened instanceof T2tVitError)) {
      try {
        fromFile = typed("materialise (file)", () => {
          const m = new Map<string, RawTensor>();
          for (const [p, t] of walkTensors(opened.root)) {
            const raw = t.read(path);
            m.set(p, { ...raw, data: raw.data.slice() });
          }
          return m;
        });
      } finally {
        opened.close();
      }
    }
    // the file-backed reader must agree with the in-memory one
    if ((memory instanceof T2tVitError) !== (fromFile instanceof T2tVitError)) {
      throw new Finding(
        "file-disagrees",
        `in memory: ${memory instanceof T2tVitError ? memory.message : "ok"}; from the file: ${
          fromFile instanceof T2tVitError ? fromFile.message : "ok"
        }`,
      );
    }
    if (!(memory instanceof T2tVitError) && !(fromFile instanceof T2tVitError)) {
      for (const [p, t] of memory) {
        const f = fromFile.get(p);
        if (!f || !equalBytes(f.data, t.data)) throw new Finding("file-disagrees", `tensor '${p}' differs`);
      }
    }
    const read = await typedAsync("readCheckpoint", () => readCheckpoint(path));
    if ((read instanceof T2tVitError) !== (opened instanceof T2tVitError)) {
      throw new Finding("file-disagrees", "readCheckpoint and openCheckpoint disagree");
    }
    const conv = await typedAsync(
      "convertCheckpoint",
      () =>
        convertCheckpoint(path, { output: out, verify: true, dtype: input.dtype, describe: describeWeights }),
    );
    const left = ls(input.tmpDir).filter((f) => f !== "case.pth");
    if (conv instanceof T2tVitError) {
      if (left.length) throw new Finding("leftover-file", `failed conversion left ${left.join(", ")}`);
    } else {
      if (left.join() !== "case.safetensors") throw new Finding("leftover-file", `files: ${left.join(", ")}`);
      try {
        parseSafetensors(Deno.readFileSync(out), out);
      } catch (e) {
        throw new Finding("convert-output", `streamed output does not parse: ${(e as Error).message}`, e);
      }
    }
  } finally {
    for (const f of ls(input.tmpDir)) Deno.removeSync(`${input.tmpDir}/${f}`);
  }
}

/** The bare unpickler on a pickle alone, with persistent ids resolved to data-less storages. */
function bareUnpickle(pkl: Uint8Array, name: string): T2tVitError | null {
  const r = typed("unpickle", () =>
    unpickle(pkl, {
      file: name,
      resolveGlobal: resolveTorchGlobal,
      persistentLoad: (pid) => {
        const dtype = Array.isArray(pid) ? storageClassDType(pid[1]) : undefined;
        const numel = Array.isArray(pid) ? pid[4] : undefined;
        if (!dtype || typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) {
          throw new T2tVitError("not a storage id");
        }
        return new TorchStorage(String((pid as unknown[])[2]), dtype, "cpu", numel * dtype.itemSize, null);
      },
    }));
  if (r instanceof T2tVitError) return r;
  typed("inspect", () => inspect(r.value));
  return null;
}

function checkpointOutcome(first: T2tVitError | null, name: string): CaseOutcome {
  return first
    ? { outcome: first.name, pattern: pattern(first, name), message: first.message.slice(0, 300) }
    : { outcome: "ok" };
}

/** Feeds a checkpoint case (zip, legacy or pickle target) to every reader. */
async function checkpointCase(input: CaseInput): Promise<CaseOutcome> {
  const { bytes, name } = input;
  const seen: { first: T2tVitError | null } = { first: null };
  const note = (e: T2tVitError | null) => {
    if (e && !seen.first) seen.first = e;
  };
  const ckpt = typed("parseCheckpoint", () => parseCheckpoint(bytes, name));
  let memory: Map<string, RawTensor> | T2tVitError;
  if (ckpt instanceof T2tVitError) {
    note(ckpt);
    memory = ckpt;
  } else {
    typed("inspect", () => inspect(ckpt.root));
    memory = materializeAll(ckpt, name);
    if (memory instanceof T2tVitError) note(memory);
    const plan = typed("plan", () => planConversion(ckpt, { dtype: input.dtype, describe: describeWeights }));
    if (plan instanceof T2tVitError) note(plan);
    note(checkConversion(ckpt, name, input.dtype));
  }
  // the pickle alone through the bare unpickler (its outcome counts only when the readers above had none)
  if (input.pickle) note(bareUnpickle(input.pickle, name));
  if (input.fileMode) await checkFileReaders(input, memory);
  return checkpointOutcome(seen.first, name);
}

function sameTensors(a: TensorMap, b: TensorMap): boolean {
  if (a.size !== b.size) return false;
  for (const [k, t] of a) {
    const u = b.get(k);
    if (!u || u.dtype !== t.dtype || u.shape.join() !== t.shape.join() || !equalBytes(u.data, t.data)) {
      return false;
    }
  }
  return true;
}

/** Feeds a safetensors case to the reader, the float helpers, the writer and the file reader. */
async function safetensorsCase(input: CaseInput): Promise<CaseOutcome> {
  const { bytes, name } = input;
  const st = typed("parseSafetensors", () => parseSafetensors(bytes, name));
  if (input.fileMode) {
    const path = `${input.tmpDir}/case.safetensors`;
    Deno.writeFileSync(path, bytes);
    try {
      const fromFile = await typedAsync("readSafetensors", () => readSafetensors(path));
      if ((fromFile instanceof T2tVitError) !== (st instanceof T2tVitError)) {
        throw new Finding("file-disagrees", "readSafetensors and parseSafetensors disagree");
      }
    } finally {
      Deno.removeSync(path);
    }
  }
  if (st instanceof T2tVitError) {
    return { outcome: st.name, pattern: pattern(st, name), message: st.message.slice(0, 300) };
  }
  typed("toFloat32", () => {
    for (const t of st.tensors.values()) {
      const v = toFloat32(t);
      if (t.data.length <= 1 << 16 && (t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16")) {
        castFloat(t, t.dtype === "F32" ? "BF16" : "F32");
        if (v.length !== t.shape.reduce((a, b) => a * b, 1)) throw new Finding("toFloat32", "length");
      }
    }
  });
  let again;
  try {
    again = parseSafetensors(serializeSafetensors(st.tensors, st.metadata), "rewritten");
  } catch (e) {
    throw new Finding(
      "roundtrip",
      `a file the reader accepts cannot be rewritten: ${(e as Error).message}`,
      e,
    );
  }
  if (
    !sameTensors(st.tensors, again.tensors) || JSON.stringify(st.metadata) !== JSON.stringify(again.metadata)
  ) {
    throw new Finding("roundtrip", "rewritten file reads back different");
  }
  return { outcome: "ok" };
}

/**
 * Feeds one case to every reader of its target.
 *
 * @throws {Finding} when an invariant breaks (an untyped error escaped, outputs disagree...)
 */
export function runReaders(input: CaseInput): Promise<CaseOutcome> {
  if (input.target === "amplify" && sniffImage(input.bytes)) return imageCase(input);
  return input.target === "safetensors" ? safetensorsCase(input) : checkpointCase(input);
}

function sniffImage(b: Uint8Array): boolean {
  return (b.length > 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) ||
    (b.length > 2 && b[0] === 0xff && b[1] === 0xd8);
}

/** Feeds an image case to the decoder: a decoded image of the header's size, or a typed error. */
function imageCase(input: CaseInput): Promise<CaseOutcome> {
  const r = typed("decodeImage", () => decodeImage(input.bytes, input.name));
  if (r instanceof T2tVitError) {
    return Promise.resolve({
      outcome: r.name,
      pattern: pattern(r, input.name),
      message: r.message.slice(0, 300),
    });
  }
  if (r.data.length !== r.width * r.height * 3) throw new Finding("image", "decoded size is wrong");
  return Promise.resolve({ outcome: "ok" });
}
