/**
 * The fuzz harness: generates case N of a seeded run (a target, a seed file and a few mutations, all drawn
 * from the case's own generator), feeds it to every reader, and measures it: wall time (no case may take a
 * second), peak resident memory during the case (it may not follow a size the input does not back: growth is
 * bounded by a small multiple of the input's size), and the outcome (ok, or which typed error). Anything else
 * is a finding, saved with its seed and case number for replay.
 *
 * @module
 */

import process from "node:process";
import type { DTypeOption } from "../converters/convert.ts";
import { Rng } from "../src/core/rng.ts";
import { below, caseSeed } from "./rng.ts";
import { type Corpus, loadCorpus, mutate, type Target, TARGETS } from "./mutate.ts";
import { Finding, runReaders } from "./readers.ts";
import { MemorySource } from "../converters/source.ts";
import { ZipArchive } from "../converters/zip.ts";

/** Options of a fuzz run. */
export interface FuzzOptions {
  /** Run seed (default 1). */
  seed: number;
  /** Number of cases. */
  cases: number;
  /** First case index (default 0). */
  start?: number;
  /** What to feed (default all). */
  target: Target | "all";
  /** Stop starting new cases after this many seconds. */
  timeLimitS?: number;
  /** A case slower than this (confirmed by a second run) is a finding (default 1000 ms). */
  maxCaseMs?: number;
  /**
   * Allowed peak-memory growth per case: `memFactor * input bytes + memSlackBytes` (default 6x + 96 MiB: a
   * conversion may legitimately write up to 4x its input + 64 MiB, see `MAX_OUTPUT_FACTOR`, plus one tensor
   * being converted).
   */
  memFactor?: number;
  /** See {@link FuzzOptions.memFactor}. */
  memSlackBytes?: number;
  /** Run the file-backed readers on one small case in this many (default 8; 0 = never). */
  fileEvery?: number;
  /** The reference folder holding checkpoints/ and outputs/. */
  referenceDir: string;
  /** Save failing cases (bytes and a JSON description) to this folder. */
  save?: string;
}

/** A finding: a broken invariant. */
export interface FindingInfo {
  /** `untyped-error`, `slow`, `memory`, `hang`, `convert-output`, `file-disagrees`, `leftover-file`, `roundtrip`. */
  kind: string;
  /** What happened. */
  message: string;
  /** Stack of the escaped error, if any. */
  stack?: string;
}

/** The result of one case. */
export interface CaseResult {
  /** Case index (with the run seed, all that is needed to replay it). */
  index: number;
  /** What was fed. */
  target: Target;
  /** The seed file that was mutated. */
  seedFile: string;
  /** The mutations, in order. */
  steps: string[];
  /** Size of the mutated input. */
  inputBytes: number;
  /** `ok` or a typed error class name. */
  outcome: string;
  /** The typed error's message pattern. */
  pattern?: string;
  /** The typed error's message. */
  message?: string;
  /** Wall time of the readers (ms). */
  ms: number;
  /**
   * CPU time the process spent on the case (ms), when measurable: unlike wall time, not inflated when other
   * processes compete for the cores.
   */
  cpuMs: number | null;
  /** Peak resident memory growth during the case (bytes), when measurable. */
  memGrowth: number | null;
  /** Peak resident memory of the process during the case (bytes), when measurable. */
  peakRss: number | null;
  /** Set when an invariant broke. */
  finding?: FindingInfo;
}

const TARGET_WEIGHTS: Record<Target, number> = { zip: 3, pickle: 3, legacy: 2, safetensors: 2, amplify: 0.3 };
const DTYPES: DTypeOption[] = ["keep", "keep", "keep", "f16", "bf16", "f32"];

/** Peak and current resident memory from /proc (Linux), with the peak reset per case. */
class MemoryProbe {
  readonly available: boolean;
  private readonly gc: (() => void) | undefined;

  constructor() {
    this.gc = (globalThis as { gc?: () => void }).gc;
    let ok = false;
    try {
      Deno.writeTextFileSync("/proc/self/clear_refs", "5");
      ok = this.read() !== null;
    } catch {
      ok = false;
    }
    this.available = ok;
  }

  /** True when a full collection can be forced before each case (`--v8-flags=--expose-gc`). */
  get canCollect(): boolean {
    return this.gc !== undefined;
  }

  private read(): { rss: number; hwm: number } | null {
    const s = Deno.readTextFileSync("/proc/self/status");
    const rss = /VmRSS:\s+(\d+) kB/.exec(s);
    const hwm = /VmHWM:\s+(\d+) kB/.exec(s);
    return rss && hwm ? { rss: Number(rss[1]) * 1024, hwm: Number(hwm[1]) * 1024 } : null;
  }

  private sinceGc = 0;
  private afterGc = 0;

  /**
   * Resets the peak and returns the resident size to measure growth from. A full collection (25 ms) runs
   * only every 200 cases or when garbage has piled up by 256 MiB: garbage left by earlier cases can only
   * lower the growth a case shows if a collection frees it during the case, and then the peak is real.
   */
  begin(): number | null {
    const now = this.available ? this.read()!.rss : 0;
    if (this.gc && (++this.sinceGc >= 200 || now - this.afterGc > 256 << 20)) {
      this.gc();
      this.sinceGc = 0;
      this.afterGc = this.available ? this.read()!.rss : 0;
    }
    if (!this.available) return null;
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return this.read()!.rss;
  }

  /** The peak since {@link MemoryProbe.begin}. */
  peak(): number | null {
    return this.available ? this.read()!.hwm : null;
  }
}

/**
 * CPU time of the process (user + system, all threads: the readers, the garbage collector's helpers and
 * the I/O threads of a case) in ns, or null. The fuzz process does nothing else while a case runs.
 */
function processCpuNs(): number | null {
  try {
    const u = process.cpuUsage();
    return (u.user + u.system) * 1000;
  } catch {
    return null;
  }
}

/**
 * The bytes a case's input really holds: a zip archive's deflated records count at their inflated size, as
 * far as the archive's inflate budget lets a reader inflate them (that data is in the file, and each reader
 * pass may hold it); anything else counts at its length.
 */
function effectiveInputBytes(bytes: Uint8Array): number {
  try {
    const zip = ZipArchive.open(new MemorySource(bytes, "case"));
    let inflated = 0;
    for (const e of zip.entries.values()) if (e.method === 8) inflated += e.size;
    return bytes.length + Math.min(inflated, zip.inflateBudget);
  } catch {
    return bytes.length;
  }
}

/** Generates and runs cases in this thread (the CLI runs this inside a worker, with a watchdog). */
export class Fuzzer {
  /** The seed corpus. */
  readonly corpus: Corpus;
  /** The options. */
  readonly opts: FuzzOptions;
  private readonly memory = new MemoryProbe();
  private readonly tmpDir: string;

  /** Loads the corpus. */
  constructor(opts: FuzzOptions, corpus?: Corpus) {
    this.opts = opts;
    this.corpus = corpus ?? loadCorpus(opts.referenceDir);
    this.tmpDir = Deno.makeTempDirSync({ prefix: "t2t-fuzz-" });
  }

  /** True when per-case peak memory is measured. */
  get measuresMemory(): boolean {
    return this.memory.available;
  }

  /** True when garbage is collected before each case. */
  get collectsGarbage(): boolean {
    return this.memory.canCollect;
  }

  /** Removes the temporary folder. */
  close(): void {
    Deno.removeSync(this.tmpDir, { recursive: true });
  }

  /** Case `index`'s target, seed file, mutations and bytes (deterministic in the run seed and index). */
  generate(index: number) {
    const rng = new Rng(caseSeed(this.opts.seed, index));
    const target = this.opts.target === "all" ? rng.weighted(TARGET_WEIGHTS) : this.opts.target;
    const { seed, mutant } = mutate(this.corpus, target, rng);
    const dtype = rng.pick(DTYPES);
    const every = this.opts.fileEvery ?? 8;
    const fileMode = every > 0 && mutant.bytes.length < 2_000_000 && below(rng, every) === 0;
    return { target, seed, mutant, dtype, fileMode };
  }

  /** Runs case `index` and measures it. */
  async run(index: number): Promise<CaseResult> {
    const { target, seed, mutant, dtype, fileMode } = this.generate(index);
    const input = {
      target,
      bytes: mutant.bytes,
      pickle: mutant.pickle,
      name: `case${index}`,
      dtype,
      fileMode,
      tmpDir: this.tmpDir,
    };
    const result: CaseResult = {
      index,
      target,
      seedFile: seed.name,
      steps: mutant.steps,
      inputBytes: mutant.bytes.length,
      outcome: "ok",
      ms: 0,
      cpuMs: null,
      memGrowth: null,
      peakRss: null,
    };
    const once = async () => {
      const base = this.memory.begin();
      const c0 = processCpuNs();
      const t0 = performance.now();
      try {
        const o = await runReaders(input);
        result.outcome = o.outcome;
        result.pattern = o.pattern;
        result.message = o.message;
      } catch (e) {
        result.outcome = "finding";
        result.finding = e instanceof Finding
          ? { kind: e.kind, message: e.message, stack: stackOf(e.cause ?? e) }
          : { kind: "harness", message: String(e), stack: stackOf(e) };
      }
      const ms = performance.now() - t0;
      const c1 = processCpuNs();
      const cpuMs = c0 !== null && c1 !== null ? (c1 - c0) / 1e6 : null;
      const peak = this.memory.peak();
      return { ms, cpuMs, growth: base !== null && peak !== null ? peak - base : null, peak };
    };
    let m = await once();
    const maxMs = this.opts.maxCaseMs ?? 1000;
    if (m.ms > maxMs && !result.finding) {
      // The machine is shared: a case is slow only if it is slow twice, and (where CPU time is known) not
      // merely waiting for a core: its own CPU time must be at least half the limit.
      const again = await once();
      if (again.ms < m.ms) m = { ...again, growth: Math.max(m.growth ?? 0, again.growth ?? 0) };
      if (m.ms > maxMs && (m.cpuMs === null || m.cpuMs > maxMs / 2) && !result.finding) {
        result.finding = {
          kind: "slow",
          message: `took ${m.ms.toFixed(0)} ms twice (limit ${maxMs} ms)` +
            (m.cpuMs === null ? "" : `, ${m.cpuMs.toFixed(0)} ms of CPU`),
        };
      }
    }
    result.ms = m.ms;
    result.cpuMs = m.cpuMs;
    result.memGrowth = m.growth;
    result.peakRss = m.peak;
    const inputBytes = effectiveInputBytes(mutant.bytes);
    const limit = (this.opts.memFactor ?? 6) * inputBytes + (this.opts.memSlackBytes ?? 96 << 20);
    if (m.growth !== null && m.growth > limit && !result.finding) {
      result.finding = {
        kind: "memory",
        message: `peak memory grew by ${mib(m.growth)} for a ${mib(mutant.bytes.length)} input ` +
          `${inputBytes > mutant.bytes.length ? `(${mib(inputBytes)} once inflated) ` : ""}(limit ${
            mib(limit)
          })`,
      };
    }
    if (result.finding) this.save(result, mutant.bytes);
    return result;
  }

  /** Writes a failing case's bytes and description to the save folder, if one was given. */
  save(result: CaseResult, bytes?: Uint8Array): void {
    const dir = this.opts.save;
    if (!dir) return;
    Deno.mkdirSync(dir, { recursive: true });
    const stem = `${dir}/${result.target}-seed${this.opts.seed}-case${result.index}`;
    Deno.writeFileSync(`${stem}.bin`, bytes ?? this.generate(result.index).mutant.bytes);
    Deno.writeTextFileSync(
      `${stem}.json`,
      JSON.stringify(
        {
          ...result,
          seed: this.opts.seed,
          replay:
            `deno task fuzz --seed ${this.opts.seed} --target ${this.opts.target} --case ${result.index}`,
        },
        null,
        1,
      ),
    );
  }
}

function stackOf(e: unknown): string | undefined {
  return e instanceof Error ? e.stack?.split("\n").slice(0, 12).join("\n") : undefined;
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/** Aggregated figures of a run. */
export class FuzzStats {
  /** Cases run. */
  cases = 0;
  /** Cases per target. */
  readonly perTarget: Record<string, number> = {};
  /** Outcomes per target (`ok`, error class, `finding`). */
  readonly outcomes: Record<string, Record<string, number>> = {};
  /** Typed-error message patterns and their counts. */
  readonly patterns = new Map<string, number>();
  /** Findings. */
  readonly findings: CaseResult[] = [];
  /** The slowest case (wall time). */
  slowest: CaseResult | null = null;
  /** The case that used the most CPU time. */
  slowestCpu: CaseResult | null = null;
  /** Highest peak resident memory seen (bytes). */
  peakRss = 0;
  /** Largest per-case memory growth (bytes) and its case. */
  maxGrowth: CaseResult | null = null;
  /** Sum of case times (ms). */
  totalMs = 0;
  /** Wall-clock start. */
  readonly started = performance.now();

  /** Adds a case. */
  add(r: CaseResult): void {
    this.cases++;
    this.perTarget[r.target] = (this.perTarget[r.target] ?? 0) + 1;
    const o = (this.outcomes[r.target] ??= {});
    const key = r.finding ? `finding:${r.finding.kind}` : r.outcome;
    o[key] = (o[key] ?? 0) + 1;
    if (r.pattern) {
      this.patterns.set(
        `${r.outcome}: ${r.pattern}`,
        (this.patterns.get(`${r.outcome}: ${r.pattern}`) ?? 0) + 1,
      );
    }
    if (r.finding) this.findings.push(r);
    if (!this.slowest || r.ms > this.slowest.ms) this.slowest = r;
    if (r.cpuMs !== null && (!this.slowestCpu || r.cpuMs > this.slowestCpu.cpuMs!)) this.slowestCpu = r;
    if (r.peakRss !== null) this.peakRss = Math.max(this.peakRss, r.peakRss);
    if (r.memGrowth !== null && (!this.maxGrowth || r.memGrowth > this.maxGrowth.memGrowth!)) {
      this.maxGrowth = r;
    }
    this.totalMs += r.ms;
  }

  /** The figures as a JSON-friendly object. */
  summary(seed: number): Record<string, unknown> {
    const wall = (performance.now() - this.started) / 1000;
    return {
      seed,
      cases: this.cases,
      wallSeconds: Number(wall.toFixed(1)),
      casesPerSecond: Number((this.cases / wall).toFixed(1)),
      perTarget: this.perTarget,
      outcomes: this.outcomes,
      findings: this.findings.length,
      slowest: this.slowest &&
        {
          index: this.slowest.index,
          target: this.slowest.target,
          seedFile: this.slowest.seedFile,
          ms: Number(this.slowest.ms.toFixed(1)),
          cpuMs: this.slowest.cpuMs === null ? null : Number(this.slowest.cpuMs.toFixed(1)),
          outcome: this.slowest.outcome,
        },
      slowestCpu: this.slowestCpu &&
        {
          index: this.slowestCpu.index,
          target: this.slowestCpu.target,
          seedFile: this.slowestCpu.seedFile,
          ms: Number(this.slowestCpu.ms.toFixed(1)),
          cpuMs: Number(this.slowestCpu.cpuMs!.toFixed(1)),
          outcome: this.slowestCpu.outcome,
        },
      meanMs: Number((this.totalMs / Math.max(1, this.cases)).toFixed(2)),
      peakRssMiB: Number((this.peakRss / 1048576).toFixed(1)),
      maxGrowth: this.maxGrowth &&
        {
          index: this.maxGrowth.index,
          seedFile: this.maxGrowth.seedFile,
          growthMiB: Number((this.maxGrowth.memGrowth! / 1048576).toFixed(1)),
          inputMiB: Number((this.maxGrowth.inputBytes / 1048576).toFixed(2)),
        },
    };
  }

  /** A human-readable report. */
  report(seed: number, topPatterns = 12): string {
    const s = this.summary(seed);
    const lines = [
      `fuzz: seed ${seed}, ${this.cases} cases in ${s.wallSeconds} s (${s.casesPerSecond} cases/s, mean ${s.meanMs} ms)`,
    ];
    for (const t of TARGETS) {
      if (!this.perTarget[t]) continue;
      const o = Object.entries(this.outcomes[t]).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`);
      lines.push(`  ${t.padEnd(12)} ${String(this.perTarget[t]).padStart(7)}  ${o.join(", ")}`);
    }
    const cpu = (r: CaseResult) => (r.cpuMs === null ? "" : ` (${r.cpuMs.toFixed(1)} ms CPU)`);
    if (this.slowest) {
      lines.push(
        `slowest case (wall): #${this.slowest.index} (${this.slowest.target}, ${this.slowest.seedFile}) ` +
          `${this.slowest.ms.toFixed(1)} ms${cpu(this.slowest)}, ${this.slowest.outcome}`,
      );
    }
    if (this.slowestCpu) {
      lines.push(
        `slowest case (CPU): #${this.slowestCpu.index} (${this.slowestCpu.target}, ${this.slowestCpu.seedFile}) ` +
          `${this.slowestCpu.ms.toFixed(1)} ms${cpu(this.slowestCpu)}, ${this.slowestCpu.outcome}`,
      );
    }
    lines.push(`peak RSS: ${this.peakRss ? mib(this.peakRss) : "not measured"}`);
    if (this.maxGrowth) {
      lines.push(
        `largest per-case memory growth: ${mib(this.maxGrowth.memGrowth!)} (case #${this.maxGrowth.index}, ` +
          `${this.maxGrowth.seedFile}, input ${mib(this.maxGrowth.inputBytes)})`,
      );
    }
    const top = [...this.patterns].sort((a, b) => b[1] - a[1]).slice(0, topPatterns);
    if (top.length) {
      lines.push(`most common typed errors (of ${this.patterns.size} kinds):`);
      for (const [p, n] of top) lines.push(`  ${String(n).padStart(6)}  ${p}`);
    }
    lines.push(`findings: ${this.findings.length}`);
    for (const f of this.findings.slice(0, 20)) {
      lines.push(`  #${f.index} ${f.target} ${f.seedFile}: ${f.finding!.message.slice(0, 200)}`);
      lines.push(`      steps: ${f.steps.join(" | ").slice(0, 300)}`);
    }
    return lines.join("\n");
  }
}

/**
 * Runs a fuzz campaign in this thread and returns its figures (no watchdog: a hanging case hangs the call;
 * `fuzz/run.ts` runs cases in a worker instead).
 */
export async function runFuzz(
  opts: FuzzOptions,
  onResult?: (r: CaseResult) => void,
  corpus?: Corpus,
): Promise<FuzzStats> {
  const fuzzer = new Fuzzer(opts, corpus);
  const stats = new FuzzStats();
  const deadline = opts.timeLimitS ? performance.now() + opts.timeLimitS * 1000 : Infinity;
  try {
    const start = opts.start ?? 0;
    for (let i = start; i < start + opts.cases && performance.now() < deadline; i++) {
      const r = await fuzzer.run(i);
      stats.add(r);
      onResult?.(r);
    }
  } finally {
    fuzzer.close();
  }
  return stats;
}
