/**
 * CPU inference, side by side: ours (tfjs wasm with our kernels) on every thread count beside the official
 * PyTorch code and ONNX Runtime (onnxruntime-node running our own ONNX export), on the same weights and the
 * same input, in one run with alternating rounds. Reported per model and batch: median milliseconds, images
 * per second, the ratio of each contender's time to ours on all threads (median and spread over the rounds),
 * peak RSS of the contender's process, load and first-call time (and the first call over a steady one).
 *
 *   deno task bench:cpu [--models t2t_vit_7,t2t_vit_14,t2t_vit_24] [--batches 1,8] [--threads 1,2]
 *                       [--rounds 5] [--torch DIR] [--torch-blas DIR] [--no-torch-plain] [--python /usr/bin/python3]
 *                       [--no-ort]
 *                       [--md bench/out/cpu.md] [--json bench/out/cpu.json]
 *
 * Every contender is its own process, started per (model, batch) so that its peak RSS is its own: it loads
 * the model, runs the first call (timed), writes its logits (compared with ours: the same weights must give
 * the same answer), then runs `reps` forward passes whenever the parent asks; the parent asks each contender
 * in turn, round after round, so that load from other processes hits them alike.
 *
 * The weights: the model's seeded random initialisation, written once as a PyTorch `.pth` (our exporter) and
 * as ONNX (our export). PyTorch needs `--torch DIR`, a clone of the authors' repository (its `models/`
 * folder), and Debian's `python3-torch`; ONNX Runtime needs the npm package `onnxruntime-node`. Either
 * contender is skipped with a note when it is missing. Debian's `python3-torch` calls the system's
 * `libblas.so.3`, the unoptimised reference BLAS unless another is installed: `--torch-blas DIR` runs
 * PyTorch once more with `LD_LIBRARY_PATH=DIR` (e.g. OpenBLAS unpacked from Debian's `libopenblas0-pthread`
 * package), OpenBLAS's pool on the row's thread count and torch's own (OpenMP) pool on one thread (both pools
 * at full size compete for the cores: about 2x slower on 2 cores); `--no-torch-plain` then skips the run on
 * the reference BLAS (minutes per batch of 8). A script that prints figures, not a test.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Splits a text stream into lines (Deno std's TextLineStream is on JSR, which this project cannot reach). */
class TextLineStream extends TransformStream<string, string> {
  constructor() {
    let rest = "";
    super({
      transform(chunk, ctl) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        for (const p of parts) ctl.enqueue(p);
      },
      flush(ctl) {
        if (rest) ctl.enqueue(rest);
      },
    });
  }
}

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "t2t_vit_7,t2t_vit_14,t2t_vit_24" },
    batches: { type: "string", default: "1,8" },
    threads: { type: "string" },
    rounds: { type: "string", default: "5" },
    torch: { type: "string" },
    "torch-blas": { type: "string" },
    "no-torch-plain": { type: "boolean", default: false },
    python: { type: "string", default: "/usr/bin/python3" },
    "no-ort": { type: "boolean", default: false },
    md: { type: "string", default: "bench/out/cpu.md" },
    json: { type: "string", default: "bench/out/cpu.json" },
    child: { type: "string" },
    model: { type: "string" },
    batch: { type: "string" },
    input: { type: "string" },
    logits: { type: "string" },
    onnx: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});

const here = new URL(".", import.meta.url).pathname;

// ---------------------------------------------------------------------------------------------------------
// child processes: ours and ONNX Runtime

if (values.child) {
  const { tf } = await import("../src/core/tf.ts");
  const batch = Number(values.batch);
  const threads = Number(values.threads);
  const input = new Float32Array((await Deno.readFile(values.input!)).buffer);
  const t0 = performance.now();
  let forward: (x: InstanceType<typeof tf.Tensor>) => Promise<Float32Array>;
  if (values.child === "ours") {
    const { enableWasmThreads } = await import("../zoo/kernels/mod.ts");
    const { createModel, setBackend } = await import("../zoo/mod.ts");
    enableWasmThreads(threads);
    await setBackend("wasm");
    const model = await createModel(values.model as "t2t_vit_7");
    forward = async (x) => {
      const y = model.forward(x as never);
      const v = await y.data() as Float32Array;
      y.dispose();
      return v;
    };
  } else {
    const { OnnxModel } = await import("../zoo/onnx_engine.ts");
    const { setBackend } = await import("../zoo/mod.ts");
    await setBackend("cpu"); // only holds the input and output tensors
    const model = await OnnxModel.create(values.onnx!, { intraOpNumThreads: threads });
    forward = async (x) => {
      const y = await model.forward(x as never);
      const v = await y.data() as Float32Array;
      y.dispose();
      return v;
    };
  }
  const loadMs = performance.now() - t0;
  const x = tf.tensor4d(input, [batch, 3, 224, 224]);
  const f0 = performance.now();
  const logits = await forward(x);
  const firstMs = performance.now() - f0;
  await Deno.writeFile(values.logits!, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
  console.log(`ready ${loadMs.toFixed(3)} ${firstMs.toFixed(3)}`);
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
  for await (const line of lines) {
    const [cmd, n] = line.trim().split(/\s+/);
    if (cmd !== "run") break;
    const times: number[] = [];
    for (let i = 0; i < Number(n); i++) {
      const s = performance.now();
      await forward(x);
      times.push(performance.now() - s);
    }
    console.log(`times ${times.map((t) => t.toFixed(3)).join(",")}`);
  }
  Deno.exit(0);
}

// ---------------------------------------------------------------------------------------------------------
// the parent

if (values.help) {
  console.log(
    "usage: deno task bench:cpu [--models a,b] [--batches 1,8] [--threads 1,2] [--rounds N] [--torch DIR] [--torch-blas DIR] " +
      "[--python PATH] [--no-ort] [--md out.md] [--json out.json]",
  );
  Deno.exit(0);
}

const { createModel, exportOnnx, setBackend } = await import("../zoo/mod.ts");
const { serializeTorchCheckpoint } = await import("../converters/torch_writer.ts");
const { Rng } = await import("../src/core/rng.ts");

const models = values.models!.split(",");
const batches = values.batches!.split(",").map(Number);
const cores = navigator.hardwareConcurrency || 1;
const threadCounts = values.threads
  ? values.threads.split(",").map(Number)
  : Array.from({ length: Math.min(cores, 8) }, (_, i) => i + 1);
const rounds = Number(values.rounds);
const maxThreads = Math.max(...threadCounts);

/** A contender's process, spoken to line by line. */
class Contender {
  readonly #proc: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  loadMs = 0;
  firstMs = 0;
  times: number[] = [];

  constructor(
    readonly label: string,
    readonly threads: number,
    cmd: string,
    args: string[],
    env?: Record<string, string>,
  ) {
    this.#proc = new Deno.Command(cmd, { args, env, stdin: "piped", stdout: "piped", stderr: "inherit" })
      .spawn();
    this.#lines = this.#proc.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream())
      .getReader();
    this.#stdin = this.#proc.stdin.getWriter();
  }

  async #line(): Promise<string> {
    for (;;) {
      const { value, done } = await this.#lines.read();
      if (done) throw new Error(`${this.label}: the process ended early`);
      if (value.startsWith("ready ") || value.startsWith("times ")) return value;
    }
  }

  /** Waits for the model to load and run once. */
  async ready(): Promise<void> {
    const [, load, first] = (await this.#line()).split(" ");
    this.loadMs = Number(load);
    this.firstMs = Number(first);
  }

  /** Runs `n` forward passes; returns their median. */
  async run(n: number): Promise<number> {
    await this.#stdin.write(new TextEncoder().encode(`run ${n}\n`));
    const t = (await this.#line()).slice(6).split(",").map(Number).sort((a, b) => a - b);
    this.times.push(...t);
    return t[(t.length - 1) >> 1];
  }

  /** Peak resident memory of the process (VmHWM), in MB; NaN where /proc is missing. */
  peakRssMb(): number {
    try {
      const status = Deno.readTextFileSync(`/proc/${this.#proc.pid}/status`);
      const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
      return kb / 1024;
    } catch {
      return NaN;
    }
  }

  async stop(): Promise<void> {
    try {
      await this.#stdin.write(new TextEncoder().encode("quit\n"));
      await this.#stdin.close();
    } catch { /* already gone */ }
    await this.#proc.status;
  }
}

/** One row of the results. */
interface Row {
  model: string;
  batch: number;
  contender: string;
  threads: number;
  medianMs: number;
  imagesPerSecond: number;
  /** Contender's time over ours on all threads, per round: median, min, max. */
  ratio: { median: number; min: number; max: number };
  peakRssMb: number;
  loadMs: number;
  firstMs: number;
  firstOverSteady: number;
  maxAbsDiff: number;
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[(v.length - 1) >> 1];
const dir = await Deno.makeTempDir({ prefix: "t2t-cpu-bench-" });
const rows: Row[] = [];
const notes: string[] = [];
let ortOk = !values["no-ort"];
if (ortOk) {
  try {
    const { loadOnnxRuntime } = await import("../zoo/onnx_engine.ts");
    await loadOnnxRuntime("node");
  } catch (e) {
    ortOk = false;
    notes.push(`ONNX Runtime skipped: ${(e as Error).message}`);
  }
}
let torchOk = values.torch !== undefined;
if (!torchOk) notes.push("PyTorch skipped: no --torch DIR (a clone of the authors' repository)");
else {
  const probe = await new Deno.Command(values.python!, { args: ["-c", "import torch"], stderr: "null" })
    .output()
    .catch(() => ({ success: false }));
  if (!probe.success) {
    torchOk = false;
    notes.push(`PyTorch skipped: ${values.python} cannot import torch`);
  }
}
for (const n of notes) console.log(`note: ${n}`);

const load0 = Deno.loadavg()[0];
console.log(
  `deno ${Deno.version.deno}, ${cores} logical cores, load ${
    load0.toFixed(2)
  }; ${rounds} alternating rounds; ` +
    `ratios are the contender's time over ours on ${maxThreads} thread(s) (median [min-max] over rounds)`,
);
console.log(
  "model        batch  contender             thr   median ms    img/s   ratio [spread]      peak MB  load ms  first ms  first/steady  max|diff|",
);
try {
  await setBackend("cpu");
  for (const name of models) {
    const files = { pth: `${dir}/${name}.pth`, onnx: `${dir}/${name}.onnx` };
    {
      const model = await createModel(name as "t2t_vit_7");
      const raw = new Map(
        [...model.stateDict()].map(([k, t]) => {
          const v = t.dataSync() as Float32Array;
          return [k, { dtype: "F32" as const, shape: [...t.shape], data: new Uint8Array(v.buffer.slice(0)) }];
        }),
      );
      await Deno.writeFile(files.pth, serializeTorchCheckpoint(raw, name));
      if (ortOk) await Deno.writeFile(files.onnx, exportOnnx(model));
      model.dispose();
    }
    for (const batch of batches) {
      const rng = new Rng(batch);
      const input = Float32Array.from({ length: batch * 3 * 224 * 224 }, () => rng.normal());
      const inputPath = `${dir}/input_${batch}.bin`;
      await Deno.writeFile(inputPath, new Uint8Array(input.buffer));
      const contenders: Contender[] = [];
      const deno = (kind: string, t: number, extra: string[]) =>
        new Contender(kind === "ours" ? "ours (tfjs wasm)" : "onnxruntime-node", t, Deno.execPath(), [
          "run",
          "-A",
          `${here}cpu_bench.ts`,
          "--child",
          kind,
          "--batch",
          String(batch),
          "--threads",
          String(t),
          "--input",
          inputPath,
          "--logits",
          `${dir}/logits_${kind}_${t}.bin`,
          ...extra,
        ]);
      // one at a time: loading in parallel would time the first calls against each other
      for (const t of threadCounts) {
        const c = deno("ours", t, ["--model", name]);
        await c.ready();
        contenders.push(c);
      }
      if (torchOk) {
        const blas = values["torch-blas"];
        for (
          const [label, env] of [
            ...(values["no-torch-plain"] ? [] : [["official PyTorch", undefined]]),
            ...(blas ? [["PyTorch+OpenBLAS", { LD_LIBRARY_PATH: blas }]] : []),
          ] as [string, Record<string, string> | undefined][]
        ) {
          for (const t of threadCounts) {
            const c = new Contender(label, t, values.python!, [
              `${here}torch_infer.py`,
              values.torch!,
              name,
              files.pth,
              inputPath,
              String(batch),
              // with OpenBLAS: its own pool of t threads does the products and torch's OpenMP pool stays at
              // one thread (t of each compete for the cores: about 2x slower here at t = 2)
              String(env ? 1 : t),
              `${dir}/logits_${label === "official PyTorch" ? "torch" : "torchblas"}_${t}.bin`,
            ], env && { ...env, OPENBLAS_NUM_THREADS: String(t) });
            await c.ready();
            contenders.push(c);
          }
        }
      }
      if (ortOk) {
        for (const t of threadCounts) {
          const c = deno("ort", t, ["--onnx", files.onnx]);
          await c.ready();
          contenders.push(c);
        }
      }
      const reps = batch === 1 ? 3 : 1;
      const perRound: number[][] = contenders.map(() => []);
      for (let r = 0; r < rounds; r++) {
        for (const [i, c] of contenders.entries()) perRound[i].push(await c.run(reps));
      }
      const oursAll = contenders.findIndex((c) => c.label.startsWith("ours") && c.threads === maxThreads);
      const ref = new Float32Array((await Deno.readFile(`${dir}/logits_ours_${maxThreads}.bin`)).buffer);
      const logitFile = (c: Contender) =>
        c.label.startsWith("ours")
          ? `logits_ours_${c.threads}`
          : c.label.startsWith("official")
          ? `logits_torch_${c.threads}`
          : c.label.startsWith("PyTorch+")
          ? `logits_torchblas_${c.threads}`
          : `logits_ort_${c.threads}`;
      for (const [i, c] of contenders.entries()) {
        const ratios = perRound[i].map((v, r) => v / perRound[oursAll][r]);
        const med = median(c.times);
        const logits = new Float32Array((await Deno.readFile(`${dir}/${logitFile(c)}.bin`)).buffer);
        let diff = 0;
        for (let j = 0; j < ref.length; j++) diff = Math.max(diff, Math.abs(logits[j] - ref[j]));
        const row: Row = {
          model: name,
          batch,
          contender: c.label,
          threads: c.threads,
          medianMs: med,
          imagesPerSecond: (1000 * batch) / med,
          ratio: { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) },
          peakRssMb: c.peakRssMb(),
          loadMs: c.loadMs,
          firstMs: c.firstMs,
          firstOverSteady: c.firstMs / med,
          maxAbsDiff: diff,
        };
        rows.push(row);
        const f = (v: number, w: number, d = 0) => v.toFixed(d).padStart(w);
        console.log(
          `${name.padEnd(12)} ${f(batch, 5)}  ${c.label.padEnd(20)} ${f(c.threads, 4)} ${f(med, 11, 1)} ${
            f(row.imagesPerSecond, 8, 2)
          }   ${f(row.ratio.median, 5, 2)} [${row.ratio.min.toFixed(2)}-${row.ratio.max.toFixed(2)}] ${
            f(row.peakRssMb, 9)
          } ${f(row.loadMs, 8)} ${f(row.firstMs, 9)} ${f(row.firstOverSteady, 13, 2)}  ${
            diff.toExponential(1)
          }`,
        );
      }
      for (const c of contenders) await c.stop();
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
const load1 = Deno.loadavg()[0];
console.log(`load average ${load0.toFixed(2)} before, ${load1.toFixed(2)} after`);

const md = [
  `CPU inference, ${new Date().toISOString().slice(0, 10)}, deno ${Deno.version.deno}, ${cores} cores, load ${
    load0.toFixed(2)
  }/${
    load1.toFixed(2)
  }; ratio = contender's time / ours on ${maxThreads} thread(s), median [min-max] of ${rounds} rounds`,
  "",
  "| model | batch | contender | threads | median ms | img/s | ratio | peak RSS MB | first call / steady |",
  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...rows.map((r) =>
    `| ${r.model} | ${r.batch} | ${r.contender} | ${r.threads} | ${r.medianMs.toFixed(1)} | ${
      r.imagesPerSecond.toFixed(2)
    } | ${r.ratio.median.toFixed(2)} [${r.ratio.min.toFixed(2)}-${r.ratio.max.toFixed(2)}] | ${
      r.peakRssMb.toFixed(0)
    } | ${r.firstOverSteady.toFixed(2)} |`
  ),
  ...notes.map((n) => `\n${n}`),
];
for (
  const [path, text] of [[values.md!, md.join("\n") + "\n"], [
    values.json!,
    JSON.stringify({ rows, notes }, null, 1),
  ]]
) {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")) || ".", { recursive: true });
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}
console.log(`wrote ${values.md} and ${values.json}`);
