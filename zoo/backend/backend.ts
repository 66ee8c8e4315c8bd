/**
 * Backend selection for the zoo: WebGPU (devices created by us, working around tfjs-backend-webgpu's own
 * start-up bugs in Deno), WebAssembly (binaries located in the installed npm package) and the plain
 * JavaScript CPU backend.
 *
 * Only `@tensorflow/tfjs-core` and the three backends are used, never the full `@tensorflow/tfjs` bundle.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { T2tVitError, WasmBinariesError } from "../../src/core/errors.ts";
import { denoNs, isDeno } from "../../src/core/platform.ts";
import {
  defaultWasmThreads,
  enableWasmThreads,
  wasmThreadsChosen,
  wasmThreadsRequested,
  wasmThreadsSupported,
  wrapWasmFactory,
} from "../kernels/wasm_threads.ts";
import { installKernels } from "./registry.ts";

// capture the heap of tfjs's threaded build (picked by tfjs itself on cross-origin-isolated pages) for our
// kernels, however the wasm backend is started (`setBackend`, or `tf.setBackend` directly)
wrapWasmFactory();

/** The backends the zoo runs on. */
export type BackendName = "webgpu" | "wasm" | "cpu";

/** Every backend name, fastest first (the order `setBackend()` tries them in). */
export const BACKEND_NAMES: readonly BackendName[] = ["webgpu", "wasm", "cpu"];

/** Options of {@linkcode setBackend}. */
export interface BackendOptions {
  /**
   * Where the tfjs wasm binaries are: a directory (path or URL, ending in `/`) holding
   * `tfjs-backend-wasm.wasm`, `tfjs-backend-wasm-simd.wasm` and `tfjs-backend-wasm-threaded-simd.wasm`, or a
   * map from each of those names to its path. Default: the `dist/` folder of the installed
   * `@tensorflow/tfjs-backend-wasm` package. Only honoured before the wasm backend first starts.
   */
  wasmPaths?: string | Record<string, string>;
  /**
   * Threads for the wasm backend (default: every core, `navigator.hardwareConcurrency`, unless
   * `enableWasmThreads` chose a count first). Above 1, tfjs's threaded SIMD build is started (it runs in Deno
   * with the start-up fixes of `enableWasmThreads`) and our matrix-product and attention kernels split their
   * work over a worker pool in its shared memory. Only helps when the cores are otherwise idle. Only honoured
   * before the wasm backend first starts.
   */
  wasmThreads?: number;
  /** The WebGPU adapter to ask for (default `"high-performance"`). */
  powerPreference?: "low-power" | "high-performance";
  /**
   * Whether `setBackend()` without a name may pick a software WebGPU adapter (Mesa llvmpipe/lavapipe,
   * SwiftShader, or one the browser marks as a fallback adapter). Default `false`: such adapters are much
   * slower than wasm. An explicit `setBackend("webgpu")` always accepts them.
   */
  allowSoftwareWebGpu?: boolean;
}

/** What is known about the WebGPU adapter the webgpu backend runs on (read before the device was requested). */
export interface WebGpuAdapterSummary {
  /** `GPUAdapterInfo.vendor`. */
  vendor: string;
  /** `GPUAdapterInfo.architecture`. */
  architecture: string;
  /** `GPUAdapterInfo.device`. */
  device: string;
  /** `GPUAdapterInfo.description`. */
  description: string;
  /** True for software or fallback adapters (llvmpipe, lavapipe, SwiftShader, WARP...). */
  isSoftware: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// WebGPU

/** The subset of `navigator.gpu` we use (kept structural so tests can pass a stand-in). */
export interface GpuLike {
  requestAdapter(
    options?: { powerPreference?: "low-power" | "high-performance" },
  ): Promise<AdapterLike | null>;
}

/** The subset of `GPUAdapter` we use. */
export interface AdapterLike {
  readonly features: { has(name: string): boolean };
  readonly limits: Record<string, unknown>;
  readonly info?: Record<string, unknown>;
  readonly isFallbackAdapter?: boolean;
  requestAdapterInfo?: () => Promise<Record<string, unknown>>;
  requestDevice(descriptor: {
    requiredFeatures: string[];
    requiredLimits: Record<string, number>;
  }): Promise<unknown>;
}

const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|softpipe|swiftshader|software|microsoft basic render|warp/i;

/** The limits tfjs-backend-webgpu wants raised to what the adapter offers. */
const WANTED_LIMITS = [
  "maxComputeWorkgroupStorageSize",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupSizeX",
  "maxComputeInvocationsPerWorkgroup",
] as const;

function str(v: unknown): string {
  return typeof v === "string" ? v : v === undefined || v === null ? "" : String(v);
}

/**
 * Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" on stderr at every adapter request when
 * that variable is unset (headless machines, CI). Point it at a private temporary directory first, once,
 * and only when it is unset, so command-line output stays clean.
 */
let xdgChecked = false;
function quietVulkanLoader(): void {
  if (xdgChecked) return;
  xdgChecked = true;
  try {
    const deno = (globalThis as { Deno?: typeof Deno }).Deno;
    if (!deno || deno.build.os !== "linux" || deno.env.get("XDG_RUNTIME_DIR")) return;
    // one directory per user, reused by every process (not a new one each run)
    const dir = `${deno.env.get("TMPDIR") ?? "/tmp"}/t2t-vit-xdg-${deno.uid() ?? "user"}`;
    deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (deno.statSync(dir).uid !== deno.uid()) return;
    deno.chmodSync(dir, 0o700);
    deno.env.set("XDG_RUNTIME_DIR", dir);
  } catch {
    // no permission to read or set the environment: the message is harmless
  }
}

/**
 * Requests a WebGPU adapter and device the way tfjs-backend-webgpu needs them, avoiding its start-up bugs:
 * the adapter info is read (and copied) BEFORE `requestDevice` (tfjs #8518: Deno's adapter is consumed by
 * `requestDevice`), and `requiredFeatures` is a flat list of strings (tfjs pushes `["bgra8unorm-storage"]`,
 * a nested array that Deno rejects). No optional feature is required: tfjs only uses them for profiling and
 * canvas output.
 *
 * @param gpu the WebGPU entry point (default `navigator.gpu`; `null`: none)
 * @throws {T2tVitError} when there is no WebGPU or no adapter
 */
export async function requestWebGpuDevice(
  gpu: GpuLike | null | undefined = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu,
  powerPreference: "low-power" | "high-performance" = "high-performance",
): Promise<{ device: unknown; adapterInfo: WebGpuAdapterSummary }> {
  if (!gpu) throw new T2tVitError("WebGPU is not available here (navigator.gpu is undefined)");
  quietVulkanLoader();
  const adapter = await gpu.requestAdapter({ powerPreference });
  if (!adapter) throw new T2tVitError("WebGPU is available but no adapter was found");
  let info: Record<string, unknown> = {};
  try {
    if (adapter.info) info = adapter.info;
    else if (typeof adapter.requestAdapterInfo === "function") info = await adapter.requestAdapterInfo();
  } catch {
    info = {};
  }
  const summary: WebGpuAdapterSummary = {
    vendor: str(info.vendor),
    architecture: str(info.architecture),
    device: str(info.device),
    description: str(info.description),
    isSoftware: info.isFallbackAdapter === true || adapter.isFallbackAdapter === true ||
      SOFTWARE_ADAPTER.test(`${str(info.description)} ${str(info.vendor)} ${str(info.device)}`),
  };
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) {
    const v = adapter.limits[name];
    if (typeof v === "number") requiredLimits[name] = v;
  }
  const device = await adapter.requestDevice({ requiredFeatures: [], requiredLimits });
  return { device, adapterInfo: summary };
}

let webgpuAdapter: WebGpuAdapterSummary | undefined;
let webgpuRegistered = false;

async function registerWebGpu(powerPreference: "low-power" | "high-performance"): Promise<void> {
  if (webgpuRegistered) return;
  // Imported lazily: the module registers tfjs's own (buggy in Deno) factory, which we replace at once.
  const { WebGPUBackend } = await import("@tensorflow/tfjs-backend-webgpu");
  if (tf.findBackendFactory("webgpu")) tf.removeBackend("webgpu");
  tf.registerBackend("webgpu", async () => {
    const { device, adapterInfo } = await requestWebGpuDevice(undefined, powerPreference);
    webgpuAdapter = adapterInfo;
    // The backend reads vendor and architecture only; the types are the platform's GPUDevice/GPUAdapterInfo.
    type Args = ConstructorParameters<typeof WebGPUBackend>;
    return new WebGPUBackend(
      device as Args[0],
      { ...adapterInfo, isFallbackAdapter: adapterInfo.isSoftware } as unknown as Args[1],
    );
  }, 0);
  webgpuRegistered = true;
}

/**
 * The WebGPU adapter the webgpu backend was started on, or `undefined` before it was started.
 */
export function webGpuAdapter(): WebGpuAdapterSummary | undefined {
  return webgpuAdapter;
}

// ---------------------------------------------------------------------------------------------------------
// wasm

const WASM_FILES = [
  "tfjs-backend-wasm.wasm",
  "tfjs-backend-wasm-simd.wasm",
  "tfjs-backend-wasm-threaded-simd.wasm",
] as const;

let wasmLocation: string | undefined;

function dirOf(url: string): string {
  return url.slice(0, url.lastIndexOf("/") + 1);
}

function fileExists(url: string): boolean | undefined {
  const deno = denoNs();
  if (!deno) return undefined;
  try {
    return deno.statSync(new URL(url)).isFile;
  } catch (e) {
    if (e instanceof deno.errors.NotFound) return false;
    return undefined; // no permission or not a file URL: cannot tell
  }
}

/**
 * The folder holding the tfjs wasm binaries of the installed `@tensorflow/tfjs-backend-wasm` package, as a
 * `file:` URL ending in `/`: resolved through Deno's module resolution, so it works with a `node_modules`
 * folder, with Deno's global npm cache (no `node_modules`), and when this package is imported from JSR.
 * `undefined` when no candidate holds the binaries, and always in a browser (there the default is the
 * folder of the bundle, see {@linkcode BackendOptions.wasmPaths}).
 */
export function locateWasmBinaries(): string | undefined {
  if (!isDeno()) return undefined;
  // literal specifiers, so that JSR rewrites the bare one to its npm: form at publish time
  const resolvers = [
    () => import.meta.resolve("@tensorflow/tfjs-backend-wasm"),
    () => import.meta.resolve("npm:@tensorflow/tfjs-backend-wasm@4.22.0"),
  ];
  for (const resolve of resolvers) {
    let url: string;
    try {
      url = resolve();
    } catch {
      continue; // not resolvable this way
    }
    if (!url.startsWith("file:")) continue;
    // the package main is dist/<file>.js, and the binaries sit next to it
    const dir = dirOf(url);
    if (fileExists(dir + WASM_FILES[1]) !== false) return dir;
  }
  return undefined;
}

/** Whether a wasm binary is at `where` (a path, or a URL fetched with HEAD); `undefined`: cannot tell. */
async function binaryThere(where: string): Promise<{ ok: boolean | undefined; why?: string }> {
  const deno = denoNs();
  const isUrl = /^[a-z][a-z0-9+.-]*:/i.test(where) && !/^[a-z]:[\\/]/i.test(where);
  if (deno && (!isUrl || where.startsWith("file:"))) {
    try {
      return { ok: (await deno.stat(isUrl ? new URL(where) : where)).isFile };
    } catch (e) {
      return e instanceof deno.errors.NotFound ? { ok: false, why: "no such file" } : { ok: undefined };
    }
  }
  try {
    const base = (globalThis as { location?: { href: string } }).location?.href;
    const res = await fetch(new URL(where, base), { method: "HEAD" });
    await res.body?.cancel();
    if (res.ok) return { ok: true };
    if (res.status === 405 || res.status === 501) return { ok: undefined }; // no HEAD: let tfjs try
    return { ok: false, why: `HTTP ${res.status}${res.statusText ? " " + res.statusText : ""}` };
  } catch (e) {
    return { ok: false, why: (e as Error)?.message ?? String(e) };
  }
}

/**
 * Points tfjs at the wasm binaries, after checking that the one it will load is there: a missing binary is a
 * {@linkcode WasmBinariesError} before tfjs tries (tfjs's own failure is permanent: its paths can no longer be
 * changed), so a second `setBackend("wasm", { wasmPaths })` with the right folder works.
 */
async function configureWasm(paths: string | Record<string, string> | undefined): Promise<void> {
  const engine = tf.engine() as unknown as { registry: Record<string, unknown> };
  if (engine.registry["wasm"]) return; // started: tfjs ignores new paths
  let prefix: string | undefined;
  let map: Record<string, string> | undefined;
  if (typeof paths === "string") prefix = paths.endsWith("/") ? paths : paths + "/";
  else if (paths !== undefined) map = paths;
  else if (isDeno()) {
    const dir = locateWasmBinaries();
    // emscripten reads file: URLs with fs in Deno's Node compatibility layer
    if (dir !== undefined) prefix = dir.startsWith("file:") ? decodeURIComponent(new URL(dir).pathname) : dir;
  } else {
    // a browser: next to the bundle (`deno task build:web` copies the binaries there)
    prefix = new URL("./", import.meta.url).href;
  }
  wasmLocation = prefix ??
    (map ? JSON.stringify(map) : "(tfjs default: next to the loaded tf-backend-wasm module)");
  if (prefix === undefined && map === undefined) return;
  // the binary tfjs will load: threaded where it will start threads, SIMD where there is SIMD
  const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT") as boolean;
  const threaded = simd && (isDeno() ? wasmThreadsRequested() > 1 : wasmThreadsSupported());
  const file = threaded ? WASM_FILES[2] : simd ? WASM_FILES[1] : WASM_FILES[0];
  const where = map ? map[file] : prefix! + file;
  if (map && where === undefined) {
    throw new WasmBinariesError(
      `wasmPaths has no entry for ${file} (give all three of ${WASM_FILES.join(", ")}, or a folder)`,
      { key: "wasmPaths" },
    );
  }
  const there = await binaryThere(where);
  if (there.ok === false) {
    throw new WasmBinariesError(
      `cannot start the wasm backend: ${file} not found at ${where} (${there.why}). Serve the three ` +
        `tfjs-backend-wasm*.wasm files (from @tensorflow/tfjs-backend-wasm/dist/; \`deno task build:web\` copies ` +
        "them next to the bundle) and pass setBackend('wasm', { wasmPaths: '<folder URL ending in />' })",
      { file: where },
    );
  }
  setWasmPaths(map ?? prefix!);
}

// ---------------------------------------------------------------------------------------------------------

let current: BackendName | undefined;

function quietCpu(): void {
  // tfjs-backend-cpu prints a "use tfjs-node" banner on first use under Node compatibility; we are Deno.
  const be = tf.findBackend("cpu") as unknown as { firstUse?: boolean } | null;
  if (be && "firstUse" in be) be.firstUse = false;
}

async function tryBackend(name: BackendName, opts: BackendOptions): Promise<string | undefined> {
  try {
    if (name === "webgpu") {
      const gpu = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
      if (!gpu) return "navigator.gpu is undefined";
      await registerWebGpu(opts.powerPreference ?? "high-performance");
    } else if (name === "wasm") {
      // the default: every core, unless `enableWasmThreads` chose a count first
      if (opts.wasmThreads !== undefined) enableWasmThreads(opts.wasmThreads);
      else if (!wasmThreadsChosen()) enableWasmThreads(defaultWasmThreads());
      wrapWasmFactory();
      await configureWasm(opts.wasmPaths);
    }
    // tf.setBackend logs and returns false when the factory throws; keep the console quiet for auto mode
    const ok = await tf.setBackend(name);
    if (!ok) return `tfjs could not start the ${name} backend`;
    if (name === "cpu") quietCpu();
    installKernels(name);
    return undefined;
  } catch (e) {
    if (e instanceof WasmBinariesError) throw e; // never a silent fallback: the caller must fix the paths
    return (e as Error)?.message ?? String(e);
  }
}

/**
 * Selects the tfjs backend the models run on and waits until it is ready.
 *
 * - `"webgpu"`: a WebGPU device created by us (see {@linkcode requestWebGpuDevice}).
 * - `"wasm"`: XNNPACK kernels in WebAssembly, binaries from the installed npm package.
 * - `"cpu"`: plain JavaScript; slow, but always there.
 * - no name: the best available: webgpu on a hardware adapter, else wasm, else cpu.
 *
 * @returns the backend now in use
 * @throws {T2tVitError} when the named backend cannot start (the message says why)
 *
 * @example
 * ```ts
 * import { setBackend } from "./backend.ts";
 * const name = await setBackend("wasm"); // "wasm"
 * ```
 */
export async function setBackend(name?: BackendName, opts: BackendOptions = {}): Promise<BackendName> {
  if (name !== undefined) {
    if (!BACKEND_NAMES.includes(name)) {
      throw new T2tVitError(`unknown backend '${name}' (expected one of ${BACKEND_NAMES.join(", ")})`);
    }
    if (current === name && tf.getBackend() === name) return name;
    const why = await tryBackend(name, opts);
    if (why !== undefined) {
      const where = name === "wasm"
        ? ` (wasm binaries looked up in ${wasmLocation ?? "?"}; pass ` +
          "setBackend('wasm', { wasmPaths }) to point at the folder holding tfjs-backend-wasm*.wasm)"
        : "";
      throw new T2tVitError(`cannot start the ${name} backend: ${why}${where}`);
    }
    current = name;
    return name;
  }
  const reasons: string[] = [];
  for (const cand of BACKEND_NAMES) {
    if (cand === "webgpu") {
      const gpu = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
      if (!gpu) continue;
      if (!opts.allowSoftwareWebGpu) {
        // look at the adapter first: a software adapter is slower than wasm
        try {
          quietVulkanLoader();
          const adapter = await gpu.requestAdapter({
            powerPreference: opts.powerPreference ?? "high-performance",
          });
          if (!adapter) continue;
          const info = adapter.info ?? {};
          const soft = info.isFallbackAdapter === true || adapter.isFallbackAdapter === true ||
            SOFTWARE_ADAPTER.test(`${str(info.description)} ${str(info.vendor)} ${str(info.device)}`);
          if (soft) continue;
        } catch {
          continue;
        }
      }
    }
    const why = await tryBackend(cand, opts);
    if (why === undefined) {
      current = cand;
      return cand;
    }
    reasons.push(`${cand}: ${why}`);
  }
  throw new T2tVitError(`no tfjs backend could start (${reasons.join("; ")})`);
}

/**
 * Whether the active backend copies an array's values when a tensor is made from it (tfjs-backend-wasm
 * moves them into its heap at once). The cpu backend keeps the array itself and webgpu keeps it until the
 * upload, so an array handed to those must not change afterwards, and a view of someone else's bytes must
 * be copied first.
 */
export function backendCopiesValues(): boolean {
  return tf.getBackend() === "wasm";
}

/**
 * Makes sure a backend is ready: keeps the one already in use (set by {@linkcode setBackend} or directly
 * through `tf.setBackend`), otherwise picks the best available as `setBackend()` does.
 *
 * @returns the backend in use
 */
export async function ensureBackend(): Promise<string> {
  const engine = tf.engine() as unknown as { backendName?: string | null };
  if (engine.backendName) {
    await tf.ready();
    installKernels(engine.backendName);
    return engine.backendName;
  }
  return await setBackend();
}

/** The name of the backend in use, or `undefined` when none was started yet. */
export function currentBackend(): string | undefined {
  const engine = tf.engine() as unknown as { backendName?: string | null };
  return engine.backendName ?? undefined;
}
