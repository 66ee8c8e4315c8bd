/**
 * One training step done right: the forward pass in training mode (dropout masks drawn from a seeded stream),
 * the loss, `tf.variableGrads` over the optimizer's parameters, optional clipping, the optimizer update, and
 * every intermediate tensor disposed. Plus evaluation over batches.
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import "./install.ts";
import { installTrainingKernels } from "../../zoo/backend/registry.ts";
import { fusedTraining } from "../../zoo/kernels/wasm_backward.ts";
import type { TensorMap } from "../core/types.ts";
import { ModelError } from "../core/errors.ts";
import { countCorrect, crossEntropy, type Labels } from "./loss.ts";
import { AdamW, clipGradNorm, type Gradients, type NamedParameters, type Optimizer } from "./optim.ts";
import { Rng } from "../core/rng.ts";
import type { CosineSchedule } from "./schedule.ts";
import {
  estimateStepMemory,
  type MemoryBudget,
  type MemoryConfig,
  MemoryPlanError,
  type MicroBatchPlan,
  planMicroBatch,
} from "./memory.ts";

/**
 * What training needs from a model; every zoo `T2tVit` satisfies it. `trainableVariables()` holds the
 * parameters PyTorch marks `requires_grad` (all but the performer's `w` and `pos_embed`).
 */
export interface TrainableModel {
  /**
   * NCHW float32 images to logits `[batch, numClasses]`; `training` turns dropout and drop-path on. Random
   * ops take their seeds from `rng` (one `uniform()` draw each, as the op's seed argument): the trainer
   * passes a generator derived from its seed and step, so the masks, and a resumed run, are reproducible.
   * `checkpointBlocks` asks for activation recomputation (models without it may ignore it).
   */
  forward(
    x: tf.Tensor4D,
    opts?: { training?: boolean; rng?: { uniform(): number }; checkpointBlocks?: boolean },
  ): tf.Tensor2D;
  /** Every state_dict tensor under its official key (the model's own tensors). */
  stateDict(): Map<string, tf.Tensor>;
  /** Replaces the weights. */
  loadStateDict(tensors: TensorMap | Map<string, tf.Tensor>, opts?: { strict?: boolean }): void;
  /** Trainable parameters keyed by official name. */
  trainableVariables(): Map<string, tf.Variable>;
}

/** Options of {@linkcode lossAndGradients}. */
export interface LossAndGradientsOptions {
  /** Forward in training mode (dropout, drop-path). Default false (eval mode, as the reference gradients). */
  training?: boolean;
  /** Label smoothing of the cross-entropy. Default 0. */
  labelSmoothing?: number;
  /** The parameters to differentiate (default: all of `model.trainableVariables()`). */
  params?: NamedParameters;
  /** The generator dropout and drop-path masks are drawn from (training mode); default: unseeded. */
  rng?: Rng;
  /**
   * Gradient accumulation: run the batch in chunks of at most this many images and combine their gradients
   * (weighted by chunk size), which equals the full batch's gradient (the models have no batch statistics)
   * while holding only one chunk's activations. Default: the whole batch at once.
   */
  microBatch?: number;
  /**
   * Recompute each backbone block's activations in the backward pass instead of keeping them (see the zoo's
   * `ForwardOptions.checkpointBlocks`): same gradients, much less memory per image, about a third more compute.
   */
  checkpointBlocks?: boolean;
}

/** Loss, logits and gradients of one batch. The caller disposes all three. */
export interface LossAndGradients {
  /** Mean cross-entropy. */
  loss: tf.Scalar;
  /** The logits the loss was computed from. */
  logits: tf.Tensor2D;
  /** Gradients keyed by parameter name (parameters the loss does not depend on are absent). */
  grads: Gradients;
}

/**
 * The mean cross-entropy of `model.forward(x)` against `labels` and its gradients with respect to the model's
 * trainable parameters (by official name), computed with `tf.variableGrads`. Nothing else is left allocated.
 *
 * @example
 * ```ts ignore
 * import { disposeGradients, lossAndGradients } from "./trainer.ts";
 * const { loss, logits, grads } = lossAndGradients(model, x, [3, 7]);
 * console.log(loss.dataSync()[0], grads.get("head.bias")!.shape);
 * loss.dispose(); logits.dispose(); disposeGradients(grads);
 * ```
 */
export function lossAndGradients(
  model: TrainableModel,
  x: tf.Tensor4D,
  labels: Labels,
  opts: LossAndGradientsOptions = {},
): LossAndGradients {
  installTrainingKernels(tf.getBackend());
  const params = opts.params ?? model.trainableVariables();
  const vars: tf.Variable[] = [];
  const keyOf = new Map<string, string>();
  for (const [k, v] of params) {
    if (!v.trainable) continue;
    vars.push(v);
    keyOf.set(v.name, k);
  }
  if (vars.length === 0) throw new ModelError("no trainable parameters to differentiate");
  const batch = x.shape[0];
  // Check the labels before the forward pass: an error inside tf.variableGrads would strand the tensors
  // the tape saved for the backward pass.
  const labelArr = labels instanceof tf.Tensor ? Int32Array.from(labels.dataSync()) : Int32Array.from(labels);
  if (labelArr.length !== batch) {
    throw new ModelError(`got ${labelArr.length} labels for a batch of ${batch}`);
  }
  const classes = model.trainableVariables().get("head.bias")?.shape[0] ??
    model.stateDict().get("head.bias")?.shape[0];
  for (const l of labelArr) {
    if (!Number.isInteger(l) || l < 0 || (classes !== undefined && l >= classes)) {
      throw new ModelError(`label ${l} is outside [0, ${classes ?? "numClasses"})`);
    }
  }
  const micro = opts.microBatch;
  if (micro !== undefined && !(Number.isInteger(micro) && micro >= 1)) {
    throw new ModelError(`microBatch must be a positive integer, got ${micro}`);
  }
  if (micro === undefined || micro >= batch) return gradsOnce(model, x, labelArr, vars, keyOf, opts);
  const grads: Gradients = new Map();
  const logits: tf.Tensor2D[] = [];
  let loss: tf.Scalar = tf.scalar(0);
  try {
    for (let s = 0; s < batch; s += micro) {
      const n = Math.min(micro, batch - s);
      const w = n / batch;
      const xs = tf.slice(x, [s, 0, 0, 0], [n, -1, -1, -1]);
      let r: LossAndGradients;
      try {
        r = gradsOnce(model, xs, labelArr.subarray(s, s + n), vars, keyOf, opts);
      } finally {
        xs.dispose();
      }
      logits.push(r.logits);
      const prevLoss = loss;
      loss = tf.tidy(() => tf.add(prevLoss, tf.mul(r.loss, w)));
      prevLoss.dispose();
      r.loss.dispose();
      for (const [k, g] of r.grads) {
        const prev = grads.get(k);
        grads.set(k, tf.tidy(() => (prev ? tf.add(prev, tf.mul(g, w)) : tf.mul(g, w))));
        prev?.dispose();
        g.dispose();
      }
    }
    const all = tf.concat(logits, 0) as tf.Tensor2D;
    return { loss, logits: all, grads };
  } catch (e) {
    loss.dispose();
    disposeGradients(grads);
    throw e;
  } finally {
    for (const l of logits) l.dispose();
  }
}

function gradsOnce(
  model: TrainableModel,
  x: tf.Tensor4D,
  labels: Labels,
  vars: tf.Variable[],
  keyOf: Map<string, string>,
  opts: LossAndGradientsOptions,
): LossAndGradients {
  let logits: tf.Tensor2D | undefined;
  const run = () =>
    tf.variableGrads(() => {
      // the random ops take their seeds from opts.rng: the masks are a pure function of the generator
      const out = model.forward(x, {
        training: opts.training ?? false,
        rng: opts.rng,
        checkpointBlocks: opts.checkpointBlocks,
      });
      logits = tf.keep(out);
      return crossEntropy(out, labels, { labelSmoothing: opts.labelSmoothing });
    }, vars);
  let result: ReturnType<typeof run>;
  try {
    result = run();
  } catch (e) {
    logits?.dispose();
    throw e;
  }
  const { value, grads } = result;
  const named: Gradients = new Map();
  for (const [vname, g] of Object.entries(grads)) {
    if (g) named.set(keyOf.get(vname)!, g);
  }
  return { loss: value, logits: logits!, grads: named };
}

/** Disposes every tensor of a gradient map. */
export function disposeGradients(grads: Gradients): void {
  for (const g of grads.values()) g.dispose();
}

/** Options of {@linkcode Trainer}. */
export interface TrainerOptions {
  /** Label smoothing of the cross-entropy (default 0, as the transfer script's `nn.CrossEntropyLoss()`). */
  labelSmoothing?: number;
  /** Clip gradients to this global 2-norm (default: no clipping). */
  clipGradNorm?: number;
  /** Seed of the dropout/drop-path masks (with the global step). Default 0. */
  seed?: number;
  /** Schedule applied per epoch by {@linkcode Trainer.startEpoch}. */
  schedule?: CosineSchedule;
  /**
   * Gradient accumulation chunk size (see {@linkcode LossAndGradientsOptions.microBatch}). Default `"auto"`:
   * the largest chunk whose step fits the backend's memory by the estimate of `memory.ts` (models with a
   * `config`; others run whole batches). A number is checked against the same estimate; a step that cannot fit
   * throws {@linkcode MemoryPlanError} before anything runs.
   */
  microBatch?: number | "auto";
  /**
   * Recompute block activations in the backward pass (see {@linkcode LossAndGradientsOptions.checkpointBlocks}).
   * Default `"auto"`: only when a step would not fit the backend's memory without it (gradients are the same).
   */
  checkpointBlocks?: boolean | "auto";
  /** The memory a step may use (default: `memoryBudget()` of the running backend). */
  memoryBudget?: MemoryBudget;
}

/** Result of one training step. */
export interface StepResult {
  /** The batch's mean loss. */
  loss: number;
  /** How many predictions (before the update) were right. */
  correct: number;
  /** Batch size. */
  count: number;
  /** Global gradient norm before clipping (only when clipping is on). */
  gradNorm?: number;
}

/** Result of an evaluation pass. */
export interface EvalResult {
  /** Mean loss over the samples. */
  loss: number;
  /** Fraction of samples classified right. */
  accuracy: number;
  /** Number right. */
  correct: number;
  /** Number of samples. */
  total: number;
}

/** A batch of NCHW float32 images and their labels. */
export interface Batch {
  /** Images `[batch, 3, H, W]`. */
  x: tf.Tensor4D;
  /** Labels, one per image. */
  labels: Int32Array;
}

/**
 * Drives training of a model with an optimizer: `startEpoch(e)` sets the learning rates from the schedule,
 * `trainStep(x, labels)` does forward, loss, gradients, clipping and the update, and leaves no tensor behind.
 * Dropout masks of step `s` come from `Rng.derive(seed, "dropout", s)`, so a run resumed at step `s` continues
 * exactly as the uninterrupted one.
 *
 * @example
 * ```ts ignore
 * import { createModel } from "../../zoo/mod.ts";
 * import { SGD, transferParamGroups, Trainer, CosineSchedule } from "./mod.ts";
 * const model = await createModel("t2t_vit_7", { weights: "t2t_vit_7.safetensors", numClasses: 10 });
 * const opt = new SGD(transferParamGroups(model.trainableVariables(), { lr: 0.01 }), {
 *   lr: 0.01, momentum: 0.9, weightDecay: 5e-4,
 * });
 * const trainer = new Trainer(model, opt, { schedule: new CosineSchedule({ tInitial: 60, lrMin: 2e-4 }) });
 * trainer.startEpoch(0);
 * const { loss, correct } = await trainer.trainStep(x, labels);
 * ```
 */
export class Trainer {
  /** The model being trained. */
  readonly model: TrainableModel;
  /** Its optimizer. */
  readonly optimizer: Optimizer<object>;
  /** Resolved options. */
  readonly options: Readonly<TrainerOptions>;
  /** The epoch `startEpoch` was last called with. */
  epoch = 0;
  #plans = new Map<string, MicroBatchPlan | undefined>();

  /** Binds a model and an optimizer whose groups hold (some of) the model's trainable variables. */
  constructor(model: TrainableModel, optimizer: Optimizer<object>, opts: TrainerOptions = {}) {
    this.model = model;
    this.optimizer = optimizer;
    this.options = { seed: 0, labelSmoothing: 0, ...opts };
  }

  /**
   * The micro-batch plan for batches of `batch` images at `imgSize` (default: the model's), or `undefined`
   * when the model has no config to estimate from (whole batches then, or the number given). Cached.
   *
   * @throws {MemoryPlanError} when not even one image fits (or the requested micro-batch does not)
   */
  plan(batch: number, imgSize?: number): MicroBatchPlan | undefined {
    const cfg = (this.model as { config?: MemoryConfig }).config;
    const img = imgSize ?? cfg?.imgSize ?? 0;
    const key = `${batch}:${img}`;
    if (this.#plans.has(key)) return this.#plans.get(key);
    let plan: MicroBatchPlan | undefined;
    if (cfg && img > 0) {
      let params = 0;
      for (const t of this.model.stateDict().values()) params += t.size;
      const buffers = this.optimizer instanceof AdamW ? 2 : 1;
      const mb = this.options.microBatch;
      const ck = this.options.checkpointBlocks ?? "auto";
      const make = (checkpointBlocks: boolean) =>
        planMicroBatch({
          memory: estimateStepMemory(cfg, params, {
            imgSize: img,
            optimizerBuffers: buffers,
            checkpointBlocks,
            fused: fusedTraining(),
          }),
          batch,
          imgSize: img,
          budget: this.options.memoryBudget,
          requested: typeof mb === "number" ? mb : undefined,
          checkpointBlocks,
        });
      if (ck === "auto") {
        try {
          plan = make(false);
        } catch (e) {
          if (!(e instanceof MemoryPlanError)) throw e;
          plan = make(true);
        }
      } else {
        plan = make(ck);
      }
    }
    this.#plans.set(key, plan);
    return plan;
  }

  /** Number of optimizer steps taken so far (restored from checkpoints). */
  get globalStep(): number {
    return this.optimizer.steps;
  }

  /** Starts epoch `epoch`: applies the schedule (if any) to every group. Returns the groups' rates. */
  startEpoch(epoch: number): number[] {
    this.epoch = epoch;
    if (this.options.schedule) return this.options.schedule.apply(this.optimizer, epoch);
    return this.optimizer.groups.map((g) => g.lr);
  }

  /** One training step on a batch (the caller keeps ownership of `x`). */
  async trainStep(x: tf.Tensor4D, labels: Labels): Promise<StepResult> {
    const plan = this.plan(x.shape[0], x.shape[2]);
    const rng = Rng.derive(this.options.seed ?? 0, "dropout", this.globalStep);
    const { loss, logits, grads } = lossAndGradients(this.model, x, labels, {
      training: true,
      labelSmoothing: this.options.labelSmoothing,
      params: this.optimizer.parameters(),
      rng,
      checkpointBlocks: plan ? plan.checkpointBlocks : this.options.checkpointBlocks === true,
      microBatch: plan?.microBatch ??
        (typeof this.options.microBatch === "number" ? this.options.microBatch : undefined),
    });
    let used = grads;
    let normT: tf.Scalar | undefined;
    try {
      if (this.options.clipGradNorm !== undefined) {
        const c = clipGradNorm(grads, this.options.clipGradNorm);
        used = c.grads;
        normT = c.totalNorm;
      }
      this.optimizer.step(used);
      const [lossV, correct, normV] = await Promise.all([
        loss.data(),
        countCorrect(logits, labels),
        normT ? normT.data() : Promise.resolve(undefined),
      ]);
      const r: StepResult = { loss: lossV[0], correct, count: logits.shape[0] };
      if (normV) r.gradNorm = normV[0];
      return r;
    } finally {
      loss.dispose();
      logits.dispose();
      disposeGradients(grads);
      if (used !== grads) disposeGradients(used);
      normT?.dispose();
    }
  }

  /** Evaluates the model (eval mode) over batches; each batch's `x` is disposed after use. */
  async evaluate(
    batches: Iterable<Batch> | AsyncIterable<Batch>,
    onBatch?: (done: number, r: EvalResult) => void,
  ): Promise<EvalResult> {
    return await evaluate(this.model, batches, onBatch);
  }
}

/**
 * Evaluates `model` in eval mode on batches (each batch's `x` is disposed after use): mean cross-entropy and
 * accuracy. `onBatch` is called after every batch with the running totals.
 *
 * @example
 * ```ts ignore
 * import { evaluate } from "./trainer.ts";
 * const { accuracy } = await evaluate(model, cifarBatches(test, { batchSize: 100, imgSize: 224 }));
 * ```
 */
export async function evaluate(
  model: TrainableModel,
  batches: Iterable<Batch> | AsyncIterable<Batch>,
  onBatch?: (done: number, r: EvalResult) => void,
): Promise<EvalResult> {
  let lossSum = 0, correct = 0, total = 0;
  for await (const b of batches) {
    try {
      const logits = model.forward(b.x, { training: false });
      try {
        const l = crossEntropy(logits, b.labels, { reduction: "sum" });
        const [lv, n] = await Promise.all([l.data(), countCorrect(logits, b.labels)]);
        l.dispose();
        lossSum += lv[0];
        correct += n;
        total += logits.shape[0];
      } finally {
        logits.dispose();
      }
    } finally {
      b.x.dispose();
    }
    onBatch?.(total, { loss: lossSum / total, accuracy: correct / total, correct, total });
  }
  return { loss: total ? lossSum / total : NaN, accuracy: total ? correct / total : NaN, correct, total };
}
