// CIFAR binary readers and the official transfer transforms.
import "@tensorflow/tfjs-backend-cpu";
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import {
  CIFAR_MEAN,
  CIFAR_STD,
  cifarBatches,
  type CifarSplit,
  drawAugmentation,
  encodeCifar,
  numBatches,
  readCifar,
  transformCpu,
  transformTensor,
  writeCifar,
} from "../../src/data/mod.ts";
import { DatasetError } from "../../src/core/errors.ts";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { ref } from "../support/fixtures.ts";

await tf.setBackend("cpu");

function images(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n * 3072);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

async function writeCifar10(dir: string, perBatch: number, testCount: number) {
  const all: { img: Uint8Array; lab: Uint8Array }[] = [];
  for (let b = 1; b <= 5; b++) {
    const img = images(perBatch, b), lab = Uint8Array.from({ length: perBatch }, (_, i) => (i + b) % 10);
    await writeCifar(`${dir}/data_batch_${b}.bin`, img, lab);
    all.push({ img, lab });
  }
  const img = images(testCount, 99), lab = Uint8Array.from({ length: testCount }, (_, i) => (3 * i) % 10);
  await writeCifar(`${dir}/test_batch.bin`, img, lab);
  return { train: all, test: { img, lab } };
}

Deno.test("CIFAR-10 binary: records, order, labels, class names, parent folder", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = `${root}/cifar-10-batches-bin`;
    await Deno.mkdir(dir);
    const w = await writeCifar10(dir, 7, 5);
    for (const d of [dir, root]) {
      const train = await readCifar(d, "cifar10", "train", { strictCounts: false });
      assert.equal(train.count, 35);
      assert.equal(train.numClasses, 10);
      assert.equal(train.classNames?.[0], "airplane");
      assert.deepEqual(train.images.subarray(0, 7 * 3072), w.train[0].img);
      assert.deepEqual(train.images.subarray(28 * 3072, 35 * 3072), w.train[4].img);
      assert.deepEqual(train.labels.subarray(7, 14), w.train[1].lab);
      const test = await readCifar(d, "cifar10", "test", { strictCounts: false });
      assert.equal(test.count, 5);
      assert.deepEqual(test.labels, w.test.lab);
      assert.equal(test.coarseLabels, undefined);
    }
    await Deno.writeTextFile(`${dir}/batches.meta.txt`, "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n");
    assert.equal((await readCifar(dir, "cifar10", "test", { strictCounts: false })).classNames?.[9], "j");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("CIFAR errors name the file: missing, wrong size, wrong count, bad label", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeCifar10(dir, 3, 2);
    await assert.rejects(readCifar(dir, "cifar10", "train"), (e: Error) => {
      assert.ok(e instanceof DatasetError);
      assert.match(e.message, /data_batch_1\.bin/);
      assert.match(e.message, /expected 10000 records/);
      return true;
    });
    await Deno.remove(`${dir}/data_batch_3.bin`);
    await assert.rejects(readCifar(dir, "cifar10", "train", { strictCounts: false }), (e: Error) => {
      assert.ok(e instanceof DatasetError);
      assert.equal((e as DatasetError).file, `${dir}/data_batch_3.bin`);
      assert.match(e.message, /missing/);
      return true;
    });
    await Deno.writeFile(`${dir}/test_batch.bin`, new Uint8Array(3073 * 2 + 5));
    await assert.rejects(readCifar(dir, "cifar10", "test", { strictCounts: false }), (e: Error) => {
      assert.ok(e instanceof DatasetError);
      assert.match(e.message, /test_batch\.bin.*6151 bytes, not a whole number of 3073-byte records/);
      return true;
    });
    const bad = encodeCifar(new Uint8Array(3072), new Uint8Array([10]));
    await Deno.writeFile(`${dir}/test_batch.bin`, bad);
    await assert.rejects(
      readCifar(dir, "cifar10", "test", { strictCounts: false }),
      /test_batch\.bin.*label 10/,
    );
    await assert.rejects(readCifar(`${dir}/nowhere`, "cifar100", "test"), /test\.bin.*missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CIFAR-100 binary: coarse and fine labels, names, sizes", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = `${root}/cifar-100-binary`;
    await Deno.mkdir(dir);
    const img = images(6, 5);
    const fine = Uint8Array.from([0, 99, 42, 7, 55, 13]), coarse = Uint8Array.from([0, 19, 3, 4, 5, 6]);
    await writeCifar(`${dir}/train.bin`, img, fine, coarse);
    await Deno.writeTextFile(
      `${dir}/fine_label_names.txt`,
      Array.from({ length: 100 }, (_, i) => `c${i}`).join("\n"),
    );
    const s = await readCifar(root, "cifar100", "train", { strictCounts: false });
    assert.equal(s.numClasses, 100);
    assert.deepEqual(s.labels, fine);
    assert.deepEqual(s.coarseLabels, coarse);
    assert.deepEqual(s.images, img);
    assert.equal(s.classNames?.[99], "c99");
    await assert.rejects(readCifar(root, "cifar100", "train"), /train\.bin.*expected 50000 records/);
    await Deno.writeFile(`${dir}/test.bin`, new Uint8Array(3073));
    await assert.rejects(readCifar(root, "cifar100", "test", { strictCounts: false }), /3074-byte records/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** Decodes an 8-bit RGB, non-interlaced PNG (all the reference image needs) into RGB bytes. */
async function decodeRgbPng(bytes: Uint8Array): Promise<{ width: number; height: number; data: Uint8Array }> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8, width = 0, height = 0;
  const idat: Uint8Array[] = [];
  while (pos < bytes.length) {
    const len = dv.getUint32(pos), type = new TextDecoder().decode(bytes.subarray(pos + 4, pos + 8));
    const body = bytes.subarray(pos + 8, pos + 8 + len);
    if (type === "IHDR") {
      width = dv.getUint32(pos + 8);
      height = dv.getUint32(pos + 12);
      assert.deepEqual([...body.subarray(8, 13)], [8, 2, 0, 0, 0], "8-bit RGB, non-interlaced");
    } else if (type === "IDAT") idat.push(body);
    pos += 12 + len;
  }
  const z = new Blob(idat as BlobPart[]).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(z).arrayBuffer());
  const stride = width * 3, out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)], line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= 3 ? out[y * stride + x - 3] : 0, b = y > 0 ? out[(y - 1) * stride + x] : 0;
      const c = x >= 3 && y > 0 ? out[(y - 1) * stride + x - 3] : 0;
      const pr = () => {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      };
      const pred = [0, a, b, (a + b) >> 1, 0][filter] ?? 0;
      out[y * stride + x] = (line[x] + (filter === 4 ? pr() : pred)) & 255;
    }
  }
  return { width, height, data: out };
}

function splitOf(imgs: Uint8Array, labels: number[]): CifarSplit {
  return {
    dataset: "cifar10",
    split: "train",
    count: labels.length,
    images: imgs,
    labels: Uint8Array.from(labels),
    numClasses: 10,
    files: [],
  };
}

Deno.test("test transform = torchvision Resize(224) + Normalize on the reference image", async () => {
  const png = await decodeRgbPng(await Deno.readFile(ref("images/cifar32.png")));
  assert.equal(png.width, 32);
  const planes = new Uint8Array(3072);
  for (let i = 0; i < 1024; i++) for (let c = 0; c < 3; c++) planes[c * 1024 + i] = png.data[i * 3 + c];
  const ours = transformCpu(splitOf(planes, [0]), [0], { train: false, imgSize: 224 });
  const { tensors } = await readSafetensors(ref("images/expected.safetensors"));
  const expected = toFloat32(tensors.get("cifar:cifar32.png")!);
  assert.equal(ours.length, expected.length);
  let exact = 0, maxDiff = 0;
  for (let i = 0; i < ours.length; i++) {
    const d = Math.abs(ours[i] - expected[i]);
    if (d === 0) exact++;
    maxDiff = Math.max(maxDiff, d);
  }
  // Pillow-exact: every value equal (one 8-bit level would be 1/255/0.2 ~ 0.02).
  assert.equal(exact, ours.length, `exact ${exact}/${ours.length}, max diff ${maxDiff}`);
  // The tensor resize (training) stays within one 8-bit level of it.
  const t = transformTensor(splitOf(planes, [0]), [0], { train: false, imgSize: 224 });
  const tv = await t.data();
  t.dispose();
  for (let i = 0; i < tv.length; i++) {
    assert.ok(Math.abs(tv[i] - expected[i]) <= 1 / 255 / 0.1994 + 1e-6, `tensor resize at ${i}`);
  }
});

Deno.test("train transform: zero-padded random crop then flip, same on CPU and on the backend", async () => {
  const n = 3, s = 32, p = 4;
  const imgs = images(n, 17);
  const split = splitOf(imgs, [1, 2, 3]);
  const aug = [{ top: 0, left: 8, flip: false }, { top: 8, left: 0, flip: true }, {
    top: 3,
    left: 5,
    flip: true,
  }];
  const cpu = transformCpu(split, [0, 1, 2], { train: true, imgSize: s }, aug);
  const f = Math.fround;
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < s; y++) {
        for (let x = 0; x < s; x++) {
          const cx = aug[b].flip ? s - 1 - x : x;
          const sy = y + aug[b].top - p, sx = cx + aug[b].left - p;
          const v = sy < 0 || sy >= s || sx < 0 || sx >= s ? 0 : imgs[b * 3072 + c * 1024 + sy * s + sx];
          const want = f(f(f(v / 255) - f(CIFAR_MEAN[c])) / f(CIFAR_STD[c]));
          assert.equal(cpu[((b * 3 + c) * s + y) * s + x], want, `b${b} c${c} y${y} x${x}`);
        }
      }
    }
  }
  const start = tf.memory().numTensors;
  const gpu = transformTensor(split, [0, 1, 2], { train: true, imgSize: s }, aug);
  assert.deepEqual(gpu.shape, [3, 3, 32, 32]);
  assert.deepEqual(await gpu.data(), cpu);
  gpu.dispose();
  assert.equal(tf.memory().numTensors, start);
  // At 64 (a real resize) the two implementations agree within one 8-bit level.
  const aug64 = aug.map((a) => ({ ...a, top: a.top * 2, left: a.left * 2 }));
  const c64 = transformCpu(split, [0, 1, 2], { train: true, imgSize: 64 }, aug64);
  const g64 = transformTensor(split, [0, 1, 2], { train: true, imgSize: 64 }, aug64);
  const gv = await g64.data();
  g64.dispose();
  let worst = 0;
  for (let i = 0; i < gv.length; i++) worst = Math.max(worst, Math.abs(gv[i] - c64[i]));
  assert.ok(worst <= 1 / 255 / 0.1994 + 1e-5, `max difference ${worst}`);
});

Deno.test("augmentation draws: torchvision ranges, flip probability, deterministic per (seed, epoch, index)", () => {
  let flips = 0;
  const tops = new Set<number>();
  for (let i = 0; i < 4000; i++) {
    const a = drawAugmentation(1, 0, i, 28);
    assert.ok(a.top >= 0 && a.top <= 56 && a.left >= 0 && a.left <= 56);
    tops.add(a.top);
    if (a.flip) flips++;
  }
  assert.equal(tops.size, 57);
  assert.ok(Math.abs(flips - 2000) < 150, `flips ${flips}`);
  assert.deepEqual(drawAugmentation(1, 3, 9, 28), drawAugmentation(1, 3, 9, 28));
  assert.notDeepEqual(
    [0, 1, 2, 3].map((i) => drawAugmentation(1, 3, i, 28)),
    [0, 1, 2, 3].map((i) => drawAugmentation(1, 4, i, 28)),
  );
});

Deno.test("cifarBatches: per-epoch shuffle, resumable at any batch, no leaks", () => {
  const split = splitOf(images(10, 3), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const start = tf.memory().numTensors;
  const collect = (opts: Parameters<typeof cifarBatches>[1]) => {
    const out: { idx: number[]; labels: number[]; x: Float32Array }[] = [];
    for (const b of cifarBatches(split, opts)) {
      out.push({ idx: [...b.indices], labels: [...b.labels], x: b.x.dataSync() as Float32Array });
      b.x.dispose();
    }
    return out;
  };
  const e0 = collect({ batchSize: 4, imgSize: 32, train: true, seed: 5, epoch: 0 });
  assert.equal(e0.length, numBatches(10, 4));
  assert.deepEqual(e0.map((b) => b.idx.length), [4, 4, 2]);
  assert.deepEqual(e0.flatMap((b) => b.idx).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const b of e0) assert.deepEqual(b.labels, b.idx); // labels follow their images
  const again = collect({ batchSize: 4, imgSize: 32, train: true, seed: 5, epoch: 0 });
  assert.deepEqual(again, e0);
  const e1 = collect({ batchSize: 4, imgSize: 32, train: true, seed: 5, epoch: 1 });
  assert.notDeepEqual(e1.map((b) => b.idx), e0.map((b) => b.idx));
  const resumed = collect({ batchSize: 4, imgSize: 32, train: true, seed: 5, epoch: 0, startBatch: 1 });
  assert.deepEqual(resumed, e0.slice(1));
  const dropped = collect({ batchSize: 4, imgSize: 32, train: true, seed: 5, dropLast: true });
  assert.equal(dropped.length, 2);
  const test = collect({ batchSize: 6, imgSize: 32, train: false });
  assert.deepEqual(test.map((b) => b.idx), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]);
  assert.equal(tf.memory().numTensors, start);
});

Deno.test("cifarBatches refuses a hand-built split whose buffers are shorter than its count", () => {
  const split = {
    dataset: "cifar10" as const,
    split: "train" as const,
    count: 4,
    images: new Uint8Array(3 * 3072),
    labels: new Uint8Array(4),
    numClasses: 10,
    files: [] as string[],
  };
  assert.throws(
    () => cifarBatches(split, { batchSize: 2, imgSize: 32, train: false }).next(),
    (e: unknown) =>
      e instanceof DatasetError && /4 images need 12288 bytes, the split holds 9216/.test(e.message),
  );
  assert.throws(
    () =>
      cifarBatches({ ...split, images: new Uint8Array(4 * 3072), labels: new Uint8Array(3) }, {
        batchSize: 2,
        imgSize: 32,
        train: false,
      }).next(),
    (e: unknown) => e instanceof DatasetError && /4 images but 3 labels/.test(e.message),
  );
});
