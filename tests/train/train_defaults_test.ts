// The README's transfer command, verbatim, at its real defaults (t2t_vit_14 at 224 px, batch 128, SGD, wasm with
// every core) on a small data set in CIFAR-10 format written here and full-size fill() weights: it plans a
// micro-batch that fits the wasm heap, reports it, and completes an epoch instead of aborting in wasm. Bounded
// by --limit-train/--limit-test and --stop-after (and --any-count for the small files). A micro-batch that
// cannot fit is refused up front with a one-line error naming the flag.
import assert from "node:assert/strict";
import { writeCifar } from "../../src/data/mod.ts";
import { readSafetensors, writeSafetensors } from "../../converters/safetensors.ts";
import { filledWeights } from "../support/zoo.ts";

const SCRIPT = new URL("../../examples/transfer_cifar10.ts", import.meta.url).pathname;
const README = new URL("../../README.md", import.meta.url).pathname;

/** The README's transfer command line (the one with --weights), as arguments after `deno task transfer`. */
async function readmeCommand(): Promise<string[]> {
  const text = await Deno.readTextFile(README);
  const line = text.split("\n").find((l) => l.startsWith("deno task transfer ") && l.includes("--weights"));
  assert.ok(line, "README has no `deno task transfer ... --weights` line");
  return line.slice("deno task transfer ".length).trim().split(/\s+/);
}

async function run(args: string[], cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name:
    "README transfer command at its defaults (224 px, batch 128, wasm): plans a micro-batch and completes",
  sanitizeResources: false,
  fn: async () => {
    const args = await readmeCommand();
    const at = (flag: string) => args[args.indexOf(flag) + 1];
    assert.equal(at("--model"), "t2t_vit_14");
    assert.ok(!args.includes("--b") && !args.includes("--img-size") && !args.includes("--micro-batch"));
    const dir = await Deno.makeTempDir();
    try {
      const data = `${dir}/${at("--data")}`;
      await Deno.mkdir(data, { recursive: true });
      let s = 7;
      const files = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`).concat(["test_batch.bin"]);
      for (const file of files) {
        const n = 2;
        const images = new Uint8Array(n * 3072), labels = new Uint8Array(n);
        for (let i = 0; i < n; i++) labels[i] = (i * 3) % 10;
        for (let i = 0; i < images.length; i++) {
          images[i] = (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24;
        }
        await writeCifar(`${data}/${file}`, images, labels);
      }
      await writeSafetensors(`${dir}/${at("--weights")}`, filledWeights("t2t_vit_14"), { format: "pt" });

      const bound = ["--any-count", "--limit-train", "2", "--limit-test", "2", "--stop-after", "1"];
      const t0 = performance.now();
      const r = await run([...args, ...bound], dir);
      const seconds = (performance.now() - t0) / 1000;
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /Aborted|RuntimeError|out of bounds/);
      assert.match(r.stderr, /backend wasm, \d+ thread\(s\)/);
      // one image of t2t_vit_14 at 224 takes ~464 MB by the estimate of wasm's fused path (~2.3 GB on the generic
      // one): the batch of 2 runs whole (the README's batch of 128 as 26 chunks of 5: train_memory_test.ts)
      assert.match(r.stderr, /==> memory: micro-batch 2: about \d+ MB per step of 3072 MB/);
      // and evaluation at --test-batch 100 would not fit either (a forward of 100 images at 224 is ~14 GB)
      assert.match(
        r.stderr,
        /==> evaluation in batches of \d+: --test-batch 100 would not fit the wasm backend/,
      );
      assert.match(r.stderr, /==> epoch 0: train [\d.]+%, test [\d.]+% \(best, saved\)/);
      assert.match(
        r.stderr,
        /stopped after epoch 0 of 60; continue with: --out checkpoint_cifar10_t2t_vit_14 --resume/,
      );
      const out = `${dir}/checkpoint_cifar10_t2t_vit_14`;
      const best = await readSafetensors(`${out}/best.safetensors`);
      assert.deepEqual(best.tensors.get("head.weight")!.shape, [10, 384]);
      await Deno.stat(`${out}/last.optim.safetensors`);
      console.log(`README command, 2 train + 2 test images at 224: ${seconds.toFixed(1)} s`);

      // a micro-batch that cannot fit is refused before training, naming the flag and the fix
      // (16: on wasm's fused path 8 images fit with recomputation, which the planner turns on by itself)
      const big = await run([...args, ...bound, "--micro-batch", "16", "--out", "other"], dir);
      assert.equal(big.code, 1, big.stderr);
      assert.match(
        big.stderr,
        /^transfer: --micro-batch 16 does not fit the wasm backend: .*use --micro-batch \d/m,
      );
      assert.equal(big.stderr.trim().split("\n").filter((l) => !l.startsWith("==>")).length, 1);
      await assert.rejects(Deno.stat(`${dir}/other`)); // nothing written
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
