/**
 * Reading weights for the zoo, and THE checkpoint filter: what timm's `checkpoint_filter_fn` does for a
 * T2T-ViT, in one function. `readWeights` reads a file's format (a safetensors file through its reader, a
 * PyTorch checkpoint through the pickle VM, tensors still lazy) and {@linkcode checkpointFilter} turns what
 * it read into the state dict a model loads: the weights' key chosen (`state_dict_ema` first, as
 * `converters/weights.ts` knows it), `module.` stripped, the head dropped for another class count and
 * `pos_embed` resized bicubically for another image size. `createModel`, `loadModel`, `predict.ts` and the
 * examples all load through here; nothing goes through the converter's plan.
 *
 * @module
 */

import { tf } from "../src/core/tf.ts";
import { Checkpoint, parseCheckpoint, sniffFormat } from "../converters/checkpoint.ts";
import { fromFloat32, parseSafetensors, toFloat32 } from "../converters/safetensors.ts";
import { checkWeightBytes, MODULE_PREFIX, selectWeights, stripModulePrefix } from "../converters/weights.ts";
import { DTYPE_SIZE, type RawTensor, type TensorMap } from "../src/core/types.ts";
import { WeightsError } from "../src/core/errors.ts";
import { sourceOf } from "../src/core/platform.ts";
import { readLocalOrFetch } from "../src/core/files.ts";
import { resizePosEmbed } from "./layers/position.ts";
import { CONFIG_LIMITS } from "./configs.ts";

/** The side of the patch grid per pixel of input: T2T-ViT's tokens are 16x16-pixel patches (three unfolds). */
export const PATCH_STRIDE = 16;

/**
 * The grid side `g` of a position embedding of shape `(1, 1 + g*g, dim)` (class token first), or undefined
 * when the shape is not one: the one place that reads an image size out of `pos_embed` (the image size is
 * `g * 16`).
 *
 * @example
 * ```ts
 * import { posEmbedGrid } from "./loader.ts";
 * posEmbedGrid([1, 197, 384]); // 14 (224 px)
 * posEmbedGrid([1, 196, 384]); // undefined
 * ```
 */
export function posEmbedGrid(shape: readonly number[]): number | undefined {
  if (shape.length !== 3 || shape[0] !== 1) return undefined;
  const g = Math.round(Math.sqrt(shape[1] - 1));
  return g > 0 && g * g === shape[1] - 1 ? g : undefined;
}

/**
 * Resizes a `(1, 1 + g*g, dim)` position embedding tensor to grid `newGrid` on the device (the bicubic resize
 * of `resizePosEmbed` as one matrix product).
 */
export function resizePosEmbedTensor(t: tf.Tensor, oldGrid: number, newGrid: number): tf.Tensor3D {
  return tf.tidy(() => {
    const dim = t.shape[2]!;
    // the interpolation matrix: resize each basis grid cell (identity columns) with the same code
    const g2 = oldGrid * oldGrid;
    const G2 = newGrid * newGrid;
    const basis = new Float32Array((1 + g2) * g2);
    for (let i = 0; i < g2; i++) basis[(1 + i) * g2 + i] = 1;
    const m = resizePosEmbed(basis, g2, oldGrid, newGrid).subarray(g2); // (G2, g2)
    const grid = tf.reshape(tf.slice(t, [0, 1, 0], [1, g2, dim]), [g2, dim]);
    const out = tf.matMul(tf.tensor2d(m, [G2, g2]), grid);
    return tf.concat([tf.slice(t, [0, 0, 0], [1, 1, dim]), tf.reshape(out, [1, G2, dim])], 1) as tf.Tensor3D;
  });
}

/** Weights by PyTorch key: raw tensors (from a file or a converter) or `tf.Tensor`s. */
export type StateDict = TensorMap | Map<string, tf.Tensor>;

/** What {@linkcode readWeights} read: the state and what the file says about it. */
export interface WeightsFile {
  /**
   * A safetensors file's tensors, or a PyTorch checkpoint (its unpickled object, tensors still lazy): give
   * it to {@linkcode checkpointFilter}.
   */
  state: TensorMap | Checkpoint;
  /** The file's path, URL or label (`<bytes>`, a Blob's name), for messages. */
  file: string;
  /** A safetensors file's metadata (`architecture`, `config`, ...); empty for a checkpoint. */
  metadata: Record<string, string>;
}

/**
 * Reads weights given as a path, URL, bytes or Blob: a safetensors file, or a PyTorch checkpoint (zip or
 * legacy `torch.save`, any layout: release, training, CIFAR transfer, bare state_dict), read safely without
 * executing pickle code. The weights are chosen and adapted by {@linkcode checkpointFilter}.
 *
 * @throws {WeightsError} when the source cannot be read
 * @throws {SafetensorsError} or {CheckpointError} when the file is malformed
 * @throws {UnsafePickleError} when a checkpoint's pickle names a global outside the allowlist
 *
 * @example
 * ```ts ignore
 * import { checkpointFilter, readWeights } from "./loader.ts";
 * const w = await readWeights("81.5_T2T_ViT_14.pth.tar");
 * const { tensors } = checkpointFilter(w.state); // the state_dict_ema weights, by PyTorch key
 * ```
 */
export async function readWeights(src: string | URL | Uint8Array | Blob): Promise<WeightsFile> {
  let bytes: Uint8Array;
  let file: string;
  if (src instanceof Uint8Array) {
    bytes = src;
    file = "<bytes>";
  } else if (src instanceof Blob) {
    file = (src as Blob & { name?: string }).name || "<blob>";
    try {
      bytes = new Uint8Array(await src.arrayBuffer());
    } catch (e) {
      throw new WeightsError(`cannot read weights: ${(e as Error).message}`, { file, cause: e });
    }
  } else {
    file = sourceOf(src).label;
    try {
      bytes = await readLocalOrFetch(src, (msg, cause) => {
        throw new WeightsError(`cannot read weights: ${msg}`, { file, cause });
      });
    } catch (e) {
      if (e instanceof WeightsError) throw e;
      throw new WeightsError(`cannot read weights: ${(e as Error).message}`, { file, cause: e });
    }
  }
  const kind = sniffFormat(bytes.subarray(0, 4096));
  if (kind === "zip" || kind === "legacy") return { state: parseCheckpoint(bytes, file), file, metadata: {} };
  const { tensors, metadata } = parseSafetensors(bytes, file);
  return { state: tensors, file, metadata };
}

/** What the filter adapts the weights to (each defaults to what the weights are). */
export interface FilterTarget {
  /** The model's classes: a head of another size (or any head, for 0) is dropped. */
  numClasses?: number;
  /** The model's input size: a `pos_embed` of another grid is resized bicubically to it. */
  imgSize?: number;
  /** The model's width: a `pos_embed` of another width is left for the loader to report. */
  embedDim?: number;
  /** The file, for messages. */
  file?: string;
}

/** What {@linkcode checkpointFilter} made of the weights. */
export interface FilteredWeights {
  /** The state dict to load, by PyTorch key. */
  tensors: StateDict;
  /** The class count: the target's, else the weights' head rows (undefined: no head in the weights). */
  numClasses?: number;
  /** The input size: the target's, else what `pos_embed` was made for (undefined: no usable `pos_embed`). */
  imgSize?: number;
  /** The keys the model must initialise itself: the head, when it was dropped. */
  dropped: string[];
  /** Keys resized to fit (`pos_embed`). */
  resized: string[];
  /** Where a checkpoint's weights came from (`state_dict_ema`), null for its top level; undefined otherwise. */
  weightsKey?: string | null;
  /** What a checkpoint says its architecture is (`arch`, `args.model`), with its file name: detection hints. */
  hints: string[];
  /** Tensors the filter made (a resized `pos_embed` of `tf.Tensor` weights): the caller disposes them. */
  owned: tf.Tensor[];
}

const HEAD_KEYS = ["head.weight", "head.bias"] as const;

/** Whether a raw tensor's bytes hold its shape (anything else is left for the loader to report). */
function wellFormed(t: RawTensor): boolean {
  return Array.isArray(t.shape) && t.data instanceof Uint8Array &&
    t.data.byteLength === t.shape.reduce((a, b) => a * b, 1) * (DTYPE_SIZE[t.dtype] ?? NaN);
}

/**
 * THE checkpoint filter (timm's `checkpoint_filter_fn` for T2T-ViT): from a checkpoint or a state dict to the
 * state dict of a model with `target`'s class count and image size.
 *
 * - a checkpoint's weights are chosen as the official loader does (`state_dict_ema`, `state_dict`, `model`,
 *   `net`, else the top level; `converters/weights.ts`), bounded by the file's size, and read;
 * - the `module.` prefix of DataParallel saves is stripped (from a checkpoint or a state dict);
 * - a head of another class count is dropped (the official `load_for_transfer_learning`): the model
 *   initialises its own (`dropped`);
 * - a `pos_embed` made for another image size is resized bicubically (class row kept), as the official
 *   `resize_pos_embed` intends.
 *
 * The class count and image size default to the weights' own (`head.weight` rows; the `pos_embed` grid).
 *
 * @throws {CheckpointError} when a checkpoint holds no weights, two keys collide once `module.` is stripped, or
 *   its tensors would make far more bytes than the file has
 *
 * @example
 * ```ts ignore
 * import { checkpointFilter, readWeights } from "./loader.ts";
 * const w = await readWeights("t2t_vit_14.safetensors");
 * const f = checkpointFilter(w.state, { numClasses: 10, imgSize: 384 });
 * f.dropped; // ["head.weight", "head.bias"]
 * f.resized; // ["pos_embed"]
 * ```
 */
export function checkpointFilter(
  state: StateDict | Checkpoint,
  target: FilterTarget = {},
): FilteredWeights {
  let tensors: Map<string, RawTensor | tf.Tensor>;
  let weightsKey: string | null | undefined;
  const hints: string[] = [];
  if (state instanceof Checkpoint) {
    // key choice and `module.` strip: a file-format fact, `converters/weights.ts`
    const sel = selectWeights(state.root, { file: state.file });
    let bytes = 0;
    for (const t of sel.tensors.values()) bytes += t.nbytes;
    checkWeightBytes(bytes, state.source.size, state.file);
    tensors = new Map();
    for (const [k, t] of sel.tensors) tensors.set(k, t.read(state.file));
    weightsKey = sel.key;
    if (sel.archHint !== null) hints.push(sel.archHint);
    hints.push(state.file.split(/[\\/]/).pop() ?? state.file);
  } else {
    const keys = [...state.keys()];
    const { names, stripped } = keys.some((k) => k.startsWith(MODULE_PREFIX))
      ? stripModulePrefix(keys, target.file)
      : { names: keys, stripped: false };
    tensors = stripped
      ? new Map(keys.map((k, i) => [names[i], (state as Map<string, RawTensor | tf.Tensor>).get(k)!]))
      : state as Map<string, RawTensor | tf.Tensor>;
  }
  const shape = (k: string): readonly number[] | undefined => {
    const s = tensors.get(k)?.shape;
    return Array.isArray(s) ? s : undefined;
  };

  // the class count, and the head for another one
  const head = shape("head.weight");
  const headRows = head?.length === 2 ? head[0] : undefined;
  const numClasses = target.numClasses ?? headRows;
  const dropped: string[] = [];
  const dropHead = numClasses === 0 || (headRows !== undefined && numClasses !== headRows);
  if (dropHead) {
    if (tensors === state) tensors = new Map(tensors);
    for (const k of HEAD_KEYS) {
      tensors.delete(k);
      dropped.push(k);
    }
  }

  // the image size, and pos_embed for another one
  const pos = shape("pos_embed");
  const grid = pos && posEmbedGrid(pos);
  const imgSize = target.imgSize ?? (grid !== undefined ? grid * PATCH_STRIDE : undefined);
  const resized: string[] = [];
  const owned: tf.Tensor[] = [];
  const newGrid = imgSize !== undefined && validImgSize(imgSize) ? imgSize / PATCH_STRIDE : undefined;
  if (
    grid !== undefined && newGrid !== undefined && newGrid !== grid &&
    (target.embedDim === undefined || pos![2] === target.embedDim)
  ) {
    const out = resizedPosEmbed(tensors.get("pos_embed")!, grid, newGrid);
    if (out !== undefined) {
      if (out instanceof tf.Tensor) owned.push(out);
      if (tensors === state) tensors = new Map(tensors);
      tensors.set("pos_embed", out);
      resized.push("pos_embed");
    }
  }
  return {
    tensors: tensors as StateDict,
    numClasses,
    imgSize,
    dropped,
    resized,
    weightsKey,
    hints,
    owned,
  };
}

/** `pos_embed` resized from `grid` to `newGrid`; undefined when it is no tensor to resize (the loader names it). */
function resizedPosEmbed(
  t: RawTensor | tf.Tensor,
  grid: number,
  newGrid: number,
): RawTensor | tf.Tensor | undefined {
  if (t instanceof tf.Tensor) return t.isDisposed ? undefined : resizePosEmbedTensor(t, grid, newGrid);
  if (!wellFormed(t)) return undefined;
  const dim = t.shape[2];
  return fromFloat32(resizePosEmbed(toFloat32(t), dim, grid, newGrid), [1, newGrid * newGrid + 1, dim]);
}

/** Whether a resize to `imgSize` is worth doing (the config check names anything else right after). */
function validImgSize(imgSize: number): boolean {
  return Number.isInteger(imgSize) && imgSize > 0 && imgSize % PATCH_STRIDE === 0 &&
    imgSize <= CONFIG_LIMITS.imgSize;
}
