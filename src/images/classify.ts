/**
 * Images through a model: batching preprocessed images into NCHW tensors, top-k classes with softmax
 * probabilities, features for embeddings, and the per-image attention stacks behind attention maps.
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import { ImageError, ModelError } from "../core/errors.ts";
import { labelsFor } from "../labels.ts";
import type { T2tVit } from "../../zoo/model.ts";
import type { AttentionStack } from "./attention.ts";
import type { RgbImage } from "./image.ts";
import { cifarTransform, evalTransform, type Preprocess, preprocessImage } from "./transforms.ts";

/** One class of a prediction. */
export interface Prediction {
  /** Class index. */
  index: number;
  /** Class name (`class <index>` when no names are known). */
  label: string;
  /** Softmax probability. */
  probability: number;
}

/** Which preprocessing: the model's evaluation transform (timm, ImageNet) or the CIFAR transfer one. */
export type TransformKind = "eval" | "cifar";

/**
 * The preprocessing a model expects: `eval` is timm's evaluation transform from the model's
 * `pretrainedCfg` (Resize(floor(size / 0.9)) bicubic, CenterCrop(size), ImageNet mean/std); `cifar` the
 * official transfer script's test transform at the model's size.
 *
 * @example
 * ```ts ignore
 * import { createModel } from "../../zoo/mod.ts";
 * import { modelPreprocess } from "./classify.ts";
 * const model = await createModel("t2t_vit_7");
 * modelPreprocess(model); // { resize: 248, crop: [224, 224], interpolation: "bicubic", ... }
 * ```
 */
export function modelPreprocess(model: T2tVit, kind: TransformKind = "eval"): Preprocess {
  if (kind === "cifar") return cifarTransform(model.config.imgSize);
  if (kind !== "eval") throw new ImageError(`unknown transform '${kind}' (eval or cifar)`);
  return evalTransform(model.pretrainedCfg);
}

/**
 * Stacks CHW float32 images of one size into an NCHW tensor (the caller disposes it).
 *
 * @example
 * ```ts
 * import { batchTensor } from "./classify.ts";
 * const x = batchTensor([new Float32Array(3 * 4 * 4), new Float32Array(3 * 4 * 4)], 4, 4); // [2, 3, 4, 4]
 * x.dispose();
 * ```
 */
export function batchTensor(items: readonly Float32Array[], height: number, width: number): tf.Tensor4D {
  const per = 3 * height * width;
  if (items.length === 0) throw new ImageError("cannot batch zero images");
  const data = new Float32Array(items.length * per);
  items.forEach((t, i) => {
    if (t.length !== per) {
      throw new ImageError(`image ${i} has ${t.length} values, expected 3x${height}x${width}`);
    }
    data.set(t, i * per);
  });
  return tf.tensor4d(data, [items.length, 3, height, width]);
}

/**
 * The `k` most probable classes of one row of logits, with softmax probabilities computed in float64 from
 * the logits (stable: the maximum is subtracted first). Ties keep the lower index first.
 *
 * @example
 * ```ts
 * import { topK } from "./classify.ts";
 * topK(new Float32Array([0, 2, 1]), 2, ["a", "b", "c"]); // [{ index: 1, label: "b", ... }, { index: 2, label: "c", ... }]
 * ```
 */
export function topK(logits: ArrayLike<number>, k: number, labels?: readonly string[]): Prediction[] {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
  if (!Number.isFinite(max)) throw new ModelError("logits are not finite (NaN or infinite weights?)");
  let sum = 0;
  const p = new Float64Array(n);
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[i] - max);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  return order.slice(0, Math.min(k, n)).map((index) => ({
    index,
    label: labels?.[index] ?? `class ${index}`,
    probability: p[index] / sum,
  }));
}

/** Options of {@link classifyImages}. */
export interface ClassifyOptions {
  /** Classes per image (default 5). */
  topk?: number;
  /** Class names (default: {@link labelsFor} the model's class count). */
  labels?: readonly string[];
  /** Preprocessing (default: the model's evaluation transform). */
  preprocess?: Preprocess;
  /** Images per forward pass (default 8). */
  batchSize?: number;
}

/**
 * Classifies decoded images: preprocesses each as the model expects, runs batches through the model and
 * returns the top-k classes per image.
 *
 * @example
 * ```ts ignore
 * import { createModel } from "../../zoo/mod.ts";
 * import { readImage } from "./decode.ts";
 * import { classifyImages } from "./classify.ts";
 * const model = await createModel("t2t_vit_14", { weights: "t2t_vit_14.safetensors" });
 * const [top5] = await classifyImages(model, [await readImage("cat.jpg")]);
 * console.log(top5[0].label, top5[0].probability);
 * ```
 */
export async function classifyImages(
  model: T2tVit,
  images: readonly RgbImage[],
  opts: ClassifyOptions = {},
): Promise<Prediction[][]> {
  const t = opts.preprocess ?? modelPreprocess(model);
  const bs = opts.batchSize ?? 8;
  if (!Number.isInteger(bs) || bs < 1) {
    throw new ImageError(`batch size must be a positive integer, got ${bs}`);
  }
  const labels = opts.labels ?? labelsFor(model.config.numClasses);
  const out: Prediction[][] = [];
  for (let i = 0; i < images.length; i += bs) {
    const batch = images.slice(i, i + bs).map((img) => preprocessImage(img, t).tensor);
    const x = batchTensor(batch, t.crop[0], t.crop[1]);
    let logits: tf.Tensor2D | undefined;
    try {
      logits = model.forward(x);
      const [b, c] = logits.shape;
      const values = await logits.data() as Float32Array;
      for (let r = 0; r < b; r++) out.push(topK(values.subarray(r * c, (r + 1) * c), opts.topk ?? 5, labels));
    } finally {
      x.dispose();
      logits?.dispose();
    }
  }
  return out;
}

/**
 * Splits the attention tensors of `forwardWithAttention` (one `(B, heads, N, N)` per block) into one
 * {@link AttentionStack} per image, downloading them. Does not dispose the tensors.
 *
 * @example
 * ```ts ignore
 * const { logits, attentions } = model.forwardWithAttention(x);
 * const stacks = await attentionStacks(attentions);
 * tf.dispose([logits, ...attentions]);
 * ```
 */
export async function attentionStacks(attentions: readonly tf.Tensor4D[]): Promise<AttentionStack[]> {
  if (attentions.length === 0) throw new ModelError("the model returned no attention maps");
  const [b, h, n, n2] = attentions[0].shape;
  if (n !== n2) throw new ModelError(`attention maps must be square, got ${attentions[0].shape}`);
  const stacks: AttentionStack[] = Array.from(
    { length: b },
    () => ({ numHeads: h, numTokens: n, blocks: [] }),
  );
  for (const a of attentions) {
    if (a.shape.join() !== [b, h, n, n].join()) {
      throw new ModelError(`attention maps differ in shape: ${a.shape} vs ${[b, h, n, n]}`);
    }
    const data = await a.data() as Float32Array;
    const per = h * n * n;
    for (let i = 0; i < b; i++) stacks[i].blocks.push(data.slice(i * per, (i + 1) * per));
  }
  return stacks;
}
