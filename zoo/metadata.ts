/**
 * The metadata vocabulary of the T2T-ViT safetensors files this package writes (converted checkpoints,
 * training checkpoints, the transfer script's `best`/`last` files), in one place (the converter writes the
 * keys it knows from file formats: `format`, `source`, `weights_key`, `dtype`; the rest describe the model):
 *
 * | key | meaning |
 * | --- | --- |
 * | `format` | `pt` (PyTorch tensor layout and names, as Hugging Face writes it) |
 * | `architecture` | the registered variant (`t2t_vit_14`), or `custom` |
 * | `architecture_candidates` | variants with identical weights, when the weights alone cannot tell |
 * | `config` | the official constructor's keyword arguments, JSON |
 * | `img_size`, `num_classes` | input size and classes |
 * | `source`, `weights_key`, `dtype` | where a conversion took the weights from, and its `--dtype` |
 *
 * Files written before this vocabulary was settled name the architecture `arch`; readers accept both.
 *
 * @module
 */

/** The metadata key that names the architecture. */
export const ARCHITECTURE_KEY = "architecture";

/**
 * The architecture a file's metadata names: `architecture`, or the older training checkpoints' `arch`.
 *
 * @example
 * ```ts
 * import { architectureOf } from "./metadata.ts";
 * architectureOf({ architecture: "t2t_vit_14" }); // "t2t_vit_14"
 * architectureOf({ arch: "t2t_vit_7" }); // "t2t_vit_7" (an older training checkpoint)
 * ```
 */
export function architectureOf(metadata: Readonly<Record<string, string>>): string | undefined {
  const own = (k: string) => Object.hasOwn(metadata, k) ? metadata[k] : undefined;
  return own(ARCHITECTURE_KEY) ?? own("arch");
}
