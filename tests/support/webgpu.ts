/** Shared set-up of the WebGPU tests: the adapter gate, backend start, validation scopes. */
import assert from "node:assert/strict";
import { configureKernels } from "../../zoo/kernels/mod.ts";
import { setBackend, tf } from "../../zoo/mod.ts";

const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
const requireWebGpu = Deno.env.get("T2T_REQUIRE_WEBGPU") === "1";

/**
 * `Deno.test` options for WebGPU tests: ignored without an adapter unless `T2T_REQUIRE_WEBGPU=1` (CI), in
 * which case `startWebGpu` fails them. Sanitizers are off: WebGPU devices and their polling are process-wide.
 */
export function webgpuTestOptions(
  what: string,
): { ignore: boolean; sanitizeOps: false; sanitizeResources: false } {
  if (!adapter && !requireWebGpu) console.log(`no WebGPU adapter here: the ${what} tests are skipped`);
  return { ignore: !adapter && !requireWebGpu, sanitizeOps: false, sanitizeResources: false };
}

/** Fails the test when there is no adapter (reached only with `T2T_REQUIRE_WEBGPU=1`). */
export function assertAdapter(): void {
  assert.ok(
    adapter,
    "T2T_REQUIRE_WEBGPU=1 but navigator.gpu has no adapter (is mesa-vulkan-drivers installed?)",
  );
}

/** Starts the webgpu backend with our kernels on and returns its device. */
export async function startWebGpu(): Promise<GPUDevice> {
  assertAdapter();
  await setBackend("webgpu");
  configureKernels({ enabled: true });
  return (tf.backend() as unknown as { device: GPUDevice }).device;
}

/** Runs `f` inside a validation error scope; fails on any WebGPU validation error (e.g. a bad shader). */
export async function checked<T>(device: GPUDevice, f: () => Promise<T>): Promise<T> {
  device.pushErrorScope("validation");
  const out = await f();
  const err = await device.popErrorScope();
  assert.equal(err, null, `WebGPU validation error: ${err?.message}`);
  return out;
}

/** Reads a tensor's values and disposes it. */
export async function read(t: tf.Tensor): Promise<Float32Array> {
  const v = (await t.data()) as Float32Array;
  t.dispose();
  return v;
}
