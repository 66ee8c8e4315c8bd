/**
 * The fuzz worker: runs cases `[from, from + count)` and posts each result to the main thread, which keeps a
 * watchdog (a case that never returns is a hang: the worker is terminated and restarted after it).
 *
 * @module
 */

import { type CaseResult, Fuzzer, type FuzzOptions } from "./harness.ts";

/** Main thread to worker. */
export interface WorkerRequest {
  /** The run's options. */
  opts: FuzzOptions;
  /** First case. */
  from: number;
  /** Cases to run (stopping early at the deadline). */
  count: number;
  /** `performance.timeOrigin`-free deadline: epoch milliseconds after which no case starts. */
  deadline: number;
}

/** Worker to main thread. */
export type WorkerMessage =
  | { type: "ready"; measuresMemory: boolean; collectsGarbage: boolean; seeds: number }
  | { type: "start"; index: number }
  | { type: "result"; result: CaseResult }
  | { type: "done" };

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(m: WorkerMessage): void;
};

scope.onmessage = async (e: MessageEvent<WorkerRequest>) => {
  const { opts, from, count, deadline } = e.data;
  const fuzzer = new Fuzzer(opts);
  scope.postMessage({
    type: "ready",
    measuresMemory: fuzzer.measuresMemory,
    collectsGarbage: fuzzer.collectsGarbage,
    seeds: fuzzer.corpus.seeds.length,
  });
  try {
    for (let i = from; i < from + count && Date.now() < deadline; i++) {
      scope.postMessage({ type: "start", index: i });
      scope.postMessage({ type: "result", result: await fuzzer.run(i) });
    }
  } finally {
    fuzzer.close();
  }
  scope.postMessage({ type: "done" });
};
