/**
 * The one in-memory image type of the pipeline: 8-bit RGB, interleaved, row-major — what Pillow's
 * `Image.convert("RGB")` holds — plus constructors from other pixel layouts (canvas `ImageData`, gray).
 *
 * @module
 */

import { ImageError } from "../core/errors.ts";

/** An 8-bit RGB image: `data[(y * width + x) * 3 + c]`, c = 0 (red), 1 (green), 2 (blue). */
export interface RgbImage {
  /** Width in pixels (> 0). */
  width: number;
  /** Height in pixels (> 0). */
  height: number;
  /** `width * height * 3` bytes, RGB interleaved, rows top to bottom. */
  data: Uint8Array;
}

/**
 * Pillow's `Image.MAX_IMAGE_PIXELS * 2`: the size above which Pillow refuses an image as a decompression
 * bomb. The decoders refuse larger images before allocating anything.
 */
export const MAX_IMAGE_PIXELS = 2 * 89_478_485;

/** Throws an {@link ImageError} unless `width`/`height` are positive integers within {@link MAX_IMAGE_PIXELS}. */
export function checkImageSize(width: number, height: number, file?: string): void {
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width <= 0 || height <= 0) {
    throw new ImageError(`invalid image size ${width}x${height}`, { file });
  }
  if (width * height > MAX_IMAGE_PIXELS) {
    throw new ImageError(
      `image of ${width}x${height} pixels exceeds the limit of ${MAX_IMAGE_PIXELS} pixels (decompression bomb?)`,
      { file },
    );
  }
}

/**
 * Images up to this many pixels (24 megapixels, a large camera photo) decode whatever their compression;
 * larger ones must hold at least one byte of coded data per {@link IMAGE_PIXELS_PER_CODED_BYTE} pixels.
 */
export const IMAGE_FREE_PIXELS = 24_000_000;
/** See {@link IMAGE_FREE_PIXELS}: 64 (photos code 1-10 pixels per byte, flat scans a few dozen). */
export const IMAGE_PIXELS_PER_CODED_BYTE = 64;

/**
 * Bounds decoding by the data that is really there: decoding costs about 20 bytes of memory per pixel, so a
 * small file that claims a huge image (a PNG of zeros deflated 1000:1, a JPEG whose blocks are one bit each)
 * is refused unless the image is at most {@link IMAGE_FREE_PIXELS} or the file codes at least one byte per
 * {@link IMAGE_PIXELS_PER_CODED_BYTE} pixels. `codedBytes` counts image data only (IDAT chunks,
 * entropy-coded scans), never comments or metadata.
 */
export function checkCodedSize(
  width: number,
  height: number,
  codedBytes: number,
  what: string,
  file?: string,
): void {
  const pixels = width * height;
  if (pixels > IMAGE_FREE_PIXELS && pixels > IMAGE_PIXELS_PER_CODED_BYTE * codedBytes) {
    throw new ImageError(
      `a ${width}x${height} image from ${codedBytes} bytes of ${what} (more than ` +
        `${IMAGE_PIXELS_PER_CODED_BYTE} pixels per byte beyond ${IMAGE_FREE_PIXELS / 1e6} megapixels): ` +
        "refusing a decompression bomb",
      { file },
    );
  }
}

/**
 * Wraps RGB bytes as an {@link RgbImage}, checking the size.
 *
 * @example
 * ```ts
 * import { rgbImage } from "./image.ts";
 * const red = rgbImage(1, 1, new Uint8Array([255, 0, 0]));
 * ```
 */
export function rgbImage(width: number, height: number, data: Uint8Array): RgbImage {
  checkImageSize(width, height);
  if (data.length !== width * height * 3) {
    throw new ImageError(
      `RGB data has ${data.length} bytes, expected ${width * height * 3} for ${width}x${height}`,
    );
  }
  return { width, height, data };
}

/**
 * An {@link RgbImage} from RGBA bytes (e.g. a canvas `ImageData`), dropping alpha as Pillow's `convert("RGB")`
 * does (no compositing over a background).
 *
 * @example
 * ```ts
 * import { fromRgba } from "./image.ts";
 * const img = fromRgba(new Uint8ClampedArray([10, 20, 30, 0]), 1, 1); // data = [10, 20, 30]
 * ```
 */
export function fromRgba(rgba: ArrayLike<number>, width: number, height: number): RgbImage {
  checkImageSize(width, height);
  const n = width * height;
  if (rgba.length !== n * 4) {
    throw new ImageError(`RGBA data has ${rgba.length} values, expected ${n * 4} for ${width}x${height}`);
  }
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    data[i * 3] = rgba[i * 4];
    data[i * 3 + 1] = rgba[i * 4 + 1];
    data[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return { width, height, data };
}

/**
 * An {@link RgbImage} from 8-bit gray values, replicated into the three channels (Pillow's `L` → `RGB`).
 *
 * @example
 * ```ts
 * import { fromGray } from "./image.ts";
 * const img = fromGray(new Uint8Array([0, 128]), 2, 1); // data = [0, 0, 0, 128, 128, 128]
 * ```
 */
export function fromGray(gray: ArrayLike<number>, width: number, height: number): RgbImage {
  checkImageSize(width, height);
  const n = width * height;
  if (gray.length !== n) {
    throw new ImageError(`gray data has ${gray.length} values, expected ${n} for ${width}x${height}`);
  }
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) data[i * 3] = data[i * 3 + 1] = data[i * 3 + 2] = gray[i];
  return { width, height, data };
}
