/**
 * Whether our kernels are on (shared by the kernel front-end and the wasm GEMM wrappers).
 *
 * @module
 */

let on = true;

/** Turns our kernels on or off. */
export function setKernelsOn(value: boolean): void {
  on = value;
}

/** Whether our kernels are on. */
export function kernelsOn(): boolean {
  return on;
}
