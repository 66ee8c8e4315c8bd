/**
 * The zoo's configurations against the reference manifest: every variant's state_dict keys, shapes and order,
 * total and trainable parameter counts, the sinusoid table, the pos_embed resize, default preprocessing,
 * config validation, and the official initialisation.
 */
import assert from "node:assert/strict";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { ModelError } from "../../src/core/errors.ts";
import {
  configFromKwargs,
  createModel,
  MODEL_CLASSES,
  MODEL_CONFIGS,
  MODEL_NAMES,
  type ModelName,
  resizePosEmbed,
  resizePosEmbedTensor,
  resolveConfig,
  setBackend,
  sinusoidTable,
  T2tVit,
  T2tVit14,
  T2tVit7,
  tf,
  VARIANTS,
} from "../../zoo/mod.ts";
import { manifest, ref } from "../support/fixtures.ts";
import { maxAbsDiff } from "../support/zoo.ts";

await setBackend("wasm");

Deno.test("MODEL_NAMES: the 14 official factories, as the manifest lists them", () => {
  const entries = manifest();
  const factories = [...new Set(Object.values(entries).map((e) => e.factory))];
  assert.deepEqual([...MODEL_NAMES].sort(), factories.sort());
  assert.equal(MODEL_NAMES.length, 14);
  for (const n of MODEL_NAMES) {
    assert.ok(MODEL_CONFIGS[n], n);
    assert.equal(typeof MODEL_CLASSES[n].create, "function", n);
    // plain data: survives JSON
    assert.deepEqual(JSON.parse(JSON.stringify(MODEL_CONFIGS[n])), { ...MODEL_CONFIGS[n] });
  }
});

for (const [entry, m] of Object.entries(manifest())) {
  Deno.test(`state_dict of ${entry}: keys, shapes, order and parameter counts equal the manifest`, () => {
    const cfg = resolveConfig({ ...MODEL_CONFIGS[m.factory as ModelName], imgSize: m.img_size });
    const model = new MODEL_CLASSES[m.factory as ModelName](cfg, { name: m.factory, deferInit: true });
    try {
      const ours = [...model.stateDict()].map(([k, v]) => [k, v.shape]);
      assert.deepEqual(ours, m.state_dict);
      assert.equal(model.parameterCount(), m.params_total);
      if (m.img_size === 224) {
        assert.equal(VARIANTS[m.factory as ModelName].params, m.params_total, "VARIANTS");
      }
      assert.equal(model.parameterCount({ trainable: true }), m.params_trainable);
      const trainable = model.trainableVariables();
      let n = 0;
      for (const v of trainable.values()) n += v.size;
      assert.equal(n, m.params_trainable);
      assert.ok(!trainable.has("pos_embed"));
      for (const k of trainable.keys()) assert.ok(!k.endsWith(".w"), k);
      for (const [k, v] of trainable) {
        assert.ok(v.trainable, k);
        assert.ok(v.name.endsWith("/" + k), v.name);
      }
      assert.equal(model.numPatches, (m.img_size / 16) ** 2);
      assert.equal(model.pretrainedCfg.inputSize[2], m.img_size);
    } finally {
      model.dispose();
    }
  });
}

Deno.test("sinusoid table equals the official get_sinusoid_encoding for every variant", async () => {
  for (const [entry, m] of Object.entries(manifest())) {
    const want = (await readSafetensors(ref(`outputs/${entry.replace("@", "_")}.safetensors`))).tensors.get(
      "sinusoid",
    )!;
    const [n, d] = want.shape;
    assert.equal(n, (m.img_size / 16) ** 2 + 1);
    const err = maxAbsDiff(sinusoidTable(n, d), toFloat32(want));
    assert.ok(err <= 1e-6, `${entry}: ${err}`);
  }
});

Deno.test("a fresh model starts with the sinusoid table as pos_embed", async () => {
  const model = await T2tVit7.create();
  try {
    const want = (await readSafetensors(ref("outputs/t2t_vit_7.safetensors"))).tensors.get("sinusoid")!;
    assert.ok(maxAbsDiff(await model.stateDict().get("pos_embed")!.data(), toFloat32(want)) <= 1e-6);
  } finally {
    model.dispose();
  }
});

Deno.test("pos_embed resize to 384 and 160 equals F.interpolate(bicubic, align_corners=False)", async () => {
  const { tensors } = await readSafetensors(ref("outputs/pos_embed_resize.safetensors"));
  const src = toFloat32(tensors.get("pos_embed_224")!);
  for (const [size, key] of [[384, "pos_embed_384"], [160, "pos_embed_160"]] as const) {
    const want = toFloat32(tensors.get(key)!);
    const grid = size / 16;
    const js = resizePosEmbed(src, 384, 14, grid);
    assert.ok(maxAbsDiff(js, want) <= 1e-6, `${key} (js): ${maxAbsDiff(js, want)}`);
    const t = resizePosEmbedTensor(tf.tensor3d(src, [1, 197, 384]), 14, grid);
    const dev = await t.data();
    t.dispose();
    assert.ok(maxAbsDiff(dev, want) <= 1e-5, `${key} (tensor): ${maxAbsDiff(dev, want)}`);
  }
  // the class row is kept as is
  assert.deepEqual(resizePosEmbed(src, 384, 14, 24).subarray(0, 384), src.subarray(0, 384));
});

Deno.test("pretrainedCfg: timm's default_cfg (crop 0.9, bicubic, ImageNet mean/std) at the model's size", async () => {
  const model = await createModel("t2t_vit_7", { imgSize: 160, numClasses: 10 });
  try {
    assert.deepEqual(model.pretrainedCfg, {
      inputSize: [3, 160, 160],
      cropPct: 0.9,
      interpolation: "bicubic",
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
      numClasses: 10,
    });
    assert.equal(model.name, "t2t_vit_7");
    assert.ok(model instanceof T2tVit7);
    assert.ok(model instanceof T2tVit);
  } finally {
    model.dispose();
  }
});

Deno.test("resolveConfig and configFromKwargs reject bad configurations with a ModelError naming the field", () => {
  const base = { embedDim: 64, depth: 2, numHeads: 4 };
  const bad: [Record<string, unknown>, string][] = [
    [{ ...base, imgSize: 100 }, "imgSize"],
    [{ ...base, numHeads: 5 }, "numHeads"],
    [{ ...base, numClasses: -1 }, "numClasses"],
    [{ ...base, tokensType: "convolution" }, "tokensType"],
    [{ ...base, dropPathRate: 1 }, "dropPathRate"],
    [{ ...base, qkScale: 0 }, "qkScale"],
    [{ ...base, blockType: "dense" }, "growthRate"],
    [{ ...base, mlpRatio: 0 }, "mlpRatio"],
    [{ ...base, blockType: "ghost", mlpRatio: 2 }, "mlpRatio"],
  ];
  for (const [cfg, key] of bad) {
    assert.throws(
      () => resolveConfig(cfg as never),
      (e: unknown) => e instanceof ModelError && e.key === key,
      key,
    );
  }
  assert.throws(
    () => configFromKwargs({ embed_dim: 64, bogus: 1 }),
    (e: unknown) => e instanceof ModelError && e.key === "bogus",
  );
  const tiny = configFromKwargs({
    img_size: 32,
    tokens_type: "performer",
    embed_dim: 32,
    depth: 2,
    num_heads: 2,
    mlp_ratio: 2.0,
    token_dim: 16,
    num_classes: 10,
  });
  assert.deepEqual(
    [tiny.imgSize, tiny.embedDim, tiny.depth, tiny.numHeads, tiny.mlpRatio, tiny.tokenDim, tiny.numClasses],
    [32, 32, 2, 2, 2, 16, 10],
  );
  // the official constructor's defaults, and dense implied by its arguments
  const dflt = configFromKwargs({});
  assert.deepEqual([dflt.embedDim, dflt.depth, dflt.numHeads, dflt.mlpRatio], [768, 12, 12, 4]);
  const dense = configFromKwargs({
    embed_dim: 128,
    num_heads: 8,
    mlp_ratio: 2,
    growth_rate: 64,
    block_config: [3, 6, 6, 4],
  });
  assert.deepEqual({ ...dense }, { ...MODEL_CONFIGS.t2t_vit_dense });
});

Deno.test("createModel rejects unknown names and bad options", async () => {
  await assert.rejects(
    createModel("t2t_vit_99" as never),
    (e: unknown) => e instanceof ModelError && /unknown model/.test(String(e)),
  );
  await assert.rejects(createModel("t2t_vit_7", { imgSize: 230 }), ModelError);
  await assert.rejects(createModel("t2t_vit_7", { dropPathRate: 2 }), ModelError);
});

Deno.test("the official initialisation: trunc-normal(0.02) linears, zero biases, unit norms, orthogonal performer features", async () => {
  const model = await T2tVit7.create({ seed: 1 });
  try {
    const sd = model.stateDict();
    const stats = async (k: string) => {
      const v = await sd.get(k)!.data();
      let s = 0, s2 = 0, mx = 0;
      for (const x of v) {
        s += x;
        s2 += x * x;
        mx = Math.max(mx, Math.abs(x));
      }
      return { mean: s / v.length, std: Math.sqrt(s2 / v.length - (s / v.length) ** 2), max: mx };
    };
    const w = await stats("blocks.0.mlp.fc1.weight");
    assert.ok(Math.abs(w.mean) < 1e-3 && Math.abs(w.std - 0.02) < 1e-3, JSON.stringify(w));
    assert.equal((await stats("blocks.0.mlp.fc1.bias")).max, 0);
    assert.deepEqual([...new Set(await sd.get("norm.weight")!.data())], [1]);
    assert.equal((await stats("cls_token")).std > 0.01, true);
    // performer w: rows orthogonal, each of norm sqrt(m) * 1 (orthogonal_ then * sqrt(m)) with m = 32
    const pw = await sd.get("tokens_to_token.attention1.w")!.data();
    for (const [i, j] of [[0, 0], [0, 1], [5, 31], [17, 17]]) {
      let dot = 0;
      for (let c = 0; c < 64; c++) dot += pw[i * 64 + c] * pw[j * 64 + c];
      assert.ok(Math.abs(dot - (i === j ? 32 : 0)) < 1e-3, `w row ${i}.${j} = ${dot}`);
    }
    // seeded: same seed, same weights; other seed, other weights
    const again = await T2tVit7.create({ seed: 1 });
    const other = await T2tVit7.create({ seed: 2 });
    try {
      const a = await again.stateDict().get("head.weight")!.data();
      const b = await other.stateDict().get("head.weight")!.data();
      assert.deepEqual(await sd.get("head.weight")!.data(), a);
      assert.notDeepEqual(a, b);
    } finally {
      again.dispose();
      other.dispose();
    }
  } finally {
    model.dispose();
  }
});

Deno.test("each variant class builds its own architecture", async () => {
  const m = await T2tVit14.create({ imgSize: 32, numClasses: 3 });
  try {
    assert.equal(m.name, "t2t_vit_14");
    assert.equal(m.config.embedDim, 384);
    assert.equal(m.numPatches, 4);
    assert.deepEqual(m.stateDict().get("head.weight")!.shape, [3, 384]);
    assert.deepEqual(m.stateDict().get("pos_embed")!.shape, [1, 5, 384]);
    // forward = forwardHead(forwardFeatures)
    const x = tf.randomNormal([2, 3, 32, 32], 0, 1, "float32", 3) as tf.Tensor4D;
    const feats = m.forwardFeatures(x);
    const [a, b] = [m.forward(x), m.forwardHead(feats)];
    assert.deepEqual(b.shape, [2, 3]);
    assert.ok(maxAbsDiff(a.dataSync(), b.dataSync()) < 1e-5);
    assert.throws(() => m.forwardHead(x as unknown as tf.Tensor2D), ModelError);
    tf.dispose([x, feats, a, b]);
  } finally {
    m.dispose();
  }
});
