/**
 * `deno task bench:web`: inference in headless Chromium on wasm (one thread on a plain page; threads on a
 * cross-origin-isolated page) beside the same runs in Deno (one thread; the same thread count), for
 * `t2t_vit_7` and `t2t_vit_14` at batch 1 and 8. The four contenders take turns on each configuration
 * (the machine may be shared, so ratios within one run are what to read). Prints a table.
 *
 * ```sh
 * deno task bench:web [--models t2t_vit_7,t2t_vit_14] [--batches 1,8] [--reps 3] [--threads N]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Page } from "puppeteer-core";
import { buildWeb } from "../web/build.ts";
import { findChromium, startRig } from "../tests/support/browser.ts";

/** One measurement: a model at a batch size, `reps` timed forwards after one warm-up. */
interface Config {
  model: string;
  batch: number;
  reps: number;
}

/** What a run gives: median milliseconds per forward and images per second. */
interface Result {
  ms: number;
  imgPerS: number;
  backend: string;
  threads: number;
}

/** The measurement, as one function that runs unchanged in a page (with the bundle) and in Deno (mod.ts). */
// deno-lint-ignore no-explicit-any
async function measure(t: any, cfg: Config, state: Record<string, any>): Promise<Result> {
  const tf = t.tf;
  state.models ??= {};
  const model = state.models[cfg.model] ??= await t.createModel(cfg.model);
  const size = model.config.imgSize;
  const x = tf.randomUniform([cfg.batch, 3, size, size], -1, 1);
  const once = async () => {
    const t0 = performance.now();
    const y = model.forward(x);
    await y.data();
    y.dispose();
    return performance.now() - t0;
  };
  await once(); // warm-up: weight packing, first-call set-up
  const times = [];
  for (let i = 0; i < cfg.reps; i++) times.push(await once());
  x.dispose();
  times.sort((a: number, b: number) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  return { ms, imgPerS: (1000 * cfg.batch) / ms, backend: tf.getBackend(), threads: t.wasmThreadsCount() };
}

/** Deno child: starts wasm with `threads`, then answers one JSON config per stdin line. */
async function child(threads: number): Promise<void> {
  const t = await import("../web/mod.ts"); // the same names as the browser bundle
  await t.setBackend("wasm", { wasmThreads: threads });
  // deno-lint-ignore no-explicit-any
  const state: Record<string, any> = {};
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buf = "";
  for await (const chunk of lines) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const r = await measure(t, JSON.parse(line), state);
      console.log(JSON.stringify(r));
    }
  }
}

/** A contender: a page or a Deno process, answering configs. */
interface Contender {
  label: string;
  run(cfg: Config): Promise<Result>;
  close(): Promise<void>;
}

function pageContender(label: string, page: Page, threads: number): Contender {
  let started = false;
  return {
    label,
    async run(cfg) {
      if (!started) {
        await page.evaluate(async (n: number) => {
          const t = await import("/web/dist/t2t-vit.js");
          await t.setBackend("wasm", { wasmThreads: n });
          (globalThis as Record<string, unknown>).benchState = {};
        }, threads);
        started = true;
      }
      return await page.evaluate(
        async (src: string, c: Config) => {
          const t = await import("/web/dist/t2t-vit.js");
          const f = new Function(`return (${src})`)();
          return await f(t, c, (globalThis as Record<string, unknown>).benchState);
        },
        measure.toString(),
        cfg,
      ) as Result;
    },
    close: () => page.close(),
  };
}

function denoContender(label: string, threads: number): Contender {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--child", "--threads", String(threads)],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = proc.stdin.getWriter();
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  return {
    label,
    async run(cfg) {
      await writer.write(new TextEncoder().encode(JSON.stringify(cfg) + "\n"));
      while (!buf.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`${label}: the Deno child exited`);
        buf += value;
      }
      const nl = buf.indexOf("\n");
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      return JSON.parse(line) as Result;
    },
    async close() {
      await writer.close();
      await proc.status;
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      child: { type: "boolean", default: false },
      threads: { type: "string" },
      models: { type: "string", default: "t2t_vit_7,t2t_vit_14" },
      batches: { type: "string", default: "1,8" },
      reps: { type: "string", default: "3" },
    },
  });
  const threads = Number(values.threads ?? Math.min(8, navigator.hardwareConcurrency || 2));
  if (values.child) {
    await child(threads);
  } else {
    const chromium = findChromium();
    if (!chromium) {
      console.error("error: Chromium not found (apt-get install chromium, or set T2T_CHROMIUM)");
      Deno.exit(1);
    }
    await buildWeb();
    const rig = await startRig(chromium);
    const contenders: Contender[] = [];
    try {
      contenders.push(pageContender("chromium wasm, 1 thread", (await rig.open("web/index.html")).page, 1));
      contenders.push(
        pageContender(
          `chromium wasm, ${threads} threads (isolated)`,
          (await rig.open("web/index.html", { isolated: true })).page,
          threads,
        ),
      );
      contenders.push(denoContender("deno wasm, 1 thread", 1));
      contenders.push(denoContender(`deno wasm, ${threads} threads`, threads));
      const rows: string[][] = [];
      for (const model of values.models.split(",")) {
        for (const batch of values.batches.split(",").map(Number)) {
          const cfg = { model, batch, reps: Number(values.reps) };
          for (const c of contenders) {
            const r = await c.run(cfg);
            if (r.backend !== "wasm") throw new Error(`${c.label}: ran on ${r.backend}`);
            const row = [
              c.label,
              `${model}, batch ${batch}`,
              `${r.ms.toFixed(0)} ms`,
              `${r.imgPerS.toFixed(2)} img/s`,
              `${r.threads}`,
            ];
            rows.push(row);
            console.log(row.join(" | "));
          }
        }
      }
      console.log(`\n${new Date().toISOString()}, ${navigator.hardwareConcurrency} cores\n`);
      console.log("| contender | run | median per forward | throughput | threads |");
      console.log("| --- | --- | ---: | ---: | ---: |");
      for (const r of rows) console.log(`| ${r.join(" | ")} |`);
    } finally {
      for (const c of contenders) await c.close().catch(() => {});
      await rig.close();
    }
  }
}
