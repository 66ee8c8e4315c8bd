/**
 * Training checkpoints as two safetensors files:
 *
 * - `<name>.safetensors`: the model's weights, float32, under the official PyTorch keys (every state_dict entry,
 *   `pos_embed` and the performer's `w` included), so `model.load_state_dict(safetensors.torch.load_file(f))`
 *   works on the official code, and so does our `createModel(..., { weights })`.
 * - `<name>.optim.safetensors`: the optimizer's buffers (`state.<param>.momentum_buffer`, `.exp_avg`,
 *   `.exp_avg_sq`) and, in the metadata, the optimizer's groups, rates and step counters, the schedule, the
 *   epoch, the global step, the best accuracy and the seed that the data order, augmentations and dropout
 *   masks derive from.
 *
 * Both files carry the same `checkpoint_id`, so a weights file from one save and an optimizer file from another
 * are refused. Resuming restores everything bit for bit.
 *
 * @module
 */

import type { tf } from "../core/tf.ts";
import { isNotFound } from "../core/platform.ts";
import { readSafetensors, toFloat32, writeSafetensors } from "../../converters/safetensors.ts";
import type { RawTensor, TensorMap } from "../core/types.ts";
import { CheckpointError } from "../core/errors.ts";
import type { Optimizer, OptimizerMeta } from "./optim.ts";
import type { TrainableModel } from "./trainer.ts";

/** Training progress saved next to the optimizer state. */
export interface TrainingState {
  /** Number of completed epochs (the epoch to resume at). */
  epoch: number;
  /** Optimizer steps taken (filled in from the optimizer on save). */
  globalStep?: number;
  /** Batches done in the current epoch when saved mid-epoch (0 at epoch boundaries). */
  batchInEpoch?: number;
  /** Best test accuracy so far (fraction). */
  bestAccuracy?: number;
  /** The seed of the data order, augmentations and dropout masks. */
  seed: number;
  /** The schedule's description. */
  schedule?: Record<string, unknown>;
  /** Anything else worth keeping (the command line, the model name, ...). Must be JSON-able. */
  extra?: Record<string, unknown>;
}

/** The optimizer file's path for a weights path: `x.safetensors` → `x.optim.safetensors`. */
export function optimizerStatePath(weightsPath: string): string {
  return weightsPath.endsWith(".safetensors")
    ? weightsPath.slice(0, -".safetensors".length) + ".optim.safetensors"
    : weightsPath + ".optim.safetensors";
}

async function toRaw(t: tf.Tensor): Promise<RawTensor> {
  const data = t.dtype === "float32" ? (await t.data()) as Float32Array : Float32Array.from(await t.data());
  const copy = new Float32Array(data); // own the bytes, little-endian on every platform Deno runs on
  return { dtype: "F32", shape: [...t.shape], data: new Uint8Array(copy.buffer) };
}

/**
 * The model's weights as a {@linkcode TensorMap} of float32 tensors under the official keys, in the model's
 * state_dict order.
 */
export async function modelTensors(model: TrainableModel): Promise<TensorMap> {
  const out: TensorMap = new Map();
  for (const [k, t] of model.stateDict()) out.set(k, await toRaw(t));
  return out;
}

/**
 * Writes the model's weights (official keys, float32) as safetensors, atomically. `metadata` is stored in the
 * header (`format: "pt"` is added, as PyTorch-facing safetensors files carry).
 *
 * @example
 * ```ts ignore
 * import { saveWeights } from "./checkpoint.ts";
 * await saveWeights("best.safetensors", model, { architecture: "t2t_vit_14", acc: "98.1" });
 * ```
 */
export async function saveWeights(
  path: string,
  model: TrainableModel,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeSafetensors(path, await modelTensors(model), { format: "pt", ...metadata }, { force: true });
}

/**
 * Saves a resumable checkpoint: the weights at `path` and the optimizer state and training progress at
 * {@linkcode optimizerStatePath}(path). Each file is written atomically.
 *
 * @example
 * ```ts ignore
 * import { saveCheckpoint } from "./checkpoint.ts";
 * await saveCheckpoint("out/last.safetensors", model, optimizer, { epoch: 3, seed: 42 });
 * ```
 */
export async function saveCheckpoint(
  path: string,
  model: TrainableModel,
  optimizer: Optimizer<object>,
  state: TrainingState,
  metadata: Record<string, string> = {},
): Promise<void> {
  const id = crypto.randomUUID();
  const { tensors, meta } = optimizer.stateDict();
  const optTensors: TensorMap = new Map();
  for (const [k, t] of tensors) optTensors.set(k, await toRaw(t));
  const training: TrainingState = { ...state, globalStep: optimizer.steps };
  await writeSafetensors(optimizerStatePath(path), optTensors, {
    format: "t2t-vit-training-state",
    version: "1",
    checkpoint_id: id,
    optimizer: JSON.stringify(meta),
    training: JSON.stringify(training),
  }, { force: true });
  await writeSafetensors(path, await modelTensors(model), {
    format: "pt",
    checkpoint_id: id,
    epoch: String(state.epoch),
    ...metadata,
  }, { force: true });
}

function parseJson<T>(text: string | undefined, file: string, key: string): T {
  if (text === undefined) throw new CheckpointError("missing metadata entry", { file, key });
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new CheckpointError("metadata entry is not valid JSON", { file, key, cause: e });
  }
}

/**
 * Reads the training progress recorded with a checkpoint (the optimizer file's metadata) without loading
 * anything into a model: what a script needs to rebuild the same optimizer before {@linkcode loadCheckpoint}.
 *
 * @throws {CheckpointError} when the file is missing or is not a training-state file
 */
export async function readTrainingState(
  path: string,
): Promise<{ training: TrainingState; optimizer: OptimizerMeta }> {
  const optPath = optimizerStatePath(path);
  let o;
  try {
    o = await readSafetensors(optPath);
  } catch (e) {
    if (
      isNotFound(e) || isNotFound((e as { cause?: unknown }).cause)
    ) {
      throw new CheckpointError("checkpoint file is missing", { file: optPath, cause: e });
    }
    throw e;
  }
  if (o.metadata.format !== "t2t-vit-training-state") {
    throw new CheckpointError("not a training-state file (metadata format is not t2t-vit-training-state)", {
      file: optPath,
    });
  }
  return {
    training: parseJson<TrainingState>(o.metadata.training, optPath, "training"),
    optimizer: parseJson<OptimizerMeta>(o.metadata.optimizer, optPath, "optimizer"),
  };
}

/**
 * Restores a checkpoint written by {@linkcode saveCheckpoint} into `model` (strict: every key, every shape)
 * and `optimizer` (same groups and parameters). Returns the training progress.
 *
 * @throws {CheckpointError} for a missing file, files from different saves, or a state that does not fit
 *
 * @example
 * ```ts ignore
 * import { loadCheckpoint } from "./checkpoint.ts";
 * const { epoch, seed } = await loadCheckpoint("out/last.safetensors", model, optimizer);
 * ```
 */
export async function loadCheckpoint(
  path: string,
  model: TrainableModel,
  optimizer: Optimizer<object>,
): Promise<TrainingState> {
  const optPath = optimizerStatePath(path);
  const read = async (p: string) => {
    try {
      return await readSafetensors(p);
    } catch (e) {
      if (
        isNotFound(e) || isNotFound((e as { cause?: unknown }).cause)
      ) {
        throw new CheckpointError("checkpoint file is missing", { file: p, cause: e });
      }
      throw e;
    }
  };
  const [w, o] = [await read(path), await read(optPath)];
  if (o.metadata.format !== "t2t-vit-training-state") {
    throw new CheckpointError("not a training-state file (metadata format is not t2t-vit-training-state)", {
      file: optPath,
    });
  }
  if (!w.metadata.checkpoint_id || w.metadata.checkpoint_id !== o.metadata.checkpoint_id) {
    throw new CheckpointError(
      `weights ${path} and optimizer state come from different saves (checkpoint_id)`,
      {
        file: optPath,
      },
    );
  }
  const meta = parseJson<OptimizerMeta>(o.metadata.optimizer, optPath, "optimizer");
  const training = parseJson<TrainingState>(o.metadata.training, optPath, "training");
  model.loadStateDict(w.tensors, { strict: true });
  const bufs = new Map<string, Float32Array>();
  for (const [k, t] of o.tensors) {
    if (t.dtype !== "F32") {
      throw new CheckpointError(`optimizer buffer is ${t.dtype}, expected F32`, { file: optPath, key: k });
    }
    bufs.set(k, toFloat32(t));
  }
  try {
    optimizer.loadStateDict(bufs, meta);
  } catch (e) {
    throw new CheckpointError((e as Error).message, { file: optPath, cause: e });
  }
  return training;
}
