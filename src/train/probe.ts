/**
 * Linear probing (`--freeze-backbone`): the backbone runs once per image at the eval transform, its features
 * (the class token after the final norm) are cached as safetensors keyed by model, weights, image size and
 * transform, and only the head is trained on them, in seconds. The official recipe's augmentation (random
 * crop, flip) does not apply: each image has one cached feature vector.
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import { readSafetensors, toFloat32, writeSafetensors } from "../../converters/safetensors.ts";
import type { TensorMap } from "../core/types.ts";
import { CheckpointError } from "../core/errors.ts";
import type { CifarSplit } from "../data/cifar.ts";
import { cifarBatches, numBatches } from "../data/transforms.ts";
import { countCorrect, crossEntropy } from "./loss.ts";
import type { Optimizer } from "./optim.ts";
import { Rng } from "../core/rng.ts";

/** Features of a split: `[count, dim]` float32, row `i` for image `i`, and the labels. */
export interface FeatureSet {
  /** Row-major `[count, dim]`. */
  features: Float32Array;
  /** One label per row. */
  labels: Int32Array;
  /** Rows. */
  count: number;
  /** Feature width. */
  dim: number;
  /** Whether the set came from the cache file. */
  cached: boolean;
}

/** What identifies a feature cache: the same key gives the same features. */
export interface FeatureKey {
  /** Model name. */
  model: string;
  /** A digest of the weights the backbone was loaded from (`"init"` plus the seed for fresh weights). */
  weights: string;
  /** Input size. */
  imgSize: number;
  /** The transform (`"cifar-eval"`: resize and normalise). */
  transform: string;
  /** Dataset and split. */
  split: string;
  /** Number of images. */
  count: number;
}

/** SHA-256 of a file, hex (the weights part of a {@linkcode FeatureKey}). */
export async function fileDigest(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The cache file of a key in `dir`. */
export async function featureCachePath(dir: string, key: FeatureKey): Promise<string> {
  const text = JSON.stringify(key);
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  const hex = [...d.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${dir}/features-${key.model}-${key.imgSize}-${key.split.replace("/", "-")}-${hex}.safetensors`;
}

/** What {@linkcode extractFeatures} needs from a model. */
export interface FeatureModel {
  /** Eval-mode features `(B, dim)`. */
  forwardFeatures(x: tf.Tensor4D): tf.Tensor2D;
}

/**
 * The features of `split` (its first `limit` images, in order) at the eval transform, read from the cache in
 * `cacheDir` when a file with the same key is there, else computed (`batchSize` images at a time) and cached
 * (written atomically). `onBatch(done, total)` reports progress.
 */
export async function extractFeatures(
  model: FeatureModel,
  split: CifarSplit,
  opts: {
    key: Omit<FeatureKey, "count" | "split" | "transform">;
    imgSize: number;
    batchSize: number;
    limit?: number;
    cacheDir: string;
    onBatch?: (done: number, total: number) => void;
  },
): Promise<FeatureSet> {
  const count = Math.min(split.count, opts.limit ?? Infinity);
  const key: FeatureKey = {
    ...opts.key,
    transform: "cifar-eval",
    split: `${split.dataset}/${split.split}`,
    count,
  };
  const path = await featureCachePath(opts.cacheDir, key);
  try {
    const f = await readSafetensors(path);
    if (f.metadata.key !== JSON.stringify(key)) {
      throw new CheckpointError("feature cache key does not match", { file: path });
    }
    const feats = f.tensors.get("features"), labels = f.tensors.get("labels");
    if (!feats || !labels || feats.shape[0] !== count || labels.dtype !== "I32") {
      throw new CheckpointError("feature cache is incomplete", { file: path });
    }
    const lab = new Int32Array(labels.data.slice().buffer);
    return { features: toFloat32(feats), labels: lab, count, dim: feats.shape[1], cached: true };
  } catch (e) {
    if (
      !(e instanceof Deno.errors.NotFound || (e as { cause?: unknown }).cause instanceof Deno.errors.NotFound)
    ) {
      if (!(e instanceof CheckpointError)) throw e;
    }
  }
  let features: Float32Array | undefined;
  let dim = 0;
  const labels = new Int32Array(count);
  let done = 0;
  const total = numBatches(count, opts.batchSize);
  let batches = 0;
  for (
    const b of cifarBatches(split, {
      batchSize: opts.batchSize,
      imgSize: opts.imgSize,
      train: false,
      shuffle: false,
      limit: count,
    })
  ) {
    try {
      const f = model.forwardFeatures(b.x);
      const v = (await f.data()) as Float32Array;
      f.dispose();
      dim = f.shape[1];
      features ??= new Float32Array(count * dim);
      features.set(v, done * dim);
      labels.set(b.labels, done);
      done += b.labels.length;
    } finally {
      b.x.dispose();
    }
    opts.onBatch?.(++batches, total);
  }
  features ??= new Float32Array(0);
  await Deno.mkdir(opts.cacheDir, { recursive: true });
  const tensors: TensorMap = new Map([
    ["features", { dtype: "F32", shape: [count, dim], data: new Uint8Array(features.buffer) }],
    ["labels", { dtype: "I32", shape: [count], data: new Uint8Array(labels.buffer) }],
  ]);
  await writeSafetensors(path, tensors, { format: "t2t-vit-features", key: JSON.stringify(key) }, {
    force: true,
  });
  return { features, labels, count, dim, cached: false };
}

/** The head a probe trains: `logits = features @ weight^T + bias` (the model's own `head.*` variables). */
export interface ProbeHead {
  /** `[classes, dim]`. */
  weight: tf.Variable;
  /** `[classes]`. */
  bias: tf.Variable;
}

/**
 * One epoch of the head on cached features: shuffled by `Rng.derive(seed, "shuffle", epoch)`, batches of
 * `batchSize`, cross-entropy, `optimizer.step`. Returns the mean loss and accuracy (before each update).
 */
export async function probeEpoch(
  head: ProbeHead,
  optimizer: Optimizer<object>,
  set: FeatureSet,
  opts: { batchSize: number; seed: number; epoch: number; labelSmoothing?: number },
): Promise<{ loss: number; accuracy: number }> {
  const order = Rng.derive(opts.seed, "shuffle", opts.epoch).permutation(set.count);
  const names = new Map([[head.weight.name, "head.weight"], [head.bias.name, "head.bias"]]);
  let lossSum = 0, correct = 0;
  for (let s = 0; s < set.count; s += opts.batchSize) {
    const n = Math.min(opts.batchSize, set.count - s);
    const x = new Float32Array(n * set.dim);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const r = order[s + i];
      x.set(set.features.subarray(r * set.dim, (r + 1) * set.dim), i * set.dim);
      y[i] = set.labels[r];
    }
    const xt = tf.tensor2d(x, [n, set.dim]);
    let logits: tf.Tensor2D | undefined;
    const { value, grads } = tf.variableGrads(() => {
      logits = tf.keep(tf.add(tf.matMul(xt, head.weight, false, true), head.bias) as tf.Tensor2D);
      return crossEntropy(logits, y, { labelSmoothing: opts.labelSmoothing });
    }, [head.weight, head.bias]);
    const named = new Map([...Object.entries(grads)].map(([k, g]) => [names.get(k)!, g]));
    optimizer.step(named);
    lossSum += (await value.data())[0] * n;
    correct += await countCorrect(logits!, y);
    for (const g of Object.values(grads)) g.dispose();
    value.dispose();
    logits!.dispose();
    xt.dispose();
  }
  return { loss: lossSum / set.count, accuracy: correct / set.count };
}

/** Loss and accuracy of the head on a feature set. */
export async function probeEvaluate(
  head: ProbeHead,
  set: FeatureSet,
): Promise<{ loss: number; accuracy: number }> {
  const [l, logits] = tf.tidy(() => {
    const xt = tf.tensor2d(set.features, [set.count, set.dim]);
    const logits = tf.add(tf.matMul(xt, head.weight, false, true), head.bias) as tf.Tensor2D;
    return [crossEntropy(logits, set.labels, { reduction: "sum" }), logits];
  });
  try {
    const [lv, correct] = await Promise.all([l.data(), countCorrect(logits, set.labels)]);
    return { loss: lv[0] / set.count, accuracy: correct / set.count };
  } finally {
    tf.dispose([l, logits]);
  }
}
