/**
 * ParallelModel: the batch split across worker threads gives exactly the single model's results, errors
 * from the workers arrive as the same typed errors, and the workers stop on dispose.
 */
import assert from "node:assert/strict";
import { serializeSafetensors } from "../../converters/safetensors.ts";
import { ModelError, WeightsError } from "../../src/core/errors.ts";
import { fillInput } from "../../src/core/fill.ts";
import { createModel, ParallelModel, setBackend, tf } from "../../zoo/mod.ts";
import { ref } from "../support/fixtures.ts";
import { TINY_CONFIG } from "../support/fixtures.ts";

await setBackend("wasm");
const TINY = TINY_CONFIG;

Deno.test("ParallelModel: split batches equal the single model, for every batch size", async () => {
  const single = await createModel(TINY, { weights: ref("checkpoints/tiny-state-dict.pth") });
  const pool = await ParallelModel.create(TINY, {
    weights: ref("checkpoints/tiny-state-dict.pth"),
    workers: 2,
  });
  try {
    assert.equal(pool.workers, 2);
    assert.equal(pool.name, "custom");
    assert.deepEqual(pool.config, single.config);
    for (const b of [1, 2, 5]) {
      const x = tf.tensor4d(fillInput(b, 32), [b, 3, 32, 32]);
      const want = single.forward(x);
      const got = await pool.forward(x);
      assert.deepEqual(got.shape, [b, 10]);
      assert.deepEqual(await got.data(), await want.data());
      const f = await pool.forwardFeatures(x);
      assert.deepEqual(f.shape, [b, 32]);
      tf.dispose([x, want, got, f]);
    }
    await assert.rejects(pool.forward(tf.zeros([1, 3, 16, 16]) as tf.Tensor4D), ModelError);
  } finally {
    pool.dispose();
    single.dispose();
  }
  await assert.rejects(pool.forward(tf.zeros([1, 3, 32, 32]) as tf.Tensor4D), /disposed/);
});

Deno.test("ParallelModel: the workers' typed errors reach the caller", async () => {
  const m = await createModel(TINY);
  const w = new Map(
    [...m.stateDict()].map((
      [k, v],
    ) => [k, { dtype: "F32" as const, shape: [...v.shape], data: new Uint8Array(v.size * 4) }]),
  );
  m.dispose();
  w.delete("norm.bias");
  await assert.rejects(
    ParallelModel.create(TINY, { weights: serializeSafetensors(w), workers: 1 }),
    (e: unknown) => {
      assert.ok(e instanceof WeightsError, String(e));
      assert.equal(e.key, "norm.bias");
      return true;
    },
  );
  await assert.rejects(ParallelModel.create(TINY, { workers: 0 }), ModelError);
});
