/**
 * Benchmark: convert a large checkpoint to safetensors and report time, throughput and peak memory.
 *
 * ```sh
 * /usr/bin/python3 bench/make_big_checkpoint.py          # once: bench/out/t2t_vit_24.pth.tar (~513 MB)
 * deno run -A bench/convert_bench.ts [checkpoint] [--runs N] [--dtype keep|f32|f16|bf16]
 * ```
 *
 * Without a path it uses bench/out/t2t_vit_24.pth.tar when present, else the t2t_vit_7 fixture. Each run
 * converts in this process (streaming, as `convert.ts` does) into bench/out/ and deletes the output. Peak
 * memory is the process's high-water mark (VmHWM from /proc/self/status, Linux), which includes the Deno
 * runtime itself; the baseline before the first run is printed too.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { convertCheckpoint, type DTypeOption } from "../converters/convert.ts";
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
const baseline = vm("VmRSS") ?? 0;
console.log(
  `input ${input}: ${(inSize / 1e6).toFixed(1)} MB; baseline RSS ${(baseline / 1e6).toFixed(1)} MB`,
);
const times: number[] = [];
let outSize = 0;
let rssPeak = 0;
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const r = await convertCheckpoint(input, {
    output,
    force: true,
    dtype: values.dtype as DTypeOption,
    describe: describeWeights,
    onProgress: () => {
      const rss = Deno.memoryUsage().rss;
      if (rss > rssPeak) rssPeak = rss;
    },
  });
  const secs = (performance.now() - t0) / 1000;
  times.push(secs);
  outSize = r.outputBytes;
  Deno.removeSync(output);
  console.log(
    `run ${i + 1}: ${
      secs.toFixed(3)
    } s  ${r.architecture.name} from '${r.weightsKey}', ${r.tensors.length} tensors`,
  );
}
const best = Math.min(...times);
const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
const hwm = vm("VmHWM");
const peak = Math.max(hwm ?? 0, rssPeak);
console.log(`output ${(outSize / 1e6).toFixed(1)} MB`);
console.log(`time best ${best.toFixed(3)} s, median ${median.toFixed(3)} s`);
console.log(
  `throughput ${(inSize / 1e6 / best).toFixed(0)} MB/s of checkpoint, ${
    (outSize / 1e6 / best).toFixed(0)
  } MB/s written`,
);
console.log(
  `peak RSS ${(peak / 1e6).toFixed(1)} MB (${(peak / outSize).toFixed(2)}x output; ` +
    `${((peak - baseline) / 1e6).toFixed(1)} MB above the runtime's baseline)`,
);
