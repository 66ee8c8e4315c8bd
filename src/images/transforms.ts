/**
 * torchvision 0.14's PIL transforms, reproduced exactly: `Resize(int)` (shorter side), `CenterCrop`,
 * `ToTensor`, `Normalize`; and the two pipelines T2T-ViT uses — timm's evaluation transform
 * (`Resize(floor(img_size / crop_pct))`, `CenterCrop(img_size)`, mean/std of the model's pretrained config)
 * and the CIFAR transfer-learning test transform (`Resize(img_size)` bilinear, CIFAR mean/std).
 *
 * Float arithmetic follows PyTorch's float32: `ToTensor` divides by 255 in float32, `Normalize` subtracts
 * the float32 mean and divides by the float32 std, each step rounded to float32.
 *
 * @module
 */

import { ImageError } from "../core/errors.ts";
import type { RgbImage } from "./image.ts";
import { type ResampleFilter, resizeImage } from "./resize.ts";

// timm's IMAGENET_DEFAULT_MEAN/STD, defined once with the model configs.
export { IMAGENET_MEAN, IMAGENET_STD } from "../../zoo/configs.ts";
/** The mean of the official `transfer_learning.py` (CIFAR-10/100). */
export const CIFAR_MEAN: readonly [number, number, number] = [0.4914, 0.4822, 0.4465];
/** The std of the official `transfer_learning.py` (CIFAR-10/100). */
export const CIFAR_STD: readonly [number, number, number] = [0.2023, 0.1994, 0.201];
/** timm's `DEFAULT_CROP_PCT`. */
export const DEFAULT_CROP_PCT = 0.875;

/**
 * Output size of torchvision's `Resize(size)` with an int `size`: the shorter side becomes `size`, the
 * longer `int(size * long / short)` (truncated). Returns `[width, height]`.
 *
 * @example
 * ```ts
 * import { resizedSize } from "./transforms.ts";
 * resizedSize(500, 375, 248); // [330, 248]
 * ```
 */
export function resizedSize(width: number, height: number, size: number): [number, number] {
  if (!Number.isInteger(size) || size <= 0) {
    throw new ImageError(`resize size must be a positive integer, got ${size}`);
  }
  if (width <= height) return [size, Math.trunc((size * height) / width)];
  return [Math.trunc((size * width) / height), size];
}

/**
 * torchvision `Resize(size, interpolation)` with an int size on a PIL image: the shorter side becomes
 * `size` (aspect ratio kept), resampled with Pillow's filter. An image already of that size is returned as is.
 *
 * @example
 * ```ts
 * import { resizeShorterSide } from "./transforms.ts";
 * const img = { width: 500, height: 375, data: new Uint8Array(500 * 375 * 3) };
 * resizeShorterSide(img, 248, "bicubic"); // 330x248
 * ```
 */
export function resizeShorterSide(
  img: RgbImage,
  size: number,
  filter: ResampleFilter = "bilinear",
): RgbImage {
  const [w, h] = resizedSize(img.width, img.height, size);
  if (w === img.width && h === img.height) return img;
  return resizeImage(img, w, h, filter);
}

/** Python's `round()` (half to even) for the crop offsets. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision `CenterCrop(size)`: pads with zeros (left/top get the smaller half) when the image is smaller
 * than the crop, then crops at `round((H - h) / 2)`, `round((W - w) / 2)` with Python's half-to-even `round`.
 * `size` is a side length or `[height, width]`.
 *
 * @example
 * ```ts
 * import { centerCrop } from "./transforms.ts";
 * const img = { width: 330, height: 248, data: new Uint8Array(330 * 248 * 3) };
 * centerCrop(img, 224); // 224x224 from x = 53, y = 12
 * ```
 */
export function centerCrop(img: RgbImage, size: number | [number, number]): RgbImage {
  const [ch, cw] = typeof size === "number" ? [size, size] : size;
  if (!Number.isInteger(ch) || !Number.isInteger(cw) || ch <= 0 || cw <= 0) {
    throw new ImageError(`crop size must be positive integers, got ${ch}x${cw}`);
  }
  let src = img;
  if (cw > img.width || ch > img.height) {
    const left = cw > img.width ? Math.floor((cw - img.width) / 2) : 0;
    const top = ch > img.height ? Math.floor((ch - img.height) / 2) : 0;
    const right = cw > img.width ? Math.floor((cw - img.width + 1) / 2) : 0;
    const bottom = ch > img.height ? Math.floor((ch - img.height + 1) / 2) : 0;
    const pw = img.width + left + right, ph = img.height + top + bottom;
    const data = new Uint8Array(pw * ph * 3);
    for (let y = 0; y < img.height; y++) {
      data.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + top) * pw + left) * 3);
    }
    src = { width: pw, height: ph, data };
    if (pw === cw && ph === ch) return src;
  }
  const top = roundHalfEven((src.height - ch) / 2), left = roundHalfEven((src.width - cw) / 2);
  const out = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) {
    const s = ((y + top) * src.width + left) * 3;
    out.set(src.data.subarray(s, s + cw * 3), y * cw * 3);
  }
  return { width: cw, height: ch, data: out };
}

/**
 * torchvision `ToTensor` followed by `Normalize(mean, std)`: CHW float32, `((v / 255) - mean) / std` with
 * every operation rounded to float32 as PyTorch does. Without mean/std, just `ToTensor` (v / 255).
 *
 * @example
 * ```ts
 * import { IMAGENET_MEAN, IMAGENET_STD, imageToTensor } from "./transforms.ts";
 * const chw = imageToTensor({ width: 1, height: 1, data: new Uint8Array([255, 0, 128]) }, IMAGENET_MEAN, IMAGENET_STD);
 * ```
 */
export function imageToTensor(
  img: RgbImage,
  mean?: readonly [number, number, number],
  std?: readonly [number, number, number],
): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(3 * n);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    // Every possible byte value maps to one float: build the 256-entry table once per channel.
    const lut = new Float32Array(256);
    const m = mean ? f(mean[c]) : 0, s = std ? f(std[c]) : 1;
    for (let v = 0; v < 256; v++) {
      const x = f(v / 255);
      lut[v] = mean || std ? f(f(x - m) / s) : x;
    }
    const base = c * n;
    for (let i = 0; i < n; i++) out[base + i] = lut[img.data[i * 3 + c]];
  }
  return out;
}

/** The parts of a model's pretrained config the evaluation transform needs (the zoo's `PretrainedCfg` fits). */
export interface TransformConfig {
  /** `[3, height, width]` the model takes. */
  inputSize: readonly [number, number, number];
  /** Fraction of the resized image the center crop keeps (timm's `crop_pct`). */
  cropPct?: number;
  /** Resampling filter of the resize. */
  interpolation?: ResampleFilter;
  /** Per-channel mean for `Normalize`. */
  mean: readonly [number, number, number];
  /** Per-channel std for `Normalize`. */
  std: readonly [number, number, number];
}

/** A fully specified preprocessing pipeline: Resize(shorter side) → CenterCrop → ToTensor → Normalize. */
export interface Preprocess {
  /** Target of the shorter side in `Resize`. */
  resize: number;
  /** Center crop `[height, width]`. */
  crop: [number, number];
  /** Resampling filter. */
  interpolation: ResampleFilter;
  /** Normalize mean. */
  mean: readonly [number, number, number];
  /** Normalize std. */
  std: readonly [number, number, number];
}

/**
 * timm's `transforms_imagenet_eval` for a model config: `Resize(floor(size / crop_pct))` with the config's
 * interpolation, `CenterCrop(size)`, its mean/std. For T2T-ViT at 224: Resize(248, bicubic), CenterCrop(224).
 *
 * @example
 * ```ts
 * import { evalTransform, IMAGENET_MEAN, IMAGENET_STD } from "./transforms.ts";
 * const t = evalTransform({ inputSize: [3, 224, 224], cropPct: 0.9, interpolation: "bicubic", mean: IMAGENET_MEAN, std: IMAGENET_STD });
 * // { resize: 248, crop: [224, 224], interpolation: "bicubic", ... }
 * ```
 */
export function evalTransform(cfg: TransformConfig): Preprocess {
  const [, h, w] = cfg.inputSize;
  const cropPct = cfg.cropPct ?? DEFAULT_CROP_PCT;
  if (!(cropPct > 0 && cropPct <= 1)) throw new ImageError(`crop_pct must be in (0, 1], got ${cropPct}`);
  if (h !== w) {
    // timm resizes both sides (a tuple size) for non-square inputs; only square models exist here.
    throw new ImageError(`non-square input size ${h}x${w} is not supported`);
  }
  return {
    resize: Math.floor(h / cropPct),
    crop: [h, w],
    interpolation: cfg.interpolation ?? "bilinear",
    mean: cfg.mean,
    std: cfg.std,
  };
}

/**
 * The test transform of the official `transfer_learning.py` (CIFAR-10/100): `Resize(size)` bilinear and the
 * CIFAR mean/std. A center crop to `size` follows, which changes nothing for the square CIFAR images and
 * makes any other image square, as the model needs.
 *
 * @example
 * ```ts
 * import { cifarTransform } from "./transforms.ts";
 * cifarTransform(224); // { resize: 224, crop: [224, 224], interpolation: "bilinear", mean: CIFAR_MEAN, std: CIFAR_STD }
 * ```
 */
export function cifarTransform(size = 224): Preprocess {
  return { resize: size, crop: [size, size], interpolation: "bilinear", mean: CIFAR_MEAN, std: CIFAR_STD };
}

/** The result of {@link preprocessImage}: the model input and the 8-bit image it was made from. */
export interface Preprocessed {
  /** CHW float32 `[3, crop[0], crop[1]]`, normalized. */
  tensor: Float32Array;
  /** The resized and cropped 8-bit image (what the model sees, before normalization), e.g. for overlays. */
  image: RgbImage;
}

/**
 * Runs a {@link Preprocess} pipeline on an RGB image.
 *
 * @example
 * ```ts
 * import { evalTransform, IMAGENET_MEAN, IMAGENET_STD, preprocessImage } from "./transforms.ts";
 * const t = evalTransform({ inputSize: [3, 224, 224], cropPct: 0.9, interpolation: "bicubic", mean: IMAGENET_MEAN, std: IMAGENET_STD });
 * const img = { width: 500, height: 375, data: new Uint8Array(500 * 375 * 3) };
 * const { tensor } = preprocessImage(img, t); // Float32Array(3 * 224 * 224)
 * ```
 */
export function preprocessImage(img: RgbImage, t: Preprocess): Preprocessed {
  const cropped = centerCrop(resizeShorterSide(img, t.resize, t.interpolation), t.crop);
  return { tensor: imageToTensor(cropped, t.mean, t.std), image: cropped };
}
