/**
 * The browser bundle's entry (`deno task build:web` -> `web/dist/t2t-vit.js`): the package's main API
 * (`mod.ts`) plus the converters, zoo, images and kernels subpaths in one module, and the reference `fill`
 * the parity checks use. Training (`./train`, which installs gradients on import) is left out.
 *
 * @module
 */

export * from "../mod.ts";
export * from "../converters/mod.ts";
export * from "../zoo/mod.ts";
export * from "../src/images/mod.ts";
export * from "../zoo/kernels/mod.ts";
export { fill, fillInput } from "../src/core/fill.ts";
