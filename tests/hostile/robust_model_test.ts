/**
 * Bad input at every public door of loading and running, each a clear typed error and never a crash inside
 * tfjs: weights whose keys or shapes don't fit the architecture (WeightsError listing the keys), NaN and
 * infinite weights (reported by key), wrong inputs to `forward` (ModelError), corrupt and truncated images
 * (ImageError, from a small seeded fuzz of the reference images), truncated and malformed CIFAR files
 * (DatasetError). No failed call may leak a tensor.
 */

import assert from "node:assert/strict";
import {
  DatasetError,
  ImageError,
  ModelError,
  SafetensorsError,
  T2tVitError,
  UnsafePickleError,
  WeightsError,
} from "../../src/core/errors.ts";
import { readSafetensors, serializeSafetensors } from "../../converters/safetensors.ts";
import type { RawTensor, TensorMap } from "../../src/core/types.ts";
import { createModel, readWeights, setBackend, type T2tVit, tf } from "../../zoo/mod.ts";
import {
  decodeImage,
  evalTransform,
  IMAGENET_MEAN,
  IMAGENET_STD,
  preprocessImage,
  readImage,
} from "../../src/images/mod.ts";
import { AdamW, Trainer } from "../../src/train/mod.ts";
import { cifarBatches, encodeCifar, readCifar } from "../../src/data/mod.ts";
import { f32bytes, makeZipCheckpoint, torchPickle } from "../support/checkpoint_builders.ts";
import { ref } from "../support/fixtures.ts";
import { timeBound } from "../support/timing.ts";
import { TINY_CONFIG } from "../support/fixtures.ts";

/** The tiny reference configuration (outputs/tiny.safetensors' metadata). */
const TINY = TINY_CONFIG;

async function tinyWeights(): Promise<TensorMap> {
  return (await readSafetensors(ref("checkpoints/tiny-expected.safetensors"))).tensors;
}

function f32(shape: number[], values?: number[]): RawTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: "F32", shape, data: f32bytes(values ?? new Array(n).fill(0.5)) };
}

function leakCheck(): () => void {
  const before = tf.memory().numTensors;
  return () => assert.equal(tf.memory().numTensors, before, "no tensor leaked");
}

function expectError<E extends T2tVitError>(
  type: new (...a: never[]) => E,
  f: () => unknown,
  check?: (e: E) => void,
): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e instanceof Error ? e.stack : e}`);
    check?.(e as E);
    return true;
  });
}

async function expectRejects<E extends T2tVitError>(
  type: new (...a: never[]) => E,
  f: () => Promise<unknown>,
  check?: (e: E) => void,
): Promise<void> {
  await assert.rejects(f, (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e instanceof Error ? e.stack : e}`);
    check?.(e as E);
    return true;
  });
}

Deno.test("robust: weights that do not fit the architecture are one WeightsError listing every key", async () => {
  await setBackend("cpu");
  const weights = await tinyWeights();
  const done = leakCheck();
  // the tiny weights on a wider model: every backbone key mis-shaped, listed with both shapes
  await expectRejects(
    WeightsError,
    () => createModel({ ...TINY, embedDim: 64, numHeads: 2 }, { weights }),
    (e) => {
      assert.match(e.message, /mis-shaped keys \(\d+\): cls_token: \[1, 1, 32\], expected \[1, 1, 64\]/);
      assert.ok(e.message.includes("blocks.1.mlp.fc2.weight: [32, 64], expected [64, 128]"), e.message);
      const cause = e.cause as { misshaped: string[] };
      assert.ok(cause.misshaped.length > 20);
    },
  );
  // a deeper model: the missing blocks are listed; a shallower one: the unexpected ones
  await expectRejects(WeightsError, () => createModel({ ...TINY, depth: 3 }, { weights }), (e) => {
    // 11 keys per block (qkv has no bias)
    assert.match(e.message, /missing keys \(11\): blocks\.2\.norm1\.weight, blocks\.2\.norm1\.bias/);
    assert.deepEqual((e.cause as { missing: string[] }).missing.length, 11);
  });
  await expectRejects(WeightsError, () => createModel({ ...TINY, depth: 1 }, { weights }), (e) => {
    assert.match(e.message, /unexpected keys \(11\): blocks\.1\.norm1\.weight/);
  });
  // transformer tokens instead of performer: attention1.* keys differ entirely
  await expectRejects(
    WeightsError,
    () => createModel({ ...TINY, tokensType: "transformer" }, { weights }),
    (e) => {
      assert.match(e.message, /missing keys/);
      assert.match(e.message, /unexpected keys/);
      assert.ok(e.message.includes("tokens_to_token.attention1.kqv.weight"), e.message);
    },
  );
  // one transposed weight and one stray key, from a safetensors file on disk: the file is named
  const edited = new Map(weights);
  const fc1 = weights.get("blocks.0.mlp.fc1.weight")!;
  edited.set("blocks.0.mlp.fc1.weight", { ...fc1, shape: [fc1.shape[1], fc1.shape[0]] });
  edited.set("blocks.0.mlp.fc3.weight", f32([2]));
  const dir = Deno.makeTempDirSync({ prefix: "t2t-robust-" });
  try {
    const path = `${dir}/edited.safetensors`;
    Deno.writeFileSync(path, serializeSafetensors(edited));
    await expectRejects(WeightsError, () => createModel(TINY, { weights: path }), (e) => {
      assert.ok(e.message.startsWith(`${path}: `), e.message);
      assert.match(e.message, /unexpected keys \(1\): blocks\.0\.mlp\.fc3\.weight/);
      assert.match(
        e.message,
        /mis-shaped keys \(1\): blocks\.0\.mlp\.fc1\.weight: \[32, 64\], expected \[64, 32\]/,
      );
    });
    // strict: false reports missing and unexpected keys instead, but mis-shaped ones still fail
    edited.set("blocks.0.mlp.fc1.weight", fc1);
    edited.delete("norm.bias");
    const model = await createModel(TINY, { weights: edited, strict: false });
    model.dispose();
    // broken files: not safetensors at all, a missing file, a hostile checkpoint
    Deno.writeFileSync(`${dir}/junk.safetensors`, new TextEncoder().encode("definitely not safetensors"));
    await expectRejects(SafetensorsError, () => createModel(TINY, { weights: `${dir}/junk.safetensors` }));
    await expectRejects(
      WeightsError,
      () => createModel(TINY, { weights: `${dir}/missing.safetensors` }),
      (e) => {
        assert.match(e.message, /cannot read weights/);
      },
    );
    const evil = makeZipCheckpoint(
      torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]], {
        extra: (p) => p.str("x").global("os", "system").value(["touch pwned"]).reduce().setitem(),
      }),
      { "0": f32bytes([1]) },
    );
    Deno.writeFileSync(`${dir}/evil.pth`, evil);
    await expectRejects(UnsafePickleError, () => readWeights(`${dir}/evil.pth`), (e) => {
      assert.equal(e.key, "os.system");
    });
    await expectRejects(UnsafePickleError, () => createModel(TINY, { weights: evil }));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  done();
});

Deno.test("robust: NaN and infinite weights are reported by key, in every float dtype, and nothing is loaded", async () => {
  await setBackend("cpu");
  const weights = await tinyWeights();
  const done = leakCheck();
  const model = await createModel(TINY, { weights });
  const before = await model.stateDict().get("norm.weight")!.data();
  const bad = new Map(weights);
  const nw = weights.get("norm.weight")!;
  const v = new Float32Array(nw.data.slice().buffer);
  v[3] = NaN;
  bad.set("norm.weight", { ...nw, data: new Uint8Array(v.buffer) });
  const hb = weights.get("head.bias")!;
  const h = new Float32Array(hb.data.slice().buffer);
  h[0] = -Infinity;
  bad.set("head.bias", { ...hb, data: new Uint8Array(h.buffer) });
  // float16 +inf (0x7c00) and bfloat16 NaN (0x7fc0)
  const f16 = new Uint16Array(32).fill(0x3c00);
  f16[5] = 0x7c00;
  bad.set("norm.bias", { dtype: "F16", shape: [32], data: new Uint8Array(f16.buffer) });
  const bf16 = new Uint16Array(32 * 3 * 32).fill(0x3f80);
  bf16[100] = 0x7fc0;
  bad.set("blocks.0.attn.qkv.weight", { dtype: "BF16", shape: [96, 32], data: new Uint8Array(bf16.buffer) });
  expectError(WeightsError, () => model.loadStateDict(bad, { file: "bad.safetensors" }), (e) => {
    assert.match(
      e.message,
      /^bad\.safetensors: weights do not fit custom: NaN or infinite values in \(4\): /,
    );
    for (const k of ["norm.weight", "head.bias", "norm.bias", "blocks.0.attn.qkv.weight"]) {
      assert.ok((e.cause as { nonFinite: string[] }).nonFinite.includes(k), k);
    }
  });
  // nothing was loaded
  assert.deepEqual(await model.stateDict().get("norm.weight")!.data(), before);
  // a finite model still runs
  const x = tf.zeros([1, 3, 32, 32]) as tf.Tensor4D;
  const y = model.forward(x);
  assert.ok((await y.data()).every(Number.isFinite));
  tf.dispose([x, y]);
  model.dispose();
  done();
});

Deno.test("robust: wrong inputs to forward are ModelErrors, never a tfjs crash, and leak nothing", async () => {
  await setBackend("cpu");
  const model: T2tVit = await createModel(TINY, { weights: await tinyWeights() });
  const done = leakCheck();
  const inputs: [string, () => unknown][] = [
    ["rank 3", () => tf.zeros([3, 32, 32])],
    ["rank 5", () => tf.zeros([1, 1, 3, 32, 32])],
    ["NHWC instead of NCHW", () => tf.zeros([1, 32, 32, 3])],
    ["one channel", () => tf.zeros([1, 1, 32, 32])],
    ["4 channels", () => tf.zeros([1, 4, 32, 32])],
    ["the wrong size", () => tf.zeros([1, 3, 224, 224])],
    ["not square", () => tf.zeros([1, 3, 32, 48])],
    ["an empty batch", () => tf.zeros([0, 3, 32, 32])],
    ["int32", () => tf.zeros([1, 3, 32, 32], "int32")],
    ["bool", () => tf.zeros([1, 3, 32, 32], "bool")],
    ["a Float32Array", () => new Float32Array(3 * 32 * 32)],
    ["a nested array", () => [[[[0]]]]],
    ["null", () => null],
    ["undefined", () => undefined],
    ["a number", () => 1],
  ];
  for (const [what, make] of inputs) {
    const x = make();
    for (
      const [name, f] of [
        ["forward", () => model.forward(x as tf.Tensor4D)],
        ["forwardFeatures", () => model.forwardFeatures(x as tf.Tensor4D)],
        ["forwardWithAttention", () => model.forwardWithAttention(x as tf.Tensor4D)],
        ["forward (training)", () => model.forward(x as tf.Tensor4D, { training: true })],
      ] as const
    ) {
      expectError(ModelError, f, (e) => {
        assert.ok(e.message.includes(name.split(" ")[0]), `${what} / ${name}: ${e.message}`);
        assert.equal(e.key, "input", `${what} / ${name}`);
      });
    }
    if (x instanceof tf.Tensor && !x.isDisposed) x.dispose();
  }
  done();
  // a disposed model refuses politely
  model.dispose();
  const x = tf.zeros([1, 3, 32, 32]) as tf.Tensor4D;
  expectError(ModelError, () => model.forward(x), (e) => assert.match(e.message, /disposed/));
  expectError(ModelError, () => model.loadStateDict(new Map()), (e) => assert.match(e.message, /disposed/));
  x.dispose();
  // configurations that cannot be built
  for (
    const [what, cfg] of [
      ["imgSize 33", { ...TINY, imgSize: 33 }],
      ["imgSize 0", { ...TINY, imgSize: 0 }],
      ["numHeads 3 for width 32", { ...TINY, numHeads: 3 }],
      ["negative depth", { ...TINY, depth: -1 }],
      ["NaN mlpRatio", { ...TINY, mlpRatio: NaN }],
      ["dropRate 1", { ...TINY, dropRate: 1 }],
    ] as const
  ) {
    await expectRejects(
      ModelError,
      () => createModel(cfg),
      (e) => assert.match(e.message, /invalid config/, what),
    );
  }
  await expectRejects(T2tVitError, () => createModel("t2t_vit_99" as "t2t_vit_7"));
});

Deno.test("robust: forward on a disposed input tensor is a ModelError, not a tfjs TypeError", async () => {
  await setBackend("cpu");
  const model = await createModel(TINY, { weights: await tinyWeights() });
  const done = leakCheck();
  try {
    const x = tf.zeros([1, 3, 32, 32]) as tf.Tensor4D;
    x.dispose();
    for (
      const f of [() => model.forward(x), () => model.forwardFeatures(x), () => model.forwardWithAttention(x)]
    ) {
      expectError(ModelError, f, (e) => assert.equal(e.key, "input"));
    }
    done();
  } finally {
    model.dispose();
  }
});

Deno.test("robust: raw tensors whose bytes do not match their shape, and non-tensors, are WeightsErrors", async () => {
  await setBackend("cpu");
  const weights = await tinyWeights();
  const model = await createModel(TINY, { weights });
  const done = leakCheck();
  try {
    for (
      const [what, value] of [
        ["8 bytes for shape [32]", { dtype: "F32", shape: [32], data: new Uint8Array(8) }],
        ["127 bytes for shape [32]", { dtype: "F32", shape: [32], data: new Uint8Array(127) }],
        ["a number", 5],
        ["null", null],
        ["a string", "norm.weight"],
      ] as const
    ) {
      const m = new Map(weights) as Map<string, unknown>;
      m.set("norm.weight", value);
      expectError(WeightsError, () => model.loadStateDict(m as TensorMap), (e) => {
        assert.ok(e.message.includes("norm.weight"), `${what}: ${e.message}`);
      });
    }
    done();
  } finally {
    model.dispose();
  }
});

Deno.test("robust: a training step with bad labels is a ModelError and leaks no tensor", async () => {
  await setBackend("cpu");
  const model = await createModel(TINY, { weights: await tinyWeights() });
  const opt = new AdamW(model.trainableVariables(), { lr: 1e-3 });
  const trainer = new Trainer(model, opt);
  const x = tf.zeros([2, 3, 32, 32]) as tf.Tensor4D;
  try {
    await trainer.trainStep(x, new Int32Array([1, 2])); // optimizer state exists from here on
    const done = leakCheck();
    for (
      const [what, labels] of [
        ["one label for two images", new Int32Array([1])],
        ["three labels for two images", new Int32Array([1, 2, 3])],
        ["label 10 of 10 classes", new Int32Array([1, 10])],
        ["label -1", new Int32Array([-1, 0])],
      ] as const
    ) {
      await expectRejects(ModelError, () => trainer.trainStep(x, labels), (e) => assert.ok(e.message, what));
    }
    const wrong = tf.zeros([2, 3, 16, 16]) as tf.Tensor4D;
    await expectRejects(ModelError, () => trainer.trainStep(wrong, new Int32Array([1, 2])));
    wrong.dispose();
    done();
  } finally {
    x.dispose();
    opt.dispose();
    model.dispose();
  }
});

/** Mutations of one image: truncations, bit flips, byte sets and chunk-length edits, seeded. */
function* imageMutants(bytes: Uint8Array, seed: number, n: number): Generator<[string, Uint8Array]> {
  let s = seed >>> 0;
  const rand = (k: number) => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    return s % k;
  };
  // structure: PNG chunk lengths and JPEG marker lengths
  const fields: number[] = [];
  if (bytes[0] === 0x89) {
    for (let p = 8; p + 8 <= bytes.length;) {
      fields.push(p);
      const len = new DataView(bytes.buffer, bytes.byteOffset + p, 4).getUint32(0);
      if (p === 8) fields.push(p + 8, p + 12); // IHDR width and height
      p += 12 + len;
    }
  } else {
    for (let p = 2; p + 4 <= bytes.length;) {
      if (bytes[p] !== 0xff) break;
      fields.push(p + 2);
      if (bytes[p + 1] >= 0xc0 && bytes[p + 1] <= 0xc2) fields.push(p + 5, p + 7); // SOF height, width
      if (bytes[p + 1] === 0xda) break;
      p += 2 + ((bytes[p + 2] << 8) | bytes[p + 3]);
    }
  }
  for (let i = 0; i < n; i++) {
    const b = bytes.slice();
    const kind = i % 4;
    if (kind === 0) {
      const cut = i < 40 ? Math.floor((bytes.length * i) / 40) : rand(bytes.length);
      yield [`truncated to ${cut}`, bytes.slice(0, cut)];
      continue;
    }
    if (kind === 1) {
      const k = 1 + rand(4);
      const at: number[] = [];
      for (let j = 0; j < k; j++) {
        const p = rand(Math.min(bytes.length, rand(2) ? 400 : bytes.length));
        b[p] ^= 1 << rand(8);
        at.push(p);
      }
      yield [`flip @${at}`, b];
    } else if (kind === 2 && fields.length) {
      const p = fields[rand(fields.length)];
      const v = [0, 0xff, 0x7f, 0x80, 1][rand(5)];
      b[p] = v;
      b[p + 1] = rand(2) ? v : b[p + 1];
      yield [`field @${p} = ${v}`, b];
    } else {
      const p = rand(bytes.length);
      b.fill(rand(2) ? 0 : 0xff, p, p + 1 + rand(64));
      yield [`fill @${p}`, b];
    }
  }
}

Deno.test("robust: corrupt and truncated images are ImageErrors (a seeded fuzz of the reference images)", async () => {
  const t = evalTransform({
    inputSize: [3, 32, 32],
    cropPct: 0.9,
    interpolation: "bicubic",
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
  });
  const outcomes: Record<string, number> = {};
  let slowest = 0;
  for (const [i, name] of ["photo.jpg", "cifar32.png", "alpha.png", "gray.png"].entries()) {
    const bytes = Deno.readFileSync(ref(`images/${name}`));
    for (const [what, b] of imageMutants(bytes, 1000 + i, 150)) {
      const t0 = performance.now();
      let outcome = "ok";
      try {
        const img = decodeImage(b, name);
        assert.equal(img.data.length, img.width * img.height * 3, `${name} ${what}`);
        preprocessImage(img, t);
      } catch (e) {
        if (!(e instanceof ImageError)) {
          throw new Error(`${name} ${what}: ${e instanceof Error ? e.stack : e}`, { cause: e });
        }
        assert.ok(e.message.startsWith(`${name}: `), e.message);
        outcome = "ImageError";
      }
      const ms = performance.now() - t0;
      slowest = Math.max(slowest, ms);
      assert.ok(ms < timeBound(1000), `${name} ${what} took ${ms.toFixed(0)} ms`);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
  }
  assert.ok(outcomes.ImageError > 200, JSON.stringify(outcomes));
  // files that are not images, or not there
  const dir = Deno.makeTempDirSync({ prefix: "t2t-robust-img-" });
  try {
    for (
      const [name, bytes, re] of [
        ["empty.png", new Uint8Array(0), /empty file/],
        ["gif.png", new TextEncoder().encode("GIF89a\x01\x00\x01\x00"), /unsupported image format GIF/],
        ["text.jpg", new TextEncoder().encode("hello"), /not an image/],
        ["sig-only.png", new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), /PNG/],
        ["soi-only.jpg", new Uint8Array([0xff, 0xd8, 0xff]), /JPEG/],
      ] as const
    ) {
      Deno.writeFileSync(`${dir}/${name}`, bytes);
      await expectRejects(ImageError, () => readImage(`${dir}/${name}`), (e) => {
        assert.match(e.message, re, name);
        assert.ok(e.message.startsWith(`${dir}/${name}: `), e.message);
      });
    }
    await expectRejects(
      ImageError,
      () => readImage(`${dir}/nothing.png`),
      (e) => assert.match(e.message, /no such file/),
    );
    await expectRejects(
      ImageError,
      () => readImage(dir),
      (e) => assert.match(e.message, /directory|cannot read/),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  assert.ok(slowest < 1000);
});

Deno.test("robust: truncated, empty, missing and mislabelled CIFAR files are DatasetErrors naming the file", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-robust-cifar-" });
  try {
    const c10 = `${dir}/cifar-10-batches-bin`;
    Deno.mkdirSync(c10);
    const images = new Uint8Array(4 * 3072).map((_, i) => i & 0xff);
    const good = encodeCifar(images, new Uint8Array([0, 1, 2, 9]));
    const write = (files: Record<string, Uint8Array>) => {
      for (const f of Deno.readDirSync(c10)) Deno.removeSync(`${c10}/${f.name}`);
      for (const [n, b] of Object.entries(files)) Deno.writeFileSync(`${c10}/${n}`, b);
    };
    const all = (b: Uint8Array) => Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`data_batch_${i}.bin`, b]));
    // sanity: five small batches read (subset sizes need strictCounts: false)
    write(all(good));
    const split = await readCifar(dir, "cifar10", "train", { strictCounts: false });
    assert.equal(split.count, 20);
    const cases: [string, Record<string, Uint8Array>, RegExp, string][] = [
      [
        "a batch cut mid-record",
        { ...all(good), "data_batch_3.bin": good.slice(0, good.length - 1000) },
        /not a whole number of 3073-byte records/,
        "data_batch_3.bin",
      ],
      [
        "a batch cut mid-label",
        { ...all(good), "data_batch_2.bin": good.slice(0, 3073 + 1) },
        /not a whole number/,
        "data_batch_2.bin",
      ],
      [
        "an empty batch",
        { ...all(good), "data_batch_5.bin": new Uint8Array(0) },
        /is 0 bytes/,
        "data_batch_5.bin",
      ],
      [
        "a missing batch",
        Object.fromEntries(Object.entries(all(good)).filter(([k]) => k !== "data_batch_4.bin")),
        /missing: the cifar10 train split needs/,
        "data_batch_4.bin",
      ],
      [
        "a label of 10",
        { ...all(good), "data_batch_1.bin": encodeCifar(images, new Uint8Array([0, 1, 10, 2])) },
        /record 2 has label 10, outside 0..9/,
        "data_batch_1.bin",
      ],
    ];
    for (const [what, files, re, file] of cases) {
      write(files);
      await expectRejects(
        DatasetError,
        () => readCifar(dir, "cifar10", "train", { strictCounts: false }),
        (e) => {
          assert.match(e.message, re, what);
          assert.ok(e.message.includes(file), `${what}: names ${file}: ${e.message}`);
        },
      );
    }
    // with the official counts required, a short (truncated download) batch is refused with the count
    write(all(good));
    await expectRejects(DatasetError, () => readCifar(dir, "cifar10", "train"), (e) => {
      assert.match(e.message, /data_batch_1\.bin: is 12292 bytes \(4 records\); expected 10000 records/);
    });
    // CIFAR-100: a coarse label of 20
    const c100 = `${dir}/cifar-100-binary`;
    Deno.mkdirSync(c100);
    Deno.writeFileSync(
      `${c100}/test.bin`,
      encodeCifar(images, new Uint8Array([0, 1, 2, 99]), new Uint8Array([0, 20, 1, 1])),
    );
    await expectRejects(
      DatasetError,
      () => readCifar(dir, "cifar100", "test", { strictCounts: false }),
      (e) => {
        assert.match(e.message, /test\.bin: record 1 has coarse label 20, outside 0\.\.19/);
      },
    );
    Deno.writeFileSync(
      `${c100}/test.bin`,
      encodeCifar(images, new Uint8Array([0, 1, 2, 99]), new Uint8Array(4)).slice(0, 9000),
    );
    await expectRejects(
      DatasetError,
      () => readCifar(dir, "cifar100", "test", { strictCounts: false }),
      (e) => {
        assert.match(e.message, /not a whole number of 3074-byte records \(2 label bytes/);
      },
    );
    await expectRejects(DatasetError, () => readCifar(dir, "cifar1000" as "cifar10", "test"));
    // a good split still batches
    write(all(good));
    const s = await readCifar(dir, "cifar10", "train", { strictCounts: false });
    await setBackend("cpu");
    const done = leakCheck();
    for (const b of cifarBatches(s, { batchSize: 8, imgSize: 32, train: false, epoch: 0 })) b.x.dispose();
    done();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
