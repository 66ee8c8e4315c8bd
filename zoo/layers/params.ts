/**
 * Parameters: every weight is a `tf.Variable` named by its PyTorch state_dict key, registered in the official
 * state_dict order, with the official initialisation when no weights are loaded.
 *
 * @module
 */

import { tf } from "../../src/core/tf.ts";
import { Rng } from "../../src/core/rng.ts";

/** How a parameter starts when no weights are loaded (the official T2T-ViT initialisation). */
export type Init =
  | { kind: "zeros" }
  | { kind: "ones" }
  /** `trunc_normal_(std)` with PyTorch's default absolute bounds [-2, 2]. */
  | { kind: "truncNormal"; std: number }
  /** PyTorch's default `kaiming_uniform_(a=sqrt(5))`: U(-1/sqrt(fanIn), 1/sqrt(fanIn)). */
  | { kind: "kaimingUniform"; fanIn: number }
  /** `nn.init.orthogonal_(randn(rows, cols)) * gain` (the performer's random features). */
  | { kind: "orthogonal"; gain: number }
  /** Fixed values, or a function computing them (called only when the parameter is initialised). */
  | { kind: "values"; values: Float32Array | (() => Float32Array) };

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Orthogonal rows (or columns, whichever are fewer) from Gaussian noise, as torch.nn.init.orthogonal_. */
function orthogonal(rows: number, cols: number, rng: Rng): Float64Array {
  // QR of the tall matrix (max x min) by modified Gram-Schmidt, signs fixed so that diag(R) > 0.
  const tall = rows >= cols;
  const m = tall ? rows : cols;
  const n = tall ? cols : rows;
  const a = new Float64Array(m * n); // column j: a[j*m .. j*m+m)
  // torch draws the (rows, cols) matrix then transposes it when rows < cols; the distribution is the same
  for (let i = 0; i < m * n; i++) a[i] = rng.normal();
  for (let j = 0; j < n; j++) {
    const cj = a.subarray(j * m, (j + 1) * m);
    for (let k = 0; k < j; k++) {
      const ck = a.subarray(k * m, (k + 1) * m);
      let dot = 0;
      for (let i = 0; i < m; i++) dot += ck[i] * cj[i];
      for (let i = 0; i < m; i++) cj[i] -= dot * ck[i];
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += cj[i] * cj[i];
    norm = Math.sqrt(norm);
    for (let i = 0; i < m; i++) cj[i] /= norm;
  }
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      // tall: out[r][c] = Q[r][c] = column c, row r; wide: out[r][c] = Q^T[r][c] = column r, row c
      out[r * cols + c] = tall ? a[c * m + r] : a[r * m + c];
    }
  }
  return out;
}

/** Values of a freshly initialised parameter. */
export function initValues(shape: readonly number[], init: Init, rng: Rng): Float32Array {
  const n = product(shape);
  const out = new Float32Array(n);
  switch (init.kind) {
    case "zeros":
      break;
    case "ones":
      out.fill(1);
      break;
    case "truncNormal":
      for (let i = 0; i < n; i++) {
        let v = rng.normal() * init.std;
        while (v < -2 || v > 2) v = rng.normal() * init.std;
        out[i] = v;
      }
      break;
    case "kaimingUniform": {
      const bound = 1 / Math.sqrt(init.fanIn);
      for (let i = 0; i < n; i++) out[i] = (2 * rng.uniform() - 1) * bound;
      break;
    }
    case "orthogonal": {
      const rows = shape[0];
      const cols = n / rows;
      const q = orthogonal(rows, cols, rng);
      for (let i = 0; i < n; i++) out[i] = q[i] * init.gain;
      break;
    }
    case "values": {
      const values = typeof init.values === "function" ? init.values() : init.values;
      if (values.length !== n) throw new Error(`init values: expected ${n}, got ${values.length}`);
      out.set(values);
      break;
    }
  }
  return out;
}

/** One registered parameter. */
export interface Param {
  /** The PyTorch state_dict key. */
  readonly name: string;
  /** The PyTorch shape. */
  readonly shape: readonly number[];
  /** Whether the official code trains it (`requires_grad`). */
  readonly trainable: boolean;
  /** The weights. */
  readonly variable: tf.Variable;
  /** How it is initialised. */
  readonly init: Init;
}

let nextStoreId = 0;

/**
 * The ordered parameter registry of a model. Layers register their parameters in the official state_dict
 * order under a key prefix (`scope`).
 */
export class ParamStore {
  /** Parameters in state_dict order. */
  readonly params: Map<string, Param> = new Map();
  /** Prefix of the tfjs variable names (tfjs needs names unique across all live variables). */
  readonly namespace: string;
  readonly #rng: Rng;
  #prefix = "";

  /**
   * A store whose fresh parameters are drawn from a generator seeded with `seed`. Its variables are named
   * `<namespace>/<PyTorch key>`; the namespace gets a counter so that several models can live side by side.
   */
  constructor(seed = 0, namespace = "t2t", deferInit = false) {
    this.#rng = Rng.splitmix(seed);
    this.namespace = `${namespace}_${nextStoreId++}`;
    this.#defer = deferInit;
  }

  readonly #defer: boolean;
  /**
   * With `deferInit`, one zero tensor per shape, shared by the variables of that shape until weights are
   * assigned to them (a variable shares its initial value's buffer): a model about to be loaded allocates a
   * block's worth of zeros, not a second copy of its weights. Freed by {@linkcode ParamStore.endRegistration}.
   */
  #zeros = new Map<string, tf.Tensor>();

  /**
   * Draws the initial values of the parameters in `keys` (in registration order). With `deferInit`, the
   * store starts every parameter at zero and the caller initialises those that loaded weights left unset.
   */
  initialize(keys: Iterable<string>): void {
    const wanted = new Set(keys);
    for (const p of this.params.values()) {
      if (!wanted.has(p.name)) continue;
      const values = initValues(p.shape, p.init, this.#rng);
      tf.tidy(() => p.variable.assign(tf.tensor(values, [...p.shape], "float32")));
    }
  }

  /** Runs `fn` with `name.` appended to the key prefix. */
  scope<T>(name: string, fn: () => T): T {
    const saved = this.#prefix;
    this.#prefix = saved + name + ".";
    try {
      return fn();
    } finally {
      this.#prefix = saved;
    }
  }

  /** Registers (and initialises) the parameter `<prefix><name>`. */
  add(name: string, shape: readonly number[], init: Init, trainable = true): tf.Variable {
    const key = this.#prefix + name;
    if (this.params.has(key)) throw new Error(`parameter '${key}' registered twice`);
    const varName = `${this.namespace}/${key}`;
    let variable: tf.Variable;
    if (this.#defer) {
      const shapeKey = shape.join(",");
      let zero = this.#zeros.get(shapeKey);
      if (!zero) {
        zero = tf.fill([...shape], 0, "float32"); // made by the backend: no array of zeros in JavaScript
        this.#zeros.set(shapeKey, zero);
      }
      variable = tf.variable(zero, trainable, varName);
    } else {
      variable = tf.tidy(() =>
        tf.variable(tf.tensor(initValues(shape, init, this.#rng), [...shape], "float32"), trainable, varName)
      );
    }
    this.params.set(key, { name: key, shape: [...shape], trainable, variable, init });
    return variable;
  }

  /**
   * Ends registration: drops the store's own references to the zeros that deferred parameters share (the
   * variables keep theirs until weights are assigned to them).
   */
  endRegistration(): void {
    for (const z of this.#zeros.values()) z.dispose();
    this.#zeros.clear();
  }

  /** Disposes every variable. */
  dispose(): void {
    this.endRegistration();
    for (const p of this.params.values()) p.variable.dispose();
    this.params.clear();
  }
}
