/**
 * Data-parallel inference across workers: a {@linkcode ParallelModel} keeps one copy of the model per worker
 * (each on its own single-threaded wasm backend) and splits every batch between them. The default is
 * usually better: one model on the multi-threaded wasm backend (`setBackend("wasm")` uses every core),
 * whose kernel pool splits each product, attention and layer between the threads, with one copy of the
 * weights. A `ParallelModel` trades memory (a copy of the weights per worker) for batches split without
 * any synchronisation inside a forward pass, which can win for large batches on many cores.
 *
 * Deno only: the workers are module workers started from this package's source files. In a browser, use
 * the threaded wasm backend on a cross-origin-isolated page; `ParallelModel.create` there throws a
 * `ModelError` saying so.
 *
 * @module
 */

import { tf } from "../src/core/tf.ts";
import type { TensorMap } from "../src/core/types.ts";
import {
  CheckpointError,
  DatasetError,
  ImageError,
  ModelError,
  SafetensorsError,
  T2tVitError,
  UnsafePickleError,
  WeightsError,
} from "../src/core/errors.ts";
import type { ModelName, T2tVitConfig, T2tVitConfigInit } from "./configs.ts";
import type { CreateOptions } from "./models.ts";
import { ensureBackend } from "./backend/backend.ts";

/** @internal A message to a worker. */
export type WorkerRequest =
  | {
    id: number;
    type: "init";
    backend: "wasm" | "cpu";
    model: ModelName | T2tVitConfig | T2tVitConfigInit;
    options: Omit<CreateOptions, "weights"> & { weights?: string | Uint8Array | TensorMap };
  }
  | { id: number; type: "forward" | "features"; input: Float32Array; shape: [number, number, number, number] }
  | { id: number; type: "dispose" };

/** @internal A worker's answer. */
export type WorkerReply =
  | {
    id: number;
    ok: true;
    config?: T2tVitConfig;
    name?: string;
    output?: Float32Array;
    shape?: [number, number];
  }
  | { id: number; ok: false; error: { name: string; message: string; file?: string; key?: string } };

/** Options of {@linkcode ParallelModel.create}. */
export interface ParallelOptions extends CreateOptions {
  /** Number of workers (default: `navigator.hardwareConcurrency`). */
  workers?: number;
  /** Backend of the workers (default `"wasm"`). */
  backend?: "wasm" | "cpu";
}

type ErrorClass = (new (m: string, c: { file?: string; key?: string }) => T2tVitError) & {
  readonly errorName: string;
};
/** The typed errors a worker's reply can name, by their explicit `errorName` (never a class's own name). */
const ERRORS: ReadonlyMap<string, ErrorClass> = new Map(
  [
    T2tVitError,
    CheckpointError,
    UnsafePickleError,
    SafetensorsError,
    WeightsError,
    ModelError,
    ImageError,
    DatasetError,
  ].map((c) => [c.errorName, c as ErrorClass]),
);

class Channel {
  readonly worker: Worker;
  #next = 0;
  readonly #pending = new Map<
    number,
    { resolve: (r: WorkerReply & { ok: true }) => void; reject: (e: Error) => void }
  >();

  constructor() {
    this.worker = new Worker(new URL("./parallel_worker.ts", import.meta.url).href, { type: "module" });
    this.worker.onmessage = (ev: MessageEvent<WorkerReply>) => {
      const r = ev.data;
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      if (r.ok) p.resolve(r);
      else {
        const Cls = ERRORS.get(r.error.name);
        // the worker's message already carries the file/key prefix
        const e = Cls ? new Cls(r.error.message, {}) : new Error(r.error.message);
        if (Cls) Object.assign(e, { file: r.error.file, key: r.error.key });
        p.reject(e);
      }
    };
    this.worker.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      const e = new T2tVitError(`worker failed: ${ev.message}`);
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    };
  }

  request(msg: Record<string, unknown>, transfer: Transferable[] = []): Promise<WorkerReply & { ok: true }> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }
}

/**
 * A model replicated in `workers` workers; `forward` splits the batch between them (batch 8 on 2 workers:
 * 4 samples each, in parallel) and returns the concatenated result on the calling thread's backend.
 *
 * @example
 * ```ts ignore
 * import { ParallelModel, tf } from "../mod.ts";
 * const pool = await ParallelModel.create("t2t_vit_14", { weights: "t2t_vit_14.safetensors", workers: 2 });
 * const logits = await pool.forward(tf.zeros([8, 3, 224, 224]) as tf.Tensor4D); // (8, 1000)
 * pool.dispose();
 * ```
 */
export class ParallelModel {
  /** The architecture (as the workers built it). */
  readonly config: T2tVitConfig;
  /** The model's name. */
  readonly name: string;
  readonly #channels: Channel[];
  #disposed = false;

  private constructor(channels: Channel[], config: T2tVitConfig, name: string) {
    this.#channels = channels;
    this.config = config;
    this.name = name;
  }

  /**
   * Starts the workers and builds the model in each. Weights given as a path or URL are read by every
   * worker; bytes and raw tensors are copied to each (`tf.Tensor` maps are not accepted).
   *
   * @throws {ModelError} / {WeightsError} as `createModel` would, or when a worker cannot start
   */
  static async create(
    model: ModelName | T2tVitConfig | T2tVitConfigInit,
    opts: ParallelOptions = {},
  ): Promise<ParallelModel> {
    if (typeof (globalThis as { Deno?: unknown }).Deno !== "object") {
      throw new ModelError(
        "ParallelModel runs in Deno only (its workers start from the package's source files); in a browser " +
          "use setBackend('wasm', { wasmThreads }) on a cross-origin-isolated page",
        { key: "ParallelModel" },
      );
    }
    const { workers, backend, ...rest } = opts;
    const n = workers ?? Math.max(1, navigator.hardwareConcurrency || 1);
    if (!Number.isInteger(n) || n < 1) {
      throw new ModelError(`workers must be a positive integer, got ${n}`, { key: "workers" });
    }
    let weights: string | Uint8Array | TensorMap | undefined;
    if (rest.weights instanceof URL) weights = rest.weights.href;
    else if (rest.weights instanceof Blob) weights = new Uint8Array(await rest.weights.arrayBuffer());
    else if (rest.weights instanceof Map) {
      for (const v of rest.weights.values()) {
        if (v instanceof tf.Tensor) {
          throw new ModelError(
            "ParallelModel takes weights as a path, URL, bytes or raw tensors, not tf.Tensors",
            {
              key: "weights",
            },
          );
        }
        break;
      }
      weights = rest.weights as TensorMap;
    } else weights = rest.weights;
    await ensureBackend(); // for the tensors this thread reads and returns
    const channels = Array.from({ length: n }, () => new Channel());
    try {
      const replies = await Promise.all(
        channels.map((c) =>
          c.request({ type: "init", backend: backend ?? "wasm", model, options: { ...rest, weights } })
        ),
      );
      return new ParallelModel(channels, replies[0].config!, replies[0].name!);
    } catch (e) {
      for (const c of channels) c.worker.terminate();
      throw e;
    }
  }

  /** Number of workers. */
  get workers(): number {
    return this.#channels.length;
  }

  async #run(type: "forward" | "features", x: tf.Tensor4D): Promise<tf.Tensor2D> {
    if (this.#disposed) throw new ModelError(`${type}: the model was disposed`, { key: this.name });
    const { inChans, imgSize } = this.config;
    if (
      !(x instanceof tf.Tensor) || x.rank !== 4 || x.shape[1] !== inChans || x.shape[2] !== imgSize ||
      x.shape[3] !== imgSize || x.shape[0] < 1
    ) {
      throw new ModelError(
        `${type}: expected input (B, ${inChans}, ${imgSize}, ${imgSize}) NCHW float32, got ${
          x instanceof tf.Tensor ? `shape [${x.shape.join(", ")}]` : "no tensor"
        }`,
        { key: "input" },
      );
    }
    const data = (await x.data()) as Float32Array;
    const b = x.shape[0];
    const per = inChans * imgSize * imgSize;
    const parts = Math.min(b, this.#channels.length);
    const jobs: Promise<WorkerReply & { ok: true }>[] = [];
    let start = 0;
    for (let i = 0; i < parts; i++) {
      const size = Math.floor(b / parts) + (i < b % parts ? 1 : 0);
      const chunk = data.slice(start * per, (start + size) * per);
      jobs.push(
        this.#channels[i].request({ type, input: chunk, shape: [size, inChans, imgSize, imgSize] }, [
          chunk.buffer,
        ]),
      );
      start += size;
    }
    const outs = await Promise.all(jobs);
    const width = outs[0].shape![1];
    const all = new Float32Array(b * width);
    let off = 0;
    for (const o of outs) {
      all.set(o.output!, off);
      off += o.output!.length;
    }
    return tf.tensor2d(all, [b, width]);
  }

  /** Class scores `(B, numClasses)` of `x (B, C, H, W)`, the batch split across the workers. */
  forward(x: tf.Tensor4D): Promise<tf.Tensor2D> {
    return this.#run("forward", x);
  }

  /** Features `(B, numFeatures)` of `x`, the batch split across the workers. */
  forwardFeatures(x: tf.Tensor4D): Promise<tf.Tensor2D> {
    return this.#run("features", x);
  }

  /** Stops the workers (their models go with them). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const c of this.#channels) c.worker.terminate();
  }
}
