/**
 * The export-onnx CLI (official checkpoint to ONNX to the official logits; clear errors, nothing
 * half-written) and `predict --engine onnxruntime`.
 */
import assert from "node:assert/strict";
import { decodeOnnxModel } from "../../converters/onnx.ts";
import { readSafetensors, toFloat32, writeSafetensors } from "../../converters/safetensors.ts";
import { main as exportMain } from "../../export_onnx.ts";
import { main as predictMain } from "../../predict.ts";
import { fillInput } from "../../src/core/fill.ts";
import { OnnxModel } from "../../zoo/onnx_engine.ts";
import { ref } from "../support/fixtures.ts";
import { filledWeights, maxAbsDiff } from "../support/zoo.ts";

const TOL = 5e-5;

/** Runs a CLI's main with stdout/stderr captured. */
async function capture(main: (a: string[]) => Promise<number>, args: string[]) {
  const out: string[] = [], err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    const code = await main(args);
    return { code, stdout: out.join("\n"), stderr: err.join("\n") };
  } finally {
    [console.log, console.error] = [log, error];
  }
}

Deno.test("export-onnx CLI: the bundled official checkpoint to ONNX reproduces the official logits; errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/t7.onnx`;
    const r = await capture(exportMain, [ref("checkpoints/t2t_vit_7.pth.tar"), "-o", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /initializers match/);
    assert.match(r.stderr, /logits within/);
    const onnx = await OnnxModel.create(out);
    try {
      const want = (await readSafetensors(ref("outputs/t2t_vit_7.official-init.safetensors"))).tensors;
      const got = await onnx.run(fillInput(2, 224), 2, ["logits", "features"]);
      assert.ok(maxAbsDiff(got.logits, toFloat32(want.get("logits")!)) <= TOL);
      assert.ok(maxAbsDiff(got.features, toFloat32(want.get("features")!)) <= TOL);
    } finally {
      await onnx.dispose();
    }
    // from a converted safetensors file, at another size and f16, static batch
    const w = `${dir}/w.safetensors`;
    await writeSafetensors(w, filledWeights("t2t_vit_7"), { architecture: "t2t_vit_7" });
    const r2 = await capture(exportMain, [w, "--img-size", "160", "--dtype", "f16", "--batch", "2", "-q"]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(r2.stdout, `${dir}/w.onnx`);
    const m = decodeOnnxModel(await Deno.readFile(`${dir}/w.onnx`));
    assert.deepEqual(m.graph.inputs[0].dims, [2, 3, 160, 160]);

    // bad input: clear one-line errors, nothing written
    const cases: [string[], number, RegExp][] = [
      [["--model", "t2t_vit_99", "--fill-weights"], 2, /unknown architecture 't2t_vit_99'/],
      [["--model", "t2t_vit_7", "--fill-weights", "--img-size", "200"], 2, /multiple of 16/],
      [["--model", "t2t_vit_7", "--fill-weights", "--opset", "9"], 2, /--opset must be from 13 to 21/],
      [["--model", "t2t_vit_7"], 2, /no weights/],
      [[`${dir}/missing.safetensors`], 1, /missing\.safetensors/],
      [[ref("checkpoints/t2t_vit_7.pth.tar"), "-o", out], 1, /already exists/],
    ];
    for (const [args, code, re] of cases) {
      const c = await capture(exportMain, ["-q", ...args]);
      assert.equal(c.code, code, `${args.join(" ")}: ${c.stderr}`);
      assert.match(c.stderr, re);
      assert.equal(c.stderr.trim().split("\n").length, 1, c.stderr);
    }
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["t7.onnx", "w.onnx", "w.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("predict --engine onnxruntime gives the tfjs engine's answers", async () => {
  const image = ref("images/photo.jpg");
  const args = [image, "--model", "t2t_vit_7", "--fill-weights", "--json", "--topk", "5"];
  const a = await capture(predictMain, args);
  const b = await capture(predictMain, [...args, "--engine", "onnxruntime"]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const ja = JSON.parse(a.stdout), jb = JSON.parse(b.stdout);
  assert.equal(jb.backend, "onnxruntime");
  const pa = ja.results[0].predictions, pb = jb.results[0].predictions;
  assert.deepEqual(pb.map((p: { index: number }) => p.index), pa.map((p: { index: number }) => p.index));
  for (let i = 0; i < pa.length; i++) assert.ok(Math.abs(pa[i].probability - pb[i].probability) < 1e-6);
  const c = await capture(predictMain, [...args, "--engine", "onnxruntime", "--attention", "x.png"]);
  assert.equal(c.code, 2);
  assert.match(c.stderr, /--attention needs --engine tfjs/);
  const d = await capture(predictMain, [...args, "--engine", "torch"]);
  assert.equal(d.code, 2);
  assert.match(d.stderr, /--engine must be tfjs or onnxruntime/);
});
