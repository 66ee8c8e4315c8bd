/**
 * The webgpu backend: started through our own adapter/device creation (tfjs's own start-up fails in Deno on
 * adapters offering bgra8unorm-storage, and reads adapter.info after requestDevice), then forward parity with
 * the official PyTorch code for t2t_vit_7 and t2t_vit_t_14 within 2e-4 (first sample of the reference input:
 * a software adapter such as Mesa's llvmpipe runs at a few GFLOP/s). Skipped where no WebGPU adapter exists, unless
 * `T2T_REQUIRE_WEBGPU=1` (CI), where that is a failure.
 */
import assert from "node:assert/strict";
import { setBackend, tf, webGpuAdapter } from "../../zoo/mod.ts";
import { checkForwardParity, summary } from "../support/zoo.ts";
import { assertAdapter, webgpuTestOptions } from "../support/webgpu.ts";

const opts = webgpuTestOptions("webgpu parity");

Deno.test({
  name: "webgpu: our device creation starts the backend and computes correctly",
  ...opts,
  fn: async () => {
    assertAdapter();
    assert.equal(await setBackend("webgpu"), "webgpu");
    assert.equal(tf.getBackend(), "webgpu");
    const info = webGpuAdapter();
    assert.ok(info, "adapter info was read before requestDevice");
    console.log(`adapter: ${info.description || info.vendor} (software: ${info.isSoftware})`);
    const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const b = tf.tensor2d([1, 0, 0, 1, 1, 1], [3, 2]);
    const c = tf.matMul(a, b);
    assert.deepEqual(Array.from(await c.data()), [4, 5, 10, 11]);
    const e = tf.erf(tf.tensor1d([0, 0.5, -2]));
    const ev = await e.data();
    [0, 0.5204998778, -0.995322265].forEach((v, i) => assert.ok(Math.abs(ev[i] - v) < 1e-6));
    tf.dispose([a, b, c, e]);
  },
});

for (const entry of ["t2t_vit_7", "t2t_vit_t_14"]) {
  Deno.test({
    name: `webgpu parity: ${entry} (first sample)`,
    ...opts,
    fn: async () => {
      assertAdapter();
      console.log(summary(entry, await checkForwardParity(entry, "webgpu", 2e-4, { batch: 1 })));
    },
  });
}
