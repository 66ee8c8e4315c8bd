/**
 * Class names for the models' outputs: the 1000 ImageNet-1k classes (the project's
 * `src/imagenet_classes.txt`, embedded as a JSON module so it ships with the package and works from JSR
 * and in browsers), CIFAR-10 and CIFAR-100, and a reader for one-name-per-line label files.
 *
 * @module
 */

import IMAGENET_JSON from "./imagenet_classes.json" with { type: "json" };
import { CIFAR10_CLASSES } from "./data/cifar.ts";
import { T2tVitError } from "./core/errors.ts";
import { readLocalOrFetch } from "./core/files.ts";

/**
 * The ImageNet-1k class names in class-index order (index 0 `tench` … 999 `toilet tissue`), as in
 * `src/imagenet_classes.txt`. Two names occur twice (`crane`, `maillot`), as in the standard list.
 *
 * @example
 * ```ts
 * import { IMAGENET_CLASSES } from "./labels.ts";
 * IMAGENET_CLASSES[1]; // "goldfish"
 * ```
 */
export const IMAGENET_CLASSES: readonly string[] = Object.freeze(IMAGENET_JSON as string[]);

/** The CIFAR-100 fine class names in label order (alphabetical, as in the dataset's meta file). */
export const CIFAR100_CLASSES: readonly string[] = Object.freeze(
  ("apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can " +
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin " +
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster " +
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck " +
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk " +
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television " +
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split(" "),
);

/**
 * Parses a label file: one class name per line, in class-index order; `\r\n` endings are accepted, trailing
 * empty lines ignored. Throws if a name inside the list is empty.
 *
 * @example
 * ```ts
 * import { parseLabels } from "./labels.ts";
 * parseLabels("cat\ndog\n"); // ["cat", "dog"]
 * ```
 */
export function parseLabels(text: string, file?: string): string[] {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  while (lines.length && lines[lines.length - 1].trim() === "") lines.pop();
  const blank = lines.findIndex((l) => l.trim() === "");
  if (blank >= 0) throw new T2tVitError(`label file has an empty name on line ${blank + 1}`, { file });
  return lines.map((l) => l.trim());
}

/**
 * Reads a label file (see {@link parseLabels}).
 *
 * @example
 * ```ts
 * import { readLabels } from "./labels.ts";
 * const names = await readLabels("my_classes.txt");
 * ```
 */
export async function readLabels(path: string): Promise<string[]> {
  let text: string;
  try {
    const fail = (msg: string): never => {
      throw new T2tVitError(`cannot read label file (${msg})`, { file: path });
    };
    text = new TextDecoder().decode(await readLocalOrFetch(path, fail, 64 << 20));
  } catch (e) {
    if (e instanceof T2tVitError) throw e;
    throw new T2tVitError(`cannot read label file (${e instanceof Error ? e.message : String(e)})`, {
      file: path,
      cause: e,
    });
  }
  return parseLabels(text, path);
}

/**
 * The built-in class names for a classifier with `numClasses` outputs: ImageNet for 1000, CIFAR-10 for 10,
 * CIFAR-100 for 100; `undefined` otherwise.
 *
 * @example
 * ```ts
 * import { labelsFor } from "./labels.ts";
 * labelsFor(10)?.[3]; // "cat"
 * ```
 */
export function labelsFor(numClasses: number): readonly string[] | undefined {
  if (numClasses === 1000) return IMAGENET_CLASSES;
  if (numClasses === 100) return CIFAR100_CLASSES;
  if (numClasses === 10) return CIFAR10_CLASSES;
  return undefined;
}
