/**
 * The T2T-ViT model on tfjs: every official variant (performer or transformer token layers; standard, SE,
 * ghost or dense backbone) from one configuration, with PyTorch's state_dict names, shapes and order, strict
 * weight loading, and forward passes in eval or training mode.
 *
 * @module
 */

import { tf } from "../src/core/tf.ts";
import { toFloat32 } from "../converters/safetensors.ts";
import { DTYPE_SIZE, type RawTensor, type TensorMap } from "../src/core/types.ts";
import { allFinite } from "../src/core/dtype.ts";
import { type PretrainedCfg, pretrainedCfgOf, type T2tVitConfig } from "./configs.ts";
import { ModelError, WeightsError } from "../src/core/errors.ts";
import { type BackboneLayer, Block, DenseBlock, Transition } from "./layers/blocks.ts";
import { LayerNorm, Linear } from "./layers/linear.ts";
import { classRows, type Ctx, dropout, freeAsYouGo, stage } from "./layers/ops.ts";
import { gradientsRecording } from "./kernels/fused.ts";
import { backendCopiesValues } from "./backend/backend.ts";
import { ParamStore } from "./layers/params.ts";
import { sinusoidTable } from "./layers/position.ts";
import { T2TModule } from "./layers/t2t.ts";

/** Whether a gradient tape is recording (inside `tf.variableGrads` / `tf.grads`). */
/** Options of the forward passes. */
export interface ForwardOptions {
  /** Training mode: dropout and drop-path active (default false: eval mode). */
  training?: boolean;
  /**
   * Where the random ops of training mode get their seeds (one `uniform()` draw per dropout / drop-path op,
   * passed as the op's seed): the same generator state gives the same masks. Default: tfjs's `Math.random`.
   */
  rng?: { uniform(): number };
  /**
   * Activation recomputation (gradient checkpointing) per backbone block, when gradients are being taken
   * (`tf.variableGrads`): the forward pass keeps only each block's input, and the backward pass recomputes one
   * block at a time (with the same dropout and drop-path masks), so a step holds one block's activations
   * instead of all of them. Same gradients, about a third more compute. Ignored outside gradient computation.
   */
  checkpointBlocks?: boolean;
}

/** Options of {@linkcode T2tVit.loadStateDict}. */
export interface LoadOptions {
  /**
   * Whether missing and unexpected keys are errors (default true). Mis-shaped keys and non-finite values
   * are errors either way.
   */
  strict?: boolean;
  /** The file the weights came from, for error messages. */
  file?: string;
  /**
   * Keys to leave alone: not loaded from the weights and not reported missing (a head being replaced for
   * transfer learning, say). They keep their current values.
   */
  skip?: readonly string[];
}

/** What {@linkcode T2tVit.loadStateDict} did. */
export interface LoadReport {
  /** Keys whose values were loaded. */
  loaded: string[];
  /** Model keys the weights lacked (kept their previous values; only without `strict`). */
  missing: string[];
  /** Keys of the weights the model does not have (ignored; only without `strict`). */
  unexpected: string[];
}

/** Constructor options of {@linkcode T2tVit}. */
export interface ModelInit {
  /** The model's name (default: `"custom"`). */
  name?: string;
  /** Seed of the initialisation (default 0). */
  seed?: number;
  /** Start every parameter at zero instead of the official initialisation (weights will be loaded). */
  deferInit?: boolean;
}

/** Model internals reachable from this module only (the parity tests' activations). */
interface Internals {
  trace(x: tf.Tensor4D): Map<string, tf.Tensor>;
}
const INTERNALS = new WeakMap<object, Internals>();

/** Linear drop-path schedule as `torch.linspace(0, rate, n)`. */
function linspace(rate: number, n: number): number[] {
  if (n === 1) return [0];
  return Array.from({ length: n }, (_, i) => Math.fround((rate * i) / (n - 1)));
}

/** The per-call state of a forward pass with these options. */
function ctxOf(opts: ForwardOptions): Ctx {
  const rng = opts.rng;
  return { training: opts.training ?? false, seed: rng ? () => rng.uniform() : undefined };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function fmtShape(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

function isRawTensor(v: unknown): v is RawTensor {
  return typeof v === "object" && v !== null && "dtype" in v && "data" in v &&
    (v as RawTensor).data instanceof Uint8Array;
}

/**
 * A T2T-ViT. Build it with `createModel` or a variant's static `create` (they pick a backend and load
 * weights); the constructor needs a ready backend and gives the official initialisation.
 *
 * Tensors are NCHW float32 as in PyTorch. All parameters are `tf.Variable`s in PyTorch's layout.
 */
export class T2tVit {
  /** The factory name (e.g. `"t2t_vit_14"`), or `"custom"`. */
  readonly name: string;
  /** The architecture. */
  readonly config: T2tVitConfig;
  /** The preprocessing the model expects (timm `default_cfg`, at this model's size and classes). */
  readonly pretrainedCfg: PretrainedCfg;
  /** Tokens after the T2T module (`(imgSize / 16)^2`). */
  readonly numPatches: number;
  /** Width of the features (`embedDim`, or the final width of the dense variant). */
  readonly numFeatures: number;

  readonly #store: ParamStore;
  readonly #t2t: T2TModule;
  readonly #blocks: BackboneLayer[] = [];
  readonly #norm: LayerNorm;
  readonly #head?: Linear;
  readonly #cls: tf.Variable;
  readonly #pos: tf.Variable;
  #disposed = false;

  /**
   * Builds the model with the official initialisation (trunc-normal linear weights, sinusoid position
   * table, orthogonal performer features). The config is taken as is: check it with `resolveConfig` first.
   */
  constructor(config: T2tVitConfig, init: ModelInit = {}) {
    this.name = init.name ?? "custom";
    this.config = config;
    this.pretrainedCfg = pretrainedCfgOf(config);
    const c = config;
    const grid = T2TModule.gridSize(c.imgSize);
    this.numPatches = grid * grid;
    const store = new ParamStore(init.seed ?? 0, this.name, init.deferInit ?? false);
    this.#store = store;
    try {
      this.#cls = store.add("cls_token", [1, 1, c.embedDim], { kind: "truncNormal", std: 0.02 });
      this.#pos = store.add("pos_embed", [1, this.numPatches + 1, c.embedDim], {
        kind: "values",
        values: () => sinusoidTable(this.numPatches + 1, c.embedDim), // not computed for a model being loaded
      }, false);
      this.#t2t = store.scope(
        "tokens_to_token",
        () => new T2TModule(store, c.tokensType, c.inChans, c.embedDim, c.tokenDim),
      );
      const attn = {
        numHeads: c.numHeads,
        qkvBias: c.qkvBias,
        qkScale: c.qkScale,
        attnDrop: c.attnDropRate,
        projDrop: c.dropRate,
      };
      const dpr = linspace(c.dropPathRate, c.depth);
      let width = c.embedDim;
      store.scope("blocks", () => {
        if (c.blockType === "dense") {
          const growth = c.growthRate!;
          const stages = c.blockConfig!;
          let start = c.embedDim;
          stages.forEach((n, i) => {
            for (let j = 0; j < n; j++) {
              const dim = start + j * growth;
              const opts = { ...attn, mlpRatio: c.mlpRatio, drop: c.dropRate, dropPath: dpr[i] };
              this.#blocks.push(
                store.scope(String(this.#blocks.length), () => new DenseBlock(store, dim, growth, opts)),
              );
            }
            width = start + n * growth;
            if (i !== stages.length - 1) {
              const out = Math.floor(width / 2);
              this.#blocks.push(
                store.scope(String(this.#blocks.length), () => new Transition(store, width, out)),
              );
              start = width = out;
            }
          });
        } else {
          for (let i = 0; i < c.depth; i++) {
            const opts = { ...attn, mlpRatio: c.mlpRatio, drop: c.dropRate, dropPath: dpr[i] };
            this.#blocks.push(
              store.scope(String(i), () => new Block(store, c.embedDim, c.blockType as "vit", opts)),
            );
          }
        }
      });
      this.numFeatures = width;
      this.#norm = new LayerNorm(store, "norm", width);
      if (c.numClasses > 0) this.#head = new Linear(store, "head", width, c.numClasses);
      store.endRegistration();
    } catch (e) {
      store.dispose();
      throw e;
    }
    INTERNALS.set(this, { trace: (x) => this.#trace(x) });
  }

  #trace(x: tf.Tensor4D): Map<string, tf.Tensor> {
    this.#check(x, "traceForward");
    const taps = new Map<string, tf.Tensor>();
    const ctx: Ctx = { training: false, taps };
    const out = tf.tidy(() => {
      const features = this.#features(x, ctx);
      const logits = this.#logits(features);
      const all: Record<string, tf.Tensor> = Object.fromEntries(taps);
      return { ...all, features, logits };
    });
    return new Map(Object.entries(out));
  }

  #check(x: unknown, what: string): asserts x is tf.Tensor4D {
    if (this.#disposed) throw new ModelError(`${what}: the model was disposed`, { key: this.name });
    const { inChans, imgSize } = this.config;
    const want = `(B, ${inChans}, ${imgSize}, ${imgSize}) NCHW float32`;
    if (!(x instanceof tf.Tensor)) {
      throw new ModelError(`${what}: expected a tf.Tensor4D ${want}`, { key: "input" });
    }
    if (x.isDisposed) throw new ModelError(`${what}: the input tensor was disposed`, { key: "input" });
    const s = x.shape;
    if (x.rank !== 4 || s[0] < 1 || s[1] !== inChans || s[2] !== imgSize || s[3] !== imgSize) {
      throw new ModelError(`${what}: expected input ${want}, got shape ${fmtShape(s)}`, { key: "input" });
    }
    if (x.dtype !== "float32") {
      throw new ModelError(`${what}: expected float32 input, got ${x.dtype}`, { key: "input" });
    }
  }

  #features(x: tf.Tensor4D, ctx: Ctx, checkpointBlocks = false): tf.Tensor2D {
    const b = x.shape[0];
    const e = this.config.embedDim;
    const { tokens } = this.#t2t.apply(x, ctx);
    const n = this.numPatches;
    const t3 = tf.reshape(tokens, [b, n, e]);
    ctx.taps?.set("t2t_tokens", t3);
    const cls = tf.broadcastTo(this.#cls, [b, 1, e]);
    const z = dropout(tf.add(tf.concat([cls, t3], 1), this.#pos), this.config.dropRate, ctx);
    let h = tf.reshape(z, [b * (n + 1), e]) as tf.Tensor2D;
    const recompute = checkpointBlocks && gradientsRecording();
    const free = freeAsYouGo(ctx);
    // only the class tokens of the last block's output reach the head: in inference, when nothing else of
    // it is wanted (no taps, attention maps or gradients), the last block computes them alone
    const last = this.#blocks[this.#blocks.length - 1];
    const classOnly = free && !ctx.training && last?.applyClassTokens !== undefined;
    const body = classOnly ? this.#blocks.slice(0, -1) : this.#blocks;
    body.forEach((blk, i) => {
      h = recompute
        ? this.#checkpointed(blk, i, h, b, ctx) as tf.Tensor2D
        : stage(free, h, (hh) => blk.apply(hh, b, ctx) as tf.Tensor2D);
      if (i === 0) ctx.taps?.set("block0", tf.reshape(h, [b, n + 1, h.shape[1]]));
    });
    // LayerNorm is per token, so normalising the class tokens alone equals norm(x)[:, 0]
    const first = classOnly
      ? stage(free, h, (hh) => last.applyClassTokens!(hh as tf.Tensor2D, b, ctx))
      : classRows(h, b);
    return this.#norm.apply(first) as tf.Tensor2D;
  }

  /**
   * `blk.apply(h)` as one custom-gradient op over `h` and the block's trainable variables: the forward keeps
   * nothing of the block but its input; the gradient recomputes the block under its own tape, replaying the
   * random draws (`ctx.seed` or `Math.random`: dropout and drop-path seeds) of the forward, and
   * back-propagates `dy` through it.
   */
  #checkpointed(blk: BackboneLayer, i: number, h: tf.Tensor, b: number, ctx: Ctx): tf.Tensor {
    const prefix = `blocks.${i}.`;
    const vars = [...this.#store.params].filter(([k, p]) =>
      k.startsWith(prefix) && p.trainable && p.variable.trainable
    )
      .map(([, p]) => p.variable);
    const engine = tf.engine() as unknown as {
      state: { activeTape: unknown };
      gradients(
        f: () => tf.Tensor,
        xs: tf.Tensor[],
        dy?: tf.Tensor,
        allowNoGradients?: boolean,
      ): { value: tf.Tensor; grads: (tf.Tensor | undefined)[] };
    };
    const op = tf.customGrad((...args: unknown[]) => {
      const save = args[args.length - 1] as (t: tf.Tensor[]) => void;
      const xin = args[0] as tf.Tensor;
      const draws: number[] = [];
      const seeds: number[] = [];
      const seed = ctx.seed;
      const recordCtx: Ctx = seed
        ? {
          ...ctx,
          seed: () => {
            const v = seed();
            seeds.push(v);
            return v;
          },
        }
        : ctx;
      const random = Math.random;
      Math.random = () => {
        const v = random();
        draws.push(v);
        return v;
      };
      let value: tf.Tensor;
      try {
        value = blk.apply(xin, b, recordCtx);
      } finally {
        Math.random = random;
      }
      save([xin]);
      const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => {
        let at = 0;
        let seedAt = 0;
        const replayCtx: Ctx = seed ? { ...ctx, seed: () => seeds[seedAt++] } : ctx;
        const outerTape = engine.state.activeTape; // a nested gradients() call replaces and then clears it
        Math.random = () => draws[at++];
        try {
          const inp = saved[0];
          const { value: y, grads } = engine.gradients(
            () => blk.apply(inp, b, replayCtx),
            [inp, ...vars],
            dy,
            true,
          );
          y.dispose();
          return grads.map((g, j) => g ?? tf.zerosLike(j === 0 ? inp : vars[j - 1]));
        } finally {
          Math.random = random;
          engine.state.activeTape = outerTape;
        }
      };
      return { value, gradFunc };
    });
    return (op as unknown as (...t: tf.Tensor[]) => tf.Tensor)(h, ...vars);
  }

  #logits(feats: tf.Tensor2D): tf.Tensor2D {
    return this.#head ? this.#head.apply(feats) as tf.Tensor2D : feats;
  }

  /**
   * Class scores: `x (B, C, H, W)` NCHW float32 to `(B, numClasses)` (to the features when
   * `numClasses` is 0, as the official `nn.Identity` head).
   *
   * @throws {ModelError} when `x` has the wrong shape or dtype, or the model was disposed
   */
  forward(x: tf.Tensor4D, opts: ForwardOptions = {}): tf.Tensor2D {
    this.#check(x, "forward");
    const ctx = ctxOf(opts);
    return tf.tidy(() => this.#logits(this.#features(x, ctx, opts.checkpointBlocks)));
  }

  /**
   * The features the head sees: the class token after the final norm, `(B, numFeatures)`.
   *
   * @throws {ModelError} when `x` has the wrong shape or dtype, or the model was disposed
   */
  forwardFeatures(x: tf.Tensor4D, opts: ForwardOptions = {}): tf.Tensor2D {
    this.#check(x, "forwardFeatures");
    const ctx = ctxOf(opts);
    return tf.tidy(() => this.#features(x, ctx, opts.checkpointBlocks));
  }

  /**
   * The classifier head on features from {@linkcode forwardFeatures}: `(B, numFeatures)` to
   * `(B, numClasses)` (the features themselves when the model has no head), so that
   * `forward(x) = forwardHead(forwardFeatures(x))` without a second pass.
   *
   * @throws {ModelError} when `features` has the wrong shape or dtype, or the model was disposed
   */
  forwardHead(features: tf.Tensor2D): tf.Tensor2D {
    if (this.#disposed) throw new ModelError("forwardHead: the model was disposed", { key: this.name });
    const want = `(B, ${this.numFeatures}) float32`;
    if (!(features instanceof tf.Tensor) || features.isDisposed) {
      throw new ModelError(`forwardHead: expected a live tf.Tensor2D ${want}`, { key: "features" });
    }
    const s = features.shape;
    if (features.rank !== 2 || s[0] < 1 || s[1] !== this.numFeatures || features.dtype !== "float32") {
      throw new ModelError(`forwardHead: expected features ${want}, got ${features.dtype} ${fmtShape(s)}`, {
        key: "features",
      });
    }
    return tf.tidy(() => this.#logits(features));
  }

  /**
   * Logits and the attention probabilities of every backbone attention layer (eval mode), each
   * `(B, numHeads, N, N)` with `N = numPatches + 1` (row 0 is the class token's attention to all tokens).
   * The caller disposes everything returned.
   */
  forwardWithAttention(x: tf.Tensor4D): { logits: tf.Tensor2D; attentions: tf.Tensor4D[] } {
    this.#check(x, "forwardWithAttention");
    return tf.tidy(() => {
      const attentions: tf.Tensor[] = [];
      const ctx: Ctx = { training: false, attentions };
      const logits = this.#logits(this.#features(x, ctx));
      return { logits, attentions: attentions as tf.Tensor4D[] };
    });
  }

  /**
   * Every parameter by its PyTorch state_dict key, with PyTorch's shapes, in the official order. The
   * tensors are the model's own variables: don't dispose them.
   */
  stateDict(): Map<string, tf.Tensor> {
    return new Map([...this.#store.params].map(([k, p]) => [k, p.variable]));
  }

  /** The parameters the official code trains: all but the performer's `w` and `pos_embed`. */
  trainableVariables(): Map<string, tf.Variable> {
    return new Map([...this.#store.params].filter(([, p]) => p.trainable).map(([k, p]) => [k, p.variable]));
  }

  /** Number of values in all parameters (`trainable: true`: only the trainable ones). */
  parameterCount(opts: { trainable?: boolean } = {}): number {
    let n = 0;
    for (const p of this.#store.params.values()) {
      if (!opts.trainable || p.trainable) n += p.variable.size;
    }
    return n;
  }

  /**
   * Loads weights by PyTorch key, shapes exactly as the model's. Raw tensors (from safetensors or a converted
   * checkpoint) of any float dtype are widened to float32; `tf.Tensor`s are copied. Weights for another class
   * count or image size go through `checkpointFilter` first (head dropped, `pos_embed` resized), as
   * `createModel` does.
   *
   * @throws {WeightsError} listing, in one error, every missing, unexpected or mis-shaped key and every tensor
   *   with NaN or infinite values (raw tensors only); `cause` holds the lists. Nothing is loaded then.
   */
  loadStateDict(tensors: TensorMap | Map<string, tf.Tensor>, opts: LoadOptions = {}): LoadReport {
    if (this.#disposed) throw new ModelError("loadStateDict: the model was disposed", { key: this.name });
    const strict = opts.strict ?? true;
    const params = this.#store.params;
    const skip = new Set(opts.skip ?? []);
    const missing = [...params.keys()].filter((k) => !tensors.has(k) && !skip.has(k));
    const unexpected: string[] = [];
    const misshaped: string[] = [];
    const nonFinite: string[] = [];
    const plan: { key: string; values: Float32Array | tf.Tensor }[] = [];
    for (const [key, t] of tensors as Map<string, RawTensor | tf.Tensor>) {
      if (skip.has(key)) continue;
      const p = params.get(key);
      if (!p) {
        unexpected.push(key);
        continue;
      }
      const raw = isRawTensor(t);
      if (!raw && !(t instanceof tf.Tensor)) {
        misshaped.push(`${key}: not a tensor`);
        continue;
      }
      if (!raw && t.isDisposed) {
        misshaped.push(`${key}: a disposed tensor`);
        continue;
      }
      const shape = t.shape;
      if (raw) {
        if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
          misshaped.push(`${key}: invalid shape ${JSON.stringify(shape)}`);
          continue;
        }
        const need = shape.reduce((a, b) => a * b, 1) * (DTYPE_SIZE[t.dtype] ?? NaN);
        if (t.data?.byteLength !== need) {
          misshaped.push(`${key}: ${t.data?.byteLength} bytes do not hold ${t.dtype}${fmtShape(shape)}`);
          continue;
        }
      }
      if (!sameShape(shape, p.shape)) {
        misshaped.push(`${key}: ${fmtShape(shape)}, expected ${fmtShape(p.shape)}`);
        continue;
      }
      if (isRawTensor(t)) {
        // the file's own bytes where the backend copies them into its memory anyway (a copy of the whole
        // checkpoint less at the peak)
        const values = toFloat32(t, backendCopiesValues());
        if (!allFinite(values)) nonFinite.push(key);
        plan.push({ key, values });
      } else {
        plan.push({ key, values: t });
      }
    }
    const problems: string[] = [];
    if (strict && missing.length) problems.push(`missing keys (${missing.length}): ${missing.join(", ")}`);
    if (strict && unexpected.length) {
      problems.push(`unexpected keys (${unexpected.length}): ${unexpected.join(", ")}`);
    }
    if (misshaped.length) problems.push(`mis-shaped keys (${misshaped.length}): ${misshaped.join("; ")}`);
    if (nonFinite.length) {
      problems.push(`NaN or infinite values in (${nonFinite.length}): ${nonFinite.join(", ")}`);
    }
    if (problems.length) {
      const keys = [
        ...(strict ? missing : []),
        ...(strict ? unexpected : []),
        ...misshaped.map((m) => m.split(":")[0]),
        ...nonFinite,
      ];
      throw new WeightsError(`weights do not fit ${this.name}: ${problems.join("; ")}`, {
        file: opts.file,
        key: keys.length === 1 ? keys[0] : undefined,
        cause: { missing: strict ? missing : [], unexpected: strict ? unexpected : [], misshaped, nonFinite },
      });
    }
    for (const { key, values } of plan) {
      const p = params.get(key)!;
      tf.tidy(() => {
        const t = values instanceof tf.Tensor
          ? (values.dtype === "float32" ? values : tf.cast(values, "float32"))
          : tf.tensor(values, [...p.shape], "float32");
        p.variable.assign(t);
      });
    }
    return { loaded: plan.map((p) => p.key), missing, unexpected };
  }

  /**
   * Gives the parameters in `keys` (default: all) the official initialisation again, drawn from the model's
   * seeded generator in registration order: what a head replaced for transfer learning starts from.
   *
   * @throws {ModelError} when a key is not a parameter of the model, or the model was disposed
   */
  resetParameters(keys?: Iterable<string>): void {
    if (this.#disposed) throw new ModelError("resetParameters: the model was disposed", { key: this.name });
    const wanted = keys === undefined ? [...this.#store.params.keys()] : [...keys];
    for (const k of wanted) {
      if (!this.#store.params.has(k)) {
        throw new ModelError(`resetParameters: no parameter '${k}'`, { key: k });
      }
    }
    this.#store.initialize(wanted);
  }

  /** Frees every variable and cached tensor. The model cannot be used afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#t2t.dispose();
    for (const b of this.#blocks) b.dispose();
    this.#head?.dispose();
    this.#store.dispose();
  }

  /** Whether {@linkcode T2tVit.dispose} was called. */
  get isDisposed(): boolean {
    return this.#disposed;
  }
}

/**
 * Intermediate activations of an eval-mode forward pass, for parity tests and diagnostics: `soft_split0`
 * `(B, L0, C*49)`, `attention1` `(B, L0, tokenDim)`, `t2t_tokens` `(B, N, embedDim)`, `block0`
 * `(B, N+1, width)`, `features` and `logits`. The caller disposes them. Not part of the stable API.
 */
export function traceForward(model: T2tVit, x: tf.Tensor4D): Map<string, tf.Tensor> {
  return INTERNALS.get(model)!.trace(x);
}
