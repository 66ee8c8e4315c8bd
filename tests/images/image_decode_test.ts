import assert from "node:assert/strict";
import { ImageError } from "../../src/core/errors.ts";
import {
  decodeImage,
  decodeJpeg,
  decodePng,
  detectImageFormat,
  fromGray,
  fromRgba,
  readImage,
} from "../../src/images/mod.ts";
import { buildPng, CHANNELS, chunk, concat, type PngSpec, samplesFor } from "../support/png_builder.ts";
import { ref } from "../support/fixtures.ts";

const OWN = new URL("../fixtures/images/", import.meta.url).pathname;

/** What Pillow 9.4's `Image.open(png).convert("RGB")` gives for the samples of a spec (the rules, restated). */
function pillowRgb(spec: PngSpec): Uint8Array {
  const n = spec.width * spec.height, ch = CHANNELS[spec.colorType], d = spec.bitDepth;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const s = (c: number) => spec.samples[i * ch + c];
    let rgb: number[];
    switch (spec.colorType) {
      case 0: {
        const v = d === 16 ? Math.min(s(0), 255) : d === 8 ? s(0) : (s(0) * 255) / (2 ** d - 1);
        rgb = [v, v, v];
        break;
      }
      case 3: {
        const p = spec.palette![s(0)];
        rgb = p ? [...p] : [s(0), s(0), s(0)];
        break;
      }
      case 4: {
        const v = d === 16 ? s(0) >> 8 : s(0);
        rgb = [v, v, v];
        break;
      }
      default:
        rgb = [0, 1, 2].map((c) => (d === 16 ? s(c) >> 8 : s(c)));
    }
    out.set(rgb, i * 3);
  }
  return out;
}

const MODES: Record<string, string> = {
  "0/1": "1",
  "0/2": "L",
  "0/4": "L",
  "0/8": "L",
  "0/16": "I",
  "2/8": "RGB",
  "2/16": "RGB",
  "3/1": "P",
  "3/2": "P",
  "3/4": "P",
  "3/8": "P",
  "4/8": "LA",
  "4/16": "RGBA",
  "6/8": "RGBA",
  "6/16": "RGBA",
};

Deno.test("PNG: every colour type, bit depth and interlacing decodes to Pillow's RGB", () => {
  let count = 0;
  for (const key of Object.keys(MODES)) {
    const [colorType, bitDepth] = key.split("/").map(Number) as [PngSpec["colorType"], PngSpec["bitDepth"]];
    for (const interlace of [false, true]) {
      for (const [width, height] of [[13, 11], [1, 1], [3, 5], [17, 9]]) {
        const ch = CHANNELS[colorType];
        const palette = colorType === 3
          ? Array.from(
            { length: Math.min(2 ** bitDepth, 200) },
            (_, i) => [(i * 37) % 256, (i * 91 + 7) % 256, 255 - i] as [number, number, number],
          )
          : undefined;
        const max = palette ? palette.length : 2 ** bitDepth;
        const samples = samplesFor(width * height * ch, max, count + 1);
        const spec: PngSpec = { width, height, colorType, bitDepth, samples, palette, interlace };
        const label = `type ${colorType} depth ${bitDepth} ${
          interlace ? "Adam7" : "plain"
        } ${width}x${height}`;
        const img = decodeImage(buildPng(spec), label);
        assert.equal(img.format, "png");
        assert.equal(img.mode, MODES[key], label);
        assert.equal(img.width, width);
        assert.equal(img.height, height);
        assert.deepEqual(img.data, pillowRgb(spec), label);
        count++;
      }
    }
  }
  assert.equal(count, 15 * 2 * 4);
});

Deno.test("PNG: 16-bit gray is clipped (mode I), 16-bit colour keeps the high byte", () => {
  const gray = decodePng(
    buildPng({ width: 6, height: 1, colorType: 0, bitDepth: 16, samples: [0, 100, 255, 256, 1000, 65535] }),
  );
  assert.equal(gray.header.mode, "I");
  assert.deepEqual([...gray.data].filter((_, i) => i % 3 === 0), [0, 100, 255, 255, 255, 255]);
  const rgb = decodePng(
    buildPng({
      width: 2,
      height: 1,
      colorType: 2,
      bitDepth: 16,
      samples: [0x1234, 0x12ff, 0xffff, 0x00ff, 0x0100, 0x8080],
    }),
  );
  assert.deepEqual([...rgb.data], [0x12, 0x12, 0xff, 0x00, 0x01, 0x80]);
  const la = decodePng(
    buildPng({ width: 2, height: 1, colorType: 4, bitDepth: 16, samples: [0xabcd, 0, 0x0102, 0xffff] }),
  );
  assert.equal(la.header.mode, "RGBA");
  assert.deepEqual([...la.data], [0xab, 0xab, 0xab, 0x01, 0x01, 0x01]);
});

Deno.test("PNG: alpha and tRNS are dropped, never composited; palette indices past the PLTE are gray", () => {
  const rgba = decodePng(
    buildPng({ width: 2, height: 1, colorType: 6, bitDepth: 8, samples: [10, 20, 30, 0, 40, 50, 60, 128] }),
  );
  assert.deepEqual([...rgba.data], [10, 20, 30, 40, 50, 60]);
  const la = decodePng(
    buildPng({ width: 2, height: 1, colorType: 4, bitDepth: 8, samples: [77, 0, 200, 255] }),
  );
  assert.deepEqual([...la.data], [77, 77, 77, 200, 200, 200]);
  const pal = decodePng(buildPng({
    width: 4,
    height: 1,
    colorType: 3,
    bitDepth: 8,
    samples: [0, 1, 2, 200],
    palette: [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
    trns: [0, 128],
  }));
  assert.deepEqual([...pal.data], [1, 2, 3, 4, 5, 6, 7, 8, 9, 200, 200, 200]);
  const grayTrns = decodePng(
    buildPng({ width: 2, height: 1, colorType: 0, bitDepth: 8, samples: [5, 9], trns: [0, 5] }),
  );
  assert.deepEqual([...grayTrns.data], [5, 5, 5, 9, 9, 9]);
});

Deno.test("PNG: image data split over several IDAT chunks", () => {
  const spec: PngSpec = { width: 40, height: 30, colorType: 2, bitDepth: 8, samples: samplesFor(3600, 256) };
  assert.deepEqual(decodePng(buildPng(spec, { splitIdat: true })).data, pillowRgb(spec));
  const low: PngSpec = {
    width: 21,
    height: 19,
    colorType: 0,
    bitDepth: 2,
    samples: samplesFor(399, 4),
    interlace: true,
  };
  assert.deepEqual(decodePng(buildPng(low, { splitIdat: true })).data, pillowRgb(low));
});

Deno.test("fixture images decode with the modes Pillow opens them in", async () => {
  const cases: [string, number, number, string, string][] = [
    ["landscape.png", 500, 375, "png", "RGB"],
    ["portrait.png", 300, 400, "png", "RGB"],
    ["photo.jpg", 640, 480, "jpeg", "RGB"],
    ["gray.png", 256, 256, "png", "L"],
    ["alpha.png", 224, 224, "png", "RGBA"],
    ["cifar32.png", 32, 32, "png", "RGB"],
  ];
  for (const [name, w, h, format, mode] of cases) {
    const img = await readImage(ref("images/" + name));
    assert.deepEqual([img.width, img.height, img.format, img.mode], [w, h, format, mode], name);
    assert.equal(img.data.length, w * h * 3);
    if (mode === "L") {
      for (let i = 0; i < w * h; i++) {
        assert.ok(img.data[i * 3] === img.data[i * 3 + 1] && img.data[i * 3] === img.data[i * 3 + 2]);
      }
    }
  }
});

function readPnm(bytes: Uint8Array): { width: number; height: number; channels: number; data: Uint8Array } {
  const head = new TextDecoder().decode(bytes.subarray(0, 32));
  const m = head.match(/^P([56])\s+(\d+)\s+(\d+)\s+255\s/);
  if (!m) throw new Error("not a binary PPM/PGM");
  return { width: +m[2], height: +m[3], channels: m[1] === "6" ? 3 : 1, data: bytes.subarray(m[0].length) };
}

Deno.test("JPEG: baseline/progressive, 4:2:0/4:2:2/4:4:0/4:4:4, RGB, gray, restart markers: within 3 levels of libjpeg-turbo", async () => {
  for (const name of ["prog420", "base422", "base440", "prog444", "rgb", "gray", "rst420", "progrst420"]) {
    const img = await readImage(OWN + name + ".jpg");
    const want = readPnm(await Deno.readFile(OWN + name + (name === "gray" ? ".pgm" : ".ppm")));
    assert.equal(img.width, want.width);
    assert.equal(img.height, want.height);
    assert.equal(img.mode, name === "gray" ? "L" : "RGB");
    let exact = 0, max = 0, sum = 0;
    for (let i = 0; i < img.data.length; i++) {
      const w = want.channels === 1 ? want.data[Math.floor(i / 3)] : want.data[i];
      const d = Math.abs(img.data[i] - w);
      if (d === 0) exact++;
      max = Math.max(max, d);
      sum += d;
    }
    const n = img.data.length;
    assert.ok(max <= 3, `${name}: max difference ${max} levels`);
    assert.ok(sum / n < 0.1, `${name}: mean difference ${sum / n}`);
    assert.ok(exact / n > 0.9, `${name}: only ${(100 * exact / n).toFixed(1)}% exact`);
  }
  const prog = decodeJpeg(await Deno.readFile(OWN + "prog420.jpg"));
  assert.deepEqual(prog.header.sampling, [[2, 2], [1, 1], [1, 1]]);
  assert.ok(prog.header.progressive);
  assert.equal(decodeJpeg(await Deno.readFile(OWN + "rgb.jpg")).header.colorSpace, "rgb");
});

Deno.test("JPEG: an Adobe marker asking for the YCbCr transform changes nothing", async () => {
  const bytes = await Deno.readFile(OWN + "base422.jpg");
  const adobe = new Uint8Array([
    0xff,
    0xee,
    0,
    14,
    ...new TextEncoder().encode("Adobe"),
    0,
    100,
    0,
    0,
    0,
    0,
    1,
  ]);
  const patched = concat([bytes.subarray(0, 2), adobe, bytes.subarray(2)]);
  assert.deepEqual(decodeJpeg(patched).data, decodeJpeg(bytes).data);
});

async function rejects(p: () => unknown, file: string, pattern: RegExp): Promise<void> {
  await assert.rejects(async () => await p(), (e: unknown) => {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${e}`);
    assert.ok(e.message.startsWith(file + ": "), `message names the file: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("errors: missing, unreadable, empty, garbage, unsupported and corrupt files name the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "image_decode_test_" });
  try {
    await rejects(() => readImage(`${dir}/nope.png`), `${dir}/nope.png`, /no such file/);
    await rejects(() => readImage(dir), dir, /directory|cannot read/);
    await Deno.writeFile(`${dir}/empty.png`, new Uint8Array(0));
    await rejects(() => readImage(`${dir}/empty.png`), `${dir}/empty.png`, /empty file/);
    await Deno.writeTextFile(`${dir}/notes.jpg`, "just some text, not an image at all");
    await rejects(() => readImage(`${dir}/notes.jpg`), `${dir}/notes.jpg`, /not an image/);
    const signatures: [string, Uint8Array, RegExp][] = [
      [
        "a.gif",
        new TextEncoder().encode("GIF89a\x01\x00\x01\x00\x00\x00\x00"),
        /unsupported image format GIF/,
      ],
      ["a.webp", new TextEncoder().encode("RIFF\x1a\x00\x00\x00WEBPVP8 "), /unsupported image format WEBP/],
      ["a.bmp", concat([new TextEncoder().encode("BM"), new Uint8Array(60)]), /unsupported image format BMP/],
      [
        "a.tif",
        concat([new TextEncoder().encode("II*\0"), new Uint8Array(20)]),
        /unsupported image format TIFF/,
      ],
    ];
    for (const [name, bytes, re] of signatures) {
      await Deno.writeFile(`${dir}/${name}`, bytes);
      await rejects(() => readImage(`${dir}/${name}`), `${dir}/${name}`, re);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(detectImageFormat(new Uint8Array([0xff, 0xd8, 0xff, 0xdb])), "jpeg");
  assert.equal(detectImageFormat(new Uint8Array([1, 2, 3])), undefined);
});

Deno.test("errors: truncated and corrupted PNGs", async () => {
  const spec: PngSpec = { width: 32, height: 32, colorType: 2, bitDepth: 8, samples: samplesFor(3072, 256) };
  const png = buildPng(spec);
  for (const cut of [8, 12, 20, 33, 50, png.length - 20, png.length - 12, png.length - 1]) {
    await rejects(() => decodeImage(png.subarray(0, cut), "cut.png"), "cut.png", /truncated|corrupt/);
  }
  const flipped = png.slice();
  flipped[60] ^= 0x55; // inside IDAT: CRC mismatch
  await rejects(() => decodeImage(flipped, "flip.png"), "flip.png", /CRC mismatch in chunk "IDAT"/);
  // A valid CRC over garbage compressed data
  const ihdr = new Uint8Array([0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0]);
  const junk = concat([
    png.subarray(0, 8),
    chunk("IHDR", ihdr),
    chunk("IDAT", new Uint8Array([1, 2, 3, 4, 5])),
    chunk("IEND", new Uint8Array(0)),
  ]);
  await rejects(() => decodeImage(junk, "junk.png"), "junk.png", /corrupt PNG/);
  const badDepth = concat([
    png.subarray(0, 8),
    chunk("IHDR", new Uint8Array([0, 0, 0, 4, 0, 0, 0, 4, 3, 2, 0, 0, 0])),
    chunk("IEND", new Uint8Array(0)),
  ]);
  await rejects(() => decodeImage(badDepth, "depth.png"), "depth.png", /bit depth 3/);
  const bomb = concat([
    png.subarray(0, 8),
    chunk("IHDR", new Uint8Array([0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0])),
    chunk("IEND", new Uint8Array(0)),
  ]);
  await rejects(() => decodeImage(bomb, "bomb.png"), "bomb.png", /exceeds the limit/);
  const noPalette = buildPng({ width: 2, height: 2, colorType: 3, bitDepth: 8, samples: [0, 0, 0, 0] });
  await rejects(() => decodeImage(noPalette, "nopal.png"), "nopal.png", /without PLTE/);
});

Deno.test("errors: truncated, corrupt and unsupported JPEGs", async () => {
  const jpg = await Deno.readFile(ref("images/photo.jpg"));
  for (const cut of [3, 100, 700, jpg.length >> 1, jpg.length - 2]) {
    await rejects(() => decodeImage(jpg.subarray(0, cut), "cut.jpg"), "cut.jpg", /truncated|corrupt/);
  }
  const sof = jpg.findIndex((b, i) => b === 0xff && jpg[i + 1] === 0xc0);
  const arith = jpg.slice();
  arith[sof + 1] = 0xc9;
  await rejects(() => decodeImage(arith, "arith.jpg"), "arith.jpg", /unsupported JPEG \(arithmetic-coded/);
  const twelve = jpg.slice();
  twelve[sof + 4] = 12;
  await rejects(() => decodeImage(twelve, "12bit.jpg"), "12bit.jpg", /12-bit samples/);
  // a progressive JPEG whose restart interval does not divide a scan: jpeg-js cannot read it; refused cleanly
  await rejects(
    () => readImage(OWN + "progrst5.jpg"),
    OWN + "progrst5.jpg",
    /progressive JPEGs with restart markers/,
  );
  const garbled = jpg.slice();
  for (let i = 2000; i < 2400; i++) garbled[i] = 0xff; // a run of marker prefixes inside the scan data
  await rejects(() => decodeImage(garbled, "garbled.jpg"), "garbled.jpg", /corrupt or unsupported JPEG/);
});

Deno.test("fromRgba drops alpha, fromGray replicates", () => {
  assert.deepEqual([...fromRgba(new Uint8ClampedArray([1, 2, 3, 0, 4, 5, 6, 255]), 2, 1).data], [
    1,
    2,
    3,
    4,
    5,
    6,
  ]);
  assert.deepEqual([...fromGray([9, 250], 1, 2).data], [9, 9, 9, 250, 250, 250]);
  assert.throws(() => fromRgba(new Uint8Array(7), 2, 1), ImageError);
});

Deno.test("readImage fetches http(s) URLs; HTTP errors name the URL", async () => {
  const ac = new AbortController();
  const png = await Deno.readFile(ref("images/cifar32.png"));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    (req) =>
      new URL(req.url).pathname === "/a.png" ? new Response(png) : new Response("nope", { status: 404 }),
  );
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const img = await readImage(`${base}/a.png`);
    assert.deepEqual([img.width, img.height, img.format], [32, 32, "png"]);
    await rejects(() => readImage(new URL(`${base}/b.png`)), `${base}/b.png`, /cannot download \(HTTP 404/);
  } finally {
    ac.abort();
    await server.finished;
  }
});
