/**
 * The one state object of the backend layer: whether our kernels are used, and which changes to tfjs's
 * registries have been made (`zoo/backend/registry.ts` lists them and is the only writer of `installed`).
 *
 * @module
 */

/** What the backend layer has done to tfjs, and whether our kernels are on. */
export interface BackendState {
  /** Our kernels (fused ops, the wasm GEMM) are used where they exist (default true). */
  kernelsOn: boolean;
  /** The registry patches applied so far, by name (see `REGISTRY_PATCHES`). */
  readonly installed: Set<string>;
}

/** The state, shared by the registry, the kernel front-end and the wasm GEMM wrappers. */
export const BACKEND_STATE: BackendState = { kernelsOn: true, installed: new Set() };

/** Turns our kernels on or off. */
export function setKernelsOn(value: boolean): void {
  BACKEND_STATE.kernelsOn = value;
}

/** Whether our kernels are on. */
export function kernelsOn(): boolean {
  return BACKEND_STATE.kernelsOn;
}
