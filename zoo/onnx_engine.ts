/**
 * ONNX Runtime as a second engine for the zoo: {@linkcode OnnxModel} runs an exported T2T-ViT (or exports a
 * {@linkcode T2tVit} on the fly) with `forward`, `forwardFeatures` and `dispose` like the tfjs model, on
 * `onnxruntime-node` in Deno and Node and on `onnxruntime-web` (wasm, WebGPU) in browsers. The runtime is
 * imported only when a model is created, so nothing of it loads (or installs) unless asked for.
 *
 * @example
 * ```ts ignore
 * import { createModel, OnnxModel, tf } from "../mod.ts";
 * const m = await OnnxModel.create(await createModel("t2t_vit_14", { weights: "t2t_vit_14.safetensors" }));
 * // or: await OnnxModel.create("t2t_vit_14.onnx")
 * const logits = await m.forward(tf.zeros([1, 3, 224, 224])); // (1, 1000)
 * logits.dispose();
 * await m.dispose();
 * ```
 *
 * @module
 */

import { OnnxError, readOnnxMetadata } from "../converters/onnx.ts";
import { ModelError } from "../src/core/errors.ts";
import { nodeBuiltin } from "../src/core/platform.ts";
import { T2tVit } from "./model.ts";
import { tf } from "../src/core/tf.ts";
import type { PretrainedCfg } from "./configs.ts";
import { exportOnnx, type OnnxExportOptions } from "./onnx_export.ts";

/** Which ONNX Runtime package runs the model. */
export type OnnxRuntimeKind = "node" | "web";

/** Options of {@linkcode OnnxModel.create}. */
export interface OnnxModelOptions {
  /**
   * The runtime: `"node"` (`onnxruntime-node`, native; the default in Deno and Node) or `"web"`
   * (`onnxruntime-web`, WebAssembly or WebGPU; the default elsewhere, i.e. in browsers).
   */
  runtime?: OnnxRuntimeKind;
  /**
   * Execution providers in order of preference (default: `["cpu"]` on node, `["wasm"]` on web; e.g.
   * `["webgpu", "wasm"]` in a browser with WebGPU, `["cuda", "cpu"]` with onnxruntime-node's CUDA build).
   */
  executionProviders?: string[];
  /** Threads of one operator (default: ONNX Runtime's, the number of physical cores). */
  intraOpNumThreads?: number;
  /** ONNX Runtime's graph optimisation level (default `"all"`). */
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** Lowest severity ONNX Runtime logs: 0 verbose, 1 info, 2 warning (default), 3 error, 4 fatal. */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  /**
   * An ONNX Runtime module you imported yourself (`import * as ort from "onnxruntime-web"` in a bundled web
   * app, say) instead of the one the engine imports; `runtime` then only names it.
   */
  ort?: OnnxRuntimeModule;
  /** Export options when the source is a {@linkcode T2tVit} (default: opset 17, dynamic batch, f32). */
  export?: OnnxExportOptions;
}

/** What an exported file says about its model (its `metadata_props`). */
export interface OnnxModelInfo {
  /** The architecture (`t2t_vit_14`, ..., or `custom`). */
  architecture: string;
  /** Input side. */
  imgSize: number;
  /** Input channels. */
  inChans: number;
  /** Classes of the head (0: `logits` are the features). */
  numClasses: number;
  /** Width of `features`. */
  numFeatures: number;
  /** The preprocessing the model expects. */
  pretrainedCfg: PretrainedCfg;
}

/** The part of an ONNX Runtime tensor (`onnxruntime-common`'s `Tensor`) the engine uses. */
export interface OnnxRuntimeTensor {
  /** The values. */
  readonly data: unknown;
  /** The dimensions. */
  readonly dims: readonly number[];
  /** Frees the tensor's data (GPU tensors; a no-op on the CPU). */
  dispose(): void;
}

/** The part of an ONNX Runtime `InferenceSession` the engine uses. */
export interface OnnxRuntimeSession {
  /** Input names. */
  readonly inputNames: readonly string[];
  /** Output names. */
  readonly outputNames: readonly string[];
  /** Runs the graph on `feeds`, returning the outputs named in `fetches`. */
  run(
    feeds: Record<string, OnnxRuntimeTensor>,
    fetches?: string[],
  ): Promise<Record<string, OnnxRuntimeTensor>>;
  /** Frees the session. */
  release(): Promise<void>;
}

/** The part of the `onnxruntime-node` / `onnxruntime-web` module the engine uses. */
export interface OnnxRuntimeModule {
  /** Session factory. */
  InferenceSession: {
    create(model: Uint8Array, options?: Record<string, unknown>): Promise<OnnxRuntimeSession>;
  };
  /** Tensor constructor. */
  Tensor: new (type: "float32", data: Float32Array, dims: readonly number[]) => OnnxRuntimeTensor;
  /** Global settings. */
  env: { logLevel?: string };
}

/**
 * The ONNX Runtime release the engine imports (`npm:onnxruntime-node@…` in Deno and Node, `npm:onnxruntime-web@…`
 * with `runtime: "web"` there; in browsers the bare `onnxruntime-web` for a bundler or import map to resolve).
 */
export const ONNX_RUNTIME_VERSION = "1.30.0";

const ortModules = new Map<OnnxRuntimeKind, Promise<OnnxRuntimeModule>>();

/** Deno or Node (where the native runtime runs), rather than a browser. */
function serverSide(): boolean {
  const g = globalThis as { Deno?: unknown; process?: { versions?: { node?: string } } };
  return g.Deno !== undefined || typeof g.process?.versions?.node === "string";
}

/**
 * Imports ONNX Runtime (once per kind): `onnxruntime-node` or `onnxruntime-web`.
 *
 * @throws {ModelError} when the package cannot be loaded (not installed, or no binary for this platform)
 */
export function loadOnnxRuntime(
  kind: OnnxRuntimeKind = serverSide() ? "node" : "web",
): Promise<OnnxRuntimeModule> {
  let p = ortModules.get(kind);
  if (!p) {
    // a computed specifier: not part of the module graph, so nothing installs the runtime before it is used
    const spec = serverSide() ? `npm:onnxruntime-${kind}@${ONNX_RUNTIME_VERSION}` : "onnxruntime-web";
    const load = import(spec);
    p = load.then((m) => {
      const ort = ((m as { default?: OnnxRuntimeModule }).default ?? m) as OnnxRuntimeModule;
      if (ort.env && !ort.env.logLevel) ort.env.logLevel = "warning";
      return ort;
    }, (e) => {
      ortModules.delete(kind);
      throw new ModelError(`cannot load onnxruntime-${kind}: ${(e as Error)?.message ?? e}`, {
        key: `onnxruntime-${kind}`,
        cause: e,
      });
    });
    ortModules.set(kind, p);
  }
  return p;
}

function infoFromMetadata(meta: Map<string, string>, file?: string): OnnxModelInfo {
  const int = (key: string): number => {
    const v = meta.get(key);
    const n = Number(v);
    if (v === undefined || !Number.isSafeInteger(n) || n < 0) {
      throw new OnnxError(
        `not a T2T-ViT export: metadata '${key}' is ${v === undefined ? "missing" : JSON.stringify(v)}`,
        { file, key },
      );
    }
    return n;
  };
  const imgSize = int("img_size");
  const numClasses = int("num_classes");
  let pre: Record<string, unknown> = {};
  try {
    pre = JSON.parse(meta.get("preprocessing") ?? "{}");
  } catch {
    throw new OnnxError("metadata 'preprocessing' is not JSON", { file, key: "preprocessing" });
  }
  const inChans = meta.has("in_chans") ? int("in_chans") : 3;
  return {
    architecture: meta.get("architecture") ?? "custom",
    imgSize,
    inChans,
    numClasses,
    numFeatures: int("num_features"),
    pretrainedCfg: {
      inputSize: [3, imgSize, imgSize],
      cropPct: typeof pre.crop_pct === "number" ? pre.crop_pct : 0.9,
      interpolation: pre.interpolation === "bilinear" ? "bilinear" : "bicubic",
      mean: Array.isArray(pre.mean) ? pre.mean as [number, number, number] : [0.485, 0.456, 0.406],
      std: Array.isArray(pre.std) ? pre.std as [number, number, number] : [0.229, 0.224, 0.225],
      numClasses,
    },
  };
}

/** A T2T-ViT running on ONNX Runtime, with the tfjs model's `forward`/`forwardFeatures`/`dispose` contract. */
export class OnnxModel {
  /** The architecture name (`t2t_vit_14`, ..., `custom`). */
  readonly name: string;
  /** What the model is: sizes and preprocessing. */
  readonly info: OnnxModelInfo;
  /** The preprocessing the model expects (as {@linkcode T2tVit.pretrainedCfg}). */
  readonly pretrainedCfg: PretrainedCfg;
  /** The runtime package in use. */
  readonly runtime: OnnxRuntimeKind;
  readonly #ort: OnnxRuntimeModule;
  #session: OnnxRuntimeSession | undefined;

  private constructor(
    ort: OnnxRuntimeModule,
    session: OnnxRuntimeSession,
    info: OnnxModelInfo,
    runtime: OnnxRuntimeKind,
  ) {
    this.#ort = ort;
    this.#session = session;
    this.info = info;
    this.name = info.architecture;
    this.pretrainedCfg = info.pretrainedCfg;
    this.runtime = runtime;
  }

  /**
   * Starts an ONNX Runtime session on an exported model: ONNX bytes, a path or URL of a `.onnx` file written
   * by {@linkcode exportOnnx} (or `deno task export-onnx`), or a {@linkcode T2tVit}, exported on the spot
   * (`opts.export`). The source model is not changed and may be disposed afterwards.
   *
   * @throws {ModelError} when ONNX Runtime cannot be loaded or rejects the model
   * @throws {OnnxError} when the file is not a T2T-ViT export (its metadata is missing)
   */
  static async create(
    source: T2tVit | Uint8Array | string | URL,
    opts: OnnxModelOptions = {},
  ): Promise<OnnxModel> {
    let bytes: Uint8Array;
    let file: string | undefined;
    if (source instanceof T2tVit) bytes = exportOnnx(source, opts.export);
    else if (source instanceof Uint8Array) bytes = source;
    else {
      file = String(source);
      bytes = await readSource(source);
    }
    const info = infoFromMetadata(readOnnxMetadata(bytes, file), file);
    const runtime = opts.runtime ?? (serverSide() ? "node" : "web");
    const ort = opts.ort ?? await loadOnnxRuntime(runtime);
    let session: OnnxRuntimeSession;
    try {
      session = await ort.InferenceSession.create(bytes, {
        executionProviders: opts.executionProviders ?? [runtime === "node" ? "cpu" : "wasm"],
        graphOptimizationLevel: opts.graphOptimizationLevel ?? "all",
        logSeverityLevel: opts.logSeverityLevel ?? 2,
        ...(opts.intraOpNumThreads !== undefined ? { intraOpNumThreads: opts.intraOpNumThreads } : {}),
      });
    } catch (e) {
      throw new ModelError(`ONNX Runtime rejected the model: ${(e as Error)?.message ?? e}`, {
        file,
        cause: e,
      });
    }
    return new OnnxModel(ort, session, info, runtime);
  }

  #check(x: unknown, what: string): asserts x is tf.Tensor4D {
    if (!this.#session) throw new ModelError(`${what}: the model was disposed`, { key: this.name });
    const { inChans: c, imgSize: s } = this.info;
    const want = `(B, ${c}, ${s}, ${s}) NCHW float32`;
    if (!(x instanceof tf.Tensor)) {
      throw new ModelError(`${what}: expected a tf.Tensor4D ${want}`, { key: "input" });
    }
    if (x.isDisposed) throw new ModelError(`${what}: the input tensor was disposed`, { key: "input" });
    const d = x.shape;
    if (x.rank !== 4 || d[0] < 1 || d[1] !== c || d[2] !== s || d[3] !== s || x.dtype !== "float32") {
      throw new ModelError(`${what}: expected input ${want}, got ${x.dtype} [${d.join(", ")}]`, {
        key: "input",
      });
    }
  }

  /**
   * Runs the model on `batch` images given as NCHW float32 values; returns the requested outputs as flat
   * arrays (row-major `(batch, numClasses)` / `(batch, numFeatures)`). No tfjs involved.
   *
   * @throws {ModelError} when the input has the wrong length or the model was disposed
   */
  async run(
    input: Float32Array,
    batch: number,
    outputs: ("logits" | "features")[] = ["logits"],
  ): Promise<Record<"logits" | "features", Float32Array>> {
    const session = this.#session;
    if (!session) throw new ModelError("run: the model was disposed", { key: this.name });
    const { inChans: c, imgSize: s } = this.info;
    if (!Number.isSafeInteger(batch) || batch < 1 || input.length !== batch * c * s * s) {
      throw new ModelError(
        `run: ${input.length} values are not ${batch} image(s) of ${c}x${s}x${s}`,
        { key: "input" },
      );
    }
    const x = new this.#ort.Tensor("float32", input, [batch, c, s, s]);
    let out: Record<string, OnnxRuntimeTensor>;
    try {
      out = await session.run({ input: x }, outputs);
    } finally {
      x.dispose();
    }
    const result = {} as Record<"logits" | "features", Float32Array>;
    for (const k of outputs) {
      result[k] = out[k].data as Float32Array;
      out[k].dispose();
    }
    return result;
  }

  async #forward(x: tf.Tensor4D, what: "logits" | "features", name: string): Promise<tf.Tensor2D> {
    this.#check(x, name);
    const values = await x.data() as Float32Array;
    const batch = x.shape[0];
    const out = (await this.run(values, batch, [what]))[what];
    return tf.tensor2d(out, [batch, out.length / batch]);
  }

  /**
   * Class scores `(B, numClasses)` of `x (B, C, H, W)` NCHW float32 (the features when `numClasses` is 0).
   * The caller disposes the result.
   *
   * @throws {ModelError} when `x` has the wrong shape or dtype, or the model was disposed
   */
  forward(x: tf.Tensor4D): Promise<tf.Tensor2D> {
    return this.#forward(x, "logits", "forward");
  }

  /**
   * The features the head sees, `(B, numFeatures)`: the class token after the final norm.
   *
   * @throws {ModelError} when `x` has the wrong shape or dtype, or the model was disposed
   */
  forwardFeatures(x: tf.Tensor4D): Promise<tf.Tensor2D> {
    return this.#forward(x, "features", "forwardFeatures");
  }

  /** Ends the session and frees its memory. The model cannot be used afterwards. */
  async dispose(): Promise<void> {
    const s = this.#session;
    this.#session = undefined;
    await s?.release();
  }

  /** Whether {@linkcode OnnxModel.dispose} was called. */
  get isDisposed(): boolean {
    return this.#session === undefined;
  }
}

async function readSource(src: string | URL): Promise<Uint8Array> {
  const url = src instanceof URL ? src : /^(https?|file|blob|data):/.test(src) ? new URL(src) : undefined;
  try {
    // in a browser every source is fetched (relative paths against the page)
    if ((url && url.protocol !== "file:") || !serverSide()) {
      const r = await fetch(url ?? src);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    }
    const g = globalThis as { Deno?: { readFile(p: string | URL): Promise<Uint8Array> } };
    if (g.Deno) return await g.Deno.readFile(url ?? src);
    // Node: its fs through the runtime, never an import a browser bundler would keep
    const fs = nodeBuiltin<{ promises: { readFile(p: string | URL): Promise<Uint8Array> } }>("fs");
    if (!fs) throw new Error("no file system in this runtime; pass a URL or the bytes");
    return new Uint8Array(await fs.promises.readFile(url ?? src));
  } catch (e) {
    throw new ModelError(`cannot read the ONNX model: ${(e as Error)?.message ?? e}`, {
      file: String(src),
      cause: e,
    });
  }
}
