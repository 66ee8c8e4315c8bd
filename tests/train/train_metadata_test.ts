/**
 * What training writes loads everywhere: the transfer script trains one step on a tiny CIFAR-format dataset,
 * then its `best`/`last` weights load through `loadModel` and `predict --weights` without naming the model,
 * and go back to PyTorch through the `.pth` export. Older files that say `arch` instead of `architecture`
 * still load.
 */
import assert from "node:assert/strict";
import { convertCheckpoint, exportTorchCheckpoint } from "../../converters/convert.ts";
import { architectureOf } from "../../zoo/metadata.ts";
import { readSafetensors, serializeSafetensors } from "../../converters/safetensors.ts";
import { writeCifar } from "../../src/data/mod.ts";
import { describeWeights, loadModel, setBackend, tf } from "../../zoo/mod.ts";
import { ref } from "../support/fixtures.ts";

const SCRIPT = new URL("../../examples/transfer_cifar10.ts", import.meta.url).pathname;
const PREDICT = new URL("../../predict.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("architectureOf: `architecture`, else the older `arch`; nothing inherited", () => {
  assert.equal(architectureOf({ architecture: "t2t_vit_14", arch: "t2t_vit_7" }), "t2t_vit_14");
  assert.equal(architectureOf({ arch: "t2t_vit_7" }), "t2t_vit_7");
  assert.equal(architectureOf({}), undefined);
  assert.equal(architectureOf(JSON.parse('{"__proto__": {"architecture": "x"}}')), undefined);
});

Deno.test({
  name: "training output loads through loadModel, predict and the .pth export without naming the model",
  sanitizeResources: false,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "t2t-trainmeta-" });
    try {
      // 10 train images (one step of 10), 4 test images, 3 classes of coloured noise
      const data = `${dir}/cifar-10-batches-bin`;
      Deno.mkdirSync(data);
      for (let b = 1; b <= 6; b++) {
        const n = b === 6 ? 4 : 2;
        const images = new Uint8Array(n * 3072), labels = new Uint8Array(n);
        for (let i = 0; i < n; i++) {
          labels[i] = (b + i) % 3;
          for (let p = 0; p < 3072; p++) {
            images[i * 3072 + p] = Math.floor(p / 1024) === labels[i] ? 200 : (p * 7 + b) & 63;
          }
        }
        await writeCifar(`${data}/${b === 6 ? "test_batch" : `data_batch_${b}`}.bin`, images, labels);
      }
      const out = `${dir}/run`;
      const r = await run([
        SCRIPT,
        "--data",
        dir,
        "--any-count",
        "--model",
        "t2t_vit_7",
        "--img-size",
        "32",
        "--b",
        "10",
        "--epochs",
        "1",
        "--backend",
        "wasm",
        "--out",
        out,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const files = ["last.safetensors", ...(exists(`${out}/best.safetensors`) ? ["best.safetensors"] : [])];
      await setBackend("wasm");
      for (const f of files) {
        const st = await readSafetensors(`${out}/${f}`);
        assert.equal(st.metadata.architecture, "t2t_vit_7", f);
        assert.equal(st.metadata.arch, undefined, `${f}: one vocabulary`);
        // loadModel: by the metadata alone, at the trained size and class count
        const m = await loadModel(`${out}/${f}`);
        try {
          assert.equal(m.name, "t2t_vit_7");
          assert.equal(m.config.numClasses, 10);
          assert.equal(m.config.imgSize, 32);
          const y = tf.tidy(() => m.forward(tf.zeros([1, 3, 32, 32])));
          assert.deepEqual(y.shape, [1, 10]);
          y.dispose();
        } finally {
          m.dispose();
        }
      }
      // predict --weights, no --model
      const p = await run([
        PREDICT,
        ref("images/cifar32.png"),
        "--weights",
        `${out}/last.safetensors`,
        "--topk",
        "3",
        "--backend",
        "wasm",
      ]);
      assert.equal(p.code, 0, p.stderr);
      // three CIFAR-10 classes: the 10-class head of the trained model, found without --model
      assert.match(p.stdout, /cifar32\.png:\n(\s+[\d.]+%\s+[a-z]+\s+\[\d\]\n){3}$/);
      // the .pth export, read back by the converter: same tensors, architecture recognised from the weights
      const e = await exportTorchCheckpoint(`${out}/last.safetensors`, { output: `${dir}/last.pth` });
      assert.equal(e.metadata.architecture, "t2t_vit_7");
      const back = await convertCheckpoint(`${dir}/last.pth`, {
        output: `${dir}/back.safetensors`,
        describe: describeWeights,
      });
      assert.equal(back.architecture.name, "t2t_vit_7");
      assert.equal(back.architecture.numClasses, 10);
      assert.equal(back.architecture.imgSize, 32);
      const a = (await readSafetensors(`${out}/last.safetensors`)).tensors;
      const b = (await readSafetensors(`${dir}/back.safetensors`)).tensors;
      assert.deepEqual([...b.keys()], [...a.keys()]);
      for (const [k, t] of a) assert.deepEqual(b.get(k)!.data, t.data, k);
      // a file from before the vocabulary was settled: `arch` only
      const old = await readSafetensors(`${out}/last.safetensors`);
      const bytes = serializeSafetensors(old.tensors, { format: "pt", arch: "t2t_vit_7", epoch: "1" });
      const m = await loadModel(bytes);
      assert.equal(m.name, "t2t_vit_7");
      m.dispose();
      Deno.writeFileSync(`${dir}/old.safetensors`, bytes);
      const p2 = await run([
        PREDICT,
        ref("images/cifar32.png"),
        "--weights",
        `${dir}/old.safetensors`,
        "--backend",
        "wasm",
      ]);
      assert.equal(p2.code, 0, p2.stderr);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

function exists(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}
