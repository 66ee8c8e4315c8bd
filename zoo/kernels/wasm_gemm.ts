/**
 * A single-precision GEMM in WebAssembly with relaxed-SIMD fused multiply-add, generated at run time by
 * `wasm_asm.ts`: `C (M, N) = A (M, K) B (K, N) + bias`, all row-major, with B (and the bias) packed once
 * into 8-column panels. tfjs-backend-wasm's XNNPACK build multiplies with separate `f32x4.mul` and
 * `f32x4.add`; on a CPU with FMA, `f32x4.relaxed_madd` does both in one instruction.
 *
 * The kernel runs on memory it is given (an imported `WebAssembly.Memory`), so it can work directly in
 * tfjs-backend-wasm's heap.
 *
 * Layout of packed B: panel p (columns 8p .. 8p+7) is 8 bias values then K rows of 8 values (zeros past
 * column N), `(K + 1) * 8` floats per panel, panels one after another.
 *
 * @module
 */

import { FuncBuilder, I32, type Local, ModuleBuilder, V128 } from "./wasm_asm.ts";

/** Rows of A per micro-kernel call. */
export const MR = 6;
/** Columns of a packed panel. */
export const NR = 8;
/** k steps unrolled in the micro-kernel. */
const UNROLL = 4;

/** Floats of packed B for `k` rows and `n` columns. */
export function packedSize(k: number, n: number): number {
  return Math.ceil(n / NR) * (k + 1) * NR;
}

/**
 * Packs `b` and an optional bias into `out` (length {@linkcode packedSize}). `b` holds the `k` x `n` operand
 * row-major with rows `stride` floats apart (default `n`), or, when `transposed`, its `n` x `k` transpose
 * (a PyTorch `(out, in)` weight, or attention keys) with rows `stride` floats apart (default `k`).
 */
export function packB(
  b: Float32Array,
  k: number,
  n: number,
  transposed: boolean,
  bias: Float32Array | undefined,
  out: Float32Array,
  stride = transposed ? k : n,
): void {
  const panels = Math.ceil(n / NR);
  out.fill(0, 0, panels * (k + 1) * NR);
  for (let p = 0; p < panels; p++) {
    const base = p * (k + 1) * NR;
    const w = Math.min(NR, n - p * NR);
    if (bias) { for (let c = 0; c < w; c++) out[base + c] = bias[p * NR + c]; }
    if (transposed) {
      for (let c = 0; c < w; c++) {
        const src = (p * NR + c) * stride;
        for (let kk = 0; kk < k; kk++) out[base + (kk + 1) * NR + c] = b[src + kk];
      }
    } else {
      for (let kk = 0; kk < k; kk++) {
        const row = base + (kk + 1) * NR, src = kk * stride + p * NR;
        for (let c = 0; c < w; c++) out[row + c] = b[src + c];
      }
    }
  }
}

/**
 * Micro-kernel `ukr(pa, lda, pb, k, pc, ldc)`: `rows` x 8 tile; `pa`/`pc` byte addresses of the first row of
 * A/C, `lda`/`ldc` row strides in bytes, `pb` the panel (bias first), `k` the depth.
 */
function microKernel(rows: number): FuncBuilder {
  const f = new FuncBuilder([I32, I32, I32, I32, I32, I32], []);
  const [pa, lda, pb, k, pc, ldc] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
  const aPtr: Local[] = [];
  for (let r = 0; r < rows; r++) aPtr.push(f.local(I32));
  const acc: Local[][] = [];
  for (let r = 0; r < rows; r++) acc.push([f.local(V128), f.local(V128)]);
  const b0 = f.local(V128), b1 = f.local(V128), av = f.local(V128);
  const kk = f.local(I32);
  // row pointers
  f.get(pa).set(aPtr[0]);
  for (let r = 1; r < rows; r++) f.get(aPtr[r - 1]).get(lda).add().set(aPtr[r]);
  // accumulators start at the bias
  f.get(pb).v128Load(0).set(b0);
  f.get(pb).v128Load(16).set(b1);
  for (let r = 0; r < rows; r++) {
    f.get(b0).set(acc[r][0]);
    f.get(b1).set(acc[r][1]);
  }
  f.get(pb).i32(32).add().set(pb);
  const step = (u: number) => {
    f.get(pb).v128Load(32 * u).set(b0);
    f.get(pb).v128Load(32 * u + 16).set(b1);
    for (let r = 0; r < rows; r++) {
      f.get(aPtr[r]).v128Load32Splat(4 * u).set(av);
      f.get(av).get(b0).get(acc[r][0]).f32x4Madd().set(acc[r][0]);
      f.get(av).get(b1).get(acc[r][1]).f32x4Madd().set(acc[r][1]);
    }
  };
  const advance = (u: number) => {
    f.get(pb).i32(32 * u).add().set(pb);
    for (let r = 0; r < rows; r++) f.get(aPtr[r]).i32(4 * u).add().set(aPtr[r]);
  };
  // unrolled main loop: while (kk + UNROLL <= k)
  f.i32(0).set(kk);
  f.block().loop();
  f.get(kk).i32(UNROLL).add().get(k).gtS().brIf(1);
  for (let u = 0; u < UNROLL; u++) step(u);
  advance(UNROLL);
  f.get(kk).i32(UNROLL).add().set(kk);
  f.br(0).end().end();
  // remainder
  f.block().loop();
  f.get(kk).get(k).geS().brIf(1);
  step(0);
  advance(1);
  f.get(kk).i32(1).add().set(kk);
  f.br(0).end().end();
  // store
  for (let r = 0; r < rows; r++) {
    f.get(pc).get(acc[r][0]).v128Store(0);
    f.get(pc).get(acc[r][1]).v128Store(16);
    if (r < rows - 1) f.get(pc).get(ldc).add().set(pc);
  }
  return f;
}

/**
 * Driver `gemm(pa, lda, pb, pc, ldc, m, n, k, scratch, block)`: all of C; `lda`/`ldc` row strides of A/C
 * in bytes. Columns go in blocks of `block` panels (sized so that a block of packed B stays in the L2
 * cache); within a block, row blocks of A outside (each stays in L1 across the block's panels) and panels
 * inside, so C is written row by row. `scratch` is 8 * MR * 4 bytes for the last panel when `n` is not a
 * multiple of 8.
 */
function driver(ukr: number[]): FuncBuilder {
  const f = new FuncBuilder([I32, I32, I32, I32, I32, I32, I32, I32, I32, I32], []);
  const [pa, lda, pb, pc, ldc, m, n, k, scratch, block] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) =>
    f.param(i)
  );
  const npanel = f.local(I32), jb = f.local(I32), jend = f.local(I32), p = f.local(I32), i = f.local(I32);
  const panelBytes = f.local(I32), w = f.local(I32), rows = f.local(I32), j = f.local(I32);
  const dst = f.local(I32), dstStride = f.local(I32), r = f.local(I32), c = f.local(I32), arow = f.local(I32);
  f.get(k).i32(1).add().i32(5).shl().set(panelBytes);
  f.get(n).i32(NR - 1).add().i32(3).shrU().set(npanel);
  f.i32(0).set(jb);
  f.block().loop(); // column blocks
  f.get(jb).get(npanel).geS().brIf(1);
  f.get(jb).get(block).add().set(jend);
  f.get(jend).get(npanel).get(jend).get(npanel).ltS().select().set(jend);
  f.i32(0).set(i);
  f.block().loop(); // row blocks
  f.get(i).get(m).geS().brIf(1);
  f.get(m).get(i).sub().set(rows);
  f.get(rows).i32(MR).get(rows).i32(MR).ltS().select().set(rows);
  f.get(pa).get(i).get(lda).mul().add().set(arow);
  f.get(jb).set(p);
  f.block().loop(); // panels of the block
  f.get(p).get(jend).geS().brIf(1);
  f.get(p).i32(3).shl().set(j);
  f.get(n).get(j).sub().set(w);
  f.get(w).i32(NR).get(w).i32(NR).ltS().select().set(w);
  // full panel: straight into C; else into scratch
  f.get(w).i32(NR).ltS().if();
  f.get(scratch).set(dst).i32(NR * 4).set(dstStride);
  f.else();
  f.get(pc).get(i).get(ldc).mul().add().get(j).i32(2).shl().add().set(dst).get(ldc).set(dstStride);
  f.end();
  for (let rr = MR; rr >= 1; rr--) {
    f.get(rows).i32(rr).ne().eqz().if();
    f.get(arow).get(lda).get(pb).get(p).get(panelBytes).mul().add().get(k).get(dst).get(dstStride);
    f.call(ukr[rr - 1]);
    f.end();
  }
  // partial panel: copy rows x w from scratch
  f.get(w).i32(NR).ltS().if();
  f.i32(0).set(r);
  f.block().loop();
  f.get(r).get(rows).geS().brIf(1);
  f.i32(0).set(c);
  f.block().loop();
  f.get(c).get(w).geS().brIf(1);
  f.get(pc).get(i).get(r).add().get(ldc).mul().add().get(j).get(c).add().i32(2).shl().add();
  f.get(scratch).get(r).i32(5).shl().add().get(c).i32(2).shl().add().f32Load();
  f.f32Store();
  f.get(c).i32(1).add().set(c);
  f.br(0).end().end();
  f.get(r).i32(1).add().set(r);
  f.br(0).end().end();
  f.end();
  f.get(p).i32(1).add().set(p);
  f.br(0).end().end();
  f.get(i).i32(MR).add().set(i);
  f.br(0).end().end();
  f.get(jb).get(block).add().set(jb);
  f.br(0).end().end();
  return f;
}

/**
 * `pack(src, k, n, transposed, ldb, bias, out)`: {@linkcode packB} in WebAssembly. `src` holds B row-major
 * (`k` rows `ldb` bytes apart) or, when `transposed` is non-zero, its transpose (`n` rows of `k` values
 * `ldb` bytes apart); `bias` is the address of `n` floats or 0; `out` receives {@linkcode packedSize} floats.
 */
function packFunc(): FuncBuilder {
  const f = new FuncBuilder([I32, I32, I32, I32, I32, I32, I32], []);
  const [src, k, n, transposed, ldb, bias, out] = [0, 1, 2, 3, 4, 5, 6].map((i) => f.param(i));
  const p = f.local(I32), npanel = f.local(I32), base = f.local(I32), w = f.local(I32), c = f.local(I32);
  const kk = f.local(I32), row = f.local(I32), s = f.local(I32), panelBytes = f.local(I32);
  const zero = f.local(V128);
  f.f32x4Const(0).set(zero);
  f.get(k).i32(1).add().i32(5).shl().set(panelBytes);
  f.get(n).i32(NR - 1).add().i32(3).shrU().set(npanel);
  f.i32(0).set(p);
  f.block().loop(); // panels
  f.get(p).get(npanel).geS().brIf(1);
  f.get(out).get(p).get(panelBytes).mul().add().set(base);
  f.get(n).get(p).i32(3).shl().sub().set(w);
  f.get(w).i32(NR).get(w).i32(NR).ltS().select().set(w);
  // bias row (zeros past column n, or everywhere without a bias)
  f.get(base).get(zero).v128Store(0);
  f.get(base).get(zero).v128Store(16);
  f.get(bias).eqz().eqz().if();
  f.i32(0).set(c);
  f.block().loop();
  f.get(c).get(w).geS().brIf(1);
  f.get(base).get(c).i32(2).shl().add();
  f.get(bias).get(p).i32(3).shl().get(c).add().i32(2).shl().add().f32Load();
  f.f32Store();
  f.get(c).i32(1).add().set(c);
  f.br(0).end().end();
  f.end();
  f.get(transposed).eqz().if();
  // row-major: each of the k rows contributes 8 contiguous values
  f.i32(0).set(kk);
  f.block().loop();
  f.get(kk).get(k).geS().brIf(1);
  f.get(base).get(kk).i32(1).add().i32(5).shl().add().set(row);
  f.get(src).get(kk).get(ldb).mul().add().get(p).i32(5).shl().add().set(s);
  f.get(w).i32(NR).ne().eqz().if();
  f.get(row).get(s).v128Load(0).v128Store(0);
  f.get(row).get(s).v128Load(16).v128Store(16);
  f.else();
  f.get(row).get(zero).v128Store(0);
  f.get(row).get(zero).v128Store(16);
  f.i32(0).set(c);
  f.block().loop();
  f.get(c).get(w).geS().brIf(1);
  f.get(row).get(c).i32(2).shl().add().get(s).get(c).i32(2).shl().add().f32Load().f32Store();
  f.get(c).i32(1).add().set(c);
  f.br(0).end().end();
  f.end();
  f.get(kk).i32(1).add().set(kk);
  f.br(0).end().end();
  f.else();
  // transposed: column c of the panel is row (8p + c) of src
  f.get(w).i32(NR).ltS().if();
  f.i32(0).set(kk);
  f.block().loop();
  f.get(kk).get(k).geS().brIf(1);
  f.get(base).get(kk).i32(1).add().i32(5).shl().add().set(row);
  f.get(row).get(zero).v128Store(0);
  f.get(row).get(zero).v128Store(16);
  f.get(kk).i32(1).add().set(kk);
  f.br(0).end().end();
  f.end();
  f.i32(0).set(c);
  f.block().loop();
  f.get(c).get(w).geS().brIf(1);
  f.get(src).get(p).i32(3).shl().get(c).add().get(ldb).mul().add().set(s);
  f.get(base).i32(32).add().get(c).i32(2).shl().add().set(row);
  f.i32(0).set(kk);
  f.block().loop();
  f.get(kk).get(k).geS().brIf(1);
  f.get(row).get(s).f32Load().f32Store();
  f.get(row).i32(32).add().set(row);
  f.get(s).i32(4).add().set(s);
  f.get(kk).i32(1).add().set(kk);
  f.br(0).end().end();
  f.get(c).i32(1).add().set(c);
  f.br(0).end().end();
  f.end();
  f.get(p).i32(1).add().set(p);
  f.br(0).end().end();
  return f;
}

/** Panels per column block for depth `k`: a block of packed B within about 256 KB. */
export function panelsPerBlock(k: number): number {
  return Math.max(1, Math.floor((256 * 1024) / ((k + 1) * NR * 4)));
}

/** The GEMM module's exports. */
export interface GemmExports {
  /**
   * `gemm(pa, lda, pb, pc, ldc, m, n, k, scratch, block)`: byte addresses and byte row strides (see the
   * module doc); C = A B + bias for `m` rows; `block` from {@linkcode panelsPerBlock}.
   */
  gemm(
    pa: number,
    lda: number,
    pb: number,
    pc: number,
    ldc: number,
    m: number,
    n: number,
    k: number,
    scratch: number,
    block: number,
  ): void;
  /**
   * `pack(src, k, n, transposed, ldb, bias, out)`: packs B (see {@linkcode packB}; `transposed` 0 or 1,
   * `ldb` the row stride of `src` in bytes, `bias` an address or 0) into `out`.
   */
  pack(src: number, k: number, n: number, transposed: number, ldb: number, bias: number, out: number): void;
}

/** The module's bytes, importing its memory as `env.memory` (`shared` for a shared memory). */
export function gemmModuleBytes(shared: boolean): Uint8Array {
  const mod = new ModuleBuilder();
  const ukr: number[] = [];
  for (let rows = 1; rows <= MR; rows++) ukr.push(mod.add(microKernel(rows)));
  mod.add(driver(ukr), "gemm");
  mod.add(packFunc(), "pack");
  return mod.encode({ module: "env", field: "memory", shared, min: 1, max: shared ? 65536 : undefined });
}

let supported: boolean | undefined;

/** Whether this runtime validates the module (WebAssembly SIMD with relaxed SIMD); checked once. */
export function gemmSupported(): boolean {
  if (supported === undefined) {
    try {
      supported = WebAssembly.validate(gemmModuleBytes(false) as BufferSource);
    } catch {
      supported = false;
    }
  }
  return supported;
}

/** Instantiates the GEMM on `memory`. */
export function instantiateGemm(memory: WebAssembly.Memory, shared = false): GemmExports {
  const module = new WebAssembly.Module(gemmModuleBytes(shared) as BufferSource);
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  return instance.exports as unknown as GemmExports;
}
