/**
 * File handling shared by every reader and writer: refusing non-regular files (a FIFO would block a read
 * forever, a device would never end) before they are opened, comparing paths by the file they name (not by
 * spelling), and temporary files that a SIGINT or SIGTERM removes instead of leaving behind.
 *
 * Deno-only (the readers that use it read files from disk; the browser build has no paths).
 *
 * @module
 */

import { readBytes, sourceOf } from "./platform.ts";

/**
 * Checks that `path` names a regular file (following symlinks) before anything opens it, and returns its
 * size. `fail` turns a problem into the caller's typed error.
 *
 * @example
 * ```ts ignore
 * import { regularFileSize } from "./files.ts";
 * const size = regularFileSize("w.safetensors", (msg) => { throw new Error(msg); });
 * ```
 */
export function regularFileSize(path: string, fail: (msg: string, cause?: unknown) => never): number {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) fail("no such file", e);
    fail(`cannot read: ${(e as Error).message}`, e);
  }
  if (!st.isFile) fail(`not a regular file (${describeKind(st)}); refusing to read it`);
  return st.size;
}

function describeKind(st: Deno.FileInfo): string {
  if (st.isDirectory) return "a directory";
  if (st.isFifo) return "a FIFO";
  if (st.isCharDevice) return "a character device";
  if (st.isBlockDevice) return "a block device";
  if (st.isSocket) return "a socket";
  return "not a file";
}

/** Reads a whole regular file after {@link regularFileSize} has checked it (and that it is at most `max` bytes). */
export async function readRegularFile(
  path: string,
  fail: (msg: string, cause?: unknown) => never,
  max = Infinity,
): Promise<Uint8Array> {
  const size = regularFileSize(path, fail);
  if (size > max) fail(`is ${size} bytes, more than the ${max} this reader accepts`);
  try {
    return await Deno.readFile(path);
  } catch (e) {
    fail(`cannot read: ${(e as Error).message}`, e);
  }
}

/**
 * True when `a` and `b` name the same file: the same device and inode when both exist (so `dir/./in.pth`,
 * `../x/in.pth`, symlinks and hard links all match), else the same resolved path.
 */
export function sameFile(a: string, b: string): boolean {
  let sa: Deno.FileInfo | null = null, sb: Deno.FileInfo | null = null;
  try {
    sa = Deno.statSync(a);
  } catch { /* missing */ }
  try {
    sb = Deno.statSync(b);
  } catch { /* missing */ }
  if (sa && sb && sa.ino !== null && sb.ino !== null) return sa.dev === sb.dev && sa.ino === sb.ino;
  return resolvedPath(a) === resolvedPath(b);
}

/** The absolute path with its directory's symlinks resolved (the file itself need not exist). */
function resolvedPath(p: string): string {
  const abs = p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;
  const cut = abs.lastIndexOf("/");
  const dir = abs.slice(0, cut) || "/";
  const name = abs.slice(cut + 1);
  try {
    return `${Deno.realPathSync(dir)}/${name}`;
  } catch {
    return abs;
  }
}

const liveTemps = new Set<string>();
let listening = false;

function removeLiveTemps(): void {
  for (const p of liveTemps) {
    try {
      Deno.removeSync(p);
    } catch { /* already gone */ }
  }
  liveTemps.clear();
}

function onSignal(signal: "SIGINT" | "SIGTERM"): void {
  removeLiveTemps();
  // The shell convention: 128 + the signal's number.
  Deno.exit(signal === "SIGINT" ? 130 : 143);
}

const onInt = () => onSignal("SIGINT");
const onTerm = () => onSignal("SIGTERM");

/**
 * Registers a temporary file to be removed if the process gets SIGINT or SIGTERM before
 * {@link releaseTempFile}; the process then exits with 130 or 143. Signal listeners are installed only
 * while some temporary file is live, so a program's own handling of Ctrl-C is left alone otherwise.
 * Long synchronous work should call {@link yieldForSignals} now and then so a signal is handled promptly.
 */
export function trackTempFile(path: string): void {
  liveTemps.add(path);
  if (!listening && Deno.build.os !== "windows") {
    listening = true;
    Deno.addSignalListener("SIGINT", onInt);
    Deno.addSignalListener("SIGTERM", onTerm);
  }
}

/** Forgets a temporary file (renamed into place or removed); removes the signal listeners when none is live. */
export function releaseTempFile(path: string): void {
  liveTemps.delete(path);
  if (listening && liveTemps.size === 0) {
    listening = false;
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
}

let lastYield = 0;

/**
 * Lets the event loop run (so signal listeners can fire) when more than `everyMs` have passed since the last
 * time; otherwise returns at once. Costs nothing measurable in a loop over tensors.
 */
export async function yieldForSignals(everyMs = 50): Promise<void> {
  const now = performance.now();
  if (now - lastYield < everyMs) return;
  lastYield = now;
  await new Promise((r) => setTimeout(r, 0));
}

/** A temporary path next to `output` (same directory, so the final rename is atomic): `.<name>.<id>.tmp`. */
export function tempPathFor(output: string): string {
  const cut = output.lastIndexOf("/");
  return `${output.slice(0, cut + 1)}.${output.slice(cut + 1)}.${crypto.randomUUID().slice(0, 8)}.tmp`;
}

/**
 * The bytes of `src`: in Deno, a local path (or `file:` URL) is read with {@link readRegularFile} (refused
 * before opening unless it is a regular file of at most `max` bytes); a URL, or any string in a browser, is
 * fetched with the platform's `readBytes` (whose errors the caller wraps).
 */
export async function readLocalOrFetch(
  src: string | URL,
  fail: (msg: string, cause?: unknown) => never,
  max = Infinity,
): Promise<Uint8Array> {
  const { path } = sourceOf(src);
  if (path !== undefined) {
    return await readRegularFile(path instanceof URL ? decodeURIComponent(path.pathname) : path, fail, max);
  }
  return await readBytes(src);
}
