// The transfer script (examples/transfer_cifar10.ts) end to end as a user runs it, on a tiny synthetic
// dataset in CIFAR-10 binary format: trains, evaluates, keeps the best weights, logs JSON, resumes; and
// fails with a one-line message and a non-zero exit code on bad input.
import assert from "node:assert/strict";
import { writeCifar } from "../../src/data/mod.ts";
import { readSafetensors } from "../../converters/safetensors.ts";

const SCRIPT = new URL("../../examples/transfer_cifar10.ts", import.meta.url).pathname;

async function run(args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function writeData(dir: string) {
  const make = (n: number, seed: number) => {
    let s = seed;
    const images = new Uint8Array(n * 3072), labels = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      labels[i] = i % 3;
      for (let p = 0; p < 3072; p++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        images[i * 3072 + p] = Math.floor(p / 1024) === i % 3 ? 128 + (s >>> 25) : s >>> 26;
      }
    }
    return { images, labels };
  };
  for (let b = 1; b <= 5; b++) {
    const d = make(4, b);
    await writeCifar(`${dir}/data_batch_${b}.bin`, d.images, d.labels);
  }
  const t = make(8, 9);
  await writeCifar(`${dir}/test_batch.bin`, t.images, t.labels);
}

Deno.test({
  name: "transfer script: trains, keeps the best, logs JSON, resumes; clear errors",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.mkdir(`${dir}/cifar-10-batches-bin`);
      await writeData(`${dir}/cifar-10-batches-bin`);
      const common = [
        "--data",
        dir,
        "--any-count",
        "--model",
        "T2t_vit_7",
        "--img-size",
        "32",
        "--b",
        "10",
        "--backend",
        "wasm",
        "--out",
        `${dir}/run`,
        "--seed",
        "5",
      ];
      const first = await run([...common, "--epochs", "1"]);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /20 train \/ 8 test images, backend wasm/);
      assert.match(first.stderr, /epoch 0 train \[.*\] 2\/2 loss \d+\.\d+ acc \d+\.\d+% [\d.]+ img\/s/);
      assert.match(first.stderr, /==> epoch 0: train [\d.]+%, test [\d.]+%/);
      for (const f of ["last.safetensors", "last.optim.safetensors", "log.jsonl"]) {
        await Deno.stat(`${dir}/run/${f}`);
      }
      const log1 = (await Deno.readTextFile(`${dir}/run/log.jsonl`)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assert.equal(log1.length, 1);
      assert.deepEqual(Object.keys(log1[0]), [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "best_acc",
        "images_per_s",
        "seconds",
        "step",
      ]);
      assert.equal(log1[0].step, 2);
      assert.match(first.stderr, /==> memory: micro-batch 10: about \d+ MB per step/);
      // best.safetensors exists after the first epoch, whatever the accuracy
      const best = await readSafetensors(`${dir}/run/best.safetensors`);
      assert.equal(best.metadata.architecture, "t2t_vit_7");
      assert.ok(best.tensors.has("tokens_to_token.attention1.w"));
      assert.deepEqual(best.tensors.get("head.weight")!.shape, [10, 256]);

      // a flag that changes the run is refused on resume, naming --change; nothing is written
      const refused = await run([...common, "--epochs", "2", "--resume"]);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /--epochs 2 \(the run has 1\).*--change epochs/);
      assert.equal(refused.stderr.trim().split("\n").length, 1);
      // a finished run says so and exits 0
      const finished = await run(["--out", `${dir}/run`, "--resume"]);
      assert.equal(finished.code, 0, finished.stderr);
      assert.match(finished.stderr, /has finished: 1 of 1 epochs.*--change epochs/);

      // every setting comes from the checkpoint: only --out, --resume and the intended change
      const second = await run(["--out", `${dir}/run`, "--resume", "--epochs", "2", "--change", "epochs"]);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stderr, /resumed from .*last\.safetensors: epoch 1, step 2/);
      assert.doesNotMatch(second.stderr, /epoch 0 train/);
      const log2 = (await Deno.readTextFile(`${dir}/run/log.jsonl`)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assert.deepEqual(log2.map((l) => [l.epoch, l.step]), [[0, 2], [1, 4]]);
      assert.deepEqual(log2[0], log1[0]);

      const missing = await run(["--data", `${dir}/nowhere`]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^transfer: .*nowhere\/data_batch_1\.bin: missing/);
      assert.equal(missing.stderr.trim().split("\n").length, 1);
      const strict = await run(["--data", dir]);
      assert.equal(strict.code, 1);
      assert.match(strict.stderr, /data_batch_1\.bin: is 12292 bytes \(4 records\); expected 10000 records/);
      assert.match(strict.stderr, /pass --any-count/);
      const bad = await run(["--dataset", "imagenet"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--dataset must be cifar10 or cifar100/);
      const help = await run(["--help"]);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /--transfer-ratio X/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "transfer script: stop after epoch 1 + `--out X --resume` alone = the uninterrupted run, bit for bit",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.mkdir(`${dir}/cifar-10-batches-bin`);
      await writeData(`${dir}/cifar-10-batches-bin`);
      const common = [
        "--data",
        dir,
        "--any-count",
        "--model",
        "t2t_vit_7",
        "--img-size",
        "32",
        "--b",
        "8",
        "--epochs",
        "2",
        "--seed",
        "3",
        "--lr",
        "0.05",
      ];
      const straight = await run([...common, "--out", `${dir}/a`]);
      assert.equal(straight.code, 0, straight.stderr);
      const first = await run([...common, "--out", `${dir}/b`, "--stop-after", "1"]);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /stopped after epoch 0 of 2; continue with: --out .*\/b --resume/);
      const rest = await run(["--out", `${dir}/b`, "--resume"]);
      assert.equal(rest.code, 0, rest.stderr);
      assert.match(rest.stderr, /resumed from .*last\.safetensors: epoch 1, step 3/);
      for (const f of ["last.safetensors", "last.optim.safetensors"]) {
        const [a, b] = [await readSafetensors(`${dir}/a/${f}`), await readSafetensors(`${dir}/b/${f}`)];
        assert.deepEqual([...b.tensors.keys()], [...a.tensors.keys()]);
        for (const [k, t] of a.tensors) {
          assert.deepEqual(b.tensors.get(k)!.data, t.data, `${f}: ${k} differs`);
        }
        if (f === "last.optim.safetensors") {
          const strip = (m: Record<string, string>) => {
            const t = JSON.parse(m.training);
            delete t.extra;
            return [m.optimizer, t];
          };
          assert.deepEqual(strip(b.metadata), strip(a.metadata));
        }
      }
      const logs = await Promise.all(
        ["a", "b"].map(async (r) =>
          (await Deno.readTextFile(`${dir}/${r}/log.jsonl`)).trim().split("\n").map((l) => {
            const { seconds: _s, images_per_s: _i, ...rest } = JSON.parse(l);
            return rest;
          })
        ),
      );
      assert.deepEqual(logs[1], logs[0]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "transfer script: --freeze-backbone trains the head on cached features; the backbone is untouched",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.mkdir(`${dir}/cifar-10-batches-bin`);
      await writeData(`${dir}/cifar-10-batches-bin`);
      const args = [
        "--data",
        dir,
        "--any-count",
        "--model",
        "t2t_vit_7",
        "--img-size",
        "32",
        "--b",
        "5",
        "--epochs",
        "3",
        "--lr",
        "0.05",
        "--freeze-backbone",
        "--out",
        `${dir}/probe`,
      ];
      const first = await run(args);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /==> train features: 20 x 256\n/);
      assert.match(first.stderr, /==> linear probe: 3 epochs in [\d.]+ s/);
      const again = await run(args);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /==> train features: 20 x 256 \(cached\)/);
      assert.match(again.stderr, /==> test features: 8 x 256 \(cached\)/);
      const log = (await Deno.readTextFile(`${dir}/probe/log.jsonl`)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assert.deepEqual(log.map((l) => l.step), [4, 8, 12]);
      const best = await readSafetensors(`${dir}/probe/best.safetensors`);
      assert.equal(best.metadata.probe, "linear (frozen backbone)");
      // the backbone stays the initial one: two probes with different learning rates share every backbone
      // tensor bit for bit and differ in the head
      const other = await run([...args, "--lr", "0.5", "--out", `${dir}/probe2`]);
      assert.equal(other.code, 0, other.stderr);
      const best2 = await readSafetensors(`${dir}/probe2/best.safetensors`);
      for (const [k, t] of best.tensors) {
        if (k.startsWith("head.")) assert.notDeepEqual(best2.tensors.get(k)!.data, t.data, k);
        else assert.deepEqual(best2.tensors.get(k)!.data, t.data, k);
      }
      const refused = await run([...args, "--resume"]);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /--freeze-backbone trains in seconds/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
