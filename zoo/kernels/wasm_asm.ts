/**
 * A small WebAssembly assembler: enough of the binary format (types, an imported memory, functions, exports)
 * and of the instruction set (i32 arithmetic, control flow, f32 and SIMD loads/stores and arithmetic,
 * relaxed-SIMD fused multiply-add) to write the CPU kernels of `wasm_gemm.ts` without a compiler toolchain.
 *
 * @module
 */

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (32-bit). */
function sleb(n: number): number[] {
  const out: number[] = [];
  n |= 0;
  while (true) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function str(s: string): number[] {
  const b = new TextEncoder().encode(s);
  return [...uleb(b.length), ...b];
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

/** Value types. */
export const I32 = 0x7f, F32 = 0x7d, V128 = 0x7b;
/** A value type. */
export type ValType = typeof I32 | typeof F32 | typeof V128;

/** A local variable (or parameter) index. */
export type Local = number & { readonly __local: unique symbol };

/**
 * The body of one function: locals and an instruction stream. Methods append instructions and return
 * `this`, so code reads in stack order: `f.get(a).get(b).i32Add().set(c)`.
 */
export class FuncBuilder {
  readonly #code: number[] = [];
  readonly #prologue: number[] = [];
  readonly #consts = new Map<string, Local>();
  readonly #locals: ValType[] = [];
  readonly #nParams: number;

  /** A function of the given parameter and result types. */
  constructor(readonly params: ValType[], readonly results: ValType[]) {
    this.#nParams = params.length;
  }

  /** Parameter `i`. */
  param(i: number): Local {
    return i as Local;
  }

  /** A new local of type `t`. */
  local(t: ValType): Local {
    this.#locals.push(t);
    return (this.#nParams + this.#locals.length - 1) as Local;
  }

  /**
   * A local holding four equal f32 `v` (or i32 when `int`), set once at function entry: loop bodies read a
   * register instead of materialising the constant on every iteration.
   */
  k(v: number, int = false): Local {
    const key = `${int ? "i" : "f"}${v}`;
    let l = this.#consts.get(key);
    if (l === undefined) {
      l = this.local(V128);
      const b = new Uint8Array(
        int ? new Int32Array([v, v, v, v]).buffer : new Float32Array([v, v, v, v]).buffer,
      );
      this.#prologue.push(0xfd, ...uleb(0x0c), ...b, 0x21, ...uleb(l));
      this.#consts.set(key, l);
    }
    return l;
  }

  #op(...bytes: number[]): this {
    for (const b of bytes) this.#code.push(b);
    return this;
  }

  #simd(op: number, ...rest: number[]): this {
    return this.#op(0xfd, ...uleb(op), ...rest);
  }

  /** `local.get`. */
  get(l: Local): this {
    return this.#op(0x20, ...uleb(l));
  }
  /** `local.set`. */
  set(l: Local): this {
    return this.#op(0x21, ...uleb(l));
  }
  /** `local.tee`. */
  tee(l: Local): this {
    return this.#op(0x22, ...uleb(l));
  }
  /** `i32.const`. */
  i32(v: number): this {
    return this.#op(0x41, ...sleb(v));
  }
  /** `f32.const`. */
  f32(v: number): this {
    const b = new Uint8Array(new Float32Array([v]).buffer);
    return this.#op(0x43, ...b);
  }
  /** `i32.add`. */
  add(): this {
    return this.#op(0x6a);
  }
  /** `i32.sub`. */
  sub(): this {
    return this.#op(0x6b);
  }
  /** `i32.mul`. */
  mul(): this {
    return this.#op(0x6c);
  }
  /** `i32.shl`. */
  shl(): this {
    return this.#op(0x74);
  }
  /** `i32.lt_s`. */
  ltS(): this {
    return this.#op(0x48);
  }
  /** `i32.gt_s`. */
  gtS(): this {
    return this.#op(0x4a);
  }
  /** `i32.le_s`. */
  leS(): this {
    return this.#op(0x4c);
  }
  /** `i32.ge_s`. */
  geS(): this {
    return this.#op(0x4e);
  }
  /** `i32.eqz`. */
  eqz(): this {
    return this.#op(0x45);
  }
  /** `i32.ne`. */
  ne(): this {
    return this.#op(0x47);
  }
  /** `select`. */
  select(): this {
    return this.#op(0x1b);
  }
  /** `drop`. */
  drop(): this {
    return this.#op(0x1a);
  }
  /** `block` (no result). */
  block(): this {
    return this.#op(0x02, 0x40);
  }
  /** `loop` (no result). */
  loop(): this {
    return this.#op(0x03, 0x40);
  }
  /** `if` (no result). */
  if(): this {
    return this.#op(0x04, 0x40);
  }
  /** `else`. */
  else(): this {
    return this.#op(0x05);
  }
  /** `end`. */
  end(): this {
    return this.#op(0x0b);
  }
  /** `br depth`. */
  br(depth: number): this {
    return this.#op(0x0c, ...uleb(depth));
  }
  /** `br_if depth`. */
  brIf(depth: number): this {
    return this.#op(0x0d, ...uleb(depth));
  }
  /** `return`. */
  ret(): this {
    return this.#op(0x0f);
  }
  /** `call f`. */
  call(index: number): this {
    return this.#op(0x10, ...uleb(index));
  }
  /** `f32.load offset`. */
  f32Load(offset = 0): this {
    return this.#op(0x2a, 2, ...uleb(offset));
  }
  /** `f32.store offset`. */
  f32Store(offset = 0): this {
    return this.#op(0x38, 2, ...uleb(offset));
  }
  /** `i32.and`. */
  and(): this {
    return this.#op(0x71);
  }
  /** `i32.or` (named so because `or` reads as a keyword in chains). */
  or_(): this {
    return this.#op(0x72);
  }
  /** `i32.shr_u`. */
  shrU(): this {
    return this.#op(0x76);
  }
  /** `f32.abs`. */
  f32Abs(): this {
    return this.#op(0x8b);
  }
  /** `f32.neg`. */
  f32Neg(): this {
    return this.#op(0x8c);
  }
  /** `f32.sqrt`. */
  f32Sqrt(): this {
    return this.#op(0x91);
  }
  /** `f32.add`. */
  f32Add(): this {
    return this.#op(0x92);
  }
  /** `f32.sub`. */
  f32Sub(): this {
    return this.#op(0x93);
  }
  /** `f32.mul`. */
  f32Mul(): this {
    return this.#op(0x94);
  }
  /** `f32.div`. */
  f32Div(): this {
    return this.#op(0x95);
  }
  /** `f32.min`. */
  f32Min(): this {
    return this.#op(0x96);
  }
  /** `f32.max`. */
  f32Max(): this {
    return this.#op(0x97);
  }
  /** `f32.convert_i32_s`. */
  f32FromI32(): this {
    return this.#op(0xb2);
  }
  /** `v128.load offset` (4-byte alignment hint). */
  v128Load(offset = 0): this {
    return this.#simd(0x00, 2, ...uleb(offset));
  }
  /** `v128.load32_splat offset`. */
  v128Load32Splat(offset = 0): this {
    return this.#simd(0x09, 2, ...uleb(offset));
  }
  /** `v128.load32_zero offset`: one f32 into lane 0, zeros elsewhere. */
  v128Load32Zero(offset = 0): this {
    return this.#simd(0x5c, 2, ...uleb(offset));
  }
  /** `v128.store offset` (4-byte alignment hint). */
  v128Store(offset = 0): this {
    return this.#simd(0x0b, 2, ...uleb(offset));
  }
  /** `v128.store32_lane offset lane`. */
  v128Store32Lane(lane: number, offset = 0): this {
    return this.#simd(0x5a, 2, ...uleb(offset), lane);
  }
  /** `v128.const` of four equal f32. */
  f32x4Const(v: number): this {
    const b = new Uint8Array(new Float32Array([v, v, v, v]).buffer);
    return this.#simd(0x0c, ...b);
  }
  /**
   * `i8x16.shuffle` by 32-bit lanes of the two v128 on the stack (`a`, then `b`): lane `i` of the result is
   * lane `lanes[i]` of `a` (0-3) or lane `lanes[i] - 4` of `b` (4-7).
   */
  f32x4Shuffle(lanes: readonly [number, number, number, number]): this {
    return this.#simd(0x0d, ...lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]));
  }
  /** `f32x4.splat`. */
  f32x4Splat(): this {
    return this.#simd(0x13);
  }
  /** `f32x4.extract_lane`. */
  f32x4ExtractLane(lane: number): this {
    return this.#simd(0x1f, lane);
  }
  /** `f32x4.replace_lane`. */
  f32x4ReplaceLane(lane: number): this {
    return this.#simd(0x20, lane);
  }
  /** `f32x4.lt` (lane mask). */
  f32x4Lt(): this {
    return this.#simd(0x43);
  }
  /** `v128.and`. */
  v128And(): this {
    return this.#simd(0x4e);
  }
  /** `v128.andnot` (`a & ~b`). */
  v128AndNot(): this {
    return this.#simd(0x4f);
  }
  /** `v128.or`. */
  v128Or(): this {
    return this.#simd(0x50);
  }
  /** `v128.xor`. */
  v128Xor(): this {
    return this.#simd(0x51);
  }
  /** `v128.bitselect` (`(a & c) | (b & ~c)`). */
  v128Bitselect(): this {
    return this.#simd(0x52);
  }
  /** `v128.const` of four equal i32. */
  i32x4Const(v: number): this {
    const b = new Uint8Array(new Int32Array([v, v, v, v]).buffer);
    return this.#simd(0x0c, ...b);
  }
  /** `f32x4.nearest` (round to nearest even). */
  f32x4Nearest(): this {
    return this.#simd(0x6a);
  }
  /** `i32x4.shl`. */
  i32x4Shl(): this {
    return this.#simd(0xab);
  }
  /** `i32x4.add`. */
  i32x4Add(): this {
    return this.#simd(0xae);
  }
  /** `i32x4.trunc_sat_f32x4_s`. */
  i32x4TruncF32x4(): this {
    return this.#simd(0xf8);
  }
  /** `f32x4.abs`. */
  f32x4Abs(): this {
    return this.#simd(0xe0);
  }
  /** `f32x4.neg`. */
  f32x4Neg(): this {
    return this.#simd(0xe1);
  }
  /** `f32x4.sqrt`. */
  f32x4Sqrt(): this {
    return this.#simd(0xe3);
  }
  /** `f32x4.div`. */
  f32x4Div(): this {
    return this.#simd(0xe7);
  }
  /** `f32x4.min`. */
  f32x4Min(): this {
    return this.#simd(0xe8);
  }
  /** `f32x4.max`. */
  f32x4Max(): this {
    return this.#simd(0xe9);
  }
  /** `f32x4.pmin` (`b < a ? b : a`: one instruction, no NaN handling). */
  f32x4Pmin(): this {
    return this.#simd(0xea);
  }
  /** `f32x4.pmax` (`a < b ? b : a`). */
  f32x4Pmax(): this {
    return this.#simd(0xeb);
  }
  /** `i32x4.relaxed_trunc_f32x4_s` (in-range inputs: one instruction). */
  i32x4RelaxedTruncF32x4(): this {
    return this.#simd(0x101);
  }
  /** `f32x4.add`. */
  f32x4Add(): this {
    return this.#simd(0xe4);
  }
  /** `f32x4.sub`. */
  f32x4Sub(): this {
    return this.#simd(0xe5);
  }
  /** `f32x4.mul`. */
  f32x4Mul(): this {
    return this.#simd(0xe6);
  }
  /** `f32x4.relaxed_madd`: `a * b + c` (fused where the CPU has FMA). */
  f32x4Madd(): this {
    return this.#simd(0x105);
  }

  /** The encoded body (locals and code). */
  encode(): number[] {
    const groups: number[][] = [];
    for (let i = 0; i < this.#locals.length;) {
      let j = i;
      while (j < this.#locals.length && this.#locals[j] === this.#locals[i]) j++;
      groups.push([...uleb(j - i), this.#locals[i]]);
      i = j;
    }
    const body = [...vec(groups), ...this.#prologue, ...this.#code, 0x0b];
    return [...uleb(body.length), ...body];
  }
}

/** How the module gets its memory. */
export interface MemoryImport {
  /** Import name (module, field). */
  module: string;
  field: string;
  /** Shared memory (the threaded build): imports must then declare a maximum. */
  shared: boolean;
  /** Minimum pages. */
  min: number;
  /** Maximum pages (required when shared). */
  max?: number;
}

/** A module: one imported memory and exported functions. */
export class ModuleBuilder {
  readonly #funcs: { name?: string; f: FuncBuilder }[] = [];

  /** Adds a function, exported under `name` if given; returns its index. */
  add(f: FuncBuilder, name?: string): number {
    this.#funcs.push({ f, name });
    return this.#funcs.length - 1;
  }

  /** The module's bytes. */
  encode(memory: MemoryImport): Uint8Array<ArrayBuffer> {
    const types: number[][] = [];
    const typeIndex: number[] = [];
    for (const { f } of this.#funcs) {
      const t = [0x60, ...vec(f.params.map((p) => [p])), ...vec(f.results.map((r) => [r]))];
      let idx = types.findIndex((u) => u.length === t.length && u.every((v, i) => v === t[i]));
      if (idx < 0) {
        types.push(t);
        idx = types.length - 1;
      }
      typeIndex.push(idx);
    }
    const limits = memory.shared
      ? [0x03, ...uleb(memory.min), ...uleb(memory.max ?? 65536)]
      : memory.max !== undefined
      ? [0x01, ...uleb(memory.min), ...uleb(memory.max)]
      : [0x00, ...uleb(memory.min)];
    const imports = vec([[...str(memory.module), ...str(memory.field), 0x02, ...limits]]);
    const exports: number[][] = [];
    this.#funcs.forEach(({ name }, i) => {
      if (name) exports.push([...str(name), 0x00, ...uleb(i)]);
    });
    const bytes = [
      0x00,
      0x61,
      0x73,
      0x6d,
      0x01,
      0x00,
      0x00,
      0x00,
      ...section(1, vec(types)),
      ...section(2, imports),
      ...section(3, vec(typeIndex.map((i) => uleb(i)))),
      ...section(7, vec(exports)),
      ...section(10, vec(this.#funcs.map(({ f }) => f.encode()))),
    ];
    return new Uint8Array(bytes);
  }
}
