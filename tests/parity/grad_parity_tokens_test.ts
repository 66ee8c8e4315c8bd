// Gradients of the mean cross-entropy equal PyTorch's (reference outputs) on wasm: t2t_vit_t_14, t2t_vit_t_19, t2t_vit_t_24.
// Computed with micro-batches of 1 (the heap holds one sample's activations). See tests/support/grad_parity.ts.
import { gradientTests } from "../support/grad_parity.ts";

gradientTests(["t2t_vit_t_14", "t2t_vit_t_19", "t2t_vit_t_24"], "wasm", { microBatch: 1 });
