/**
 * Optimizers with PyTorch's exact update rules, parameter groups with their own learning rate and weight decay,
 * gradient clipping by global norm, and the parameter groupings the official recipes use:
 *
 * - {@linkcode SGD}: `torch.optim.SGD` (momentum, dampening, coupled L2 weight decay, optional Nesterov), the
 *   optimizer of the official `transfer_learning.py`.
 * - {@linkcode AdamW}: `torch.optim.AdamW` (decoupled weight decay, bias correction, `eps` added after the square
 *   root), the optimizer of the ImageNet recipe (`main.py` through timm's `create_optimizer`).
 * - {@linkcode transferParamGroups}: the transfer script's groups (`tokens_to_token` and `blocks` at
 *   `transferRatio * lr`, `head` at `lr`).
 * - {@linkcode weightDecayParamGroups}: timm's `add_weight_decay` (no decay for 1-D tensors, biases and the
 *   model's `no_weight_decay()` set, which for T2T-ViT is `{cls_token}`).
 *
 * Parameters are `tf.Variable`s named by their PyTorch key; gradients are passed to `step` keyed the same way.
 * A parameter without a gradient in a step is skipped entirely, as PyTorch skips `p.grad is None`.
 *
 * @module
 */

import { tf } from "../core/tf.ts";
import { T2tVitError } from "../core/errors.ts";

/** Gradients keyed by parameter name (PyTorch key). */
export type Gradients = Map<string, tf.Tensor>;

/** Named parameters: PyTorch key to variable. */
export type NamedParameters = Map<string, tf.Variable>;

/** What a group is made from: its parameters and any hyper-parameters that differ from the optimizer's. */
export interface ParamGroupSpec<H> {
  /** A label for logs and checkpoints (default `group<i>`). */
  name?: string;
  /** The parameters, as `[key, variable]` pairs or a map. */
  params: Iterable<[string, tf.Variable]>;
  /** This group's base learning rate (default: the optimizer's). */
  lr?: number;
  /** Hyper-parameters that override the optimizer's defaults for this group. */
  options?: Partial<H>;
}

/** A resolved parameter group. `lr` is the current rate (schedules write it); `initialLr` its base. */
export interface ParamGroup<H> {
  /** The group's label. */
  readonly name: string;
  /** Its parameters in order. */
  readonly params: NamedParameters;
  /** Current learning rate. */
  lr: number;
  /** Base learning rate (PyTorch's `initial_lr`): the one schedules scale. */
  initialLr: number;
  /** Resolved hyper-parameters. */
  readonly options: H;
}

/** A serialisable description of an optimizer's state (everything except the buffers). */
export interface OptimizerMeta {
  /** `"sgd"` or `"adamw"`. */
  type: string;
  /** Number of `step()` calls so far. */
  steps: number;
  /** The groups: names, learning rates, hyper-parameters and parameter keys. */
  groups: {
    name: string;
    lr: number;
    initialLr: number;
    options: Record<string, unknown>;
    params: string[];
  }[];
  /** Per-parameter step counters (AdamW's bias correction), keyed by parameter name. */
  paramSteps: Record<string, number>;
}

/** An error in the optimizer's configuration or state (bad hyper-parameters, a state that does not fit). */
export class OptimizerError extends T2tVitError {
  /** The class's name, kept as a string so that it survives minification. */
  static override readonly errorName: string = "OptimizerError";
}

function checkFinite(name: string, v: number, min = 0): void {
  if (!Number.isFinite(v) || v < min) {
    throw new OptimizerError(`${name} must be a finite number >= ${min}, got ${v}`);
  }
}

/**
 * Base class of the optimizers: groups, per-parameter state buffers (non-trainable variables), step counter,
 * serialisation of the state for checkpoints.
 */
export abstract class Optimizer<H extends object> {
  /** The parameter groups, in order. */
  readonly groups: ParamGroup<H>[];
  /** Number of completed `step()` calls. */
  steps = 0;
  /** Per-parameter state buffers: `param -> buffer name -> variable`. */
  protected readonly state: Map<string, Map<string, tf.Variable>> = new Map();
  /** Per-parameter step counters. */
  protected readonly paramSteps: Map<string, number> = new Map();
  #disposed = false;

  /** `type` names the optimizer in checkpoints; `defaults` fill each group's missing hyper-parameters. */
  protected constructor(
    readonly type: string,
    groups: Iterable<ParamGroupSpec<H>> | Iterable<[string, tf.Variable]>,
    lr: number,
    defaults: H,
  ) {
    checkFinite("lr", lr);
    const list = [...groups] as unknown[];
    const specs: ParamGroupSpec<H>[] = list.length > 0 && Array.isArray(list[0])
      ? [{ params: list as [string, tf.Variable][] }]
      : list as ParamGroupSpec<H>[];
    const seen = new Set<string>();
    this.groups = specs.map((spec, i) => {
      const params: NamedParameters = new Map();
      for (const [k, v] of spec.params) {
        if (seen.has(k)) throw new OptimizerError(`parameter '${k}' appears in more than one group`);
        if (!(v instanceof tf.Variable)) throw new OptimizerError(`parameter '${k}' is not a tf.Variable`);
        if (v.dtype !== "float32") throw new OptimizerError(`parameter '${k}' is ${v.dtype}, not float32`);
        seen.add(k);
        params.set(k, v);
      }
      const glr = spec.lr ?? lr;
      checkFinite(`lr of group ${i}`, glr);
      const options = { ...defaults, ...spec.options } as H;
      this.validate(options);
      return { name: spec.name ?? `group${i}`, params, lr: glr, initialLr: glr, options };
    });
    if (seen.size === 0) throw new OptimizerError("the optimizer got no parameters");
  }

  /** Checks a group's hyper-parameters; throws {@linkcode OptimizerError}. */
  protected abstract validate(options: H): void;

  /** Updates one parameter in place from its gradient (called inside `tf.tidy`). */
  protected abstract update(
    name: string,
    p: tf.Variable,
    g: tf.Tensor,
    group: ParamGroup<H>,
    step: number,
  ): void;

  /** All parameters of all groups. */
  parameters(): NamedParameters {
    const out: NamedParameters = new Map();
    for (const g of this.groups) for (const [k, v] of g.params) out.set(k, v);
    return out;
  }

  /**
   * One optimisation step: every parameter that has a gradient in `grads` is updated in place. Gradients are
   * not disposed (the caller owns them).
   */
  step(grads: Gradients): void {
    if (this.#disposed) throw new OptimizerError("the optimizer was disposed");
    for (const group of this.groups) {
      for (const [name, p] of group.params) {
        const g = grads.get(name);
        if (g === undefined || g === null) continue;
        if (g.shape.length !== p.shape.length || g.shape.some((d, i) => d !== p.shape[i])) {
          throw new OptimizerError(
            `gradient of '${name}' has shape [${g.shape}], parameter has [${p.shape}]`,
          );
        }
        const step = (this.paramSteps.get(name) ?? 0) + 1;
        this.paramSteps.set(name, step);
        tf.tidy(() => this.update(name, p, g, group, step));
      }
    }
    this.steps++;
  }

  /** The state buffer `buf` of parameter `name`, if it exists. */
  protected buffer(name: string, buf: string): tf.Variable | undefined {
    return this.state.get(name)?.get(buf);
  }

  /** Sets (creating on first use) the state buffer `buf` of parameter `name` to `value` (kept, not disposed). */
  protected setBuffer(name: string, buf: string, value: tf.Tensor): void {
    let m = this.state.get(name);
    if (!m) this.state.set(name, m = new Map());
    const v = m.get(buf);
    if (v) v.assign(value);
    else m.set(buf, tf.variable(value, false));
  }

  /**
   * The state for a checkpoint: buffers as tensors named `state.<param>.<buffer>` (PyTorch's names:
   * `momentum_buffer`, `exp_avg`, `exp_avg_sq`) and everything else as JSON-able metadata. The tensors are
   * the optimizer's own (do not dispose them).
   */
  stateDict(): { tensors: Map<string, tf.Tensor>; meta: OptimizerMeta } {
    const tensors = new Map<string, tf.Tensor>();
    for (const group of this.groups) {
      for (const name of group.params.keys()) {
        const bufs = this.state.get(name);
        if (!bufs) continue;
        for (const [b, v] of bufs) tensors.set(`state.${name}.${b}`, v);
      }
    }
    return {
      tensors,
      meta: {
        type: this.type,
        steps: this.steps,
        groups: this.groups.map((g) => ({
          name: g.name,
          lr: g.lr,
          initialLr: g.initialLr,
          options: { ...g.options } as Record<string, unknown>,
          params: [...g.params.keys()],
        })),
        paramSteps: Object.fromEntries(this.paramSteps),
      },
    };
  }

  /**
   * Restores a state from {@linkcode Optimizer.stateDict} (possibly read back from a file). The groups must hold
   * the same parameters in the same order; buffers must have the parameters' shapes. Learning rates, step
   * counters and buffers are restored exactly.
   */
  loadStateDict(tensors: Map<string, tf.Tensor | Float32Array>, meta: OptimizerMeta, file?: string): void {
    const fail = (msg: string, key?: string): never => {
      throw new OptimizerError(msg, { file, key });
    };
    if (meta.type !== this.type) {
      fail(`optimizer state is for '${meta.type}', this optimizer is '${this.type}'`);
    }
    if (meta.groups.length !== this.groups.length) {
      fail(
        `optimizer state has ${meta.groups.length} parameter groups, this optimizer ${this.groups.length}`,
      );
    }
    meta.groups.forEach((mg, i) => {
      const g = this.groups[i];
      const keys = [...g.params.keys()];
      if (mg.params.length !== keys.length || mg.params.some((k, j) => k !== keys[j])) {
        fail(`parameter group ${i} ('${g.name}') holds different parameters than the saved state`);
      }
    });
    const seen = new Set<string>();
    const pending: [string, string, tf.Tensor][] = [];
    try {
      for (const [key, value] of tensors) {
        const m = /^state\.(.+)\.([A-Za-z_]+)$/.exec(key);
        if (!m) fail("unexpected tensor in optimizer state", key);
        const [, pname, buf] = m!;
        const p = this.groups.map((g) => g.params.get(pname)).find((v) => v !== undefined);
        if (!p) fail("optimizer state for a parameter this optimizer does not have", key);
        if (!this.bufferNames().includes(buf)) fail(`unknown buffer '${buf}' for ${this.type}`, key);
        let t: tf.Tensor;
        if (value instanceof tf.Tensor) {
          if (value.size !== p!.size) fail(`has shape [${value.shape}], parameter has [${p!.shape}]`, key);
          t = tf.reshape(value, p!.shape);
        } else {
          if (value.length !== p!.size) fail(`has ${value.length} values, parameter has ${p!.size}`, key);
          t = tf.tensor(value, p!.shape, "float32");
        }
        pending.push([pname, buf, t]);
        seen.add(pname);
      }
      for (const name of Object.keys(meta.paramSteps)) {
        if (!this.groups.some((g) => g.params.has(name))) fail("step counter for an unknown parameter", name);
      }
      // Everything checked: now replace the state.
      for (const bufs of this.state.values()) for (const v of bufs.values()) v.dispose();
      this.state.clear();
      for (const [pname, buf, t] of pending) this.setBuffer(pname, buf, t);
    } finally {
      for (const [, , t] of pending) t.dispose();
    }
    this.paramSteps.clear();
    for (const [k, v] of Object.entries(meta.paramSteps)) this.paramSteps.set(k, v);
    this.steps = meta.steps;
    meta.groups.forEach((mg, i) => {
      this.groups[i].lr = mg.lr;
      this.groups[i].initialLr = mg.initialLr;
    });
  }

  /** Names of the per-parameter buffers this optimizer keeps. */
  protected abstract bufferNames(): string[];

  /** Frees the state buffers (the parameters belong to the model). */
  dispose(): void {
    for (const bufs of this.state.values()) for (const v of bufs.values()) v.dispose();
    this.state.clear();
    this.#disposed = true;
  }
}

/** Hyper-parameters of {@linkcode SGD} (PyTorch's names and defaults, except `momentum`). */
export interface SgdOptions {
  /** Momentum factor μ (default 0.9, the transfer script's). */
  momentum: number;
  /** Dampening of the momentum (default 0). */
  dampening: number;
  /** Coupled L2 weight decay, added to the gradient (default 0). */
  weightDecay: number;
  /** Nesterov momentum (default false). */
  nesterov: boolean;
}

/**
 * Stochastic gradient descent with `torch.optim.SGD`'s update:
 * `g ← g + wd·p; b ← g (first step) or μ·b + (1 − dampening)·g; d ← nesterov ? g + μ·b : b; p ← p − lr·d`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { SGD } from "./optim.ts";
 * const w = tf.variable(tf.tensor1d([1, 2]));
 * const opt = new SGD([["w", w]], { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
 * opt.step(new Map([["w", tf.tensor1d([0.5, -0.5])]]));
 * ```
 */
export class SGD extends Optimizer<SgdOptions> {
  /** `params`: `[key, variable]` pairs (one group) or group specs. */
  constructor(
    params: Iterable<ParamGroupSpec<SgdOptions>> | Iterable<[string, tf.Variable]>,
    opts: { lr: number } & Partial<SgdOptions>,
  ) {
    const { lr, ...rest } = opts;
    super("sgd", params, lr, { momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false, ...rest });
  }

  /** Checks SGD's hyper-parameters. */
  protected validate(o: SgdOptions): void {
    checkFinite("momentum", o.momentum);
    checkFinite("dampening", o.dampening);
    checkFinite("weightDecay", o.weightDecay);
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new OptimizerError("Nesterov momentum requires a momentum and zero dampening");
    }
  }

  /** SGD keeps PyTorch's `momentum_buffer`. */
  protected bufferNames(): string[] {
    return ["momentum_buffer"];
  }

  /** The SGD update of one parameter. */
  protected update(name: string, p: tf.Variable, g: tf.Tensor, group: ParamGroup<SgdOptions>): void {
    const o = group.options;
    let d = g;
    if (o.weightDecay !== 0) d = tf.add(d, tf.mul(p, tf.scalar(o.weightDecay)));
    if (o.momentum !== 0) {
      const prev = this.buffer(name, "momentum_buffer");
      const buf = prev === undefined ? d : tf.add(
        tf.mul(prev, tf.scalar(o.momentum)),
        o.dampening === 0 ? d : tf.mul(d, tf.scalar(1 - o.dampening)),
      );
      this.setBuffer(name, "momentum_buffer", buf);
      d = o.nesterov ? tf.add(d, tf.mul(buf, tf.scalar(o.momentum))) : buf;
    }
    p.assign(tf.sub(p, tf.mul(d, tf.scalar(group.lr))));
  }
}

/** Hyper-parameters of {@linkcode AdamW} (PyTorch's defaults). */
export interface AdamWOptions {
  /** Coefficients of the running averages of the gradient and its square (default `[0.9, 0.999]`). */
  betas: [number, number];
  /** Added to the bias-corrected square root of the second moment (default 1e-8). */
  eps: number;
  /** Decoupled weight decay: `p ← p·(1 − lr·wd)` before the Adam step (default 0.01). */
  weightDecay: number;
}

/**
 * Adam with decoupled weight decay, `torch.optim.AdamW`'s update at step t:
 * `p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;`
 * `p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { AdamW } from "./optim.ts";
 * const w = tf.variable(tf.tensor1d([1, 2]));
 * const opt = new AdamW([["w", w]], { lr: 5e-4, weightDecay: 0.05 });
 * opt.step(new Map([["w", tf.tensor1d([0.5, -0.5])]]));
 * ```
 */
export class AdamW extends Optimizer<AdamWOptions> {
  /** `params`: `[key, variable]` pairs (one group) or group specs. */
  constructor(
    params: Iterable<ParamGroupSpec<AdamWOptions>> | Iterable<[string, tf.Variable]>,
    opts: { lr: number } & Partial<AdamWOptions>,
  ) {
    const { lr, ...rest } = opts;
    super("adamw", params, lr, { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, ...rest });
  }

  /** Checks AdamW's hyper-parameters. */
  protected validate(o: AdamWOptions): void {
    if (!Array.isArray(o.betas) || o.betas.length !== 2 || o.betas.some((b) => !(b >= 0 && b < 1))) {
      throw new OptimizerError(`betas must be two numbers in [0, 1), got ${JSON.stringify(o.betas)}`);
    }
    checkFinite("eps", o.eps);
    checkFinite("weightDecay", o.weightDecay);
  }

  /** AdamW keeps PyTorch's `exp_avg` and `exp_avg_sq`. */
  protected bufferNames(): string[] {
    return ["exp_avg", "exp_avg_sq"];
  }

  /** The AdamW update of one parameter at its step `step`. */
  protected update(
    name: string,
    p: tf.Variable,
    g: tf.Tensor,
    group: ParamGroup<AdamWOptions>,
    step: number,
  ): void {
    const { betas: [b1, b2], eps, weightDecay } = group.options;
    const lr = group.lr;
    let param: tf.Tensor = p;
    if (weightDecay !== 0) param = tf.mul(p, tf.scalar(1 - lr * weightDecay));
    const m0 = this.buffer(name, "exp_avg");
    const v0 = this.buffer(name, "exp_avg_sq");
    const gm = tf.mul(g, tf.scalar(1 - b1));
    const m = m0 ? tf.add(tf.mul(m0, tf.scalar(b1)), gm) : gm;
    const gv = tf.mul(tf.mul(g, g), tf.scalar(1 - b2));
    const v = v0 ? tf.add(tf.mul(v0, tf.scalar(b2)), gv) : gv;
    this.setBuffer(name, "exp_avg", m);
    this.setBuffer(name, "exp_avg_sq", v);
    const bc1 = 1 - b1 ** step;
    const bc2Sqrt = Math.sqrt(1 - b2 ** step);
    const denom = tf.add(tf.div(tf.sqrt(v), tf.scalar(bc2Sqrt)), tf.scalar(eps));
    p.assign(tf.sub(param, tf.mul(tf.div(m, denom), tf.scalar(lr / bc1))));
  }
}

/**
 * Clips gradients by their global 2-norm as `torch.nn.utils.clip_grad_norm_` does: with
 * `total = sqrt(sum ||g||²)`, every gradient is multiplied by `min(1, maxNorm / (total + 1e-6))`.
 * Returns new gradient tensors (the inputs are not disposed) and the total norm before clipping; no data is
 * read back from the device.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { clipGradNorm } from "./optim.ts";
 * const { grads, totalNorm } = clipGradNorm(new Map([["w", tf.tensor1d([3, 4])]]), 1);
 * totalNorm.dataSync(); // [5]; grads.get("w") is [0.6, 0.8] (to within 1e-6)
 * ```
 */
export function clipGradNorm(grads: Gradients, maxNorm: number): { grads: Gradients; totalNorm: tf.Scalar } {
  checkFinite("maxNorm", maxNorm);
  const names = [...grads.keys()];
  const out: Gradients = new Map();
  const totalNorm = tf.tidy(() => {
    if (names.length === 0) return tf.scalar(0);
    const sq = names.map((k) => tf.sum(tf.square(grads.get(k)!)));
    const total = tf.sqrt(tf.addN(sq)) as tf.Scalar;
    const coef = tf.minimum(tf.div(tf.scalar(maxNorm), tf.add(total, tf.scalar(1e-6))), tf.scalar(1));
    for (const k of names) out.set(k, tf.keep(tf.mul(grads.get(k)!, coef)));
    return total;
  });
  return { grads: out, totalNorm };
}

/** The names timm's `add_weight_decay` exempts besides 1-D tensors and biases: T2T-ViT's `no_weight_decay()`. */
export const NO_WEIGHT_DECAY: readonly string[] = ["cls_token"];

/**
 * timm's `add_weight_decay`: two groups, `no_decay` (weight decay 0: every 1-D tensor, every name ending in
 * `.bias`, and the names in `skip`) then `decay` (weight decay `weightDecay`), in parameter order. Use with
 * {@linkcode AdamW} for the ImageNet recipe (`--opt adamw --weight-decay 0.05`).
 *
 * @example
 * ```ts ignore
 * import { AdamW, weightDecayParamGroups } from "./optim.ts";
 * const opt = new AdamW(weightDecayParamGroups(model.trainableVariables(), 0.05), { lr: 5e-4 });
 * ```
 */
export function weightDecayParamGroups<H extends { weightDecay: number }>(
  params: NamedParameters,
  weightDecay: number,
  skip: Iterable<string> = NO_WEIGHT_DECAY,
): ParamGroupSpec<H>[] {
  const skipSet = new Set(skip);
  const decay: [string, tf.Variable][] = [];
  const noDecay: [string, tf.Variable][] = [];
  for (const [k, v] of params) {
    if (v.shape.length === 1 || k.endsWith(".bias") || skipSet.has(k)) noDecay.push([k, v]);
    else decay.push([k, v]);
  }
  return [
    { name: "no_decay", params: noDecay, options: { weightDecay: 0 } as Partial<H> },
    { name: "decay", params: decay, options: { weightDecay } as Partial<H> },
  ];
}

/** Options of {@linkcode transferParamGroups}. */
export interface TransferGroupOptions {
  /** The head's learning rate (the script's `--lr`). */
  lr: number;
  /** `tokens_to_token` and `blocks` train at `transferRatio * lr` (default 0.01, the script's). */
  transferRatio?: number;
  /**
   * What to do with trainable parameters outside `tokens_to_token`, `blocks` and `head` (`cls_token`, the final
   * `norm`): `"freeze"` leaves them out of the optimizer, as the official script does (its groups do not list
   * them); `"backbone"` trains them at the backbone rate; `"head"` at the head's.
   */
  others?: "freeze" | "backbone" | "head";
}

/**
 * The official transfer script's parameter groups: `tokens_to_token` and `blocks` at `transferRatio * lr`, the
 * `head` at `lr`. Parameters are taken from `params` (the model's trainable variables, so the performer's `w`
 * and `pos_embed` never appear).
 *
 * @example
 * ```ts ignore
 * import { SGD, transferParamGroups } from "./optim.ts";
 * const opt = new SGD(transferParamGroups(model.trainableVariables(), { lr: 0.01 }), {
 *   lr: 0.01, momentum: 0.9, weightDecay: 5e-4,
 * });
 * ```
 */
export function transferParamGroups<H>(
  params: NamedParameters,
  opts: TransferGroupOptions,
): ParamGroupSpec<H>[] {
  const ratio = opts.transferRatio ?? 0.01;
  checkFinite("lr", opts.lr);
  checkFinite("transferRatio", ratio);
  const t2t: [string, tf.Variable][] = [];
  const blocks: [string, tf.Variable][] = [];
  const head: [string, tf.Variable][] = [];
  const others: [string, tf.Variable][] = [];
  for (const [k, v] of params) {
    if (k.startsWith("tokens_to_token.")) t2t.push([k, v]);
    else if (k.startsWith("blocks.")) blocks.push([k, v]);
    else if (k.startsWith("head.")) head.push([k, v]);
    else others.push([k, v]);
  }
  if (head.length === 0) throw new OptimizerError("the model has no trainable 'head.*' parameters");
  const mode = opts.others ?? "freeze";
  const groups: ParamGroupSpec<H>[] = [
    { name: "tokens_to_token", params: t2t, lr: ratio * opts.lr },
    { name: "blocks", params: blocks, lr: ratio * opts.lr },
    { name: "head", params: head, lr: opts.lr },
  ];
  if (mode !== "freeze" && others.length > 0) {
    groups.push({ name: "others", params: others, lr: mode === "backbone" ? ratio * opts.lr : opts.lr });
  }
  return groups;
}
