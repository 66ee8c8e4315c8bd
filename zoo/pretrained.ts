/**
 * The official released weights as plain data: one row per file the authors publish (the ImageNet-1k
 * models, the 384-px and token-labeling ones, and the CIFAR-10/100 transfer checkpoints), each named by a
 * timm-style tag (`<model>.<variant>`, e.g. `t2t_vit_14.in1k_384`), and the helpers that resolve a name and
 * a `pretrained` option to a row and its URL. Architectures come from the variant table
 * ({@linkcode MODEL_CONFIGS}); nothing here downloads (see `hub.ts`).
 *
 * @module
 */

import { ModelError } from "../src/core/errors.ts";
import { MODEL_NAMES, type ModelName } from "./configs.ts";

/** Where the authors publish their weights (the GitHub release `main` of yitu-opensource/T2T-ViT). */
export const DEFAULT_WEIGHTS_URL = "https://github.com/yitu-opensource/T2T-ViT/releases/download/main";

/** A weights tag: `<model>.<variant>`, e.g. `t2t_vit_14.in1k_384` (see {@linkcode PRETRAINED_TAGS}). */
export type PretrainedTag = `${ModelName}.${string}`;

/** The data set a released model was trained (or fine-tuned) on. */
export type PretrainedDataset = "imagenet-1k" | "cifar10" | "cifar100";

/** One released weights file. */
export interface PretrainedWeights {
  /** The timm-style tag, `<model>.<variant>`: `t2t_vit_14.in1k`, `t2t_vit_14.in1k_384`, ... */
  readonly tag: string;
  /** The architecture (a factory name of the variant table). */
  readonly model: ModelName;
  /** The part of the tag after the dot: `in1k`, `in1k_384`, `in1k_token_labeling`, `in1k_ft_cifar10`, ... */
  readonly variant: string;
  /** The file name in the release (appended to the base URL). */
  readonly file: string;
  /** Input size the weights were trained at (their `pos_embed` grid times 16). */
  readonly imgSize: number;
  /** Classes of the head. */
  readonly numClasses: number;
  /** Training data. */
  readonly dataset: PretrainedDataset;
  /** Top-1 accuracy the authors report (percent; on the ImageNet-1k validation set or the CIFAR test set). */
  readonly top1: number;
  /**
   * The file's size in bytes, where it is known; a download of another size is rejected. Undefined for the
   * files whose size has not been recorded (the size the server announces is checked instead).
   */
  readonly bytes?: number;
  /** The file's SHA-256 (hex), where it is known; otherwise the first good download's is recorded in the cache. */
  readonly sha256?: string;
  /**
   * The evaluation transform: `eval` (timm's: resize to size / 0.9 bicubic, center crop, ImageNet mean/std) or
   * `cifar` (the official transfer script's: resize bilinear, CIFAR mean/std).
   */
  readonly transform: "eval" | "cifar";
}

function row(
  model: ModelName,
  variant: string,
  file: string,
  top1: number,
  extra: Partial<Pick<PretrainedWeights, "imgSize" | "numClasses" | "dataset" | "transform" | "bytes">> = {},
): PretrainedWeights {
  return Object.freeze({
    tag: `${model}.${variant}`,
    model,
    variant,
    file,
    imgSize: 224,
    numClasses: 1000,
    dataset: "imagenet-1k",
    top1,
    transform: "eval",
    ...extra,
  });
}

const C10 = { numClasses: 10, dataset: "cifar10", transform: "cifar" } as const;
const C100 = { numClasses: 100, dataset: "cifar100", transform: "cifar" } as const;

/**
 * Every released weights file, in the order of the authors' README. The first row of a model is its
 * default (`pretrained: true`). The CIFAR files keep the authors' spelling (`cirfar100_...` included).
 */
export const PRETRAINED_WEIGHTS: readonly PretrainedWeights[] = Object.freeze([
  row("t2t_vit_7", "in1k", "71.7_T2T_ViT_7.pth.tar", 71.7),
  row("t2t_vit_10", "in1k", "75.2_T2T_ViT_10.pth.tar", 75.2),
  row("t2t_vit_12", "in1k", "76.5_T2T_ViT_12.pth.tar", 76.5),
  row("t2t_vit_14", "in1k", "81.5_T2T_ViT_14.pth.tar", 81.5),
  row("t2t_vit_19", "in1k", "81.9_T2T_ViT_19.pth.tar", 81.9),
  row("t2t_vit_24", "in1k", "82.3_T2T_ViT_24.pth.tar", 82.3),
  row("t2t_vit_14", "in1k_384", "83.3_T2T_ViT_14.pth.tar", 83.3, { imgSize: 384 }),
  row("t2t_vit_24", "in1k_token_labeling", "84.2_T2T_ViT_24.pth.tar", 84.2),
  row("t2t_vit_t_14", "in1k", "81.7_T2T_ViTt_14.pth.tar", 81.7),
  row("t2t_vit_t_19", "in1k", "82.4_T2T_ViTt_19.pth.tar", 82.4),
  row("t2t_vit_t_24", "in1k", "82.6_T2T_ViTt_24.pth.tar", 82.6),
  row("t2t_vit_14", "in1k_ft_cifar10", "cifar10_t2t-vit_14_98.3.pth", 98.3, C10),
  row("t2t_vit_14", "in1k_ft_cifar100", "cirfar100_t2t-vit-14_88.4.pth", 88.4, C100),
  row("t2t_vit_19", "in1k_ft_cifar10", "cifar10_t2t-vit_19_98.4.pth", 98.4, C10),
  row("t2t_vit_19", "in1k_ft_cifar100", "cifar100_t2t-vit-19_89.0.pth", 89.0, C100),
]);

/** Every tag of {@linkcode PRETRAINED_WEIGHTS}. */
export const PRETRAINED_TAGS: readonly string[] = Object.freeze(PRETRAINED_WEIGHTS.map((w) => w.tag));

/** The released weights of one model (empty for the variants the authors released no weights for). */
export function pretrainedFor(model: ModelName): PretrainedWeights[] {
  return PRETRAINED_WEIGHTS.filter((w) => w.model === model);
}

function knownTags(): string {
  return PRETRAINED_TAGS.join(", ");
}

/**
 * The released weights a name and a `pretrained` option ask for: `("t2t_vit_14", true)` is the model's
 * default (`t2t_vit_14.in1k`), `("t2t_vit_14", "in1k_384")` a variant, and a full tag
 * (`"t2t_vit_14.in1k_384"`) works as the name or as the option.
 *
 * @throws {ModelError} naming the known tags when nothing matches
 *
 * @example
 * ```ts
 * import { resolvePretrained } from "./pretrained.ts";
 * resolvePretrained("t2t_vit_14", "in1k_384").file; // "83.3_T2T_ViT_14.pth.tar"
 * resolvePretrained("t2t_vit_24.in1k_token_labeling").imgSize; // 224
 * ```
 */
export function resolvePretrained(name: string, pretrained: boolean | string = true): PretrainedWeights {
  if (pretrained === false) throw new ModelError("pretrained is false: no weights to resolve", { key: name });
  let model = name;
  let variant: string | undefined;
  const dot = name.indexOf(".");
  if (dot >= 0) [model, variant] = [name.slice(0, dot), name.slice(dot + 1)];
  if (typeof pretrained === "string") {
    const pdot = pretrained.indexOf(".");
    const [pm, pv] = pdot >= 0
      ? [pretrained.slice(0, pdot), pretrained.slice(pdot + 1)]
      : [model, pretrained];
    if (pm !== model || (variant !== undefined && pv !== variant)) {
      throw new ModelError(`pretrained '${pretrained}' does not belong to model '${name}'`, { key: name });
    }
    variant = pv;
  }
  if (!(MODEL_NAMES as readonly string[]).includes(model)) {
    throw new ModelError(`unknown model '${model}' (known weights: ${knownTags()})`, { key: name });
  }
  const rows = pretrainedFor(model as ModelName);
  if (rows.length === 0) {
    throw new ModelError(`the authors released no weights for '${model}' (known weights: ${knownTags()})`, {
      key: name,
    });
  }
  if (variant === undefined) return rows[0];
  const hit = rows.find((w) => w.variant === variant);
  if (!hit) {
    throw new ModelError(
      `no released weights '${model}.${variant}' (${model} has: ${rows.map((w) => w.variant).join(", ")})`,
      { key: name },
    );
  }
  return hit;
}

/**
 * The URL of a weights file under a base URL (default {@linkcode DEFAULT_WEIGHTS_URL}; a trailing slash is
 * optional).
 *
 * @example
 * ```ts
 * import { resolvePretrained, weightsUrl } from "./pretrained.ts";
 * weightsUrl(resolvePretrained("t2t_vit_7"), "http://127.0.0.1:8000/releases/download/main/");
 * // "http://127.0.0.1:8000/releases/download/main/71.7_T2T_ViT_7.pth.tar"
 * ```
 */
export function weightsUrl(w: PretrainedWeights, base: string = DEFAULT_WEIGHTS_URL): string {
  return `${base.replace(/\/+$/, "")}/${encodeURIComponent(w.file)}`;
}
