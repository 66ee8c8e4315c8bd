// End to end on wasm: a synthetic 4-class dataset written in CIFAR-10 binary format, read back, augmented
// with the official train transform, a 32-pixel t2t_vit_7 trained with the transfer script's optimizer
// (SGD, momentum 0.9, weight decay 5e-4, cosine schedule) to well above chance; its checkpoint reloaded
// through createModel gives the same predictions; no tensor is leaked across steps.
import assert from "node:assert/strict";
import { createModel, setBackend, tf } from "../../zoo/mod.ts";
import {
  CosineSchedule,
  evaluate,
  loadCheckpoint,
  saveCheckpoint,
  SGD,
  Trainer,
} from "../../src/train/mod.ts";
import { cifarBatches, readCifar, writeCifar } from "../../src/data/mod.ts";

const CLASSES = 4;

/**
 * Class c is a colour (red, green, blue, yellow); stripes of random orientation, period, phase and
 * brightness plus noise vary within each class. Random crops and flips keep the class.
 */
function synthetic(n: number, seed: number): { images: Uint8Array; labels: Uint8Array } {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const images = new Uint8Array(n * 3072), labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % CLASSES;
    labels[i] = c;
    const horizontal = rnd() < 0.5;
    const period = 4 + Math.floor(rnd() * 4), phase = Math.floor(rnd() * period), bright = 150 + rnd() * 100;
    const rgb = [[1, 0.25, 0.25], [0.25, 1, 0.25], [0.25, 0.25, 1], [1, 1, 0.25]][c];
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const v = ((horizontal ? y : x) + phase) % period < period / 2 ? bright : 50;
        for (let ch = 0; ch < 3; ch++) {
          const t = v * rgb[ch] + (rnd() - 0.5) * 60;
          images[i * 3072 + ch * 1024 + y * 32 + x] = Math.max(0, Math.min(255, Math.round(t)));
        }
      }
    }
  }
  return { images, labels };
}

Deno.test({
  name: "fine-tuning t2t_vit_7 (32 px) on a synthetic CIFAR-format dataset: learns, reloads, no leaks (wasm)",
  sanitizeResources: false,
  fn: async () => {
    await setBackend("wasm");
    const dir = await Deno.makeTempDir();
    try {
      // 5 training batch files of 24 or 28 images, one test file of 64 (CIFAR-10 layout, 4 of its 10 labels)
      for (let b = 1; b <= 5; b++) {
        const d = synthetic(b === 1 ? 32 : 24, b);
        await writeCifar(`${dir}/data_batch_${b}.bin`, d.images, d.labels);
      }
      const t = synthetic(64, 1234);
      await writeCifar(`${dir}/test_batch.bin`, t.images, t.labels);
      const train = await readCifar(dir, "cifar10", "train", { strictCounts: false });
      const test = await readCifar(dir, "cifar10", "test", { strictCounts: false });
      assert.equal(train.count, 128);

      const before = tf.memory().numTensors;
      const model = await createModel("t2t_vit_7", {
        numClasses: CLASSES,
        imgSize: 32,
        dropPathRate: 0.1,
        seed: 1,
      });
      const epochs = 3;
      const opt = new SGD(model.trainableVariables(), { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
      const trainer = new Trainer(model, opt, {
        seed: 3,
        schedule: new CosineSchedule({ tInitial: epochs, lrMin: 1e-3 }),
        clipGradNorm: 5,
      });
      const testBatches = () => cifarBatches(test, { batchSize: 64, imgSize: 32, train: false });
      const chance = await evaluate(model, testBatches());
      const t0 = performance.now();
      let steps = 0, afterFirst = -1;
      for (let epoch = 0; epoch < epochs; epoch++) {
        trainer.startEpoch(epoch);
        for (
          const { x, labels } of cifarBatches(train, {
            batchSize: 16,
            imgSize: 32,
            train: true,
            seed: 3,
            epoch,
          })
        ) {
          const r = await trainer.trainStep(x, labels);
          x.dispose();
          assert.ok(Number.isFinite(r.loss));
          steps++;
          // flat memory: after the first step (optimizer buffers, model caches) nothing accumulates
          if (afterFirst < 0) afterFirst = tf.memory().numTensors;
          else assert.equal(tf.memory().numTensors, afterFirst, `tensors leaked at step ${steps}`);
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      const result = await evaluate(model, testBatches());
      console.log(
        `${steps} steps in ${seconds.toFixed(1)} s (${((steps * 16) / seconds).toFixed(0)} img/s); ` +
          `test accuracy ${(100 * chance.accuracy).toFixed(1)}% -> ${(100 * result.accuracy).toFixed(1)}%`,
      );
      assert.ok(result.accuracy >= 0.85, `test accuracy ${result.accuracy} (chance is 0.25)`);

      // the checkpoint reloads: into a fresh model through createModel, and through loadCheckpoint
      await saveCheckpoint(`${dir}/last.safetensors`, model, opt, { epoch: epochs, seed: 3 });
      const reloaded = await createModel("t2t_vit_7", {
        weights: `${dir}/last.safetensors`,
        numClasses: CLASSES,
      });
      const again = await evaluate(reloaded, testBatches());
      assert.equal(again.correct, result.correct);
      assert.ok(Math.abs(again.loss - result.loss) < 1e-6);
      const fresh = await createModel("t2t_vit_7", { numClasses: CLASSES, imgSize: 32, seed: 9 });
      const freshOpt = new SGD(fresh.trainableVariables(), { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
      const state = await loadCheckpoint(`${dir}/last.safetensors`, fresh, freshOpt);
      assert.equal(state.globalStep, steps);
      assert.equal((await evaluate(fresh, testBatches())).correct, result.correct);

      for (const m of [reloaded, fresh, model]) m.dispose();
      freshOpt.dispose();
      opt.dispose();
      assert.equal(tf.memory().numTensors, before, "everything freed");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
