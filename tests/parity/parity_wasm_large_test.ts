/**
 * Forward parity with the official PyTorch code on the wasm backend, part 2: the deep variants, the
 * transformer-token variants and t2t_vit_14 at 384.
 * soft_split0_head, attention1_head, t2t_tokens, block0, features and logits within 5e-5 (max abs).
 */
import { checkForwardParity, summary } from "../support/zoo.ts";

for (
  const entry of [
    "t2t_vit_19",
    "t2t_vit_24",
    "t2t_vit_t_14",
    "t2t_vit_t_19",
    "t2t_vit_t_24",
    "t2t_vit_14@384",
  ]
) {
  Deno.test(`wasm parity: ${entry}`, async () => {
    console.log(summary(entry, await checkForwardParity(entry, "wasm", 5e-5)));
  });
}
