import assert from "node:assert/strict";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { ImageError } from "../../src/core/errors.ts";
import {
  centerCrop,
  CIFAR_STD,
  cifarTransform,
  evalTransform,
  IMAGENET_MEAN,
  IMAGENET_STD,
  imageToTensor,
  preprocessImage,
  readImage,
  resizedSize,
  resizeImage,
  type RgbImage,
} from "../../src/images/mod.ts";
import { MODEL_CONFIGS, MODEL_NAMES, pretrainedCfgOf, resolveConfig } from "../../zoo/mod.ts";
import { ref } from "../support/fixtures.ts";

/** T2T-ViT's timm default_cfg at 224 (models/t2t_vit.py `_cfg`), written out. */
const T2T_CFG = {
  inputSize: [3, 224, 224] as [3, number, number],
  cropPct: 0.9,
  interpolation: "bicubic" as const,
  mean: IMAGENET_MEAN,
  std: IMAGENET_STD,
};

Deno.test("parity: every reference image preprocesses to torchvision's tensor (PNG bit-exact, JPEG within 3 levels)", async () => {
  const { tensors } = await readSafetensors(ref("images/expected.safetensors"));
  assert.equal(tensors.size, 7);
  const report: string[] = [];
  for (const [key, raw] of tensors) {
    const [kind, file] = key.split(":");
    assert.deepEqual(raw.shape, [3, 224, 224], key);
    const want = toFloat32(raw);
    const img = await readImage(ref("images/" + file));
    const t = kind === "cifar"
      ? cifarTransform(224)
      : evalTransform(pretrainedCfgOf(MODEL_CONFIGS.t2t_vit_14));
    const { tensor, image } = preprocessImage(img, t);
    assert.equal(tensor.length, want.length);
    assert.deepEqual([image.width, image.height], [224, 224]);
    const std = kind === "cifar" ? CIFAR_STD : IMAGENET_STD;
    const plane = 224 * 224;
    let exact = 0, maxLevels = 0, sumLevels = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(tensor[i] - want[i]);
      if (d === 0) exact++;
      const levels = d * std[Math.floor(i / plane)] * 255;
      maxLevels = Math.max(maxLevels, levels);
      sumLevels += levels;
    }
    const pct = (100 * exact) / want.length;
    report.push(
      `${key}: ${pct.toFixed(3)}% exact, max ${maxLevels.toFixed(2)} / mean ${
        (sumLevels / want.length).toFixed(4)
      } levels`,
    );
    if (file.endsWith(".png")) {
      // Required: within one 8-bit level everywhere and >= 99% exact. Achieved: bit-identical.
      assert.ok(maxLevels <= 1 + 1e-4, `${key}: max difference ${maxLevels} levels`);
      assert.equal(exact, want.length, `${key}: only ${pct}% of values exact`);
    } else {
      assert.ok(maxLevels <= 3 + 1e-3, `${key}: max difference ${maxLevels} levels`);
      assert.ok(sumLevels / want.length < 0.1, `${key}: mean difference ${sumLevels / want.length} levels`);
      assert.ok(pct > 90, `${key}: ${pct}% exact`);
    }
  }
  console.log(report.join("\n"));
});

function ramp(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x % 256, y % 256, (x + y) % 256], (y * width + x) * 3);
  }
  return { width, height, data };
}

Deno.test("Resize(int): shorter side to size, longer side int(size * long / short)", () => {
  assert.deepEqual(resizedSize(500, 375, 248), [330, 248]);
  assert.deepEqual(resizedSize(300, 400, 248), [248, 330]);
  assert.deepEqual(resizedSize(640, 480, 248), [330, 248]);
  assert.deepEqual(resizedSize(32, 32, 224), [224, 224]);
  assert.deepEqual(resizedSize(1000, 3, 10), [3333, 10]);
  assert.throws(() => resizedSize(10, 10, 0), ImageError);
});

Deno.test("resizeImage: hand-computed Pillow values (bilinear and bicubic antialiasing, nearest)", () => {
  const row = {
    width: 4,
    height: 1,
    data: new Uint8Array([0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]),
  };
  // bilinear 4 -> 2: support widens to 2; taps (3/7, 3/7, 1/7) and (1/7, 3/7, 3/7)
  assert.deepEqual([...resizeImage(row, 2, 1, "bilinear").data], [71, 71, 71, 209, 209, 209]);
  // nearest 4 -> 2 samples the pixel under each output centre: x = 1 and 3
  assert.deepEqual([...resizeImage(row, 2, 1, "nearest").data], [100, 100, 100, 255, 255, 255]);
  // bicubic 2 -> 4 upscaling (a = -0.5), output centres at 0.25, 0.75, 1.25, 1.75 input pixels:
  // x=0: taps w(0.25) = 0.8671875 on 0, w(1.25) = -0.0703125 on 255 -> -22.5 -> clipped to 0
  // x=1: taps w(-0.25) = 0.8671875 on 0, w(0.75) = 0.2265625 on 255 -> 255 * 0.2265625 / 1.09375 = 52.8 -> 53
  const two = { width: 2, height: 1, data: new Uint8Array([0, 0, 0, 255, 255, 255]) };
  const up = resizeImage(two, 4, 1, "bicubic").data;
  assert.deepEqual([...up].filter((_, i) => i % 3 === 0), [0, 53, 202, 255]);
  // a constant image stays constant under every filter
  const flat = { width: 37, height: 23, data: new Uint8Array(37 * 23 * 3).fill(201) };
  for (const f of ["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] as const) {
    for (const [w, h] of [[11, 7], [80, 50], [37, 9]]) {
      assert.ok(resizeImage(flat, w, h, f).data.every((v) => v === 201), `${f} ${w}x${h}`);
    }
  }
  // same size: a copy
  const img = ramp(5, 4);
  const same = resizeImage(img, 5, 4, "bicubic");
  assert.deepEqual(same.data, img.data);
  assert.notEqual(same.data, img.data);
});

Deno.test("centerCrop: Python round-half-even offsets and zero padding as torchvision", () => {
  // 275 wide -> 224: (275 - 224) / 2 = 25.5 -> round() = 26; 277 -> 26.5 -> 26
  assert.equal(centerCrop(ramp(275, 230), 224).data[0], 26);
  assert.equal(centerCrop(ramp(277, 230), 224).data[0], 26);
  assert.equal(centerCrop(ramp(279, 230), 224).data[0], 28); // 27.5 -> 28
  assert.equal(centerCrop(ramp(275, 230), 224).data[1], 3); // (230 - 224) / 2 = 3
  // padding: 3x2 -> 5x5: left 1, right 1, top 1, bottom 2
  const small = { width: 3, height: 2, data: new Uint8Array(18).fill(9) };
  const padded = centerCrop(small, 5);
  const nonzero: number[] = [];
  for (let i = 0; i < 25; i++) if (padded.data[i * 3]) nonzero.push(i);
  assert.deepEqual(nonzero, [6, 7, 8, 11, 12, 13]);
  // rectangular crop and an image that only needs padding on one side
  const rect = centerCrop(ramp(10, 4), [6, 4]);
  assert.deepEqual([rect.width, rect.height], [4, 6]);
  assert.deepEqual([rect.data[0], rect.data[3 * 4]], [0, 3]); // top row is padding, then x = 3
});

Deno.test("ToTensor + Normalize in float32, CHW", () => {
  const t = imageToTensor(
    { width: 2, height: 1, data: new Uint8Array([255, 0, 128, 1, 2, 3]) },
    IMAGENET_MEAN,
    IMAGENET_STD,
  );
  const f = Math.fround;
  const norm = (v: number, c: number) => f(f(f(v / 255) - f(IMAGENET_MEAN[c])) / f(IMAGENET_STD[c]));
  assert.deepEqual([...t], [norm(255, 0), norm(1, 0), norm(0, 1), norm(2, 1), norm(128, 2), norm(3, 2)]);
  assert.deepEqual([...imageToTensor({ width: 1, height: 1, data: new Uint8Array([255, 51, 0]) })], [
    1,
    f(0.2),
    0,
  ]);
});

Deno.test("evalTransform follows the model config: Resize(floor(size / crop_pct)), CenterCrop(size)", () => {
  const want = {
    resize: 248,
    crop: [224, 224],
    interpolation: "bicubic",
    mean: IMAGENET_MEAN,
    std: IMAGENET_STD,
  };
  assert.deepEqual(evalTransform(T2T_CFG), want);
  for (const name of MODEL_NAMES) {
    assert.deepEqual(evalTransform(pretrainedCfgOf(MODEL_CONFIGS[name])), want, name);
  }
  const at384 = evalTransform(pretrainedCfgOf(resolveConfig({ ...MODEL_CONFIGS.t2t_vit_14, imgSize: 384 })));
  assert.deepEqual([at384.resize, at384.crop], [426, [384, 384]]);
  assert.equal(evalTransform({ ...T2T_CFG, inputSize: [3, 384, 384], cropPct: 1 }).resize, 384);
  assert.equal(evalTransform({ ...T2T_CFG, inputSize: [3, 384, 384] }).resize, 426);
  assert.equal(evalTransform({ ...T2T_CFG, inputSize: [3, 160, 160] }).resize, 177);
  assert.equal(evalTransform({ ...T2T_CFG, cropPct: undefined }).resize, 256); // timm DEFAULT_CROP_PCT 0.875
  assert.throws(() => evalTransform({ ...T2T_CFG, cropPct: 0 }), ImageError);
  const small = evalTransform({ ...T2T_CFG, inputSize: [3, 64, 64] });
  const { tensor, image } = preprocessImage(ramp(90, 70), small);
  assert.equal(tensor.length, 3 * 64 * 64);
  assert.deepEqual([image.width, image.height], [64, 64]);
  assert.deepEqual(cifarTransform(32).crop, [32, 32]);
});
