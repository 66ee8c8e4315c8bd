/**
 * Random-access byte sources: the bytes of a checkpoint either in memory (views, no copies) or in a file read
 * with positioned reads, so a 500 MB checkpoint is never loaded whole when only half of it is wanted.
 *
 * @module
 */

import { CheckpointError } from "../src/core/errors.ts";
import { requireDeno } from "../src/core/platform.ts";

import { regularFileSize } from "../src/core/files.ts";

/** Random access to a file's bytes. */
export interface ByteSource {
  /** A name for error messages (the path, or a label). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** True when {@link ByteSource.read} returns views of memory that stays valid (no copy is made). */
  readonly inMemory: boolean;
  /**
   * Bytes `[offset, offset + length)`. Throws a {@link CheckpointError} when the range runs past the end.
   * In-memory sources return views; file sources return a fresh buffer.
   */
  read(offset: number, length: number): Uint8Array;
  /** Releases the file handle (no-op for memory). */
  close(): void;
}

function outOfRange(name: string, offset: number, length: number, size: number): never {
  throw new CheckpointError(
    `truncated: needs bytes ${offset}..${offset + length} but the file has ${size}`,
    { file: name, offset },
  );
}

/** A {@link ByteSource} over bytes in memory; reads are zero-copy views. */
export class MemorySource implements ByteSource {
  /** The label used in errors. */
  readonly name: string;
  /** The bytes. */
  readonly bytes: Uint8Array;
  /** Always true. */
  readonly inMemory = true;
  /** Wraps `bytes` (not copied). */
  constructor(bytes: Uint8Array, name = "<memory>") {
    this.bytes = bytes;
    this.name = name;
  }
  /** Total size. */
  get size(): number {
    return this.bytes.byteLength;
  }
  /** A view of `[offset, offset + length)`. */
  read(offset: number, length: number): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > this.bytes.byteLength) {
      outOfRange(this.name, offset, length, this.bytes.byteLength);
    }
    return this.bytes.subarray(offset, offset + length);
  }
  /** Nothing to release. */
  close(): void {}
}

/** A {@link ByteSource} over an open file, read with seek + read; each read returns a new buffer. */
export class FileSource implements ByteSource {
  /** The path. */
  readonly name: string;
  /** File size at open time. */
  readonly size: number;
  /** Always false. */
  readonly inMemory = false;
  private file: Deno.FsFile | null;
  /** Total bytes read so far (for progress and benchmarks). */
  bytesRead = 0;
  /**
   * When true, {@link FileSource.read} returns a view of one reused buffer, valid only until the next read.
   * Streaming conversion turns this on so memory stays at one tensor instead of growing with garbage.
   */
  reuseBuffers = false;
  private scratch: Uint8Array | null = null;

  private constructor(name: string, file: Deno.FsFile, size: number) {
    this.name = name;
    this.file = file;
    this.size = size;
  }

  /**
   * Opens `path` for reading.
   *
   * @throws {CheckpointError} when the file cannot be opened or is not a regular file
   */
  static open(path: string): FileSource {
    requireDeno(
      "opening a file",
      "the file's bytes (fetch, File.arrayBuffer) with MemorySource or parseCheckpoint",
    );
    // Checked before opening: opening a FIFO blocks until a writer appears, a device never ends.
    regularFileSize(path, (msg, cause) => {
      throw new CheckpointError(msg, { file: path, cause });
    });
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path, { read: true });
    } catch (e) {
      throw new CheckpointError(`cannot open: ${(e as Error).message}`, { file: path, cause: e });
    }
    const st = file.statSync();
    if (!st.isFile) {
      file.close();
      throw new CheckpointError("not a regular file", { file: path });
    }
    return new FileSource(path, file, st.size);
  }

  /** Reads `[offset, offset + length)` into a new buffer. */
  read(offset: number, length: number): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      outOfRange(this.name, offset, length, this.size);
    }
    const f = this.file;
    if (!f) throw new CheckpointError("read after close", { file: this.name });
    let buf: Uint8Array;
    if (this.reuseBuffers) {
      if (!this.scratch || this.scratch.length < length) {
        const prev = this.scratch?.length ?? 0;
        this.scratch = null; // let the old buffer go before allocating the new one
        this.scratch = new Uint8Array(Math.max(length, 2 * prev, 1 << 20));
      }
      buf = this.scratch.subarray(0, length);
    } else buf = new Uint8Array(length);
    f.seekSync(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < length) {
      const n = f.readSync(buf.subarray(got));
      if (n === null || n === 0) outOfRange(this.name, offset, length, offset + got);
      got += n;
    }
    this.bytesRead += length;
    return buf;
  }

  /** Closes the file. Safe to call twice. */
  close(): void {
    this.scratch = null;
    if (this.file) {
      this.file.close();
      this.file = null;
    }
  }
}
