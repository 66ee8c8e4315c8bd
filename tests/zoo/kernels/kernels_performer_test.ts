/**
 * The fused token performer (`T2tPerformer`, zoo/kernels/webgpu_performer.ts) on whatever WebGPU adapter is
 * here (in CI: Mesa's software llvmpipe, so sizes are tiny): against a float64 reference of
 * `Token_performer.single_attn` and against the layer's generic path at awkward sizes (odd widths, one
 * random feature, one token, several samples); then the reference's tiny performer model with the fused
 * kernels on against the official logits, and the kernel's gating (no fused kernel while a gradient tape
 * records). Every run is wrapped in a WebGPU validation error scope.
 *
 * Skipped when there is no WebGPU adapter, unless `T2T_REQUIRE_WEBGPU=1` (CI), where that is a failure.
 */
import assert from "node:assert/strict";
import { generic, maxAbs, values } from "../../support/kernels.ts";
import { readSafetensors, toFloat32 } from "../../../converters/safetensors.ts";
import { fillInput } from "../../../src/core/fill.ts";
import { configFromKwargs, createModel, tf } from "../../../zoo/mod.ts";
import { fusedPerformer } from "../../../zoo/kernels/fused.ts";
import { ParamStore } from "../../../zoo/layers/params.ts";
import { TokenPerformer } from "../../../zoo/layers/t2t.ts";
import { ref } from "../../support/fixtures.ts";
import { checked, read, startWebGpu, webgpuTestOptions } from "../../support/webgpu.ts";
import { installGradients } from "../../../zoo/backend/registry.ts";

installGradients(); // the tests below take gradients through the model

const opts = webgpuTestOptions("webgpu performer");
const start = startWebGpu;

/** float64 `single_attn` (before the projection) of `kqv (B T, 3 e)` with features `w (m, e)`. */
function performer64(kqv: Float32Array, w: Float32Array, batch: number, e: number, m: number): Float64Array {
  const rows = kqv.length / (3 * e), t = rows / batch;
  const prm = (r: number, part: number) => {
    const x = kqv.subarray(r * 3 * e + part * e, r * 3 * e + (part + 1) * e);
    const sq = x.reduce((s, v) => s + v * v, 0) / 2;
    return Array.from({ length: m }, (_, j) => {
      let d = 0;
      for (let c = 0; c < e; c++) d += w[j * e + c] * x[c];
      return Math.exp(d - sq) / Math.sqrt(m);
    });
  };
  const out = new Float64Array(rows * e);
  for (let b = 0; b < batch; b++) {
    const ksum = new Float64Array(m), kptv = new Float64Array(e * m);
    for (let s = 0; s < t; s++) {
      const r = b * t + s, kp = prm(r, 0);
      for (let j = 0; j < m; j++) {
        ksum[j] += kp[j];
        for (let i = 0; i < e; i++) kptv[i * m + j] += kqv[r * 3 * e + 2 * e + i] * kp[j];
      }
    }
    for (let s = 0; s < t; s++) {
      const r = b * t + s, qp = prm(r, 1);
      const den = qp.reduce((a, q, j) => a + q * ksum[j], 0) + 1e-8;
      for (let i = 0; i < e; i++) {
        out[r * e + i] = qp.reduce((a, q, j) => a + q * kptv[i * m + j], 0) / den;
      }
    }
  }
  return out;
}

Deno.test({
  name: "webgpu fused performer matches float64 and the layer's generic path at awkward sizes",
  ...opts,
  fn: async () => {
    const device = await start();
    await checked(device, async () => {
      // [batch, tokens, dim, emb]: m = floor(emb / 2) random features (1 when emb is 3)
      for (
        const [batch, tokens, dim, emb] of [[1, 1, 4, 3], [2, 7, 9, 5], [3, 67, 12, 16], [1, 130, 27, 64]]
      ) {
        const m = Math.floor(emb / 2);
        const kqvv = values(batch * tokens * 3 * emb, batch + tokens).map((v) => v * 1.5);
        const kqv = tf.tensor2d(kqvv, [batch * tokens, 3 * emb]);
        const store = new ParamStore(7);
        const layer = new TokenPerformer(store, dim, emb);
        const wv = (await layer.w.data()) as Float32Array;
        const want = performer64(kqvv, wv, batch, emb, m);
        const got = await read(fusedPerformer(kqv, layer.w as tf.Tensor2D, batch, 1e-8)!);
        const scale = Math.max(1, ...want.map(Math.abs));
        const err64 = maxAbs(got, want) / scale;
        assert.ok(err64 <= 2e-5, `${batch}x${tokens}x${emb}: float64 relative error ${err64}`);
        // the whole layer, fused against generic (its input goes through norm1 and kqv first)
        const x = tf.tensor2d(values(batch * tokens * dim, 3 * tokens), [batch * tokens, dim]);
        const ctx = { training: false };
        const fused = await read(tf.tidy(() => layer.apply(x, batch, ctx)));
        const base = await read(generic(() => tf.tidy(() => layer.apply(x, batch, ctx))));
        const scaleL = Math.max(1, ...base.map(Math.abs));
        const errL = maxAbs(fused, base) / scaleL;
        assert.ok(errL <= 2e-5, `${batch}x${tokens}x${emb}: layer fused vs generic ${errL}`);
        tf.dispose([kqv, x]);
        layer.dispose();
        store.dispose();
      }
    });
  },
});

Deno.test({
  name: "webgpu fused performer steps aside while a gradient tape records",
  ...opts,
  fn: async () => {
    await start();
    const kqv = tf.tensor2d(values(4 * 6, 1), [4, 6]);
    const w = tf.tensor2d(values(2, 2), [1, 2]);
    let inside: tf.Tensor | undefined = tf.zeros([1]);
    tf.grad((a: tf.Tensor) => {
      inside = fusedPerformer(kqv, w, 1, 1e-8);
      return tf.sum(a);
    })(tf.ones([2])).dispose();
    assert.equal(inside, undefined);
    const out = fusedPerformer(kqv, w, 1, 1e-8);
    assert.ok(out);
    tf.dispose([out, kqv, w]);
  },
});

Deno.test({
  name: "webgpu with the fused performer: the reference's tiny performer model matches the official logits",
  ...opts,
  fn: async () => {
    const device = await start();
    const st = await readSafetensors(ref("outputs/tiny.safetensors"));
    const config = configFromKwargs(JSON.parse(st.metadata.config));
    const model = await createModel(config, { weights: ref("checkpoints/tiny-state-dict.pth") });
    const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
    try {
      let names: string[] = [];
      const logits = await checked(device, async () => {
        let out: tf.Tensor | undefined;
        const info = await tf.profile(() => {
          out = model.forward(x);
          return out;
        });
        names = info.kernels.map((k) => k.name);
        return await read(out!);
      });
      // both T2T layers of the tiny model are performers, and both ran the fused kernel
      assert.equal(names.filter((n) => n === "T2tPerformer").length, 2, names.join(","));
      const before = tf.memory().numTensors;
      await read(model.forward(x));
      const err = maxAbs(logits, toFloat32(st.tensors.get("logits")!));
      console.log(`tiny logits on webgpu with the fused performer: max error ${err.toExponential(2)}`);
      assert.ok(err <= 2e-4, `tiny logits differ by ${err}`);
      assert.equal(tf.memory().numTensors, before);
    } finally {
      x.dispose();
      model.dispose();
    }
  },
});
