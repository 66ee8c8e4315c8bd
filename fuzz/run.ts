/**
 * `deno task fuzz`: seeded, reproducible fuzzing of every reader (zip and legacy checkpoints, the pickle
 * machine, safetensors) with mutations of the real reference files.
 *
 * ```sh
 * deno task fuzz --cases 100000 --save fuzz-findings      # all targets, seed 1
 * deno task fuzz --target pickle --seed 7 --time-limit 60
 * deno task fuzz --seed 7 --target pickle --case 1234     # replay one case, verbosely
 * deno task fuzz --replay fuzz-findings/zip-seed1-case5.bin --target zip
 * ```
 *
 * Cases run in a worker watched by the main thread: a case that does not return within `--hang-ms` is a hang,
 * recorded as a finding, and the run goes on in a fresh worker. Exit status: 0 when nothing was found, 1 when
 * something was, 2 on a usage error.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CaseResult, Fuzzer, type FuzzOptions, FuzzStats } from "./harness.ts";
import { type Target, TARGETS } from "./mutate.ts";
import { Finding, runReaders } from "./readers.ts";
import type { WorkerMessage, WorkerRequest } from "./worker.ts";

const USAGE = `Usage: deno task fuzz [options]

  --seed <n>          run seed (default 1); case N of a seed is always the same input
  --cases <n>         number of cases (default 100000)
  --start <n>         first case index (default 0)
  --target <t>        zip | legacy | pickle | safetensors | amplify | all (default all); amplify
                      builds hostile files from scratch (memo reuse, nested copies, many views,
                      deflate ratios, PNG/JPEG bombs) instead of mutating the corpus
  --time-limit <s>    stop starting cases after this many seconds
  --save <dir>        save failing cases (input bytes + JSON with seed, case, steps, error) here
  --case <n>          run only case n, in this thread, and print everything about it
  --replay <file>     feed one file (e.g. a saved case) to the readers of --target
  --max-ms <ms>       a case slower than this, twice, is a finding (default 1000)
  --hang-ms <ms>      a case still running after this is a hang (default 15000)
  --mem-factor <x>    allowed peak memory growth per case: x * input size + slack (default 6)
  --mem-slack <MiB>   (default 96)
  --file-every <n>    run the file-backed readers on one small case in n (default 8; 0 = never)
  --reference <dir>   seed files (default tests/fixtures/reference)
  --json              print the summary as JSON too
  -q, --quiet         no progress lines
  -h, --help`;

const DEFAULT_REFERENCE = new URL("../tests/fixtures/reference", import.meta.url).pathname;

function num(v: string | undefined, name: string, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number, not '${v}'`);
  return n;
}

/** Re-runs this script with `--expose-gc` (for clean per-case memory figures) unless it already has it. */
async function reexecWithGc(): Promise<number | null> {
  if (typeof (globalThis as { gc?: unknown }).gc === "function" || Deno.env.get("T2T_FUZZ_CHILD")) {
    return null;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", new URL(import.meta.url).pathname, ...Deno.args],
    env: { T2T_FUZZ_CHILD: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

function describe(r: CaseResult): string {
  return JSON.stringify(
    {
      index: r.index,
      target: r.target,
      seedFile: r.seedFile,
      steps: r.steps,
      inputBytes: r.inputBytes,
      outcome: r.outcome,
      message: r.message,
      ms: Number(r.ms.toFixed(2)),
      cpuMs: r.cpuMs === null ? null : Number(r.cpuMs.toFixed(2)),
      memGrowthMiB: r.memGrowth === null ? null : Number((r.memGrowth / 1048576).toFixed(1)),
      finding: r.finding,
    },
    null,
    2,
  );
}

async function runWorkers(opts: FuzzOptions, hangMs: number, quiet: boolean): Promise<FuzzStats> {
  const stats = new FuzzStats();
  const start = opts.start ?? 0;
  const end = start + opts.cases;
  const deadline = opts.timeLimitS ? Date.now() + opts.timeLimitS * 1000 : Number.MAX_SAFE_INTEGER;
  let next = start;
  let finished = false;
  let lastReport = Date.now();
  let mainFuzzer: Fuzzer | null = null; // only to save a hanging case's input
  let announced = false;
  while (!finished && next < end && Date.now() < deadline) {
    const worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    await new Promise<void>((resolve) => {
      let current = -1;
      let startedAt = Date.now();
      const stop = (restartAt: number | null) => {
        clearInterval(timer);
        worker.terminate();
        if (restartAt === null) finished = true;
        else next = restartAt;
        resolve();
      };
      const lost = (kind: string, message: string) => {
        const r: CaseResult = {
          index: current,
          target: opts.target === "all" ? "zip" : opts.target,
          seedFile: "?",
          steps: [],
          inputBytes: 0,
          outcome: "finding",
          ms: Date.now() - startedAt,
          cpuMs: null,
          memGrowth: null,
          peakRss: null,
          finding: { kind, message },
        };
        mainFuzzer ??= new Fuzzer(opts);
        const g = mainFuzzer.generate(current);
        Object.assign(r, {
          target: g.target,
          seedFile: g.seed.name,
          steps: g.mutant.steps,
          inputBytes: g.mutant.bytes.length,
        });
        mainFuzzer.save(r, g.mutant.bytes);
        stats.add(r);
        console.error(`fuzz: case ${current} ${kind}: ${message}`);
        stop(current + 1);
      };
      const timer = setInterval(() => {
        if (current >= 0 && Date.now() - startedAt > hangMs) lost("hang", `no result after ${hangMs} ms`);
      }, 250);
      worker.onerror = (e) => {
        e.preventDefault();
        if (current >= 0) lost("worker-crash", e.message);
        else {
          console.error(`fuzz: the worker failed to start: ${e.message}`);
          stop(null);
        }
      };
      worker.onmessage = (e: MessageEvent<WorkerMessage>) => {
        const m = e.data;
        if (m.type === "ready") {
          if (!announced && !quiet) {
            console.error(
              `fuzz: ${m.seeds} seed files; per-case peak memory ${
                m.measuresMemory ? "measured" : "NOT measured"
              }` +
                `${m.collectsGarbage ? "" : " (no --expose-gc)"}`,
            );
          }
          announced = true;
        } else if (m.type === "start") {
          current = m.index;
          startedAt = Date.now();
        } else if (m.type === "result") {
          current = -1;
          stats.add(m.result);
          next = m.result.index + 1;
          if (m.result.finding) {
            console.error(
              `fuzz: finding in case ${m.result.index}: ${m.result.finding.message.slice(0, 300)}`,
            );
          }
          if (!quiet && Date.now() - lastReport > 10_000) {
            lastReport = Date.now();
            const s = stats.summary(opts.seed);
            console.error(
              `fuzz: ${stats.cases} cases, ${s.casesPerSecond}/s, slowest ${
                stats.slowest?.ms.toFixed(0)
              } ms, ` +
                `peak RSS ${s.peakRssMiB} MiB, findings ${stats.findings.length}`,
            );
          }
        } else if (m.type === "done") {
          stop(null);
        }
      };
      const req: WorkerRequest = { opts, from: next, count: end - next, deadline };
      worker.postMessage(req);
    });
  }
  (mainFuzzer as Fuzzer | null)?.close();
  return stats;
}

async function main(): Promise<number> {
  const code = await reexecWithGc();
  if (code !== null) return code;
  let args;
  try {
    args = parseArgs({
      args: Deno.args,
      options: {
        seed: { type: "string" },
        cases: { type: "string" },
        start: { type: "string" },
        target: { type: "string" },
        "time-limit": { type: "string" },
        save: { type: "string" },
        case: { type: "string" },
        replay: { type: "string" },
        "max-ms": { type: "string" },
        "hang-ms": { type: "string" },
        "mem-factor": { type: "string" },
        "mem-slack": { type: "string" },
        "file-every": { type: "string" },
        reference: { type: "string" },
        json: { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  let opts: FuzzOptions;
  try {
    const target = (args.target ?? "all") as Target | "all";
    if (target !== "all" && !TARGETS.includes(target)) throw new Error(`unknown target '${target}'`);
    opts = {
      seed: num(args.seed, "seed", 1),
      cases: num(args.cases, "cases", 100_000),
      start: num(args.start, "start", 0),
      target,
      timeLimitS: args["time-limit"] !== undefined ? num(args["time-limit"], "time-limit", 0) : undefined,
      maxCaseMs: num(args["max-ms"], "max-ms", 1000),
      memFactor: num(args["mem-factor"], "mem-factor", 6),
      memSlackBytes: num(args["mem-slack"], "mem-slack", 96) * 1048576,
      fileEvery: num(args["file-every"], "file-every", 8),
      referenceDir: args.reference ?? DEFAULT_REFERENCE,
      save: args.save,
    };
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }

  if (args.replay !== undefined) {
    if (opts.target === "all") {
      console.error("fuzz: --replay needs --target");
      return 2;
    }
    const tmpDir = Deno.makeTempDirSync({ prefix: "t2t-fuzz-" });
    try {
      const t0 = performance.now();
      const o = await runReaders({
        target: opts.target,
        bytes: Deno.readFileSync(args.replay),
        name: args.replay,
        dtype: "keep",
        fileMode: true,
        tmpDir,
      });
      console.log(JSON.stringify({ ...o, ms: Number((performance.now() - t0).toFixed(2)) }, null, 2));
      return 0;
    } catch (e) {
      console.log(e instanceof Finding ? `finding: ${e.message}` : String(e));
      console.log(
        (e as Error)?.cause instanceof Error ? ((e as Error).cause as Error).stack : (e as Error).stack,
      );
      return 1;
    } finally {
      Deno.removeSync(tmpDir, { recursive: true });
    }
  }

  if (args.case !== undefined) {
    const fuzzer = new Fuzzer(opts);
    try {
      const r = await fuzzer.run(num(args.case, "case", 0));
      console.log(describe(r));
      if (r.finding?.stack) console.log(r.finding.stack);
      return r.finding ? 1 : 0;
    } finally {
      fuzzer.close();
    }
  }

  const hangMs = num(args["hang-ms"], "hang-ms", 15_000);
  const stats = await runWorkers(opts, hangMs, args.quiet === true);
  console.log(stats.report(opts.seed));
  if (args.json) console.log(JSON.stringify(stats.summary(opts.seed), null, 2));
  return stats.findings.length ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
