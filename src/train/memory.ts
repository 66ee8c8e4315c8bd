/**
 * Memory planning for training steps: how many bytes a forward + backward pass of a T2T-ViT holds per image,
 * estimated from the model's config and image size, what the running backend can hold, and the largest
 * micro-batch (gradient accumulation chunk) that fits. A step that cannot fit is refused before it starts,
 * with a {@linkcode MemoryPlanError} that names the flag to change, instead of a wasm `Aborted()`.
 *
 * The estimate counts what tfjs keeps alive at the peak of a step (the end of the backward pass: every tensor
 * the tape saved plus every intermediate gradient, views counted as tfjs counts them), fitted to measured
 * peaks (`tf.profile(...).peakBytes`) of `t2t_vit_7/14/24` at 64, 128 and 224 px (within 5%, t2t_vit_24 at
 * 64 px 11% under; a 25% margin is added):
 *
 *     bytes/image = 1.24e6 * P + 357 * depth * N * (D + H) + 63.2 * depth * heads * N^2
 *
 * with `P = (img/16)^2` patches, `N = P + 1` tokens, `D` the width and `H` the MLP width. The real wasm heap
 * stays below it (about 0.7 of it at 224 px).
 *
 * On wasm with our kernels (`fused`), training runs the fused GELU, LayerNorm, attention and soft split with
 * their backward kernels (`zoo/kernels/wasm_backward.ts`): no attention map is kept (the backward pass
 * recomputes it) and far fewer element-wise intermediates are. Fitted the same way to the marginal image of
 * `t2t_vit_7/14/24` at 128 and 224 px (232, 76, 370 and 639 MB measured; the fit is within 9%, under for
 * `t2t_vit_7`; the same 25% margin is added; `t2t_vit_14` at 384 px checks it):
 *
 *     bytes/image = 8.6e5 * P + 52 * depth * N * (D + H)
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import { T2tVitError } from "../core/errors.ts";

/** A training step that cannot fit in the backend's memory; the message names the flag or option to change. */
export class MemoryPlanError extends T2tVitError {}

/** The parts of a model config the estimate needs (every zoo `T2tVit.config` has them). */
export interface MemoryConfig {
  /** Input size in pixels. */
  imgSize: number;
  /** `"performer"` or `"transformer"` tokens-to-token layers. */
  tokensType: string;
  /** Backbone width. */
  embedDim: number;
  /** Backbone blocks. */
  depth: number;
  /** Attention heads. */
  numHeads: number;
  /** MLP width over `embedDim`. */
  mlpRatio: number;
  /** Token width of the tokens-to-token layers (64 in every official model). */
  tokenDim?: number;
}

/** The memory of one training step, in bytes. */
export interface StepMemory {
  /** Activations and their gradients per image (what the micro-batch multiplies). */
  perImage: number;
  /** Independent of the micro-batch: weights, their gradients and accumulated gradients, optimizer buffers. */
  fixed: number;
  /** The largest single tensor per image (WebGPU binds each tensor as one storage buffer). */
  largestTensorPerImage: number;
  /**
   * An eval-mode forward per image (no tape; tfjs still holds a forward's intermediates until it ends):
   * measured 74 and 137 MB for `t2t_vit_7` and `t2t_vit_14` at 224, estimated as 0.15 of a training step's.
   */
  evalPerImage: number;
  /** The weights alone. */
  weights: number;
}

/** Safety factor over the fitted estimate. */
const MARGIN = 1.25;

/**
 * Estimates the memory of a training step of a model with `params` parameters (total) from its config, at
 * `imgSize`. `optimizerBuffers` is how many parameter-sized buffers the optimizer keeps (SGD with momentum 1,
 * AdamW 2). With `checkpointBlocks`, each backbone block's activations are recomputed in the backward pass,
 * so only the block inputs stay and one block's activations are alive at a time.
 */
export function estimateStepMemory(
  cfg: MemoryConfig,
  params: number,
  opts: { imgSize?: number; optimizerBuffers?: number; checkpointBlocks?: boolean; fused?: boolean } = {},
): StepMemory {
  const img = opts.imgSize ?? cfg.imgSize;
  const p = Math.floor(img / 16) ** 2;
  const n = p + 1;
  const d = cfg.embedDim, h = Math.floor(cfg.embedDim * cfg.mlpRatio), heads = cfg.numHeads;
  const depth = Math.max(1, cfg.depth);
  const fused = opts.fused ?? false;
  const n1 = 16 * p;
  let genericT2t = 1.24e6 * p;
  if (cfg.tokensType === "transformer") {
    // full attention over the soft split's tokens: (img/4)^2 and (img/8)^2 squared maps
    genericT2t += 63.2 * 2 * (n1 * n1 + (4 * p) * (4 * p));
  }
  const genericBlock = 357 * n * (d + h) + 63.2 * heads * n * n;
  const t2t = fused ? 8.6e5 * p : genericT2t;
  const block = fused ? 52 * n * (d + h) : genericBlock;
  // eval-mode forwards run the fused kernels with or without training ones: the same measured figure
  const generic = genericT2t + depth * genericBlock;
  const evalPerImage = Math.ceil(0.15 * MARGIN * generic);
  const blocks = opts.checkpointBlocks
    ? depth * n * d * 4 * 2 + 2 * block // saved inputs (and their gradients) + one block recomputed
    : depth * block;
  const perImage = Math.ceil(MARGIN * (t2t + blocks));
  const fixed = Math.ceil(params * 4 * (3 + (opts.optimizerBuffers ?? 1)));
  const tokenDim = cfg.tokenDim ?? 64;
  const largest = 4 * Math.max(
    n1 * 3 * tokenDim,
    n1 * 147,
    heads * n * n,
    n * 3 * d,
    n * h,
    cfg.tokensType === "transformer" ? n1 * n1 : 0,
  );
  return { perImage, fixed, largestTensorPerImage: largest, evalPerImage, weights: params * 4 };
}

/** What a backend can hold for one step. */
export interface MemoryBudget {
  /** Backend name. */
  backend: string;
  /** Bytes the whole step may use (weights, optimizer, batch and activations). */
  total: number;
  /** The largest single tensor (WebGPU's `maxStorageBufferBindingSize`/`maxBufferSize`), if limited. */
  maxTensor?: number;
  /** Where the numbers come from. */
  source: string;
}

/** Bytes the estimate may reach on wasm: its heap tops out at 4 GiB; room is left for growth and fragments. */
export const WASM_STEP_BUDGET = 3 * 2 ** 30;

/**
 * The memory the running backend offers a training step: wasm 3 GiB of its 4 GiB heap; WebGPU the device's
 * `maxStorageBufferBindingSize` and `maxBufferSize` per tensor (its total memory is not exposed, so half of the
 * machine's is assumed); cpu half of the machine's available memory.
 */
export function memoryBudget(backend: string = tf.getBackend()): MemoryBudget {
  const sysAvail = (() => {
    try {
      const info = Deno.systemMemoryInfo();
      return info.available > 0 ? info.available : info.total;
    } catch {
      return 8 * 2 ** 30;
    }
  })();
  if (backend === "wasm") {
    return { backend, total: WASM_STEP_BUDGET, source: "wasm heap (4 GiB at most; 3 GiB planned)" };
  }
  if (backend === "webgpu") {
    const dev =
      (tf.engine().findBackend("webgpu") as unknown as { device?: { limits?: Record<string, number> } })
        ?.device;
    const lim = dev?.limits ?? {};
    const caps = [lim.maxStorageBufferBindingSize, lim.maxBufferSize].filter((v) =>
      typeof v === "number" && v > 0
    );
    return {
      backend,
      total: Math.floor(sysAvail / 2),
      maxTensor: caps.length ? Math.min(...caps) : 128 * 2 ** 20,
      source: "WebGPU maxStorageBufferBindingSize/maxBufferSize per tensor",
    };
  }
  return { backend, total: Math.floor(sysAvail / 2), source: "half of the machine's available memory" };
}

/** The outcome of {@linkcode planMicroBatch}. */
export interface MicroBatchPlan {
  /** Images per forward/backward chunk (equal to the batch when it fits whole). */
  microBatch: number;
  /** Chunks per optimizer step. */
  chunks: number;
  /** The estimate used. */
  memory: StepMemory;
  /** The budget used. */
  budget: MemoryBudget;
  /** Whether the plan recomputes block activations in the backward pass. */
  checkpointBlocks: boolean;
  /** Estimated peak bytes of a step with this micro-batch. */
  estimatedPeak: number;
  /** One line for the user. */
  summary: string;
}

const mb = (b: number) => `${Math.round(b / 2 ** 20)} MB`;

/**
 * The largest micro-batch (at most `batch`) whose step fits `budget` by {@linkcode estimateStepMemory}, or the
 * `requested` one checked against it. Throws {@linkcode MemoryPlanError} naming `--micro-batch`, `--img-size`
 * or `--checkpoint-blocks` when nothing fits.
 */
export function planMicroBatch(opts: {
  memory: StepMemory;
  batch: number;
  imgSize: number;
  budget?: MemoryBudget;
  requested?: number;
  checkpointBlocks?: boolean;
}): MicroBatchPlan {
  const budget = opts.budget ?? memoryBudget();
  const m = opts.memory;
  const inputBytes = opts.batch * 3 * opts.imgSize * opts.imgSize * 4;
  const room = budget.total - m.fixed - inputBytes;
  let fit = Math.floor(room / m.perImage);
  if (budget.maxTensor !== undefined) {
    fit = Math.min(fit, Math.floor(budget.maxTensor / m.largestTensorPerImage));
  }
  const fixes = `use a smaller --img-size${
    opts.checkpointBlocks ? "" : " or --checkpoint-blocks"
  }, or another backend`;
  const need = `${mb(m.perImage)} per image${opts.checkpointBlocks ? " (blocks recomputed)" : ""} + ${
    mb(m.fixed + inputBytes)
  } fixed`;
  if (opts.requested !== undefined) {
    if (opts.requested > fit) {
      throw new MemoryPlanError(
        `--micro-batch ${opts.requested} does not fit the ${budget.backend} backend: a step needs about ${need}, ` +
          `${mb(budget.total)} available (${budget.source}); ` +
          (fit >= 1 ? `use --micro-batch ${fit}${fit > 1 ? " or less" : ""}` : fixes),
      );
    }
    fit = opts.requested;
  }
  if (fit < 1) {
    throw new MemoryPlanError(
      `one image does not fit the ${budget.backend} backend at ${opts.imgSize} px: a step needs about ${need}, ` +
        `${mb(budget.total)} available (${budget.source}); ${fixes}`,
    );
  }
  // as few chunks as fit, evenly sized (16 in chunks of at most 11: two of 8)
  const chunks = Math.ceil(opts.batch / Math.min(fit, opts.batch));
  const microBatch = Math.min(opts.requested ?? Math.ceil(opts.batch / chunks), opts.batch);
  const estimatedPeak = m.fixed + inputBytes + microBatch * m.perImage;
  const summary =
    `micro-batch ${microBatch}${chunks > 1 ? ` (${chunks} chunks per batch of ${opts.batch})` : ""}` +
    `: about ${mb(estimatedPeak)} per step of ${mb(budget.total)} (${budget.source})`;
  return {
    microBatch,
    chunks,
    memory: m,
    budget,
    checkpointBlocks: opts.checkpointBlocks ?? false,
    estimatedPeak,
    summary,
  };
}

/**
 * The evaluation (or feature extraction) batch: `requested` images, or fewer when an eval-mode forward of that
 * many would not fit `budget` by {@linkcode StepMemory.evalPerImage} (at least 1).
 */
export function planEvalBatch(
  memory: StepMemory,
  requested: number,
  imgSize: number,
  budget: MemoryBudget = memoryBudget(),
): number {
  const perImage = memory.evalPerImage + 3 * imgSize * imgSize * 4;
  let fit = Math.floor((budget.total - memory.weights) / perImage);
  if (budget.maxTensor !== undefined) {
    fit = Math.min(fit, Math.floor(budget.maxTensor / memory.largestTensorPerImage));
  }
  return Math.max(1, Math.min(requested, fit));
}
