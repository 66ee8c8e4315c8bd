/**
 * CIFAR-10 and CIFAR-100: the binary readers (and a writer, for tests and tools), and the transforms and
 * batches of the official `transfer_learning.py` (random crop with padding 4, horizontal flip, resize to the
 * model's size, CIFAR mean/std), seeded so that a resumed run draws what the uninterrupted one would.
 *
 * @example
 * ```ts ignore
 * import { cifarBatches, readCifar } from "@t2t-vit/t2t-vit/data";
 * const test = await readCifar("./data", "cifar10", "test");
 * for (const { x, labels } of cifarBatches(test, { batchSize: 100, imgSize: 224 })) {
 *   // x: (100, 3, 224, 224) NCHW float32, labels: the classes
 *   x.dispose();
 * }
 * ```
 *
 * @module
 */

export {
  CIFAR10_CLASSES,
  CIFAR_FOLDER,
  CIFAR_IMAGE_BYTES,
  CIFAR_MEAN,
  CIFAR_SIZE,
  CIFAR_STD,
  cifarFiles,
  type CifarName,
  type CifarSplit,
  type CifarSplitName,
  encodeCifar,
  MAX_CIFAR_RECORDS,
  readCifar,
  type ReadCifarOptions,
  writeCifar,
} from "./cifar.ts";
export {
  type Augmentation,
  type CifarBatch,
  cifarBatches,
  type CifarBatchOptions,
  type CifarTransformOptions,
  drawAugmentation,
  numBatches,
  type ResizeMode,
  resizePlanes,
  transformCpu,
  transformTensor,
} from "./transforms.ts";
