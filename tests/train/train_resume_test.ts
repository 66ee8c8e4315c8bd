// Checkpoints of a real T2T-ViT: resuming is exact bit for bit on cpu (dropout, drop-path and the performer's
// dropouts active, SGD momentum, cosine schedule, clipping), and the weights file holds exactly the official
// state_dict (keys, shapes, order) so the official code's `load_state_dict(strict=True)` accepts it.
import assert from "node:assert/strict";
import { createModel, setBackend, type tf } from "../../zoo/mod.ts";
import {
  CosineSchedule,
  loadCheckpoint,
  saveCheckpoint,
  saveWeights,
  SGD,
  Trainer,
  transferParamGroups,
} from "../../src/train/mod.ts";
import { cifarBatches, type CifarSplit } from "../../src/data/mod.ts";
import { readSafetensors } from "../../converters/safetensors.ts";
import { manifest } from "../support/fixtures.ts";

function split(n: number): CifarSplit {
  const images = new Uint8Array(n * 3072);
  for (let i = 0; i < images.length; i++) images[i] = (i * 2654435761) >>> 24;
  return {
    dataset: "cifar10",
    split: "train",
    count: n,
    images,
    labels: Uint8Array.from({ length: n }, (_, i) => i % 10),
    numClasses: 10,
    files: [],
  };
}

Deno.test({
  name: "t2t_vit_7: 4 steps straight = 2 steps + save + load into another model + 2 steps, bit for bit (cpu)",
  sanitizeResources: false,
  fn: async () => {
    await setBackend("cpu");
    const data = split(4);
    const dir = await Deno.makeTempDir();
    const schedule = new CosineSchedule({ tInitial: 2, lrMin: 1e-3 });
    const make = async (seed: number) => {
      const model = await createModel("t2t_vit_7", {
        numClasses: 10,
        imgSize: 32,
        dropRate: 0.1,
        attnDropRate: 0.1,
        dropPathRate: 0.1,
        seed,
      });
      const opt = new SGD(transferParamGroups(model.trainableVariables(), { lr: 0.05, transferRatio: 0.1 }), {
        lr: 0.05,
        momentum: 0.9,
        weightDecay: 5e-4,
      });
      const trainer = new Trainer(model, opt, { seed: 11, schedule, clipGradNorm: 1, labelSmoothing: 0.1 });
      return { model, opt, trainer };
    };
    const run = async (t: Trainer, epochs: number[]) => {
      for (const epoch of epochs) {
        t.startEpoch(epoch);
        for (
          const { x, labels } of cifarBatches(data, {
            batchSize: 2,
            imgSize: 32,
            train: true,
            seed: 11,
            epoch,
          })
        ) {
          await t.trainStep(x, labels);
          x.dispose();
        }
      }
    };
    const weights = async (m: { stateDict(): Map<string, tf.Tensor> }) =>
      new Map(await Promise.all([...m.stateDict()].map(async ([k, v]) => [k, await v.data()] as const)));
    try {
      const a = await make(1);
      const initial = await weights(a.model);
      await run(a.trainer, [0, 1]);
      const straight = await weights(a.model);

      const b = await make(1);
      await run(b.trainer, [0]);
      await saveCheckpoint(`${dir}/ck.safetensors`, b.model, b.opt, { epoch: 1, seed: 11 });
      const c = await make(2); // other initial weights: everything must come from the checkpoint
      const st = await loadCheckpoint(`${dir}/ck.safetensors`, c.model, c.opt);
      assert.equal(st.epoch, 1);
      await run(c.trainer, [st.epoch]);
      const resumed = await weights(c.model);
      let moved = 0;
      for (const [k, w] of straight) {
        assert.deepEqual(resumed.get(k), w, `${k} differs after resuming`);
        if (initial.get(k)!.some((v, i) => v !== w[i])) moved++;
      }
      assert.ok(moved > 100, `only ${moved} tensors changed`);
      for (const r of [a, b, c]) {
        r.opt.dispose();
        r.model.dispose();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "saved weights are the official state_dict: keys, shapes and order of the manifest",
  sanitizeResources: false,
  fn: async () => {
    await setBackend("cpu");
    const dir = await Deno.makeTempDir();
    try {
      for (const entry of ["t2t_vit_7", "t2t_vit_t_14"]) {
        const model = await createModel(entry as "t2t_vit_7");
        await saveWeights(`${dir}/${entry}.safetensors`, model);
        model.dispose();
        const { tensors, metadata } = await readSafetensors(`${dir}/${entry}.safetensors`);
        assert.equal(metadata.format, "pt");
        assert.deepEqual(
          [...tensors].map(([k, t]) => [k, t.shape, t.dtype]),
          manifest()[entry].state_dict.map(([k, s]) => [k, s, "F32"]),
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
