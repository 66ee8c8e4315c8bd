import assert from "node:assert/strict";
import { readSafetensors } from "../../converters/safetensors.ts";
import { ImageError } from "../../src/core/errors.ts";
import {
  attentionRollout,
  type AttentionStack,
  attentionStacks,
  batchTensor,
  classifyImages,
  classTokenAttention,
  colormap,
  decodePng,
  encodePng,
  readImage,
  renderAttention,
  topK,
  upsampleBilinear,
} from "../../src/images/mod.ts";
import { createModel, setBackend, tf } from "../../zoo/mod.ts";
import { samplesFor } from "../support/png_builder.ts";
import { ref } from "../support/fixtures.ts";

/** A random row-stochastic attention stack. */
function randomStack(heads: number, n: number, blocks: number, seed: number): AttentionStack {
  return {
    numHeads: heads,
    numTokens: n,
    blocks: Array.from({ length: blocks }, (_, b) => {
      const raw = samplesFor(heads * n * n, 1000, seed + b).map((v) => v + 1);
      const a = new Float32Array(raw);
      for (let r = 0; r < heads * n; r++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += a[r * n + j];
        for (let j = 0; j < n; j++) a[r * n + j] /= s;
      }
      return a;
    }),
  };
}

Deno.test("classTokenAttention: row 0 of the chosen block, averaged over heads", () => {
  const s = randomStack(3, 5, 4, 7);
  for (const block of [0, 2, -1, -4]) {
    const b = s.blocks[block < 0 ? 4 + block : block];
    const want = [1, 2, 3, 4].map((j) => (b[j] + b[25 + j] + b[50 + j]) / 3);
    const got = classTokenAttention(s, block);
    want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) < 1e-7));
  }
  assert.deepEqual([...classTokenAttention(s)], [...classTokenAttention(s, 3)]);
  assert.throws(() => classTokenAttention(s, 4), /block 4 does not exist/);
  assert.throws(() => classTokenAttention(s, -5), ImageError);
  assert.throws(() => classTokenAttention({ ...s, blocks: [new Float32Array(3)] }), /expected 3x5x5/);
});

Deno.test("attentionRollout equals the full matrix product of (A + I) / rowsum", () => {
  const heads = 2, n = 6, L = 3;
  const s = randomStack(heads, n, L, 11);
  const mats = s.blocks.map((b) => {
    const m = Array.from(
      { length: n },
      (_, i) =>
        Array.from({ length: n }, (_, j) => (b[i * n + j] + b[n * n + i * n + j]) / 2 + (i === j ? 1 : 0)),
    );
    return m.map((row) => row.map((v) => v / row.reduce((a, c) => a + c, 0)));
  });
  const mul = (a: number[][], b: number[][]) =>
    a.map((row) => b[0].map((_, j) => row.reduce((acc, v, k) => acc + v * b[k][j], 0)));
  for (const upTo of [0, 1, 2]) {
    let r = mats[0];
    for (let l = 1; l <= upTo; l++) r = mul(mats[l], r);
    const got = attentionRollout(s, upTo);
    r[0].slice(1).forEach((w, i) => assert.ok(Math.abs(got[i] - w) < 1e-6, `upTo ${upTo}, token ${i}`));
  }
  assert.deepEqual([...attentionRollout(s)], [...attentionRollout(s, -1)]);
});

Deno.test("colour maps, bilinear upsampling and the overlay blend", () => {
  assert.deepEqual(colormap("jet", 0), [0, 0, 128]);
  assert.deepEqual(colormap("jet", 0.5), [123, 255, 123]);
  assert.deepEqual(colormap("jet", 1), [128, 0, 0]);
  assert.deepEqual(colormap("gray", 0.2), [51, 51, 51]);
  const [r0, g0, b0] = colormap("viridis", 0), [r1, g1, b1] = colormap("viridis", 1);
  assert.ok(Math.abs(r0 - 68) <= 4 && Math.abs(g0 - 1) <= 4 && Math.abs(b0 - 84) <= 4); // #440154
  assert.ok(Math.abs(r1 - 253) <= 4 && Math.abs(g1 - 231) <= 4 && Math.abs(b1 - 37) <= 4); // #fde725
  // 2x2 -> 4x4, align_corners=False: source x = (x + 0.5) / 2 - 0.5, clamped at 0
  const up = upsampleBilinear([0, 1, 2, 3], 2, 2, 4, 4);
  assert.deepEqual([...up.subarray(0, 4)], [0, 0.25, 0.75, 1]);
  assert.deepEqual([...up.subarray(12, 16)], [2, 2.25, 2.75, 3]);
  // a flat map normalises to 0: the overlay is the image blended with colour(0)
  const image = { width: 8, height: 8, data: new Uint8Array(192).fill(100) };
  const flat = renderAttention(image, new Float32Array(4).fill(0.3), { alpha: 0.25 });
  assert.deepEqual([...flat.data.subarray(0, 3)], [75, 75, 107]); // 0.75 * 100 + 0.25 * (0, 0, 128)
  const hot = renderAttention(image, [0, 0, 0, 1], { alpha: 1, colormap: "gray" });
  assert.equal(hot.data[0], 0); // top-left: the minimum
  assert.equal(hot.data[(7 * 8 + 7) * 3], 255); // bottom-right: the maximum
  assert.throws(() => renderAttention(image, [1, 2, 3]), /does not fit/);
  assert.throws(() => renderAttention(image, [0, NaN, 0, 0]), /NaN/);
  assert.throws(() => renderAttention(image, [0, 0, 0, 0], { alpha: 2 }), /alpha/);
});

Deno.test("encodePng round-trips gray, RGB and RGBA through the decoder", () => {
  for (const channels of [1, 3, 4] as const) {
    const w = 37, h = 19;
    const data = new Uint8Array(samplesFor(w * h * channels, 256, channels));
    const png = encodePng({ width: w, height: h, channels, data }, { text: { Software: "test" } });
    const back = decodePng(png, "roundtrip.png");
    assert.equal(back.header.mode, channels === 1 ? "L" : channels === 3 ? "RGB" : "RGBA");
    for (let i = 0; i < w * h; i++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(back.data[i * 3 + c], data[i * channels + (channels === 1 ? 0 : c)]);
      }
    }
  }
  assert.throws(() => encodePng({ width: 2, height: 2, data: new Uint8Array(5) }), ImageError);
});

Deno.test("topK: softmax probabilities from logits, stable order", () => {
  const p = topK(new Float32Array([1, 3, 3, -2]), 3, ["a", "b", "c", "d"]);
  assert.deepEqual(p.map((x) => x.index), [1, 2, 0]);
  assert.deepEqual(p.map((x) => x.label), ["b", "c", "a"]);
  const z = Math.exp(1) + 2 * Math.exp(3) + Math.exp(-2);
  assert.ok(Math.abs(p[0].probability - Math.exp(3) / z) < 1e-12);
  assert.equal(topK([1000, 0], 5)[0].label, "class 0");
  assert.ok(Math.abs(topK([1000, 0], 5)[0].probability - 1) < 1e-12);
  assert.throws(() => topK([NaN, 1], 1), /not finite/);
});

Deno.test("a tiny model: attention stacks, classification and no leaked tensors", async () => {
  await setBackend("cpu");
  const { tensors, metadata } = await readSafetensors(ref("outputs/tiny.safetensors"));
  assert.ok(tensors.has("logits"));
  const weights = (await readSafetensors(ref("checkpoints/tiny-expected.safetensors"))).tensors;
  const cfg = JSON.parse(metadata.config);
  const model = await createModel(
    {
      imgSize: cfg.img_size,
      embedDim: cfg.embed_dim,
      depth: cfg.depth,
      numHeads: cfg.num_heads,
      mlpRatio: cfg.mlp_ratio,
      tokenDim: cfg.token_dim,
      numClasses: cfg.num_classes,
    },
    { weights },
  );
  try {
    tf.dispose(model.forward(tf.zeros([1, 3, 32, 32]))); // the first pass builds the model's cached constants
    const before = tf.memory().numTensors;
    const images = [await readImage(ref("images/cifar32.png")), await readImage(ref("images/landscape.png"))];
    const preds = await classifyImages(model, images, { topk: 3, batchSize: 1 });
    assert.equal(preds.length, 2);
    for (const p of preds) {
      assert.equal(p.length, 3);
      assert.ok(p[0].probability >= p[1].probability && p[1].probability >= p[2].probability);
      assert.ok(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"].includes(
          p[0].label,
        ),
      );
    }
    const x = batchTensor(
      [new Float32Array(3 * 32 * 32).fill(0.1), new Float32Array(3 * 32 * 32).fill(-0.2)],
      32,
      32,
    );
    const { logits, attentions } = model.forwardWithAttention(x);
    const stacks = await attentionStacks(attentions);
    tf.dispose([x, logits, ...attentions]);
    assert.equal(stacks.length, 2);
    assert.equal(stacks[0].blocks.length, 2);
    assert.equal(stacks[0].numTokens, 5); // 2x2 patches + class token at 32x32
    for (const b of stacks[1].blocks) {
      for (let r = 0; r < 2 * 5; r++) {
        const s = b.subarray(r * 5, r * 5 + 5).reduce((a, v) => a + v, 0);
        assert.ok(Math.abs(s - 1) < 1e-5, `row ${r} sums to ${s}`);
      }
    }
    assert.equal(classTokenAttention(stacks[0]).length, 4);
    assert.equal(attentionRollout(stacks[1]).length, 4);
    assert.equal(tf.memory().numTensors, before);
  } finally {
    model.dispose();
  }
});
