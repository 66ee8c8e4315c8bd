/**
 * The architectures of every official T2T-ViT variant as plain data, with the preprocessing each expects
 * (timm's `default_cfg`), and helpers to build a custom configuration or read the official keyword arguments.
 *
 * @module
 */

import { ModelError } from "../src/core/errors.ts";

/**
 * THE variant table: every factory the official code registers with timm (in the order of its model files),
 * with its architecture (the factory's arguments; the rest are the constructor's defaults, {@link DEFAULT_CONFIG}),
 * its parameter count at 224 px and 1000 classes, and a one-line description. Names ({@link ModelName},
 * {@link MODEL_NAMES}), configurations ({@link MODEL_CONFIGS}), the variant classes, pretrained configs and
 * architecture detection (`detectArchitecture` matches weights against {@link MODEL_CONFIGS}) all derive from it.
 */
export const VARIANTS = {
  t2t_vit_7: {
    tokensType: "performer",
    embedDim: 256,
    depth: 7,
    numHeads: 4,
    mlpRatio: 2,
    params: 4_310_222,
    summary: "T2T-ViT-7: performer tokens, 7 blocks of width 256, 4 heads, MLP ratio 2",
  },
  t2t_vit_10: {
    tokensType: "performer",
    embedDim: 256,
    depth: 10,
    numHeads: 4,
    mlpRatio: 2,
    params: 5_889_230,
    summary: "T2T-ViT-10: performer tokens, 10 blocks of width 256, 4 heads, MLP ratio 2",
  },
  t2t_vit_12: {
    tokensType: "performer",
    embedDim: 256,
    depth: 12,
    numHeads: 4,
    mlpRatio: 2,
    params: 6_941_902,
    summary: "T2T-ViT-12: performer tokens, 12 blocks of width 256, 4 heads, MLP ratio 2",
  },
  t2t_vit_14: {
    tokensType: "performer",
    embedDim: 384,
    depth: 14,
    numHeads: 6,
    mlpRatio: 3,
    params: 21_545_550,
    summary: "T2T-ViT-14: performer tokens, 14 blocks of width 384, 6 heads, MLP ratio 3",
  },
  t2t_vit_19: {
    tokensType: "performer",
    embedDim: 448,
    depth: 19,
    numHeads: 7,
    mlpRatio: 3,
    params: 39_177_422,
    summary: "T2T-ViT-19: performer tokens, 19 blocks of width 448, 7 heads, MLP ratio 3",
  },
  t2t_vit_24: {
    tokensType: "performer",
    embedDim: 512,
    depth: 24,
    numHeads: 8,
    mlpRatio: 3,
    params: 64_105_934,
    summary: "T2T-ViT-24: performer tokens, 24 blocks of width 512, 8 heads, MLP ratio 3",
  },
  t2t_vit_t_14: {
    tokensType: "transformer",
    embedDim: 384,
    depth: 14,
    numHeads: 6,
    mlpRatio: 3,
    params: 21_541_070,
    summary: "T2T-ViT_t-14: transformer tokens, 14 blocks of width 384, 6 heads, MLP ratio 3",
  },
  t2t_vit_t_19: {
    tokensType: "transformer",
    embedDim: 448,
    depth: 19,
    numHeads: 7,
    mlpRatio: 3,
    params: 39_172_942,
    summary: "T2T-ViT_t-19: transformer tokens, 19 blocks of width 448, 7 heads, MLP ratio 3",
  },
  t2t_vit_t_24: {
    tokensType: "transformer",
    embedDim: 512,
    depth: 24,
    numHeads: 8,
    mlpRatio: 3,
    params: 64_101_454,
    summary: "T2T-ViT_t-24: transformer tokens, 24 blocks of width 512, 8 heads, MLP ratio 3",
  },
  t2t_vit_14_resnext: {
    tokensType: "performer",
    embedDim: 384,
    depth: 14,
    numHeads: 32,
    mlpRatio: 3,
    params: 21_545_550,
    summary: "T2T-ViT-14 with ResNeXt-like grouped attention: 32 heads of width 12",
  },
  t2t_vit_14_wide: {
    tokensType: "performer",
    embedDim: 768,
    depth: 4,
    numHeads: 12,
    mlpRatio: 3,
    params: 25_156_302,
    summary: "The wide variant: 4 blocks of width 768, 12 heads, MLP ratio 3",
  },
  t2t_vit_14_se: {
    tokensType: "performer",
    embedDim: 384,
    depth: 14,
    numHeads: 6,
    mlpRatio: 3,
    blockType: "se",
    params: 21_803_598,
    summary: "T2T-ViT-14 with squeeze-and-excitation after each attention projection",
  },
  t2t_vit_16_ghost: {
    tokensType: "performer",
    embedDim: 384,
    depth: 16,
    numHeads: 6,
    mlpRatio: 3,
    blockType: "ghost",
    params: 16_253_262,
    summary: "T2T-ViT-16 with ghost attention and MLP (cheap per-channel feature copies)",
  },
  t2t_vit_dense: {
    tokensType: "performer",
    embedDim: 128,
    depth: 12,
    numHeads: 8,
    mlpRatio: 2,
    blockType: "dense",
    growthRate: 64,
    blockConfig: [3, 6, 6, 4],
    params: 23_647_062,
    summary:
      "The densely connected variant: stages of 3, 6, 6, 4 blocks growing by 64 channels, width 128 to 584",
  },
} as const;

/** The factory names the official code registers with timm: the keys of {@link VARIANTS}. */
export type ModelName = keyof typeof VARIANTS;

/** The 14 official factory names, in the order of the official model files. */
export const MODEL_NAMES: readonly ModelName[] = Object.freeze(Object.keys(VARIANTS) as ModelName[]);

/** Whether a string names an official variant. */
export function isModelName(name: string): name is ModelName {
  return Object.hasOwn(VARIANTS, name);
}

/** The token layers of the T2T module: `Token_performer` or `Token_transformer`. */
export type TokensType = "performer" | "transformer";

/**
 * The backbone block: the standard pre-norm transformer block (`vit`), with squeeze-and-excitation after the
 * attention projection (`se`, `t2t_vit_se.py`), with ghost projections (`ghost`, `t2t_vit_ghost.py`), or
 * the densely connected blocks with transitions (`dense`, `t2t_vit_dense.py`).
 */
export type BlockType = "vit" | "se" | "ghost" | "dense";

/**
 * A complete T2T-ViT architecture: the arguments of the official `T2T_ViT` constructors, camel-cased.
 * Everything here is plain data (JSON-serialisable).
 */
export interface T2tVitConfig {
  /** Input image side; a multiple of 16 (`img_size`, default 224). */
  readonly imgSize: number;
  /** Input channels (`in_chans`, default 3). */
  readonly inChans: number;
  /** Classes of the head; 0 for no head (`num_classes`, default 1000). */
  readonly numClasses: number;
  /** T2T token layers (`tokens_type`). */
  readonly tokensType: TokensType;
  /** Width of the T2T tokens (`token_dim`, default 64). */
  readonly tokenDim: number;
  /** Backbone width (`embed_dim`); for `dense` the starting width. */
  readonly embedDim: number;
  /**
   * Backbone depth (`depth`). For `dense` the number of blocks comes from `blockConfig`; `depth` (12, the
   * official default) only sets the drop-path schedule, which the official code indexes by stage.
   */
  readonly depth: number;
  /** Attention heads per block (`num_heads`). */
  readonly numHeads: number;
  /** MLP hidden width over block width (`mlp_ratio`). */
  readonly mlpRatio: number;
  /** Bias in the backbone q/k/v projections (`qkv_bias`, default false). */
  readonly qkvBias: boolean;
  /**
   * Attention scale (`qk_scale`); `null` is `head_dim ** -0.5`, the default, with which the released
   * checkpoints were evaluated.
   */
  readonly qkScale: number | null;
  /** The backbone block type. */
  readonly blockType: BlockType;
  /** `dense` only: channels each block adds (`growth_rate`). */
  readonly growthRate?: number;
  /** `dense` only: blocks per stage (`block_config`); a transition halving the width follows every stage but the last. */
  readonly blockConfig?: readonly number[];
  /** Dropout rate (`drop_rate`). */
  readonly dropRate: number;
  /** Attention-probability dropout (`attn_drop_rate`). */
  readonly attnDropRate: number;
  /** Stochastic depth rate of the last block (`drop_path_rate`, linear over depth). */
  readonly dropPathRate: number;
}

/** The defaults of the official `T2T_ViT` constructor that the variants do not set. */
export const DEFAULT_CONFIG: Readonly<
  Pick<
    T2tVitConfig,
    | "imgSize"
    | "inChans"
    | "numClasses"
    | "tokenDim"
    | "qkvBias"
    | "qkScale"
    | "dropRate"
    | "attnDropRate"
    | "dropPathRate"
    | "blockType"
    | "tokensType"
  >
> = Object.freeze({
  imgSize: 224,
  inChans: 3,
  numClasses: 1000,
  tokenDim: 64,
  qkvBias: false,
  qkScale: null,
  dropRate: 0,
  attnDropRate: 0,
  dropPathRate: 0,
  blockType: "vit",
  tokensType: "performer",
});

/** The architecture of each official factory (at its default 224 input and 1000 classes), from {@link VARIANTS}. */
export const MODEL_CONFIGS: Readonly<Record<ModelName, T2tVitConfig>> = Object.freeze(
  Object.fromEntries(
    MODEL_NAMES.map((name) => {
      const { params: _params, summary: _summary, ...arch } = VARIANTS[name];
      const extra = "blockConfig" in arch ? { blockConfig: Object.freeze([...arch.blockConfig]) } : {};
      return [name, Object.freeze({ ...DEFAULT_CONFIG, ...arch, ...extra } as T2tVitConfig)];
    }),
  ) as Record<ModelName, T2tVitConfig>,
);

/** ImageNet mean of the RGB channels (timm `IMAGENET_DEFAULT_MEAN`). */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
/** ImageNet standard deviation of the RGB channels (timm `IMAGENET_DEFAULT_STD`). */
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

/** The preprocessing a model expects: timm's `default_cfg`, adjusted to the model's input size and classes. */
export interface PretrainedCfg {
  /** `(channels, height, width)` of the input. */
  inputSize: [3, number, number];
  /** Fraction of the resized image kept by the center crop at evaluation (0.9: resize to size / 0.9). */
  cropPct: number;
  /** Resampling of the resize. */
  interpolation: "bicubic" | "bilinear";
  /** Per-channel mean subtracted after scaling to [0, 1]. */
  mean: [number, number, number];
  /** Per-channel standard deviation divided by. */
  std: [number, number, number];
  /** Number of classes of the head. */
  numClasses: number;
}

/**
 * The default preprocessing of a model with this configuration: every official variant records timm's
 * `_cfg()` (crop 0.9, bicubic, ImageNet mean and std), with `input_size` and `num_classes` following the config.
 *
 * @example
 * ```ts
 * import { MODEL_CONFIGS, pretrainedCfgOf } from "./configs.ts";
 * pretrainedCfgOf(MODEL_CONFIGS.t2t_vit_14).inputSize; // [3, 224, 224]
 * ```
 */
export function pretrainedCfgOf(config: T2tVitConfig): PretrainedCfg {
  return {
    inputSize: [3, config.imgSize, config.imgSize],
    cropPct: 0.9,
    interpolation: "bicubic",
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
    numClasses: config.numClasses,
  };
}

/** A configuration given in part: the required architecture fields, the rest defaulting as in the official constructor. */
export type T2tVitConfigInit = Partial<T2tVitConfig> & Pick<T2tVitConfig, "embedDim" | "depth" | "numHeads">;

function isPosInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v > 0;
}

function isRate(v: unknown): v is number {
  return typeof v === "number" && v >= 0 && v < 1;
}

/**
 * Completes a configuration with the official defaults (`mlpRatio` 4, performer tokens, standard blocks) and
 * checks it.
 *
 * @throws {ModelError} naming the field at fault
 *
 * @example
 * ```ts
 * import { resolveConfig } from "./configs.ts";
 * const cfg = resolveConfig({ imgSize: 32, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 2, tokenDim: 16, numClasses: 10 });
 * ```
 */
export function resolveConfig(init: T2tVitConfigInit): T2tVitConfig {
  const cfg: T2tVitConfig = Object.freeze({ ...DEFAULT_CONFIG, mlpRatio: 4, ...init });
  const bad = (key: string, why: string): never => {
    throw new ModelError(`invalid config: ${why}`, { key });
  };
  if (!isPosInt(cfg.imgSize) || cfg.imgSize % 16 !== 0) {
    bad("imgSize", `imgSize must be a positive multiple of 16, got ${cfg.imgSize}`);
  }
  if (!isPosInt(cfg.inChans)) bad("inChans", `inChans must be a positive integer, got ${cfg.inChans}`);
  if (!(Number.isInteger(cfg.numClasses) && cfg.numClasses >= 0)) {
    bad("numClasses", `numClasses must be a non-negative integer, got ${cfg.numClasses}`);
  }
  if (cfg.tokensType !== "performer" && cfg.tokensType !== "transformer") {
    bad(
      "tokensType",
      `tokensType must be "performer" or "transformer", got ${JSON.stringify(cfg.tokensType)}`,
    );
  }
  if (!isPosInt(cfg.tokenDim)) bad("tokenDim", `tokenDim must be a positive integer, got ${cfg.tokenDim}`);
  if (cfg.tokensType === "performer" && cfg.tokenDim < 2) {
    bad("tokenDim", "the performer needs tokenDim >= 2");
  }
  if (!isPosInt(cfg.embedDim)) bad("embedDim", `embedDim must be a positive integer, got ${cfg.embedDim}`);
  if (!isPosInt(cfg.depth)) bad("depth", `depth must be a positive integer, got ${cfg.depth}`);
  if (!isPosInt(cfg.numHeads)) bad("numHeads", `numHeads must be a positive integer, got ${cfg.numHeads}`);
  if (!(typeof cfg.mlpRatio === "number" && cfg.mlpRatio > 0)) {
    bad("mlpRatio", `mlpRatio must be positive, got ${cfg.mlpRatio}`);
  }
  if (cfg.qkScale !== null && !(typeof cfg.qkScale === "number" && cfg.qkScale > 0)) {
    bad("qkScale", `qkScale must be a positive number or null, got ${cfg.qkScale}`);
  }
  if (!["vit", "se", "ghost", "dense"].includes(cfg.blockType)) {
    bad("blockType", `unknown blockType ${JSON.stringify(cfg.blockType)}`);
  }
  for (const k of ["dropRate", "attnDropRate", "dropPathRate"] as const) {
    if (!isRate(cfg[k])) bad(k, `${k} must be in [0, 1), got ${cfg[k]}`);
  }
  for (const [k, max] of Object.entries(CONFIG_LIMITS) as [keyof typeof CONFIG_LIMITS, number][]) {
    const v = cfg[k];
    if (typeof v === "number" && v > max) bad(k, `${k} ${v} exceeds the limit of ${max}`);
  }
  if (Array.isArray(cfg.blockConfig)) {
    if (cfg.blockConfig.length > 64) bad("blockConfig", "blockConfig has more than 64 stages");
    if (cfg.blockConfig.some((n) => typeof n === "number" && n > CONFIG_LIMITS.depth)) {
      bad("blockConfig", `a blockConfig stage exceeds ${CONFIG_LIMITS.depth} blocks`);
    }
  }
  const widths: number[] = [];
  if (cfg.blockType === "dense") {
    if (!isPosInt(cfg.growthRate)) bad("growthRate", "a dense config needs a positive integer growthRate");
    const bc = cfg.blockConfig;
    if (!Array.isArray(bc) || bc.length === 0 || !bc.every(isPosInt)) {
      bad("blockConfig", "a dense config needs blockConfig, a list of positive integers");
    }
    if (bc!.length > cfg.depth) {
      bad("depth", "the dense drop-path schedule needs depth >= the number of stages");
    }
    let start = cfg.embedDim;
    bc!.forEach((n, i) => {
      for (let j = 0; j < n; j++) widths.push(start + j * cfg.growthRate!);
      if (i !== bc!.length - 1) start = Math.floor((start + n * cfg.growthRate!) / 2);
    });
  } else {
    widths.push(cfg.embedDim);
    if (cfg.blockType === "ghost" && cfg.embedDim % 2 !== 0) {
      bad("embedDim", "the ghost blocks need an even embedDim");
    }
    if (cfg.blockType === "ghost" && Math.floor(cfg.embedDim * cfg.mlpRatio) !== 3 * cfg.embedDim) {
      // Mlp_ghost: fc2 takes fc1's output and its two scaled copies, 3 x embedDim wide
      bad("mlpRatio", `the ghost MLP needs mlpRatio 3 (its fc2 takes 3 x embedDim), got ${cfg.mlpRatio}`);
    }
    if (cfg.blockType === "se" && cfg.embedDim < 16) bad("embedDim", "the SE blocks need embedDim >= 16");
  }
  for (const w of widths) {
    if (w % cfg.numHeads !== 0) {
      bad("numHeads", `block width ${w} is not divisible by numHeads ${cfg.numHeads}`);
    }
  }
  return cfg;
}

/**
 * The largest value each size field may take (every official variant is far inside): a configuration that
 * arrives in a file cannot ask for a model of terabytes. `createModel` refuses anything beyond these.
 */
export const CONFIG_LIMITS: Readonly<{
  imgSize: number;
  inChans: number;
  numClasses: number;
  tokenDim: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  growthRate: number;
}> = Object.freeze({
  imgSize: 4096,
  inChans: 64,
  numClasses: 1_000_000,
  tokenDim: 4096,
  embedDim: 8192,
  depth: 1024,
  numHeads: 1024,
  mlpRatio: 64,
  growthRate: 4096,
});

/**
 * A lower bound on a configuration's parameter count: the attention projections of every block (at least
 * `width²` each), the position embedding and the head. Cheap to compute, and never above the real count.
 */
export function minParameterCount(cfg: T2tVitConfig): number {
  let n = 0;
  if (cfg.blockType === "dense" && cfg.blockConfig && cfg.growthRate) {
    let start = cfg.embedDim;
    cfg.blockConfig.forEach((blocks, i) => {
      for (let j = 0; j < blocks; j++) n += (start + j * cfg.growthRate!) ** 2;
      if (i !== cfg.blockConfig!.length - 1) start = Math.floor((start + blocks * cfg.growthRate!) / 2);
    });
  } else n += cfg.depth * cfg.embedDim ** 2;
  n += ((cfg.imgSize / 16) ** 2 + 1) * cfg.embedDim + cfg.embedDim * cfg.numClasses;
  return n;
}

/** Model parameters a weights file's `config` may ask for beyond its own tensor elements: 2^24. */
export const CONFIG_PARAMETER_SLACK: number = 1 << 24;

/**
 * The configuration a weights file's `config` metadata (the official constructor's keyword arguments as
 * JSON, written by the converter) describes, checked before any model is built: JSON, known keys, the
 * {@link CONFIG_LIMITS}, and a model no bigger than the file's own weights could fill (at most twice its
 * tensor elements plus {@link CONFIG_PARAMETER_SLACK}): a 175-byte file cannot make a model of gigabytes.
 * `null` values are left out (the constructor's default applies).
 *
 * @throws {ModelError} naming the file and the `config` key
 *
 * @example
 * ```ts
 * import { configFromMetadata } from "./configs.ts";
 * const cfg = configFromMetadata('{"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}', 0);
 * cfg.depth; // 2
 * ```
 */
export function configFromMetadata(
  text: string,
  weightElements: number,
  file?: string,
  opts: { requireHeads?: boolean } = {},
): T2tVitConfig {
  let kwargs: unknown;
  try {
    kwargs = JSON.parse(text);
  } catch (e) {
    throw new ModelError(`the 'config' metadata is not JSON: ${(e as Error).message}`, {
      file,
      key: "config",
      cause: e,
    });
  }
  if (typeof kwargs !== "object" || kwargs === null || Array.isArray(kwargs)) {
    throw new ModelError("the 'config' metadata is not an object", { file, key: "config" });
  }
  return configForWeights(kwargs as Record<string, unknown>, weightElements, file, opts);
}

/**
 * The configuration that keyword arguments found with weights describe (a file's `config` metadata, parsed,
 * or what detection read from a checkpoint's shapes), checked before any model is built: known keys, the
 * {@link CONFIG_LIMITS}, the head count present (with `requireHeads`: weights never show it), and a model no
 * bigger than the weights could fill (at most twice `weightElements` plus {@link CONFIG_PARAMETER_SLACK}).
 * `null` values are left out (the constructor's default applies).
 *
 * @throws {ModelError} naming the file and the `config` key (or `num_heads`)
 */
export function configForWeights(
  kwargs: Readonly<Record<string, unknown>>,
  weightElements: number,
  file?: string,
  opts: { requireHeads?: boolean } = {},
): T2tVitConfig {
  const bad = (msg: string, cause?: unknown): never => {
    throw new ModelError(msg, { file, key: "config", cause });
  };
  const clean = Object.fromEntries(Object.entries(kwargs).filter(([, v]) => v !== null));
  if (opts.requireHeads && !Object.hasOwn(clean, "num_heads")) {
    throw new ModelError(
      "the weights do not say how many attention heads the model has; build it with createModel(config, { weights })",
      { file, key: "num_heads" },
    );
  }
  let cfg: T2tVitConfig;
  try {
    cfg = configFromKwargs(clean);
  } catch (e) {
    if (e instanceof ModelError) bad(`the 'config' metadata: ${e.message}`, e);
    throw e;
  }
  const need = minParameterCount(cfg);
  const limit = 2 * weightElements + CONFIG_PARAMETER_SLACK;
  if (need > limit) {
    bad(
      `the 'config' metadata describes a model of at least ${need} parameters but the file holds ` +
        `${weightElements} tensor elements; refusing to build it`,
    );
  }
  return cfg;
}

const KWARGS: Record<string, keyof T2tVitConfig> = {
  img_size: "imgSize",
  in_chans: "inChans",
  num_classes: "numClasses",
  tokens_type: "tokensType",
  token_dim: "tokenDim",
  embed_dim: "embedDim",
  depth: "depth",
  num_heads: "numHeads",
  mlp_ratio: "mlpRatio",
  qkv_bias: "qkvBias",
  qk_scale: "qkScale",
  growth_rate: "growthRate",
  block_config: "blockConfig",
  drop_rate: "dropRate",
  attn_drop_rate: "attnDropRate",
  drop_path_rate: "dropPathRate",
};

/**
 * A configuration from the official constructor's keyword arguments (snake_case, as in the JSON
 * `config` metadata of the reference files), e.g. `{"img_size": 32, "embed_dim": 32, ...}`. Missing arguments
 * take the constructor's defaults (`embed_dim` 768, `depth` 12, `num_heads` 12, `mlp_ratio` 4). A `block_type`
 * key (ours) selects se/ghost/dense; `growth_rate`/`block_config` imply dense.
 *
 * @throws {ModelError} on unknown keys or an invalid configuration
 *
 * @example
 * ```ts
 * import { configFromKwargs } from "./configs.ts";
 * const cfg = configFromKwargs({ img_size: 32, tokens_type: "performer", embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2.0, token_dim: 16, num_classes: 10 });
 * cfg.embedDim; // 32
 * ```
 */
export function configFromKwargs(kwargs: Record<string, unknown>): T2tVitConfig {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(kwargs)) {
    if (k === "block_type") out.blockType = v;
    else if (Object.hasOwn(KWARGS, k)) out[KWARGS[k]] = v;
    else throw new ModelError(`unknown T2T-ViT argument '${k}'`, { key: k });
  }
  if (out.blockType === undefined && (out.growthRate !== undefined || out.blockConfig !== undefined)) {
    out.blockType = "dense";
  }
  // the official constructor's own defaults
  out.embedDim ??= 768;
  out.depth ??= 12;
  out.numHeads ??= 12;
  out.mlpRatio ??= 4;
  return resolveConfig(out as T2tVitConfigInit);
}
