import assert from "node:assert/strict";
import { T2tVitError } from "../../src/core/errors.ts";
import { CIFAR100_CLASSES, IMAGENET_CLASSES, labelsFor, parseLabels, readLabels } from "../../src/labels.ts";

const DATA = new URL("../../src/imagenet_classes.txt", import.meta.url).pathname;

Deno.test("the embedded ImageNet labels are src/imagenet_classes.txt", async () => {
  // src/imagenet_classes.json is generated from the text file; regenerate it if this fails:
  // deno eval 'const l = Deno.readTextFileSync("src/imagenet_classes.txt").split("\n").filter(Boolean);
  //   Deno.writeTextFileSync("src/imagenet_classes.json", JSON.stringify(l, null, 2) + "\n")'
  const fromFile = await readLabels(DATA);
  assert.equal(fromFile.length, 1000);
  assert.deepEqual([...IMAGENET_CLASSES], fromFile);
  assert.equal(IMAGENET_CLASSES[0], "tench");
  assert.equal(IMAGENET_CLASSES[999], "toilet tissue");
  assert.ok(Object.isFrozen(IMAGENET_CLASSES));
});

Deno.test("CIFAR label lists and labelsFor", () => {
  assert.equal(CIFAR100_CLASSES.length, 100);
  assert.equal(new Set(CIFAR100_CLASSES).size, 100);
  assert.deepEqual([...CIFAR100_CLASSES], [...CIFAR100_CLASSES].sort());
  assert.equal(labelsFor(1000), IMAGENET_CLASSES);
  assert.equal(labelsFor(100), CIFAR100_CLASSES);
  assert.equal(labelsFor(10)?.[0], "airplane");
  assert.equal(labelsFor(7), undefined);
});

Deno.test("parseLabels: CRLF, BOM, trailing blank lines; empty names inside are errors", () => {
  assert.deepEqual(parseLabels("\uFEFFcat\r\ndog \r\n\r\n\n"), ["cat", "dog"]);
  assert.throws(() => parseLabels("cat\n\ndog\n", "l.txt"), (e: unknown) => {
    assert.ok(e instanceof T2tVitError);
    assert.match(e.message, /^l\.txt: label file has an empty name on line 2/);
    return true;
  });
});
