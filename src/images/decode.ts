/**
 * Image files in, 8-bit RGB out: the format is told by its magic bytes (never by the file name), PNG and
 * JPEG are decoded as Pillow 9.4 opens them and converts them with `convert("RGB")`, and anything else is an
 * {@link ImageError} that names the file and the format it found.
 *
 * @module
 */

import { ImageError } from "../core/errors.ts";
import { describeReadError, sourceOf } from "../core/platform.ts";
import type { RgbImage } from "./image.ts";
import { decodeJpeg } from "./jpeg.ts";
import { decodePng } from "./png.ts";
import { readLocalOrFetch } from "../core/files.ts";

/** The largest image file {@link readImage} reads: 256 MiB (a 179-megapixel JPEG is well under it). */
export const MAX_IMAGE_FILE_BYTES: number = 256 << 20;

/** Image formats recognised by their magic bytes; only `png` and `jpeg` can be decoded. */
export type ImageFormat =
  | "png"
  | "jpeg"
  | "gif"
  | "webp"
  | "bmp"
  | "tiff"
  | "avif"
  | "heic"
  | "jpeg2000"
  | "ico";

/** An image decoded to RGB, with what the file was. */
export interface DecodedImage extends RgbImage {
  /** The file's format. */
  format: "png" | "jpeg";
  /** The mode Pillow 9.4 opens the file in before `convert("RGB")` (`1`, `L`, `I`, `P`, `LA`, `RGB`, `RGBA`, `CMYK`). */
  mode: string;
}

const ascii = (b: Uint8Array, at: number, s: string) => {
  if (b.length < at + s.length) return false;
  for (let i = 0; i < s.length; i++) if (b[at + i] !== s.charCodeAt(i)) return false;
  return true;
};

/**
 * The format of an image file judged by its first bytes, or `undefined` when it is none that we know.
 *
 * @example
 * ```ts
 * import { detectImageFormat } from "./decode.ts";
 * detectImageFormat(new Uint8Array([0xff, 0xd8, 0xff, 0xe0])); // "jpeg"
 * ```
 */
export function detectImageFormat(b: Uint8Array): ImageFormat | undefined {
  if (b.length >= 8 && b[0] === 0x89 && ascii(b, 1, "PNG\r\n\x1a\n")) return "png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (ascii(b, 0, "GIF87a") || ascii(b, 0, "GIF89a")) return "gif";
  if (ascii(b, 0, "RIFF") && ascii(b, 8, "WEBP")) return "webp";
  if (ascii(b, 0, "BM") && b.length >= 26) return "bmp";
  if (ascii(b, 0, "II*\0") || ascii(b, 0, "MM\0*")) return "tiff";
  if (ascii(b, 4, "ftyp")) {
    const brand = String.fromCharCode(...b.subarray(8, 12));
    if (brand === "avif" || brand === "avis") return "avif";
    if (["heic", "heix", "hevc", "hevx", "mif1", "msf1"].includes(brand)) return "heic";
  }
  if (ascii(b, 0, "\0\0\0\x0cjP  ") || (b[0] === 0xff && b[1] === 0x4f && b[2] === 0xff && b[3] === 0x51)) {
    return "jpeg2000";
  }
  if (b.length >= 6 && b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0 && b[4] + b[5] > 0) return "ico";
  return undefined;
}

/**
 * Decodes PNG or JPEG bytes to RGB as `PIL.Image.open(f).convert("RGB")` does (alpha dropped, gray
 * replicated, palettes expanded, 16-bit reduced as Pillow reduces it). `file` only labels errors.
 *
 * @example
 * ```ts
 * import { decodeImage } from "./decode.ts";
 * const img = decodeImage(await Deno.readFile("cat.jpg"), "cat.jpg");
 * console.log(img.format, img.mode, img.width, img.height);
 * ```
 */
export function decodeImage(bytes: Uint8Array, file?: string): DecodedImage {
  const format = detectImageFormat(bytes);
  if (format === "png") {
    const p = decodePng(bytes, file);
    return { width: p.width, height: p.height, data: p.data, format, mode: p.header.mode };
  }
  if (format === "jpeg") {
    const j = decodeJpeg(bytes, file);
    return { width: j.width, height: j.height, data: j.data, format, mode: j.header.mode };
  }
  if (bytes.length === 0) throw new ImageError("empty file", { file });
  if (format) {
    throw new ImageError(`unsupported image format ${format.toUpperCase()} (supported: PNG, JPEG)`, { file });
  }
  throw new ImageError("not an image (unrecognised file signature; supported: PNG, JPEG)", { file });
}

/**
 * Reads and decodes an image file (a path, a `file:` URL, or an `http(s):` URL, fetched; in a browser a string
 * is a URL relative to the page). A missing or
 * unreadable file, like an undecodable one, is an {@link ImageError} naming it.
 *
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * const img = await readImage("cat.png");
 * ```
 */
export async function readImage(path: string | URL): Promise<DecodedImage> {
  const { url, label } = sourceOf(path);
  let bytes: Uint8Array;
  try {
    // a regular file (a FIFO would block forever) of a size an image can have
    bytes = await readLocalOrFetch(path, (msg) => {
      throw new ImageError(msg, { file: label });
    }, MAX_IMAGE_FILE_BYTES);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    const why = describeReadError(e);
    const known = /^(no such file|permission denied|is a directory)$/.test(why);
    throw new ImageError(known ? why : url ? `cannot download (${why})` : `cannot read (${why})`, {
      file: label,
      cause: e,
    });
  }
  return decodeImage(bytes, label);
}
