/**
 * Loading weights into the zoo's models: strict checking in one error, transfer-learning adaptations (head
 * dropped for another class count, pos_embed resized for another image size), every weights source, the
 * official checkpoint through the converter, the tiny custom config, and input validation.
 */
import assert from "node:assert/strict";
import { readSafetensors, serializeSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import type { TensorMap } from "../../src/core/types.ts";
import { ModelError, SafetensorsError, WeightsError } from "../../src/core/errors.ts";
import { fill, fillInput } from "../../src/core/fill.ts";
import {
  configFromKwargs,
  createModel,
  loadModel,
  readWeights,
  resolveConfig,
  setBackend,
  T2tVit,
  T2tVit7,
  T2tVitT14,
  tf,
} from "../../zoo/mod.ts";
import { ref } from "../support/fixtures.ts";
import { filledWeights, maxAbsDiff } from "../support/zoo.ts";
import { TINY_CONFIG } from "../support/fixtures.ts";

await setBackend("wasm");

const TINY = TINY_CONFIG;

/** Filled weights for whatever model `m` is. */
function weightsOf(m: T2tVit): TensorMap {
  const out: TensorMap = new Map();
  for (const [k, v] of m.stateDict()) {
    const values = fill(k, v.shape);
    out.set(k, { dtype: "F32", shape: [...v.shape], data: new Uint8Array(values.buffer) });
  }
  return out;
}

async function tinyWeights(): Promise<TensorMap> {
  const m = await createModel(TINY);
  try {
    return weightsOf(m);
  } finally {
    m.dispose();
  }
}

function f32(values: number[] | Float32Array, shape: number[]) {
  return { dtype: "F32" as const, shape, data: new Uint8Array(Float32Array.from(values).buffer) };
}

Deno.test("strict loading lists every missing, unexpected, mis-shaped and non-finite key in one WeightsError", async () => {
  const w = await tinyWeights();
  w.delete("blocks.1.mlp.fc2.bias");
  w.delete("norm.weight");
  w.set("blocks.9.attn.qkv.weight", f32([1, 2], [2]));
  w.set("head.bias", f32(new Float32Array(7), [7])); // head.weight says 10 classes
  const nan = toFloat32(w.get("cls_token")!);
  nan[3] = NaN;
  w.set("cls_token", f32(nan, [1, 1, 32]));
  const inf = toFloat32(w.get("blocks.0.norm1.bias")!);
  inf[0] = -Infinity;
  w.set("blocks.0.norm1.bias", f32(inf, [32]));
  const before = tf.memory().numTensors;
  await assert.rejects(createModel(TINY, { weights: w }), (e: unknown) => {
    assert.ok(e instanceof WeightsError, String(e));
    const msg = e.message;
    for (
      const k of [
        "blocks.1.mlp.fc2.bias",
        "norm.weight",
        "blocks.9.attn.qkv.weight",
        "head.bias",
        "cls_token",
        "blocks.0.norm1.bias",
      ]
    ) {
      assert.ok(msg.includes(k), `${k} not in: ${msg}`);
    }
    assert.match(msg, /missing keys \(2\)/);
    assert.match(msg, /unexpected keys \(1\)/);
    assert.match(msg, /mis-shaped keys \(1\): head\.bias: \[7\], expected \[10\]/);
    assert.match(msg, /NaN or infinite values in \(2\)/);
    const cause = e.cause as Record<string, string[]>;
    assert.deepEqual(cause.missing.sort(), ["blocks.1.mlp.fc2.bias", "norm.weight"]);
    assert.deepEqual(cause.unexpected, ["blocks.9.attn.qkv.weight"]);
    assert.deepEqual(cause.nonFinite.sort(), ["blocks.0.norm1.bias", "cls_token"]);
    return true;
  });
  assert.equal(tf.memory().numTensors, before, "a failed load leaves nothing behind");
});

Deno.test("a single bad key is named in the error's key; the file is named too", async () => {
  const w = await tinyWeights();
  w.delete("norm.bias");
  const bytes = serializeSafetensors(w);
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    await Deno.writeFile(path, bytes);
    await assert.rejects(createModel(TINY, { weights: path }), (e: unknown) => {
      assert.ok(e instanceof WeightsError);
      assert.equal(e.key, "norm.bias");
      assert.equal(e.file, path);
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("non-strict loading keeps missing parameters initialised and ignores unexpected keys", async () => {
  const w = await tinyWeights();
  w.delete("head.weight");
  w.delete("head.bias");
  w.set("extra.thing", f32([1], [1]));
  const m = await createModel({ ...TINY }, { weights: w, strict: false });
  try {
    const head = await m.stateDict().get("head.weight")!.data();
    assert.ok(head.some((v) => v !== 0), "the head was initialised");
    assert.deepEqual(await m.stateDict().get("norm.weight")!.data(), fill("norm.weight", [32]));
    const report = m.loadStateDict(w, { strict: false });
    assert.deepEqual(report.missing, ["head.weight", "head.bias"]);
    assert.deepEqual(report.unexpected, ["extra.thing"]);
  } finally {
    m.dispose();
  }
});

Deno.test("another numClasses drops the head (transfer learning); the rest loads unchanged", async () => {
  const w = await tinyWeights();
  const full = await createModel(TINY, { weights: w });
  const ten = await createModel(TINY, { weights: w, numClasses: 3 });
  const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
  try {
    assert.equal(full.config.numClasses, 10, "the class count comes from the weights");
    assert.deepEqual(ten.stateDict().get("head.weight")!.shape, [3, 32]);
    const a = full.forwardFeatures(x);
    const b = ten.forwardFeatures(x);
    assert.deepEqual(await a.data(), await b.data());
    const logits = ten.forward(x);
    assert.deepEqual(logits.shape, [2, 3]);
    tf.dispose([a, b, logits]);
  } finally {
    tf.dispose([x]);
    full.dispose();
    ten.dispose();
  }
});

Deno.test("numClasses 0: no head, forward gives the features (nn.Identity)", async () => {
  const w = await tinyWeights();
  const m = await createModel(TINY, { weights: w, numClasses: 0 });
  const x = tf.tensor4d(fillInput(1, 32), [1, 3, 32, 32]);
  try {
    assert.ok(!m.stateDict().has("head.weight"));
    const y = m.forward(x);
    const f = m.forwardFeatures(x);
    assert.deepEqual(y.shape, [1, 32]);
    assert.deepEqual(await y.data(), await f.data());
    tf.dispose([y, f]);
  } finally {
    x.dispose();
    m.dispose();
  }
});

Deno.test("another imgSize resizes pos_embed bicubically (the official resize_pos_embed); the size is inferred otherwise", async () => {
  const { tensors } = await readSafetensors(ref("outputs/pos_embed_resize.safetensors"));
  const w = filledWeights("t2t_vit_t_14"); // pos_embed = fill("pos_embed", [1, 197, 384]), as the reference's
  for (const [size, key] of [[384, "pos_embed_384"], [160, "pos_embed_160"]] as const) {
    const m = await T2tVitT14.create({ weights: w, imgSize: size });
    try {
      const got = await m.stateDict().get("pos_embed")!.data();
      assert.ok(maxAbsDiff(got, toFloat32(tensors.get(key)!)) <= 1e-6, key);
      assert.equal(m.numPatches, (size / 16) ** 2);
    } finally {
      m.dispose();
    }
  }
  // without imgSize, the weights' grid decides: a 384 checkpoint builds a 384 model
  const big = new Map(w);
  big.set("pos_embed", tensors.get("pos_embed_384")!);
  const m = await T2tVitT14.create({ weights: big });
  try {
    assert.equal(m.config.imgSize, 384);
    assert.deepEqual(m.pretrainedCfg.inputSize, [3, 384, 384]);
  } finally {
    m.dispose();
  }
});

Deno.test("weights from a path, file URL, URL object, bytes, raw tensors or tf tensors", async () => {
  const w = await tinyWeights();
  const bytes = serializeSafetensors(w);
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  const x = tf.tensor4d(fillInput(1, 32), [1, 3, 32, 32]);
  const tfMap = new Map([...w].map(([k, v]) => [k, tf.tensor(toFloat32(v), v.shape)]));
  try {
    await Deno.writeFile(path, bytes);
    const url = new URL(`file://${path}`);
    const outs: Float32Array[] = [];
    for (const weights of [path, url.href, url, bytes, w, tfMap]) {
      const m = await createModel(TINY, { weights });
      const y = m.forward(x);
      outs.push(await y.data() as Float32Array);
      y.dispose();
      m.dispose();
    }
    for (const o of outs.slice(1)) assert.deepEqual(o, outs[0]);
  } finally {
    x.dispose();
    tf.dispose([...tfMap.values()]);
    await Deno.remove(path);
  }
});

Deno.test("a model owns its weights: raw tensors changed after loading change nothing, on every CPU backend", async () => {
  const x = tf.tensor4d(fillInput(1, 32), [1, 3, 32, 32]);
  try {
    for (const backend of ["wasm", "cpu"] as const) {
      await setBackend(backend);
      const w = await tinyWeights(); // the wasm backend reads these bytes in place, the cpu backend copies them
      const m = await createModel(TINY, { weights: w });
      const logits = async () => {
        const y = m.forward(x);
        const v = await y.data();
        y.dispose();
        return v;
      };
      const before = await logits();
      const state = m.stateDict();
      for (const t of w.values()) t.data.fill(0x7f);
      const after = await logits();
      assert.deepEqual(after, before, `${backend}: the logits moved with the caller's bytes`);
      const key = "blocks.0.attn.qkv.weight";
      assert.deepEqual(await state.get(key)!.data(), fill(key, state.get(key)!.shape), `${backend}: ${key}`);
      m.dispose();
    }
  } finally {
    await setBackend("wasm");
    x.dispose();
  }
});

Deno.test("a model built to be loaded holds one zero buffer per parameter shape, not a copy of its weights", async () => {
  for (const backend of ["wasm", "cpu"] as const) {
    await setBackend(backend);
    try {
      const before = tf.memory().numDataBuffers;
      const m = new T2tVit(resolveConfig(TINY), { deferInit: true });
      const state = m.stateDict();
      const shapes = new Set([...state.values()].map((v) => v.shape.join(",")));
      assert.ok(shapes.size < state.size, "the tiny config repeats shapes");
      assert.equal(tf.memory().numDataBuffers - before, shapes.size, `${backend}: buffers before loading`);
      // load all but one of a shape many parameters share: the rest get their values, it stays zero
      const w = weightsOf(m);
      const kept = "blocks.0.norm1.bias";
      w.delete(kept);
      m.loadStateDict(w, { strict: false });
      const key = "blocks.0.norm1.weight";
      assert.deepEqual(await state.get(key)!.data(), fill(key, state.get(key)!.shape), `${backend}: ${key}`);
      assert.ok((await state.get(kept)!.data()).every((v) => v === 0), `${backend}: ${kept} still zero`);
      m.resetParameters([kept]);
      assert.deepEqual(
        await state.get(key)!.data(),
        fill(key, state.get(key)!.shape),
        `${backend}: ${key} kept`,
      );
      m.dispose();
      assert.equal(tf.memory().numDataBuffers, before, `${backend}: every buffer freed`);
    } finally {
      await setBackend("wasm");
    }
  }
});

Deno.test("readWeights refuses what is neither safetensors nor a checkpoint, and names the file", async () => {
  await assert.rejects(readWeights(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])), SafetensorsError);
  await assert.rejects(readWeights("/nonexistent/w.safetensors"), (e: unknown) => {
    assert.ok(e instanceof WeightsError);
    assert.equal(e.file, "/nonexistent/w.safetensors");
    return true;
  });
});

Deno.test("the tiny config of outputs/tiny.safetensors, custom-config path, weights of tiny-state-dict.pth", async () => {
  const st = await readSafetensors(ref("outputs/tiny.safetensors"));
  const cfg = configFromKwargs(JSON.parse(st.metadata.config));
  assert.deepEqual({ ...cfg }, { ...resolveConfig(TINY) });
  const m = await createModel(cfg, { weights: ref("checkpoints/tiny-state-dict.pth") });
  const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
  try {
    assert.equal(m.name, "custom");
    const y = m.forward(x);
    const err = maxAbsDiff(await y.data(), toFloat32(st.tensors.get("logits")!));
    y.dispose();
    assert.ok(err <= 5e-5, `tiny logits differ by ${err}`);
  } finally {
    x.dispose();
    m.dispose();
  }
});

Deno.test("t2t_vit_7.pth.tar through the converter reproduces outputs/t2t_vit_7.official-init.safetensors", async () => {
  const want = (await readSafetensors(ref("outputs/t2t_vit_7.official-init.safetensors"))).tensors;
  const x = tf.tensor4d(fillInput(2, 224), [2, 3, 224, 224]);
  const before = tf.memory().numTensors;
  for (
    const make of [
      () => T2tVit7.create({ weights: ref("checkpoints/t2t_vit_7.pth.tar") }),
      () => loadModel(ref("checkpoints/t2t_vit_7.pth.tar")),
    ]
  ) {
    const m = await make();
    try {
      assert.equal(m.name, "t2t_vit_7");
      const f = m.forwardFeatures(x);
      const l = m.forward(x);
      const ef = maxAbsDiff(await f.data(), toFloat32(want.get("features")!));
      const el = maxAbsDiff(await l.data(), toFloat32(want.get("logits")!));
      tf.dispose([f, l]);
      assert.ok(ef <= 5e-5 && el <= 5e-5, `features ${ef}, logits ${el}`);
    } finally {
      m.dispose();
    }
  }
  assert.equal(tf.memory().numTensors, before);
  x.dispose();
});

Deno.test("loadModel: builds what the file names, and says so when it cannot tell", async () => {
  // a converted custom model whose head count is unknown
  await assert.rejects(loadModel(ref("checkpoints/tiny-state-dict.pth")), (e: unknown) => {
    assert.ok(e instanceof ModelError);
    assert.equal(e.key, "num_heads");
    return true;
  });
  const w = await tinyWeights();
  await assert.rejects(loadModel(serializeSafetensors(w)), /do not name their architecture/);
  const named = serializeSafetensors(w, {
    config: JSON.stringify({
      img_size: 32,
      embed_dim: 32,
      depth: 2,
      num_heads: 2,
      mlp_ratio: 2,
      token_dim: 16,
      num_classes: 10,
    }),
  });
  const m = await loadModel(named);
  assert.equal(m.config.numHeads, 2);
  m.dispose();
});

Deno.test("forward validates its input with a ModelError, never a crash inside tfjs", async () => {
  const m = await createModel(TINY);
  const bad: [() => unknown, RegExp][] = [
    [
      () => m.forward(tf.zeros([1, 32, 32, 3]) as tf.Tensor4D),
      /expected input \(B, 3, 32, 32\) NCHW float32, got shape \[1, 32, 32, 3\]/,
    ],
    [() => m.forward(tf.zeros([3, 32, 32]) as unknown as tf.Tensor4D), /got shape \[3, 32, 32\]/],
    [() => m.forward(tf.zeros([1, 3, 64, 64]) as tf.Tensor4D), /got shape/],
    [() => m.forward(tf.zeros([1, 3, 32, 32], "int32") as tf.Tensor4D), /float32/],
    [() => m.forwardFeatures(new Float32Array(3072) as unknown as tf.Tensor4D), /expected a tf.Tensor4D/],
    [() => m.forwardWithAttention(tf.zeros([0, 3, 32, 32]) as tf.Tensor4D), /got shape/],
  ];
  const before = tf.memory().numTensors;
  for (const [f, re] of bad) {
    tf.tidy(() => {
      assert.throws(f, (e: unknown) => e instanceof ModelError && re.test(e.message) && e.key === "input");
    });
  }
  assert.equal(tf.memory().numTensors, before);
  m.dispose();
  assert.ok(m.isDisposed);
  const x = tf.zeros([1, 3, 32, 32]) as tf.Tensor4D;
  assert.throws(() => m.forward(x), (e: unknown) => e instanceof ModelError && /disposed/.test(e.message));
  x.dispose();
});

Deno.test("loadStateDict from tf tensors, and a failed load changes nothing", async () => {
  const m = await createModel(TINY, { seed: 3 });
  try {
    const before = await m.stateDict().get("blocks.0.attn.qkv.weight")!.data();
    const tensors = new Map([["blocks.0.attn.qkv.weight", tf.ones([96, 32])], ["head.bias", tf.ones([9])]]);
    assert.throws(() => m.loadStateDict(tensors), WeightsError);
    assert.deepEqual(await m.stateDict().get("blocks.0.attn.qkv.weight")!.data(), before);
    tensors.get("head.bias")!.dispose();
    tensors.delete("head.bias");
    const r = m.loadStateDict(tensors, { strict: false });
    assert.deepEqual(r.loaded, ["blocks.0.attn.qkv.weight"]);
    assert.deepEqual([...new Set(await m.stateDict().get("blocks.0.attn.qkv.weight")!.data())], [1]);
    tf.dispose([...tensors.values()]);
    // still there: the variable holds its own reference
    assert.equal((await m.stateDict().get("blocks.0.attn.qkv.weight")!.data())[0], 1);
  } finally {
    m.dispose();
  }
});

Deno.test("qkScale: default head_dim^-0.5 (the released weights' value); another scale changes the outputs", async () => {
  const w = await tinyWeights();
  const x = tf.tensor4d(fillInput(1, 32), [1, 3, 32, 32]);
  const logits = async (qkScale?: number) => {
    const m = await createModel(TINY, { weights: w, qkScale });
    const y = m.forward(x);
    const d = await y.data();
    y.dispose();
    m.dispose();
    return d;
  };
  const dflt = await logits();
  assert.deepEqual(await logits(Math.pow(16, -0.5)), dflt); // embed 32, 2 heads: head_dim 16
  assert.ok(maxAbsDiff(await logits(32 ** -0.5), dflt) > 1e-5); // the official pretrained=True value
  x.dispose();
});
