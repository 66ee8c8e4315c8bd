/**
 * Forward parity with the official PyTorch code on the plain JavaScript cpu backend (slow: the small
 * variant, one sample): soft_split0_head, attention1_head, t2t_tokens, block0, features and logits
 * within 5e-5 (max abs).
 */
import { checkForwardParity, summary } from "../support/zoo.ts";

Deno.test("cpu parity: t2t_vit_7 (first sample)", async () => {
  console.log(summary("t2t_vit_7", await checkForwardParity("t2t_vit_7", "cpu", 5e-5, { batch: 1 })));
});
