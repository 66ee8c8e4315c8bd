/**
 * The wasm backward kernels (zoo/kernels/wasm_backward.ts): with the training patches installed, the fused
 * GELU, LayerNorm, attention and soft split run under a gradient tape, and their gradients equal those of the
 * generic tfjs path the layers take without them, at small shapes (odd widths: the vector tails) and at the
 * full-size shapes of t2t_vit_7/14 (197 tokens, 4-6 heads of 64, several query chunks for a long sequence).
 * The whole model's parameter gradients agree too, and a step leaves no tensor behind.
 */
import assert from "node:assert/strict";
import { generic, values } from "../../support/kernels.ts";
import { createModel, setBackend, tf } from "../../../zoo/mod.ts";
import { fusedAttention, fusedGelu, fusedLayerNorm, fusedUnfold } from "../../../zoo/kernels/fused.ts";
import { gemmSupported } from "../../../zoo/kernels/wasm_gemm.ts";
import { attentionCore, gelu, layerNorm } from "../../../zoo/layers/ops.ts";
import { mergeHeads, splitFused } from "../../../zoo/layers/attention.ts";
import { SoftSplit } from "../../../zoo/layers/soft_split.ts";
import { installTrainingKernels } from "../../../zoo/backend/registry.ts";
import { biasGrad } from "../../../zoo/kernels/wasm_backward.ts";
import { disposeGradients, lossAndGradients } from "../../../src/train/mod.ts";
import { relErr } from "../../support/grad_parity.ts";
import { TINY_CONFIG } from "../../support/fixtures.ts";

await setBackend("wasm");
installTrainingKernels("wasm");
const relaxed = gemmSupported();
if (!relaxed) {
  console.log("this runtime has no WebAssembly relaxed SIMD: the wasm backward tests are skipped");
}
const opts = { ignore: !relaxed };

/** Gradients of `sum(f(xs) * w)` with respect to `xs`, with the fused path (`fused`) or the generic one. */
function gradsOf(
  f: (xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  w: tf.Tensor,
  fused: boolean,
): Float32Array[] {
  const run = () => {
    const gs = tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(f(a), w)))(xs);
    const out = gs.map((g) => g.dataSync() as Float32Array);
    tf.dispose(gs);
    return out;
  };
  return fused ? run() : generic(run);
}

function tensor(shape: number[], seed: number, scale = 1): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(values(n, seed).map((v) => v * scale), shape);
}

function check(name: string, a: Float32Array[], b: Float32Array[], tol: number): void {
  assert.equal(a.length, b.length);
  a.forEach((g, i) => {
    const e = relErr(g, b[i]);
    assert.ok(e < tol, `${name}, input ${i}: relative error ${e}`);
  });
}

Deno.test({
  name: "wasm backward: GELU's gradient equals the generic one",
  ...opts,
  fn: () => {
    for (const shape of [[7], [3, 5], [197, 512], [3 * 197, 512]]) {
      const x = tensor(shape, 1, 4), w = tensor(shape, 2);
      let used = false;
      const fusedG = gradsOf(
        ([v]) => {
          const y = fusedGelu(v);
          used = y !== undefined;
          return y ?? gelu(v);
        },
        [x],
        w,
        true,
      );
      assert.ok(used, "the fused GELU runs under the tape");
      const genericG = gradsOf(([v]) => gelu(v), [x], w, false);
      check(`gelu ${shape}`, fusedG, genericG, 2e-6);
      tf.dispose([x, w]);
    }
  },
});

Deno.test({
  name: "wasm backward: LayerNorm's gradients (x, weight, bias) equal the generic ones",
  ...opts,
  fn: () => {
    for (const [rows, cols] of [[1, 5], [5, 7], [197, 256], [591, 147], [394, 576]]) {
      const x = tensor([rows, cols], 3, 2), w = tensor([rows, cols], 4);
      const g = tf.add(tensor([cols], 5, 0.1), 1), b = tensor([cols], 6, 0.1);
      let used = false;
      const fusedG = gradsOf(
        ([a, gg, bb]) => {
          const y = fusedLayerNorm(a, gg, bb, 1e-5);
          used = y !== undefined;
          return y!;
        },
        [x, g, b],
        w,
        true,
      );
      assert.ok(used, "the fused LayerNorm runs under the tape");
      const genericG = gradsOf(([a, gg, bb]) => layerNorm(a, gg, bb, 1e-5), [x, g, b], w, false);
      check(`layerNorm ${rows}x${cols}`, fusedG, genericG, 2e-5);
      tf.dispose([x, w, g, b]);
    }
  },
});

Deno.test({
  name: "wasm backward: multi-head attention's gradient equals the generic one (197 tokens; chunked 1100)",
  ...opts,
  fn: () => {
    for (
      const [batch, tokens, heads, d] of [
        [1, 5, 1, 4],
        [2, 7, 2, 12],
        [3, 197, 4, 64],
        [2, 197, 6, 64],
        [1, 1100, 1, 16],
      ]
    ) {
      const c = heads * d, scale = 1 / Math.sqrt(d);
      const qkv = tensor([batch * tokens, 3 * c], 7, 2), w = tensor([batch * tokens, c], 8);
      let used = false;
      const fusedG = gradsOf(
        ([a]) => {
          const y = fusedAttention(a as tf.Tensor2D, batch, heads, scale);
          used = y !== undefined;
          return y!;
        },
        [qkv],
        w,
        true,
      );
      assert.ok(used, "the fused attention runs under the tape");
      const genericG = gradsOf(
        ([a]) => {
          const [q, k, v] = splitFused(a, batch, tokens, 3, heads);
          const ctx = { training: false };
          const { out } = attentionCore(q, k, v, scale, { scaleFirst: false, attnDrop: 0, ctx });
          return mergeHeads(out, batch, heads);
        },
        [qkv],
        w,
        false,
      );
      check(`attention ${batch}x${tokens}x${heads}x${d}`, fusedG, genericG, 2e-5);
      tf.dispose([qkv, w]);
    }
  },
});

Deno.test({
  name: "wasm backward: the soft split (unfold) and its gradient (fold) equal the generic ones",
  ...opts,
  fn: () => {
    for (
      const [shape, k, s, p] of [
        [[2, 9, 7, 3], 3, 2, 1],
        [[2, 32, 32, 3], 7, 4, 2],
        [[3, 28, 28, 64], 3, 2, 1],
      ] as [number[], number, number, number][]
    ) {
      const x = tensor(shape, 9);
      const split = new SoftSplit(k, s, p, shape[3]);
      const want = generic(() => split.apply(x as tf.Tensor4D));
      const got = tf.tidy(() => fusedUnfold(x as tf.Tensor4D, k, s, p)!);
      assert.deepEqual(got.shape, want.shape);
      assert.deepEqual(got.dataSync(), want.dataSync(), `unfold ${shape} ${k}/${s}/${p}`);
      const w = tensor(want.shape, 10);
      let used = false;
      const fusedG = gradsOf(
        ([a]) => {
          const y = fusedUnfold(a as tf.Tensor4D, k, s, p);
          used = y !== undefined;
          return y!;
        },
        [x],
        w,
        true,
      );
      assert.ok(used, "the fused unfold runs under the tape");
      const genericG = gradsOf(([a]) => split.apply(a as tf.Tensor4D), [x], w, false);
      check(`fold ${shape}`, fusedG, genericG, 1e-6);
      split.dispose();
      tf.dispose([x, want, got, w]);
    }
  },
});

Deno.test({
  name: "wasm backward: a model's parameter gradients equal the generic path's, and nothing leaks",
  ...opts,
  fn: async () => {
    for (const tokensType of ["performer", "transformer"] as const) {
      const model = await createModel({ ...TINY_CONFIG, tokensType, numClasses: 10 });
      const x = tensor([2, 3, TINY_CONFIG.imgSize, TINY_CONFIG.imgSize], 11) as tf.Tensor4D;
      const grads = (fused: boolean) => {
        const run = () => {
          const r = lossAndGradients(model, x, [3, 7]);
          const out = new Map([...r.grads].map(([k, g]) => [k, g.dataSync() as Float32Array]));
          r.loss.dispose();
          r.logits.dispose();
          disposeGradients(r.grads);
          return out;
        };
        return fused ? run() : generic(run);
      };
      const want = grads(false);
      const before = tf.memory().numTensors;
      const got = grads(true);
      assert.equal(tf.memory().numTensors, before, "a step leaves no tensor behind");
      assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
      for (const [k, g] of got) {
        const e = relErr(g, want.get(k)!);
        assert.ok(e < 1e-4, `${tokensType}: ${k} relative error ${e}`);
      }
      x.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name: "wasm backward: transposed-left products on the GEMM and the bias gradient equal the generic ones",
  ...opts,
  fn: () => {
    for (
      const [batch, k, m, n] of [[1, 5, 3, 7], [1, 591, 768, 256], [3, 197, 64, 197], [2, 9, 13, 17]]
    ) {
      const a = tensor(batch === 1 ? [k, m] : [batch, k, m], 12);
      const b = tensor(batch === 1 ? [k, n] : [batch, k, n], 13);
      const got = tf.matMul(a, b, true, false);
      const want = generic(() => tf.matMul(a, b, true, false));
      assert.deepEqual(got.shape, want.shape);
      const e = relErr(got.dataSync(), want.dataSync());
      assert.ok(e < 1e-6, `transposed-left ${batch}x${k}x${m}x${n}: ${e}`);
      tf.dispose([a, b, got, want]);
    }
    for (const shape of [[7], [5, 3], [591, 512], [3, 197, 147]]) {
      const dy = tensor(shape, 14);
      const got = biasGrad(dy);
      const want = generic(() => biasGrad(dy));
      assert.deepEqual(got.shape, [shape[shape.length - 1]]);
      assert.ok(relErr(got.dataSync(), want.dataSync()) < 1e-6, `bias gradient ${shape}`);
      tf.dispose([dy, got, want]);
    }
  },
});
