/**
 * Official weights by name: download a released checkpoint once (with a progress bar, resuming an
 * interrupted transfer), check its size and SHA-256, convert it to safetensors with verification, cache both,
 * and load from the cache afterwards without network. In Deno the cache is a folder (`T2T_VIT_CACHE`, else
 * the platform's cache directory + `/t2t-vit`); in a browser it is the Cache Storage API. Both back ends
 * are loaded lazily, so a browser bundle never touches the file system code and Deno never the browser's.
 *
 * Environment variables (Deno): `T2T_VIT_CACHE` (cache folder), `T2T_VIT_WEIGHTS_URL` (base URL of the
 * release files: a mirror, or a test server), `T2T_VIT_OFFLINE=1` (never use the network).
 *
 * @module
 */

import { DownloadError, T2tVitError } from "../src/core/errors.ts";
import type { ConversionPlan } from "../converters/convert.ts";
import type { ArchitectureInfo } from "./arch.ts";
import { DEFAULT_WEIGHTS_URL, type PretrainedWeights, resolvePretrained, weightsUrl } from "./pretrained.ts";

/** Progress of a download, reported while bytes arrive. */
export interface DownloadProgress {
  /** The weights' tag. */
  tag: string;
  /** The URL. */
  url: string;
  /** Bytes held so far (a resumed download starts above 0). */
  bytesDone: number;
  /** The file's size, when the server says it. */
  bytesTotal?: number;
  /** Bytes held when this transfer started (resumed from). */
  resumedFrom: number;
  /** Transfer rate of this attempt so far, bytes per second. */
  bytesPerSecond: number;
  /** Estimated seconds left, when the size is known. */
  secondsLeft?: number;
  /** True on the last report of a transfer. */
  finished: boolean;
}

/** Where and how official weights are fetched and cached. Every field is optional. */
export interface HubOptions {
  /** Cache folder (Deno). Default: `T2T_VIT_CACHE`, else the platform's cache directory + `/t2t-vit`. */
  cacheDir?: string;
  /** Base URL of the release files. Default: `T2T_VIT_WEIGHTS_URL`, else {@linkcode DEFAULT_WEIGHTS_URL}. */
  baseUrl?: string;
  /** Never use the network; fail when the cache lacks the weights. Default: `T2T_VIT_OFFLINE=1`, else false. */
  offline?: boolean;
  /**
   * Progress: `true` (default) draws a bar on stderr in Deno (nothing in a browser), `false` is silent, a
   * function receives every report instead.
   */
  progress?: boolean | ((p: DownloadProgress) => void);
  /** Attempts after a failed or cut transfer (each resumes where the last stopped). Default 3. */
  retries?: number;
  /** Wait before retry k is k times this (ms). Default 1000. */
  retryDelayMs?: number;
  /** A transfer that receives nothing for this long (ms) is cut and retried. Default 60000. */
  stallTimeoutMs?: number;
  /** A lock file not refreshed for this long (ms) belongs to a dead process and is broken. Default 30000. */
  lockStaleMs?: number;
  /** The cache back end: `fs` (default in Deno) or `cache-storage` (default in browsers). */
  storage?: "fs" | "cache-storage";
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: typeof fetch;
}

/** {@linkcode HubOptions} with every default filled in. */
export interface ResolvedHubOptions {
  /** Cache folder. */
  cacheDir: string;
  /** Base URL. */
  baseUrl: string;
  /** Network forbidden. */
  offline: boolean;
  /** Progress sink, or null. */
  progress: ((p: DownloadProgress) => void) | null;
  /** Where notes (converting, waiting for another process) go: stderr with the default bar, else nowhere. */
  log: ((line: string) => void) | null;
  /** Retries. */
  retries: number;
  /** Retry delay unit (ms). */
  retryDelayMs: number;
  /** Stall timeout (ms). */
  stallTimeoutMs: number;
  /** Stale lock age (ms). */
  lockStaleMs: number;
  /** Back end. */
  storage: "fs" | "cache-storage";
  /** fetch. */
  fetch: typeof fetch;
}

const hasDeno = typeof Deno !== "undefined" && typeof Deno.readFile === "function";

function env(name: string): string | undefined {
  if (!hasDeno) return undefined;
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/**
 * The cache folder: `T2T_VIT_CACHE`, else `$XDG_CACHE_HOME/t2t-vit` or `~/.cache/t2t-vit` on Linux,
 * `~/Library/Caches/t2t-vit` on macOS, `%LOCALAPPDATA%\t2t-vit` on Windows.
 *
 * @example
 * ```ts ignore
 * import { pretrainedCacheDir } from "./hub.ts";
 * pretrainedCacheDir(); // "/home/me/.cache/t2t-vit"
 * ```
 */
export function pretrainedCacheDir(): string {
  const own = env("T2T_VIT_CACHE");
  if (own) return own;
  const os = hasDeno ? Deno.build.os : "linux";
  if (os === "windows") {
    const base = env("LOCALAPPDATA") ?? (env("USERPROFILE") ? `${env("USERPROFILE")}\\AppData\\Local` : ".");
    return `${base}\\t2t-vit`;
  }
  const home = env("HOME") ?? ".";
  if (os === "darwin") return `${home}/Library/Caches/t2t-vit`;
  return `${env("XDG_CACHE_HOME") ?? `${home}/.cache`}/t2t-vit`;
}

/** True when `T2T_VIT_OFFLINE` is set to 1, true or yes. */
export function offlineFromEnv(): boolean {
  return /^(1|true|yes|on)$/i.test(env("T2T_VIT_OFFLINE") ?? "");
}

/** Fills in the defaults of {@linkcode HubOptions} (environment variables included). */
export function resolveHubOptions(o: HubOptions = {}): ResolvedHubOptions {
  const progress = typeof o.progress === "function"
    ? o.progress
    : o.progress === false || !hasDeno
    ? null
    : stderrBar();
  const log = hasDeno && (o.progress === undefined || o.progress === true)
    ? (line: string) => {
      try {
        Deno.stderr.writeSync(new TextEncoder().encode(`${line}\n`));
      } catch { /* stderr closed */ }
    }
    : null;
  const int = (v: number | undefined, d: number) => (v !== undefined && Number.isFinite(v) && v >= 0 ? v : d);
  return {
    cacheDir: o.cacheDir ?? pretrainedCacheDir(),
    baseUrl: o.baseUrl ?? env("T2T_VIT_WEIGHTS_URL") ?? DEFAULT_WEIGHTS_URL,
    offline: o.offline ?? offlineFromEnv(),
    progress,
    log,
    retries: int(o.retries, 3),
    retryDelayMs: int(o.retryDelayMs, 1000),
    stallTimeoutMs: int(o.stallTimeoutMs, 60_000),
    lockStaleMs: int(o.lockStaleMs, 30_000),
    storage: o.storage ?? (hasDeno ? "fs" : "cache-storage"),
    fetch: o.fetch ?? ((input, init) => globalThis.fetch(input, init)),
  };
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

function clock(s: number): string {
  if (!Number.isFinite(s)) return "?";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h
    ? `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`
    : `${m}:${String(sec).padStart(2, "0")}`;
}

/** One line of a progress bar: `tag [#####.....]  45%  15.2/34.0 MB  12.1 MB/s  0:02 left`. */
export function formatProgress(p: DownloadProgress, width = 24): string {
  const rate = `${(p.bytesPerSecond / 1e6).toFixed(1)} MB/s`;
  if (p.bytesTotal === undefined) return `${p.tag}  ${mb(p.bytesDone)}  ${rate}`;
  const f = p.bytesTotal ? Math.min(1, p.bytesDone / p.bytesTotal) : 1;
  const fill = Math.round(f * width);
  const bar = `[${"#".repeat(fill)}${".".repeat(width - fill)}]`;
  const pct = `${Math.floor(f * 100)}%`.padStart(4);
  const left = p.finished ? "done" : `${clock(p.secondsLeft ?? Infinity)} left`;
  const resumed = p.resumedFrom ? `  (resumed at ${mb(p.resumedFrom)})` : "";
  return `${p.tag} ${bar} ${pct}  ${(p.bytesDone / 1e6).toFixed(1)}/${
    mb(p.bytesTotal)
  }  ${rate}  ${left}${resumed}`;
}

/** The default progress sink: a bar redrawn in place on a terminal, a line per 10% otherwise. */
function stderrBar(): (p: DownloadProgress) => void {
  const enc = new TextEncoder();
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch { /* no stderr */ }
  let lastDraw = 0;
  let lastStep = -1;
  return (p) => {
    const now = performance.now();
    let line: string | null = null;
    if (tty) {
      if (p.finished || now - lastDraw >= 100) line = `\r${formatProgress(p)}\x1b[K${p.finished ? "\n" : ""}`;
    } else {
      const step = p.bytesTotal
        ? Math.floor((10 * p.bytesDone) / p.bytesTotal)
        : Math.floor(p.bytesDone / 50e6);
      if (p.finished || step !== lastStep) line = `${formatProgress(p)}\n`;
      lastStep = p.finished ? -1 : step;
    }
    if (line === null) return;
    lastDraw = now;
    try {
      Deno.stderr.writeSync(enc.encode(line));
    } catch { /* stderr closed */ }
  };
}

/** Where downloaded bytes go: a `.part` file (Deno) or memory (browser). */
export interface DownloadSink {
  /** What is held from an earlier attempt: its size and the validators it was fetched with. */
  held(): Promise<{ bytes: number; etag?: string; lastModified?: string; total?: number }>;
  /** Drops what is held (the download starts over). */
  reset(): Promise<void>;
  /** Records a transfer's validators and size before its bytes arrive. */
  begin(info: { etag?: string; lastModified?: string; total?: number }): Promise<void>;
  /** Appends bytes. Throws a {@linkcode DownloadError} when they cannot be kept (full disk). */
  write(chunk: Uint8Array): Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function messageOf(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ");
}

/**
 * Downloads `url` into `sink`: resumes what the sink holds with an HTTP Range request (`If-Range` with the
 * ETag or Last-Modified it came with), starts over when the server ignores the range or the file changed,
 * retries cut or failed transfers, reports progress, and checks the received size against the server's and
 * the table's. Returns the file's size.
 *
 * @throws {DownloadError} for no network, HTTP errors, a size mismatch, or a transfer still cut after the retries
 */
export async function httpDownload(
  w: PretrainedWeights,
  url: string,
  sink: DownloadSink,
  o: ResolvedHubOptions,
): Promise<number> {
  const fail = (msg: string, cause?: unknown): never => {
    throw new DownloadError(w.tag, url, msg, { cause });
  };
  let attempt = 0;
  let restarts = 0;
  const retry = async (): Promise<boolean> => {
    if (attempt >= o.retries) return false;
    attempt++;
    await sleep(o.retryDelayMs * attempt);
    return true;
  };
  for (;;) {
    const held = await sink.held();
    const headers: Record<string, string> = { "accept-encoding": "identity" };
    if (held.bytes > 0) {
      headers.range = `bytes=${held.bytes}-`;
      const v = held.etag ?? held.lastModified;
      if (v) headers["if-range"] = v;
    }
    const abort = new AbortController();
    let res: Response;
    const waitHeaders = setTimeout(
      () => abort.abort(new Error(`no answer for ${o.stallTimeoutMs / 1000} s`)),
      o.stallTimeoutMs,
    );
    try {
      res = await o.fetch(url, { headers, signal: abort.signal });
    } catch (e) {
      clearTimeout(waitHeaders);
      if (await retry()) continue;
      return fail(
        `cannot reach the server: ${messageOf(e)} (no network? T2T_VIT_WEIGHTS_URL sets a mirror)`,
        e,
      );
    }
    clearTimeout(waitHeaders);
    const etag = res.headers.get("etag") ?? undefined;
    const lastModified = res.headers.get("last-modified") ?? undefined;
    let start = 0;
    let total: number | undefined;
    if (res.status === 206 && held.bytes > 0) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
      const changed = held.etag !== undefined && etag !== undefined && etag !== held.etag;
      if (!m || Number(m[1]) !== held.bytes || changed) {
        await res.body?.cancel();
        await sink.reset();
        if (restarts++ > 2) fail("the server keeps answering ranges that do not fit; giving up");
        continue;
      }
      start = held.bytes;
      total = m[3] === "*" ? undefined : Number(m[3]);
    } else if (res.status === 200) {
      if (held.bytes > 0) await sink.reset(); // the server ignored the range, or the file changed
      const cl = res.headers.get("content-length");
      total = cl !== null && /^\d+$/.test(cl) ? Number(cl) : undefined;
    } else if (res.status === 416 && held.bytes > 0) {
      await res.body?.cancel();
      if (held.total === held.bytes) return held.bytes; // it was complete
      await sink.reset();
      if (restarts++ > 2) fail("the server refuses every range; giving up");
      continue;
    } else {
      await res.body?.cancel();
      const msg = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
      if ((res.status >= 500 || res.status === 429) && await retry()) continue;
      return fail(res.status === 404 ? `${msg} (no such file under ${o.baseUrl})` : msg);
    }
    if (w.bytes !== undefined && total !== undefined && total !== w.bytes) {
      await res.body?.cancel();
      await sink.reset();
      return fail(
        `the server's file has ${total} bytes, the release file ${w.bytes}: not the released weights`,
      );
    }
    if (!res.body) return fail("the response has no body");
    await sink.begin({ etag, lastModified, total });
    let done = start;
    const t0 = performance.now();
    const report = (finished: boolean) => {
      if (!o.progress) return;
      const secs = Math.max(1e-3, (performance.now() - t0) / 1000);
      const rate = (done - start) / secs;
      o.progress({
        tag: w.tag,
        url,
        bytesDone: done,
        bytesTotal: total,
        resumedFrom: start,
        bytesPerSecond: rate,
        secondsLeft: total !== undefined && rate > 0 ? (total - done) / rate : undefined,
        finished,
      });
    };
    report(false);
    const reader = res.body.getReader();
    let stall: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(stall);
      stall = setTimeout(
        () => abort.abort(new Error(`no data for ${o.stallTimeoutMs / 1000} s`)),
        o.stallTimeoutMs,
      );
    };
    let cut: unknown = null;
    try {
      arm();
      for (;;) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          cut = e;
          break;
        }
        if (r.done) break;
        if (total !== undefined && done + r.value.length > total) {
          await reader.cancel().catch(() => {});
          await sink.reset();
          return fail(`the server sent more than the ${total} bytes it announced`);
        }
        await sink.write(r.value); // a DownloadError (full disk) ends the download
        done += r.value.length;
        arm();
        report(false);
      }
    } finally {
      clearTimeout(stall);
    }
    if (cut === null && (total === undefined || done === total)) {
      report(true);
      if (w.bytes !== undefined && done !== w.bytes) {
        await sink.reset();
        return fail(`received ${done} bytes, the release file has ${w.bytes}`);
      }
      return done;
    }
    const why = cut !== null ? messageOf(cut) : "the connection closed early";
    if (await retry()) continue;
    return fail(
      `download cut after ${done} of ${total ?? "?"} bytes (${why}); run again to resume`,
      cut ?? undefined,
    );
  }
}

/**
 * Checks that a converted checkpoint is the architecture, image size and class count its table row says.
 *
 * @throws {DownloadError} when it is not
 */
export function checkPlan(w: PretrainedWeights, url: string, plan: ConversionPlan<ArchitectureInfo>): void {
  const a = plan.architecture;
  const fits = (a.name === w.model || a.candidates.includes(w.model)) && a.imgSize === w.imgSize &&
    a.numClasses === w.numClasses;
  if (!fits) {
    throw new DownloadError(
      w.tag,
      url,
      `the file holds ${a.name} (${a.imgSize ?? "?"} px, ${a.numClasses} classes), not ${w.model} ` +
        `(${w.imgSize} px, ${w.numClasses} classes)`,
    );
  }
}

/** Wraps a conversion failure of a downloaded file as a {@linkcode DownloadError}. */
export function notACheckpoint(w: PretrainedWeights, url: string, e: unknown): DownloadError {
  if (e instanceof DownloadError) return e;
  const why = e instanceof T2tVitError ? e.message : messageOf(e);
  return new DownloadError(w.tag, url, `the downloaded file is not a usable checkpoint: ${why}`, {
    cause: e,
  });
}

/** Lower-case hex of bytes. */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The weights a `pretrained` option asks for, in safetensors bytes, from the cache or downloaded. */
export interface PretrainedBytes {
  /** The table row. */
  weights: PretrainedWeights;
  /** The URL. */
  url: string;
  /** The converted safetensors bytes (SHA-256 checked against the cache's record). */
  bytes: Uint8Array;
  /** Where they are: a path (Deno) or a cache key (browser). */
  file: string;
  /** True when this call downloaded them. */
  downloaded: boolean;
}

/**
 * The converted weights of a released model: from the cache when it holds them (checked against the
 * SHA-256 recorded at download), else downloaded, checked, converted with verification and cached.
 *
 * @throws {DownloadError} naming the tag and URL, for anything that goes wrong on the way
 * @throws {ModelError} for an unknown name or tag
 *
 * @example
 * ```ts ignore
 * import { loadPretrainedBytes } from "./hub.ts";
 * const { bytes, file } = await loadPretrainedBytes("t2t_vit_14", "in1k_384");
 * ```
 */
export async function loadPretrainedBytes(
  name: string,
  pretrained: boolean | string = true,
  opts: HubOptions = {},
): Promise<PretrainedBytes> {
  const w = resolvePretrained(name, pretrained);
  const o = resolveHubOptions(opts);
  const url = weightsUrl(w, o.baseUrl);
  if (o.storage === "fs") {
    const fs = await import("./hub_fs.ts");
    return { weights: w, url, ...(await fs.loadFromFolder(w, url, o)) };
  }
  const web = await import("./hub_web.ts");
  return { weights: w, url, ...(await web.loadFromCacheStorage(w, url, o)) };
}

/** The files of a complete cache entry (Deno); see {@linkcode ensurePretrained}. */
export interface PretrainedFiles {
  /** The table row. */
  weights: PretrainedWeights;
  /** The URL. */
  url: string;
  /** The entry's folder. */
  dir: string;
  /** The original checkpoint, as released. */
  original: string;
  /** The converted safetensors (SHA-256 checked). */
  safetensors: string;
  /** The original's SHA-256 (hex), recorded at download. */
  sha256: string;
  /** True when this call downloaded the original. */
  downloaded: boolean;
  /** True when this call converted it. */
  converted: boolean;
}

/**
 * Makes sure the cache folder holds a released model's original checkpoint and its converted safetensors
 * (downloading and converting as needed) and returns their paths. Deno only (browsers keep weights in Cache
 * Storage; use {@linkcode loadPretrainedBytes} there).
 *
 * @throws {DownloadError} naming the tag and URL
 * @throws {ModelError} for an unknown name or tag
 *
 * @example
 * ```ts ignore
 * import { ensurePretrained } from "./hub.ts";
 * const { safetensors } = await ensurePretrained("t2t_vit_14"); // ~/.cache/t2t-vit/t2t_vit_14.in1k/81.5_T2T_ViT_14.safetensors
 * ```
 */
export async function ensurePretrained(
  name: string,
  pretrained: boolean | string = true,
  opts: HubOptions = {},
): Promise<PretrainedFiles> {
  const w = resolvePretrained(name, pretrained);
  const o = resolveHubOptions({ ...opts, storage: "fs" });
  const url = weightsUrl(w, o.baseUrl);
  if (!hasDeno) {
    throw new DownloadError(w.tag, url, "a cache folder needs Deno; in a browser use loadPretrainedBytes");
  }
  const fs = await import("./hub_fs.ts");
  const c = await fs.ensureInFolder(w, url, o);
  return {
    weights: w,
    url,
    dir: c.dir,
    original: c.original,
    safetensors: c.safetensors,
    sha256: c.record.sha256,
    downloaded: c.downloaded,
    converted: c.converted,
  };
}
