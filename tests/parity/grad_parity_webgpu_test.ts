// Gradients of the mean cross-entropy equal PyTorch's on WebGPU: t2t_vit_7 (see tests/support/grad_parity.ts).
// Skipped when no WebGPU adapter is available, unless T2T_REQUIRE_WEBGPU=1 (CI), where that is a failure.
// On Mesa's software adapter it takes ~15-30 s.
import { gradientTests } from "../support/grad_parity.ts";
import { webgpuTestOptions } from "../support/webgpu.ts";

gradientTests(["t2t_vit_7"], "webgpu", {}, webgpuTestOptions("webgpu gradient"));
