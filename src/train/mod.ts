/**
 * Fine-tuning T2T-ViT models: losses, optimizers (SGD, AdamW) with parameter groups, the cosine schedule,
 * gradient clipping, a trainer step and resumable safetensors checkpoints. The CIFAR-10/100 readers and the
 * transforms of the official `transfer_learning.py` are the data entry (`@t2t-vit/t2t-vit/data`).
 *
 * @example
 * ```ts ignore
 * import { createModel } from "../../zoo/mod.ts";
 * import { cifarBatches, readCifar } from "../data/mod.ts";
 * import { CosineSchedule, saveCheckpoint, SGD, Trainer, transferParamGroups } from "./mod.ts";
 * const model = await createModel("t2t_vit_14", { weights: "t2t_vit_14.safetensors", numClasses: 10 });
 * const train = await readCifar("./data", "cifar10", "train");
 * const opt = new SGD(transferParamGroups(model.trainableVariables(), { lr: 0.01, transferRatio: 0.01 }), {
 *   lr: 0.01, momentum: 0.9, weightDecay: 5e-4,
 * });
 * const trainer = new Trainer(model, opt, { schedule: new CosineSchedule({ tInitial: 60, lrMin: 2e-4 }) });
 * trainer.startEpoch(0);
 * for (const { x, labels } of cifarBatches(train, { batchSize: 128, imgSize: 224, train: true, epoch: 0 })) {
 *   const { loss } = await trainer.trainStep(x, labels);
 *   x.dispose();
 * }
 * await saveCheckpoint("last.safetensors", model, opt, { epoch: 1, seed: 0 });
 * ```
 *
 * @module
 */

import "./install.ts"; // the train entry installs the kernel gradients

export { countCorrect, crossEntropy, type CrossEntropyOptions, type Labels } from "./loss.ts";
export {
  AdamW,
  type AdamWOptions,
  clipGradNorm,
  type Gradients,
  type NamedParameters,
  NO_WEIGHT_DECAY,
  Optimizer,
  OptimizerError,
  type OptimizerMeta,
  type ParamGroup,
  type ParamGroupSpec,
  SGD,
  type SgdOptions,
  type TransferGroupOptions,
  transferParamGroups,
  weightDecayParamGroups,
} from "./optim.ts";
export { CosineSchedule, type CosineScheduleOptions, type HasLrGroups } from "./schedule.ts";
export { Rng } from "../core/rng.ts";
export {
  type Batch,
  disposeGradients,
  type EvalResult,
  evaluate,
  type LossAndGradients,
  lossAndGradients,
  type LossAndGradientsOptions,
  type StepResult,
  type TrainableModel,
  Trainer,
  type TrainerOptions,
} from "./trainer.ts";
export {
  loadCheckpoint,
  modelTensors,
  optimizerStatePath,
  readTrainingState,
  saveCheckpoint,
  saveWeights,
  type TrainingState,
} from "./checkpoint.ts";
export {
  estimateStepMemory,
  type MemoryBudget,
  memoryBudget,
  type MemoryConfig,
  MemoryPlanError,
  type MicroBatchPlan,
  planEvalBatch,
  planMicroBatch,
  type StepMemory,
  WASM_STEP_BUDGET,
} from "./memory.ts";
export {
  extractFeatures,
  featureCachePath,
  type FeatureKey,
  type FeatureModel,
  type FeatureSet,
  fileDigest,
  probeEpoch,
  probeEvaluate,
  type ProbeHead,
} from "./probe.ts";
export {
  registerTrainingGradients,
  shareWasmIdentity,
  TRAINING_GRADIENTS,
} from "../../zoo/backend/gradients.ts";
export { installGradients, installTrainingKernels } from "../../zoo/backend/registry.ts";
export { formatDuration, ProgressBar, type ProgressOptions } from "./progress.ts";
