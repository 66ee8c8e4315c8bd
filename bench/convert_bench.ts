/**
 * Benchmark: convert a large checkpoint to safetensors, with verification (the default) and without
 * (`--no-verify`), and export the result back to `.pth`; report times, throughput and peak memory.
 *
 * ```sh
 * /usr/bin/python3 bench/make_big_checkpoint.py          # once: bench/out/t2t_vit_24.pth.tar (~513 MB)
 * deno run -A bench/convert_bench.ts [checkpoint] [--runs N] [--dtype keep|f32|f16|bf16]
 * ```
 *
 * Without a path it uses bench/out/t2t_vit_24.pth.tar when present, else the t2t_vit_7 fixture. Each round
 * converts in this process (streaming, as `convert.ts` does) into bench/out/ with and without verification,
 * alternating, then exports the output to `.pth`, and deletes what it wrote. Peak
 * memory is the process's high-water mark (VmHWM from /proc/self/status, Linux), which includes the Deno
 * runtime itself; the baseline before the first run is printed too.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { convertCheckpoint, type DTypeOption, exportTorchCheckpoint } from "../converters/convert.ts";
import { describeWeights } from "../zoo/arch.ts";

function vm(field: "VmHWM" | "VmRSS"): number | null {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

const here = new URL(".", import.meta.url).pathname;
const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { runs: { type: "string", default: "3" }, dtype: { type: "string", default: "keep" } },
});
const big = `${here}out/t2t_vit_24.pth.tar`;
const fixture = `${here}../tests/fixtures/reference/checkpoints/t2t_vit_7.pth.tar`;
let input = positionals[0];
if (!input) {
  try {
    Deno.statSync(big);
    input = big;
  } catch {
    input = fixture;
  }
}
const runs = Number(values.runs);
const inSize = Deno.statSync(input).size;
Deno.mkdirSync(`${here}out`, { recursive: true });
const output = `${here}out/bench-${Deno.pid}.safetensors`;
const pth = `${here}out/bench-${Deno.pid}.pth`;
const baseline = vm("VmRSS") ?? 0;
console.log(
  `input ${input}: ${(inSize / 1e6).toFixed(1)} MB; baseline RSS ${(baseline / 1e6).toFixed(1)} MB`,
);
// The contenders alternate within each round, so a machine that gets busier mid-run slows them alike.
const times = { verified: [] as number[], unverified: [] as number[], exportVerified: [] as number[] };
let outSize = 0;
let pthSize = 0;
let rssPeak = 0;
const sample = () => {
  const rss = Deno.memoryUsage().rss;
  if (rss > rssPeak) rssPeak = rss;
};
for (let i = 0; i < runs; i++) {
  for (const verify of [true, false]) {
    const t0 = performance.now();
    const r = await convertCheckpoint(input, {
      output,
      force: true,
      verify,
      dtype: values.dtype as DTypeOption,
      describe: describeWeights,
      onProgress: sample,
    });
    const secs = (performance.now() - t0) / 1000;
    (verify ? times.verified : times.unverified).push(secs);
    outSize = r.outputBytes;
    console.log(
      `run ${i + 1}, ${verify ? "verified  " : "--no-verify"}: ${
        secs.toFixed(3)
      } s  ${r.architecture.name} ` +
        `from '${r.weightsKey}', ${r.tensors.length} tensors`,
    );
  }
  // and back: the safetensors file to a torch.save .pth (verified)
  const t0 = performance.now();
  const e = await exportTorchCheckpoint(output, { output: pth, force: true, onProgress: sample });
  const secs = (performance.now() - t0) / 1000;
  times.exportVerified.push(secs);
  pthSize = e.outputBytes;
  Deno.removeSync(pth);
  console.log(`run ${i + 1}, export .pth : ${secs.toFixed(3)} s`);
}
Deno.removeSync(output);
const best = (t: number[]) => Math.min(...t);
const median = (t: number[]) => [...t].sort((a, b) => a - b)[Math.floor(t.length / 2)];
const hwm = vm("VmHWM");
const peak = Math.max(hwm ?? 0, rssPeak);
console.log(`output ${(outSize / 1e6).toFixed(1)} MB; .pth ${(pthSize / 1e6).toFixed(1)} MB`);
for (
  const [label, t, bytes] of [
    ["convert, verified (default)", times.verified, outSize],
    ["convert, --no-verify", times.unverified, outSize],
    ["export to .pth, verified", times.exportVerified, pthSize],
  ] as const
) {
  console.log(
    `${label.padEnd(28)} best ${best(t).toFixed(3)} s, median ${median(t).toFixed(3)} s, ` +
      `${(bytes / 1e6 / best(t)).toFixed(0)} MB/s written`,
  );
}
console.log(
  `verification costs ${((median(times.verified) / median(times.unverified) - 1) * 100).toFixed(0)}% ` +
    "(median over median)",
);
console.log(
  `peak RSS ${(peak / 1e6).toFixed(1)} MB (${(peak / outSize).toFixed(2)}x output; ` +
    `${((peak - baseline) / 1e6).toFixed(1)} MB above the runtime's baseline)`,
);
