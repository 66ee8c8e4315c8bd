// Gradients of the mean cross-entropy equal PyTorch's (reference outputs) on wasm: t2t_vit_19, t2t_vit_14_resnext, t2t_vit_14_wide, t2t_vit_14_se, t2t_vit_16_ghost, t2t_vit_dense.
// Computed with micro-batches of 1 (the heap holds one sample's activations). See tests/support/grad_parity.ts.
import { gradientTests } from "../support/grad_parity.ts";

gradientTests(
  [
    "t2t_vit_19",
    "t2t_vit_14_resnext",
    "t2t_vit_14_wide",
    "t2t_vit_14_se",
    "t2t_vit_16_ghost",
    "t2t_vit_dense",
  ],
  "wasm",
  { microBatch: 1 },
);
