/**
 * ONNX export of every T2T-ViT: the model graph written with standard ONNX operators (opset 13 to 21, 17 by
 * default) and the weights as initializers under their PyTorch state_dict names.
 *
 * - Input `input` `(batch, C, H, W)` float32 NCHW (the batch axis symbolic by default); outputs `logits`
 *   `(batch, numClasses)` and `features` `(batch, numFeatures)` (the class token after the final norm).
 * - The soft split (`nn.Unfold`) is a grouped `Conv` with a 0/1 kernel (a `Constant`), exact and supported by
 *   every runtime; the token performer and every attention are `MatMul`, `Softmax`, `Exp`, `ReduceSum`;
 *   GELU is the exact erf form (`Erf`); LayerNorm is `LayerNormalization` (opset >= 17) or its decomposition.
 * - `metadata_props`: `architecture`, `img_size`, `num_classes`, `in_chans`, `num_features`, `config` (the
 *   official constructor's kwargs, JSON) and `preprocessing` (timm's `default_cfg`, JSON).
 *
 * @example
 * ```ts ignore
 * import { createModel, exportOnnx } from "../mod.ts";
 * const model = await createModel("t2t_vit_14", { weights: "t2t_vit_14.safetensors" });
 * await Deno.writeFile("t2t_vit_14.onnx", exportOnnx(model));
 * ```
 *
 * @module
 */

import { f32BitsToF16 } from "../src/core/dtype.ts";
import { encodeOnnxModel, OnnxError, OnnxGraphBuilder } from "../converters/onnx.ts";
import type { T2tVit } from "./model.ts";
import { ModelError } from "../src/core/errors.ts";
import type { T2tVitConfig } from "./configs.ts";

/** Options of {@linkcode exportOnnx}. */
export interface OnnxExportOptions {
  /** Opset of the default domain, 13 to 21 (default 17: the first with `LayerNormalization`). */
  opset?: number;
  /** A symbolic batch axis `batch` (default true); false fixes it to `batchSize`. */
  dynamicBatch?: boolean;
  /** The fixed batch size when `dynamicBatch` is false (default 1). */
  batchSize?: number;
  /**
   * Storage type of the weights (default `"f32"`). `"f16"` halves the file; each weight is cast back to
   * float32 in the graph (computation stays float32; ONNX Runtime folds the casts when it loads the model).
   */
  dtype?: "f32" | "f16";
}

/** The lowest and highest opsets {@linkcode exportOnnx} writes. */
export const ONNX_OPSET_RANGE: readonly [number, number] = [13, 21];

/** The official constructor's keyword arguments of a config (what the converter records as `config`). */
function kwargsOf(c: T2tVitConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    img_size: c.imgSize,
    tokens_type: c.tokensType,
    in_chans: c.inChans,
    num_classes: c.numClasses,
    embed_dim: c.embedDim,
    depth: c.depth,
    num_heads: c.numHeads,
    mlp_ratio: c.mlpRatio,
    qkv_bias: c.qkvBias,
    qk_scale: c.qkScale,
    drop_rate: c.dropRate,
    attn_drop_rate: c.attnDropRate,
    drop_path_rate: c.dropPathRate,
    token_dim: c.tokenDim,
  };
  if (c.blockType === "dense") {
    out.growth_rate = c.growthRate;
    out.block_config = c.blockConfig;
  }
  return out;
}

/** `floor(n)` as the official code's integer divisions. */
const idiv = (a: number, b: number) => Math.floor(a / b);

/** Builds the T2T-ViT graph on a builder. */
class T2tGraph {
  readonly g: OnnxGraphBuilder;
  readonly #weights: Map<string, { shape: readonly number[]; values: () => Float32Array }>;
  readonly #used = new Map<string, string>();
  readonly #f16: boolean;
  readonly #opset: number;

  constructor(
    name: string,
    weights: Map<string, { shape: readonly number[]; values: () => Float32Array }>,
    opset: number,
    f16: boolean,
  ) {
    this.g = new OnnxGraphBuilder(name);
    this.#weights = weights;
    this.#opset = opset;
    this.#f16 = f16;
  }

  /** Adds every state_dict tensor as an initializer under its PyTorch name, in state_dict order. */
  addInitializers(): void {
    for (const [key, w] of this.#weights) {
      const v = w.values();
      if (this.#f16) {
        const bits = new Uint16Array(v.length);
        const u32 = new Uint32Array(v.buffer, v.byteOffset, v.length);
        for (let i = 0; i < v.length; i++) bits[i] = f32BitsToF16(u32[i]);
        this.g.initializer(key, "float16", [...w.shape], bits);
      } else this.g.initializer(key, "float32", [...w.shape], v);
    }
  }

  /** The float32 value of a state_dict tensor (its initializer, through a `Cast` when stored as f16). */
  param(key: string): string {
    const seen = this.#used.get(key);
    if (seen) return seen;
    if (!this.#weights.has(key)) {
      throw new ModelError("the model has no such parameter (export bug)", { key });
    }
    const out = this.#f16 ? this.g.op("Cast", [key], { to: 1 }) : key;
    this.#used.set(key, out);
    return out;
  }

  has(key: string): boolean {
    return this.#weights.has(key);
  }

  /** Keys never used by the graph (a builder bug if any). */
  unused(): string[] {
    return [...this.#weights.keys()].filter((k) => !this.#used.has(k));
  }

  i64(values: number[]): string {
    return this.g.constInt64(values);
  }

  scalar(v: number): string {
    return this.g.constFloat([v]);
  }

  op(type: string, inputs: string[], attrs: Record<string, number | number[]> = {}): string {
    return this.g.op(type, inputs, attrs);
  }

  /** `x @ W^T (+ b)` over the last axis (weight `(out, in)` as PyTorch stores it). */
  linear(x: string, prefix: string): string {
    const wT = this.op("Transpose", [this.param(`${prefix}.weight`)], { perm: [1, 0] });
    const y = this.op("MatMul", [x, wT]);
    return this.has(`${prefix}.bias`) ? this.op("Add", [y, this.param(`${prefix}.bias`)]) : y;
  }

  layerNorm(x: string, prefix: string, eps = 1e-5): string {
    const w = this.param(`${prefix}.weight`), b = this.param(`${prefix}.bias`);
    if (this.#opset >= 17) {
      return this.g.op("LayerNormalization", [x, w, b], { axis: -1, epsilon: eps }, ["epsilon"]);
    }
    const mean = this.reduce("ReduceMean", x, -1);
    const d = this.op("Sub", [x, mean]);
    const v = this.reduce("ReduceMean", this.op("Mul", [d, d]), -1);
    const n = this.op("Div", [d, this.op("Sqrt", [this.op("Add", [v, this.scalar(eps)])])]);
    return this.op("Add", [this.op("Mul", [n, w]), b]);
  }

  /** ReduceSum / ReduceMean over one axis, keeping it (axes as an input from opset 13 / 18). */
  reduce(type: "ReduceSum" | "ReduceMean", x: string, axis: number): string {
    const axesAsInput = type === "ReduceSum" || this.#opset >= 18;
    return axesAsInput
      ? this.op(type, [x, this.i64([axis])], { keepdims: 1 })
      : this.op(type, [x], { axes: [axis], keepdims: 1 });
  }

  /** Exact GELU: `x * 0.5 * (1 + erf(x / sqrt 2))`, as PyTorch's `nn.GELU()`. */
  gelu(x: string): string {
    const e = this.op("Erf", [this.op("Div", [x, this.scalar(Math.SQRT2)])]);
    return this.op("Mul", [this.op("Mul", [x, this.op("Add", [e, this.scalar(1)])]), this.scalar(0.5)]);
  }

  /** Outputs `start .. end` of the linear layer `prefix` alone: `x @ W[start:end]^T (+ b[start:end])`. */
  linearRange(x: string, prefix: string, start: number, end: number): string {
    const w = this.op("Slice", [
      this.param(`${prefix}.weight`),
      this.i64([start]),
      this.i64([end]),
      this.i64([0]),
    ]);
    const y = this.op("MatMul", [x, this.op("Transpose", [w], { perm: [1, 0] })]);
    if (!this.has(`${prefix}.bias`)) return y;
    return this.op("Add", [y, this.sliceLast(this.param(`${prefix}.bias`), start, end)]);
  }

  /** `x[..., start:end]` on the last axis. */
  sliceLast(x: string, start: number, end: number): string {
    return this.op("Slice", [x, this.i64([start]), this.i64([end]), this.i64([-1])]);
  }

  /**
   * `nn.Unfold(k, stride, pad)(x).transpose(1, 2)` of `x (B, C, H, W)`: a grouped 0/1 convolution whose output
   * channel `c * k * k + i * k + j` picks channel `c` at kernel offset `(i, j)` (Unfold's channel-major order).
   */
  softSplit(x: string, name: string, c: number, k: number, stride: number, pad: number): string {
    const kk = k * k;
    const w = new Float32Array(c * kk * kk);
    for (let ch = 0; ch < c; ch++) for (let o = 0; o < kk; o++) w[(ch * kk + o) * kk + o] = 1;
    const kernel = this.g.node("Constant", [], {
      outputs: [`${name}.unfold_kernel`],
      attrs: {
        value: { name: "", dtype: "float32", dims: [c * kk, 1, k, k], data: new Uint8Array(w.buffer) },
      },
    })[0];
    const y = this.op("Conv", [x, kernel], {
      group: c,
      kernel_shape: [k, k],
      strides: [stride, stride],
      pads: [pad, pad, pad, pad],
      dilations: [1, 1],
    });
    const flat = this.op("Reshape", [y, this.i64([0, c * kk, -1])]);
    return this.op("Transpose", [flat], { perm: [0, 2, 1] });
  }

  /** Tokens `(B, h*w, C)` back to a map `(B, C, h, w)`. */
  toMap(t: string, c: number, side: number): string {
    return this.op("Reshape", [this.op("Transpose", [t], { perm: [0, 2, 1] }), this.i64([0, c, side, side])]);
  }

  /** `Token_performer.forward` on `x (B, T, dim)`. */
  tokenPerformer(x: string, p: string, emb: number): string {
    const m = idiv(emb, 2);
    const kqv = this.linear(this.layerNorm(x, `${p}.norm1`), `${p}.kqv`);
    const k = this.sliceLast(kqv, 0, emb);
    const q = this.sliceLast(kqv, emb, 2 * emb);
    const v = this.sliceLast(kqv, 2 * emb, 3 * emb);
    const wT = this.op("Transpose", [this.param(`${p}.w`)], { perm: [1, 0] }); // (emb, m)
    const sqrtM = this.scalar(Math.sqrt(m));
    const prm = (z: string) => {
      const xd = this.op("Div", [this.reduce("ReduceSum", this.op("Mul", [z, z]), -1), this.scalar(2)]);
      const wtx = this.op("MatMul", [z, wT]);
      return this.op("Div", [this.op("Exp", [this.op("Sub", [wtx, xd])]), sqrtM]);
    };
    const kp = prm(k), qp = prm(q); // (B, T, m)
    const kSum = this.reduce("ReduceSum", kp, 1); // (B, 1, m)
    const d = this.op("MatMul", [qp, this.op("Transpose", [kSum], { perm: [0, 2, 1] })]); // (B, T, 1)
    const kptv = this.op("MatMul", [this.op("Transpose", [kp], { perm: [0, 2, 1] }), v]); // (B, m, emb)
    const y = this.op("Div", [this.op("MatMul", [qp, kptv]), this.op("Add", [d, this.scalar(1e-8)])]);
    const a = this.op("Add", [v, this.linear(y, `${p}.proj`)]);
    const h = this.linear(
      this.gelu(this.linear(this.layerNorm(a, `${p}.norm2`), `${p}.mlp.0`)),
      `${p}.mlp.2`,
    );
    return this.op("Add", [a, h]);
  }

  /** `Token_transformer.forward` (one head, scale `dim ** -0.5` on q first) on `x (B, N, dim)`. */
  tokenTransformer(x: string, p: string, dim: number, inDim: number): string {
    const qkv = this.linear(this.layerNorm(x, `${p}.norm1`), `${p}.attn.qkv`);
    const q = this.sliceLast(qkv, 0, inDim);
    const k = this.sliceLast(qkv, inDim, 2 * inDim);
    const v = this.sliceLast(qkv, 2 * inDim, 3 * inDim);
    const qs = this.op("Mul", [q, this.scalar(Math.pow(dim, -0.5))]);
    const attn = this.op(
      "Softmax",
      [this.op("MatMul", [qs, this.op("Transpose", [k], { perm: [0, 2, 1] })])],
      {
        axis: -1,
      },
    );
    const a = this.op("Add", [v, this.linear(this.op("MatMul", [attn, v]), `${p}.attn.proj`)]);
    return this.op("Add", [a, this.mlp(this.layerNorm(a, `${p}.norm2`), `${p}.mlp`)]);
  }

  mlp(x: string, p: string): string {
    return this.linear(this.gelu(this.linear(x, `${p}.fc1`)), `${p}.fc2`);
  }

  ghostMlp(x: string, p: string, dim: number): string {
    const x1 = this.gelu(this.linear(x, `${p}.fc1`));
    const cheap = (n: string) => this.op("Reshape", [this.param(`${p}.${n}.weight`), this.i64([dim])]);
    const x2 = this.gelu(this.op("Mul", [x1, cheap("cheap_operation2")]));
    const x3 = this.gelu(this.op("Mul", [x1, cheap("cheap_operation3")]));
    return this.linear(this.op("Concat", [x1, x2, x3], { axis: -1 }), `${p}.fc2`);
  }

  /** Multi-head attention of a fused `qkv (B, N, 3C)` (`reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)`). */
  multiHead(qkv: string, dim: number, heads: number, scale: number): string {
    const hd = idiv(dim, heads);
    const t = this.op("Transpose", [this.op("Reshape", [qkv, this.i64([0, 0, 3, heads, hd])])], {
      perm: [2, 0, 3, 1, 4],
    }); // (3, B, H, N, d)
    const part = (i: number) => this.op("Gather", [t, this.g.constInt64([i], true)], { axis: 0 });
    const q = part(0), k = part(1), v = part(2);
    const s = this.op("Mul", [
      this.op("MatMul", [q, this.op("Transpose", [k], { perm: [0, 1, 3, 2] })]),
      this.scalar(scale),
    ]);
    const o = this.op("MatMul", [this.op("Softmax", [s], { axis: -1 }), v]); // (B, H, N, d)
    return this.op("Reshape", [
      this.op("Transpose", [o], { perm: [0, 2, 1, 3] }),
      this.i64([0, 0, heads * hd]),
    ]);
  }

  /** A ghost attention's `n` projection of `x`: `lin x` concatenated with its per-channel scaled copy. */
  ghostProjection(x: string, p: string, n: "q" | "k" | "v", dim: number): string {
    const a = this.linear(x, `${p}.${n}`);
    const w = this.op("Reshape", [this.param(`${p}.cheap_operation_${n}.weight`), this.i64([idiv(dim, 2)])]);
    return this.op("Concat", [a, this.op("Mul", [a, w])], { axis: -1 });
  }

  attention(x: string, p: string, dim: number, c: T2tVitConfig, kind: "vit" | "se" | "ghost"): string {
    const scale = c.qkScale ?? Math.pow(idiv(dim, c.numHeads), -0.5);
    let qkv: string;
    if (kind === "ghost") {
      const ghost = (n: "q" | "k" | "v") => this.ghostProjection(x, p, n, dim);
      qkv = this.op("Concat", [ghost("q"), ghost("k"), ghost("v")], { axis: -1 });
    } else qkv = this.linear(x, `${p}.qkv`);
    let y = this.linear(this.multiHead(qkv, dim, c.numHeads, scale), `${p}.proj`);
    if (kind === "se") {
      // SELayer: x * sigmoid(fc2(relu(fc0(mean over tokens))))
      const s = this.reduce("ReduceMean", y, 1); // (B, 1, C)
      const gate = this.op("Sigmoid", [
        this.linear(this.op("Relu", [this.linear(s, `${p}.se_layer.fc.0`)]), `${p}.se_layer.fc.2`),
      ]);
      y = this.op("Mul", [y, gate]);
    }
    return y;
  }

  block(x: string, p: string, dim: number, c: T2tVitConfig, kind: "vit" | "se" | "ghost"): string {
    const a = this.op("Add", [x, this.attention(this.layerNorm(x, `${p}.norm1`), `${p}.attn`, dim, c, kind)]);
    const n2 = this.layerNorm(a, `${p}.norm2`);
    const m = kind === "ghost" ? this.ghostMlp(n2, `${p}.mlp`, dim) : this.mlp(n2, `${p}.mlp`);
    return this.op("Add", [a, m]);
  }

  /**
   * A block's output for the class tokens alone, `(B, 1, C)` from `x (B, N, C)`, for the last block (only its
   * class tokens reach the head), as the model's inference does (`applyClassTokens` of the blocks): keys and
   * values of every token, the queries, the projection and the MLP of the class tokens only. An SE block's
   * gate averages every token's attention output, so there only the MLP is the class tokens'.
   */
  classTokenBlock(x: string, p: string, dim: number, c: T2tVitConfig, kind: "vit" | "se" | "ghost"): string {
    const first = (t: string) => this.op("Slice", [t, this.i64([0]), this.i64([1]), this.i64([1])]);
    const n1 = this.layerNorm(x, `${p}.norm1`);
    let attn: string;
    if (kind === "se") attn = first(this.attention(n1, `${p}.attn`, dim, c, kind));
    else {
      const heads = c.numHeads, hd = idiv(dim, heads);
      const scale = c.qkScale ?? Math.pow(hd, -0.5);
      const split = (t: string, perm: number[]) =>
        this.op("Transpose", [this.op("Reshape", [t, this.i64([0, 0, heads, hd])])], { perm });
      const a = `${p}.attn`;
      // (B, 1, C) queries, (B, N, C) keys and values
      const [q, k, v] = kind === "ghost"
        ? [
          this.ghostProjection(first(n1), a, "q", dim),
          this.ghostProjection(n1, a, "k", dim),
          this.ghostProjection(n1, a, "v", dim),
        ]
        : [
          this.linearRange(first(n1), `${a}.qkv`, 0, dim),
          this.linearRange(n1, `${a}.qkv`, dim, 2 * dim),
          this.linearRange(n1, `${a}.qkv`, 2 * dim, 3 * dim),
        ];
      const s = this.op("Mul", [
        this.op("MatMul", [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]), // (B, H, 1, N)
        this.scalar(scale),
      ]);
      const o = this.op("MatMul", [this.op("Softmax", [s], { axis: -1 }), split(v, [0, 2, 1, 3])]); // (B, H, 1, d)
      const heads1 = this.op("Reshape", [
        this.op("Transpose", [o], { perm: [0, 2, 1, 3] }),
        this.i64([0, 0, dim]),
      ]);
      attn = this.linear(heads1, `${a}.proj`);
    }
    const y = this.op("Add", [first(x), attn]);
    const n2 = this.layerNorm(y, `${p}.norm2`);
    return this.op("Add", [
      y,
      kind === "ghost" ? this.ghostMlp(n2, `${p}.mlp`, dim) : this.mlp(n2, `${p}.mlp`),
    ]);
  }

  /** A dense block: `x` and the new features of its block, concatenated (class tokens alone if `classOnly`). */
  denseBlock(x: string, p: string, dim: number, c: T2tVitConfig, classOnly = false): string {
    const y = classOnly ? this.classTokenBlock(x, p, dim, c, "vit") : this.block(x, p, dim, c, "vit");
    const rest = classOnly ? this.op("Slice", [x, this.i64([0]), this.i64([1]), this.i64([1])]) : x;
    return this.op("Concat", [rest, this.linear(y, `${p}.dense_linear`)], { axis: -1 });
  }
}

/**
 * Writes a model as an ONNX file: its graph with standard operators and its weights under their PyTorch
 * names. The model's current weights are read once (the model is not changed).
 *
 * @throws {ModelError} when the model was disposed, the opset is outside {@linkcode ONNX_OPSET_RANGE} or an
 *   option is invalid
 * @throws {OnnxError} when the file would exceed protobuf's 2 GiB limit
 */
export function exportOnnx(model: T2tVit, opts: OnnxExportOptions = {}): Uint8Array {
  if (model.isDisposed) throw new ModelError("exportOnnx: the model was disposed", { key: model.name });
  const opset = opts.opset ?? 17;
  if (!Number.isInteger(opset) || opset < ONNX_OPSET_RANGE[0] || opset > ONNX_OPSET_RANGE[1]) {
    throw new ModelError(
      `exportOnnx: opset must be an integer from ${ONNX_OPSET_RANGE[0]} to ${
        ONNX_OPSET_RANGE[1]
      }, got ${opset}`,
      { key: "opset" },
    );
  }
  const dtype = opts.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    throw new ModelError(`exportOnnx: dtype must be "f32" or "f16", got ${JSON.stringify(dtype)}`, {
      key: "dtype",
    });
  }
  const dynamic = opts.dynamicBatch ?? true;
  const batchSize = opts.batchSize ?? 1;
  if (!dynamic && !(Number.isSafeInteger(batchSize) && batchSize >= 1)) {
    throw new ModelError(`exportOnnx: batchSize must be a positive integer, got ${batchSize}`, {
      key: "batchSize",
    });
  }
  const c = model.config;
  if (c.imgSize % 16 !== 0) {
    throw new ModelError(`exportOnnx: imgSize must be a multiple of 16, got ${c.imgSize}`, {
      key: "imgSize",
    });
  }
  const sd = model.stateDict();
  const weights = new Map(
    [...sd].map(([k, t]) => [k, { shape: t.shape, values: () => t.dataSync() as Float32Array }]),
  );
  const b = new T2tGraph(model.name, weights, opset, dtype === "f16");
  const g = b.g;
  b.addInitializers();
  const batch: number | string = dynamic ? "batch" : batchSize;
  const x = g.input("input", "float32", [batch, c.inChans, c.imgSize, c.imgSize]);

  // T2T module
  const td = c.tokenDim;
  const side0 = Math.floor((c.imgSize + 4 - 7) / 4) + 1;
  const side1 = Math.floor((side0 + 2 - 3) / 2) + 1;
  let t = b.softSplit(x, "tokens_to_token.soft_split0", c.inChans, 7, 4, 2);
  const tokenLayer = (y: string, name: string, dim: number) =>
    c.tokensType === "transformer"
      ? b.tokenTransformer(y, `tokens_to_token.${name}`, dim, td)
      : b.tokenPerformer(y, `tokens_to_token.${name}`, td);
  t = tokenLayer(t, "attention1", c.inChans * 49);
  t = b.softSplit(b.toMap(t, td, side0), "tokens_to_token.soft_split1", td, 3, 2, 1);
  t = tokenLayer(t, "attention2", td * 9);
  t = b.softSplit(b.toMap(t, td, side1), "tokens_to_token.soft_split2", td, 3, 2, 1);
  t = b.linear(t, "tokens_to_token.project"); // (B, N, E)

  // class token and positions
  const e = c.embedDim;
  const shapeB = b.op("Slice", [b.op("Shape", [t]), b.i64([0]), b.i64([1]), b.i64([0])]);
  const clsShape = b.op("Concat", [shapeB, b.i64([1, e])], { axis: 0 });
  const cls = b.op("Expand", [b.param("cls_token"), clsShape]);
  let h = b.op("Add", [b.op("Concat", [cls, t], { axis: 1 }), b.param("pos_embed")]);

  // backbone
  let width = e;
  if (c.blockType === "dense") {
    const growth = c.growthRate!;
    const stages = c.blockConfig!;
    let idx = 0;
    let start = e;
    stages.forEach((n, i) => {
      const last = i === stages.length - 1;
      for (let j = 0; j < n; j++) {
        // the last block computes its class tokens alone: (B, 1, width)
        h = b.denseBlock(h, `blocks.${idx++}`, start + j * growth, c, last && j === n - 1);
      }
      width = start + n * growth;
      if (i !== stages.length - 1) {
        const out = Math.floor(width / 2);
        h = b.gelu(b.linear(h, `blocks.${idx++}.linear`));
        start = width = out;
      }
    });
  } else {
    // the last block computes its class tokens alone: (B, 1, E)
    for (let i = 0; i < c.depth; i++) {
      h = i === c.depth - 1
        ? b.classTokenBlock(h, `blocks.${i}`, e, c, c.blockType)
        : b.block(h, `blocks.${i}`, e, c, c.blockType);
    }
  }
  const first = b.op("Gather", [h, g.constInt64([0], true)], { axis: 1 }); // (B, width)
  const feats = g.node("Identity", [b.layerNorm(first, "norm")], { outputs: ["features"] })[0];
  const logitsIn = c.numClasses > 0 ? b.linear(feats, "head") : feats;
  g.node("Identity", [logitsIn], { outputs: ["logits"] });
  g.output("logits", "float32", [batch, c.numClasses > 0 ? c.numClasses : width]);
  g.output("features", "float32", [batch, width]);
  const unused = b.unused();
  if (unused.length) {
    throw new OnnxError(`export left parameters unused (a bug): ${unused.join(", ")}`, { key: unused[0] });
  }
  if (width !== model.numFeatures) {
    throw new OnnxError(`export computed ${width} features, the model has ${model.numFeatures} (a bug)`);
  }
  const cfg = model.pretrainedCfg;
  return encodeOnnxModel(g, {
    opset,
    producerName: "t2t-vit",
    producerVersion: "0.1.0",
    docString:
      `T2T-ViT ${model.name} (${c.imgSize}x${c.imgSize}, ${c.numClasses} classes), exported by t2t-vit`,
    metadata: {
      architecture: model.name,
      img_size: String(c.imgSize),
      num_classes: String(c.numClasses),
      in_chans: String(c.inChans),
      num_features: String(width),
      config: JSON.stringify(kwargsOf(c)),
      preprocessing: JSON.stringify({
        input_size: cfg.inputSize,
        crop_pct: cfg.cropPct,
        interpolation: cfg.interpolation,
        mean: cfg.mean,
        std: cfg.std,
        layout: "NCHW",
        input_name: "input",
        outputs: ["logits", "features"],
      }),
      weights_dtype: dtype,
    },
  });
}
