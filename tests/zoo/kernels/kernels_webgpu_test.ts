/**
 * Our WebGPU kernels (zoo/kernels/webgpu_kernels.ts) on whatever adapter is here (in CI: Mesa's software
 * llvmpipe, so sizes are tiny): LayerNorm, GELU, scaled softmax, flash-style attention and the soft-split
 * gather, each against a float64 reference and the generic tfjs ops; the gather against the official
 * `soft_split0_head`; and the tiny model of the reference with every fused kernel on against the official
 * logits. Every run is wrapped in a WebGPU validation error scope, so a shader that fails to compile fails the
 * test instead of silently producing zeros.
 *
 * Skipped when there is no WebGPU adapter, unless `T2T_REQUIRE_WEBGPU=1` (CI), where that is a failure.
 */
import assert from "node:assert/strict";
import { generic, maxAbs, values } from "../../support/kernels.ts";
import { readSafetensors, toFloat32 } from "../../../converters/safetensors.ts";
import { fillInput } from "../../../src/core/fill.ts";
import { configFromKwargs, createModel, tf } from "../../../zoo/mod.ts";
import {
  fusedAttention,
  fusedGelu,
  fusedLayerNorm,
  fusedSoftmax,
  fusedUnfold,
} from "../../../zoo/kernels/fused.ts";
import { attentionCore, gelu, layerNorm } from "../../../zoo/layers/ops.ts";
import { mergeHeads, splitFused } from "../../../zoo/layers/attention.ts";
import { SoftSplit } from "../../../zoo/layers/soft_split.ts";
import { ref } from "../../support/fixtures.ts";
import { checked, read, startWebGpu, webgpuTestOptions } from "../../support/webgpu.ts";

const opts = webgpuTestOptions("webgpu kernel");
const start = startWebGpu;

Deno.test({
  name: "webgpu fused LayerNorm, GELU and softmax match float64 and the generic ops",
  ...opts,
  fn: async () => {
    const device = await start();
    await checked(device, async () => {
      for (const cols of [1, 5, 64, 147]) {
        const rows = 3;
        const xv = values(rows * cols, cols).map((v) => v * 5);
        const gv = values(cols, 2).map((v) => 1 + v / 4), bv = values(cols, 3);
        const x = tf.tensor2d(xv, [rows, cols]), g = tf.tensor1d(gv), b = tf.tensor1d(bv);
        const ln64: number[] = [], sm64: number[] = [];
        for (let r = 0; r < rows; r++) {
          const row = Array.from(xv.subarray(r * cols, (r + 1) * cols));
          const mean = row.reduce((s, v) => s + v, 0) / cols;
          const v = row.reduce((s, e) => s + (e - mean) ** 2, 0) / cols;
          row.forEach((e, c) => ln64.push(((e - mean) / Math.sqrt(v + 1e-5)) * gv[c] + bv[c]));
          const mx = Math.max(...row);
          const ex = row.map((e) => Math.exp(0.7 * (e - mx)));
          const s = ex.reduce((a, e) => a + e, 0);
          ex.forEach((e) => sm64.push(e / s));
        }
        const ln = await read(fusedLayerNorm(x, g, b, 1e-5)!);
        assert.ok(maxAbs(ln, ln64) < 2e-5, `layerNorm ${cols}: ${maxAbs(ln, ln64)}`);
        assert.ok(maxAbs(ln, await read(generic(() => layerNorm(x, g, b, 1e-5)))) < 2e-5);
        const sm = await read(fusedSoftmax(x, 0.7)!);
        assert.ok(maxAbs(sm, sm64) < 2e-6, `softmax ${cols}: ${maxAbs(sm, sm64)}`);
        const ge = await read(fusedGelu(x)!);
        assert.ok(maxAbs(ge, await read(generic(() => gelu(x)))) < 2e-6, `gelu ${cols}`);
        // exact GELU in float64 through a high-accuracy erf
        const erf = (z: number) => {
          const t = 1 / (1 + 0.5 * Math.abs(z));
          const r = t * Math.exp(
            -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
                              t *
                                (0.27886807 +
                                  t *
                                    (-1.13520398 +
                                      t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
          );
          return z >= 0 ? 1 - r : r - 1;
        };
        const ge64 = Array.from(xv, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
        assert.ok(maxAbs(ge, ge64) < 2e-6, `gelu ${cols} vs float64: ${maxAbs(ge, ge64)}`);
        tf.dispose([x, g, b]);
      }
    });
  },
});

Deno.test({
  name: "webgpu fused attention matches the generic split/attention/merge path",
  ...opts,
  fn: async () => {
    const device = await start();
    await checked(device, async () => {
      // head sizes with vec4 rows (64, 12) and without (5); token counts across several key tiles
      for (const [batch, tokens, heads, d] of [[1, 70, 2, 64], [2, 9, 3, 12], [1, 3, 1, 5], [1, 1, 2, 8]]) {
        const qkv = tf.tensor2d(
          values(batch * tokens * 3 * heads * d, tokens * d),
          [batch * tokens, 3 * heads * d],
        );
        const scale = d ** -0.5;
        const fused = await read(fusedAttention(qkv, batch, heads, scale)!);
        const want = await read(generic(() =>
          tf.tidy(() => {
            const [q, k, v] = splitFused(qkv, batch, tokens, 3, heads);
            const ctx = { training: false };
            const { out } = attentionCore(q, k, v, scale, { scaleFirst: false, attnDrop: 0, ctx });
            return mergeHeads(out, batch, heads);
          })
        ));
        assert.ok(
          maxAbs(fused, want) < 2e-6,
          `attention ${batch}x${tokens}x${heads}x${d}: ${maxAbs(fused, want)}`,
        );
        qkv.dispose();
      }
    });
  },
});

Deno.test({
  name: "webgpu soft-split gather matches nn.Unfold (generic path and the official soft_split0_head)",
  ...opts,
  fn: async () => {
    const device = await start();
    await checked(device, async () => {
      const x = tf.tensor4d(values(2 * 11 * 9 * 4, 1), [2, 11, 9, 4]);
      for (const [k, s, p] of [[7, 4, 2], [3, 2, 1], [3, 1, 0]]) {
        const split = new SoftSplit(k, s, p, 4);
        const want = await read(generic(() => split.apply(x)));
        assert.equal(maxAbs(await read(fusedUnfold(x, k, s, p)!), want), 0, `unfold ${k}/${s}/${p}`);
        split.dispose();
      }
      x.dispose();
      // the first soft split of the reference input, against the official activations
      const st = await readSafetensors(ref("outputs/t2t_vit_7.safetensors"));
      const want = toFloat32(st.tensors.get("soft_split0_head")!); // (8, 147): sample 0, first 8 tokens
      const img = tf.tidy(() => tf.transpose(tf.tensor4d(fillInput(1, 224), [1, 3, 224, 224]), [0, 2, 3, 1]));
      const got = await read(
        tf.tidy(() =>
          tf.slice(tf.reshape(fusedUnfold(img as tf.Tensor4D, 7, 4, 2)!, [1, -1, 147]), [0, 0, 0], [
            1,
            8,
            147,
          ])
        ),
      );
      img.dispose();
      assert.ok(maxAbs(got, want) <= 1e-6, `soft_split0_head: ${maxAbs(got, want)}`);
    });
  },
});

Deno.test({
  name: "webgpu with every fused kernel: the reference's tiny model matches the official logits",
  ...opts,
  fn: async () => {
    const device = await start();
    const st = await readSafetensors(ref("outputs/tiny.safetensors"));
    const model = await createModel(configFromKwargs(JSON.parse(st.metadata.config)), {
      weights: ref("checkpoints/tiny-state-dict.pth"),
    });
    const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
    try {
      const logits = await checked(device, async () => await read(model.forward(x)));
      // the first forward creates the model's cached tensors; later ones leave the count flat
      const before = tf.memory().numTensors;
      await read(model.forward(x));
      const err = maxAbs(logits, toFloat32(st.tensors.get("logits")!));
      console.log(`tiny logits on webgpu with fused kernels: max error ${err.toExponential(2)}`);
      assert.ok(err <= 2e-4, `tiny logits differ by ${err}`);
      assert.equal(tf.memory().numTensors, before);
    } finally {
      x.dispose();
      model.dispose();
    }
  },
});
