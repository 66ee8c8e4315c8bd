/**
 * On every backend (wasm, cpu, and webgpu where an adapter exists), with a small configuration: no tensor
 * leaks over 20 forward passes of every kind, attention maps, training mode (dropout, drop-path), gradients
 * of every trainable parameter (the same on every backend: one test computes and compares them all), and the
 * exact-erf GELU.
 */
import assert from "node:assert/strict";
import { fillInput } from "../../src/core/fill.ts";
import { gelu } from "../../zoo/layers/ops.ts";
import { Block, DenseBlock } from "../../zoo/layers/blocks.ts";
import { traceForward } from "../../zoo/model.ts";
import { type BackendName, createModel, setBackend, type T2tVit, tf } from "../../zoo/mod.ts";
import { maxAbsDiff } from "../support/zoo.ts";
import { installGradients } from "../../zoo/backend/registry.ts";
import { TINY_CONFIG } from "../support/fixtures.ts";

installGradients(); // the tests below take gradients through the model

const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const hasWebGpu = gpu ? (await gpu.requestAdapter()) !== null : false;
const BACKENDS: BackendName[] = hasWebGpu ? ["wasm", "cpu", "webgpu"] : ["wasm", "cpu"];
const opts = { sanitizeOps: false, sanitizeResources: false };

/** A small model with every kind of layer: performer T2T, and SE blocks, so the SE path is covered too. */
const SMALL = TINY_CONFIG;

function erf64(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse here: series for |x| < 3, continued fraction beyond
  const ax = Math.abs(x);
  let r: number;
  if (ax < 3) {
    let term = ax, sum = ax;
    for (let k = 1; Math.abs(term) > 1e-17; k++) {
      term *= (-ax * ax) / k;
      sum += term / (2 * k + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = 0;
    for (let k = 60; k >= 1; k--) f = k / 2 / (ax + f);
    r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  }
  return x < 0 ? -r : r;
}

async function withModel(
  backend: BackendName,
  extra: Record<string, unknown>,
  fn: (m: T2tVit) => Promise<void>,
) {
  await setBackend(backend);
  const m = await createModel({ ...SMALL, ...extra }, { seed: 7 });
  try {
    await fn(m);
  } finally {
    m.dispose();
  }
}

for (const backend of BACKENDS) {
  Deno.test({
    name: `${backend}: 20 forwards of every kind leave tf.memory().numTensors unchanged`,
    ...opts,
    fn: () =>
      withModel(backend, { blockType: "se", dropRate: 0.1, dropPathRate: 0.1 }, async (m) => {
        const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
        const warm = m.forward(x);
        await warm.data();
        warm.dispose();
        const before = tf.memory().numTensors;
        for (let i = 0; i < 20; i++) {
          const kind = i % 4;
          if (kind === 0) m.forward(x).dispose();
          else if (kind === 1) m.forwardFeatures(x).dispose();
          else if (kind === 2) m.forward(x, { training: true }).dispose();
          else {
            const { logits, attentions } = m.forwardWithAttention(x);
            tf.dispose([logits, ...attentions]);
          }
        }
        assert.equal(tf.memory().numTensors, before);
        x.dispose();
      }),
  });

  Deno.test({
    name: `${backend}: attention maps are (B, heads, N, N) probabilities and leave the logits unchanged`,
    ...opts,
    fn: () =>
      withModel(backend, {}, async (m) => {
        const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
        const { logits, attentions } = m.forwardWithAttention(x);
        const plain = m.forward(x);
        assert.equal(attentions.length, 2);
        for (const a of attentions) {
          assert.deepEqual(a.shape, [2, 2, 5, 5]);
          const sums = tf.sum(a, -1);
          for (const s of await sums.data()) assert.ok(Math.abs(s - 1) < 1e-5);
          sums.dispose();
        }
        assert.ok(maxAbsDiff(await logits.data(), await plain.data()) < 1e-5);
        tf.dispose([x, logits, plain, ...attentions]);
      }),
  });

  Deno.test({
    name:
      `${backend}: inference runs the last block for the class tokens alone (standard, SE, ghost and dense blocks), as the full block does, leaking nothing; traced, training and attention-map passes run it whole`,
    ...opts,
    fn: async () => {
      const calls: number[] = [];
      const originals = [Block.prototype.applyClassTokens, DenseBlock.prototype.applyClassTokens] as const;
      Block.prototype.applyClassTokens = function (this: Block, ...args) {
        calls.push(args[1]);
        return originals[0].apply(this, args);
      };
      DenseBlock.prototype.applyClassTokens = function (this: DenseBlock, ...args) {
        calls.push(args[1]);
        return originals[1].apply(this, args);
      };
      try {
        const kinds: Record<string, Record<string, unknown>> = {
          vit: {},
          se: { blockType: "se" },
          ghost: { blockType: "ghost", mlpRatio: 3 },
          // widths 40 and 20: output ranges off the kernel's 8-column panels too
          dense: { blockType: "dense", growthRate: 8, blockConfig: [1, 1] },
        };
        for (const [kind, extra] of Object.entries(kinds)) {
          calls.length = 0;
          await withModel(backend, extra, async (m) => {
            const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
            const taps = traceForward(m, x);
            const full = await taps.get("logits")!.data();
            const fullFeatures = await taps.get("features")!.data();
            tf.dispose([...taps.values()]);
            const { logits, attentions } = m.forwardWithAttention(x);
            tf.dispose([logits, ...attentions]);
            tf.tidy(() => m.forward(x, { training: true }));
            assert.deepEqual(calls, [], `${kind}: only plain inference takes the class-token path`);
            const before = tf.memory().numTensors;
            for (let i = 0; i < 3; i++) {
              const y = m.forward(x), f = m.forwardFeatures(x);
              assert.ok(maxAbsDiff(await y.data(), full) < 1e-5, `${kind}: logits as the full last block's`);
              assert.ok(
                maxAbsDiff(await f.data(), fullFeatures) < 1e-5,
                `${kind}: features as the full block's`,
              );
              tf.dispose([y, f]);
            }
            assert.deepEqual(calls, Array(6).fill(2), `${kind}: every forward and forwardFeatures took it`);
            assert.equal(tf.memory().numTensors, before, `${kind}: no tensors leaked`);
            x.dispose();
          });
        }
      } finally {
        [Block.prototype.applyClassTokens, DenseBlock.prototype.applyClassTokens] = originals;
      }
    },
  });

  Deno.test({
    name: `${backend}: training mode turns dropout and drop-path on; eval mode is deterministic`,
    ...opts,
    fn: () =>
      withModel(backend, { dropRate: 0.2, attnDropRate: 0.2, dropPathRate: 0.3 }, async (m) => {
        const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
        const e1 = m.forward(x), e2 = m.forward(x);
        const t1 = m.forward(x, { training: true }), t2 = m.forward(x, { training: true });
        assert.deepEqual(await e1.data(), await e2.data());
        assert.ok(maxAbsDiff(await t1.data(), await t2.data()) > 1e-4, "training passes differ");
        assert.ok(maxAbsDiff(await t1.data(), await e1.data()) > 1e-4, "training differs from eval");
        tf.dispose([x, e1, e2, t1, t2]);
      }),
  });

  Deno.test({
    name: `${backend}: GELU is the exact erf form (within 1e-6) and differentiable`,
    ...opts,
    fn: async () => {
      await setBackend(backend);
      const n = 4001;
      const xs = Float32Array.from({ length: n }, (_, i) => -8 + (16 * i) / (n - 1));
      const x = tf.tensor1d(xs);
      const y = gelu(x);
      const dy = tf.grad((t: tf.Tensor) => tf.sum(gelu(t)))(x);
      const yv = await y.data(), dv = await dy.data();
      for (let i = 0; i < n; i++) {
        const v = xs[i];
        const exact = 0.5 * v * (1 + erf64(v / Math.SQRT2));
        const dexact = 0.5 * (1 + erf64(v / Math.SQRT2)) +
          (v * Math.exp((-v * v) / 2)) / Math.sqrt(2 * Math.PI);
        assert.ok(
          Math.abs(yv[i] - exact) <= 1e-6 + 1e-7 * Math.abs(exact),
          `gelu(${v}) = ${yv[i]}, want ${exact}`,
        );
        assert.ok(Math.abs(dv[i] - dexact) <= 1e-5, `gelu'(${v}) = ${dv[i]}, want ${dexact}`);
      }
      tf.dispose([x, y, dy]);
    },
  });
}

/** The gradients of every trainable parameter of the small model (seed 7) on `backend`, checked for leaks. */
function gradientsOn(backend: BackendName): Promise<Map<string, Float32Array>> {
  const mine = new Map<string, Float32Array>();
  return withModel(backend, {}, async (m) => {
    const x = tf.tensor4d(fillInput(2, 32), [2, 3, 32, 32]);
    const labels = tf.oneHot(tf.tensor1d([3, 7], "int32"), 10);
    const vars = m.trainableVariables();
    const step = () =>
      tf.variableGrads(() => {
        const logp = tf.logSoftmax(m.forward(x));
        return tf.neg(tf.mean(tf.sum(tf.mul(logp, labels), 1))) as tf.Scalar;
      }, [...vars.values()]);
    // the first pass builds the model's cached tensors (transposed weights, fold kernels)
    const first = step();
    tf.dispose([first.value, ...Object.values(first.grads)]);
    const before = tf.memory().numTensors;
    const { value, grads } = step();
    for (const [k, v] of vars) {
      const g = grads[v.name];
      assert.ok(g, `${backend}: no gradient for ${k}`);
      assert.deepEqual(g.shape, v.shape, k);
      const d = await g.data() as Float32Array;
      assert.ok(d.every(Number.isFinite), `${backend}: non-finite gradient for ${k}`);
      mine.set(k, d);
    }
    assert.ok([...mine.values()].some((d) => d.some((v) => v !== 0)));
    value.dispose();
    tf.dispose(grads);
    assert.equal(tf.memory().numTensors, before, `${backend}: gradient computation leaked tensors`);
    tf.dispose([x, labels]);
  }).then(() => mine);
}

// One test for every backend: the comparison never depends on which tests ran before.
Deno.test({
  name: `gradients of every trainable parameter on ${
    BACKENDS.join(", ")
  }: finite, leak-free, equal to wasm's`,
  ...opts,
  fn: async () => {
    const ref = await gradientsOn("wasm");
    for (const backend of BACKENDS.filter((b) => b !== "wasm")) {
      const mine = await gradientsOn(backend);
      for (const [k, d] of mine) {
        const r = ref.get(k)!;
        let num = 0, den = 0;
        for (let i = 0; i < d.length; i++) {
          num += (d[i] - r[i]) ** 2;
          den += r[i] ** 2;
        }
        assert.ok(Math.sqrt(num) <= 1e-4 * Math.sqrt(den) + 1e-9, `${k}: ${backend} vs wasm`);
      }
    }
  },
});
