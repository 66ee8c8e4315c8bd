/**
 * Learning-rate schedules.
 *
 * {@linkcode CosineSchedule} is timm's `CosineLRScheduler` (one cycle, optional linear warmup); without warmup
 * it equals PyTorch's `CosineAnnealingLR(T_max = tInitial, eta_min = lrMin)` for `0 <= t <= tInitial`, which is
 * what the official `transfer_learning.py` uses (`T_max = 60`, `eta_min = --min-lr`, stepped once per epoch).
 *
 * @module
 */

import { OptimizerError } from "./optim.ts";

/** Something whose groups carry a current and a base learning rate (every {@linkcode Optimizer} does). */
export interface HasLrGroups {
  /** The parameter groups. */
  groups: { lr: number; initialLr: number }[];
}

/** Options of {@linkcode CosineSchedule}. */
export interface CosineScheduleOptions {
  /** Length of the cosine in schedule units (epochs, or steps): timm's `t_initial`, PyTorch's `T_max`. */
  tInitial: number;
  /** The floor each group's rate decays to (timm's `lr_min`, PyTorch's `eta_min`). Default 0. */
  lrMin?: number;
  /** Linear warmup length in the same units (timm's `warmup_t`). Default 0. */
  warmupT?: number;
  /** The rate warmup starts from (timm's `warmup_lr_init`). Default 0. */
  warmupLrInit?: number;
  /**
   * timm's `warmup_prefix`: when true the cosine starts after the warmup (t − warmupT); when false (timm's
   * default) the cosine is indexed by t itself, so warmup eats into the cosine.
   */
  warmupPrefix?: boolean;
  /**
   * What happens after `tInitial`: `"min"` holds `lrMin` (timm, one cycle), `"periodic"` continues the cosine
   * as PyTorch's `CosineAnnealingLR` does (it rises again).
   */
  after?: "min" | "periodic";
}

/**
 * A cosine learning-rate schedule applied to every group from its own base rate:
 * `lr(t) = lrMin + (base − lrMin)·(1 + cos(π·t/tInitial))/2`, with an optional linear warmup from
 * `warmupLrInit` to `base` over the first `warmupT` units. Note that the floor is shared by all groups, as in
 * both libraries: with the transfer script's defaults the backbone groups start at `0.01 · 0.01 = 1e-4`, below
 * `min_lr = 2e-4`, so their rate *rises* towards `2e-4` while the head's falls — the official behaviour.
 *
 * @example
 * ```ts
 * import { CosineSchedule } from "./schedule.ts";
 * const s = new CosineSchedule({ tInitial: 60, lrMin: 2e-4 });
 * s.lrAt(0.01, 0); // 0.01
 * s.lrAt(0.01, 30); // 0.0051
 * s.lrAt(0.01, 60); // 0.0002
 * ```
 */
export class CosineSchedule {
  /** Resolved options. */
  readonly options: Required<CosineScheduleOptions>;

  /** Validates and stores the options. */
  constructor(opts: CosineScheduleOptions) {
    const o: Required<CosineScheduleOptions> = {
      lrMin: 0,
      warmupT: 0,
      warmupLrInit: 0,
      warmupPrefix: false,
      after: "min",
      ...opts,
    };
    if (!(o.tInitial > 0) || !Number.isFinite(o.tInitial)) {
      throw new OptimizerError(`tInitial must be > 0, got ${o.tInitial}`);
    }
    for (const k of ["lrMin", "warmupT", "warmupLrInit"] as const) {
      if (!(o[k] >= 0) || !Number.isFinite(o[k])) throw new OptimizerError(`${k} must be >= 0, got ${o[k]}`);
    }
    this.options = o;
  }

  /** The rate at time `t` (epochs or steps, fractional allowed) of a group whose base rate is `base`. */
  lrAt(base: number, t: number): number {
    const { tInitial, lrMin, warmupT, warmupLrInit, warmupPrefix, after } = this.options;
    if (t < warmupT) return warmupLrInit + t * (base - warmupLrInit) / warmupT;
    const tc = warmupPrefix ? t - warmupT : t;
    if (after === "min" && tc >= tInitial) return lrMin;
    return lrMin + 0.5 * (base - lrMin) * (1 + Math.cos(Math.PI * tc / tInitial));
  }

  /** Sets every group's `lr` to its rate at time `t`; returns the rates. */
  apply(opt: HasLrGroups, t: number): number[] {
    return opt.groups.map((g) => (g.lr = this.lrAt(g.initialLr, t)));
  }

  /** A JSON-able description (for checkpoints and logs). */
  toJSON(): Record<string, unknown> {
    return { type: "cosine", ...this.options };
  }
}
