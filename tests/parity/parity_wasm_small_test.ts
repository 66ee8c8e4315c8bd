/**
 * Forward parity with the official PyTorch code on the wasm backend, part 1: the narrower variants.
 * soft_split0_head, attention1_head, t2t_tokens, block0, features and logits within 5e-5 (max abs).
 */
import { checkForwardParity, summary } from "../support/zoo.ts";

for (
  const entry of [
    "t2t_vit_7",
    "t2t_vit_10",
    "t2t_vit_12",
    "t2t_vit_14",
    "t2t_vit_14_resnext",
    "t2t_vit_14_wide",
    "t2t_vit_14_se",
    "t2t_vit_16_ghost",
    "t2t_vit_dense",
  ]
) {
  Deno.test(`wasm parity: ${entry}`, async () => {
    console.log(summary(entry, await checkForwardParity(entry, "wasm", 5e-5)));
  });
}
