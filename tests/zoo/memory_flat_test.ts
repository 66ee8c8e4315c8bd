/**
 * Tensors stay flat: inference, training steps, weight conversions and loading, training checkpoints and the
 * error paths, in a loop on every backend (cpu, wasm, and webgpu where an adapter exists), must leave
 * `tf.memory()` (tensor count and bytes) exactly where it was after a warm-up; and everything is released
 * when the model and optimizer are disposed.
 *
 * In CI `T2T_REQUIRE_WEBGPU=1` makes a missing WebGPU adapter a failure instead of a skipped test.
 */

import assert from "node:assert/strict";
import { ModelError, WeightsError } from "../../src/core/errors.ts";
import { convertToSafetensorsBytes } from "../../converters/convert.ts";
import { parseSafetensors, readSafetensors } from "../../converters/safetensors.ts";
import {
  type BackendName,
  checkpointFilter,
  createModel,
  readWeights,
  setBackend,
  type T2tVit,
  tf,
} from "../../zoo/mod.ts";
import { AdamW, loadCheckpoint, saveCheckpoint, SGD, Trainer } from "../../src/train/mod.ts";
import { ref } from "../support/fixtures.ts";
import { assertAdapter, webgpuTestOptions } from "../support/webgpu.ts";
import { TINY_CONFIG } from "../support/fixtures.ts";

const TINY = TINY_CONFIG;

interface Snapshot {
  numTensors: number;
  numBytes: number;
}

function snapshot(): Snapshot {
  const m = tf.memory();
  return { numTensors: m.numTensors, numBytes: m.numBytes };
}

/** One round of everything that creates tensors. */
async function round(
  model: T2tVit,
  trainer: Trainer,
  x: tf.Tensor4D,
  labels: Int32Array,
  ckptBytes: Uint8Array,
  dir: string,
  i: number,
  steps: number,
): Promise<void> {
  // inference: logits, features, attention maps
  const y = model.forward(x);
  await y.data();
  y.dispose();
  const f = model.forwardFeatures(x);
  f.dispose();
  const { logits, attentions } = model.forwardWithAttention(x);
  await logits.data();
  tf.dispose([logits, ...attentions]);
  // training steps (dropout on, gradient clipping on)
  for (let s = 0; s < steps; s++) {
    const r = await trainer.trainStep(x, labels);
    assert.ok(Number.isFinite(r.loss), `loss ${r.loss}`);
  }
  // conversion of a real checkpoint to safetensors, and loading the converted weights into the model
  const { bytes } = convertToSafetensorsBytes(ckptBytes, {
    file: "tiny-state-dict.pth",
    dtype: i % 2 ? "f16" : "keep",
  });
  const { tensors } = parseSafetensors(bytes, "converted");
  model.loadStateDict(tensors);
  const fromCheckpoint = checkpointFilter((await readWeights(ckptBytes)).state);
  model.loadStateDict(fromCheckpoint.tensors);
  // a training checkpoint written and read back (weights and optimizer state)
  const path = `${dir}/ckpt.safetensors`;
  await saveCheckpoint(path, model, trainer.optimizer, { epoch: i, seed: 0 });
  await loadCheckpoint(path, model, trainer.optimizer);
  // error paths
  const bad = tf.zeros([1, 3, 16, 16]) as tf.Tensor4D;
  assert.throws(() => model.forward(bad), ModelError);
  bad.dispose();
  const wrong = new Map(tensors);
  wrong.set("head.weight", { dtype: "F32", shape: [3, 3], data: new Uint8Array(36) });
  assert.throws(() => model.loadStateDict(wrong), WeightsError);
}

async function flat(backend: BackendName): Promise<void> {
  // a software WebGPU adapter takes seconds per round: one optimizer, fewer rounds there
  const soft = backend === "webgpu";
  const steps = soft ? 1 : 2;
  const checks = soft ? 2 : 3;
  assert.equal(await setBackend(backend), backend);
  const start = snapshot();
  const weights = (await readSafetensors(ref("checkpoints/tiny-expected.safetensors"))).tensors;
  const ckptBytes = Deno.readFileSync(ref("checkpoints/tiny-state-dict.pth"));
  const model = await createModel({ ...TINY, dropRate: 0.1, dropPathRate: 0.1 }, { weights });
  const params = model.trainableVariables();
  const optimizers = [
    new AdamW(params, { lr: 1e-4, weightDecay: 0.05 }),
    ...(soft ? [] : [new SGD(params, { lr: 1e-3, momentum: 0.9, weightDecay: 5e-4 })]),
  ];
  const x = tf.tidy(() => tf.randomUniform([2, 3, 32, 32], -1, 1, "float32", 7)) as tf.Tensor4D;
  const labels = new Int32Array([3, 7]);
  const dir = Deno.makeTempDirSync({ prefix: "t2t-memory-" });
  try {
    for (const opt of optimizers) {
      const trainer = new Trainer(model, opt, { clipGradNorm: 1, seed: 1 });
      // warm-up: optimizer state is created on the first step; backends cache on first use
      for (let i = 0; i < 2; i++) await round(model, trainer, x, labels, ckptBytes, dir, i, steps);
      const base = snapshot();
      for (let i = 2; i < 2 + checks; i++) {
        await round(model, trainer, x, labels, ckptBytes, dir, i, steps);
        assert.deepEqual(
          snapshot(),
          base,
          `${backend} / ${opt.constructor.name}: round ${i} changed tf.memory()`,
        );
      }
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
    for (const opt of optimizers) opt.dispose();
    x.dispose();
    model.dispose();
  }
  assert.deepEqual(snapshot(), start, `${backend}: everything released after dispose`);
}

Deno.test("memory flat: cpu", () => flat("cpu"));

Deno.test("memory flat: wasm", () => flat("wasm"));

Deno.test({
  name: "memory flat: webgpu",
  ...webgpuTestOptions("webgpu memory"),
  fn: async () => {
    assertAdapter();
    await flat("webgpu");
  },
});

Deno.test("inference frees each block's activations as it goes: peak bytes of a forward pass stay a few blocks' worth", async () => {
  await setBackend("wasm");
  const model = await createModel("t2t_vit_7");
  try {
    const x = tf.randomNormal([4, 3, 224, 224]) as tf.Tensor4D;
    const peak = async (f: () => tf.TensorContainer) => (await tf.profile(f)).peakBytes;
    const base = tf.memory().numBytes;
    // collecting attention maps keeps every intermediate alive until the end: the whole network's
    const kept = await peak(() => model.forwardWithAttention(x));
    const freed = await peak(() => model.forward(x));
    const a = (kept - base) / 2 ** 20, b = (freed - base) / 2 ** 20;
    assert.ok(b < 0.4 * a, `peak activations ${b.toFixed(1)} MB freed as we go vs ${a.toFixed(1)} MB kept`);
    x.dispose();
  } finally {
    model.dispose();
  }
});
