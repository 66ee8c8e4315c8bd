/**
 * Gradients of the tfjs kernels a T2T-ViT forward pass and its loss use.
 *
 * `@tensorflow/tfjs-core` ships its kernels' gradient functions only as ES modules with extension-less
 * relative imports (`dist/register_all_gradients.js`), which Deno cannot load, and its bundles (the `main`
 * entry Deno uses) contain none; the `@tensorflow/tfjs` union package registers them from its own bundle
 * but drags in layers, converter, data and WebGL. So this module registers the gradients training needs,
 * written from the derivatives, in tfjs's gradient-config format. A kernel that already has a gradient
 * (registered by someone else) is left alone.
 *
 * `installGradients()` (`zoo/backend/registry.ts`) registers them; importing the training API calls it.
 * {@linkcode registerTrainingGradients} is idempotent.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import type { tf as publicTf } from "../../src/core/tf.ts";

type T = tf.Tensor;
type Attrs = tf.NamedAttrMap;
type Grads = Record<string, () => T>;

function axesOf(axis: number | number[] | null | undefined, rank: number): number[] {
  const list = axis === null || axis === undefined
    ? [...Array(rank).keys()]
    : Array.isArray(axis)
    ? axis
    : [axis];
  return list.map((a) => (a < 0 ? a + rank : a)).sort((a, b) => a - b);
}

/** Sums `dy` over the axes that broadcasting expanded, giving a tensor of `shape`. */
function unbroadcast(dy: T, shape: readonly number[]): T {
  const extra = dy.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < dy.rank; i++) {
    const si = i - extra;
    if (si < 0 || (shape[si] === 1 && dy.shape[i] !== 1)) axes.push(i);
  }
  const r = axes.length ? tf.sum(dy, axes) : dy;
  return tf.reshape(r, shape as number[]);
}

/** `dy` of a reduction reshaped to the input's rank (reduced axes of size 1). */
function keepDimsShape(xShape: readonly number[], axes: number[]): number[] {
  return xShape.map((d, i) => (axes.includes(i) ? 1 : d));
}

function f32(x: T): T {
  return x.dtype === "float32" ? x : tf.cast(x, "float32");
}

const binary = (
  name: string,
  da: (dy: T, a: T, b: T) => T,
  db: (dy: T, a: T, b: T) => T,
): tf.GradConfig => ({
  kernelName: name,
  inputsToSave: ["a", "b"],
  gradFunc: (dy, saved): Grads => {
    const [a, b] = saved;
    return {
      a: () => unbroadcast(da(dy as T, a, b), a.shape),
      b: () => unbroadcast(db(dy as T, a, b), b.shape),
    };
  },
});

const unary = (name: string, dx: (dy: T, x: T) => T): tf.GradConfig => ({
  kernelName: name,
  inputsToSave: ["x"],
  gradFunc: (dy, saved): Grads => ({ x: () => dx(dy as T, saved[0]) }),
});

const unaryOut = (name: string, dx: (dy: T, y: T) => T): tf.GradConfig => ({
  kernelName: name,
  outputsToSave: [true],
  gradFunc: (dy, saved): Grads => ({ x: () => dx(dy as T, saved[0]) }),
});

function sliceBegin(begin: number | number[], rank: number): number[] {
  return Array.isArray(begin)
    ? [...begin, ...Array(rank - begin.length).fill(0)]
    : [begin, ...Array(rank - 1).fill(0)];
}

function sliceSize(size: number | number[], begin: number[], shape: readonly number[]): number[] {
  const s = Array.isArray(size) ? size : [size];
  return shape.map((d, i) => (i >= s.length || s[i] === -1 ? d - begin[i] : s[i]));
}

function conv2dBackpropFilter(x: T, dy: T, filterShape: number[], attrs: Attrs): T {
  return tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, {
    strides: attrs.strides,
    pad: attrs.pad,
    dataFormat: attrs.dataFormat,
    dimRoundingMode: attrs.dimRoundingMode,
    filterShape,
  } as unknown as Attrs) as T;
}

function conv2dBackpropInput(xShape: number[], dy: T, filter: T, attrs: Attrs): T {
  return tf.engine().runKernel("Conv2DBackpropInput", { dy, filter }, {
    strides: attrs.strides,
    pad: attrs.pad,
    dataFormat: attrs.dataFormat,
    dimRoundingMode: attrs.dimRoundingMode,
    inputShape: xShape,
  } as unknown as Attrs) as T;
}

/** The gradient configs this module provides, by kernel name. */
export const TRAINING_GRADIENTS: readonly publicTf.GradConfig[] = [
  binary("Add", (dy) => dy, (dy) => dy),
  binary("Sub", (dy) => dy, (dy) => tf.neg(dy)),
  binary("Multiply", (dy, _a, b) => tf.mul(dy, f32(b)), (dy, a) => tf.mul(dy, f32(a))),
  binary(
    "RealDiv",
    (dy, _a, b) => tf.div(dy, f32(b)),
    (dy, a, b) => tf.neg(tf.div(tf.mul(dy, f32(a)), tf.square(f32(b)))),
  ),
  binary(
    "SquaredDifference",
    (dy, a, b) => tf.mul(dy, tf.mul(tf.sub(a, b), 2)),
    (dy, a, b) => tf.mul(dy, tf.mul(tf.sub(b, a), 2)),
  ),
  binary(
    "Maximum",
    (dy, a, b) => tf.mul(dy, tf.cast(tf.greaterEqual(a, b), "float32")),
    (dy, a, b) => tf.mul(dy, tf.cast(tf.less(a, b), "float32")),
  ),
  binary(
    "Minimum",
    (dy, a, b) => tf.mul(dy, tf.cast(tf.lessEqual(a, b), "float32")),
    (dy, a, b) => tf.mul(dy, tf.cast(tf.greater(a, b), "float32")),
  ),
  {
    kernelName: "Pow",
    inputsToSave: ["a", "b"],
    outputsToSave: [true],
    gradFunc: (dy, saved): Grads => {
      const [a, b, y] = saved;
      return {
        a: () => unbroadcast(tf.mul(dy as T, tf.mul(f32(b), tf.pow(a, tf.sub(f32(b), 1)))), a.shape),
        b: () => {
          const logA = tf.where(tf.greater(a, 0), tf.log(a), tf.zerosLike(a));
          return unbroadcast(tf.mul(dy as T, tf.mul(y, logA)), b.shape);
        },
      };
    },
  },
  {
    kernelName: "AddN",
    saveAllInputs: true,
    gradFunc: (dy, saved): Grads => {
      const out: Grads = {};
      saved.forEach((_, i) => (out[i] = () => (dy as T).clone()));
      return out;
    },
  },
  unary("Neg", (dy) => tf.neg(dy)),
  unary("Square", (dy, x) => tf.mul(dy, tf.mul(f32(x), 2))),
  unary("Sqrt", (dy, x) => tf.div(dy, tf.mul(tf.sqrt(f32(x)), 2))),
  unary("Rsqrt", (dy, x) => tf.neg(tf.div(dy, tf.mul(tf.pow(f32(x), 1.5), 2)))),
  unary("Log", (dy, x) => tf.div(dy, f32(x))),
  unary("Abs", (dy, x) => tf.mul(dy, tf.sign(f32(x)))),
  unary("Relu", (dy, x) => tf.mul(dy, tf.cast(tf.greater(x, 0), "float32"))),
  unary("Erf", (dy, x) => tf.mul(dy, tf.mul(tf.exp(tf.neg(tf.square(x))), 2 / Math.sqrt(Math.PI)))),
  unary("Floor", (dy) => tf.zerosLike(dy)),
  unary("Round", (dy) => tf.zerosLike(dy)),
  unary("Sign", (dy) => tf.zerosLike(dy)),
  unary("Identity", (dy) => tf.cast(dy, "float32")),
  unary("Cast", (dy) => dy.clone()),
  unaryOut("Exp", (dy, y) => tf.mul(dy, y)),
  unaryOut("Tanh", (dy, y) => tf.mul(dy, tf.sub(1, tf.square(y)))),
  unaryOut("Sigmoid", (dy, y) => tf.mul(dy, tf.mul(y, tf.sub(1, y)))),
  {
    kernelName: "Softmax",
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs): Grads => {
      const y = saved[0];
      const dim = (attrs as { dim: number }).dim;
      return {
        logits: () => {
          const dyy = tf.mul(dy as T, y);
          return tf.sub(dyy, tf.mul(tf.sum(dyy, [dim], true), y));
        },
      };
    },
  },
  {
    kernelName: "Mean",
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs): Grads => {
      const x = saved[0];
      const axes = axesOf((attrs as { axis: number | number[] }).axis, x.rank);
      const n = axes.reduce((p, a) => p * x.shape[a], 1);
      return {
        x: () => tf.div(tf.mul(tf.reshape(dy as T, keepDimsShape(x.shape, axes)), tf.onesLike(x)), n),
      };
    },
  },
  {
    kernelName: "Sum",
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs): Grads => {
      const x = saved[0];
      const axes = axesOf((attrs as { axis: number | number[] }).axis, x.rank);
      return { x: () => tf.mul(tf.reshape(dy as T, keepDimsShape(x.shape, axes)), tf.onesLike(x)) };
    },
  },
  {
    kernelName: "Max",
    inputsToSave: ["x"],
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs): Grads => {
      const [x, y] = saved;
      const axes = axesOf((attrs as { reductionIndices: number | number[] }).reductionIndices, x.rank);
      const ks = keepDimsShape(x.shape, axes);
      return {
        x: () => tf.mul(tf.reshape(dy as T, ks), tf.cast(tf.equal(x, tf.reshape(y, ks)), "float32")),
      };
    },
  },
  {
    kernelName: "Reshape",
    inputsToSave: ["x"],
    gradFunc: (dy, saved): Grads => ({ x: () => tf.reshape(dy as T, saved[0].shape) }),
  },
  {
    kernelName: "ExpandDims",
    inputsToSave: ["input"],
    gradFunc: (dy, saved): Grads => ({ input: () => tf.reshape(dy as T, saved[0].shape) }),
  },
  {
    kernelName: "Transpose",
    gradFunc: (dy, _saved, attrs): Grads => {
      const perm = (attrs as { perm: number[] }).perm;
      const inv = new Array(perm.length);
      perm.forEach((p, i) => (inv[p] = i));
      return { x: () => tf.transpose(dy as T, inv) };
    },
  },
  {
    kernelName: "Slice",
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs): Grads => {
      const x = saved[0];
      const a = attrs as { begin: number | number[]; size: number | number[] };
      const begin = sliceBegin(a.begin, x.rank);
      const size = sliceSize(a.size, begin, x.shape);
      return {
        x: () =>
          tf.pad(dy as T, x.shape.map((d, i) => [begin[i], d - begin[i] - size[i]] as [number, number])),
      };
    },
  },
  {
    kernelName: "Concat",
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs): Grads => {
      const axis = axesOf((attrs as { axis: number }).axis, saved[0].rank)[0];
      const out: Grads = {};
      let offset = 0;
      saved.forEach((t, i) => {
        const begin = t.shape.map((_, d) => (d === axis ? offset : 0));
        offset += t.shape[axis];
        out[i] = () => tf.slice(dy as T, begin, t.shape);
      });
      return out;
    },
  },
  {
    kernelName: "PadV2",
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs): Grads => {
      const x = saved[0];
      const pads = (attrs as { paddings: [number, number][] }).paddings;
      return { x: () => tf.slice(dy as T, pads.map((p) => p[0]), x.shape) };
    },
  },
  {
    kernelName: "Tile",
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs): Grads => {
      const x = saved[0];
      const reps = (attrs as { reps: number[] }).reps;
      return {
        x: () => {
          // (r0, s0, r1, s1, ...) then sum over the r axes
          const shape = x.shape.flatMap((s, i) => [reps[i], s]);
          const axes = x.shape.map((_, i) => 2 * i);
          return tf.sum(tf.reshape(dy as T, shape), axes);
        },
      };
    },
  },
  {
    kernelName: "BroadcastTo",
    gradFunc: (dy, _saved, attrs): Grads => {
      const inputShape = (attrs as { inputShape: number[] }).inputShape;
      return { x: () => unbroadcast(dy as T, inputShape) };
    },
  },
  {
    kernelName: "BatchMatMul",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved, attrs): Grads => {
      const [a, b] = saved;
      const { transposeA: tA, transposeB: tB } = attrs as { transposeA: boolean; transposeB: boolean };
      const g = dy as T;
      const mm = (x: T, y: T, tx: boolean, ty: boolean) => tf.matMul(x, y, tx, ty);
      let da: () => T, db: () => T;
      if (!tA && !tB) {
        da = () => mm(g, b, false, true);
        db = () => mm(a, g, true, false);
      } else if (!tA && tB) {
        da = () => mm(g, b, false, false);
        db = () => mm(g, a, true, false);
      } else if (tA && !tB) {
        da = () => mm(b, g, false, true);
        db = () => mm(a, g, false, false);
      } else {
        da = () => mm(b, g, true, true);
        db = () => mm(g, a, true, true);
      }
      return { a: () => unbroadcast(da(), a.shape), b: () => unbroadcast(db(), b.shape) };
    },
  },
  {
    kernelName: "Pack",
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs): Grads => {
      const g = dy as T;
      const axis = axesOf((attrs as { axis: number }).axis, g.rank)[0];
      const out: Grads = {};
      saved.forEach((t, i) => {
        const begin = g.shape.map((_, d) => (d === axis ? i : 0));
        const size = g.shape.map((s, d) => (d === axis ? 1 : s));
        out[i] = () => tf.reshape(tf.slice(g, begin, size), t.shape);
      });
      return out;
    },
  },
  {
    kernelName: "Unpack",
    gradFunc: (dy, _saved, attrs): Grads => ({
      value: () => tf.stack(dy as T[], (attrs as { axis: number }).axis),
    }),
  },
  {
    kernelName: "SplitV",
    gradFunc: (dy, _saved, attrs): Grads => ({
      x: () => tf.concat(dy as T[], (attrs as { axis: number }).axis),
    }),
  },
  {
    kernelName: "Select",
    inputsToSave: ["condition"],
    gradFunc: (dy, saved): Grads => {
      const c = saved[0];
      return {
        condition: () => tf.cast(tf.zerosLike(c), "float32"),
        t: () => tf.mul(dy as T, tf.cast(c, "float32")),
        e: () => tf.mul(dy as T, tf.cast(tf.logicalNot(tf.cast(c, "bool")), "float32")),
      };
    },
  },
  {
    kernelName: "Conv2D",
    inputsToSave: ["x", "filter"],
    gradFunc: (dy, saved, attrs): Grads => {
      const [x, filter] = saved;
      const dil = (attrs as { dilations: number | [number, number] }).dilations;
      if (dil !== undefined && dil !== 1 && !(Array.isArray(dil) && dil[0] === 1 && dil[1] === 1)) {
        throw new Error("Conv2D gradient: dilations other than 1 are not supported");
      }
      return {
        x: () => conv2dBackpropInput(x.shape, dy as T, filter, attrs),
        filter: () => conv2dBackpropFilter(x, dy as T, filter.shape, attrs),
      };
    },
  },
];

/**
 * Makes the wasm backend's `Identity` kernel share its input's memory (reference counted), as the cpu backend's
 * does and as its own `Reshape` does, instead of copying it. tfjs saves every tensor a gradient needs with an
 * `Identity` (`ENGINE.clone`), so on wasm each saved activation was copied: with sharing, the memory a backward
 * pass needs roughly halves (t2t_vit_19 at batch 2 fits the 4 GB wasm heap; it did not). tfjs tensors are
 * immutable, so sharing is safe. Does nothing until the wasm backend is registered; idempotent.
 *
 * @returns whether the shared kernel is installed
 */
export function shareWasmIdentity(): boolean {
  const current = tf.getKernel("Identity", "wasm");
  if (!current) return false;
  if ((current.kernelFunc as { shared?: boolean }).shared) return true;
  const kernelFunc = ((args: { inputs: tf.NamedTensorInfoMap; backend: unknown }) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === "string") return (current.kernelFunc as (a: unknown) => tf.TensorInfo)(args);
    (args.backend as { incRef(dataId: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  }) as unknown as tf.KernelFunc;
  (kernelFunc as unknown as { shared: boolean }).shared = true;
  tf.unregisterKernel("Identity", "wasm");
  tf.registerKernel({ ...current, kernelFunc });
  return true;
}

/**
 * Registers {@linkcode TRAINING_GRADIENTS} for every kernel that has no gradient yet. Safe to call repeatedly.
 * Returns the kernel names it registered.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { registerTrainingGradients } from "./gradients.ts";
 * registerTrainingGradients();
 * const g = tf.grad((x: tf.Tensor) => tf.mean(tf.erf(x)))(tf.tensor1d([0, 1]));
 * ```
 */
export function registerTrainingGradients(): string[] {
  const done: string[] = [];
  for (const cfg of TRAINING_GRADIENTS) {
    if (tf.getGradient(cfg.kernelName) === undefined) {
      tf.registerGradient(cfg);
      done.push(cfg.kernelName);
    }
  }
  return done;
}
