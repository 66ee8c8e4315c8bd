// Gradients of the mean cross-entropy equal PyTorch's on WebGPU: t2t_vit_7 (see tests/_grad_parity.ts).
// Skipped when no WebGPU adapter is available; on Mesa's software adapter it takes ~15 s.
import { checkGradients } from "./_grad_parity.ts";

const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;

Deno.test({
  name: "gradients = official PyTorch: t2t_vit_7 (webgpu)",
  ignore: !adapter,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = await checkGradients("t2t_vit_7", "webgpu");
    console.log(
      `t2t_vit_7 webgpu: ${r.seconds.toFixed(1)} s, max relative error ${
        Math.max(...Object.values(r.errors)).toExponential(1)
      }`,
    );
  },
});
