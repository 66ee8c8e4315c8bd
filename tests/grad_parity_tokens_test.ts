// Gradients of the mean cross-entropy equal PyTorch's (reference outputs) on wasm: t2t_vit_t_14, t2t_vit_t_19, t2t_vit_t_24.
// Computed with micro-batches of 1 (the heap holds one sample's activations). See tests/_grad_parity.ts.
import { checkGradients } from "./_grad_parity.ts";

for (const entry of ["t2t_vit_t_14", "t2t_vit_t_19", "t2t_vit_t_24"]) {
  Deno.test({
    name: `gradients = official PyTorch: ${entry} (wasm)`,
    sanitizeResources: false,
    fn: async () => {
      const r = await checkGradients(entry, "wasm", { microBatch: 1 });
      console.log(
        `${entry}: ${r.seconds.toFixed(1)} s, max relative error ${
          Math.max(...Object.values(r.errors)).toExponential(1)
        }`,
      );
    },
  });
}
