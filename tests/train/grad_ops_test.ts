// Every gradient registered by zoo/backend/gradients.ts against central finite differences (cpu backend).
import "@tensorflow/tfjs-backend-cpu";
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import { registerTrainingGradients, TRAINING_GRADIENTS } from "../../src/train/mod.ts";
import { Rng } from "../../src/core/rng.ts";

await tf.setBackend("cpu");
registerTrainingGradients();

/** The running test's inputs: its own stream, from its name (the same values whatever else runs). */
let rng = Rng.derive(12345, "");
function rand(n: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng.uniform();
  return out;
}
function randT(shape: number[], lo = -1, hi = 1): tf.Tensor {
  return tf.tensor(rand(shape.reduce((a, b) => a * b, 1), lo, hi), shape);
}

/** The kernels the tests below declare (known when the module loads, whatever runs). */
const declared = new Set<string>();
/** The kernels the running test declared: a check of any other is an error, so the declarations hold. */
let current: ReadonlySet<string> = new Set();

/** A test of the gradients of `kernels`. */
function gradTest(name: string, kernels: string[], fn: () => void): void {
  for (const k of kernels) declared.add(k);
  Deno.test(name, () => {
    rng = Rng.derive(12345, name);
    current = new Set(kernels);
    try {
      fn();
    } finally {
      current = new Set();
    }
  });
}

function covers(name: string, kernel: string): void {
  assert.ok(current.has(kernel), `${name}: ${kernel} is not declared by its test`);
}

/**
 * Checks the analytic gradients of `sum(f(...xs) * w)` (w fixed, random) against central differences,
 * computed in float64 from float32 forward evaluations.
 */
function check(
  name: string,
  kernels: string[],
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  tol = 2e-2,
) {
  for (const k of kernels) covers(name, k);
  const start = tf.memory().numTensors;
  const out0 = tf.tidy(() => f(...xs));
  const w = randT(out0.shape);
  out0.dispose();
  const loss = (...a: tf.Tensor[]) => tf.sum(tf.mul(f(...a), w));
  const grads = tf.grads(loss)(xs);
  xs.forEach((x, xi) => {
    const g = grads[xi].dataSync();
    const base = x.dataSync().slice();
    const num = new Float64Array(base.length);
    const h = 1e-2;
    for (let i = 0; i < base.length; i++) {
      const eval1 = (v: number) => {
        const b = base.slice();
        b[i] = v;
        const args = xs.map((t, j) => (j === xi ? tf.tensor(b, x.shape) : t));
        const r = tf.tidy(() => loss(...args).dataSync()[0]);
        args[xi].dispose();
        return r;
      };
      num[i] = (eval1(base[i] + h) - eval1(base[i] - h)) / (2 * h);
    }
    let d = 0, n = 0;
    for (let i = 0; i < num.length; i++) {
      d += (g[i] - num[i]) ** 2;
      n += num[i] ** 2;
    }
    const rel = Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-6);
    assert.ok(rel < tol, `${name}: input ${xi}: relative error ${rel}`);
  });
  grads.forEach((g) => g.dispose());
  w.dispose();
  assert.equal(tf.memory().numTensors, start, `${name}: leaked tensors`);
}

gradTest("binary ops with broadcasting", [
  "Add",
  "Sub",
  "Multiply",
  "RealDiv",
  "SquaredDifference",
  "Maximum",
  "Minimum",
  "Pow",
  "AddN",
], () => {
  const a = randT([2, 3, 4]), b = randT([3, 1]), c = randT([4], 0.5, 2);
  check("add", ["Add"], (x, y) => tf.add(x, y), [a, b]);
  check("sub", ["Sub"], (x, y) => tf.sub(x, y), [a, b]);
  check("mul", ["Multiply"], (x, y) => tf.mul(x, y), [a, b]);
  check("div", ["RealDiv"], (x, y) => tf.div(x, y), [a, c]);
  check("sqdiff", ["SquaredDifference"], (x, y) => tf.squaredDifference(x, y), [a, b]);
  check("max", ["Maximum"], (x, y) => tf.maximum(x, y), [a, b]);
  check("min", ["Minimum"], (x, y) => tf.minimum(x, y), [a, b]);
  const pa = randT([2, 4], 0.5, 2);
  check("pow", ["Pow"], (x, y) => tf.pow(x, y), [pa, c]);
  check("addN", ["AddN"], (x, y, z) => tf.addN([x, y, z]), [a, randT([2, 3, 4]), randT([2, 3, 4])]);
  check("scalar mul", ["Multiply"], (x) => tf.mul(x, 3), [a]);
  for (const t of [a, b, c, pa]) t.dispose();
});

gradTest("unary ops", [
  "Neg",
  "Square",
  "Sqrt",
  "Rsqrt",
  "Log",
  "Exp",
  "Erf",
  "Tanh",
  "Sigmoid",
  "Abs",
  "Relu",
  "Identity",
  "Cast",
  "Floor",
  "Round",
  "Sign",
], () => {
  const x = randT([3, 5]), p = randT([3, 5], 0.3, 2);
  check("neg", ["Neg"], tf.neg, [x]);
  check("square", ["Square"], tf.square, [x]);
  check("sqrt", ["Sqrt"], tf.sqrt, [p]);
  check("rsqrt", ["Rsqrt"], tf.rsqrt, [p]);
  check("log", ["Log"], tf.log, [p]);
  check("exp", ["Exp"], tf.exp, [x]);
  check("erf", ["Erf"], tf.erf, [x]);
  check("tanh", ["Tanh"], tf.tanh, [x]);
  check("sigmoid", ["Sigmoid"], tf.sigmoid, [x]);
  check("abs", ["Abs"], tf.abs, [p]);
  check("relu", ["Relu"], tf.relu, [p]);
  check("identity/cast", ["Identity", "Cast"], (t) => tf.cast(tf.clone(t), "float32"), [x]);
  // Floor, Round and Sign are piecewise constant: their gradient is zero.
  for (const [k, fn] of [["Floor", tf.floor], ["Round", tf.round], ["Sign", tf.sign]] as const) {
    covers(k, k);
    const g = tf.grad((t: tf.Tensor) => tf.sum(fn(t)))(x);
    assert.deepEqual([...g.dataSync()], new Array(15).fill(0));
    g.dispose();
  }
  x.dispose();
  p.dispose();
});

gradTest("reductions and softmax", ["Softmax", "Mean", "Sum", "Max"], () => {
  const x = randT([2, 3, 4]);
  check("softmax", ["Softmax"], (t) => tf.softmax(t), [x]);
  check("mean all", ["Mean"], (t) => tf.mean(t), [x]);
  check("mean axis", ["Mean"], (t) => tf.mean(t, [0, 2]), [x]);
  check("mean keepdims", ["Mean"], (t) => tf.mean(t, -1, true), [x]);
  check("sum axis", ["Sum"], (t) => tf.sum(t, 1), [x]);
  check("sum keepdims", ["Sum"], (t) => tf.sum(t, [0, 1], true), [x]);
  check("max axis", ["Max"], (t) => tf.max(t, -1), [x]);
  check("max keepdims", ["Max"], (t) => tf.max(t, 0, true), [x]);
  check("logSoftmax", [], (t) => tf.logSoftmax(t), [x]);
  x.dispose();
});

gradTest("shape ops", [
  "Reshape",
  "ExpandDims",
  "Transpose",
  "Slice",
  "Concat",
  "PadV2",
  "Tile",
  "BroadcastTo",
  "Pack",
  "Unpack",
  "SplitV",
  "Select",
], () => {
  const x = randT([2, 3, 4]);
  check("reshape", ["Reshape"], (t) => tf.reshape(t, [6, 4]), [x]);
  check("expandDims", ["ExpandDims"], (t) => tf.expandDims(t, 1), [x]);
  check("transpose", ["Transpose"], (t) => tf.transpose(t, [2, 0, 1]), [x]);
  check("slice", ["Slice"], (t) => tf.slice(t, [0, 1, 1], [2, -1, 2]), [x]);
  check("concat", ["Concat"], (a, b) => tf.concat([a, b], 1), [x, randT([2, 2, 4])]);
  check("pad", ["PadV2"], (t) => tf.pad(t, [[0, 1], [2, 0], [1, 1]]), [x]);
  check("tile", ["Tile"], (t) => tf.tile(t, [2, 1, 3]), [x]);
  check("broadcastTo", ["BroadcastTo"], (t) => tf.broadcastTo(t, [5, 3, 4]), [randT([1, 3, 1])]);
  check("stack", ["Pack"], (a, b) => tf.stack([a, b], 1), [x, randT([2, 3, 4])]);
  check("unstack", ["Unpack"], (t) => tf.concat(tf.unstack(t, 1).map((p, i) => tf.mul(p, i + 1)), 1), [x]);
  check("unstack, one piece unused", ["Unpack"], (t) => tf.unstack(t, 0)[1], [x]);
  check("split", ["SplitV"], (t) => tf.concat(tf.split(t, [1, 3], 2).map((p, i) => tf.mul(p, i + 1)), 2), [
    x,
  ]);
  check(
    "where",
    ["Select"],
    (a, b) => tf.where(tf.tensor([true, false, true, true], [4], "bool"), a, b),
    [randT([4]), randT([4])],
  );
  x.dispose();
});

gradTest(
  "batched matrix products, every transpose combination and batch broadcasting",
  ["BatchMatMul"],
  () => {
    const shapes: [boolean, boolean, number[], number[]][] = [
      [false, false, [2, 3, 4], [2, 4, 5]],
      [false, true, [2, 3, 4], [2, 5, 4]],
      [true, false, [2, 4, 3], [2, 4, 5]],
      [true, true, [2, 4, 3], [2, 5, 4]],
      [false, false, [2, 3, 4], [1, 4, 5]],
      [false, false, [3, 4], [4, 2]],
    ];
    for (const [ta, tb, sa, sb] of shapes) {
      check(`matMul ${ta} ${tb} ${sa} ${sb}`, ["BatchMatMul"], (a, b) => tf.matMul(a, b, ta, tb), [
        randT(sa),
        randT(sb),
      ]);
    }
  },
);

gradTest("conv2d (NHWC): strides and padding", ["Conv2D"], () => {
  for (const [stride, pad] of [[1, "same"], [2, "valid"], [2, 1]] as const) {
    check(
      `conv2d ${stride} ${pad}`,
      ["Conv2D"],
      (x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, stride, pad),
      [
        randT([2, 5, 5, 3]),
        randT([3, 3, 3, 2]),
      ],
    );
  }
});

Deno.test("every registered gradient is covered by a check above", () => {
  const missing = TRAINING_GRADIENTS.map((g) => g.kernelName).filter((k) => !declared.has(k));
  assert.deepEqual(missing, []);
});
