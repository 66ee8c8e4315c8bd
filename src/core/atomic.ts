/**
 * Atomic file writing: a temporary file in the same directory, then a rename, so a failure never leaves a
 * half-written file behind. Used by every writer (safetensors, PNG, dataset caches, training checkpoints).
 *
 * @module
 */

import { T2tVitError } from "./errors.ts";
import { requireDeno } from "./platform.ts";
import { releaseTempFile, tempPathFor, trackTempFile } from "./files.ts";

/** Options of {@link writeFileAtomic}. */
export interface WriteOptions {
  /** Overwrite an existing file (default false: an existing file is an error). */
  force?: boolean;
}

/**
 * Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a failure never
 * leaves a half-written file. Refuses to overwrite unless `force`.
 *
 * @param errorType the `T2tVitError` subclass to throw (default `T2tVitError`)
 * @throws {T2tVitError} naming `path` when it exists (without `force`) or cannot be written
 *
 * @example
 * ```ts ignore
 * import { writeFileAtomic } from "./atomic.ts";
 * await writeFileAtomic("out.bin", new Uint8Array([1, 2, 3]), { force: true });
 * ```
 */
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array,
  opts: WriteOptions = {},
  errorType: typeof T2tVitError = T2tVitError,
): Promise<void> {
  requireDeno(`writing ${path}`, "serializeSafetensors (it returns the bytes) or encodePng");
  if (!opts.force) {
    try {
      await Deno.lstat(path);
      throw new errorType("already exists (use force to overwrite)", { file: path });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  const tmp = tempPathFor(path);
  trackTempFile(tmp); // SIGINT/SIGTERM remove it
  try {
    await Deno.writeFile(tmp, bytes, { createNew: true });
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof T2tVitError) throw e;
    throw new errorType(`cannot write: ${(e as Error).message}`, { file: path, cause: e });
  } finally {
    releaseTempFile(tmp);
  }
}
