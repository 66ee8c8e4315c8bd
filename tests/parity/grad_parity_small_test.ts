// Gradients of the mean cross-entropy equal PyTorch's (reference outputs) on wasm: t2t_vit_7, t2t_vit_10, t2t_vit_12, t2t_vit_14.
// Computed with the whole batch of 2. See tests/support/grad_parity.ts.
import { checkGradients, gradientTests } from "../support/grad_parity.ts";

gradientTests(["t2t_vit_7", "t2t_vit_10", "t2t_vit_12", "t2t_vit_14"], "wasm");

Deno.test({
  name: "gradient accumulation in micro-batches of 1 gives the same gradients: t2t_vit_7 (wasm)",
  sanitizeResources: false,
  fn: async () => {
    await checkGradients("t2t_vit_7", "wasm", { microBatch: 1 });
  },
});
