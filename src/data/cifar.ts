/**
 * Readers (and a writer) for the binary versions of CIFAR-10 and CIFAR-100
 * (https://www.cs.toronto.edu/~kriz/cifar.html):
 *
 * - CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin` (train, 10000 records each) and
 *   `test_batch.bin`; a record is 1 label byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each plane
 *   row-major 32×32). Class names in `batches.meta.txt`.
 * - CIFAR-100 (`cifar-100-binary/`): `train.bin` (50000 records) and `test.bin` (10000); a record is the coarse
 *   label byte, the fine label byte, then the same 3072 pixel bytes. Names in `fine_label_names.txt` and
 *   `coarse_label_names.txt`.
 *
 * Files are checked for existence and size (a whole number of records of the expected count) and labels for
 * range; failures throw {@linkcode DatasetError} naming the file.
 *
 * @module
 */

import { DatasetError } from "../core/errors.ts";
import { writeFileAtomic } from "../core/atomic.ts";
import { denoNs, isNotFound, readBytes, sourceOf } from "../core/platform.ts";
import { readLocalOrFetch, regularFileSize } from "../core/files.ts";

/** The two datasets. */
export type CifarName = "cifar10" | "cifar100";

/** Which split. */
export type CifarSplitName = "train" | "test";

/** Pixels of one image: 3 planes of 32×32. */
export const CIFAR_IMAGE_BYTES = 3072;

/** The CIFAR side length. */
export const CIFAR_SIZE = 32;

/** The mean and std the official transfer script normalises with (shared with the image pipeline). */
export { CIFAR_MEAN, CIFAR_STD } from "../images/transforms.ts";

/** The CIFAR-10 class names, in label order. */
export const CIFAR10_CLASSES: readonly string[] = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

/** A loaded split: images as channel planes, labels, class names. */
export interface CifarSplit {
  /** `"cifar10"` or `"cifar100"`. */
  dataset: CifarName;
  /** `"train"` or `"test"`. */
  split: CifarSplitName;
  /** Number of images. */
  count: number;
  /** `count * 3072` bytes: per image, the R, G and B planes (32×32 row-major each). */
  images: Uint8Array;
  /** Class label of each image (the fine label for CIFAR-100). */
  labels: Uint8Array;
  /** CIFAR-100's coarse (superclass) labels. */
  coarseLabels?: Uint8Array;
  /** Number of classes (10 or 100). */
  numClasses: number;
  /** Class names, when the dataset's names file is present (CIFAR-10's are built in). */
  classNames?: string[];
  /** The files read, in order. */
  files: string[];
}

interface Layout {
  dir: string;
  files: string[];
  records: number[]; // expected records per file (0 = any whole number)
  labelBytes: number;
  numClasses: number;
}

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    const { path: local, url } = sourceOf(path);
    if (local !== undefined) await denoNs()!.stat(local);
    else {
      const res = await fetch(url!, { method: "HEAD" });
      await res.body?.cancel();
      return res.ok;
    }
    return true;
  } catch {
    return false;
  }
}

/** The folder the archive extracts to, for each dataset. */
export const CIFAR_FOLDER: Readonly<Record<CifarName, string>> = {
  cifar10: "cifar-10-batches-bin",
  cifar100: "cifar-100-binary",
};

/** The files of a split, in order. */
export function cifarFiles(dataset: CifarName, split: CifarSplitName): string[] {
  if (dataset === "cifar10") {
    return split === "train" ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ["test_batch.bin"];
  }
  return [split === "train" ? "train.bin" : "test.bin"];
}

async function resolveLayout(
  dir: string,
  dataset: CifarName,
  split: CifarSplitName,
  strictCounts: boolean,
): Promise<Layout> {
  const names = cifarFiles(dataset, split);
  // Accept the extracted folder itself or its parent.
  let base = dir;
  if (!(await exists(join(dir, names[0]))) && (await exists(join(dir, CIFAR_FOLDER[dataset])))) {
    base = join(dir, CIFAR_FOLDER[dataset]);
  }
  const perFile = dataset === "cifar10" ? 10000 : split === "train" ? 50000 : 10000;
  return {
    dir: base,
    files: names.map((n) => join(base, n)),
    records: names.map(() => (strictCounts ? perFile : 0)),
    labelBytes: dataset === "cifar10" ? 1 : 2,
    numClasses: dataset === "cifar10" ? 10 : 100,
  };
}

async function readNames(path: string): Promise<string[] | undefined> {
  try {
    const text = new TextDecoder().decode(
      await readLocalOrFetch(path, (msg) => {
        throw new DatasetError(msg, { file: path });
      }, 1 << 20),
    );
    const names = text.split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
    return names.length > 0 ? names : undefined;
  } catch {
    return undefined;
  }
}

/** The most records one file may hold when official counts are not required (CIFAR-100's train file has 50000). */
export const MAX_CIFAR_RECORDS = 100_000;

function checkCifarSize(
  size: number,
  expected: number,
  recBytes: number,
  labelBytes: number,
  file: string,
): void {
  if (size === 0 || size % recBytes !== 0) {
    throw new DatasetError(
      `is ${size} bytes, not a whole number of ${recBytes}-byte records ` +
        `(${labelBytes} label byte${labelBytes > 1 ? "s" : ""} + 3072 pixel bytes)`,
      { file },
    );
  }
  if (expected && size !== expected * recBytes) {
    throw new DatasetError(
      `is ${size} bytes (${size / recBytes} records); expected ${expected} records (${
        expected * recBytes
      } bytes); for a subset or your own data in CIFAR format pass --any-count (strictCounts: false)`,
      { file },
    );
  }
  if (size / recBytes > MAX_CIFAR_RECORDS) {
    throw new DatasetError(
      `holds ${size / recBytes} records, more than the ${MAX_CIFAR_RECORDS} a CIFAR file may have`,
      { file },
    );
  }
}

/** Options of {@linkcode readCifar}. */
export interface ReadCifarOptions {
  /**
   * Require the official record counts (10000 per CIFAR-10 batch, 50000/10000 for CIFAR-100). Default true;
   * false accepts any whole number of records (subsets, synthetic data in the same format).
   */
  strictCounts?: boolean;
}

/**
 * Reads a CIFAR split from `dir` (the extracted `cifar-10-batches-bin` / `cifar-100-binary` folder, or the
 * folder that contains it).
 *
 * @throws {DatasetError} naming the file that is missing, of the wrong size, or holds an out-of-range label
 *
 * @example
 * ```ts ignore
 * import { readCifar } from "./cifar.ts";
 * const train = await readCifar("./data", "cifar10", "train");
 * console.log(train.count, train.labels[0], train.classNames?.[train.labels[0]]);
 * ```
 */
export async function readCifar(
  dir: string,
  dataset: CifarName,
  split: CifarSplitName,
  opts: ReadCifarOptions = {},
): Promise<CifarSplit> {
  if (dataset !== "cifar10" && dataset !== "cifar100") {
    throw new DatasetError(`unknown dataset '${dataset}' (expected cifar10 or cifar100)`);
  }
  const layout = await resolveLayout(dir, dataset, split, opts.strictCounts ?? true);
  const recBytes = layout.labelBytes + CIFAR_IMAGE_BYTES;
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < layout.files.length; i++) {
    const file = layout.files[i];
    let bytes: Uint8Array;
    try {
      // The size is checked from stat before anything is read: a file of the wrong size (a sparse 3 GB
      // file, a FIFO, a directory) is refused without reading it.
      if (denoNs() && sourceOf(file).path !== undefined) {
        const size = regularFileSize(file, (msg, cause) => {
          throw new DatasetError(msg, { file, cause });
        });
        checkCifarSize(size, layout.records[i], recBytes, layout.labelBytes, file);
      }
      bytes = await readBytes(file);
    } catch (e) {
      if (e instanceof DatasetError && !isNotFound(e.cause)) throw e;
      const notFound = isNotFound(e) || isNotFound((e as Error).cause);
      const what = notFound
        ? `missing: the ${dataset} ${split} split needs ${
          cifarFiles(dataset, split).join(", ")
        } in ${layout.dir} ` +
          `(the binary version, ${CIFAR_FOLDER[dataset]} from the official archive)`
        : `cannot be read: ${(e as Error).message}`;
      throw new DatasetError(what, { file, cause: e });
    }
    // (again: the file may have changed between stat and read)
    checkCifarSize(bytes.byteLength, layout.records[i], recBytes, layout.labelBytes, file);
    chunks.push(bytes);
  }
  const count = chunks.reduce((a, c) => a + c.byteLength / recBytes, 0);
  const images = new Uint8Array(count * CIFAR_IMAGE_BYTES);
  const labels = new Uint8Array(count);
  const coarse = layout.labelBytes === 2 ? new Uint8Array(count) : undefined;
  let n = 0;
  chunks.forEach((bytes, fi) => {
    const records = bytes.byteLength / recBytes;
    for (let r = 0; r < records; r++, n++) {
      const off = r * recBytes;
      let label: number;
      if (coarse) {
        coarse[n] = bytes[off];
        label = bytes[off + 1];
        if (coarse[n] >= 20) {
          throw new DatasetError(`record ${r} has coarse label ${coarse[n]}, outside 0..19`, {
            file: layout.files[fi],
            offset: off,
          });
        }
      } else label = bytes[off];
      if (label >= layout.numClasses) {
        throw new DatasetError(`record ${r} has label ${label}, outside 0..${layout.numClasses - 1}`, {
          file: layout.files[fi],
          offset: off,
        });
      }
      labels[n] = label;
      images.set(bytes.subarray(off + layout.labelBytes, off + recBytes), n * CIFAR_IMAGE_BYTES);
    }
  });
  const classNames = dataset === "cifar10"
    ? (await readNames(join(layout.dir, "batches.meta.txt"))) ?? [...CIFAR10_CLASSES]
    : await readNames(join(layout.dir, "fine_label_names.txt"));
  const out: CifarSplit = {
    dataset,
    split,
    count,
    images,
    labels,
    numClasses: layout.numClasses,
    files: layout.files,
  };
  if (coarse) out.coarseLabels = coarse;
  if (classNames && classNames.length === layout.numClasses) out.classNames = classNames;
  return out;
}

/**
 * Encodes images and labels as CIFAR binary records (CIFAR-10 layout, or CIFAR-100's when `coarseLabels` is
 * given): the inverse of the reader, for building datasets of your own in the format.
 *
 * @example
 * ```ts
 * import { encodeCifar } from "./cifar.ts";
 * const bytes = encodeCifar(new Uint8Array(2 * 3072), new Uint8Array([3, 7]));
 * bytes.byteLength; // 6146
 * ```
 */
export function encodeCifar(images: Uint8Array, labels: Uint8Array, coarseLabels?: Uint8Array): Uint8Array {
  const n = labels.length;
  if (images.byteLength !== n * CIFAR_IMAGE_BYTES) {
    throw new DatasetError(
      `got ${images.byteLength} pixel bytes for ${n} images (need ${n * CIFAR_IMAGE_BYTES})`,
    );
  }
  if (coarseLabels && coarseLabels.length !== n) {
    throw new DatasetError(`got ${coarseLabels.length} coarse labels for ${n} images`);
  }
  const lb = coarseLabels ? 2 : 1;
  const rec = lb + CIFAR_IMAGE_BYTES;
  const out = new Uint8Array(n * rec);
  for (let i = 0; i < n; i++) {
    if (coarseLabels) {
      out[i * rec] = coarseLabels[i];
      out[i * rec + 1] = labels[i];
    } else out[i * rec] = labels[i];
    out.set(images.subarray(i * CIFAR_IMAGE_BYTES, (i + 1) * CIFAR_IMAGE_BYTES), i * rec + lb);
  }
  return out;
}

/**
 * Writes {@linkcode encodeCifar}'s records to `path` (temporary file, then rename).
 *
 * @throws {DatasetError} when the data is inconsistent or the file cannot be written
 */
export async function writeCifar(
  path: string,
  images: Uint8Array,
  labels: Uint8Array,
  coarseLabels?: Uint8Array,
): Promise<void> {
  const bytes = encodeCifar(images, labels, coarseLabels);
  try {
    await writeFileAtomic(path, bytes, { force: true });
  } catch (e) {
    throw new DatasetError(`cannot write: ${(e as Error).message}`, { file: path, cause: e });
  }
}
