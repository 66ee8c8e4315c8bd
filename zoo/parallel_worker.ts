/**
 * The worker side of {@linkcode ParallelModel} (see `parallel.ts`): one model on its own backend, answering
 * `init`, `forward` and `features` messages. Not meant to be imported.
 *
 * @module
 */

import { T2tVitError } from "../src/core/errors.ts";
import type { T2tVit } from "./model.ts";
import { type BackendName, setBackend } from "./backend/backend.ts";
import { tf } from "../src/core/tf.ts";
import { createModel } from "./models.ts";
import type { WorkerReply, WorkerRequest } from "./parallel.ts";

let model: T2tVit | undefined;

function fail(id: number, e: unknown): WorkerReply {
  const err = e as Error;
  return {
    id,
    ok: false,
    error: {
      name: err?.name ?? "Error",
      message: err?.message ?? String(e),
      file: e instanceof T2tVitError ? e.file : undefined,
      key: e instanceof T2tVitError ? e.key : undefined,
    },
  };
}

const scope = self as unknown as {
  onmessage: ((ev: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(msg: WorkerReply, transfer?: Transferable[]): void;
};

scope.onmessage = async (ev: MessageEvent<WorkerRequest>) => {
  const req = ev.data;
  try {
    if (req.type === "init") {
      await setBackend(req.backend as BackendName);
      model = await createModel(req.model, req.options);
      scope.postMessage({ id: req.id, ok: true, config: model.config, name: model.name });
      return;
    }
    if (req.type === "dispose") {
      model?.dispose();
      model = undefined;
      scope.postMessage({ id: req.id, ok: true });
      return;
    }
    if (!model) throw new T2tVitError("the worker has no model");
    const x = tf.tensor4d(req.input, req.shape);
    const y = req.type === "features" ? model.forwardFeatures(x) : model.forward(x);
    const data = (await y.data()) as Float32Array;
    tf.dispose([x, y]);
    scope.postMessage({ id: req.id, ok: true, output: data, shape: y.shape as [number, number] }, [
      data.buffer as ArrayBuffer,
    ]);
  } catch (e) {
    scope.postMessage(fail(req.id, e));
  }
};
