/**
 * JPEG decoding to 8-bit RGB, as close to Pillow 9.4 (libjpeg-turbo) as a pure-JS decoder gets.
 *
 * Entropy decoding and the inverse DCT come from `jpeg-js` (pure JavaScript; baseline, extended and
 * progressive Huffman JPEGs). jpeg-js itself upsamples chroma by pixel replication and converts YCbCr with
 * truncating floating point, both unlike libjpeg; so for 1- and 3-component images this module takes the raw
 * component planes from jpeg-js and finishes the job the way libjpeg-turbo does:
 * - "fancy" (triangle-filter) chroma upsampling for 2x1, 1x2 and 2x2 subsampling (`jdsample.c`), with the
 *   first/last rows and columns replicated as libjpeg's context rows are;
 * - YCbCr → RGB with libjpeg's 16-bit fixed-point tables (`jdcolor.c`);
 * - the colour space chosen as libjpeg does: JFIF → YCbCr, Adobe transform 0 → RGB, component ids R, G, B → RGB.
 * What remains different is jpeg-js's integer IDCT against libjpeg's `islow` one: typically ±1 level.
 * CMYK/YCCK images use jpeg-js's own conversion. Known gap: jpeg-js mis-reads some progressive JPEGs whose
 * restart interval does not divide a scan's block count (it lacks pdf.js's 2017 fix); those are refused with
 * an {@link ImageError} saying so. EXIF orientation is not applied (neither is it by
 * `PIL.Image.open` + torchvision). Errors are {@link ImageError}s naming the file.
 *
 * @module
 */

import jpeg from "jpeg-js";
import { ImageError } from "../core/errors.ts";
import { checkCodedSize, checkImageSize, MAX_IMAGE_PIXELS, type RgbImage } from "./image.ts";

/** What the JPEG's markers say, and the mode Pillow opens it in. */
export interface JpegHeader {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Number of colour components (1, 3 or 4). */
  components: number;
  /** Horizontal/vertical sampling factors per component, in frame order. */
  sampling: [number, number][];
  /** Progressive (SOF2) rather than sequential. */
  progressive: boolean;
  /** The colour space the components are in, as libjpeg decides it. */
  colorSpace: "gray" | "ycbcr" | "rgb" | "cmyk" | "ycck";
  /** The Pillow mode the file opens in: `L`, `RGB` or `CMYK`. */
  mode: string;
}

/** A decoded JPEG: RGB pixels plus the header. */
export interface DecodedJpeg extends RgbImage {
  /** The file's header, colour space and Pillow mode. */
  header: JpegHeader;
}

const UNSUPPORTED_SOF: Record<number, string> = {
  0xc3: "lossless",
  0xc5: "hierarchical",
  0xc6: "hierarchical",
  0xc7: "hierarchical lossless",
  0xc9: "arithmetic-coded",
  0xca: "arithmetic-coded progressive",
  0xcb: "arithmetic-coded lossless",
  0xcd: "arithmetic-coded hierarchical",
  0xce: "arithmetic-coded hierarchical",
  0xcf: "arithmetic-coded hierarchical lossless",
};

/** At most this many pixels per entropy-coded byte: one bit per 8x8 block (see {@link decodeJpeg}). */
const JPEG_PIXELS_PER_BYTE = 512;

/**
 * The most scans a JPEG may have. libjpeg's progressive scripts use about 10 and optimisers a few dozen;
 * every scan makes the decoder pass over the whole image again, so a file of thousands of tiny scans costs
 * minutes. (libjpeg-turbo suggests a limit of this order for untrusted input.)
 */
export const MAX_JPEG_SCANS = 256;

/**
 * The most decoding work a JPEG may ask for, as pixels times scans: about 3 seconds of the pure-JS decoder.
 * A 24-megapixel progressive photo with 10 scans needs 2.4e8.
 */
export const MAX_JPEG_PIXEL_SCANS = 1e9;

interface Markers {
  header: JpegHeader;
  /** The restart interval of the first DRI segment (0: none). */
  restartInterval: number;
  /** Offset of the Adobe APP14 transform byte, if there is one. */
  adobeTransformAt?: number;
  /** Offset of the first SOS marker. */
  scanAt: number;
}

/** Walks the markers up to the first SOS, validating what the rest of the decoder relies on. */
function readMarkers(b: Uint8Array, file?: string): Markers {
  if (b.length < 2 || b[0] !== 0xff || b[1] !== 0xd8) {
    throw new ImageError("not a JPEG file (no SOI marker)", { file });
  }
  let off = 2;
  let jfif = false;
  let restartInterval = 0;
  let adobeTransform: number | undefined, adobeTransformAt: number | undefined;
  let frame:
    | { width: number; height: number; ids: number[]; sampling: [number, number][]; sof: number }
    | undefined;
  for (;;) {
    // Markers may be preceded by any number of 0xFF fill bytes.
    while (off < b.length && b[off] === 0xff && b[off + 1] === 0xff) off++;
    if (off + 4 > b.length) throw new ImageError("truncated JPEG file (no scan data)", { file, offset: off });
    if (b[off] !== 0xff) {
      throw new ImageError(`corrupt JPEG file (expected a marker at byte ${off})`, { file, offset: off });
    }
    const m = b[off + 1];
    if (m === 0xd9) throw new ImageError("corrupt JPEG file (EOI before any scan)", { file, offset: off });
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      off += 2;
      continue;
    }
    const len = (b[off + 2] << 8) | b[off + 3];
    if (len < 2 || off + 2 + len > b.length) {
      throw new ImageError("truncated JPEG file (a marker segment runs past the end)", { file, offset: off });
    }
    const seg = b.subarray(off + 4, off + 2 + len);
    if (m === 0xdd && seg.length >= 2) restartInterval = (seg[0] << 8) | seg[1];
    if (m === 0xe0 && seg.length >= 5 && String.fromCharCode(...seg.subarray(0, 5)) === "JFIF\0") jfif = true;
    if (m === 0xee && seg.length >= 12 && String.fromCharCode(...seg.subarray(0, 6)) === "Adobe\0") {
      adobeTransform = seg[11];
      adobeTransformAt = off + 4 + 11;
    }
    if (m in UNSUPPORTED_SOF) {
      throw new ImageError(
        `unsupported JPEG (${UNSUPPORTED_SOF[m]} coding; only Huffman baseline and progressive)`,
        {
          file,
        },
      );
    }
    if (m === 0xc0 || m === 0xc1 || m === 0xc2) {
      if (frame) throw new ImageError("corrupt JPEG file (more than one frame)", { file, offset: off });
      if (seg.length < 6) {
        throw new ImageError("corrupt JPEG file (short SOF segment)", { file, offset: off });
      }
      if (seg[0] !== 8) {
        throw new ImageError(`unsupported JPEG (${seg[0]}-bit samples; only 8-bit)`, { file });
      }
      const height = (seg[1] << 8) | seg[2], width = (seg[3] << 8) | seg[4], n = seg[5];
      if (seg.length < 6 + 3 * n || n === 0) {
        throw new ImageError("corrupt JPEG file (short SOF segment)", { file, offset: off });
      }
      const ids: number[] = [], sampling: [number, number][] = [];
      for (let i = 0; i < n; i++) {
        ids.push(seg[6 + 3 * i]);
        const hv = seg[7 + 3 * i];
        if ((hv >> 4) < 1 || (hv >> 4) > 4 || (hv & 15) < 1 || (hv & 15) > 4) {
          throw new ImageError("corrupt JPEG file (bad sampling factors)", { file, offset: off });
        }
        sampling.push([hv >> 4, hv & 15]);
      }
      if (height === 0) throw new ImageError("unsupported JPEG (height defined by a DNL marker)", { file });
      frame = { width, height, ids, sampling, sof: m };
    }
    if (m === 0xda) break;
    off += 2 + len;
  }
  if (!frame) throw new ImageError("corrupt JPEG file (scan before any frame header)", { file });
  checkImageSize(frame.width, frame.height, file);
  const n = frame.ids.length;
  let colorSpace: JpegHeader["colorSpace"];
  if (n === 1) colorSpace = "gray";
  else if (n === 3) {
    // libjpeg's default_decompress_parms
    if (jfif) colorSpace = "ycbcr";
    else if (adobeTransform !== undefined) colorSpace = adobeTransform === 0 ? "rgb" : "ycbcr";
    else if (frame.ids[0] === 82 && frame.ids[1] === 71 && frame.ids[2] === 66) colorSpace = "rgb";
    else colorSpace = "ycbcr";
  } else if (n === 4) colorSpace = adobeTransform === 2 ? "ycck" : "cmyk";
  else throw new ImageError(`unsupported JPEG (${n} colour components)`, { file });
  // The entropy-coded data must end in an EOI; a file cut short is refused as Pillow refuses it.
  let eoi = false;
  for (let i = b.length - 2; i > off; i--) {
    if (b[i] === 0xff && b[i + 1] === 0xd9) {
      eoi = true;
      break;
    }
  }
  if (!eoi) throw new ImageError("truncated JPEG file (no EOI marker after the scan data)", { file });
  return {
    header: {
      width: frame.width,
      height: frame.height,
      components: n,
      sampling: frame.sampling,
      progressive: frame.sof === 0xc2,
      colorSpace,
      mode: n === 1 ? "L" : n === 3 ? "RGB" : "CMYK",
    },
    adobeTransformAt,
    restartInterval,
    scanAt: off,
  };
}

/**
 * Walks the scans from the first SOS to EOI: counts the scans and the entropy-coded bytes (the bytes that
 * really code blocks, not comments, APPn padding or tables), so the size guards cannot be padded past.
 */
function scanStats(b: Uint8Array, at: number, file?: string): { scans: number; entropyBytes: number } {
  let scans = 0, entropyBytes = 0, off = at;
  while (off + 1 < b.length) {
    if (b[off] !== 0xff) break; // garbage after the data: the decoder decides
    const m = b[off + 1];
    if (m === 0xff) {
      off++;
      continue;
    }
    if (m === 0xd9) break; // EOI
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      off += 2;
      continue;
    }
    if (off + 4 > b.length) break;
    const len = (b[off + 2] << 8) | b[off + 3];
    off += 2 + len;
    if (m !== 0xda) continue;
    if (++scans > MAX_JPEG_SCANS) {
      throw new ImageError(`unsupported JPEG (more than ${MAX_JPEG_SCANS} scans)`, { file });
    }
    // entropy-coded data: up to a marker that is not a stuffed 0xFF00 or a restart marker
    const start = off;
    let restarts = 0;
    while (off < b.length) {
      if (b[off] === 0xff && off + 1 < b.length) {
        const n = b[off + 1];
        if (n === 0x00) {
          off += 2;
          continue;
        }
        if (n >= 0xd0 && n <= 0xd7) {
          restarts += 2;
          off += 2;
          continue;
        }
        break;
      }
      off++;
    }
    entropyBytes += off - start - restarts;
  }
  return { scans, entropyBytes };
}

/**
 * Decodes JPEG bytes to 8-bit RGB (Pillow's `Image.open(f).convert("RGB")` up to IDCT rounding).
 *
 * @example
 * ```ts
 * import { decodeJpeg } from "./jpeg.ts";
 * const img = decodeJpeg(await Deno.readFile("photo.jpg"), "photo.jpg");
 * console.log(img.width, img.height, img.header.colorSpace);
 * ```
 */
export function decodeJpeg(bytes: Uint8Array, file?: string): DecodedJpeg {
  const { header, adobeTransformAt, restartInterval, scanAt } = readMarkers(bytes, file);
  // Every 8x8 block of a complete Huffman-coded JPEG costs at least one bit (its DC code), so N entropy-coded
  // bytes hold at most 512·N pixels. A frame header claiming more is corrupt or a truncated file (jpeg-js would
  // decode the missing data as zeros, allocating and working for an image the file does not hold). Only
  // entropy-coded bytes count: comments and APPn segments cannot pad a file past this guard.
  const { scans, entropyBytes } = scanStats(bytes, scanAt, file);
  const pixels = header.width * header.height;
  if (pixels > JPEG_PIXELS_PER_BYTE * entropyBytes) {
    throw new ImageError(
      `corrupt or truncated JPEG file (a ${header.width}x${header.height} frame cannot be coded in ` +
        `${entropyBytes} bytes of scan data)`,
      { file },
    );
  }
  checkCodedSize(header.width, header.height, entropyBytes, "scan data", file);
  if (pixels * scans > MAX_JPEG_PIXEL_SCANS) {
    throw new ImageError(
      `unsupported JPEG (${scans} scans over ${header.width}x${header.height} pixels: more decoding work ` +
        `than the limit of ${MAX_JPEG_PIXEL_SCANS} pixel-scans)`,
      { file },
    );
  }
  const own = header.components !== 4;
  let input = bytes;
  if (own && adobeTransformAt !== undefined && bytes[adobeTransformAt] !== 0) {
    // jpeg-js forces its own colour conversion when the Adobe marker asks for one; hide it (we convert).
    input = bytes.slice();
    input[adobeTransformAt] = 0;
  }
  let raw: { width: number; height: number; data: Uint8Array };
  try {
    raw = jpeg.decode(input, {
      useTArray: true,
      formatAsRGBA: false,
      colorTransform: own ? false : undefined,
      tolerantDecoding: true,
      maxResolutionInMP: Math.ceil(MAX_IMAGE_PIXELS / 1e6),
      maxMemoryUsageInMB: 1024, // coefficients + output: a 100-megapixel 4:2:0 photo needs about 600
    });
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    const hint = header.progressive && restartInterval > 0
      ? "; progressive JPEGs with restart markers are a known gap of the jpeg-js decoder"
      : "";
    throw new ImageError(`corrupt or unsupported JPEG file (${why}${hint})`, { file, cause: e });
  }
  if (raw.width !== header.width || raw.height !== header.height) {
    throw new ImageError("corrupt JPEG file (decoder disagrees about the size)", { file });
  }
  const { width: w, height: h } = header;
  if (!own || header.colorSpace === "gray") {
    // 4 components: jpeg-js's CMYK conversion; gray: jpeg-js already replicated Y.
    return { width: w, height: h, data: raw.data, header };
  }
  const n = w * h;
  const planes: Uint8Array[] = [new Uint8Array(n), new Uint8Array(n), new Uint8Array(n)];
  for (let i = 0; i < n; i++) {
    planes[0][i] = raw.data[i * 3];
    planes[1][i] = raw.data[i * 3 + 1];
    planes[2][i] = raw.data[i * 3 + 2];
  }
  const maxH = Math.max(...header.sampling.map((s) => s[0]));
  const maxV = Math.max(...header.sampling.map((s) => s[1]));
  for (let c = 0; c < 3; c++) {
    const [hs, vs] = header.sampling[c];
    planes[c] = fancyUpsample(planes[c], w, h, maxH / hs, maxV / vs);
  }
  const out = new Uint8Array(n * 3);
  if (header.colorSpace === "rgb") {
    for (let i = 0; i < n; i++) {
      out[i * 3] = planes[0][i];
      out[i * 3 + 1] = planes[1][i];
      out[i * 3 + 2] = planes[2][i];
    }
  } else {
    yccToRgb(planes[0], planes[1], planes[2], out);
  }
  return { width: w, height: h, data: out, header };
}

/**
 * Rebuilds a full-resolution plane the way libjpeg-turbo upsamples: jpeg-js hands us the plane replicated
 * (sample (i, j) repeated over an fx-by-fy block), from which the downsampled plane is read back exactly,
 * then 2x1, 1x2 and 2x2 factors get libjpeg's triangle filters and every other factor stays replicated
 * (libjpeg's `int_upsample`).
 */
function fancyUpsample(rep: Uint8Array, w: number, h: number, fx: number, fy: number): Uint8Array {
  const dw = Math.ceil(w / fx), dh = Math.ceil(h / fy);
  const h2v1 = fx === 2 && fy === 1 && dw > 2;
  const h2v2 = fx === 2 && fy === 2 && dw > 2;
  const h1v2 = fx === 1 && fy === 2;
  if (!h2v1 && !h2v2 && !h1v2) return rep;
  const ds = new Int32Array(dw * dh);
  for (let j = 0; j < dh; j++) for (let i = 0; i < dw; i++) ds[j * dw + i] = rep[j * fy * w + i * fx];
  const out = new Uint8Array(w * h);
  const row = new Int32Array(dw); // column sums of the current output row
  for (let y = 0; y < h; y++) {
    const j = Math.floor(y / fy);
    if (h2v1) {
      const r = j * dw;
      const put = (x: number, v: number) => {
        if (x < w) out[y * w + x] = v;
      };
      put(0, ds[r]);
      put(1, (ds[r] * 3 + ds[r + 1] + 2) >> 2);
      for (let i = 1; i < dw - 1; i++) {
        const v3 = ds[r + i] * 3;
        put(2 * i, (v3 + ds[r + i - 1] + 1) >> 2);
        put(2 * i + 1, (v3 + ds[r + i + 1] + 2) >> 2);
      }
      const last = ds[r + dw - 1];
      put(2 * dw - 2, (last * 3 + ds[r + dw - 2] + 1) >> 2);
      put(2 * dw - 1, last);
      continue;
    }
    // Vertical neighbour: the row above for the upper output row of a pair, below for the lower one;
    // libjpeg replicates the first and last rows as context.
    const upper = y % 2 === 0;
    const jn = upper ? Math.max(j - 1, 0) : Math.min(j + 1, dh - 1);
    for (let i = 0; i < dw; i++) row[i] = ds[j * dw + i] * 3 + ds[jn * dw + i];
    if (h1v2) {
      const bias = upper ? 1 : 2;
      for (let i = 0; i < w; i++) out[y * w + i] = (row[i] + bias) >> 2;
      continue;
    }
    const o = y * w;
    const put = (x: number, v: number) => {
      if (x < w) out[o + x] = v;
    };
    put(0, (row[0] * 4 + 8) >> 4);
    put(1, (row[0] * 3 + row[1] + 7) >> 4);
    for (let i = 1; i < dw - 1; i++) {
      put(2 * i, (row[i] * 3 + row[i - 1] + 8) >> 4);
      put(2 * i + 1, (row[i] * 3 + row[i + 1] + 7) >> 4);
    }
    put(2 * dw - 2, (row[dw - 1] * 3 + row[dw - 2] + 8) >> 4);
    put(2 * dw - 1, (row[dw - 1] * 4 + 7) >> 4);
  }
  return out;
}

// libjpeg's jdcolor.c build_ycc_rgb_table: 16-bit fixed point with rounding.
const SCALEBITS = 16, ONE_HALF = 1 << (SCALEBITS - 1);
const FIX = (x: number) => Math.floor(x * (1 << SCALEBITS) + 0.5);
const CR_R = new Int32Array(256),
  CB_B = new Int32Array(256),
  CR_G = new Float64Array(256),
  CB_G = new Float64Array(256);
for (let i = 0, x = -128; i < 256; i++, x++) {
  CR_R[i] = Math.floor((FIX(1.402) * x + ONE_HALF) / 65536);
  CB_B[i] = Math.floor((FIX(1.772) * x + ONE_HALF) / 65536);
  CR_G[i] = -FIX(0.71414) * x;
  CB_G[i] = -FIX(0.34414) * x + ONE_HALF;
}

function yccToRgb(yp: Uint8Array, cb: Uint8Array, cr: Uint8Array, out: Uint8Array): void {
  const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);
  for (let i = 0; i < yp.length; i++) {
    const y = yp[i], b = cb[i], r = cr[i];
    out[i * 3] = clamp(y + CR_R[r]);
    out[i * 3 + 1] = clamp(y + Math.floor((CB_G[b] + CR_G[r]) / 65536));
    out[i * 3 + 2] = clamp(y + CB_B[b]);
  }
}
