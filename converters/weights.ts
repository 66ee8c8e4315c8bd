/**
 * Choosing the weights inside a checkpoint, as the official T2T-ViT loader does: `state_dict_ema` when present
 * (`use_ema=True`), then `state_dict`, `model`, `net`, else a top level of tensors; `module.` prefixes
 * (DataParallel) stripped; everything else (optimizer state, AMP scaler, args, metrics) dropped and reported.
 *
 * @module
 */

import { CheckpointError } from "../src/core/errors.ts";
import { keyText, PyDict, PyObject, pyRepr, pyTypeName, type PyValue } from "./pickle.ts";
import { TorchTensor } from "./torch_globals.ts";

/**
 * The chosen weights may make at most `MAX_OUTPUT_FACTOR` times the checkpoint's size plus
 * {@link MAX_OUTPUT_SLACK} bytes (room for tied weights, small expanded views and float16 widened to float32);
 * more means views that repeat storage data, memory the file does not back.
 */
export const MAX_OUTPUT_FACTOR = 4;
/** See {@link MAX_OUTPUT_FACTOR}: 64 MiB. */
export const MAX_OUTPUT_SLACK: number = 64 << 20;

/**
 * Refuses weights that would make more than {@link MAX_OUTPUT_FACTOR} x `fileBytes` + {@link MAX_OUTPUT_SLACK}
 * bytes: tensors may share storage (tied weights) or repeat it (expanded views), so the weights can exceed the
 * file, but a small file whose pickle points thousands of tensors at one storage would make gigabytes from
 * nothing. The conversion plan and the zoo's loader both check through here.
 *
 * @throws {CheckpointError} naming the file
 */
export function checkWeightBytes(dataBytes: number, fileBytes: number, file: string): void {
  const limit = MAX_OUTPUT_FACTOR * fileBytes + MAX_OUTPUT_SLACK;
  if (dataBytes > limit) {
    throw new CheckpointError(
      `the weights would make ${dataBytes} bytes of output from a file of ${fileBytes} bytes: its ` +
        `tensors repeat the same storage data (more than ${MAX_OUTPUT_FACTOR}x the file + ` +
        `${MAX_OUTPUT_SLACK >> 20} MiB); refusing`,
      { file },
    );
  }
}

/** The prefix DataParallel / DistributedDataParallel saves put on every key. */
export const MODULE_PREFIX = "module.";

/**
 * Strips {@link MODULE_PREFIX} from names (when any name has it, as timm strips it per key): the new name of
 * each, and whether anything was stripped.
 *
 * @throws {CheckpointError} when two names become one
 *
 * @example
 * ```ts
 * import { stripModulePrefix } from "./weights.ts";
 * stripModulePrefix(["module.head.weight", "module.head.bias"]).names; // ["head.weight", "head.bias"]
 * ```
 */
export function stripModulePrefix(
  names: readonly string[],
  file = "<checkpoint>",
): { names: string[]; stripped: boolean } {
  const prefix = MODULE_PREFIX;
  const strip = names.some((n) => n.startsWith(prefix));
  if (!strip) return { names: [...names], stripped: false };
  const seen = new Set<string>();
  const out = names.map((n) => {
    const name = n.startsWith(prefix) ? n.slice(prefix.length) : n;
    if (seen.has(name)) {
      throw new CheckpointError(`two tensors map to '${name}' once '${prefix}' is stripped`, {
        file,
        key: name,
      });
    }
    seen.add(name);
    return name;
  });
  return { names: out, stripped: true };
}

/** The keys tried, in order, when no key is given. */
export const DEFAULT_WEIGHT_KEYS: readonly string[] = Object.freeze([
  "state_dict_ema",
  "state_dict",
  "model",
  "net",
]);

/** Something in the checkpoint that was not converted, and what it was. */
export interface DroppedEntry {
  /** Its key (`optimizer`, or `state_dict/<name>` for a non-tensor inside the weights). */
  key: string;
  /** A short description (`dict with 2 keys`, `argparse.Namespace`, `OrderedDict of 111 tensors`). */
  what: string;
}

/** The chosen weights. */
export interface WeightSelection {
  /** Where they came from (`state_dict_ema`), or null for a top level of tensors. */
  key: string | null;
  /** Tensors by state_dict name (prefix stripped), in checkpoint order. */
  tensors: Map<string, TorchTensor>;
  /** The prefix that was stripped from every name (`module.`), or null. */
  strippedPrefix: string | null;
  /** Everything else in the checkpoint. */
  dropped: DroppedEntry[];
  /** What the checkpoint says its architecture is (`arch` field or `args.model`), if anything. */
  archHint: string | null;
}

/** Options of {@link selectWeights}. */
export interface SelectOptions {
  /** Take the weights from this key (a `/`-separated path reaches nested dicts). */
  key?: string;
  /** File name for error messages. */
  file?: string;
}

/**
 * A short description of an unpickled value, for reports.
 *
 * @example
 * ```ts
 * import { describeValue } from "./weights.ts";
 * describeValue(309); // "int 309"
 * ```
 */
export function describeValue(v: PyValue): string {
  if (!(v instanceof PyDict)) return describeUncached(v);
  // A dict's description walks it; remember it per dict (and size), so a report over many keys sharing one
  // big dict walks it once, not once per key (which would be quadratic in the file's size).
  const hit = described.get(v);
  if (hit && hit.size === v.size) return hit.text;
  const text = describeUncached(v);
  described.set(v, { size: v.size, text });
  return text;
}

const described = new WeakMap<PyDict, { size: number; text: string }>();

function describeUncached(v: PyValue): string {
  if (v instanceof TorchTensor) return `tensor ${v.torchDtype.name}[${v.shape.join(", ")}]`;
  if (v instanceof PyDict) {
    let tensors = 0;
    for (const x of v.values()) if (x instanceof TorchTensor) tensors++;
    const cls = v.pyClass === "dict" ? "dict" : v.pyClass.replace(/^collections\./, "");
    return tensors
      ? `${cls} of ${tensors} tensors${tensors < v.size ? ` and ${v.size - tensors} other values` : ""}`
      : `${cls} with ${v.size} keys`;
  }
  if (v instanceof PyObject) return v.value !== undefined ? `${v.pyClass} ${short(v.value)}` : v.pyClass;
  if (typeof v === "number") return `${Number.isInteger(v) ? "int" : "float"} ${v}`;
  if (typeof v === "string") return `str ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (Array.isArray(v)) return `${Object.isFrozen(v) ? "tuple" : "list"} of ${v.length}`;
  if (v instanceof Uint8Array) return `bytes of ${v.length}`;
  return pyTypeName(v) + (typeof v === "boolean" || typeof v === "bigint" ? ` ${v}` : "");
}

function short(v: PyValue): string {
  return typeof v === "string" ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v) : pyRepr(v, 40);
}

function tensorCount(v: PyValue): number {
  if (!(v instanceof PyDict)) return 0;
  let n = 0;
  for (const x of v.values()) if (x instanceof TorchTensor) n++;
  return n;
}

function lookup(root: PyDict, key: string): PyValue | undefined {
  if (root.has(key)) return root.get(key);
  if (!key.includes("/")) return undefined;
  let cur: PyValue = root;
  for (const part of key.split("/")) {
    if (!(cur instanceof PyDict)) return undefined;
    // path parts are text; dict keys may be ints (optimizer state is keyed by parameter index)
    const hit: [PyValue, PyValue] | undefined = [...cur].find(([k]) => keyText(k) === part);
    if (!hit) return undefined;
    cur = hit[1];
  }
  return cur;
}

/**
 * Picks the weights out of an unpickled checkpoint.
 *
 * @throws {CheckpointError} when `key` is missing or holds no tensors, or when nothing holds tensors
 *
 * @example
 * ```ts ignore
 * import { openCheckpoint, selectWeights } from "./mod.ts";
 * using ckpt = openCheckpoint("t2t_vit_7.pth.tar");
 * const sel = selectWeights(ckpt.root);
 * console.log(sel.key, sel.tensors.size); // "state_dict_ema" 111
 * ```
 */
export function selectWeights(root: PyValue, opts: SelectOptions = {}): WeightSelection {
  const file = opts.file ?? "<checkpoint>";
  if (root instanceof TorchTensor) {
    throw new CheckpointError("the checkpoint is a single tensor, not a dict of weights", { file });
  }
  if (!(root instanceof PyDict)) {
    throw new CheckpointError(`the checkpoint holds a ${pyTypeName(root)}, not a dict of weights`, { file });
  }
  let key: string | null = null;
  let dict: PyDict;
  if (opts.key !== undefined) {
    const v = lookup(root, opts.key);
    if (v === undefined) {
      throw new CheckpointError(
        `no key '${opts.key}'; top-level keys: ${
          [...root.keys()].slice(0, 20).map((k) => keyText(k)).join(", ")
        }`,
        {
          file,
          key: opts.key,
        },
      );
    }
    if (!(v instanceof PyDict) || tensorCount(v) === 0) {
      throw new CheckpointError(`'${opts.key}' holds a ${describeValue(v)}, not a dict of tensors`, {
        file,
        key: opts.key,
      });
    }
    key = opts.key;
    dict = v;
  } else {
    const found = DEFAULT_WEIGHT_KEYS.find((k) => tensorCount(root.get(k) ?? null) > 0);
    if (found !== undefined) {
      key = found;
      dict = root.get(found) as PyDict;
    } else if (tensorCount(root) > 0) {
      dict = root;
    } else {
      const keys = [...root.keys()].slice(0, 21).map((k) => keyText(k));
      throw new CheckpointError(
        `no weights found: none of ${
          DEFAULT_WEIGHT_KEYS.join(", ")
        } holds tensors and the top level has none ` +
          `(top-level keys: ${keys.slice(0, 20).join(", ") || "none"}); pass a key`,
        { file },
      );
    }
  }

  const dropped: DroppedEntry[] = [];
  const describe = describeValue;
  if (key !== null) {
    const top = key.split("/")[0];
    for (const [k, v] of root) {
      const name = keyText(k);
      if (name !== top && name !== key) dropped.push({ key: name, what: describe(v) });
    }
  }
  const names: string[] = [];
  const values: TorchTensor[] = [];
  for (const [k, v] of dict) {
    const name = keyText(k);
    if (v instanceof TorchTensor && typeof k === "string") {
      names.push(name);
      values.push(v);
    } else dropped.push({ key: key === null ? name : `${key}/${name}`, what: describe(v) });
  }
  const stripped = stripModulePrefix(names, file);
  const tensors = new Map<string, TorchTensor>();
  for (let i = 0; i < names.length; i++) tensors.set(stripped.names[i], values[i]);

  let archHint: string | null = null;
  const arch = root.get("arch");
  const args = root.get("args");
  if (typeof arch === "string") archHint = arch;
  else if (args instanceof PyObject && typeof args.attrs.get("model") === "string") {
    archHint = args.attrs.get("model") as string;
  }
  return { key, tensors, strippedPrefix: stripped.stripped ? MODULE_PREFIX : null, dropped, archHint };
}
