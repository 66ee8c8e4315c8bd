/**
 * t2t-vit: the Tokens-to-Token Vision Transformer (T2T-ViT, Yuan et al., ICCV 2021) for Deno and the web.
 *
 * - Converters: official PyTorch checkpoints (zip and legacy `torch.save` files) to safetensors, without
 *   Python and without executing pickle code.
 * - Zoo: every variant the authors registered, on TensorFlow.js (WebGPU, wasm, cpu), with parity to the
 *   official code.
 *
 * @example
 * ```ts ignore
 * import { createModel, setBackend, tf } from "@t2t-vit/t2t-vit";
 * await setBackend("wasm");
 * const model = await createModel("t2t_vit_14", { weights: "t2t_vit_14.safetensors" });
 * const logits = tf.tidy(() => model.forward(tf.zeros([1, 3, 224, 224])));
 * ```
 *
 * @module
 */

export * from "./src/core/errors.ts";
export * from "./src/core/types.ts";
export * from "./converters/safetensors.ts";
export * from "./src/core/fill.ts";
export * from "./converters/mod.ts";
export * from "./src/images/mod.ts";
export * from "./zoo/mod.ts";
export * from "./src/train/mod.ts";
export * from "./zoo/kernels/mod.ts";
