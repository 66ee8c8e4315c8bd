// Checkpoints (weights + optimizer state) and the trainer step, on a small stand-in model (fast, cpu).
// The real T2T-ViT goes through the same code in train_e2e_test.ts.
import "@tensorflow/tfjs-backend-cpu";
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import {
  AdamW,
  loadCheckpoint,
  optimizerStatePath,
  saveCheckpoint,
  saveWeights,
  SGD,
  type TrainableModel,
  Trainer,
  transferParamGroups,
} from "../../src/train/mod.ts";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import type { TensorMap } from "../../src/core/types.ts";
import { CheckpointError } from "../../src/core/errors.ts";

await tf.setBackend("cpu");

/** A 2-layer classifier with T2T-ViT-like names, dropout in training mode and one frozen tensor. */
class Toy implements TrainableModel {
  vars = new Map<string, tf.Variable>();
  constructor(seed: number) {
    const add = (k: string, shape: number[], trainable = true) => {
      const t = tf.randomUniform(shape, -0.5, 0.5, "float32", seed + this.vars.size);
      this.vars.set(k, tf.variable(t, trainable));
      t.dispose();
    };
    add("cls_token", [1, 1, 8]);
    add("pos_embed", [1, 2, 8], false);
    add("tokens_to_token.project.weight", [8, 12]);
    add("tokens_to_token.project.bias", [8]);
    add("blocks.0.mlp.fc1.weight", [8, 8]);
    add("norm.weight", [8]);
    add("head.weight", [3, 8]);
    add("head.bias", [3]);
  }
  forward(x: tf.Tensor4D, opts: { training?: boolean; rng?: { uniform(): number } } = {}): tf.Tensor2D {
    return tf.tidy(() => {
      const v = (k: string) => this.vars.get(k)!;
      const f = tf.slice(tf.reshape(tf.mean(x, [2]), [x.shape[0], -1]), [0, 0], [-1, 12]) as tf.Tensor2D;
      let h = tf.relu(
        tf.add(
          tf.matMul(f, v("tokens_to_token.project.weight"), false, true),
          v("tokens_to_token.project.bias"),
        ),
      );
      // seeded from the trainer's generator, as TrainableModel asks (the zoo's models do the same)
      if (opts.training) h = tf.dropout(h, 0.3, undefined, opts.rng?.uniform());
      h = tf.add(h, tf.reshape(v("cls_token"), [1, 8]));
      h = tf.add(h, tf.matMul(h, v("blocks.0.mlp.fc1.weight"), false, true));
      h = tf.mul(h, v("norm.weight"));
      h = tf.add(h, tf.sum(v("pos_embed")));
      return tf.add(tf.matMul(h, v("head.weight"), false, true), v("head.bias")) as tf.Tensor2D;
    });
  }
  stateDict() {
    return new Map<string, tf.Tensor>(this.vars);
  }
  loadStateDict(tensors: TensorMap | Map<string, tf.Tensor>) {
    for (const [k, v] of this.vars) {
      const t = tensors.get(k);
      if (!t) throw new Error(`missing ${k}`);
      if (t instanceof tf.Tensor) v.assign(t);
      else tf.tidy(() => v.assign(tf.tensor(toFloat32(t), t.shape)));
    }
  }
  trainableVariables() {
    return new Map([...this.vars].filter(([, v]) => v.trainable));
  }
  dispose() {
    for (const v of this.vars.values()) v.dispose();
  }
}

function batch(i: number): { x: tf.Tensor4D; labels: Int32Array } {
  const x = tf.randomUniform([4, 3, 4, 4], -1, 1, "float32", 1000 + i) as tf.Tensor4D;
  return { x, labels: Int32Array.from([i % 3, (i + 1) % 3, (i + 2) % 3, i % 3]) };
}

async function weightsOf(m: Toy): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [k, v] of m.vars) out.set(k, (await v.data()) as Float32Array);
  return out;
}

async function train(trainer: Trainer, from: number, to: number, perEpoch: number) {
  for (let s = from; s < to; s++) {
    if (s % perEpoch === 0) trainer.startEpoch(s / perEpoch);
    const b = batch(s);
    await trainer.trainStep(b.x, b.labels);
    b.x.dispose();
  }
}

for (const kind of ["sgd", "adamw"] as const) {
  Deno.test(`${kind}: N steps straight = N/2 + save + load + N/2, bit for bit (dropout on)`, async () => {
    const dir = await Deno.makeTempDir();
    const start = tf.memory().numTensors;
    try {
      const make = (seedModel: number) => {
        const m = new Toy(seedModel);
        const groups = transferParamGroups(m.trainableVariables(), { lr: 0.1, transferRatio: 0.1 });
        const opt = kind === "sgd"
          ? new SGD(groups, { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 })
          : new AdamW(groups, { lr: 0.1, weightDecay: 0.05 });
        return { m, opt };
      };
      const { CosineSchedule } = await import("../../src/train/mod.ts");
      const schedule = new CosineSchedule({ tInitial: 4, lrMin: 0.01 });
      const a = make(1);
      const ta = new Trainer(a.m, a.opt, { seed: 7, schedule, clipGradNorm: 1.0, labelSmoothing: 0.1 });
      await train(ta, 0, 8, 2);
      const straight = await weightsOf(a.m);

      const b = make(1);
      const tb = new Trainer(b.m, b.opt, { seed: 7, schedule, clipGradNorm: 1.0, labelSmoothing: 0.1 });
      await train(tb, 0, 4, 2);
      await saveCheckpoint(`${dir}/ck.safetensors`, b.m, b.opt, {
        epoch: 2,
        seed: 7,
        schedule: schedule.toJSON(),
      });
      b.opt.dispose();
      b.m.dispose();

      const c = make(99); // different initial weights: everything must come from the checkpoint
      const state = await loadCheckpoint(`${dir}/ck.safetensors`, c.m, c.opt);
      assert.equal(state.epoch, 2);
      assert.equal(state.globalStep, 4);
      assert.equal(state.seed, 7);
      const tc = new Trainer(c.m, c.opt, {
        seed: state.seed,
        schedule,
        clipGradNorm: 1.0,
        labelSmoothing: 0.1,
      });
      assert.equal(tc.globalStep, 4);
      await train(tc, 4, 8, 2);
      const resumed = await weightsOf(c.m);
      for (const [k, w] of straight) assert.deepEqual(resumed.get(k), w, `${k} differs after resuming`);
      // frozen by the transfer groups (as the official script): cls_token and norm never move
      const fresh = new Toy(1);
      assert.deepEqual(straight.get("cls_token"), (await weightsOf(fresh)).get("cls_token"));
      assert.notDeepEqual(straight.get("head.weight"), (await weightsOf(fresh)).get("head.weight"));
      fresh.dispose();
      for (const t of [a, c]) {
        t.opt.dispose();
        t.m.dispose();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    assert.equal(tf.memory().numTensors, start);
  });
}

Deno.test("checkpoint files: official keys in the weights file, optimizer file with metadata, mismatches refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const m = new Toy(3);
    const opt = new SGD(m.trainableVariables(), { lr: 0.05, momentum: 0.9 });
    const t = new Trainer(m, opt);
    await train(t, 0, 2, 10);
    const path = `${dir}/last.safetensors`;
    await saveCheckpoint(path, m, opt, { epoch: 1, seed: 3, bestAccuracy: 0.5 }, { arch: "toy" });
    const w = await readSafetensors(path);
    assert.deepEqual([...w.tensors.keys()], [...m.vars.keys()]);
    assert.equal(w.metadata.format, "pt");
    assert.equal(w.metadata.arch, "toy");
    assert.deepEqual(toFloat32(w.tensors.get("head.bias")!), await m.vars.get("head.bias")!.data());
    const o = await readSafetensors(optimizerStatePath(path));
    assert.equal(o.metadata.checkpoint_id, w.metadata.checkpoint_id);
    assert.ok(o.tensors.has("state.head.weight.momentum_buffer"));
    assert.ok(!o.tensors.has("state.pos_embed.momentum_buffer"));
    const meta = JSON.parse(o.metadata.optimizer);
    assert.equal(meta.type, "sgd");
    assert.equal(meta.steps, 2);
    assert.equal(JSON.parse(o.metadata.training).bestAccuracy, 0.5);

    // weights-only file for the best model
    await saveWeights(`${dir}/best.safetensors`, m, { acc: "50" });
    assert.equal((await readSafetensors(`${dir}/best.safetensors`)).metadata.acc, "50");

    // an optimizer file from another save is refused
    await saveCheckpoint(`${dir}/other.safetensors`, m, opt, { epoch: 1, seed: 3 });
    await Deno.copyFile(optimizerStatePath(`${dir}/other.safetensors`), optimizerStatePath(path));
    await assert.rejects(
      loadCheckpoint(path, m, opt),
      (e: Error) => e instanceof CheckpointError && /different saves/.test(e.message),
    );
    // a missing optimizer file names the file
    await Deno.remove(optimizerStatePath(path));
    await assert.rejects(
      loadCheckpoint(path, m, opt),
      (e: Error) => e instanceof CheckpointError && e.message.includes("last.optim.safetensors"),
    );
    // an AdamW state into an SGD optimizer is refused
    const adam = new AdamW(m.trainableVariables(), { lr: 1e-3 });
    await assert.rejects(loadCheckpoint(`${dir}/other.safetensors`, m, adam), /optimizer state is for 'sgd'/);
    adam.dispose();
    opt.dispose();
    m.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainer step leaves no tensors behind (with clipping and smoothing)", async () => {
  const m = new Toy(5);
  const opt = new AdamW(m.trainableVariables(), { lr: 1e-3 });
  const t = new Trainer(m, opt, { clipGradNorm: 0.5, labelSmoothing: 0.1 });
  const b0 = batch(0);
  await t.trainStep(b0.x, b0.labels); // creates the optimizer buffers
  const base = tf.memory().numTensors;
  for (let i = 1; i < 6; i++) {
    const r = await t.trainStep(b0.x, b0.labels);
    assert.ok(Number.isFinite(r.loss) && r.gradNorm! > 0 && r.count === 4);
    assert.equal(tf.memory().numTensors, base);
  }
  b0.x.dispose();
  opt.dispose();
  m.dispose();
});

Deno.test("dropout masks: the same seed and step give the same update, another seed another", async () => {
  const run = async (seed: number) => {
    const m = new Toy(5);
    const opt = new SGD(m.trainableVariables(), { lr: 0.5, momentum: 0 });
    const t = new Trainer(m, opt, { seed });
    const b = batch(0);
    await t.trainStep(b.x, b.labels);
    b.x.dispose();
    const w = await weightsOf(m);
    opt.dispose();
    m.dispose();
    return w.get("tokens_to_token.project.weight");
  };
  assert.deepEqual(await run(1), await run(1));
  assert.notDeepEqual(await run(1), await run(2));
});

Deno.test("lossAndGradients: micro-batches give the full batch's loss and gradients; errors leak nothing", async () => {
  const { lossAndGradients, disposeGradients } = await import("../../src/train/mod.ts");
  const m = new Toy(8);
  const b = batch(3);
  const full = lossAndGradients(m, b.x, b.labels, { labelSmoothing: 0.1 });
  for (const micro of [1, 3]) {
    const part = lossAndGradients(m, b.x, b.labels, { labelSmoothing: 0.1, microBatch: micro });
    assert.ok(Math.abs((await part.loss.data())[0] - (await full.loss.data())[0]) < 1e-6);
    assert.deepEqual(part.logits.shape, [4, 3]);
    for (const [k, g] of full.grads) {
      const a = await g.data(), p = await part.grads.get(k)!.data();
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - p[i]) < 1e-5 * (1 + Math.abs(a[i])), k);
    }
    part.loss.dispose();
    part.logits.dispose();
    disposeGradients(part.grads);
  }
  full.loss.dispose();
  full.logits.dispose();
  disposeGradients(full.grads);
  const before = tf.memory().numTensors;
  assert.throws(() => lossAndGradients(m, b.x, [0, 1, 2, 7]), /label 7 is outside/);
  assert.throws(() => lossAndGradients(m, b.x, [0, 1, 2, 7], { microBatch: 2 }), /label 7 is outside/);
  assert.equal(tf.memory().numTensors, before);
  b.x.dispose();
  m.dispose();
});
