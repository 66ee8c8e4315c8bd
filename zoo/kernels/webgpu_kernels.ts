/**
 * The fused T2T kernels on tfjs-backend-webgpu (WGSL programs run through `backend.runWebGPUProgram`):
 *
 * - `T2tLayerNorm`: one workgroup per row; two-pass mean and variance reduced in workgroup memory (one
 *   dispatch instead of tfjs's nine: mean, sub, square, mean, add, rsqrt, mul, mul, add);
 * - `T2tGelu`: exact-form GELU in one pass (tfjs: five element-wise dispatches), erf by Abramowitz and
 *   Stegun 7.1.26 as tfjs's own `Erf`;
 * - `T2tSoftmax`: `softmax(scale x)` over rows (the attention's scale and softmax in one dispatch);
 * - `T2tAttention`: multi-head attention straight from the fused `qkv` projection, flash-attention style:
 *   each invocation owns one query row and keeps its running max, sum and output in registers, keys and
 *   values go through workgroup memory in tiles, and the `N x N` score matrix is never written (tfjs: two
 *   transposes, three slices, two batched products, a scale, a softmax and a transpose per layer);
 * - `T2tUnfold`: the soft split (`nn.Unfold` + `transpose(1, 2)` on NHWC maps) as a gather (tfjs: a
 *   depthwise convolution with a 0/1 filter);
 * - `T2tPerformer`: the token performer's attention from its `kqv` projection in four dispatches
 *   (`webgpu_performer.ts`).
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu";
import { type Args, flat, MAIN } from "./webgpu_program.ts";
import { ATTENTION, GELU, kernelConfigs, LAYER_NORM, PERFORMER, SOFTMAX, UNFOLD } from "./names.ts";
import { performerKernel } from "./webgpu_performer.ts";

type Uniform = { type: string; data: number[] };

/** Power-of-two workgroup size for row reductions over `cols` values. */
function rowWorkgroup(cols: number): number {
  return cols >= 1024 ? 256 : cols >= 256 ? 128 : 64;
}

/** Tree reduction of `partial` into `partial[0]` (workgroup size `wg`, a power of two). */
function reduce(op: string, wg: number): string {
  return `
    for (var s = ${wg / 2}; s > 0; s = s >> 1) {
      if (tid < s) { partial[tid] = ${op}; }
      workgroupBarrier();
    }`;
}

function layerNormProgram(rows: number, cols: number, shape: number[]): WebGPUProgram {
  const wg = rowWorkgroup(cols);
  return {
    ...flat(shape, wg, rows * wg),
    variableNames: ["x", "gamma", "beta"],
    uniforms: "eps : f32, cols : i32,",
    shaderKey: `t2t_layernorm_${wg}`,
    getUserCode: () => `
  var<workgroup> partial : array<f32, ${wg}>;
  ${MAIN} {
    let row = index / ${wg};
    let tid = i32(localId.x);
    let cols = uniforms.cols;
    let base = row * cols;
    var acc = 0.0;
    for (var c = tid; c < cols; c += ${wg}) { acc += x[base + c]; }
    partial[tid] = acc;
    workgroupBarrier();
    ${reduce("partial[tid] + partial[tid + s]", wg)}
    let mean = partial[0] / f32(cols);
    workgroupBarrier();
    acc = 0.0;
    for (var c = tid; c < cols; c += ${wg}) { let d = x[base + c] - mean; acc += d * d; }
    partial[tid] = acc;
    workgroupBarrier();
    ${reduce("partial[tid] + partial[tid + s]", wg)}
    let rstd = inverseSqrt(partial[0] / f32(cols) + uniforms.eps);
    for (var c = tid; c < cols; c += ${wg}) {
      result[base + c] = (x[base + c] - mean) * rstd * gamma[c] + beta[c];
    }
  }`,
  };
}

function geluProgram(shape: number[]): WebGPUProgram {
  const size = tf.util.sizeFromShape(shape);
  return {
    ...flat(shape, 64, size),
    variableNames: ["x"],
    size: true,
    shaderKey: "t2t_gelu",
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let v = x[index];
      let z = v * 0.70710678118654752;
      let a = abs(z);
      let t = 1.0 / (1.0 + 0.3275911 * a);
      let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
      let e = 1.0 - poly * exp(-a * a);
      result[index] = 0.5 * v * (1.0 + select(e, -e, z < 0.0));
    }
  }`,
  };
}

function softmaxProgram(rows: number, cols: number, shape: number[]): WebGPUProgram {
  const wg = rowWorkgroup(cols);
  return {
    ...flat(shape, wg, rows * wg),
    variableNames: ["x"],
    uniforms: "scale : f32, cols : i32,",
    shaderKey: `t2t_softmax_${wg}`,
    getUserCode: () => `
  var<workgroup> partial : array<f32, ${wg}>;
  ${MAIN} {
    let row = index / ${wg};
    let tid = i32(localId.x);
    let cols = uniforms.cols;
    let base = row * cols;
    var m = -3.402823e+38;
    for (var c = tid; c < cols; c += ${wg}) { m = max(m, x[base + c]); }
    partial[tid] = m;
    workgroupBarrier();
    ${reduce("max(partial[tid], partial[tid + s])", wg)}
    let mx = partial[0];
    workgroupBarrier();
    var acc = 0.0;
    for (var c = tid; c < cols; c += ${wg}) { acc += exp(uniforms.scale * (x[base + c] - mx)); }
    partial[tid] = acc;
    workgroupBarrier();
    ${reduce("partial[tid] + partial[tid + s]", wg)}
    let inv = 1.0 / partial[0];
    for (var c = tid; c < cols; c += ${wg}) {
      result[base + c] = exp(uniforms.scale * (x[base + c] - mx)) * inv;
    }
  }`,
  };
}

/** Query rows per workgroup of the attention kernel. */
const ATT_WG = 64;

function attentionProgram(
  batch: number,
  tokens: number,
  heads: number,
  d: number,
): WebGPUProgram {
  // keys and values in tiles of T rows: 2 T d floats of workgroup memory, at most 16 KB (WebGPU's default)
  const tile = Math.max(1, Math.min(64, Math.floor(2048 / d)));
  const qBlocks = Math.ceil(tokens / ATT_WG);
  const dim = heads * d;
  // rows of q, k, v and the output are read and written as vec4 when the head size allows it
  const c = d % 4 === 0 ? 4 : 1;
  const v = c === 4 ? "vec4<f32>" : "f32";
  const dc = d / c;
  const dot = c === 4 ? "dot(q[j], kt[r * DC + j])" : "q[j] * kt[r * DC + j]";
  return {
    ...flat([batch * tokens, dim], ATT_WG, batch * heads * qBlocks * ATT_WG),
    variableNames: ["qkv"],
    variableComponents: [c],
    outputComponent: c,
    uniforms: "tokens : i32, heads : i32, qBlocks : i32, scale : f32,",
    shaderKey: `t2t_attention_${d}_${tile}_${c}`,
    getUserCode: () => `
  const DC = ${dc};
  var<workgroup> kt : array<${v}, ${tile * dc}>;
  var<workgroup> vt : array<${v}, ${tile * dc}>;
  ${MAIN} {
    let tid = i32(localId.x);
    let group = index / ${ATT_WG};
    let n = uniforms.tokens;
    let h = uniforms.heads;
    let bh = group / uniforms.qBlocks;
    let b = bh / h;
    let head = bh % h;
    let row = (group % uniforms.qBlocks) * ${ATT_WG} + tid;
    let width = 3 * h * DC;
    let inRange = row < n;
    let qbase = (b * n + min(row, n - 1)) * width + head * DC;
    var q : array<${v}, DC>;
    var acc : array<${v}, DC>;
    for (var j = 0; j < DC; j++) { q[j] = qkv[qbase + j] * uniforms.scale; acc[j] = ${v}(0.0); }
    var m = -3.402823e+38;
    var l = 0.0;
    var s : array<f32, ${tile}>;
    for (var t0 = 0; t0 < n; t0 += ${tile}) {
      let count = min(${tile}, n - t0);
      workgroupBarrier();
      for (var e = tid; e < count * DC; e += ${ATT_WG}) {
        let kbase = (b * n + t0 + e / DC) * width + head * DC + e % DC;
        kt[e] = qkv[kbase + h * DC];
        vt[e] = qkv[kbase + 2 * h * DC];
      }
      workgroupBarrier();
      var tileMax = -3.402823e+38;
      for (var r = 0; r < count; r++) {
        var sum = 0.0;
        for (var j = 0; j < DC; j++) { sum += ${dot}; }
        s[r] = sum;
        tileMax = max(tileMax, sum);
      }
      let mNew = max(m, tileMax);
      let corr = exp(m - mNew);
      l = l * corr;
      for (var j = 0; j < DC; j++) { acc[j] = acc[j] * corr; }
      for (var r = 0; r < count; r++) {
        let p = exp(s[r] - mNew);
        l += p;
        for (var j = 0; j < DC; j++) { acc[j] += p * vt[r * DC + j]; }
      }
      m = mNew;
    }
    if (inRange) {
      let obase = (b * n + row) * h * DC + head * DC;
      let inv = 1.0 / l;
      for (var j = 0; j < DC; j++) { result[obase + j] = acc[j] * inv; }
    }
  }`,
  };
}

function unfoldProgram(
  outShape: number[],
  k: number,
): WebGPUProgram {
  const size = tf.util.sizeFromShape(outShape);
  return {
    ...flat(outShape, 64, size),
    variableNames: ["x"],
    size: true,
    uniforms: "stride : i32, pad : i32,",
    shaderKey: `t2t_unfold_${k}`,
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let cOut = uniforms.outShape[3];
      let wo = uniforms.outShape[2];
      let ho = uniforms.outShape[1];
      let ch = index % cOut;
      let p = (index / cOut) % wo;
      let o = (index / (cOut * wo)) % ho;
      let b = index / (cOut * wo * ho);
      let c = ch / ${k * k};
      let rem = ch % ${k * k};
      let y = o * uniforms.stride - uniforms.pad + rem / ${k};
      let xx = p * uniforms.stride - uniforms.pad + rem % ${k};
      let hIn = uniforms.xShape[1];
      let wIn = uniforms.xShape[2];
      let cIn = uniforms.xShape[3];
      var v = 0.0;
      if (y >= 0 && y < hIn && xx >= 0 && xx < wIn) {
        v = x[((b * hIn + y) * wIn + xx) * cIn + c];
      }
      result[index] = v;
    }
  }`,
  };
}

function run(
  args: Args,
  program: WebGPUProgram,
  inputs: tf.TensorInfo[],
  uniforms?: Uniform[],
): tf.TensorInfo {
  const backend = args.backend as unknown as WebGPUBackend;
  return backend.runWebGPUProgram(program, inputs, "float32", uniforms as never);
}

function layerNormKernel(args: Args): tf.TensorInfo {
  const { x, gamma, beta } = args.inputs as Record<string, tf.TensorInfo>;
  const { eps } = args.attrs as unknown as { eps: number };
  const cols = x.shape[x.shape.length - 1];
  const rows = tf.util.sizeFromShape(x.shape) / cols;
  return run(args, layerNormProgram(rows, cols, [...x.shape]), [x, gamma, beta], [
    { type: "float32", data: [eps] },
    { type: "int32", data: [cols] },
  ]);
}

function geluKernel(args: Args): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  return run(args, geluProgram([...x.shape]), [x]);
}

function softmaxKernel(args: Args): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  const { scale } = args.attrs as unknown as { scale: number };
  const cols = x.shape[x.shape.length - 1];
  const rows = tf.util.sizeFromShape(x.shape) / cols;
  return run(args, softmaxProgram(rows, cols, [...x.shape]), [x], [
    { type: "float32", data: [scale] },
    { type: "int32", data: [cols] },
  ]);
}

function attentionKernel(args: Args): tf.TensorInfo {
  const qkv = args.inputs.qkv as tf.TensorInfo;
  const { batch, heads, scale } = args.attrs as unknown as { batch: number; heads: number; scale: number };
  const [rows, width] = qkv.shape;
  const tokens = rows / batch, d = width / 3 / heads;
  const program = attentionProgram(batch, tokens, heads, d);
  return run(args, program, [qkv], [
    { type: "int32", data: [tokens] },
    { type: "int32", data: [heads] },
    { type: "int32", data: [Math.ceil(tokens / ATT_WG)] },
    { type: "float32", data: [scale] },
  ]);
}

function unfoldKernel(args: Args): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  const { kernel, stride, padding } = args.attrs as unknown as {
    kernel: number;
    stride: number;
    padding: number;
  };
  const [b, h, w, c] = x.shape;
  const ho = Math.floor((h + 2 * padding - kernel) / stride) + 1;
  const wo = Math.floor((w + 2 * padding - kernel) / stride) + 1;
  return run(args, unfoldProgram([b, ho, wo, c * kernel * kernel], kernel), [x], [
    { type: "int32", data: [stride] },
    { type: "int32", data: [padding] },
  ]);
}

/** Our fused kernels for the `webgpu` backend, by kernel name (`zoo/backend/registry.ts` registers them). */
export const WEBGPU_KERNELS: readonly tf.KernelConfig[] = kernelConfigs("webgpu", [
  [LAYER_NORM, layerNormKernel],
  [GELU, geluKernel],
  [SOFTMAX, softmaxKernel],
  [ATTENTION, attentionKernel],
  [UNFOLD, unfoldKernel],
  [PERFORMER, performerKernel],
]);
