/**
 * A terminal progress bar on stderr: `[=====>.....] 120/391 loss 0.812 acc 71.4% 52.1 img/s 3m12s left`.
 * On a terminal it redraws one line; otherwise (logs, CI) it prints a line every `every` percent.
 *
 * @module
 */

import { denoNs } from "../core/platform.ts";

/** Formats seconds as `1h02m`, `3m12s` or `42s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

/** Options of {@linkcode ProgressBar}. */
export interface ProgressOptions {
  /** Text before the bar (e.g. `"epoch 3 train"`). */
  label: string;
  /** Total number of steps. */
  total: number;
  /** Bar width in characters (default 30). */
  width?: number;
  /** Force line mode (one line per `every` percent) or redraw mode; default: redraw when stderr is a TTY. */
  tty?: boolean;
  /** Percent between lines in line mode (default 10). */
  every?: number;
  /** Where to write (default stderr). */
  write?: (s: string) => void;
}

/**
 * A progress bar with throughput and time left.
 *
 * @example
 * ```ts
 * import { ProgressBar } from "./progress.ts";
 * const bar = new ProgressBar({ label: "epoch 0", total: 10, write: () => {} });
 * for (let i = 1; i <= 10; i++) bar.update(i, { items: 128 * i, info: `loss ${(1 / i).toFixed(3)}` });
 * bar.done();
 * ```
 */
export class ProgressBar {
  readonly #o: Required<ProgressOptions>;
  readonly #start = performance.now();
  #lastPct = -1;
  #lastLine = "";

  /** Starts the clock. */
  constructor(opts: ProgressOptions) {
    const enc = new TextEncoder();
    const deno = denoNs();
    this.#o = {
      width: 30,
      tty: deno?.stderr.isTerminal() ?? false,
      every: 10,
      // a browser has no stderr: lines go to the console
      write: deno
        ? (s: string) => void deno.stderr.writeSync(enc.encode(s))
        : (s: string) => console.log(s.trimEnd()),
      ...opts,
    };
  }

  /** Seconds since the bar started. */
  get elapsed(): number {
    return (performance.now() - this.#start) / 1000;
  }

  /** Reports `done` steps finished; `items` (images so far) gives the rate; `info` is appended. */
  update(done: number, extra: { items?: number; info?: string } = {}): void {
    const { total, width, label } = this.#o;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const el = this.elapsed;
    const rate = extra.items !== undefined && el > 0 ? `${(extra.items / el).toFixed(1)} img/s` : "";
    const left = done > 0 ? formatDuration((el / done) * (total - done)) + " left" : "";
    const fill = Math.floor(frac * width);
    const bar = "=".repeat(Math.max(0, fill - 1)) + (fill > 0 ? ">" : "") + ".".repeat(width - fill);
    const line = [label, `[${bar}]`, `${done}/${total}`, extra.info ?? "", rate, left].filter((s) => s).join(
      " ",
    );
    this.#lastLine = line;
    if (this.#o.tty) {
      this.#o.write(`\r${line}\x1b[K`);
    } else {
      const pct = Math.floor((frac * 100) / this.#o.every);
      if (pct !== this.#lastPct) {
        this.#lastPct = pct;
        this.#o.write(line + "\n");
      }
    }
  }

  /** Ends the bar (a newline on a terminal) with an optional final message. */
  done(message?: string): void {
    if (this.#o.tty) {
      const tail = message ?? `${this.#lastLine.replace(/ \S+ left$/, "")} (${formatDuration(this.elapsed)})`;
      this.#o.write(`\r${tail}\x1b[K\n`);
    } else if (message !== undefined) this.#o.write(message + "\n");
  }
}
