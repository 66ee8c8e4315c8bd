/**
 * Classification losses with PyTorch's semantics.
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import "./install.ts";
import { ModelError } from "../core/errors.ts";

/** Integer class labels: a plain array, a typed array or an int32 tensor of shape `[batch]`. */
export type Labels = readonly number[] | Int32Array | Uint8Array | tf.Tensor1D;

/** Options of {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /**
   * Label smoothing ε in [0, 1): the target is `(1 - ε) * onehot + ε / numClasses`, as
   * `torch.nn.CrossEntropyLoss(label_smoothing=ε)` and timm's `LabelSmoothingCrossEntropy` define it. Default 0.
   */
  labelSmoothing?: number;
  /** `"mean"` over the batch (default, as PyTorch) or `"sum"`. */
  reduction?: "mean" | "sum";
}

function labelTensor(labels: Labels, batch: number, numClasses: number): tf.Tensor1D {
  if (labels instanceof tf.Tensor) {
    if (labels.rank !== 1 || labels.shape[0] !== batch) {
      throw new ModelError(`labels have shape [${labels.shape}], expected [${batch}]`);
    }
    return labels.dtype === "int32" ? labels : tf.cast(labels, "int32");
  }
  if (labels.length !== batch) throw new ModelError(`got ${labels.length} labels for a batch of ${batch}`);
  const arr = Int32Array.from(labels);
  for (const l of arr) {
    if (!(l >= 0 && l < numClasses)) {
      throw new ModelError(`label ${l} is outside [0, ${numClasses})`);
    }
  }
  return tf.tensor1d(arr, "int32");
}

/**
 * Cross-entropy of `logits` (`[batch, numClasses]`) against integer `labels`, with optional label smoothing:
 * `mean_i  -sum_c q_ic * log_softmax(logits_i)_c`. Differentiable (use inside `tf.variableGrads`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { crossEntropy } from "./loss.ts";
 * const loss = crossEntropy(tf.tensor2d([[2, 0, 0], [0, 0, 3]]), [0, 2], { labelSmoothing: 0.1 });
 * loss.dataSync(); // Float32Array [~0.29]
 * ```
 */
export function crossEntropy(
  logits: tf.Tensor2D,
  labels: Labels,
  opts: CrossEntropyOptions = {},
): tf.Scalar {
  const eps = opts.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps < 1)) throw new ModelError(`labelSmoothing must be in [0, 1), got ${eps}`);
  if (logits.rank !== 2) throw new ModelError(`logits must be [batch, classes], got [${logits.shape}]`);
  const [batch, numClasses] = logits.shape;
  return tf.tidy(() => {
    const y = labelTensor(labels, batch, numClasses);
    const logp = tf.logSoftmax(tf.cast(logits, "float32"), -1);
    const onehot = tf.cast(tf.oneHot(y, numClasses), "float32");
    const target = eps > 0 ? tf.add(tf.mul(onehot, 1 - eps), eps / numClasses) : onehot;
    const perSample = tf.neg(tf.sum(tf.mul(target, logp), -1));
    return (opts.reduction === "sum" ? tf.sum(perSample) : tf.mean(perSample)) as tf.Scalar;
  });
}

/**
 * Number of rows of `logits` whose arg-max equals the label (ties go to the lowest index, like `torch.max`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { countCorrect } from "./loss.ts";
 * const logits = tf.tensor2d([[2, 0], [0, 1]]);
 * await countCorrect(logits, [0, 0]); // 1
 * ```
 */
export async function countCorrect(logits: tf.Tensor2D, labels: Labels): Promise<number> {
  const pred = tf.argMax(logits, -1);
  try {
    const p = await pred.data();
    const l = labels instanceof tf.Tensor ? await labels.data() : labels;
    let n = 0;
    for (let i = 0; i < p.length; i++) if (p[i] === l[i]) n++;
    return n;
  } finally {
    pred.dispose();
  }
}
