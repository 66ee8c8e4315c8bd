/**
 * Our WebAssembly kernels next to tfjs-backend-wasm: one context per wasm backend instance, holding the GEMM
 * (`wasm_gemm.ts`) and the fused kernels (`wasm_ops.ts`) instantiated on the backend's own memory (so they
 * read and write tensors in place), and a cache of packed right-hand operands that lives as long as their
 * tensors (the backend's `disposeData` is wrapped to drop them).
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { type GemmExports, gemmSupported, instantiateGemm, MR, NR } from "./wasm_gemm.ts";
import { instantiateOps, type OpsExports } from "./wasm_ops.ts";

/** The parts of tfjs-backend-wasm's backend object used here. */
export interface WasmBackend {
  /** The emscripten module. */
  wasm: {
    _malloc(bytes: number): number;
    _free(ptr: number): void;
    asm?: { memory?: WebAssembly.Memory };
  };
  /** Tensor data by data id: `memoryOffset` is a byte address in the heap. */
  dataIdMap: { get(dataId: unknown): { memoryOffset: number } | undefined; has(dataId: unknown): boolean };
  /** Allocates an output tensor. */
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  /** Frees a tensor's data when its reference count reaches zero. */
  disposeData(dataId: unknown, force?: boolean): boolean;
}

/** A packed right-hand operand (see `packB`). */
export interface Packed {
  /** Byte address of the packed floats. */
  ptr: number;
  /** Depth. */
  k: number;
  /** Columns. */
  n: number;
  /** Whether it was packed from the transposed layout. */
  transposed: boolean;
  /** Data id of the bias packed with it, or null. */
  bias: unknown;
}

/** Our kernels on one wasm backend. */
export interface WasmContext {
  /** The backend. */
  backend: WasmBackend;
  /** Its heap. */
  memory: WebAssembly.Memory;
  /** The GEMM. */
  gemm: GemmExports;
  /** The fused kernels. */
  ops: OpsExports;
  /** `NR * MR` floats for the GEMM's partial panels. */
  scratch: number;
  /** Packed operands by data id. */
  packed: Map<unknown, Packed>;
}

const contexts = new WeakMap<object, WasmContext | null>();
const knownMemories = new WeakMap<object, WebAssembly.Memory>();

/** Records the memory of a backend's emscripten module (the threaded build does not export it). */
export function registerWasmMemory(module: object, memory: WebAssembly.Memory): void {
  knownMemories.set(module, memory);
}

/** The context of `backend`, created on first use; null when our kernels cannot run there. */
export function wasmContext(backend: WasmBackend): WasmContext | null {
  let c = contexts.get(backend);
  if (c !== undefined) return c;
  c = null;
  const memory = backend.wasm.asm?.memory ?? knownMemories.get(backend.wasm);
  if (memory && gemmSupported()) {
    const shared = typeof SharedArrayBuffer === "function" && memory.buffer instanceof SharedArrayBuffer;
    const packed = new Map<unknown, Packed>();
    c = {
      backend,
      memory,
      gemm: instantiateGemm(memory, shared),
      ops: instantiateOps(memory, shared),
      scratch: backend.wasm._malloc(NR * MR * 4),
      packed,
    };
    const dispose = backend.disposeData.bind(backend);
    backend.disposeData = (dataId: unknown, force?: boolean) => {
      const done = dispose(dataId, force);
      if (!backend.dataIdMap.has(dataId)) {
        const p = packed.get(dataId);
        if (p) {
          backend.wasm._free(p.ptr);
          packed.delete(dataId);
        }
      }
      return done;
    };
  }
  contexts.set(backend, c);
  return c;
}

/** Byte address of a tensor's data. */
export function addressOf(c: WasmContext, t: tf.TensorInfo): number {
  return c.backend.dataIdMap.get(t.dataId)!.memoryOffset;
}

/** A float view of the heap (make it after any allocation: growing the heap detaches old views). */
export function heapF32(c: WasmContext, byteOffset: number, length: number): Float32Array {
  return new Float32Array(c.memory.buffer, byteOffset, length);
}

/** Number of packed operands cached for the active wasm backend (tests and diagnostics). */
export function wasmPackedCount(): number {
  const engine = tf.engine() as unknown as { registry: Record<string, object | undefined> };
  const be = engine.registry["wasm"];
  const c = be ? contexts.get(be) : undefined;
  return c ? c.packed.size : 0;
}
