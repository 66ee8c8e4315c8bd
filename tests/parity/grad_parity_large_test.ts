// Gradients of the mean cross-entropy equal PyTorch's (reference outputs) on wasm: t2t_vit_24, t2t_vit_14@384.
// Computed with micro-batches of 1 (the heap holds one sample's activations). See tests/support/grad_parity.ts.
import { gradientTests } from "../support/grad_parity.ts";

gradientTests(["t2t_vit_24", "t2t_vit_14@384"], "wasm", { microBatch: 1 });
