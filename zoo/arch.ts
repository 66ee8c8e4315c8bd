/**
 * Recognising a T2T-ViT architecture from the names and shapes of its weights: the registered variant (all
 * fourteen factories of the official code), or a custom configuration with the hyper-parameters that the
 * shapes reveal (embedding width, depth, tokens type, token width, classes, image size from `pos_embed`).
 *
 * @module
 */

import type { ShapeMap } from "../src/core/types.ts";
import { type BlockType, MODEL_CONFIGS, MODEL_NAMES, type T2tVitConfig } from "./configs.ts";
import { PATCH_STRIDE, posEmbedGrid } from "./loader.ts";

export type { ShapeMap };

/** How the T2T module mixes tokens. */
export type DetectedTokensType = "performer" | "transformer" | "convolution";

/** The backbone blocks the weights show (dense: the dense blocks, transitions excluded). */
function blockCount(c: T2tVitConfig): number {
  return c.blockConfig ? c.blockConfig.reduce((x, y) => x + y, 0) : c.depth;
}

/** What the weights say about the model. */
export interface ArchitectureInfo {
  /** The registered variant, `custom` for a T2T-ViT of another configuration, `unknown` for anything else. */
  name: string;
  /** Every registered variant with exactly these weight shapes (t2t_vit_14 and t2t_vit_14_resnext differ only in heads). */
  candidates: string[];
  /** The backbone block type (the variant table's `blockType`), or null when not a T2T-ViT. */
  blockType: BlockType | null;
  /** Tokens-to-token type, or null when unknown. */
  tokensType: DetectedTokensType | null;
  /** Backbone width (from `cls_token`), or null. */
  embedDim: number | null;
  /** Number of backbone blocks (dense: dense blocks only), or null. */
  depth: number | null;
  /** Attention heads: from the matched variant; null for custom models (the weights do not show it). */
  numHeads: number | null;
  /** MLP hidden width / embed_dim, or null. */
  mlpRatio: number | null;
  /** Width of the T2T module's attention (`token_dim`), or null. */
  tokenDim: number | null;
  /** Input channels (from the first soft split), or null. */
  inChans: number | null;
  /** Classifier outputs (`head.weight` rows; 0 without a head). */
  numClasses: number;
  /** Input size implied by `pos_embed` ((size/16)^2 + 1 tokens), or null. */
  imgSize: number | null;
  /** Dense variant: blocks per stage. */
  blockConfig?: number[];
  /** Dense variant: channels each block adds. */
  growthRate?: number;
}

/** Options of {@link detectArchitecture}. */
export interface DetectOptions {
  /**
   * Names that may break a tie between variants with identical weights (the checkpoint's `arch` or
   * `args.model`, the file name). The longest candidate name found in a hint wins.
   */
  hints?: (string | null | undefined)[];
}

/**
 * Recognises the architecture from key names and shapes.
 *
 * @example
 * ```ts
 * import { detectArchitecture } from "./arch.ts";
 * const shapes = new Map([["cls_token", { shape: [1, 1, 256] }], ["pos_embed", { shape: [1, 197, 256] }]]);
 * detectArchitecture(shapes).imgSize; // 224
 * ```
 */
export function detectArchitecture(tensors: ShapeMap, opts: DetectOptions = {}): ArchitectureInfo {
  const shape = (k: string): readonly number[] | undefined => tensors.get(k)?.shape;
  const cls = shape("cls_token");
  const pos = shape("pos_embed");
  const head = shape("head.weight");
  const numClasses = head && head.length === 2 ? head[0] : 0;
  const info: ArchitectureInfo = {
    name: "unknown",
    candidates: [],
    blockType: null,
    tokensType: null,
    embedDim: null,
    depth: null,
    numHeads: null,
    mlpRatio: null,
    tokenDim: null,
    inChans: null,
    numClasses,
    imgSize: null,
  };
  const grid = pos && posEmbedGrid(pos);
  if (grid !== undefined) info.imgSize = grid * PATCH_STRIDE;
  const t2t = [...tensors.keys()].some((k) => k.startsWith("tokens_to_token."));
  if (!cls || cls.length !== 3 || !t2t) return info;
  info.embedDim = cls[2];

  const a1 = "tokens_to_token.attention1.";
  if (shape(a1 + "kqv.weight")) {
    info.tokensType = "performer";
    info.tokenDim = shape(a1 + "proj.weight")?.[0] ?? null;
    const kqv = shape(a1 + "kqv.weight")!;
    info.inChans = kqv.length === 2 && kqv[1] % 49 === 0 ? kqv[1] / 49 : null;
  } else if (shape(a1 + "attn.qkv.weight")) {
    info.tokensType = "transformer";
    info.tokenDim = shape(a1 + "attn.proj.weight")?.[0] ?? null;
    const qkv = shape(a1 + "attn.qkv.weight")!;
    info.inChans = qkv.length === 2 && qkv[1] % 49 === 0 ? qkv[1] / 49 : null;
  } else if (shape("tokens_to_token.soft_split0.weight")) {
    info.tokensType = "convolution";
    const w = shape("tokens_to_token.soft_split0.weight")!;
    info.tokenDim = w[0] ?? null;
    info.inChans = w[1] ?? null;
  }

  // Each block index's sub-keys decide its kind.
  const parts = new Map<number, Set<string>>();
  for (const k of tensors.keys()) {
    const m = /^blocks\.(\d+)\.([^.]+)\.(.*)$/.exec(k);
    if (!m) continue;
    const i = Number(m[1]);
    if (!parts.has(i)) parts.set(i, new Set());
    parts.get(i)!.add(m[2] === "attn" ? `attn.${m[3].split(".")[0]}` : m[2]);
  }
  const kindOf = (p: Set<string>): string =>
    p.has("dense_linear")
      ? "dense"
      : p.has("attn.se_layer")
      ? "se"
      : [...p].some((x) => x.startsWith("attn.cheap_operation"))
      ? "ghost"
      : p.has("linear") && !p.has("mlp")
      ? "transition"
      : "plain";
  const blockKinds = [...parts.entries()].sort((x, y) => x[0] - y[0]).map((e) => kindOf(e[1]));
  if (blockKinds.includes("dense")) {
    info.blockType = "dense";
    const config: number[] = [];
    let run = 0;
    for (const k of blockKinds) {
      if (k === "transition") {
        config.push(run);
        run = 0;
      } else run++;
    }
    config.push(run);
    info.blockConfig = config;
    info.growthRate = shape("blocks.0.dense_linear.weight")?.[0];
    info.depth = config.reduce((a, b) => a + b, 0);
  } else {
    info.blockType = blockKinds.includes("ghost") ? "ghost" : blockKinds.includes("se") ? "se" : "vit";
    info.depth = blockKinds.length;
  }
  const fc1 = shape("blocks.0.mlp.fc1.weight");
  const fc2 = shape("blocks.0.mlp.fc2.weight");
  const inWidth = shape("blocks.0.norm1.weight")?.[0] ?? info.embedDim;
  const hidden = info.blockType === "ghost" ? fc2?.[1] : fc1?.[0];
  if (hidden !== undefined && inWidth) info.mlpRatio = hidden / inWidth;

  // the variants of the table these weights fit (the heads are invisible in the weights)
  const candidates = MODEL_NAMES.filter((name) => {
    const v = MODEL_CONFIGS[name];
    return v.blockType === info.blockType && v.tokensType === info.tokensType &&
      v.embedDim === info.embedDim &&
      blockCount(v) === info.depth && v.mlpRatio === info.mlpRatio && info.tokenDim === v.tokenDim &&
      info.inChans === v.inChans &&
      (v.blockConfig === undefined || JSON.stringify(v.blockConfig) === JSON.stringify(info.blockConfig));
  });
  info.candidates = [...candidates];
  if (candidates.length === 0) {
    info.name = "custom";
    return info;
  }
  let chosen = candidates[0];
  if (candidates.length > 1) {
    const hints = (opts.hints ?? []).filter((h): h is string => typeof h === "string").map((h) =>
      h.toLowerCase()
    );
    let best = -1;
    for (const name of candidates) {
      if (hints.some((h) => h.includes(name)) && name.length > best) {
        best = name.length;
        chosen = name;
      }
    }
  }
  info.name = chosen;
  info.numHeads = MODEL_CONFIGS[chosen].numHeads;
  return info;
}

/**
 * The architecture as the official constructor's keyword arguments (snake_case, the form of the reference
 * files' `config` metadata and of the zoo's `configFromKwargs`). Unknown values are left out rather than
 * guessed: a custom model's head count cannot be read from its weights.
 *
 * @example
 * ```ts ignore
 * import { configKwargs, detectArchitecture } from "./arch.ts";
 * configKwargs(detectArchitecture(shapes)); // { img_size: 224, tokens_type: "performer", embed_dim: 256, ... }
 * ```
 */
export function configKwargs(arch: ArchitectureInfo): Record<string, unknown> {
  const out: Record<string, unknown> = {
    img_size: arch.imgSize,
    tokens_type: arch.tokensType,
    embed_dim: arch.embedDim,
    // dense models count blocks through block_config; the official factory leaves depth at its default
    depth: arch.blockType === "dense" ? null : arch.depth,
    num_heads: arch.numHeads,
    mlp_ratio: arch.mlpRatio,
    token_dim: arch.tokenDim,
    num_classes: arch.numClasses,
    in_chans: arch.inChans,
  };
  if (arch.blockType !== null && arch.blockType !== "vit") out.block_type = arch.blockType;
  if (arch.blockConfig) out.block_config = arch.blockConfig;
  if (arch.growthRate !== undefined) out.growth_rate = arch.growthRate;
  for (const k of Object.keys(out)) if (out[k] === null || out[k] === undefined) delete out[k];
  return out;
}

/**
 * The converter's `describe` hook for T2T-ViT checkpoints: detects the architecture and records it in the
 * output's metadata (`architecture`, `img_size`, `num_classes`, `architecture_candidates` when the weights fit
 * several variants, and `config`: {@link configKwargs} as JSON, which `loadModel` builds the model from).
 *
 * @example
 * ```ts ignore
 * import { convertCheckpoint } from "../converters/mod.ts";
 * import { describeWeights } from "./arch.ts";
 * const r = await convertCheckpoint("71.7_T2T_ViT_7.pth.tar", { describe: describeWeights });
 * r.architecture.name; // "t2t_vit_7"
 * ```
 */
export function describeWeights(
  tensors: ShapeMap,
  hints: (string | null | undefined)[],
): { architecture: ArchitectureInfo; metadata: Record<string, string> } {
  const arch = detectArchitecture(tensors, { hints });
  const metadata: Record<string, string> = { architecture: arch.name };
  if (arch.imgSize !== null) metadata.img_size = String(arch.imgSize);
  metadata.num_classes = String(arch.numClasses);
  if (arch.candidates.length > 1) metadata.architecture_candidates = arch.candidates.join(",");
  if (arch.blockType !== null) metadata.config = JSON.stringify(configKwargs(arch));
  return { architecture: arch, metadata };
}
