/**
 * The one checkpoint filter (`zoo/loader.ts`): key choice and `module.` strip on checkpoints and state dicts,
 * the head dropped and `pos_embed` resized (and reported), the weight-byte bound of a checkpoint read for a
 * model, and `resetParameters`, the model's own way to initialise what the weights did not set.
 */
import assert from "node:assert/strict";
import { readSafetensors, serializeSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { CheckpointError, ModelError } from "../../src/core/errors.ts";
import type { TensorMap } from "../../src/core/types.ts";
import { checkpointFilter, createModel, posEmbedGrid, readWeights, setBackend, tf } from "../../zoo/mod.ts";
import { f32bytes, makeZipCheckpoint, torchPickle } from "../support/checkpoint_builders.ts";
import { ref, TINY_CONFIG } from "../support/fixtures.ts";
import { filledWeights, maxAbsDiff } from "../support/zoo.ts";

await setBackend("cpu");

Deno.test("posEmbedGrid: the grid of (1, 1 + g*g, dim) shapes only", () => {
  assert.equal(posEmbedGrid([1, 197, 384]), 14);
  assert.equal(posEmbedGrid([1, 5, 32]), 2);
  for (const bad of [[1, 196, 384], [2, 197, 384], [197, 384], [1, 1, 8], [1, 0, 8]]) {
    assert.equal(posEmbedGrid(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("checkpointFilter: a checkpoint's EMA weights, module. stripped, head dropped, pos_embed resized", async () => {
  const w = await readWeights(ref("checkpoints/t2t_vit_7.pth.tar"));
  const plain = checkpointFilter(w.state);
  assert.equal(plain.weightsKey, "state_dict_ema");
  assert.equal(plain.numClasses, 1000);
  assert.equal(plain.imgSize, 224);
  assert.deepEqual([plain.dropped, plain.resized], [[], []]);
  assert.ok(plain.hints.includes("t2t_vit_7.pth.tar"));
  const adapted = checkpointFilter(w.state, { numClasses: 10, imgSize: 384 });
  assert.deepEqual(adapted.dropped, ["head.weight", "head.bias"]);
  assert.deepEqual(adapted.resized, ["pos_embed"]);
  assert.ok(!adapted.tensors.has("head.weight"));
  assert.deepEqual(adapted.tensors.get("pos_embed")!.shape, [1, 577, 256]);
  // a DataParallel state dict: the prefix goes, the values stay
  const prefixed = new Map([...plain.tensors as TensorMap].map(([k, t]) => [`module.${k}`, t]));
  const stripped = checkpointFilter(prefixed);
  assert.deepEqual([...stripped.tensors.keys()], [...plain.tensors.keys()]);
  assert.equal(stripped.tensors.get("cls_token"), plain.tensors.get("cls_token"));
  const m = await createModel("t2t_vit_7", { weights: prefixed });
  m.dispose();
  // the caller's map is never changed
  assert.ok(prefixed.has("module.head.weight"));
  const mine = new Map(plain.tensors as TensorMap);
  checkpointFilter(mine, { numClasses: 3, imgSize: 160 });
  assert.deepEqual(mine.get("pos_embed")!.shape, [1, 197, 256]);
  assert.ok(mine.has("head.weight"));
});

Deno.test("checkpointFilter: tf.Tensor weights resize on the device; the resized tensor is the caller's to dispose", async () => {
  const { tensors } = await readSafetensors(ref("outputs/pos_embed_resize.safetensors"));
  const w = filledWeights("t2t_vit_t_14");
  const tfMap = new Map([...w].map(([k, v]) => [k, tf.tensor(toFloat32(v), v.shape)]));
  try {
    const f = checkpointFilter(tfMap, { imgSize: 384 });
    assert.equal(f.owned.length, 1);
    const got = await (f.tensors.get("pos_embed") as tf.Tensor).data();
    assert.ok(maxAbsDiff(got, toFloat32(tensors.get("pos_embed_384")!)) <= 1e-5);
    tf.dispose(f.owned);
    const before = tf.memory().numTensors;
    const m = await createModel("t2t_vit_t_14", { weights: tfMap, imgSize: 384, numClasses: 10 });
    assert.deepEqual(m.stateDict().get("pos_embed")!.shape, [1, 577, 384]);
    m.dispose();
    assert.equal(tf.memory().numTensors, before, "createModel disposed the pos_embed it resized");
  } finally {
    tf.dispose([...tfMap.values()]);
  }
});

Deno.test("a checkpoint whose tensors repeat one storage is refused by the loader as by the converter", async () => {
  const tensors: [string, { key: string; storage: string; numel: number; shape: number[] }][] = [];
  for (let i = 0; i < 400; i++) {
    tensors.push([`w${i}`, { key: "0", storage: "FloatStorage", numel: 1 << 18, shape: [1 << 18] }]);
  }
  const bytes = makeZipCheckpoint(torchPickle(tensors), { "0": new Uint8Array(1 << 20) });
  await assert.rejects(createModel(TINY_CONFIG, { weights: bytes }), (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.match(e.message, /would make 419430400 bytes of output from a file of \d+ bytes/);
    return true;
  });
  // a small one is read, its `module.` prefix stripped
  const one = makeZipCheckpoint(
    torchPickle([["module.w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]]),
    {
      "0": f32bytes([1]),
    },
  );
  const f = checkpointFilter((await readWeights(one)).state);
  assert.deepEqual([...f.tensors.keys()], ["w"]);
});

Deno.test("resetParameters: the official initialisation again, by key; unknown keys are ModelErrors", async () => {
  const m = await createModel(TINY_CONFIG, { seed: 3 });
  try {
    const first = await m.stateDict().get("head.weight")!.data();
    const w = new Map([...m.stateDict()].map(([k, v]) => [k, tf.zerosLike(v)]));
    m.loadStateDict(w);
    tf.dispose([...w.values()]);
    m.resetParameters(["head.weight"]);
    const again = await m.stateDict().get("head.weight")!.data();
    assert.ok(again.some((v) => v !== 0), "re-initialised");
    assert.notDeepEqual(again, first, "drawn further along the model's stream");
    assert.ok((await m.stateDict().get("norm.weight")!.data()).every((v) => v === 0), "the rest untouched");
    assert.throws(() => m.resetParameters(["nope"]), ModelError);
  } finally {
    m.dispose();
  }
  // serialised and read back: the same filter
  const w = serializeSafetensors(filledWeights("t2t_vit_7"));
  const f = checkpointFilter((await readWeights(w)).state, { numClasses: 0 });
  assert.deepEqual(f.dropped, ["head.weight", "head.bias"]);
});
