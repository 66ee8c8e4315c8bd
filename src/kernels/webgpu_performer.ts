/**
 * `T2tPerformer` on tfjs-backend-webgpu: the `Token_performer`'s `single_attn` from the fused `kqv`
 * projection, in three WGSL dispatches instead of tfjs's ~20 (split transpose and slices, two `prm_exp`s of
 * six element-wise ops and a product each, a sum, three batched products, an add and a divide):
 *
 * 1. random features: `kp` and `qp` side by side, `(B T, 2 m)`, each value `exp(w_j . x - |x|^2 / 2) /
 *    sqrt(m)` read straight from the `kqv` rows (no split);
 * 2. the sums over tokens, one workgroup per value: `kptv[b, i, j] = sum_t v[b, t, i] kp[b, t, j]` for
 *    `i < emb`, and row `emb` is `sum_t kp[b, t, j]` (the normaliser's key sum, `v` taken as 1);
 * 3. per token and output channel: `y = (qp . kptv[i]) / (qp . ksum + eps)`.
 *
 * The projection, dropout and residual stay outside (the caller's generic ops).
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu";

type Args = Parameters<tf.KernelFunc>[0];

const MAIN = "fn main(index : i32)";
/** Workgroup size of the flat passes (1 and 3). */
const WG = 64;
/** Workgroup size of the token reduction (pass 2); a power of two. */
const RED_WG = 64;

function flat(outputShape: number[], workgroup: number, invocations: number): Pick<
  WebGPUProgram,
  "outputShape" | "dispatchLayout" | "dispatch" | "workgroupSize"
> {
  return {
    outputShape,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.ceil(invocations / workgroup), 1, 1],
    workgroupSize: [workgroup, 1, 1],
  };
}

/** Pass 1: `(rows, 2 m)`, `kp` in columns `[0, m)`, `qp` in `[m, 2 m)`. */
function featuresProgram(rows: number, m: number): WebGPUProgram {
  return {
    ...flat([rows, 2 * m], WG, rows * 2 * m),
    variableNames: ["kqv", "w"],
    size: true,
    uniforms: "emb : i32, m : i32, norm : f32,",
    shaderKey: "t2t_performer_features",
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let e = uniforms.emb;
      let m = uniforms.m;
      let row = index / (2 * m);
      let col = index % (2 * m);
      let part = col / m;
      let j = col % m;
      let xbase = row * 3 * e + part * e;
      let wbase = j * e;
      var dotw = 0.0;
      var sq = 0.0;
      for (var c = 0; c < e; c++) {
        let xv = kqv[xbase + c];
        dotw += w[wbase + c] * xv;
        sq += xv * xv;
      }
      result[index] = exp(dotw - 0.5 * sq) * uniforms.norm;
    }
  }`,
  };
}

/** Pass 2: `(B, emb + 1, m)`: `v^T kp` per sample, and `sum_t kp` as the last row. */
function sumsProgram(batch: number, emb: number, m: number): WebGPUProgram {
  const outputs = batch * (emb + 1) * m;
  return {
    ...flat([batch, emb + 1, m], RED_WG, outputs * RED_WG),
    variableNames: ["kqv", "p"],
    uniforms: "tokens : i32, emb : i32, m : i32, outputs : i32,",
    shaderKey: `t2t_performer_sums_${RED_WG}`,
    getUserCode: () => `
  var<workgroup> partial : array<f32, ${RED_WG}>;
  ${MAIN} {
    let tid = i32(localId.x);
    let e = uniforms.emb;
    let m = uniforms.m;
    let n = uniforms.tokens;
    // a reshaped (2D/3D) dispatch may start more workgroups than values: they compute value 0 and drop it
    let group = index / ${RED_WG};
    let g = select(0, group, group < uniforms.outputs);
    let b = g / ((e + 1) * m);
    let i = (g / m) % (e + 1);
    let j = g % m;
    var acc = 0.0;
    for (var t = tid; t < n; t += ${RED_WG}) {
      let r = b * n + t;
      let kp = p[r * 2 * m + j];
      var vv = 1.0;
      if (i < e) { vv = kqv[r * 3 * e + 2 * e + i]; }
      acc += vv * kp;
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var s = ${RED_WG / 2}; s > 0; s = s >> 1) {
      if (tid < s) { partial[tid] = partial[tid] + partial[tid + s]; }
      workgroupBarrier();
    }
    if (tid == 0 && group < uniforms.outputs) { result[group] = partial[0]; }
  }`,
  };
}

/** Pass 3: `(B T, emb)`: `(qp . kptv[i]) / (qp . ksum + eps)`. */
function outputProgram(rows: number, emb: number): WebGPUProgram {
  return {
    ...flat([rows, emb], WG, rows * emb),
    variableNames: ["p", "sums"],
    size: true,
    uniforms: "tokens : i32, emb : i32, m : i32, eps : f32,",
    shaderKey: "t2t_performer_output",
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let e = uniforms.emb;
      let m = uniforms.m;
      let row = index / e;
      let i = index % e;
      let b = row / uniforms.tokens;
      let qbase = row * 2 * m + m;
      let sbase = b * (e + 1) * m;
      var num = 0.0;
      var den = 0.0;
      for (var j = 0; j < m; j++) {
        let q = p[qbase + j];
        num += q * sums[sbase + i * m + j];
        den += q * sums[sbase + e * m + j];
      }
      result[index] = num / (den + uniforms.eps);
    }
  }`,
  };
}

/**
 * Kernel function of `T2tPerformer`: `{kqv (B T, 3 emb), w (m, emb)}`, `{batch, eps}` -> `(B T, emb)`.
 */
export function performerKernel(args: Args): tf.TensorInfo {
  const backend = args.backend as unknown as WebGPUBackend;
  const { kqv, w } = args.inputs as Record<string, tf.TensorInfo>;
  const { batch, eps } = args.attrs as unknown as { batch: number; eps: number };
  const rows = kqv.shape[0];
  const [m, emb] = w.shape;
  const tokens = rows / batch;
  const i32 = (v: number) => ({ type: "int32", data: [v] });
  const f32 = (v: number) => ({ type: "float32", data: [v] });
  const p = backend.runWebGPUProgram(featuresProgram(rows, m), [kqv, w], "float32", [
    i32(emb),
    i32(m),
    f32(1 / Math.sqrt(m)),
  ] as never);
  const sums = backend.runWebGPUProgram(sumsProgram(batch, emb, m), [kqv, p], "float32", [
    i32(tokens),
    i32(emb),
    i32(m),
    i32(batch * (emb + 1) * m),
  ] as never);
  const out = backend.runWebGPUProgram(outputProgram(rows, emb), [p, sums], "float32", [
    i32(tokens),
    i32(emb),
    i32(m),
    f32(eps),
  ] as never);
  backend.disposeData(p.dataId);
  backend.disposeData(sums.dataId);
  return out;
}
