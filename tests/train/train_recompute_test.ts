// Activation recomputation per block (`checkpointBlocks`): the gradients of a training-mode step (dropout,
// attention dropout and drop-path active, the same seeded masks) equal the plain path's bit for bit, on cpu and
// wasm; the step holds far less memory (tf.profile's peak); and nothing leaks.
import assert from "node:assert/strict";
import { createModel, setBackend, tf } from "../../zoo/mod.ts";
import { disposeGradients, lossAndGradients, Rng } from "../../src/train/mod.ts";

// cpu is slow: a smaller image there (exactness only; the memory saving is checked on wasm, the default)
for (const [backend, img, minSaved] of [["cpu", 32, 0], ["wasm", 64, 0.3]] as const) {
  Deno.test({
    name:
      `checkpointBlocks: same loss and gradients as the plain path, bit for bit, less memory (${backend})`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await setBackend(backend);
      const model = await createModel("t2t_vit_7", {
        numClasses: 10,
        imgSize: img,
        dropRate: 0.1,
        attnDropRate: 0.1,
        dropPathRate: 0.2,
        seed: 3,
      });
      const x = tf.randomUniform([3, 3, img, img], -1, 1, "float32", 5) as tf.Tensor4D;
      const labels = [1, 4, 9];
      const step = async (checkpointBlocks: boolean) => {
        let out: { loss: Float32Array; grads: Map<string, Float32Array> } | undefined;
        const prof = await tf.profile(async () => {
          const r = lossAndGradients(model, x, labels, {
            training: true,
            rng: Rng.derive(7, "dropout", 0),
            checkpointBlocks,
          });
          const grads = new Map<string, Float32Array>();
          for (const [k, g] of r.grads) grads.set(k, (await g.data()) as Float32Array);
          out = { loss: (await r.loss.data()) as Float32Array, grads };
          r.loss.dispose();
          r.logits.dispose();
          disposeGradients(r.grads);
        });
        return { ...out!, peak: prof.peakBytes };
      };
      await step(false); // first use: the model builds its cached tensors
      const before = tf.memory().numTensors;
      const plain = await step(false);
      const recomputed = await step(true);
      assert.equal(tf.memory().numTensors, before, "tensors leaked");
      assert.deepEqual(recomputed.loss, plain.loss);
      assert.equal(recomputed.grads.size, plain.grads.size);
      for (const [k, g] of plain.grads) assert.deepEqual(recomputed.grads.get(k), g, `${k} differs`);
      assert.ok(plain.grads.get("blocks.0.attn.qkv.weight")!.some((v) => v !== 0));
      const saved = 1 - recomputed.peak / plain.peak;
      console.log(
        `${backend}: peak ${(plain.peak / 2 ** 20).toFixed(1)} MB plain, ${
          (recomputed.peak / 2 ** 20).toFixed(1)
        } MB recomputed (${(100 * saved).toFixed(0)}% less)`,
      );
      assert.ok(saved > minSaved, `recomputation saved only ${(100 * saved).toFixed(0)}%`);
      x.dispose();
      model.dispose();
    },
  });
}
