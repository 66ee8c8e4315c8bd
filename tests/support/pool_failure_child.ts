/**
 * Child process of kernels_wasm_test.ts: kernel pool tasks whose chunks trap (a GEMM reading past the end of
 * the heap, wholly or in its last rows only) fail with an error naming the thread and the trap, on the
 * calling thread and on the workers, and the pool keeps working afterwards. Prints one JSON line; a pool
 * that lost a worker would hang instead (the parent's timeout).
 */
import { enableWasmThreads } from "../../zoo/kernels/mod.ts";
import { setBackend, tf } from "../../zoo/mod.ts";
import { runGemm, type WasmBackend, wasmContext, wasmPoolBarrier } from "../../zoo/kernels/wasm_runtime.ts";

enableWasmThreads(2);
await setBackend("wasm");
const c = wasmContext(tf.backend() as unknown as WasmBackend)!;
const m = 600, n = 256, k = 256;
const a = tf.randomNormal([m, k]), b = tf.randomNormal([k, n]);
const want = await tf.matMul(a, b).data();
const pb = c.backend.wasm._malloc((k + 1) * n * 4), pc = c.backend.wasm._malloc(m * n * 4);
const messages = new Set<string>();
const perKind: Record<string, number> = {};
let failures = 0;
// at least 40 tasks, more (up to 400) until traps on both threads were seen (which thread claims the
// trapping chunk is up to the scheduler)
let rounds = 0;
for (let r = 0; r < 400 && (r < 40 || Object.keys(perKind).length < 2); r++) {
  rounds++;
  // A read wholly past the end of the heap, or only its last rows (a chunk of either thread); C is ours
  const end = c.memory.buffer.byteLength;
  const pa = r % 2 === 0 ? end + 4096 : end - (50 + (r % 50) * 10) * k * 4;
  try {
    runGemm(c, pa >>> 0, k * 4, pb, pc, n * 4, m, n, k);
  } catch (e) {
    failures++;
    messages.add((e as Error).message);
    const kind = /worker/.test((e as Error).message) ? "worker" : "caller";
    perKind[kind] = (perKind[kind] ?? 0) + 1;
  }
}
c.backend.wasm._free(pb);
c.backend.wasm._free(pc);
const got = await tf.matMul(a, b).data();
let maxDiff = 0;
for (let i = 0; i < got.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
console.log(JSON.stringify({
  threads: c.pool?.threads ?? 1,
  failures,
  rounds,
  messages: [...messages],
  allThreadsRun: wasmPoolBarrier(),
  maxDiff,
  perKind,
}));
Deno.exit(0);
