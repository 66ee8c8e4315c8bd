/**
 * `T2tPerformer` on tfjs-backend-webgpu: the `Token_performer`'s `single_attn` from the fused `kqv`
 * projection, in four WGSL dispatches instead of tfjs's ~20 (split transpose and slices, two `prm_exp`s of
 * six element-wise ops and a product each, a sum, three batched products, an add and a divide):
 *
 * 1. random features: `kp` and `qp` side by side, `(B T, 2 m)`, each value `exp(w_j . x - |x|^2 / 2) /
 *    sqrt(m)` read straight from the `kqv` rows (no split);
 * 2. the sums over tokens, in chunks of tokens then over chunks (two dispatches): `kptv[b, i, j] =
 *    sum_t v[b, t, i] kp[b, t, j]` for `i < emb`, and row `emb` is `sum_t kp[b, t, j]` (the normaliser's
 *    key sum);
 * 3. per token and output channel: `y = (qp . kptv[i]) / (qp . ksum + eps)`.
 *
 * The projection, dropout and residual stay outside (the caller's generic ops).
 *
 * @module
 */

import type * as tf from "@tensorflow/tfjs-core";
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu";
import { type Args, flat, MAIN } from "./webgpu_program.ts";

/** Workgroup size of the flat passes (1 and 3). */
const WG = 64;

/** `vec4<f32>` when `n` is a multiple of 4, else `f32`: the width rows are read in. */
function lanes(n: number): { c: number; type: string; dot: (a: string, b: string) => string } {
  return n % 4 === 0
    ? { c: 4, type: "vec4<f32>", dot: (a, b) => `dot(${a}, ${b})` }
    : { c: 1, type: "f32", dot: (a, b) => `${a} * ${b}` };
}

/** Pass 1: `(rows, 2 m)`, `kp` in columns `[0, m)`, `qp` in `[m, 2 m)`. */
function featuresProgram(rows: number, m: number, emb: number): WebGPUProgram {
  const { c, dot } = lanes(emb);
  return {
    ...flat([rows, 2 * m], WG, rows * 2 * m),
    variableNames: ["kqv", "w"],
    variableComponents: [c, c],
    size: true,
    uniforms: "emb : i32, m : i32, norm : f32,",
    shaderKey: `t2t_performer_features_${c}`,
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let ec = uniforms.emb / ${c};
      let m = uniforms.m;
      let row = index / (2 * m);
      let col = index % (2 * m);
      let part = col / m;
      let j = col % m;
      let xbase = row * 3 * ec + part * ec;
      let wbase = j * ec;
      var dotw = 0.0;
      var sq = 0.0;
      for (var k = 0; k < ec; k++) {
        let xv = kqv[xbase + k];
        dotw += ${dot("w[wbase + k]", "xv")};
        sq += ${dot("xv", "xv")};
      }
      result[index] = exp(dotw - 0.5 * sq) * uniforms.norm;
    }
  }`,
  };
}

/** Tokens summed by one invocation of pass 2a. */
const CHUNK = 128;

/**
 * Pass 2a: `(B, chunks, emb + 1, m)` partial sums over chunks of {@linkcode CHUNK} tokens: `v^T kp` and, as
 * the last row, `sum_t kp`. Neighbouring invocations take neighbouring `j`, so the `kp` reads are contiguous
 * and the `v` read is shared.
 */
function partialSumsProgram(batch: number, chunks: number, emb: number, m: number): WebGPUProgram {
  const size = batch * chunks * (emb + 1) * m;
  return {
    ...flat([batch, chunks, emb + 1, m], WG, size),
    variableNames: ["kqv", "p"],
    size: true,
    uniforms: "tokens : i32, emb : i32, m : i32, chunks : i32,",
    shaderKey: `t2t_performer_partial_${CHUNK}`,
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let e = uniforms.emb;
      let m = uniforms.m;
      let n = uniforms.tokens;
      let j = index % m;
      let i = (index / m) % (e + 1);
      let bc = index / ((e + 1) * m);
      let chunk = bc % uniforms.chunks;
      let b = bc / uniforms.chunks;
      let t0 = chunk * ${CHUNK};
      let t1 = min(n, t0 + ${CHUNK});
      var acc = 0.0;
      if (i < e) {
        for (var t = t0; t < t1; t++) {
          let r = b * n + t;
          acc += kqv[r * 3 * e + 2 * e + i] * p[r * 2 * m + j];
        }
      } else {
        for (var t = t0; t < t1; t++) { acc += p[(b * n + t) * 2 * m + j]; }
      }
      result[index] = acc;
    }
  }`,
  };
}

/** Pass 2b: `(B, emb + 1, m)`, the partial sums of pass 2a added over chunks. */
function sumsProgram(batch: number, emb: number, m: number): WebGPUProgram {
  const size = batch * (emb + 1) * m;
  return {
    ...flat([batch, emb + 1, m], WG, size),
    variableNames: ["part"],
    size: true,
    uniforms: "chunks : i32, per : i32,",
    shaderKey: "t2t_performer_sums",
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let per = uniforms.per;
      let b = index / per;
      let k = index % per;
      var acc = 0.0;
      for (var c = 0; c < uniforms.chunks; c++) { acc += part[(b * uniforms.chunks + c) * per + k]; }
      result[index] = acc;
    }
  }`,
  };
}

/** Pass 3: `(B T, emb)`: `(qp . kptv[i]) / (qp . ksum + eps)`. */
function outputProgram(rows: number, emb: number, m: number): WebGPUProgram {
  const { c, dot } = lanes(m);
  return {
    ...flat([rows, emb], WG, rows * emb),
    variableNames: ["p", "sums"],
    variableComponents: [c, c],
    size: true,
    uniforms: "tokens : i32, emb : i32, m : i32, eps : f32,",
    shaderKey: `t2t_performer_output_${c}`,
    getUserCode: () => `
  ${MAIN} {
    if (index < uniforms.size) {
      let e = uniforms.emb;
      let mc = uniforms.m / ${c};
      let row = index / e;
      let i = index % e;
      let b = row / uniforms.tokens;
      let qbase = row * 2 * mc + mc;
      let sbase = b * (e + 1) * mc;
      var num = 0.0;
      var den = 0.0;
      for (var j = 0; j < mc; j++) {
        let q = p[qbase + j];
        num += ${dot("q", "sums[sbase + i * mc + j]")};
        den += ${dot("q", "sums[sbase + e * mc + j]")};
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
  const p = backend.runWebGPUProgram(featuresProgram(rows, m, emb), [kqv, w], "float32", [
    i32(emb),
    i32(m),
    f32(1 / Math.sqrt(m)),
  ] as never);
  const chunks = Math.ceil(tokens / CHUNK);
  const part = backend.runWebGPUProgram(partialSumsProgram(batch, chunks, emb, m), [kqv, p], "float32", [
    i32(tokens),
    i32(emb),
    i32(m),
    i32(chunks),
  ] as never);
  const sums = backend.runWebGPUProgram(sumsProgram(batch, emb, m), [part], "float32", [
    i32(chunks),
    i32((emb + 1) * m),
  ] as never);
  backend.disposeData(part.dataId);
  const out = backend.runWebGPUProgram(outputProgram(rows, emb, m), [p, sums], "float32", [
    i32(tokens),
    i32(emb),
    i32(m),
    f32(eps),
  ] as never);
  backend.disposeData(p.dataId);
  backend.disposeData(sums.dataId);
  return out;
}
