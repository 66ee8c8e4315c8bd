/**
 * Images in, model inputs out — and attention maps back out as pictures.
 *
 * - Decoding: PNG (every bit depth and colour type, palettes, interlacing) and JPEG (baseline and
 *   progressive) to 8-bit RGB exactly as Pillow 9.4's `Image.open(f).convert("RGB")` makes it
 *   ({@link decodeImage}, {@link readImage}); the format is told by magic bytes.
 * - Preprocessing: Pillow-exact resampling ({@link resizeImage}) and torchvision's `Resize`, `CenterCrop`,
 *   `ToTensor`, `Normalize` ({@link preprocessImage}) — bit-identical to the reference tensors for PNGs; the
 *   T2T-ViT evaluation transform for any model config ({@link evalTransform}) and the CIFAR transfer
 *   transform ({@link cifarTransform}).
 * - Attention maps: class-token attention of a block or attention rollout, laid over the image
 *   ({@link renderAttention}) and written as PNG ({@link encodePng}).
 * - Classification: {@link classifyImages} (top-k with probabilities), {@link attentionStacks}.
 * - Class names: {@link IMAGENET_CLASSES}, {@link labelsFor}.
 *
 * @example
 * ```ts
 * import { evalTransform, IMAGENET_MEAN, IMAGENET_STD, preprocessImage, readImage } from "./mod.ts";
 * const img = await readImage("cat.jpg");
 * const t = evalTransform({ inputSize: [3, 224, 224], cropPct: 0.9, interpolation: "bicubic", mean: IMAGENET_MEAN, std: IMAGENET_STD });
 * const { tensor } = preprocessImage(img, t); // Float32Array(3 * 224 * 224), CHW
 * ```
 *
 * @module
 */

export {
  checkCodedSize,
  checkImageSize,
  fromGray,
  fromRgba,
  IMAGE_FREE_PIXELS,
  IMAGE_PIXELS_PER_CODED_BYTE,
  MAX_IMAGE_PIXELS,
  type RgbImage,
  rgbImage,
} from "./image.ts";
export {
  type DecodedImage,
  decodeImage,
  detectImageFormat,
  type ImageFormat,
  MAX_IMAGE_FILE_BYTES,
  readImage,
} from "./decode.ts";
export { type DecodedPng, decodePng, type PngHeader, pngRawSize } from "./png.ts";
export {
  type DecodedJpeg,
  decodeJpeg,
  type JpegHeader,
  MAX_JPEG_PIXEL_SCANS,
  MAX_JPEG_SCANS,
} from "./jpeg.ts";
export { encodePng, type PngEncodeOptions, type PngPixels } from "./png_encode.ts";
export { type ResampleFilter, type ResizeBox, resizeImage } from "./resize.ts";
export {
  centerCrop,
  CIFAR_MEAN,
  CIFAR_STD,
  cifarTransform,
  DEFAULT_CROP_PCT,
  evalTransform,
  IMAGENET_MEAN,
  IMAGENET_STD,
  imageToTensor,
  type Preprocess,
  type Preprocessed,
  preprocessImage,
  resizedSize,
  resizeShorterSide,
  type TransformConfig,
} from "./transforms.ts";
export {
  attentionRollout,
  type AttentionStack,
  classTokenAttention,
  type Colormap,
  colormap,
  renderAttention,
  type RenderAttentionOptions,
  upsampleBilinear,
} from "./attention.ts";
export {
  attentionStacks,
  batchTensor,
  classifyImages,
  type ClassifyOptions,
  modelPreprocess,
  type Prediction,
  topK,
  type TransformKind,
} from "./classify.ts";
export { CIFAR100_CLASSES, IMAGENET_CLASSES, labelsFor, parseLabels, readLabels } from "../labels.ts";
