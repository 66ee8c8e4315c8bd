// Optimizers, schedule, loss and RNG against closed-form values computed here in float64.
import "@tensorflow/tfjs-backend-cpu";
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import {
  AdamW,
  clipGradNorm,
  CosineSchedule,
  crossEntropy,
  OptimizerError,
  Rng,
  SGD,
  transferParamGroups,
  weightDecayParamGroups,
} from "../../src/train/mod.ts";

await tf.setBackend("cpu");

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, rel = 1e-6, what = "") {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const tol = rel * Math.max(1, Math.abs(expected[i]));
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tol,
      `${what}[${i}]: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

const P0 = [0.5, -1.25, 2.0, 0.0];

/** A variable holding `values` (the initial tensor is released, so tensor counts stay exact). */
function mkVar(values: number[]): tf.Variable {
  const t = tf.tensor1d(values);
  const v = tf.variable(t);
  t.dispose();
  return v;
}
const GRADS = [[0.1, -0.2, 0.3, -0.4], [0.05, 0.5, -0.25, 0.125], [-0.3, 0.1, 0.0, 0.2]];

Deno.test("SGD: momentum, coupled weight decay, no dampening (torch.optim.SGD)", () => {
  const start = tf.memory().numTensors;
  const lr = 0.1, mu = 0.9, wd = 5e-4;
  const w = mkVar(P0);
  const opt = new SGD([["w", w]], { lr, momentum: mu, weightDecay: wd });
  const p = [...P0];
  let buf: number[] | undefined;
  for (const g of GRADS) {
    const d = g.map((gi, i) => gi + wd * p[i]);
    buf = buf ? buf.map((b, i) => mu * b + d[i]) : d;
    for (let i = 0; i < 4; i++) p[i] -= lr * buf[i];
    const gt = tf.tensor1d(g);
    opt.step(new Map([["w", gt]]));
    gt.dispose();
    close(w.dataSync(), p, 1e-6, "sgd");
  }
  assert.equal(opt.steps, 3);
  const { tensors } = opt.stateDict();
  close(tensors.get("state.w.momentum_buffer")!.dataSync(), buf!, 1e-6, "buffer");
  opt.dispose();
  w.dispose();
  assert.equal(tf.memory().numTensors, start);
});

Deno.test("SGD: Nesterov and dampening", () => {
  for (const [nesterov, dampening] of [[true, 0], [false, 0.3]] as const) {
    const lr = 0.05, mu = 0.8, wd = 0.01;
    const w = mkVar(P0);
    const opt = new SGD([["w", w]], { lr, momentum: mu, weightDecay: wd, nesterov, dampening });
    const p = [...P0];
    let buf: number[] | undefined;
    for (const g of GRADS) {
      const d = g.map((gi, i) => gi + wd * p[i]);
      buf = buf ? buf.map((b, i) => mu * b + (1 - dampening) * d[i]) : [...d];
      const upd = nesterov ? d.map((di, i) => di + mu * buf![i]) : buf;
      for (let i = 0; i < 4; i++) p[i] -= lr * upd[i];
      tf.tidy(() => opt.step(new Map([["w", tf.tensor1d(g)]])));
    }
    close(w.dataSync(), p, 1e-6, `nesterov=${nesterov} dampening=${dampening}`);
    opt.dispose();
    w.dispose();
  }
  assert.throws(
    () => new SGD([["w", tf.variable(tf.scalar(1))]], { lr: 1, momentum: 0, nesterov: true }),
    OptimizerError,
  );
});

Deno.test("AdamW: decoupled decay and bias correction (torch.optim.AdamW)", () => {
  const start = tf.memory().numTensors;
  const lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05;
  const w = mkVar(P0);
  const opt = new AdamW([["w", w]], { lr, weightDecay: wd });
  const p = [...P0], m = [0, 0, 0, 0], v = [0, 0, 0, 0];
  GRADS.forEach((g, s) => {
    const t = s + 1;
    for (let i = 0; i < 4; i++) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const mhat = m[i] / (1 - b1 ** t);
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - b2 ** t) + eps;
      p[i] -= lr * mhat / denom;
    }
    tf.tidy(() => opt.step(new Map([["w", tf.tensor1d(g)]])));
    close(w.dataSync(), p, 2e-6, `adamw step ${t}`);
  });
  const { tensors, meta } = opt.stateDict();
  close(tensors.get("state.w.exp_avg")!.dataSync(), m, 1e-5, "exp_avg");
  close(tensors.get("state.w.exp_avg_sq")!.dataSync(), v, 1e-5, "exp_avg_sq");
  assert.equal(meta.paramSteps.w, 3);
  opt.dispose();
  w.dispose();
  assert.equal(tf.memory().numTensors, start);
});

Deno.test("AdamW: the first step moves each coordinate by lr (times sign) for eps -> 0", () => {
  const w = tf.variable(tf.tensor1d([1, 1, 1]));
  const opt = new AdamW([["w", w]], { lr: 0.001, weightDecay: 0 });
  tf.tidy(() => opt.step(new Map([["w", tf.tensor1d([3, -0.01, 100])]])));
  close(w.dataSync(), [0.999, 1.001, 0.999], 1e-6, "first step");
  opt.dispose();
  w.dispose();
});

Deno.test("parameter groups: own learning rates; params without a gradient are untouched", () => {
  const a = tf.variable(tf.tensor1d([1, 1])), b = tf.variable(tf.tensor1d([1, 1]));
  const c = tf.variable(tf.tensor1d([1, 1]));
  const opt = new SGD([
    { name: "slow", params: [["a", a]], lr: 0.01 },
    { name: "fast", params: [["b", b], ["c", c]] },
  ], { lr: 1, momentum: 0 });
  tf.tidy(() => opt.step(new Map([["a", tf.tensor1d([1, 2])], ["b", tf.tensor1d([1, 2])]])));
  close(a.dataSync(), [0.99, 0.98], 1e-7, "a");
  close(b.dataSync(), [0, -1], 1e-7, "b");
  close(c.dataSync(), [1, 1], 0, "c");
  assert.equal(opt.stateDict().tensors.size, 0);
  assert.throws(
    () => new SGD([{ params: [["a", a]] }, { params: [["a", a]] }], { lr: 1 }),
    /more than one group/,
  );
  assert.throws(() => tf.tidy(() => opt.step(new Map([["a", tf.tensor1d([1, 2, 3])]]))), /shape/);
  opt.dispose();
  for (const v of [a, b, c]) v.dispose();
});

Deno.test("optimizer state round trip: a restored optimizer continues identically", () => {
  for (
    const make of [
      (ps: [string, tf.Variable][]) => new SGD(ps, { lr: 0.1, momentum: 0.9, weightDecay: 1e-3 }),
      (ps: [string, tf.Variable][]) => new AdamW(ps, { lr: 0.01, weightDecay: 0.05 }),
    ]
  ) {
    const w1 = mkVar(P0), w2 = mkVar(P0);
    const o1 = make([["w", w1]]);
    for (const g of GRADS.slice(0, 2)) tf.tidy(() => o1.step(new Map([["w", tf.tensor1d(g)]])));
    const { tensors, meta } = o1.stateDict();
    const saved = new Map([...tensors].map(([k, t]) => [k, t.dataSync() as Float32Array]));
    const o2 = make([["w", w2]]);
    w2.assign(w1);
    o2.loadStateDict(saved, JSON.parse(JSON.stringify(meta)));
    tf.tidy(() => o1.step(new Map([["w", tf.tensor1d(GRADS[2])]])));
    tf.tidy(() => o2.step(new Map([["w", tf.tensor1d(GRADS[2])]])));
    assert.deepEqual(w2.dataSync(), w1.dataSync());
    assert.equal(o2.steps, 3);
    const bad = { ...meta, type: meta.type === "sgd" ? "adamw" : "sgd" };
    assert.throws(() => o2.loadStateDict(saved, bad), OptimizerError);
    o1.dispose();
    o2.dispose();
    w1.dispose();
    w2.dispose();
  }
});

Deno.test("timm add_weight_decay groups: no decay for 1-D, biases and cls_token", () => {
  const names: [string, number[]][] = [
    ["cls_token", [1, 1, 4]],
    ["tokens_to_token.project.weight", [4, 8]],
    ["tokens_to_token.project.bias", [4]],
    ["blocks.0.norm1.weight", [4]],
    ["blocks.0.attn.qkv.weight", [12, 4]],
    ["head.weight", [10, 4]],
    ["head.bias", [10]],
  ];
  const params = new Map(names.map(([k, s]) => [k, tf.variable(tf.zeros(s))] as [string, tf.Variable]));
  const groups = weightDecayParamGroups(params, 0.05);
  assert.deepEqual(groups.map((g) => g.name), ["no_decay", "decay"]);
  assert.deepEqual([...groups[0].params].map(([k]) => k), [
    "cls_token",
    "tokens_to_token.project.bias",
    "blocks.0.norm1.weight",
    "head.bias",
  ]);
  assert.deepEqual([...groups[1].params].map(([k]) => k), [
    "tokens_to_token.project.weight",
    "blocks.0.attn.qkv.weight",
    "head.weight",
  ]);
  const opt = new AdamW(groups, { lr: 5e-4 });
  assert.deepEqual(opt.groups.map((g) => g.options.weightDecay), [0, 0.05]);
  opt.dispose();

  const tg = transferParamGroups(params, { lr: 0.01, transferRatio: 0.01 });
  assert.deepEqual(tg.map((g) => [g.name, g.lr, [...g.params].length]), [
    ["tokens_to_token", 0.0001, 2],
    ["blocks", 0.0001, 2],
    ["head", 0.01, 2],
  ]);
  const all = transferParamGroups(params, { lr: 0.01, others: "backbone" });
  assert.deepEqual(all.map((g) => g.name), ["tokens_to_token", "blocks", "head", "others"]);
  assert.equal(all[3].lr, 0.0001);
  for (const v of params.values()) v.dispose();
});

Deno.test("clipGradNorm: torch.nn.utils.clip_grad_norm_", () => {
  const start = tf.memory().numTensors;
  const g = new Map<string, tf.Tensor>([["a", tf.tensor1d([3, 0])], ["b", tf.tensor2d([[0, 4]])]]);
  const { grads, totalNorm } = clipGradNorm(g, 1);
  close(totalNorm.dataSync(), [5], 1e-7, "norm");
  const coef = 1 / (5 + 1e-6);
  close(grads.get("a")!.dataSync(), [3 * coef, 0], 1e-6, "a");
  close(grads.get("b")!.dataSync(), [0, 4 * coef], 1e-6, "b");
  const big = clipGradNorm(g, 10);
  assert.deepEqual(big.grads.get("a")!.dataSync(), new Float32Array([3, 0]));
  for (const m of [g, grads, big.grads]) for (const t of m.values()) t.dispose();
  totalNorm.dispose();
  big.totalNorm.dispose();
  assert.equal(tf.memory().numTensors, start);
});

Deno.test("cosine schedule = PyTorch CosineAnnealingLR (transfer script: T_max 60, eta_min 2e-4)", () => {
  // PyTorch's recursive form, float64, for the two base rates of the transfer script.
  const tMax = 60, etaMin = 2e-4;
  const s = new CosineSchedule({ tInitial: tMax, lrMin: etaMin });
  for (const base of [0.01, 0.01 * 0.01]) {
    let lr = base;
    for (let e = 0; e <= tMax; e++) {
      if (e > 0) {
        lr = (1 + Math.cos(Math.PI * e / tMax)) / (1 + Math.cos(Math.PI * (e - 1) / tMax)) * (lr - etaMin) +
          etaMin;
      }
      if (e < tMax) assert.ok(Math.abs(s.lrAt(base, e) - lr) <= 1e-12, `base ${base} epoch ${e}`);
    }
  }
  assert.ok(Math.abs(s.lrAt(0.01, 30) - 0.0051) < 1e-15);
  assert.equal(s.lrAt(0.01, 60), etaMin);
  // The backbone groups start below eta_min and rise towards it, as in the official run.
  assert.ok(s.lrAt(1e-4, 59) > s.lrAt(1e-4, 1));
  const periodic = new CosineSchedule({ tInitial: 10, lrMin: 0, after: "periodic" });
  assert.ok(Math.abs(periodic.lrAt(1, 15) - 0.5) < 1e-12);
  assert.ok(Math.abs(periodic.lrAt(1, 20) - 1) < 1e-12);
});

Deno.test("cosine schedule with warmup = timm CosineLRScheduler (ImageNet recipe)", () => {
  const base = 5e-4, lrMin = 1e-5, init = 1e-6;
  const s = new CosineSchedule({ tInitial: 300, lrMin, warmupT: 10, warmupLrInit: init });
  assert.equal(s.lrAt(base, 0), init);
  assert.ok(Math.abs(s.lrAt(base, 5) - (init + 5 * (base - init) / 10)) < 1e-15);
  const cos = (t: number) => lrMin + 0.5 * (base - lrMin) * (1 + Math.cos(Math.PI * t / 300));
  assert.ok(Math.abs(s.lrAt(base, 10) - cos(10)) < 1e-15); // not prefixed: cosine indexed by t itself
  assert.ok(Math.abs(s.lrAt(base, 150) - cos(150)) < 1e-15);
  assert.equal(s.lrAt(base, 300), lrMin);
  assert.equal(s.lrAt(base, 305), lrMin);
  const pre = new CosineSchedule({
    tInitial: 300,
    lrMin,
    warmupT: 10,
    warmupLrInit: init,
    warmupPrefix: true,
  });
  assert.ok(Math.abs(pre.lrAt(base, 10) - base) < 1e-15);
  assert.ok(Math.abs(pre.lrAt(base, 160) - cos(150)) < 1e-15);
  const w = tf.variable(tf.scalar(0));
  const opt = new SGD([{ params: [["w", w]], lr: 0.1 }, {
    params: [["v", tf.variable(tf.scalar(0))]],
    lr: 1,
  }], {
    lr: 1,
  });
  const rates = s.apply(opt, 150);
  assert.deepEqual(rates, [opt.groups[0].lr, opt.groups[1].lr]);
  assert.ok(Math.abs(opt.groups[1].lr / opt.groups[0].lr - 10) > 0); // floor is shared, not scaled
  assert.equal(opt.groups[0].initialLr, 0.1);
  for (const g of opt.groups) for (const v of g.params.values()) v.dispose();
  opt.dispose();
});

Deno.test("crossEntropy: mean NLL of log-softmax, label smoothing as PyTorch", async () => {
  const logits = [[2, 0.5, -1], [0.1, 0.2, 3.3]];
  const labels = [0, 2];
  const lse = (r: number[]) => Math.log(r.reduce((a, x) => a + Math.exp(x), 0));
  const nll = logits.map((r, i) => lse(r) - r[labels[i]]);
  const meanLogp = logits.map((r) => r.reduce((a, x) => a + (lse(r) - x), 0) / r.length);
  const eps = 0.1;
  const exp0 = (nll[0] + nll[1]) / 2;
  const expS = ((1 - eps) * nll[0] + eps * meanLogp[0] + (1 - eps) * nll[1] + eps * meanLogp[1]) / 2;
  const x = tf.tensor2d(logits);
  const start = tf.memory().numTensors;
  const l0 = crossEntropy(x as tf.Tensor2D, labels);
  const l1 = crossEntropy(x as tf.Tensor2D, labels, { labelSmoothing: eps });
  close(await l0.data(), [exp0], 1e-6, "ce");
  close(await l1.data(), [expS], 1e-6, "smoothed");
  // d(mean CE)/d logits = (softmax - onehot) / B
  const g = tf.grad((z: tf.Tensor) => crossEntropy(z as tf.Tensor2D, labels))(x);
  const expected = logits.flatMap((r, i) =>
    r.map((v, c) => (Math.exp(v - lse(r)) - (c === labels[i] ? 1 : 0)) / 2)
  );
  close(await g.data(), expected, 1e-6, "grad");
  assert.throws(() => crossEntropy(x as tf.Tensor2D, [0, 3]), /outside/);
  assert.throws(() => crossEntropy(x as tf.Tensor2D, [0]), /labels/);
  l0.dispose();
  l1.dispose();
  g.dispose();
  assert.equal(tf.memory().numTensors, start);
  x.dispose();
});

Deno.test("Rng: deterministic streams, permutations, state round trip, seeded tfjs dropout", () => {
  const a = Rng.derive(42, "shuffle", 3), b = Rng.derive(42, "shuffle", 3), c = Rng.derive(42, "shuffle", 4);
  const pa = a.permutation(1000), pb = b.permutation(1000), pc = c.permutation(1000);
  assert.deepEqual(pa, pb);
  assert.notDeepEqual(pa, pc);
  assert.deepEqual([...pa].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  const r = new Rng(7);
  const st = r.getState();
  const xs = [r.uniform(), r.int(10), r.nextU32()];
  r.setState(st);
  assert.deepEqual([r.uniform(), r.int(10), r.nextU32()], xs);
  const counts = new Array(6).fill(0);
  for (let i = 0; i < 60000; i++) counts[r.int(6)]++;
  for (const n of counts) assert.ok(Math.abs(n - 10000) < 500, `int(6) histogram ${counts}`);
  // dropout masks seeded through the op's own seed argument (as the models do): the same generator state
  // gives the same mask, another state another one, and Math.random is never touched
  const orig = Math.random;
  const mask = (rng: Rng) => tf.dropout(tf.ones([64]), 0.5, undefined, rng.uniform()).dataSync();
  const m1 = mask(Rng.derive(1, "dropout", 5));
  const m2 = mask(Rng.derive(1, "dropout", 5));
  assert.deepEqual(m1, m2);
  assert.notDeepEqual(m1, mask(Rng.derive(1, "dropout", 6)));
  assert.equal(Math.random, orig);
});
