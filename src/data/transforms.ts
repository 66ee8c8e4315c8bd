/**
 * The official CIFAR transfer transforms (`transfer_learning.py`) and a batch loader:
 *
 * - train: `Resize(img_size)`, `RandomCrop(img_size, padding=img_size // 8)` (zero padding), `RandomHorizontalFlip()`,
 *   `ToTensor()`, `Normalize(CIFAR_MEAN, CIFAR_STD)`;
 * - test: `Resize(img_size)`, `ToTensor()`, `Normalize(CIFAR_MEAN, CIFAR_STD)`.
 *
 * torchvision resizes the PIL image with Pillow's bilinear filter (8-bit result). Two implementations:
 *
 * - `"pillow"`: the image is resized on the CPU with a Pillow-exact resampler (8-bit, as torchvision's),
 *   cropped, flipped and normalised in JavaScript; the batch tensor equals torchvision's. The default for the
 *   test transform (evaluation numbers comparable with the official script's).
 * - `"tensor"`: the 32×32 images are uploaded as they are and resized on the backend with
 *   `tf.image.resizeBilinear` (half-pixel centres, the same interpolation for upsampling, without the 8-bit
 *   rounding: values differ from torchvision's by at most half a level), then padded, cropped and flipped with
 *   two batched gathers. The default for training: it uploads 49× fewer bytes at 224 and keeps the CPU free.
 *
 * Random draws follow torchvision's order per image (crop top, crop left, then flip) from
 * `Rng.derive(seed, "augment", epoch, index)`, and the epoch's shuffle from `Rng.derive(seed, "shuffle", epoch)`,
 * so any batch of any epoch can be rebuilt exactly (resuming mid-run).
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import { DatasetError } from "../core/errors.ts";
import { Rng } from "../core/rng.ts";
import { CIFAR_IMAGE_BYTES, CIFAR_MEAN, CIFAR_SIZE, CIFAR_STD, type CifarSplit } from "./cifar.ts";
import { resizeImage } from "../images/resize.ts";

/** How the `Resize(img_size)` step is done (see the module docs). */
export type ResizeMode = "pillow" | "tensor";

/** Options of the CIFAR transforms and {@linkcode cifarBatches}. */
export interface CifarTransformOptions {
  /** Output side (the script's `--img-size`, default 224). */
  imgSize?: number;
  /** Training transform (random crop with padding, flip) or test transform. */
  train: boolean;
  /** Zero padding of the random crop (default `floor(imgSize / 8)`, the official value). */
  padding?: number;
  /** Flip probability (default 0.5). */
  flipProbability?: number;
  /** Per-channel mean (default {@linkcode CIFAR_MEAN}). */
  mean?: readonly [number, number, number];
  /** Per-channel std (default {@linkcode CIFAR_STD}). */
  std?: readonly [number, number, number];
  /** Resize implementation; default `"tensor"` for train, `"pillow"` for test. */
  resize?: ResizeMode;
}

/** The random choices of one training image. */
export interface Augmentation {
  /** Crop offset from the top of the padded image. */
  top: number;
  /** Crop offset from the left of the padded image. */
  left: number;
  /** Mirror horizontally. */
  flip: boolean;
}

/** The augmentation of image `index` in `epoch` (torchvision's draw order: top, left, flip). */
export function drawAugmentation(
  seed: number,
  epoch: number,
  index: number,
  padding: number,
  flipProbability = 0.5,
): Augmentation {
  const r = Rng.derive(seed, "augment", epoch, index);
  const top = r.int(2 * padding + 1);
  const left = r.int(2 * padding + 1);
  return { top, left, flip: r.uniform() < flipProbability };
}

function resolve(opts: CifarTransformOptions) {
  const imgSize = opts.imgSize ?? 224;
  if (!Number.isInteger(imgSize) || imgSize < 1) throw new DatasetError(`imgSize must be a positive integer`);
  const padding = opts.padding ?? Math.floor(imgSize / 8);
  if (!Number.isInteger(padding) || padding < 0) throw new DatasetError(`padding must be an integer >= 0`);
  return {
    imgSize,
    padding,
    flipProbability: opts.flipProbability ?? 0.5,
    mean: opts.mean ?? CIFAR_MEAN,
    std: opts.std ?? CIFAR_STD,
    resize: opts.resize ?? (opts.train ? "tensor" : "pillow") as ResizeMode,
  };
}

/**
 * Resizes one CIFAR image (3 planes of 32×32) to `size`×`size` with Pillow's bilinear filter, as
 * torchvision's `Resize(size)` does on the PIL image. Returns 3 planes of `size`×`size` (8-bit).
 */
export function resizePlanes(planes: Uint8Array, size: number): Uint8Array {
  if (size === CIFAR_SIZE) return planes.slice();
  const hw = CIFAR_SIZE * CIFAR_SIZE;
  const rgb = new Uint8Array(hw * 3);
  for (let i = 0; i < hw; i++) {
    rgb[3 * i] = planes[i];
    rgb[3 * i + 1] = planes[hw + i];
    rgb[3 * i + 2] = planes[2 * hw + i];
  }
  const out = resizeImage({ width: CIFAR_SIZE, height: CIFAR_SIZE, data: rgb }, size, size, "bilinear").data;
  const n = size * size;
  const res = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) {
    res[i] = out[3 * i];
    res[n + i] = out[3 * i + 1];
    res[2 * n + i] = out[3 * i + 2];
  }
  return res;
}

/**
 * The transformed images `indices` of `split` as one NCHW float32 array (`[n, 3, imgSize, imgSize]`), on the
 * CPU with the Pillow-exact resize: the tensor torchvision's transform would give. `augment[i]` is image i's
 * crop and flip (training transform); omit it for the test transform.
 */
export function transformCpu(
  split: CifarSplit,
  indices: ArrayLike<number>,
  opts: CifarTransformOptions,
  augment?: Augmentation[],
): Float32Array {
  const o = resolve(opts);
  const s = o.imgSize, n = s * s;
  const out = new Float32Array(indices.length * 3 * n);
  const lut = [0, 1, 2].map((c) => {
    const t = new Float32Array(256);
    // float32 at every step, as ToTensor and Normalize compute it
    const f = Math.fround, m = f(o.mean[c]), sd = f(o.std[c]);
    for (let v = 0; v < 256; v++) t[v] = f(f(f(v / 255) - m) / sd);
    return t;
  });
  for (let b = 0; b < indices.length; b++) {
    const idx = indices[b];
    const img = resizePlanes(
      split.images.subarray(idx * CIFAR_IMAGE_BYTES, (idx + 1) * CIFAR_IMAGE_BYTES),
      s,
    );
    const a = augment?.[b];
    for (let c = 0; c < 3; c++) {
      const base = (b * 3 + c) * n;
      const plane = img.subarray(c * n, (c + 1) * n);
      const zero = lut[c][0];
      if (!a) {
        for (let i = 0; i < n; i++) out[base + i] = lut[c][plane[i]];
        continue;
      }
      for (let y = 0; y < s; y++) {
        const sy = y + a.top - o.padding;
        for (let x = 0; x < s; x++) {
          const cx = a.flip ? s - 1 - x : x; // flip after crop: output column x reads crop column s-1-x
          const sx = cx + a.left - o.padding;
          out[base + y * s + x] = sy >= 0 && sy < s && sx >= 0 && sx < s ? lut[c][plane[sy * s + sx]] : zero;
        }
      }
    }
  }
  return out;
}

/**
 * The same transform on the backend (`"tensor"` resize mode): returns the NCHW batch tensor. Crop and flip
 * are two batched gathers over the zero-padded, resized batch.
 */
export function transformTensor(
  split: CifarSplit,
  indices: ArrayLike<number>,
  opts: CifarTransformOptions,
  augment?: Augmentation[],
): tf.Tensor4D {
  const o = resolve(opts);
  const B = indices.length, s = o.imgSize, p = o.padding;
  const raw = new Float32Array(B * CIFAR_IMAGE_BYTES);
  for (let b = 0; b < B; b++) {
    const src = split.images.subarray(indices[b] * CIFAR_IMAGE_BYTES, (indices[b] + 1) * CIFAR_IMAGE_BYTES);
    for (let i = 0; i < CIFAR_IMAGE_BYTES; i++) raw[b * CIFAR_IMAGE_BYTES + i] = src[i];
  }
  return tf.tidy(() => {
    let x: tf.Tensor4D = tf.transpose(tf.tensor4d(raw, [B, 3, CIFAR_SIZE, CIFAR_SIZE]), [0, 2, 3, 1]);
    x = tf.div(x, 255) as tf.Tensor4D;
    if (s !== CIFAR_SIZE) x = tf.image.resizeBilinear(x, [s, s], false, true);
    if (augment) {
      if (p > 0) x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]);
      const rows = new Int32Array(B * s), cols = new Int32Array(B * s);
      for (let b = 0; b < B; b++) {
        const a = augment[b];
        for (let i = 0; i < s; i++) {
          rows[b * s + i] = a.top + i;
          cols[b * s + i] = a.left + (a.flip ? s - 1 - i : i);
        }
      }
      x = tf.gather(x, tf.tensor2d(rows, [B, s], "int32"), 1, 1) as tf.Tensor4D;
      x = tf.gather(x, tf.tensor2d(cols, [B, s], "int32"), 2, 1) as tf.Tensor4D;
    }
    const mean = tf.tensor4d([...o.mean], [1, 1, 1, 3]);
    const std = tf.tensor4d([...o.std], [1, 1, 1, 3]);
    return tf.transpose(tf.div(tf.sub(x, mean), std), [0, 3, 1, 2]) as tf.Tensor4D;
  });
}

/** Options of {@linkcode cifarBatches}. */
export interface CifarBatchOptions extends CifarTransformOptions {
  /** Images per batch. */
  batchSize: number;
  /** Shuffle the order each epoch (default: `train`). */
  shuffle?: boolean;
  /** Seed of the shuffle and the augmentations (default 0). */
  seed?: number;
  /** Epoch number: selects the shuffle and the augmentations (default 0). */
  epoch?: number;
  /** Drop a last incomplete batch (default false, as PyTorch's `DataLoader`). */
  dropLast?: boolean;
  /** Skip this many batches (resuming within an epoch). Default 0. */
  startBatch?: number;
  /** Use only the first `limit` images (after shuffling). */
  limit?: number;
}

/** Number of batches {@linkcode cifarBatches} yields for `count` images. */
export function numBatches(count: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/** A batch from {@linkcode cifarBatches}: images, labels and the dataset indices they came from. */
export interface CifarBatch {
  /** NCHW float32 images; the consumer disposes it. */
  x: tf.Tensor4D;
  /** Labels. */
  labels: Int32Array;
  /** Dataset indices of the images. */
  indices: Int32Array;
}

/**
 * Batches of a CIFAR split through the official transform, lazily (one batch tensor at a time; the consumer
 * disposes each `x`).
 *
 * @example
 * ```ts ignore
 * import { cifarBatches, readCifar } from "./mod.ts";
 * const train = await readCifar("./data", "cifar10", "train");
 * for (const { x, labels } of cifarBatches(train, { batchSize: 128, imgSize: 224, train: true, epoch: 0 })) {
 *   // ... x.dispose();
 * }
 * ```
 */
export function* cifarBatches(split: CifarSplit, opts: CifarBatchOptions): Generator<CifarBatch> {
  const o = resolve(opts);
  const seed = opts.seed ?? 0, epoch = opts.epoch ?? 0;
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
    throw new DatasetError(`batchSize must be a positive integer, got ${opts.batchSize}`);
  }
  const where = `${split.dataset} ${split.split}`;
  if (!Number.isSafeInteger(split.count) || split.count < 0) {
    throw new DatasetError(`image count ${split.count} is not a non-negative integer`, { file: where });
  }
  if (split.images.length < split.count * CIFAR_IMAGE_BYTES) {
    throw new DatasetError(
      `${split.count} images need ${
        split.count * CIFAR_IMAGE_BYTES
      } bytes, the split holds ${split.images.length}`,
      { file: where },
    );
  }
  if (split.labels.length < split.count) {
    throw new DatasetError(`${split.count} images but ${split.labels.length} labels`, { file: where });
  }
  const shuffle = opts.shuffle ?? opts.train;
  let order: Int32Array;
  if (shuffle) order = Rng.derive(seed, "shuffle", epoch).permutation(split.count);
  else order = Int32Array.from({ length: split.count }, (_, i) => i);
  if (opts.limit !== undefined) order = order.subarray(0, Math.min(opts.limit, order.length));
  const nb = numBatches(order.length, opts.batchSize, opts.dropLast);
  for (let bi = opts.startBatch ?? 0; bi < nb; bi++) {
    const indices = order.slice(bi * opts.batchSize, Math.min((bi + 1) * opts.batchSize, order.length));
    const labels = Int32Array.from(indices, (i) => split.labels[i]);
    const augment = opts.train
      ? Array.from(indices, (i) => drawAugmentation(seed, epoch, i, o.padding, o.flipProbability))
      : undefined;
    const x = o.resize === "pillow"
      ? tf.tensor4d(transformCpu(split, indices, opts, augment), [indices.length, 3, o.imgSize, o.imgSize])
      : transformTensor(split, indices, opts, augment);
    yield { x, labels, indices };
  }
}
