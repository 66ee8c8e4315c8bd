/**
 * ONNX export and the ONNX Runtime engine: files round-trip through our decoder with the right initializers
 * and metadata; the engine keeps the tfjs model's contract (node and web runtimes); bad options get clear
 * errors. (Parity of every variant: tests/parity/onnx_parity_test.ts; the CLIs: tests/cli/export_onnx_test.ts.)
 */
import assert from "node:assert/strict";
import { f32BitsToF16 } from "../../src/core/dtype.ts";
import {
  decodeOnnxModel,
  encodeOnnxModel,
  OnnxError,
  OnnxGraphBuilder,
  readOnnxMetadata,
} from "../../converters/onnx.ts";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { ModelError } from "../../src/core/errors.ts";
import { fillInput } from "../../src/core/fill.ts";
import { createModel, setBackend, tf } from "../../zoo/mod.ts";
import { exportOnnx } from "../../zoo/onnx_export.ts";
import { loadOnnxRuntime, OnnxModel } from "../../zoo/onnx_engine.ts";
import { ref } from "../support/fixtures.ts";
import { filledModel, maxAbsDiff } from "../support/zoo.ts";

const TOL = 5e-5;

Deno.test("ONNX file round-trips through our decoder: initializers, metadata, inputs, outputs, f16", async () => {
  await setBackend("wasm");
  const model = await filledModel("t2t_vit_7");
  try {
    const sd = model.stateDict();
    for (const dtype of ["f32", "f16"] as const) {
      const bytes = exportOnnx(model, { dtype });
      const m = decodeOnnxModel(bytes);
      assert.equal(m.opsets.get(""), 17);
      assert.equal(m.irVersion, 8);
      assert.equal(m.producerName, "t2t-vit");
      // the initializers are exactly the state_dict, under PyTorch's names, in its order
      assert.deepEqual(m.graph.initializers.map((t) => t.name), [...sd.keys()]);
      for (const init of m.graph.initializers) {
        const t = sd.get(init.name)!;
        assert.deepEqual(init.dims, t.shape, init.name);
        const v = t.dataSync() as Float32Array;
        if (dtype === "f32") {
          assert.equal(init.dataType, 1);
          assert.deepEqual(init.data, new Uint8Array(v.buffer, v.byteOffset, v.byteLength), init.name);
        } else {
          assert.equal(init.dataType, 10);
          const bits = new Uint16Array(init.data.slice().buffer);
          const u32 = new Uint32Array(v.buffer, v.byteOffset, v.length);
          for (let i = 0; i < v.length; i++) {
            assert.equal(bits[i], f32BitsToF16(u32[i]), `${init.name}[${i}]`);
          }
        }
      }
      assert.deepEqual(m.graph.inputs, [{ name: "input", dtype: "float32", dims: ["batch", 3, 224, 224] }]);
      assert.deepEqual(m.graph.outputs, [
        { name: "logits", dtype: "float32", dims: ["batch", 1000] },
        { name: "features", dtype: "float32", dims: ["batch", 256] },
      ]);
      const meta = Object.fromEntries(m.metadata);
      assert.equal(meta.architecture, "t2t_vit_7");
      assert.equal(meta.img_size, "224");
      assert.equal(meta.num_classes, "1000");
      assert.equal(meta.weights_dtype, dtype);
      assert.equal(JSON.parse(meta.config).embed_dim, 256);
      const pre = JSON.parse(meta.preprocessing);
      assert.deepEqual(pre.mean, [0.485, 0.456, 0.406]);
      assert.equal(pre.crop_pct, 0.9);
      assert.equal(pre.interpolation, "bicubic");
      assert.deepEqual(readOnnxMetadata(bytes), m.metadata);
      // standard operators only, the ones the README names
      const ops = new Set(m.graph.nodes.map((n) => n.opType));
      for (const op of ["Conv", "LayerNormalization", "Erf", "Softmax", "Exp", "MatMul"]) {
        assert.ok(ops.has(op), op);
      }
      assert.ok(m.graph.nodes.every((n) => n.domain === ""));
      // negative int attributes survive (LayerNormalization axis -1)
      const ln = m.graph.nodes.find((n) => n.opType === "LayerNormalization")!;
      assert.equal(ln.attributes.find((a) => a.name === "axis")!.value, -1);
      assert.ok(Math.abs((ln.attributes.find((a) => a.name === "epsilon")!.value as number) - 1e-5) < 1e-12);
    }
    const fixed = decodeOnnxModel(exportOnnx(model, { dynamicBatch: false, batchSize: 4, opset: 13 }));
    assert.deepEqual(fixed.graph.inputs[0].dims, [4, 3, 224, 224]);
    assert.equal(fixed.irVersion, 7);
    assert.ok(!fixed.graph.nodes.some((n) => n.opType === "LayerNormalization"));
  } finally {
    model.dispose();
  }
});

Deno.test("ONNX engine: forward/forwardFeatures contract, f16 weights, no tfjs leaks, bad inputs", async () => {
  await setBackend("wasm");
  const want = (await readSafetensors(ref("outputs/t2t_vit_7.safetensors"))).tensors;
  const model = await filledModel("t2t_vit_7");
  const f16 = await OnnxModel.create(model, { export: { dtype: "f16" } });
  const onnx = await OnnxModel.create(exportOnnx(model));
  const x = tf.tensor4d(fillInput(2, 224), [2, 3, 224, 224]);
  try {
    assert.equal(onnx.name, "t2t_vit_7");
    assert.equal(onnx.runtime, "node");
    assert.deepEqual(onnx.pretrainedCfg.inputSize, [3, 224, 224]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      const l = await onnx.forward(x);
      const f = await onnx.forwardFeatures(x);
      assert.deepEqual(l.shape, [2, 1000]);
      assert.deepEqual(f.shape, [2, 256]);
      assert.ok(maxAbsDiff(await l.data(), toFloat32(want.get("logits")!)) <= TOL);
      assert.ok(maxAbsDiff(await f.data(), toFloat32(want.get("features")!)) <= TOL);
      tf.dispose([l, f]);
    }
    assert.equal(tf.memory().numTensors, before);
    // the browser package, on its WebAssembly build (the same file a browser runs)
    // (the module passed in, as a bundled web app would pass its own import)
    const web = await OnnxModel.create(exportOnnx(model), {
      runtime: "web",
      ort: await loadOnnxRuntime("web"),
    });
    try {
      assert.equal(web.runtime, "web");
      const got = await web.run(fillInput(2, 224), 2, ["logits"]);
      const e = maxAbsDiff(got.logits, toFloat32(want.get("logits")!));
      assert.ok(e <= TOL, `onnxruntime-web logits ${e}`);
    } finally {
      await web.dispose();
    }
    // float16 storage: rounding the weights moves the logits by ~1e-3 here, computation stays float32
    const l16 = await f16.forward(x);
    const e16 = maxAbsDiff(await l16.data(), toFloat32(want.get("logits")!));
    l16.dispose();
    assert.ok(e16 > 0 && e16 < 2e-2, `f16 logits ${e16}`);

    const bad = tf.zeros([1, 3, 160, 160]) as tf.Tensor4D;
    await assert.rejects(
      onnx.forward(bad),
      (e: unknown) => e instanceof ModelError && /\(B, 3, 224, 224\)/.test(e.message),
    );
    bad.dispose();
    await assert.rejects(onnx.run(new Float32Array(10), 1), ModelError);
  } finally {
    x.dispose();
    model.dispose();
    await onnx.dispose();
    await f16.dispose();
  }
  assert.ok(onnx.isDisposed);
  const y = tf.zeros([1, 3, 224, 224]) as tf.Tensor4D;
  await assert.rejects(
    onnx.forward(y),
    (e: unknown) => e instanceof ModelError && /disposed/.test(e.message),
  );
  y.dispose();
  // not ONNX, or ONNX that is not a T2T-ViT export
  await assert.rejects(OnnxModel.create(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0x0f])), OnnxError);
  const g = new OnnxGraphBuilder("other");
  g.input("x", "float32", [1]);
  g.node("Identity", ["x"], { outputs: ["y"] });
  g.output("y", "float32", [1]);
  await assert.rejects(
    OnnxModel.create(encodeOnnxModel(g, { opset: 17 })),
    (e: unknown) =>
      e instanceof OnnxError && /not a T2T-ViT export: metadata 'img_size' is missing/.test(e.message),
  );
  await assert.rejects(
    OnnxModel.create("/nonexistent/model.onnx"),
    (e: unknown) => e instanceof ModelError && /nonexistent/.test(e.message),
  );
});

Deno.test("exportOnnx: bad options and sizes get clear errors", async () => {
  await setBackend("wasm");
  const model = await createModel("t2t_vit_7", { imgSize: 64, numClasses: 0 });
  try {
    assert.throws(
      () => exportOnnx(model, { opset: 12 }),
      (e: unknown) => e instanceof ModelError && /opset must be/.test(e.message),
    );
    assert.throws(() => exportOnnx(model, { dtype: "bf16" as "f16" }), /dtype must be/);
    assert.throws(() => exportOnnx(model, { dynamicBatch: false, batchSize: 0 }), /batchSize/);
    // another size and no head: logits are the features
    const m = decodeOnnxModel(exportOnnx(model));
    assert.deepEqual(m.graph.inputs[0].dims, ["batch", 3, 64, 64]);
    assert.deepEqual(m.graph.outputs[0].dims, ["batch", 256]);
    assert.equal(m.metadata.get("num_classes"), "0");
  } finally {
    model.dispose();
  }
  assert.throws(() => exportOnnx(model), /disposed/);
  await assert.rejects(createModel("t2t_vit_7", { imgSize: 200 }), /multiple of 16/);
  await assert.rejects(createModel("t2t_vit_99" as "t2t_vit_7"), /unknown model 't2t_vit_99'/);
});

Deno.test("exportOnnx: the last block of every block kind computes its class tokens alone (its MLP sees one token)", async () => {
  await setBackend("wasm");
  for (const name of ["t2t_vit_7", "t2t_vit_14_se", "t2t_vit_16_ghost", "t2t_vit_dense"] as const) {
    const model = await createModel(name, { imgSize: 64 });
    try {
      const last = Math.max(
        ...[...model.stateDict().keys()].flatMap((k) =>
          /^blocks\.(\d+)\.mlp\.fc1\.weight$/.exec(k)?.[1] ?? []
        )
          .map(Number),
      );
      const g = decodeOnnxModel(exportOnnx(model)).graph;
      const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
      for (const block of [last - 1, last]) {
        // fc1's product: MatMul(norm2(y), W^T), with y the block's input plus its attention output
        const wT = g.nodes.find((n) =>
          n.opType === "Transpose" && n.inputs[0] === `blocks.${block}.mlp.fc1.weight`
        );
        const mm = g.nodes.find((n) => n.opType === "MatMul" && n.inputs[1] === wT?.outputs[0]);
        assert.ok(mm, `${name}: blocks.${block}.mlp.fc1's product`);
        const norm2 = producer.get(mm.inputs[0]);
        assert.equal(norm2?.opType, "LayerNormalization", `${name}: blocks.${block}.norm2`);
        const y = producer.get(norm2.inputs[0]);
        assert.equal(y?.opType, "Add", `${name}: blocks.${block}'s residual`);
        // the last block's residual is the class tokens of its input (a slice of token 0); the others', all
        const fromSlice = y.inputs.some((i) => producer.get(i)?.opType === "Slice");
        assert.equal(
          fromSlice,
          block === last,
          `${name}: blocks.${block} computes ${fromSlice ? "one" : "every"} token`,
        );
      }
    } finally {
      model.dispose();
    }
  }
});
