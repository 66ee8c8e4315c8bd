/**
 * A write-through buffer for streaming many tensors of any size to a file: small writes are gathered into
 * one staging buffer, large ones go straight to the sink, and bytes always reach the sink in the order they
 * were put.
 *
 * @module
 */

/** Where a {@link StagedWriter} sends its bytes: called with each contiguous chunk, in order. */
export type ByteSink = (bytes: Uint8Array) => void;

/**
 * Gathers small writes into a staging buffer of `chunk` bytes and passes writes of at least a quarter chunk
 * straight through, after flushing what is staged, so output order always equals call order.
 *
 * @example
 * ```ts
 * import { StagedWriter } from "./staged_writer.ts";
 * const parts: Uint8Array[] = [];
 * const w = new StagedWriter((b) => parts.push(b.slice()), 8);
 * w.put(new Uint8Array([1, 2]));
 * w.put(new Uint8Array([3, 4, 5, 6, 7, 8, 9]));
 * w.flush();
 * console.assert(parts.flatMap((p) => [...p]).join() === "1,2,3,4,5,6,7,8,9");
 * ```
 */
export class StagedWriter {
  #stage: Uint8Array;
  #staged = 0;
  #sink: ByteSink;
  /** Bytes put so far. */
  written = 0;

  /** A writer to `sink` with a staging buffer of `chunk` bytes (default 4 MiB). */
  constructor(sink: ByteSink, chunk: number = 4 << 20) {
    if (!(chunk >= 1)) throw new RangeError(`chunk must be positive, got ${chunk}`);
    this.#sink = sink;
    this.#stage = new Uint8Array(chunk);
  }

  /** Appends `bytes`; the caller may reuse `bytes` as soon as this returns. */
  put(bytes: Uint8Array): void {
    this.written += bytes.length;
    if (bytes.length === 0) return;
    const stage = this.#stage;
    if (bytes.length >= stage.length >> 2 || bytes.length > stage.length) {
      this.flush();
      this.#sink(bytes);
      return;
    }
    if (bytes.length > stage.length - this.#staged) this.flush();
    stage.set(bytes, this.#staged);
    this.#staged += bytes.length;
  }

  /** Sends whatever is staged to the sink. */
  flush(): void {
    if (this.#staged) this.#sink(this.#stage.subarray(0, this.#staged));
    this.#staged = 0;
  }
}
