/**
 * Our wasm kernels (zoo/kernels): the relaxed-SIMD GEMM that replaces tfjs-backend-wasm's matrix products,
 * and the fused GELU, LayerNorm, scaled softmax and attention kernels. Each is checked against a float64
 * reference and against the generic tfjs path the layers use otherwise; the model with the kernels is checked
 * against the official PyTorch outputs (tests/fixtures/reference). Plus: the packed-weight cache follows the
 * tensors' lifetimes, gradients never go through the (gradient-less) fused kernels, and the multi-threaded
 * wasm build starts in Deno and computes the same thing.
 */
import assert from "node:assert/strict";
import { generic, maxAbs, values } from "../../support/kernels.ts";
import { setBackend, tf } from "../../../zoo/mod.ts";
import {
  configureKernels,
  prepareKernels,
  resetWasmGemmCounters,
  wasmGemmCounters,
} from "../../../zoo/kernels/mod.ts";
import {
  fusedAttention,
  fusedClassAttention,
  fusedGelu,
  fusedLayerNorm,
  fusedLinear,
  fusedPerformer,
  fusedSoftmax,
  fusedUnfold,
} from "../../../zoo/kernels/fused.ts";
import { ParamStore } from "../../../zoo/layers/params.ts";
import { Linear } from "../../../zoo/layers/linear.ts";
import { TokenPerformer } from "../../../zoo/layers/t2t.ts";
import { SoftSplit } from "../../../zoo/layers/soft_split.ts";
import { gemmSupported, instantiateGemm, NR, packB, packedSize } from "../../../zoo/kernels/wasm_gemm.ts";
import { LINEAR_OUT_ALIGN } from "../../../zoo/kernels/names.ts";
import { instantiateOps } from "../../../zoo/kernels/wasm_ops.ts";
import { DEFAULT_SPIN_POLLS, guidedChunks, guidedStart } from "../../../zoo/kernels/wasm_tasks.ts";
import {
  addressOf,
  type WasmBackend,
  wasmContext,
  wasmPackedCount,
} from "../../../zoo/kernels/wasm_runtime.ts";
import { packToHeap } from "../../../zoo/kernels/wasm_matmul.ts";
import { attentionCore, gelu, layerNorm } from "../../../zoo/layers/ops.ts";
import { classTokenAttention, mergeHeads, splitFused } from "../../../zoo/layers/attention.ts";
import { checkForwardParity, summary } from "../../support/zoo.ts";
import { installGradients } from "../../../zoo/backend/registry.ts";
import { WASM_BACKWARD_KERNELS } from "../../../zoo/kernels/wasm_backward.ts";

installGradients(); // the tests below take gradients through the model

await setBackend("wasm");
prepareKernels();
const relaxed = gemmSupported();
if (!relaxed) console.log("this runtime has no WebAssembly relaxed SIMD: the wasm kernel tests are skipped");
const opts = { ignore: !relaxed };

/** float64 `a (B, M, K) @ b (B, K, N)` (or `b (B, N, K)` when transposed), batch-broadcast, plus bias. */
function refMatMul(
  a: Float32Array,
  [ba, m, k]: number[],
  b: Float32Array,
  [bb, ,]: number[],
  n: number,
  transposeB: boolean,
  bias?: Float32Array,
): Float64Array {
  const batch = Math.max(ba, bb);
  const out = new Float64Array(batch * m * n);
  for (let t = 0; t < batch; t++) {
    const ao = (ba === 1 ? 0 : t) * m * k, bo = (bb === 1 ? 0 : t) * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = bias ? bias[j] : 0;
        for (let kk = 0; kk < k; kk++) {
          s += a[ao + i * k + kk] * (transposeB ? b[bo + j * k + kk] : b[bo + kk * n + j]);
        }
        out[(t * m + i) * n + j] = s;
      }
    }
  }
  return out;
}

Deno.test({
  name: "wasm GEMM: products and fused products match float64 and XNNPACK, all edge sizes",
  ...opts,
  fn: () => {
    const cases: { a: number[]; b: number[]; tb: boolean; bias: boolean }[] = [
      { a: [1, 197, 64], b: [1, 64, 96], tb: false, bias: true },
      { a: [1, 13, 61], b: [1, 7, 61], tb: true, bias: true }, // m, n, k not multiples of 6, 8, 4
      { a: [1, 1, 1], b: [1, 1, 1], tb: false, bias: false },
      { a: [1, 5, 3], b: [1, 3, 17], tb: false, bias: false },
      { a: [3, 11, 9], b: [3, 9, 10], tb: false, bias: false }, // batched
      { a: [3, 11, 9], b: [3, 10, 9], tb: true, bias: false },
      { a: [4, 7, 12], b: [1, 12, 9], tb: false, bias: true }, // b broadcast over a's batch
      { a: [1, 7, 12], b: [2, 12, 9], tb: false, bias: false }, // a broadcast over b's batch
    ];
    cases.forEach(({ a: as, b: bs, tb, bias: withBias }, ci) => {
      const n = tb ? bs[1] : bs[2];
      const av = values(as.reduce((x, y) => x * y), 11 + ci),
        bv = values(bs.reduce((x, y) => x * y), 97 + ci);
      const biasV = withBias ? values(n, 5 + ci) : undefined;
      const want = refMatMul(av, as, bv, bs, n, tb, biasV);
      const run = () =>
        tf.tidy(() => {
          const a = tf.tensor3d(av, as as [number, number, number]);
          const b = tf.tensor3d(bv, bs as [number, number, number]);
          const y = withBias
            ? tf.fused.matMul({ a, b, transposeB: tb, bias: tf.tensor1d(biasV!) })
            : tf.matMul(a, b, false, tb);
          return y.dataSync() as Float32Array;
        });
      resetWasmGemmCounters();
      const ours = run();
      assert.equal(wasmGemmCounters().gemm, 1, `case ${ci} ran on the GEMM`);
      configureKernels({ enabled: false });
      const xnn = run();
      configureKernels({ enabled: true });
      const tol = 2e-6 * Math.sqrt(as[2]) + 1e-7;
      assert.ok(maxAbs(ours, want) <= tol, `case ${ci}: ours vs float64 ${maxAbs(ours, want)} > ${tol}`);
      // tfjs-backend-wasm 4.22's own _FusedMatMul adds the bias wrongly with transposeB or a broadcast b;
      // our wrapper (zoo/kernels/wasm_matmul.ts) hands XNNPACK only untransposed 2-D products, so even
      // with our kernels off every case must be right
      assert.ok(maxAbs(xnn, want) <= tol, `case ${ci}: XNNPACK vs float64 ${maxAbs(xnn, want)}`);
    });
  },
});

Deno.test({
  name:
    "wasm products with a transposed left operand, on the GEMM (transposed on the pool, deep ones in slices) and on XNNPACK, match float64",
  ...opts,
  fn: () => {
    for (
      const [g, m, k, n, tb] of [
        [1, 13, 7, 9, false],
        [3, 5, 11, 6, true],
        [2, 64, 197, 32, false],
        // transposed on the pool (columns past a multiple of eight too); deep products in slices of the depth
        [1, 300, 500, 20, false],
        [1, 40, 5000, 24, false],
        [1, 19, 4099, 13, true],
      ] as const
    ) {
      const av = values(g * k * m, g + m), bv = values(g * k * n, n + k);
      // float64 of a^T b (a stored (g, k, m)), b stored (g, k, n) or (g, n, k)
      const want = new Float64Array(g * m * n);
      for (let t = 0; t < g; t++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let kk = 0; kk < k; kk++) {
              s += av[t * k * m + kk * m + i] *
                (tb ? bv[t * n * k + j * k + kk] : bv[t * k * n + kk * n + j]);
            }
            want[(t * m + i) * n + j] = s;
          }
        }
      }
      const run = () =>
        tf.tidy(() =>
          tf.matMul(tf.tensor3d(av, [g, k, m]), tf.tensor3d(bv, tb ? [g, n, k] : [g, k, n]), true, tb)
            .dataSync() as Float32Array
        );
      const ours = run();
      configureKernels({ enabled: false });
      let xnn: Float32Array;
      try {
        xnn = run();
      } finally {
        configureKernels({ enabled: true });
      }
      const tol = 2e-6 * Math.sqrt(k) + 1e-7;
      assert.ok(maxAbs(ours, want) <= tol, `${g}x${m}x${k}x${n}: GEMM ${maxAbs(ours, want)}`);
      assert.ok(maxAbs(xnn, want) <= tol, `${g}x${m}x${k}x${n}: XNNPACK ${maxAbs(xnn, want)}`);
    }
  },
});

Deno.test({
  name:
    "wasm deep products (weight-gradient depths) in slices: bias once, every slice summed, against float64",
  ...opts,
  fn: () => {
    for (const [m, k, n, tb] of [[7, 2049, 5, false], [33, 6000, 17, false], [9, 3001, 11, true]] as const) {
      const av = values(m * k, m), bv = values(k * n, n + 1), bias = values(n, 3);
      const want = refMatMul(av, [1, m, k], bv, [1, k, n], n, tb, bias);
      resetWasmGemmCounters();
      const ours = tf.tidy(() =>
        tf.fused.matMul({
          a: tf.tensor2d(av, [m, k]),
          b: tf.tensor2d(bv, tb ? [n, k] : [k, n]),
          transposeB: tb,
          bias: tf.tensor1d(bias),
        }).dataSync()
      );
      assert.ok(maxAbs(ours, want) <= 2e-6 * Math.sqrt(k), `${m}x${k}x${n}: ${maxAbs(ours, want)}`);
      assert.equal(
        wasmGemmCounters().packs,
        Math.ceil(k / 1024),
        `${m}x${k}x${n}: one packed slice per 1024`,
      );
    }
  },
});

Deno.test({
  name:
    "wasm T2tLinear: product, bias, GELU and residual epilogues (a residual read in place too) match the generic ops, 1 to 197 rows",
  ...opts,
  fn: () => {
    for (const [rows, inF, outF] of [[1, 5, 3], [197, 384, 1152], [13, 61, 17], [197, 1152, 384]]) {
      const x = tf.tensor2d(values(rows * inF, rows), [rows, inF]);
      const w = tf.tensor2d(values(outF * inF, inF), [outF, inF]);
      const b = tf.tensor1d(values(outF, outF));
      const r = tf.tensor2d(values(rows * outF, 7), [rows, outF]);
      for (
        const [useBias, useGelu, useRes] of [[true, false, false], [false, true, false], [true, true, true], [
          true,
          false,
          true,
        ]]
      ) {
        const bias = useBias ? b : undefined, res = useRes ? r : undefined;
        const ours = tf.tidy(() => fusedLinear(x, w, bias, useGelu, res)!.dataSync());
        const want = generic(() =>
          tf.tidy(() => {
            let y: tf.Tensor = tf.matMul(x, w, false, true);
            if (bias) y = tf.add(y, bias);
            if (useGelu) y = gelu(y);
            if (res) y = tf.add(res, y);
            return y.dataSync();
          })
        );
        const tol = 2e-6 * Math.sqrt(inF);
        assert.ok(
          maxAbs(ours, want) <= tol,
          `${rows}x${inF}x${outF} ${[useBias, useGelu, useRes]}: ${maxAbs(ours, want)}`,
        );
      }
      // the residual read in place from columns of a wider matrix (the token layers' v inside k/q/v), by the
      // kernel and by Linear.apply's generic path (kernels off), against slicing it out first
      const wide = tf.tensor2d(values(rows * (3 * outF + 2), 11), [rows, 3 * outF + 2]);
      for (const column of [0, 2 * outF, 2 * outF + 2]) {
        const ours = tf.tidy(() => fusedLinear(x, w, b, false, wide, column)!.dataSync());
        const want = generic(() =>
          tf.tidy(() =>
            tf.add(tf.slice(wide, [0, column], [rows, outF]), tf.add(tf.matMul(x, w, false, true), b))
              .dataSync()
          )
        );
        assert.ok(maxAbs(ours, want) <= 2e-6 * Math.sqrt(inF), `column ${column}: ${maxAbs(ours, want)}`);
      }
      assert.throws(() => fusedLinear(x, w, b, false, wide, 2 * outF + 3), /does not cover/);
      const narrow = tf.zeros([rows, inF + 1]) as tf.Tensor2D;
      assert.throws(() => fusedLinear(narrow, w, b, false, undefined), /does not match the weight/);
      narrow.dispose();
      const store = new ParamStore(0, `linear${rows}x${inF}x${outF}`);
      const layer = new Linear(store, "l", inF, outF);
      tf.tidy(() => {
        layer.weight.assign(w);
        layer.bias!.assign(b);
        const fused = layer.apply(x, { residual: wide, residualColumn: outF }).dataSync();
        const plain = generic(() =>
          tf.tidy(() => layer.apply(x, { residual: wide, residualColumn: outF }).dataSync())
        );
        assert.ok(maxAbs(fused, plain) <= 2e-6 * Math.sqrt(inF), `Linear.apply: ${maxAbs(fused, plain)}`);
      });
      tf.dispose([x, w, b, r, wide]);
      store.dispose();
    }
  },
});

Deno.test({
  name:
    "wasm T2tLinear: a range of outputs (from a panel's edge) equals those columns of the whole product; Linear.apply's ranges off the kernel and off a panel's edge too",
  ...opts,
  fn: () => {
    assert.equal(LINEAR_OUT_ALIGN, NR, "T2tLinear's output ranges start on the packed panels' edges");
    for (const [rows, inF, outF] of [[197, 384, 1152], [1, 256, 768], [13, 61, 44]]) {
      const x = tf.tensor2d(values(rows * inF, rows), [rows, inF]);
      const w = tf.tensor2d(values(outF * inF, inF), [outF, inF]);
      const b = tf.tensor1d(values(outF, outF));
      const whole = tf.tidy(() => fusedLinear(x, w, b, true, undefined)!);
      const ranges = [[0, outF / 4], [8, outF / 2 - 8], [outF - outF / 4, outF / 4], [outF / 2 + 4, 7]];
      for (const [start, count] of ranges) {
        const r = tf.tensor2d(values(rows * count, 5), [rows, count]);
        const want = tf.tidy(() => tf.add(r, tf.slice(whole, [0, start], [rows, count])).dataSync());
        const aligned = start % NR === 0;
        const ours = tf.tidy(() => {
          const y = fusedLinear(x, w, b, true, r, 0, { start, count });
          assert.equal(y === undefined, !aligned, `the kernel runs exactly for ranges on a panel's edge`);
          return y?.dataSync();
        });
        if (ours) {
          assert.deepEqual(
            Array.from(ours),
            Array.from(want),
            `${rows}x${inF}x${outF} [${start}, +${count}]`,
          );
        }
        const store = new ParamStore(0, `range${rows}x${start}`);
        const layer = new Linear(store, "l", inF, outF);
        tf.tidy(() => {
          layer.weight.assign(w);
          layer.bias!.assign(b);
          const opts = { gelu: true, residual: r, outputs: { start, count } };
          const fused = layer.apply(x, opts).dataSync();
          const plain = generic(() => tf.tidy(() => layer.apply(x, opts).dataSync()));
          assert.ok(
            maxAbs(fused, want) <= 1e-7,
            `Linear.apply [${start}, +${count}]: ${maxAbs(fused, want)}`,
          );
          assert.ok(
            maxAbs(plain, want) <= 2e-6 * Math.sqrt(inF),
            `generic [${start}]: ${maxAbs(plain, want)}`,
          );
        });
        for (const bad of [{ start: -8, count: 8 }, { start: 0, count: 0 }, { start: outF - 8, count: 16 }]) {
          assert.throws(() => layer.apply(x, { outputs: bad }), /not within the layer's/);
        }
        tf.dispose(r);
        store.dispose();
      }
      tf.dispose([x, w, b, whole]);
    }
  },
});

Deno.test({
  name:
    "wasm T2tPerformer and T2tUnfold match the generic layers (odd sizes, several samples, 3136 tokens; one sample: its steps split between the threads, partial panels)",
  ...opts,
  fn: () => {
    for (
      const [batch, t, dim, emb] of [[2, 5, 7, 6], [1, 3136, 147, 64], [3, 49, 576, 64], [1, 1001, 30, 60]]
    ) {
      const store = new ParamStore(3, "perf");
      const layer = new TokenPerformer(store, dim, emb);
      const x = tf.tensor2d(values(batch * t * dim, t), [batch * t, dim]);
      const kqv = tf.tidy(() => layer.kqv.apply(layer.norm1.apply(x)) as tf.Tensor2D);
      const ran = tf.tidy(() => fusedPerformer(kqv, layer.w as tf.Tensor2D, batch, layer.epsilon)?.shape);
      assert.deepEqual(ran, [batch * t, emb], "the fused kernel runs here");
      const want = generic(() => tf.tidy(() => layer.apply(x, batch, { training: false }).dataSync()));
      const ours = tf.tidy(() => layer.apply(x, batch, { training: false }).dataSync());
      assert.ok(
        maxAbs(ours, want) <= 2e-5,
        `performer ${batch}x${t}x${emb}: fused vs generic ${maxAbs(ours, want)}`,
      );
      tf.dispose([x, kqv]);
      store.dispose();
    }
    for (
      const [batch, h, c, k, st, p] of [[1, 224, 3, 7, 4, 2], [2, 56, 64, 3, 2, 1], [3, 9, 5, 3, 2, 1], [
        1,
        7,
        2,
        7,
        4,
        2,
      ]]
    ) {
      const x = tf.tensor4d(values(batch * h * h * c, h + c), [batch, h, h, c]);
      const split = new SoftSplit(k, st, p, c);
      const ours = tf.tidy(() => fusedUnfold(x, k, st, p)!.dataSync());
      const want = generic(() => tf.tidy(() => split.apply(x).dataSync()));
      assert.deepEqual(ours, want, `unfold ${batch}x${h}x${c} k${k} s${st} p${p}`);
      // the same image NCHW, read as it is (the first soft split of inference), on the pool's kernel and
      // on the backward module's (which training registers where the forward kernels are not)
      const nchw = tf.transpose(x, [0, 3, 1, 2]) as tf.Tensor4D;
      const direct = tf.tidy(() => split.applyChannelsFirst(nchw)!.dataSync());
      assert.deepEqual(direct, want, `unfold NCHW ${batch}x${h}x${c} k${k} s${st} p${p}`);
      const pool = tf.getKernel("T2tUnfold", "wasm")!;
      tf.unregisterKernel("T2tUnfold", "wasm");
      tf.registerKernel(WASM_BACKWARD_KERNELS.find((kc) => kc.kernelName === "T2tUnfold")!);
      try {
        const js = tf.tidy(() => split.applyChannelsFirst(nchw)!.dataSync());
        assert.deepEqual(js, want, `unfold NCHW (backward module) ${batch}x${h}x${c} k${k} s${st} p${p}`);
      } finally {
        tf.unregisterKernel("T2tUnfold", "wasm");
        tf.registerKernel(pool);
      }
      // under a gradient tape: no NCHW kernel (its gradient would be NHWC's)
      tf.grad((v: tf.Tensor) => {
        assert.equal(split.applyChannelsFirst(v as tf.Tensor4D), undefined, "no NCHW split under a tape");
        return tf.sum(v);
      })(nchw).dispose();
      split.dispose();
      tf.dispose([x, nchw]);
    }
  },
});

Deno.test({
  name:
    "wasm transposeSum (the performer's kp^T and sum over tokens): exact transposes, compensated sums, every edge of its 4x4 blocks",
  ...opts,
  fn: () => {
    const memory = new WebAssembly.Memory({ initial: 64 });
    const ops = instantiateOps(memory);
    for (const [rows, cols] of [[1, 4], [5, 7], [3136, 32], [13, 8], [2, 3], [784, 33], [4, 1]]) {
      const src = values(rows * cols, rows + cols).map((v) => Math.abs(v) + 0.5);
      const srcAt = 64, dstAt = srcAt + src.length * 4 + 64, sumsAt = dstAt + src.length * 4 + 64;
      const ldSums = 12; // every third float
      const heap = new Float32Array(memory.buffer);
      heap.set(src, srcAt / 4);
      heap.fill(Number.NaN, dstAt / 4, dstAt / 4 + src.length);
      heap.fill(Number.NaN, sumsAt / 4, sumsAt / 4 + 3 * cols);
      ops.transposeSum(srcAt, rows, cols, dstAt, sumsAt, ldSums);
      const dst = heap.subarray(dstAt / 4, dstAt / 4 + src.length);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++) {
          if (dst[j * rows + r] !== src[r * cols + j]) assert.fail(`${rows}x${cols}: dst[${j}, ${r}]`);
        }
      }
      for (let j = 0; j < cols; j++) {
        let want = 0;
        for (let r = 0; r < rows; r++) want += src[r * cols + j];
        const got = heap[sumsAt / 4 + 3 * j];
        assert.ok(Math.abs(got - want) <= 2e-7 * want, `${rows}x${cols}: sum ${j} ${got} vs ${want}`);
      }
    }
  },
});

/** The backend's view of a tensor (data id, shape, dtype), as kernels see it. */
function tensorInfo(t: tf.Tensor): Parameters<typeof addressOf>[1] {
  return { dataId: t.dataId, shape: t.shape, dtype: t.dtype };
}

Deno.test({
  name:
    "wasm GEMM: packing split between the pool's threads equals packB (both layouts, partial panels, bias)",
  ...opts,
  fn: () => {
    const c = wasmContext(tf.backend() as unknown as WasmBackend)!;
    assert.ok(c.pool && c.pool.threads > 1, "the tests run on the kernel pool");
    for (const [k, n] of [[384, 1152], [1000, 67], [3000, 25]]) {
      for (const transposed of [false, true]) {
        for (const withBias of [false, true]) {
          const rows = transposed ? n : k, cols = transposed ? k : n;
          const src = tf.tensor2d(values(rows * cols, k + n), [rows, cols]);
          const bias = tf.tensor1d(values(n, n + 1));
          const want = new Float32Array(packedSize(k, n));
          packB(
            src.dataSync() as Float32Array,
            k,
            n,
            transposed,
            withBias ? bias.dataSync() as Float32Array : undefined,
            want,
            cols,
          );
          const ptr = packToHeap(
            c,
            addressOf(c, tensorInfo(src)),
            k,
            n,
            transposed,
            cols,
            withBias ? tensorInfo(bias) : undefined,
          );
          const got = new Float32Array(c.memory.buffer, ptr, want.length).slice();
          c.backend.wasm._free(ptr);
          assert.deepEqual(got, want, `k ${k} n ${n} transposed ${transposed} bias ${withBias}`);
          tf.dispose([src, bias]);
        }
      }
    }
  },
});

Deno.test("wasm GEMM tasks: the guided split covers every unit once, in chunks that never grow", () => {
  for (const threads of [2, 3, 4, 8]) {
    for (let units = 1; units <= 600; units++) {
      const n = guidedChunks(units, threads);
      const min = Math.max(1, Math.ceil(units / 32));
      let prev = Infinity;
      for (let i = 0; i < n; i++) {
        const size = guidedStart(i + 1, units, threads) - guidedStart(i, units, threads);
        assert.ok(size >= 1 && size <= prev, `${units} units, ${threads} threads: chunk ${i} of ${size}`);
        // every chunk but the last is at least the minimum; the first a 1/(2 threads) share
        if (i < n - 1) assert.ok(size >= min);
        prev = size;
      }
      assert.equal(guidedStart(0, units, threads), 0);
      assert.equal(guidedStart(n, units, threads), units, `${units} units, ${threads} threads: all covered`);
      assert.ok(n <= 2 * threads * 8 + 32, `${units} units: ${n} chunks`);
    }
  }
  // 197 rows (33 six-row tiles) on two threads
  assert.deepEqual(
    Array.from({ length: guidedChunks(33, 2) }, (_, i) => guidedStart(i + 1, 33, 2) - guidedStart(i, 33, 2)),
    [9, 6, 5, 4, 3, 2, 2, 2],
  );
});

Deno.test({
  name: "wasm GEMM: the WebAssembly packing equals packB for both layouts, strides, partial panels, bias",
  ...opts,
  fn: () => {
    const memory = new WebAssembly.Memory({ initial: 64 });
    const g = instantiateGemm(memory);
    const cases = [[1, 1], [3, 8], [7, 5], [64, 197], [197, 64], [13, 17], [384, 24]];
    for (const [k, n] of cases) {
      for (const transposed of [false, true]) {
        for (const withBias of [false, true]) {
          const rows = transposed ? n : k, cols = transposed ? k : n, stride = cols + 3;
          const src = values(rows * stride, k * 7 + n), bias = values(n, n + 1);
          const want = new Float32Array(packedSize(k, n));
          packB(src, k, n, transposed, withBias ? bias : undefined, want, stride);
          const heap = new Float32Array(memory.buffer);
          const srcAt = 16, biasAt = srcAt + src.length * 4, outAt = biasAt + n * 4 + 64;
          heap.set(src, srcAt / 4);
          heap.set(bias, biasAt / 4);
          heap.fill(Number.NaN, outAt / 4, outAt / 4 + want.length); // every float must be written
          g.pack(srcAt, k, n, transposed ? 1 : 0, stride * 4, withBias ? biasAt : 0, outAt);
          const got = heap.subarray(outAt / 4, outAt / 4 + want.length);
          assert.deepEqual(got, want, `k ${k} n ${n} transposed ${transposed} bias ${withBias}`);
        }
      }
    }
  },
});

Deno.test({
  name: "wasm GEMM: a weight is packed once and its packed copy freed with it",
  ...opts,
  fn: () => {
    const w = tf.tensor2d(values(64 * 40, 3), [64, 40]);
    const bias = tf.tensor1d(values(40, 4));
    const x = tf.tensor2d(values(10 * 64, 5), [10, 64]);
    const before = wasmPackedCount();
    resetWasmGemmCounters();
    for (let i = 0; i < 3; i++) tf.tidy(() => tf.fused.matMul({ a: x, b: w, bias }).dataSync());
    assert.equal(wasmGemmCounters().packs, 1, "packed on first use only");
    assert.equal(wasmPackedCount(), before + 1);
    // another bias with the same weight: the bias rows are rewritten, the result follows
    const bias2 = tf.tensor1d(values(40, 9));
    const y1 = tf.tidy(() => tf.sub(tf.fused.matMul({ a: x, b: w, bias: bias2 }), tf.matMul(x, w)));
    assert.ok(maxAbs(y1.dataSync(), tf.tile(tf.reshape(bias2, [1, 40]), [10, 1]).dataSync()) < 1e-5);
    assert.equal(wasmGemmCounters().packs, 1);
    // used in both layouts (as training does: x W^T forward, dy W backward): each packed once, both kept
    const dy = tf.tensor2d(values(10 * 40, 6), [10, 40]);
    resetWasmGemmCounters();
    for (let i = 0; i < 3; i++) {
      tf.tidy(() => {
        tf.matMul(dy, w, false, true).dataSync();
        tf.matMul(x, w).dataSync();
      });
    }
    assert.equal(wasmGemmCounters().packs, 1, "the plain layout was cached; only the transposed one is new");
    assert.equal(wasmPackedCount(), before + 2);
    tf.dispose([w, y1, dy]);
    assert.equal(wasmPackedCount(), before, "disposing the weight frees its packed copies");
    tf.dispose([bias, bias2, x]);
  },
});

Deno.test({
  name: "wasm fused GELU, LayerNorm and softmax match float64 and the generic ops",
  ...opts,
  fn: () => {
    for (const cols of [1, 3, 28, 64, 147, 197, 384]) {
      const rows = 9;
      const xv = values(rows * cols, cols).map((v) => v * 6);
      const gv = values(cols, 2).map((v) => 1 + v / 4), bv = values(cols, 3);
      const x = tf.tensor2d(xv, [rows, cols]), g = tf.tensor1d(gv), b = tf.tensor1d(bv);
      // GELU
      const erf = (z: number) => {
        // float64 erf (Numerical Recipes erfc, relative error < 1.2e-7)
        const t = 1 / (1 + 0.5 * Math.abs(z));
        const r = t * Math.exp(
          -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
                            t *
                              (0.27886807 +
                                t *
                                  (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
        );
        return z >= 0 ? 1 - r : r - 1;
      };
      const g64 = Array.from(xv, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
      const fg = tf.tidy(() => fusedGelu(x)!.dataSync());
      assert.ok(maxAbs(fg, g64) < 2e-6, `gelu ${cols}: ${maxAbs(fg, g64)}`);
      assert.ok(maxAbs(fg, generic(() => tf.tidy(() => gelu(x).dataSync()))) < 2e-6);
      // LayerNorm
      const ln64: number[] = [];
      for (let r = 0; r < rows; r++) {
        const row = Array.from(xv.subarray(r * cols, (r + 1) * cols));
        const mean = row.reduce((s, v) => s + v, 0) / cols;
        const v = row.reduce((s, e) => s + (e - mean) ** 2, 0) / cols;
        row.forEach((e, c) => ln64.push(((e - mean) / Math.sqrt(v + 1e-5)) * gv[c] + bv[c]));
      }
      const fl = tf.tidy(() => fusedLayerNorm(x, g, b, 1e-5)!.dataSync());
      assert.ok(maxAbs(fl, ln64) < 1e-5, `layerNorm ${cols}: ${maxAbs(fl, ln64)}`);
      assert.ok(maxAbs(fl, generic(() => tf.tidy(() => layerNorm(x, g, b, 1e-5).dataSync()))) < 1e-5);
      // softmax(scale x)
      const sm64: number[] = [];
      for (let r = 0; r < rows; r++) {
        const row = Array.from(xv.subarray(r * cols, (r + 1) * cols), (v) => 0.3 * v);
        const mx = Math.max(...row);
        const e = row.map((v) => Math.exp(v - mx));
        const s = e.reduce((a, v) => a + v, 0);
        e.forEach((v) => sm64.push(v / s));
      }
      const fs = tf.tidy(() => fusedSoftmax(x, 0.3)!.dataSync());
      assert.ok(maxAbs(fs, sm64) < 1e-6, `softmax ${cols}: ${maxAbs(fs, sm64)}`);
      tf.dispose([x, g, b]);
    }
  },
});

Deno.test({
  name: "wasm fused attention matches the generic split/attention/merge path",
  ...opts,
  fn: () => {
    // on the pool: few heads (each packed once, its rows in blocks) and many; small ones on one thread
    const shapes = [
      [1, 197, 6, 64],
      [1, 300, 2, 32],
      [3, 197, 2, 64],
      [1, 1000, 1, 64],
      [2, 197, 6, 64],
      [
        2,
        23,
        3,
        12,
      ],
      [1, 1, 2, 8],
      [3, 9, 1, 5],
    ];
    for (const [batch, tokens, heads, d] of shapes) {
      const qkv = tf.tensor2d(values(batch * tokens * 3 * heads * d, tokens + d), [
        batch * tokens,
        3 * heads * d,
      ]);
      const scale = d ** -0.5;
      const fused = tf.tidy(() => fusedAttention(qkv, batch, heads, scale)!.dataSync());
      const want = generic(() =>
        tf.tidy(() => {
          const [q, k, v] = splitFused(qkv, batch, tokens, 3, heads);
          const ctx = { training: false };
          const { out } = attentionCore(q, k, v, scale, { scaleFirst: false, attnDrop: 0, ctx });
          return mergeHeads(out, batch, heads).dataSync();
        })
      );
      assert.ok(
        maxAbs(fused, want) < 2e-6,
        `attention ${batch}x${tokens}x${heads}x${d}: ${maxAbs(fused, want)}`,
      );
      qkv.dispose();
    }
  },
});

Deno.test({
  name: "wasm fused class-token attention matches float64 and the generic ops, and model inference runs it",
  ...opts,
  fn: async () => {
    for (
      const [batch, tokens, heads, d] of [[1, 197, 6, 64], [3, 50, 4, 64], [2, 23, 3, 12], [1, 1, 2, 8], [
        2,
        9,
        1,
        5,
      ]]
    ) {
      const c = heads * d;
      const qv = values(batch * c, d + 1),
        kv = values(batch * tokens * c, tokens + d),
        vv = values(batch * tokens * c, 7);
      const q = tf.tensor2d(qv, [batch, c]), k = tf.tensor2d(kv, [batch * tokens, c]);
      const v = tf.tensor2d(vv, [batch * tokens, c]);
      const scale = d ** -0.5;
      const fused = tf.tidy(() => fusedClassAttention(q, k, v, batch, heads, scale)!.dataSync());
      const viaLayer = tf.tidy(() => classTokenAttention(q, k, v, batch, heads, scale).dataSync());
      const want = generic(() => tf.tidy(() => classTokenAttention(q, k, v, batch, heads, scale).dataSync()));
      // float64: per sample and head, softmax of the scaled scores, then the weighted values
      const ref = new Float64Array(batch * c);
      for (let b = 0; b < batch; b++) {
        for (let h = 0; h < heads; h++) {
          const s = Array.from({ length: tokens }, (_, j) => {
            let dot = 0;
            for (let i = 0; i < d; i++) dot += qv[b * c + h * d + i] * kv[(b * tokens + j) * c + h * d + i];
            return dot * scale;
          });
          const top = Math.max(...s), e = s.map((x) => Math.exp(x - top)), sum = e.reduce((a, x) => a + x, 0);
          for (let i = 0; i < d; i++) {
            let o = 0;
            for (let j = 0; j < tokens; j++) o += (e[j] / sum) * vv[(b * tokens + j) * c + h * d + i];
            ref[b * c + h * d + i] = o;
          }
        }
      }
      const shape = `${batch}x${tokens}x${heads}x${d}`;
      assert.ok(maxAbs(fused, ref) < 2e-6, `class attention ${shape} vs float64: ${maxAbs(fused, ref)}`);
      assert.ok(
        maxAbs(fused, want) < 2e-6,
        `class attention ${shape} vs the generic ops: ${maxAbs(fused, want)}`,
      );
      assert.deepEqual(viaLayer, fused, `${shape}: the layer's function runs the kernel`);
      tf.dispose([q, k, v]);
    }
    // a model's plain inference runs it once (its last block); a pass with attention maps never
    const { T2tVit7 } = await import("../../../zoo/mod.ts");
    const model = await T2tVit7.create({ imgSize: 64, numClasses: 10 });
    const x = tf.randomNormal([2, 3, 64, 64]) as tf.Tensor4D;
    try {
      const kernels = async (f: () => tf.Tensor) => {
        const info = await tf.profile(() => f());
        const names = info.kernels.map((k) => k.name);
        tf.dispose(info.result as tf.Tensor);
        return names.filter((n) => n === "T2tClassAttention").length;
      };
      assert.equal(await kernels(() => model.forward(x)), 1, "forward");
      assert.equal(await kernels(() => model.forwardFeatures(x)), 1, "forwardFeatures");
      assert.equal(
        await kernels(() => {
          const { logits, attentions } = model.forwardWithAttention(x);
          tf.dispose(attentions);
          return logits;
        }),
        0,
        "a pass with attention maps runs its last block whole",
      );
    } finally {
      x.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name: "wasm fused kernels stay out of gradients (they have none)",
  ...opts,
  fn: () => {
    const x = tf.tensor1d([0.5, -1, 2]);
    const seen: (tf.Tensor | undefined)[] = [];
    const g = tf.grad((v: tf.Tensor) => {
      const f = fusedGelu(v);
      seen.push(f);
      return tf.sum(gelu(v));
    })(x);
    assert.equal(seen[0], undefined, "no fused kernel while a gradient is recorded");
    assert.equal(g.shape[0], 3);
    tf.dispose([x, g]);
  },
});

Deno.test({
  name: "wasm with our kernels: t2t_vit_7 and t2t_vit_t_14 match the official outputs (5e-5)",
  ...opts,
  fn: async () => {
    const before = tf.memory().numTensors;
    for (const entry of ["t2t_vit_7", "t2t_vit_t_14"]) {
      console.log(summary(entry, await checkForwardParity(entry, "wasm", 5e-5, { batch: 1 })));
    }
    assert.equal(tf.memory().numTensors, before);
  },
});

Deno.test({
  name:
    "wasm threads: the threaded build starts in Deno (its pthread workers stand-ins), the kernel pool runs on 2 threads, same results, heap grown at load",
  ...opts,
  fn: async () => {
    // a fresh process: threads must be chosen before the wasm backend starts
    const script = new URL("../../support/kernels_threads_child.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, `child failed: ${new TextDecoder().decode(out.stderr)}`);
    const r = JSON.parse(text.trim().split("\n").at(-1)!);
    assert.equal(r.threads, 2, "2 threads");
    assert.ok(r.shared, "the heap is shared memory");
    assert.ok(r.gemm > 0, "our GEMM runs on the shared heap");
    assert.ok(r.maxError <= 5e-5, `t2t_vit_7 vs the official outputs: ${r.maxError}`);
    assert.ok(r.workerRestored, "the global Worker is restored (value and property)");
    // the build pre-creates eight pthread workers; none is started while our pool owns the threads
    assert.equal(r.standIns, 8, `pthread workers handed stand-ins (start-up ${r.startMs.toFixed(0)} ms)`);
    assert.ok(r.allThreadsRun, `every thread of the pool runs chunks (${r.chunks})`);
    // every worker joins the start-up exercise (a worker that missed it left the caller waiting 2 s for it)
    assert.deepEqual(r.startChunks, [1, 1], `chunks per thread at start-up: ${r.startChunks}`);
    assert.equal(r.spinDefault, DEFAULT_SPIN_POLLS, "the pool polls before blocking by default");
    assert.equal(r.spinAfter, 0, "the polling is adjustable");
  },
});

Deno.test({
  name:
    "wasm threads: a kernel that traps fails its task with an error naming the thread, and the pool keeps working (no hang)",
  ...opts,
  fn: async () => {
    const script = new URL("../../support/pool_failure_child.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000), // a pool waiting for a dead worker hangs
    }).output();
    assert.equal(out.code, 0, `child failed or hung: ${new TextDecoder().decode(out.stderr)}`);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    assert.equal(r.threads, 2);
    assert.ok(r.rounds >= 40);
    assert.equal(r.failures, r.rounds, "every trapping task throws");
    for (const m of r.messages) {
      assert.match(
        m,
        /^a wasm kernel task \(type \d+\) failed in the kernel pool's .*: memory access out of bounds$/,
      );
    }
    // traps on the calling thread and on the worker both reach the caller
    assert.ok(r.messages.some((m: string) => /calling thread/.test(m)), r.messages.join("; "));
    assert.ok(r.messages.some((m: string) => /worker 1/.test(m)), r.messages.join("; "));
    assert.ok(r.allThreadsRun, "both threads still run chunks");
    assert.equal(r.maxDiff, 0, "products after the failures are right");
  },
});

Deno.test({
  name:
    "wasm threads: a model's first forward pass of one image finds its heap grown at load, not by far more",
  ...opts,
  fn: async () => {
    // fresh processes (a heap never shrinks): the performer family, and attention as the token mixer at
    // 384 px (9216 tokens: its buffers are per thread and bounded, not tokens^2)
    const script = new URL("../../support/first_pass_heap_child.ts", import.meta.url).pathname;
    for (const [name, img] of [["t2t_vit_7", 224], ["t2t_vit_t_14", 384]] as const) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, name, String(img)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, `child failed: ${new TextDecoder().decode(out.stderr)}`);
      const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
      assert.equal(
        r.grewBy,
        0,
        `${name} at ${img}: the first forward pass grew the heap by ${r.grewBy} bytes`,
      );
      // weights and their packed copies, plus at most 128 MB (activations, buffers, the allocator's slack)
      const bound = 2 * r.weightBytes + 128 * 2 ** 20;
      assert.ok(r.afterLoad <= bound, `${name} at ${img}: heap ${r.afterLoad} bytes after load > ${bound}`);
    }
  },
});
