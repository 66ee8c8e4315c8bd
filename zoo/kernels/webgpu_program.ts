/**
 * What the WebGPU kernels share: tfjs's kernel argument type, the entry point tfjs generates for flat
 * dispatch layouts, and the layout of a flat program.
 *
 * @module
 */

import type * as tf from "@tensorflow/tfjs-core";
import type { WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu";

/** The arguments tfjs passes a kernel function. */
export type Args = Parameters<tf.KernelFunc>[0];

/** The entry point tfjs generates calls `main(globalIndex)` for flat dispatch layouts. */
export const MAIN = "fn main(index : i32)";

/** A flat dispatch of `invocations` threads in workgroups of `workgroup`, over `outputShape`. */
export function flat(outputShape: number[], workgroup: number, invocations: number): Pick<
  WebGPUProgram,
  "outputShape" | "dispatchLayout" | "dispatch" | "workgroupSize"
> {
  return {
    outputShape,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.ceil(invocations / workgroup), 1, 1],
    workgroupSize: [workgroup, 1, 1],
  };
}
