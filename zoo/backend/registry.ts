/**
 * Every change this package makes to tfjs's kernel and gradient registries, listed in one place, and the
 * calls that apply them. Nothing here runs per forward pass: `setBackend()` / `ensureBackend()` (and so
 * `createModel` / `loadModel`) install a backend's kernels once, when it starts; `installGradients()` is the
 * explicit call for training (the train entry makes it on import). What has been applied is recorded in the
 * one state object, `BACKEND_STATE` (`zoo/kernels/state.ts`).
 *
 * The backend factories are replaced elsewhere, by the code that needs it: `backend.ts` registers our WebGPU
 * factory (its own device set-up), `zoo/kernels/wasm_threads.ts` wraps the wasm factory for threads.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import { BACKEND_STATE } from "../kernels/state.ts";
import { WASM_KERNELS } from "../kernels/wasm_kernels.ts";
import { installWasmGemm } from "../kernels/wasm_matmul.ts";
import { WEBGPU_KERNELS } from "../kernels/webgpu_kernels.ts";
import { registerTrainingGradients, shareWasmIdentity } from "./gradients.ts";
import { WASM_BACKWARD_KERNELS, WASM_GRADIENTS } from "../kernels/wasm_backward.ts";

/** One change to tfjs's registries. */
export interface RegistryPatch {
  /** Its name in `BACKEND_STATE.installed`. */
  readonly name: string;
  /** The backend whose kernels it changes; null: every backend (gradients). */
  readonly backend: "wasm" | "webgpu" | null;
  /** What it does. */
  readonly what: string;
  /** Applied for training only (`installGradients`, `installTrainingKernels`), never by `installKernels`. */
  readonly training?: boolean;
  /** Applies it; false when it cannot be applied (yet), to be tried again later. */
  readonly apply: () => boolean;
}

/** Every registry patch, in the order they are applied. */
export const REGISTRY_PATCHES: readonly RegistryPatch[] = Object.freeze(
  [
    {
      name: "wasm-slice",
      backend: "wasm",
      what: "Slice reads a view of the heap (tfjs copies the whole input out first)",
      apply: () => patchWasmSlice(),
    },
    {
      name: "wasm-gemm",
      backend: "wasm",
      what:
        "_FusedMatMul and BatchMatMul on our relaxed-SIMD GEMM; XNNPACK (for what it does not cover) fed " +
        "untransposed 2-D operands, transposed weights cached per tensor",
      apply: () => installWasmGemm(),
    },
    {
      name: "wasm-fused",
      backend: "wasm",
      what:
        "our fused T2tGelu, T2tLayerNorm, T2tSoftmax, T2tAttention, T2tClassAttention, T2tLinear, T2tPerformer " +
        "and T2tUnfold kernels",
      apply: () => registerMissing(WASM_KERNELS),
    },
    {
      name: "webgpu-fused",
      backend: "webgpu",
      what: "our fused T2tLayerNorm, T2tGelu, T2tSoftmax, T2tAttention, T2tUnfold and T2tPerformer kernels",
      apply: () => registerMissing(WEBGPU_KERNELS),
    },
    {
      name: "gradients",
      backend: null,
      training: true,
      what: "gradients of the kernels a forward pass and its loss use (tfjs-core registers none in Deno)",
      apply: () => {
        registerTrainingGradients();
        return true;
      },
    },
    {
      name: "wasm-identity",
      backend: "wasm",
      training: true,
      what:
        "wasm Identity shares its input's data instead of copying it (training: gradients pass through it)",
      apply: () => shareWasmIdentity(),
    },
    {
      name: "wasm-backward",
      backend: "wasm",
      training: true,
      what:
        "gradients of the fused T2tGelu, T2tLayerNorm, T2tAttention and T2tUnfold (wasm backward kernels), so " +
        "training runs the fused forward pass",
      apply: () => {
        if (!tf.findBackendFactory("wasm")) return false;
        registerMissing(WASM_BACKWARD_KERNELS);
        for (const g of WASM_GRADIENTS) if (!tf.getGradient(g.kernelName)) tf.registerGradient(g);
        return true;
      },
    },
  ] satisfies RegistryPatch[],
);

/** Registers the kernels not registered yet for their backend (another registration wins). */
function registerMissing(kernels: readonly tf.KernelConfig[]): true {
  for (const k of kernels) if (!tf.getKernel(k.kernelName, k.backendName)) tf.registerKernel(k);
  return true;
}

function apply(p: RegistryPatch): void {
  if (BACKEND_STATE.installed.has(p.name)) return;
  if (p.apply()) BACKEND_STATE.installed.add(p.name);
}

/**
 * Installs our kernels for a backend (once; later calls are free). `setBackend()` and `ensureBackend()` call
 * it when a backend starts; call it yourself after starting a backend with `tf.setBackend`.
 */
export function installKernels(backend: string): void {
  for (const p of REGISTRY_PATCHES) if (p.backend === backend && !p.training) apply(p);
}

/**
 * Installs the kernel gradients training needs, so that `tf.variableGrads` / `tf.grad` work through a model.
 * Importing the train entry calls it; inference never needs it.
 *
 * @example
 * ```ts ignore
 * import { installGradients } from "./registry.ts";
 * installGradients();
 * ```
 */
export function installGradients(): void {
  for (const p of REGISTRY_PATCHES) if (p.backend === null && p.training) apply(p);
}

/** The training-only patches of a backend (wasm: `Identity` shares data); the trainer calls it. */
export function installTrainingKernels(backend: string): void {
  installGradients();
  for (const p of REGISTRY_PATCHES) if (p.backend === backend && p.training) apply(p);
}

/** The parts of tfjs-backend-wasm's backend object the slice kernel uses. */
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

/**
 * tfjs-backend-wasm's `Slice` copies the WHOLE input out of the wasm heap (`readSync`) before copying the
 * slice, so taking k slices of a tensor costs k full copies (taking the 48 heads of a batch of 8 costs 48).
 * This replacement reads the input through a view of the heap instead: same results, O(output) work.
 * Strings fall back to the original kernel.
 */
function fastWasmSlice(original: tf.KernelFunc): tf.KernelFunc {
  const fn = (args: Parameters<tf.KernelFunc>[0]) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === "string") return original(args);
    const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
    const backend = args.backend as unknown as WasmBackendLike;
    const [b, s] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
    const out = backend.makeOutput(s, x.dtype);
    if (tf.util.sizeFromShape(s) === 0) return out;
    // views only after makeOutput: a heap growth would detach earlier ones
    const src = backend.typedArrayFromHeap(x);
    const dst = backend.typedArrayFromHeap(out);
    const rank = x.shape.length;
    const strides = tf.util.computeStrides(x.shape);
    if (tf.slice_util.isSliceContinous(x.shape, b, s)) {
      const off = tf.slice_util.computeFlatOffset(b, strides);
      dst.set(src.subarray(off, off + dst.length));
      return out;
    }
    // copy runs along the last axis, walking the outer indices like an odometer
    const inner = s[rank - 1];
    const idx = new Array(Math.max(rank - 1, 0)).fill(0);
    let o = 0;
    while (o < dst.length) {
      let off = b[rank - 1];
      for (let d = 0; d < rank - 1; d++) off += (b[d] + idx[d]) * strides[d];
      dst.set(src.subarray(off, off + inner), o);
      o += inner;
      for (let d = rank - 2; d >= 0; d--) {
        if (++idx[d] < s[d]) break;
        idx[d] = 0;
      }
    }
    return out;
  };
  return fn as unknown as tf.KernelFunc;
}

/** Installs the faster wasm `Slice`; false without tfjs-backend-wasm. */
function patchWasmSlice(): boolean {
  const cfg = tf.getKernel(tf.Slice, "wasm");
  if (!cfg) return false;
  tf.unregisterKernel(tf.Slice, "wasm");
  tf.registerKernel({ ...cfg, kernelFunc: fastWasmSlice(cfg.kernelFunc) });
  return true;
}
