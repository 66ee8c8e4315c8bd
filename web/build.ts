/**
 * `deno task build:web`: the browser build in `web/dist/`:
 *
 * - `t2t-vit.js`: `web/mod.ts` (the main API and the converters, zoo, images and kernels subpaths) as one minified ES module (`deno bundle --platform browser`);
 * - `t2t-vit-pool-worker.js`: the wasm kernel pool's worker (started by the bundle for `wasmThreads > 1`);
 * - `tfjs-backend-wasm.wasm`, `tfjs-backend-wasm-simd.wasm`, `tfjs-backend-wasm-threaded-simd.wasm`: the tfjs
 *   binaries, which the bundle looks for next to itself.
 *
 * Built in a temporary folder, checked (no `node:` import, every file there), then renamed over `web/dist/`.
 *
 * ```sh
 * deno task build:web [--out web/dist]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { locateWasmBinaries } from "../zoo/backend/backend.ts";

const ROOT = new URL("../", import.meta.url);

/** The bundle's file name in the output folder. */
export const BUNDLE_FILE = "t2t-vit.js";
/** The kernel pool worker's file name (`zoo/kernels/wasm_pool.ts` looks for it next to the bundle). */
export const WORKER_FILE = "t2t-vit-pool-worker.js";
/** The tfjs wasm binaries copied next to the bundle. */
export const WASM_FILES = [
  "tfjs-backend-wasm.wasm",
  "tfjs-backend-wasm-simd.wasm",
  "tfjs-backend-wasm-threaded-simd.wasm",
] as const;

/**
 * Module specifiers a browser cannot load that are left in `code`: `node:` imports (static, dynamic or
 * re-exports) and `require()` calls of them. Empty for a bundle that loads in a browser.
 */
export function nodeImports(code: string): string[] {
  const found = new Set<string>();
  const patterns = [
    /\bfrom\s*["'](node:[^"']+)["']/g, // import x from / export x from
    /\bimport\s*["'](node:[^"']+)["']/g, // import "node:x"
    /\bimport\s*\(\s*["'`](node:[^"'`]+)["'`]/g, // import("node:x")
    /\brequire\s*\(\s*["'`](node:[^"'`]+)["'`]/g, // require("node:x")
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) found.add(m[1]);
  return [...found].sort();
}

async function bundle(entry: string, out: string): Promise<void> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "browser", "--format", "esm", "--minify", "-o", out, entry],
    cwd: ROOT.pathname,
    stdout: "piped",
    stderr: "piped",
  });
  const r = await cmd.output();
  if (!r.success) {
    throw new Error(`deno bundle ${entry} failed:\n${new TextDecoder().decode(r.stderr)}`);
  }
}

/** What {@linkcode buildWeb} wrote. */
export interface WebBuild {
  /** The output folder. */
  dir: string;
  /** Bytes of the bundle. */
  bundleBytes: number;
  /** Seconds the build took. */
  seconds: number;
}

/**
 * Builds the browser bundle, its worker and the wasm binaries into `outDir` (default `web/dist/`), through a
 * temporary folder renamed into place once checked.
 *
 * @throws when bundling fails, the binaries cannot be found, or a `node:` import is left in a bundle
 */
export async function buildWeb(outDir: string = new URL("web/dist", ROOT).pathname): Promise<WebBuild> {
  const t0 = performance.now();
  const dir = outDir.replace(/\/+$/, "");
  const tmp = `${dir}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await bundle("web/mod.ts", `${tmp}/${BUNDLE_FILE}`);
    await bundle("zoo/kernels/wasm_pool_worker.ts", `${tmp}/${WORKER_FILE}`);
    const wasmDir = locateWasmBinaries();
    if (!wasmDir) {
      throw new Error("the tfjs wasm binaries were not found (is @tensorflow/tfjs-backend-wasm installed?)");
    }
    for (const f of WASM_FILES) await Deno.copyFile(new URL(f, wasmDir), `${tmp}/${f}`);
    // check what was written before it replaces the previous build
    for (const f of [BUNDLE_FILE, WORKER_FILE]) {
      const code = await Deno.readTextFile(`${tmp}/${f}`);
      if (code.length < 1000) throw new Error(`${f} is only ${code.length} bytes`);
      const left = nodeImports(code);
      if (left.length) throw new Error(`${f} still imports ${left.join(", ")}: it cannot load in a browser`);
    }
    for (const f of WASM_FILES) {
      const st = await Deno.stat(`${tmp}/${f}`);
      if (st.size < 100_000) throw new Error(`${f} is only ${st.size} bytes`);
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  const bundleBytes = (await Deno.stat(`${dir}/${BUNDLE_FILE}`)).size;
  return { dir, bundleBytes, seconds: (performance.now() - t0) / 1000 };
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { out: { type: "string" } } });
  try {
    const r = await buildWeb(values.out);
    console.log(
      `built ${r.dir}/: ${BUNDLE_FILE} (${(r.bundleBytes / 1e6).toFixed(2)} MB), ${WORKER_FILE}, ` +
        `${WASM_FILES.length} wasm binaries in ${r.seconds.toFixed(1)} s`,
    );
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
