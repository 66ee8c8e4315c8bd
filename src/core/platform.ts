/**
 * What differs between Deno and a browser, in one place, with no `node:` import anywhere: the rest of the
 * package imports these helpers and stays loadable in a browser bundle.
 *
 * - Node built-ins (`zlib`, `os`, `worker_threads`...) are reached at run time through
 *   `process.getBuiltinModule` (Deno 2 and Node 22.3+), never through an import, so a bundler for the
 *   browser has nothing to resolve; in a browser they are simply `undefined`.
 * - {@linkcode readBytes} reads a path in Deno and fetches a URL everywhere; in a browser a string path is a
 *   URL relative to the page.
 *
 * @module
 */

import { T2tVitError } from "./errors.ts";

/**
 * Throws a `T2tVitError` saying that `what` needs Deno's file system, and what to use in a browser instead,
 * when the `Deno` namespace is missing.
 */
export function requireDeno(what: string, instead: string): void {
  if (!isDeno()) throw new T2tVitError(`${what} needs a file system (Deno); in a browser use ${instead}`);
}

/** True in Deno (the `Deno` namespace is there). */
export function isDeno(): boolean {
  return typeof (globalThis as { Deno?: unknown }).Deno === "object";
}

/** The `Deno` namespace, or `undefined` in a browser. */
export function denoNs(): typeof Deno | undefined {
  return (globalThis as { Deno?: typeof Deno }).Deno;
}

/**
 * A Node built-in module (`"zlib"`, `"os"`, `"url"`, `"worker_threads"`) where the runtime has them (Deno,
 * Node), else `undefined` (browsers). The caller names the type: `nodeBuiltin<typeof import("node:zlib")>`.
 */
export function nodeBuiltin<T>(name: string): T | undefined {
  const p = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  if (typeof p?.getBuiltinModule !== "function") return undefined;
  try {
    return (p.getBuiltinModule(`node:${name}`) ?? undefined) as T | undefined;
  } catch {
    return undefined;
  }
}

/** Why a read failed, in a few words ("no such file", "permission denied", "HTTP 404 Not Found"...). */
export function describeReadError(e: unknown): string {
  const deno = denoNs();
  if (deno) {
    if (e instanceof deno.errors.NotFound) return "no such file";
    if (e instanceof deno.errors.PermissionDenied) return "permission denied";
    if (e instanceof deno.errors.IsADirectory) return "is a directory";
  }
  const msg = e instanceof Error ? e.message : String(e);
  if (/directory/i.test(msg)) return "is a directory";
  return msg;
}

/** True when `e` says a file does not exist (Deno's `NotFound`, or an HTTP 404 from {@linkcode readBytes}). */
export function isNotFound(e: unknown): boolean {
  const deno = denoNs();
  if (deno && e instanceof deno.errors.NotFound) return true;
  return e instanceof HttpError && e.status === 404;
}

/** An HTTP answer other than 2xx, from {@linkcode readBytes}. */
export class HttpError extends Error {
  /** The HTTP status. */
  readonly status: number;
  /** Builds `HTTP <status> <text>`. */
  constructor(status: number, statusText: string) {
    super(`HTTP ${status}${statusText ? " " + statusText : ""}`);
    this.name = "HttpError";
    this.status = status;
  }
}

/**
 * How {@linkcode readBytes} will read `src`: a local path (Deno), or a URL to fetch. In Deno a string is a
 * path unless it starts with `http(s)://` or `file://`; in a browser a string is always a URL, resolved
 * against the page.
 */
export function sourceOf(src: string | URL): { path?: string | URL; url?: URL; label: string } {
  if (src instanceof URL) {
    const label = src.protocol === "file:" ? decodeURIComponent(src.pathname) : src.href;
    return src.protocol === "file:" && isDeno() ? { path: src, label } : { url: src, label };
  }
  if (/^(https?|blob|data):/i.test(src)) return { url: new URL(src), label: src };
  if (/^file:\/\//i.test(src)) {
    const u = new URL(src);
    return isDeno() ? { path: u, label: decodeURIComponent(u.pathname) } : { url: u, label: src };
  }
  if (isDeno()) return { path: src, label: src };
  const base = (globalThis as { location?: { href: string } }).location?.href;
  return { url: new URL(src, base), label: src };
}

/**
 * The bytes of a file (Deno: a path or `file:` URL) or of a URL (fetched; in a browser every string is a URL
 * relative to the page). Throws the platform's error ({@linkcode HttpError} for an HTTP failure); callers
 * wrap it in their typed error with {@linkcode describeReadError}.
 */
export async function readBytes(src: string | URL): Promise<Uint8Array> {
  const { path, url } = sourceOf(src);
  if (path !== undefined) return await denoNs()!.readFile(path);
  const res = await fetch(url!);
  if (!res.ok) {
    await res.body?.cancel();
    throw new HttpError(res.status, res.statusText);
  }
  return new Uint8Array(await res.arrayBuffer());
}

/** Like {@linkcode readBytes}, decoded as UTF-8 text. */
export async function readText(src: string | URL): Promise<string> {
  return new TextDecoder().decode(await readBytes(src));
}
