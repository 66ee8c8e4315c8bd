/**
 * The zoo: `createModel(name | config, options)` and one class per official variant, each with a static
 * `create`. They pick a backend when none is set, read weights from a safetensors path, URL, bytes or a
 * tensor map, and load them strictly (dropping the head for another class count and resizing `pos_embed`
 * for another image size, as the official transfer loader does).
 *
 * @module
 */

import { tf } from "../src/core/tf.ts";
import type { Checkpoint } from "../converters/checkpoint.ts";
import { configKwargs, detectArchitecture } from "./arch.ts";
import { architectureOf } from "./metadata.ts";
import type { RawTensor } from "../src/core/types.ts";
import { ensureBackend } from "./backend/backend.ts";
import { prepareWeights } from "./kernels/fused.ts";
import { ModelError, T2tVitError } from "../src/core/errors.ts";
import { T2tVit } from "./model.ts";
import {
  configForWeights,
  configFromMetadata,
  isModelName,
  MODEL_CONFIGS,
  MODEL_NAMES,
  type ModelName,
  resolveConfig,
  type T2tVitConfig,
  type T2tVitConfigInit,
} from "./configs.ts";
import { type HubOptions, loadPretrainedBytes } from "./hub.ts";
import { type PretrainedTag, resolvePretrained } from "./pretrained.ts";
import { checkpointFilter, type FilteredWeights, readWeights, type StateDict } from "./loader.ts";

/** The total element count of a tensor map (what a file's `config` may ask a model to hold). */
export function tensorElements(tensors: StateDict): number {
  let n = 0;
  for (const t of (tensors as Map<string, RawTensor | tf.Tensor>).values()) {
    n += t.shape.reduce((a: number, b: number) => a * b, 1);
  }
  return n;
}

/** Options of {@linkcode createModel} and the variants' `create`. */
export interface CreateOptions {
  /**
   * Weights: a safetensors file or PyTorch checkpoint as a path (in a browser: a URL relative to the page), a
   * URL (`file:`, `http(s):`), bytes, a `Blob`/`File` (a file picked in a page; its name labels errors), or a
   * map of tensors by PyTorch key (raw tensors, e.g. from a converter, or `tf.Tensor`s). Without weights the
   * model gets the official random initialisation (seeded by `seed`).
   */
  weights?: string | URL | Uint8Array | Blob | StateDict;
  /**
   * The authors' released weights instead of `weights`: `true` for the model's default (`in1k`), or a
   * variant (`"in1k_384"`, `"in1k_token_labeling"`, `"in1k_ft_cifar10"`, ...) or full tag
   * (`"t2t_vit_14.in1k_384"`); see `PRETRAINED_WEIGHTS`. Downloaded once (progress on stderr), converted with
   * verification and cached; later calls load from the cache without network. `hub` says where and how.
   */
  pretrained?: boolean | string;
  /** Cache folder, base URL, offline mode, progress and retries of `pretrained` (see {@linkcode HubOptions}). */
  hub?: HubOptions;
  /**
   * Classes of the head. Default: the weights' head size, else 1000. When the weights' head has another
   * size, it is dropped and the new head initialised (the official `load_for_transfer_learning`).
   */
  numClasses?: number;
  /**
   * Input size (a multiple of 16). Default: the size the weights' `pos_embed` was made for, else 224.
   * A `pos_embed` of another size is resized bicubically.
   */
  imgSize?: number;
  /** Attention scale; default `head_dim ** -0.5` (what the released weights were evaluated with). */
  qkScale?: number;
  /** Dropout rate (training mode). */
  dropRate?: number;
  /** Attention dropout rate (training mode). */
  attnDropRate?: number;
  /** Stochastic depth rate of the last block (training mode). */
  dropPathRate?: number;
  /** Whether missing or unexpected keys are errors (default true). */
  strict?: boolean;
  /** Seed of the random initialisation (default 0). */
  seed?: number;
}

/** A constructor of a model class (`T2tVit` or one of the variants). */
export type ModelClass<M extends T2tVit = T2tVit> = new (
  config: T2tVitConfig,
  init?: { name?: string; seed?: number; deferInit?: boolean },
) => M;

/** Weights read but not yet filtered, and the file they came from. */
interface Source {
  state: StateDict | Checkpoint;
  file?: string;
}

async function build<M extends T2tVit>(
  cls: ModelClass<M>,
  name: string,
  base: T2tVitConfig | T2tVitConfigInit,
  opts: CreateOptions,
  source?: Source,
): Promise<M> {
  if (typeof opts !== "object" || opts === null) throw new ModelError("options must be an object");
  await ensureBackend();
  const pretrained = opts.pretrained !== undefined && opts.pretrained !== false;
  if (pretrained && (opts.weights !== undefined || source !== undefined)) {
    throw new ModelError("pass either weights or pretrained, not both");
  }
  if (pretrained) {
    if (cls === T2tVit) {
      throw new ModelError("pretrained weights exist for the official variants only", { key: name });
    }
    const got = await loadPretrainedBytes(name, opts.pretrained as true | string, opts.hub);
    source = { state: (await readWeights(got.bytes)).state, file: got.file };
  } else if (source === undefined && opts.weights !== undefined) {
    source = opts.weights instanceof Map ? { state: opts.weights } : await readWeights(opts.weights);
  }
  const overrides: { -readonly [K in keyof T2tVitConfig]?: T2tVitConfig[K] } = {};
  for (const k of ["numClasses", "imgSize", "qkScale", "dropRate", "attnDropRate", "dropPathRate"] as const) {
    if (opts[k] !== undefined) (overrides as Record<string, unknown>)[k] = opts[k];
  }
  let weights: FilteredWeights | undefined;
  if (source !== undefined) {
    // the checkpoint filter: key, `module.`, head for another class count, pos_embed for another size; the
    // class count and image size default to the weights'
    weights = checkpointFilter(source.state, {
      numClasses: overrides.numClasses,
      imgSize: overrides.imgSize,
      embedDim: base.embedDim,
      file: source.file,
    });
    if (weights.numClasses !== undefined) overrides.numClasses = weights.numClasses;
    if (weights.imgSize !== undefined) overrides.imgSize = weights.imgSize;
  }
  try {
    const config = resolveConfig({ ...base, ...overrides } as T2tVitConfigInit);
    const model = new cls(config, { name, seed: opts.seed, deferInit: weights !== undefined });
    try {
      if (weights !== undefined) {
        const report = model.loadStateDict(weights.tensors, {
          strict: opts.strict ?? true,
          file: source!.file,
          skip: weights.dropped,
        });
        // what the weights did not set (a dropped head; missing keys without strict) starts as initialised
        const loaded = new Set(report.loaded);
        const fresh = [...model.stateDict().keys()].filter((k) => !loaded.has(k));
        if (fresh.length) model.resetParameters(fresh);
      }
    } catch (e) {
      model.dispose();
      throw e;
    }
    // pack for the backend's kernels, and make room for a batch of one's activations now rather than in
    // the first forward pass. The first T2T stage, on (imgSize / 4)^2 tokens, holds the most: about 900
    // floats per token (soft split, its norm, k/q/v, the performer's buffers), plus the attention kernel's
    // buffers when the token mixer is attention (one head of tokenDim channels).
    const tokens = (model.config.imgSize / 4) ** 2;
    prepareWeights(
      model.stateDict(),
      4 * 1024 * tokens,
      model.config.tokensType === "transformer" ? { tokens, headDim: model.config.tokenDim } : undefined,
    );
    return model;
  } finally {
    if (weights?.owned.length) tf.dispose(weights.owned);
  }
}

/** T2T-ViT-7: performer tokens, 7 blocks of width 256, 4 heads, MLP ratio 2 (4.3M parameters). */
export class T2tVit7 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit7> {
    return build(T2tVit7, "t2t_vit_7", MODEL_CONFIGS.t2t_vit_7, opts);
  }
}

/** T2T-ViT-10: performer tokens, 10 blocks of width 256, 4 heads, MLP ratio 2 (5.9M parameters). */
export class T2tVit10 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit10> {
    return build(T2tVit10, "t2t_vit_10", MODEL_CONFIGS.t2t_vit_10, opts);
  }
}

/** T2T-ViT-12: performer tokens, 12 blocks of width 256, 4 heads, MLP ratio 2 (6.9M parameters). */
export class T2tVit12 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit12> {
    return build(T2tVit12, "t2t_vit_12", MODEL_CONFIGS.t2t_vit_12, opts);
  }
}

/**
 * T2T-ViT-14: performer tokens, 14 blocks of width 384, 6 heads, MLP ratio 3 (21.5M parameters).
 *
 * @example
 * ```ts ignore
 * import { setBackend, T2tVit14, tf } from "../mod.ts";
 * await setBackend("wasm");
 * const m = await T2tVit14.create({ weights: "t2t_vit_14.safetensors" });
 * const logits = m.forward(tf.zeros([1, 3, 224, 224]));
 * ```
 */
export class T2tVit14 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit14> {
    return build(T2tVit14, "t2t_vit_14", MODEL_CONFIGS.t2t_vit_14, opts);
  }
}

/** T2T-ViT-19: performer tokens, 19 blocks of width 448, 7 heads, MLP ratio 3 (39.2M parameters). */
export class T2tVit19 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit19> {
    return build(T2tVit19, "t2t_vit_19", MODEL_CONFIGS.t2t_vit_19, opts);
  }
}

/** T2T-ViT-24: performer tokens, 24 blocks of width 512, 8 heads, MLP ratio 3 (64.1M parameters). */
export class T2tVit24 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit24> {
    return build(T2tVit24, "t2t_vit_24", MODEL_CONFIGS.t2t_vit_24, opts);
  }
}

/** T2T-ViT_t-14: transformer tokens, 14 blocks of width 384, 6 heads, MLP ratio 3 (21.5M parameters). */
export class T2tVitT14 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVitT14> {
    return build(T2tVitT14, "t2t_vit_t_14", MODEL_CONFIGS.t2t_vit_t_14, opts);
  }
}

/** T2T-ViT_t-19: transformer tokens, 19 blocks of width 448, 7 heads, MLP ratio 3 (39.2M parameters). */
export class T2tVitT19 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVitT19> {
    return build(T2tVitT19, "t2t_vit_t_19", MODEL_CONFIGS.t2t_vit_t_19, opts);
  }
}

/** T2T-ViT_t-24: transformer tokens, 24 blocks of width 512, 8 heads, MLP ratio 3 (64.1M parameters). */
export class T2tVitT24 extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVitT24> {
    return build(T2tVitT24, "t2t_vit_t_24", MODEL_CONFIGS.t2t_vit_t_24, opts);
  }
}

/** T2T-ViT-14 with ResNeXt-like grouped attention: 32 heads of width 12 (21.5M parameters). */
export class T2tVit14Resnext extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit14Resnext> {
    return build(T2tVit14Resnext, "t2t_vit_14_resnext", MODEL_CONFIGS.t2t_vit_14_resnext, opts);
  }
}

/** The wide variant: 4 blocks of width 768, 12 heads, MLP ratio 3 (25.2M parameters). */
export class T2tVit14Wide extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit14Wide> {
    return build(T2tVit14Wide, "t2t_vit_14_wide", MODEL_CONFIGS.t2t_vit_14_wide, opts);
  }
}

/** T2T-ViT-14 with squeeze-and-excitation after each attention projection (21.8M parameters). */
export class T2tVit14Se extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit14Se> {
    return build(T2tVit14Se, "t2t_vit_14_se", MODEL_CONFIGS.t2t_vit_14_se, opts);
  }
}

/** T2T-ViT-16 with ghost attention and MLP (cheap per-channel feature copies; 16.3M parameters). */
export class T2tVit16Ghost extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVit16Ghost> {
    return build(T2tVit16Ghost, "t2t_vit_16_ghost", MODEL_CONFIGS.t2t_vit_16_ghost, opts);
  }
}

/** The densely connected variant: stages of 3, 6, 6, 4 blocks growing by 64 channels, width 128 to 584 (23.6M parameters). */
export class T2tVitDense extends T2tVit {
  /** Builds the variant (see {@linkcode createModel} for the options). */
  static create(opts: CreateOptions = {}): Promise<T2tVitDense> {
    return build(T2tVitDense, "t2t_vit_dense", MODEL_CONFIGS.t2t_vit_dense, opts);
  }
}

/** The class of each official variant. */
export const MODEL_CLASSES: Readonly<
  Record<ModelName, ModelClass<T2tVit> & { create(opts?: CreateOptions): Promise<T2tVit> }>
> = Object.freeze({
  t2t_vit_7: T2tVit7,
  t2t_vit_10: T2tVit10,
  t2t_vit_12: T2tVit12,
  t2t_vit_14: T2tVit14,
  t2t_vit_19: T2tVit19,
  t2t_vit_24: T2tVit24,
  t2t_vit_t_14: T2tVitT14,
  t2t_vit_t_19: T2tVitT19,
  t2t_vit_t_24: T2tVitT24,
  t2t_vit_14_resnext: T2tVit14Resnext,
  t2t_vit_14_wide: T2tVit14Wide,
  t2t_vit_14_se: T2tVit14Se,
  t2t_vit_16_ghost: T2tVit16Ghost,
  t2t_vit_dense: T2tVitDense,
});

/**
 * Builds a model: an official variant by name, or by weights tag as timm takes it
 * (`"t2t_vit_14.in1k_384"`: the tag's architecture, image size and class count, and its weights with
 * `pretrained: true`), or a custom architecture (a full or partial {@linkcode T2tVitConfig}). Picks the best
 * backend if none is set yet.
 *
 * @throws {ModelError} for an unknown name or an invalid configuration
 * @throws {WeightsError} when the weights cannot be read or do not fit (one error listing every problem)
 *
 * @example
 * ```ts ignore
 * import { createModel, tf } from "../mod.ts";
 * const m = await createModel("t2t_vit_t_14", { weights: "t2t_vit_t_14.safetensors", numClasses: 10, imgSize: 160 });
 * const logits = m.forward(tf.zeros([2, 3, 160, 160])); // (2, 10)
 * m.dispose();
 * ```
 */
export function createModel(
  name: ModelName | PretrainedTag | T2tVitConfig | T2tVitConfigInit,
  opts: CreateOptions = {},
): Promise<T2tVit> {
  if (typeof name === "string" && name.includes(".")) {
    // a tag (`t2t_vit_14.in1k_384`), as timm takes it: its architecture at the tag's size and class count,
    // with the tag's weights when `pretrained` is set
    let w;
    try {
      w = resolvePretrained(
        name,
        opts.pretrained === undefined || opts.pretrained === false ? true : opts.pretrained,
      );
    } catch (e) {
      return Promise.reject(e);
    }
    const pretrained = opts.pretrained === undefined || opts.pretrained === false ? undefined : w.variant;
    return build(MODEL_CLASSES[w.model], w.model, MODEL_CONFIGS[w.model], {
      ...opts,
      pretrained,
      imgSize: opts.imgSize ?? (pretrained === undefined ? w.imgSize : undefined),
      numClasses: opts.numClasses ?? (pretrained === undefined ? w.numClasses : undefined),
    });
  }
  if (typeof name === "string") {
    if (!isModelName(name)) {
      return Promise.reject(
        new ModelError(`unknown model '${name}' (known: ${MODEL_NAMES.join(", ")})`, { key: name }),
      );
    }
    const n = name as ModelName;
    return build(MODEL_CLASSES[n], n, MODEL_CONFIGS[n], opts);
  }
  if (typeof name !== "object" || name === null) {
    return Promise.reject(new T2tVitError("createModel expects a model name or a config object"));
  }
  return build(T2tVit, "custom", name, opts);
}

/**
 * Builds the model a weights file describes: a converted or trained file names its architecture
 * (`architecture` metadata, `arch` in older training checkpoints; `config` for custom models) and a PyTorch
 * checkpoint is recognised from its tensors, so
 * no name is needed. Options as {@linkcode createModel} (class count and image size default to the weights').
 *
 * @throws {ModelError} when the file does not say which architecture it holds
 * @throws {WeightsError} when the weights cannot be read or do not fit
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../mod.ts";
 * const m = await loadModel("81.5_T2T_ViT_14.pth.tar"); // T2tVit14 with the checkpoint's EMA weights
 * ```
 */
export async function loadModel(
  weights: string | URL | Uint8Array | Blob,
  opts: Omit<CreateOptions, "weights"> = {},
): Promise<T2tVit> {
  const { state, file, metadata } = await readWeights(weights);
  if (!(state instanceof Map)) {
    // a PyTorch checkpoint: its weights (key chosen, `module.` stripped) show the architecture
    const { tensors, hints } = checkpointFilter(state, { file });
    const arch = detectArchitecture(tensors, { hints });
    if (isModelName(arch.name)) {
      return build(MODEL_CLASSES[arch.name], arch.name, MODEL_CONFIGS[arch.name], opts, {
        state: tensors,
        file,
      });
    }
    if (arch.blockType !== null) {
      const cfg = configForWeights(configKwargs(arch), tensorElements(tensors), file, { requireHeads: true });
      return build(T2tVit, "custom", cfg, opts, { state: tensors, file });
    }
  } else {
    const arch = architectureOf(metadata);
    if (arch !== undefined && isModelName(arch)) {
      return build(MODEL_CLASSES[arch], arch, MODEL_CONFIGS[arch], opts, { state, file });
    }
    if (metadata.config !== undefined) {
      const cfg = configFromMetadata(metadata.config, tensorElements(state), file, { requireHeads: true });
      return build(T2tVit, "custom", cfg, opts, { state, file });
    }
  }
  throw new ModelError(
    "the weights do not name their architecture; build the model with createModel(name, { weights })",
    { file, key: "architecture" },
  );
}
