/** Paths to the copy of the official reference data in tests/fixtures/reference (see its README.md). */
export const REFERENCE_DIR: string = new URL("../fixtures/reference/", import.meta.url).pathname;

/** Absolute path of a file under tests/fixtures/reference, e.g. `ref("outputs/t2t_vit_7.safetensors")`. */
export function ref(path: string): string {
  return REFERENCE_DIR + path;
}

/** The manifest: one entry per official architecture (plus `t2t_vit_14@384`). */
export interface ManifestEntry {
  factory: string;
  kwargs: Record<string, unknown>;
  img_size: number;
  params_total: number;
  params_trainable: number;
  state_dict: [string, number[]][];
}

/** Reads manifest.json. */
export function manifest(): Record<string, ManifestEntry> {
  return JSON.parse(Deno.readTextFileSync(ref("manifest.json")));
}

/** The tiny reference configuration (`outputs/tiny.safetensors`' metadata): the one small model of the tests. */
export const TINY_CONFIG = {
  imgSize: 32,
  embedDim: 32,
  depth: 2,
  numHeads: 2,
  mlpRatio: 2,
  tokenDim: 16,
  numClasses: 10,
};
