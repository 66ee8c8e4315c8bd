import assert from "node:assert/strict";
import { readSafetensors, toFloat32, writeSafetensors } from "../../converters/safetensors.ts";
import { CIFAR10_CLASSES } from "../../src/data/cifar.ts";
import { batchTensor, modelPreprocess, preprocessImage, readImage, topK } from "../../src/images/mod.ts";
import { createModel, setBackend, tf } from "../../zoo/mod.ts";
import { ref } from "../support/fixtures.ts";

const PREDICT = new URL("../../predict.ts", import.meta.url).pathname;
/** Extra deno flags for the subprocess (e.g. an import map while developing); normally empty. */
const EXTRA = (Deno.env.get("PREDICT_TEST_DENO_FLAGS") ?? "").split(" ").filter(Boolean);

async function predict(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...EXTRA, PREDICT, ...args],
    cwd: new URL("../..", import.meta.url).pathname, // the repository root, where deno.json is
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The tiny reference config (outputs/tiny.safetensors) and its weights, as a converter would write them. */
async function tinyWeights(dir: string): Promise<{ path: string; config: Record<string, unknown> }> {
  const { metadata } = await readSafetensors(ref("outputs/tiny.safetensors"));
  const { tensors } = await readSafetensors(ref("checkpoints/tiny-expected.safetensors"));
  const path = `${dir}/tiny.safetensors`;
  await writeSafetensors(path, tensors, { format: "pt", config: metadata.config });
  return { path, config: JSON.parse(metadata.config) };
}

async function tinyModel(config: Record<string, unknown>) {
  const { tensors } = await readSafetensors(ref("checkpoints/tiny-expected.safetensors"));
  return await createModel({
    imgSize: config.img_size as number,
    embedDim: config.embed_dim as number,
    depth: config.depth as number,
    numHeads: config.num_heads as number,
    mlpRatio: config.mlp_ratio as number,
    tokenDim: config.token_dim as number,
    numClasses: config.num_classes as number,
  }, { weights: tensors });
}

Deno.test("predict: batches good images, reports bad ones by name, exit status 1, JSON shape", async () => {
  const dir = await Deno.makeTempDir({ prefix: "predict_test_" });
  try {
    const { path, config } = await tinyWeights(dir);
    await Deno.writeFile(
      `${dir}/corrupt.png`,
      new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72]),
    );
    await Deno.writeTextFile(`${dir}/notes.txt`, "not an image");
    const images = [
      ref("images/landscape.png"),
      `${dir}/corrupt.png`,
      ref("images/photo.jpg"),
      `${dir}/missing.png`,
      ref("images/gray.png"),
      `${dir}/notes.txt`,
      ref("images/cifar32.png"),
    ];
    const r = await predict([
      ...images,
      "--weights",
      path,
      "--json",
      "--topk",
      "3",
      "--batch",
      "2",
      "--backend",
      "cpu",
    ]);
    assert.equal(r.code, 1, r.stderr);
    for (const bad of ["corrupt.png", "missing.png", "notes.txt"]) {
      assert.match(r.stderr, new RegExp(`error: ${dir}/${bad}: `), r.stderr);
    }
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.model, "custom");
    assert.equal(doc.backend, "cpu");
    assert.equal(doc.imgSize, 32);
    assert.equal(doc.numClasses, 10);
    assert.deepEqual(doc.preprocess.crop, [32, 32]);
    assert.equal(doc.preprocess.resize, 35); // floor(32 / 0.9)
    assert.deepEqual(doc.results.map((x: { file: string }) => x.file), images);
    assert.deepEqual(doc.results.map((x: { error?: string }) => x.error !== undefined), [
      false,
      true,
      false,
      true,
      false,
      true,
      false,
    ]);
    assert.match(doc.results[1].error, /corrupt\.png: truncated PNG/);
    assert.match(doc.results[3].error, /missing\.png: no such file/);
    assert.match(doc.results[5].error, /notes\.txt: not an image/);

    // the answers are the model's: recompute them in this process
    await setBackend("cpu");
    const model = await tinyModel(config);
    try {
      const pre = modelPreprocess(model);
      for (const i of [0, 2, 4, 6]) {
        const x = batchTensor([preprocessImage(await readImage(images[i]), pre).tensor], 32, 32);
        const logits = model.forward(x);
        const want = topK(await logits.data() as Float32Array, 3, CIFAR10_CLASSES);
        tf.dispose([x, logits]);
        const got = doc.results[i].predictions;
        assert.equal(got.length, 3);
        assert.deepEqual(got.map((p: { index: number }) => p.index), want.map((p) => p.index), images[i]);
        assert.deepEqual(got.map((p: { label: string }) => p.label), want.map((p) => p.label));
        got.forEach((p: { probability: number }, k: number) =>
          assert.ok(Math.abs(p.probability - want[k].probability) < 1e-6)
        );
      }
    } finally {
      model.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("predict: attention maps and features files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "predict_test_" });
  try {
    const { path, config } = await tinyWeights(dir);
    const images = [ref("images/landscape.png"), ref("images/gray.png")];
    const args = [
      ...images,
      "--weights",
      path,
      "--backend",
      "cpu",
      "--attention",
      `${dir}/attn.png`,
      "--rollout",
      "--features",
      `${dir}/f.safetensors`,
    ];
    const r = await predict(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /landscape\.png:\n( +\d+\.\d\d% {2}\w+ {2}\[\d\]\n){5} {2}attention map: .*attn-landscape\.png\n/,
    );
    assert.match(r.stdout, /features: .*f\.safetensors \(2 x 32\)/);
    for (const name of ["landscape", "gray"]) {
      const img = await readImage(`${dir}/attn-${name}.png`);
      assert.deepEqual([img.width, img.height, img.mode], [32, 32, "RGB"]);
    }
    const { tensors, metadata } = await readSafetensors(`${dir}/f.safetensors`);
    assert.deepEqual(tensors.get("features")!.shape, [2, 32]);
    assert.deepEqual(JSON.parse(metadata.files), images);
    await setBackend("cpu");
    const model = await tinyModel(config);
    try {
      const pre = modelPreprocess(model);
      const x = batchTensor(
        await Promise.all(images.map(async (f) => preprocessImage(await readImage(f), pre).tensor)),
        32,
        32,
      );
      const feats = model.forwardFeatures(x);
      const want = await feats.data();
      tf.dispose([x, feats]);
      const got = toFloat32(tensors.get("features")!);
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-5, `feature ${i}: ${v} vs ${want[i]}`));
    } finally {
      model.dispose();
    }
    // outputs are not overwritten without --force
    const again = await predict(args);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /attn-landscape\.png: already exists \(use --force to overwrite\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("predict: usage errors and the --fill-weights demo", async () => {
  const img = ref("images/landscape.png");
  const noWeights = await predict([img, "--model", "t2t_vit_7"]);
  assert.equal(noWeights.code, 2);
  assert.match(noWeights.stderr, /no weights: pass --weights/);
  const badModel = await predict([img, "--model", "t2t_vit_99", "--fill-weights"]);
  assert.equal(badModel.code, 2);
  assert.match(badModel.stderr, /unknown model 't2t_vit_99'/);
  const noImages = await predict(["--model", "t2t_vit_7", "--fill-weights"]);
  assert.equal(noImages.code, 2);
  const demo = await predict([
    img,
    "--model",
    "t2t_vit_7",
    "--fill-weights",
    "--img-size",
    "32",
    "--topk",
    "2",
    "--backend",
    "wasm",
    "--threads",
    "1",
  ]);
  assert.equal(demo.code, 0, demo.stderr);
  const badThreads = await predict([img, "--model", "t2t_vit_7", "--fill-weights", "--threads", "0"]);
  assert.equal(badThreads.code, 2);
  assert.match(badThreads.stderr, /--threads must be an integer >= 1, not '0'/);
  assert.match(demo.stderr, /warning: --fill-weights: .* meaningless/);
  assert.match(demo.stdout, /landscape\.png:\n( +\d+\.\d\d% {2}.+ {2}\[\d+\]\n){2}$/);
});
