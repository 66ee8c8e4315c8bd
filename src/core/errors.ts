/**
 * The project's typed errors. Every failure caused by bad input (a file, a key, a tensor, an image, a shape)
 * is one of these, so callers can tell "your input is wrong" from a bug, and the message names what is at fault.
 *
 * @module
 */

// C0 and C1 control characters, DEL, and the Unicode format characters that reorder or hide text (bidi
// embeddings, overrides and isolates, the Arabic letter mark, line/paragraph separators).
// deno-lint-ignore no-control-regex
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNPRINTABLE_KEEP_NEWLINE =
  // deno-lint-ignore no-control-regex
  /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(c: string): string {
  const n = c.charCodeAt(0);
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
}

/**
 * Text from a file made safe to print: control characters (ESC, CR, BEL, ...), DEL, C1 controls and the
 * Unicode characters that reorder or hide text are shown as `\x1b` / `\u202e` escapes, so a name inside a
 * file cannot move the cursor, repaint a line or disguise itself on a terminal. Everything else is unchanged.
 *
 * @example
 * ```ts
 * import { printable } from "./errors.ts";
 * printable("evil\x1b[2K\rOK"); // "evil\\x1b[2K\\x0dOK"
 * ```
 */
export function printable(s: string): string {
  return s.replace(UNPRINTABLE, escapeChar);
}

/**
 * `JSON.stringify(value, null, 1)` with the characters {@link printable} escapes written as `\uXXXX` JSON
 * escapes (JSON.stringify escapes only C0 controls): machine-readable output that is also safe on a terminal.
 */
export function printableJson(value: unknown): string {
  // (JSON.stringify already escapes C0 controls inside strings; its own newlines are layout)
  return JSON.stringify(value, null, 1).replace(
    UNPRINTABLE_KEEP_NEWLINE,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Where an error was found: the file, the key or tensor name, a byte offset. All optional. */
export interface ErrorContext {
  /** The file (path or label) the bad input came from. */
  file?: string;
  /** The state_dict key, tensor name, pickle global or record at fault. */
  key?: string;
  /** The byte offset in the file, where it is known. */
  offset?: number;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * Base class of every error this package throws on bad input.
 *
 * @example
 * ```ts
 * import { T2tVitError } from "./errors.ts";
 * try {
 *   throw new T2tVitError("bad header", { file: "w.safetensors" });
 * } catch (e) {
 *   if (e instanceof T2tVitError) console.log(e.message); // "w.safetensors: bad header"
 * }
 * ```
 */
export class T2tVitError extends Error {
  /** The class's name, kept as a string so that it survives minification (the instances' `name`). */
  static readonly errorName: string = "T2tVitError";
  /** The file the error concerns, if known. */
  readonly file?: string;
  /** The key, tensor or global at fault, if known. */
  readonly key?: string;
  /** Byte offset in the file, if known. */
  readonly offset?: number;

  /** Builds the message as `file: [key: ]message`. */
  constructor(message: string, ctx: ErrorContext = {}) {
    const where = [ctx.file, ctx.key !== undefined ? `'${ctx.key}'` : undefined].filter((s) =>
      s !== undefined
    );
    // File names, keys and whatever the message quotes from a file are escaped (newlines in the message are
    // its own line breaks and kept): an error message cannot paint over a terminal.
    const text = where.length ? `${where.map(printable).join(": ")}: ${message}` : message;
    super(text.replace(UNPRINTABLE_KEEP_NEWLINE, escapeChar), { cause: ctx.cause });
    // each class states its name as a string (`errorName`): minifiers rename classes, so `new.target.name`
    // would say "e" in a bundle; a subclass without one (a user's) keeps its class name
    const cls = new.target as unknown as { readonly errorName?: string; readonly name: string };
    this.name = Object.hasOwn(cls, "errorName") ? cls.errorName! : cls.name;
    this.file = ctx.file;
    this.key = ctx.key;
    this.offset = ctx.offset;
  }
}

/** A checkpoint (zip, legacy torch.save, pickle) that cannot be read safely or correctly. */
export class CheckpointError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "CheckpointError";
}

/** A pickle global, opcode or construct that the safe unpickler refuses. Nothing was executed. */
export class UnsafePickleError extends CheckpointError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "UnsafePickleError";
}

/** A safetensors file that breaks the format, or tensors that cannot be written as one. */
export class SafetensorsError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "SafetensorsError";
}

/** Weights that do not fit a model: missing, unexpected or mis-shaped keys, NaN/Inf values. */
export class WeightsError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "WeightsError";
}

/** A model configuration, input shape or argument that the model cannot accept. */
export class ModelError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "ModelError";
}

/** An image that cannot be decoded or preprocessed. */
export class ImageError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "ImageError";
}

/** A dataset file (CIFAR binary) of the wrong size or missing. */
export class DatasetError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "DatasetError";
}

/**
 * Official weights that cannot be fetched or cached: no network, an HTTP error, a truncated or corrupt
 * download, a file that is not the expected checkpoint, a cache that cannot be written, or the network
 * forbidden (offline) while the cache lacks the file. The message names the model's tag and the URL.
 */
export class DownloadError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "DownloadError";
  /** The weights' tag, e.g. `t2t_vit_14.in1k`. */
  readonly tag: string;
  /** The URL the weights come from. */
  readonly url: string;

  /** Builds the message as `tag (url): message`. */
  constructor(tag: string, url: string, message: string, ctx: ErrorContext = {}) {
    super(`${tag} (${url}): ${message}`, { ...ctx, file: undefined, key: undefined });
    this.tag = tag;
    this.url = url;
  }
}

/**
 * The tfjs wasm binaries are not where the wasm backend looked for them (a browser page that does not serve
 * them next to the bundle, a wrong `wasmPaths`). `file` is the place it looked. Never silently replaced by
 * the cpu backend.
 */
export class WasmBinariesError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "WasmBinariesError";
}
