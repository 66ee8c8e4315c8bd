/**
 * The Deno back end of `hub.ts`: released weights cached in a folder, one sub-folder per tag:
 *
 * ```
 * <cache>/t2t_vit_14.in1k/81.5_T2T_ViT_14.pth.tar        the original, as downloaded
 * <cache>/t2t_vit_14.in1k/81.5_T2T_ViT_14.safetensors    converted once, verified bit for bit
 * <cache>/t2t_vit_14.in1k/81.5_T2T_ViT_14.pth.tar.json   the record: sizes and SHA-256 of both (written last)
 * <cache>/t2t_vit_14.in1k/81.5_T2T_ViT_14.pth.tar.part   an unfinished download (+ .part.json: its ETag)
 * <cache>/t2t_vit_14.in1k/.lock                          held while a process fills the folder
 * ```
 *
 * A folder is complete when its record exists and the files have the recorded sizes; loading also checks the
 * safetensors' SHA-256. Everything is written under a temporary name and renamed; one process at a time
 * fills a folder (an `O_EXCL` lock file, refreshed while held, broken when its owner died or stopped
 * refreshing it).
 *
 * @module
 */

import { convertCheckpoint, defaultOutputPath } from "../converters/convert.ts";
import { DownloadError, SafetensorsError, T2tVitError } from "../src/core/errors.ts";
import { describeWeights } from "./arch.ts";
import type { PretrainedWeights } from "./pretrained.ts";
import {
  checkPlan,
  type DownloadSink,
  hex,
  httpDownload,
  notACheckpoint,
  type ResolvedHubOptions,
} from "./hub.ts";

/** What the cache records about a complete entry (`<file>.json`). */
export interface CacheRecord {
  /** The tag. */
  tag: string;
  /** The URL it was downloaded from. */
  url: string;
  /** The original's file name. */
  file: string;
  /** The original's size. */
  bytes: number;
  /** The original's SHA-256 (hex). */
  sha256: string;
  /** The converted file's name. */
  safetensors: string;
  /** Its size. */
  safetensorsBytes: number;
  /** Its SHA-256 (hex). */
  safetensorsSha256: string;
  /** The server's ETag, if it sent one. */
  etag?: string;
  /** When the entry was completed (ISO 8601). */
  completed: string;
}

/** The files of a complete cache entry. */
export interface CachedFiles {
  /** The entry's folder. */
  dir: string;
  /** The original checkpoint. */
  original: string;
  /** The converted safetensors. */
  safetensors: string;
  /** The record. */
  record: CacheRecord;
  /** True when this call downloaded the original. */
  downloaded: boolean;
  /** True when this call converted it. */
  converted: boolean;
}

const enc = new TextEncoder();

function sep(dir: string): string {
  return dir.includes("\\") && !dir.includes("/") ? "\\" : "/";
}

function join(dir: string, name: string): string {
  return dir.endsWith("/") || dir.endsWith("\\") ? dir + name : dir + sep(dir) + name;
}

function baseName(p: string): string {
  return p.split(/[\\/]/).pop() ?? p;
}

function msg(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ");
}

function sizeOf(path: string): number | null {
  try {
    const st = Deno.statSync(path);
    return st.isFile ? st.size : null;
  } catch {
    return null;
  }
}

function removeQuiet(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* gone */ }
}

interface Hasher {
  update(b: Uint8Array): Hasher;
  digest(enc: "hex"): string;
}

/**
 * An incremental SHA-256 from `node:crypto`, reached at run time through `process.getBuiltinModule` (Deno 2)
 * rather than an import, so that a browser bundle has no `node:` module to resolve; null where it is missing.
 */
function incrementalSha256(): Hasher | null {
  const p = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  try {
    const c = p?.getBuiltinModule?.("node:crypto") as { createHash?(alg: string): Hasher } | undefined;
    return c?.createHash ? c.createHash("sha256") : null;
  } catch {
    return null;
  }
}

async function subtleSha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return hex(d);
}

/** SHA-256 of bytes (hex). */
export function sha256Bytes(bytes: Uint8Array): Promise<string> {
  const h = incrementalSha256();
  return h ? Promise.resolve(h.update(bytes).digest("hex")) : subtleSha256(bytes);
}

/** SHA-256 of a file (hex), read in 4 MiB pieces (whole, where no incremental hash exists). */
export async function sha256File(path: string): Promise<string> {
  const h = incrementalSha256();
  if (!h) return await subtleSha256(await Deno.readFile(path));
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(4 << 20);
  for (;;) {
    const n = await f.read(buf);
    if (n === null) break;
    h.update(buf.subarray(0, n));
  }
  return h.digest("hex");
}

function writeTextAtomic(path: string, text: string): void {
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    Deno.writeFileSync(tmp, enc.encode(text), { createNew: true });
    Deno.renameSync(tmp, path);
  } catch (e) {
    removeQuiet(tmp);
    throw e;
  }
}

function readJson<T>(path: string): T | null {
  try {
    const v = JSON.parse(Deno.readTextFileSync(path));
    return typeof v === "object" && v !== null ? v as T : null;
  } catch {
    return null;
  }
}

/** The paths of one tag's cache entry. */
export function entryPaths(w: PretrainedWeights, cacheDir: string): {
  dir: string;
  original: string;
  safetensors: string;
  record: string;
  part: string;
  partMeta: string;
  lock: string;
} {
  const dir = join(cacheDir, w.tag);
  const original = join(dir, w.file);
  return {
    dir,
    original,
    safetensors: join(dir, baseName(defaultOutputPath(w.file))),
    record: `${original}.json`,
    part: `${original}.part`,
    partMeta: `${original}.part.json`,
    lock: join(dir, ".lock"),
  };
}

/** The record of a complete entry whose files have the recorded sizes, else null. */
function completeRecord(w: PretrainedWeights, p: ReturnType<typeof entryPaths>): CacheRecord | null {
  const rec = readJson<CacheRecord>(p.record);
  if (!rec || rec.tag !== w.tag || typeof rec.sha256 !== "string") return null;
  if (sizeOf(p.original) !== rec.bytes || sizeOf(p.safetensors) !== rec.safetensorsBytes) return null;
  return rec;
}

/** A download into `<file>.part`, with its validators in `<file>.part.json`. */
class PartFile implements DownloadSink {
  private f: Deno.FsFile | null = null;
  constructor(
    private readonly w: PretrainedWeights,
    private readonly url: string,
    private readonly path: string,
    private readonly meta: string,
  ) {}
  held(): Promise<{ bytes: number; etag?: string; lastModified?: string; total?: number }> {
    this.close();
    const m = readJson<{ url?: string; etag?: string; lastModified?: string; total?: number }>(this.meta);
    const size = sizeOf(this.path) ?? (m ? 0 : null);
    if (size === null || !m || m.url !== this.url) {
      this.drop();
      return Promise.resolve({ bytes: 0 });
    }
    return Promise.resolve({ bytes: size, etag: m.etag, lastModified: m.lastModified, total: m.total });
  }
  reset(): Promise<void> {
    this.close();
    this.drop();
    return Promise.resolve();
  }
  async begin(info: { etag?: string; lastModified?: string; total?: number }): Promise<void> {
    this.close();
    try {
      writeTextAtomic(this.meta, JSON.stringify({ url: this.url, ...info }));
      this.f = await Deno.open(this.path, { write: true, create: true, append: true });
    } catch (e) {
      this.fail(e);
    }
  }
  async write(chunk: Uint8Array): Promise<void> {
    try {
      let off = 0;
      while (off < chunk.length) off += await this.f!.write(chunk.subarray(off));
    } catch (e) {
      this.fail(e);
    }
  }
  close(): void {
    try {
      this.f?.close();
    } catch { /* closed */ }
    this.f = null;
  }
  drop(): void {
    removeQuiet(this.path);
    removeQuiet(this.meta);
  }
  private fail(e: unknown): never {
    this.close();
    this.drop(); // a full disk keeps nothing: the space is given back
    throw new DownloadError(this.w.tag, this.url, `cannot write ${this.path}: ${msg(e)}`, { cause: e });
  }
}

function isAlive(pid: number): boolean | null {
  try {
    Deno.statSync("/proc/self");
  } catch {
    return null; // no /proc: cannot tell
  }
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "";
  }
}

/** True when a lock's owner died (same host) or stopped refreshing it. */
function lockIsStale(path: string, staleMs: number): { stale: boolean; body: string | null } {
  let body: string | null = null;
  let mtime: number;
  try {
    mtime = Deno.statSync(path).mtime?.getTime() ?? Date.now();
    body = Deno.readTextFileSync(path);
  } catch {
    return { stale: false, body: null }; // gone: try again
  }
  if (Date.now() - mtime > staleMs) return { stale: true, body };
  const info = readLockBody(body);
  if (info && info.host === hostname() && info.pid !== Deno.pid && isAlive(info.pid) === false) {
    return { stale: true, body };
  }
  return { stale: false, body };
}

function readLockBody(body: string): { pid: number; host: string; token: string } | null {
  try {
    const v = JSON.parse(body);
    return typeof v?.pid === "number" ? v : null;
  } catch {
    return null;
  }
}

/** Moves a stale lock aside, and puts it back if it turned out to be someone's fresh one. */
function breakLock(path: string, staleBody: string | null): void {
  const aside = `${path}.${crypto.randomUUID().slice(0, 8)}.stale`;
  try {
    Deno.renameSync(path, aside);
  } catch {
    return; // someone else broke it
  }
  let body: string | null = null;
  try {
    body = Deno.readTextFileSync(aside);
  } catch { /* unreadable */ }
  if (staleBody !== null && body !== staleBody) {
    try {
      Deno.linkSync(aside, path); // not the one we judged: give it back unless a new one exists
    } catch { /* a newer lock exists */ }
  }
  removeQuiet(aside);
}

/**
 * Takes the lock file of an entry (created with `O_EXCL`), waiting while another live process holds it.
 * Returns the function that releases it.
 */
export async function acquireLock(
  path: string,
  o: ResolvedHubOptions,
  onWait?: () => void,
): Promise<() => void> {
  const token = crypto.randomUUID();
  const body = JSON.stringify({ pid: Deno.pid, host: hostname(), token, since: new Date().toISOString() });
  let waited = false;
  for (;;) {
    try {
      const f = Deno.openSync(path, { write: true, createNew: true });
      try {
        f.writeSync(enc.encode(body));
      } finally {
        f.close();
      }
      const beat = setInterval(() => {
        try {
          const now = new Date();
          Deno.utimeSync(path, now, now);
        } catch { /* removed */ }
      }, Math.max(20, Math.floor(o.lockStaleMs / 3)));
      Deno.unrefTimer(beat);
      return () => {
        clearInterval(beat);
        try {
          if (Deno.readTextFileSync(path) === body) Deno.removeSync(path);
        } catch { /* gone */ }
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    const s = lockIsStale(path, o.lockStaleMs);
    if (s.stale) {
      breakLock(path, s.body);
      continue;
    }
    if (!waited) {
      waited = true;
      onWait?.();
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function note(o: ResolvedHubOptions, line: string): void {
  o.log?.(line);
}

async function convertInto(
  w: PretrainedWeights,
  url: string,
  p: ReturnType<typeof entryPaths>,
  src: string,
  o: ResolvedHubOptions,
): Promise<{ bytes: number; sha256: string }> {
  if (o.progress) {
    note(o, `${w.tag}: converting ${w.file} to ${baseName(p.safetensors)} (verified bit for bit)`);
  }
  let plan;
  try {
    plan = await convertCheckpoint(src, {
      output: p.safetensors,
      force: true,
      sourceName: w.file,
      verify: true,
      describe: describeWeights,
    });
  } catch (e) {
    removeQuiet(p.safetensors);
    if (e instanceof SafetensorsError) {
      throw new DownloadError(w.tag, url, `cannot write the converted weights: ${e.message}`, { cause: e });
    }
    throw notACheckpoint(w, url, e);
  }
  try {
    checkPlan(w, url, plan);
  } catch (e) {
    removeQuiet(p.safetensors);
    throw e;
  }
  return { bytes: plan.outputBytes, sha256: await sha256File(p.safetensors) };
}

/** Fills one entry (under its lock): download, check, convert, record. */
async function fill(w: PretrainedWeights, url: string, o: ResolvedHubOptions): Promise<CachedFiles> {
  const p = entryPaths(w, o.cacheDir);
  const done = (rec: CacheRecord, downloaded: boolean, converted: boolean): CachedFiles => ({
    dir: p.dir,
    original: p.original,
    safetensors: p.safetensors,
    record: rec,
    downloaded,
    converted,
  });
  const ready = completeRecord(w, p);
  if (ready) return done(ready, false, false);
  const haveOriginal = sizeOf(p.original) !== null;
  if (o.offline && !haveOriginal) {
    throw new DownloadError(
      w.tag,
      url,
      `not in the cache (${p.dir}) and the network is off (offline option or T2T_VIT_OFFLINE); ` +
        `run once with network, or set T2T_VIT_CACHE to a cache that has it`,
    );
  }
  try {
    Deno.mkdirSync(p.dir, { recursive: true });
  } catch (e) {
    throw new DownloadError(w.tag, url, `cannot create the cache folder ${p.dir}: ${msg(e)}`, { cause: e });
  }
  let release: () => void;
  try {
    release = await acquireLock(
      p.lock,
      o,
      () => note(o, `${w.tag}: another process is fetching it; waiting (lock ${p.lock})`),
    );
  } catch (e) {
    throw new DownloadError(w.tag, url, `cannot create the lock file ${p.lock}: ${msg(e)}`, { cause: e });
  }
  const onSignal = () => {
    // interrupted: temporary files go, the .part stays for the next run to resume, the lock is released
    try {
      for (const e of Deno.readDirSync(p.dir)) if (e.name.endsWith(".tmp")) removeQuiet(join(p.dir, e.name));
    } catch { /* nothing to clean */ }
    release();
    Deno.exit(130);
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const s of signals) {
    try {
      Deno.addSignalListener(s, onSignal);
    } catch { /* unsupported */ }
  }
  try {
    const now = completeRecord(w, p); // another process may have filled it while we waited
    if (now) return done(now, false, false);
    const rec = readJson<CacheRecord>(p.record);
    const origSize = sizeOf(p.original);
    if (rec && rec.tag === w.tag && origSize === rec.bytes && await sha256File(p.original) === rec.sha256) {
      // the original is proven: only the conversion is missing or was damaged
      const c = await convertInto(w, url, p, p.original, o);
      const r2: CacheRecord = {
        ...rec,
        safetensors: baseName(p.safetensors),
        safetensorsBytes: c.bytes,
        safetensorsSha256: c.sha256,
      };
      writeTextAtomic(p.record, JSON.stringify(r2, null, 1));
      return done(r2, false, true);
    }
    if (origSize !== null) {
      note(
        o,
        `${w.tag}: the cached ${w.file} does not match the SHA-256 recorded at download; fetching it again`,
      );
    }
    removeQuiet(p.record);
    removeQuiet(p.original);
    removeQuiet(p.safetensors);
    if (o.offline) {
      throw new DownloadError(
        w.tag,
        url,
        `the cached copy in ${p.dir} failed its SHA-256 check and the network is off (offline option or ` +
          `T2T_VIT_OFFLINE); run again with network to fetch it again`,
      );
    }
    const sink = new PartFile(w, url, p.part, p.partMeta);
    let bytes: number;
    try {
      bytes = await httpDownload(w, url, sink, o);
    } finally {
      sink.close();
    }
    const sha = await sha256File(p.part);
    if (w.sha256 !== undefined && sha !== w.sha256) {
      sink.drop();
      throw new DownloadError(w.tag, url, `SHA-256 ${sha} is not the release file's ${w.sha256}`);
    }
    let c;
    try {
      c = await convertInto(w, url, p, p.part, o);
    } catch (e) {
      sink.drop(); // not a usable checkpoint: keep nothing
      throw e;
    }
    const etag = readJson<{ etag?: string }>(p.partMeta)?.etag;
    try {
      Deno.renameSync(p.part, p.original);
      removeQuiet(p.partMeta);
      const rec2: CacheRecord = {
        tag: w.tag,
        url,
        file: w.file,
        bytes,
        sha256: sha,
        safetensors: baseName(p.safetensors),
        safetensorsBytes: c.bytes,
        safetensorsSha256: c.sha256,
        etag,
        completed: new Date().toISOString(),
      };
      writeTextAtomic(p.record, JSON.stringify(rec2, null, 1));
      return done(rec2, true, true);
    } catch (e) {
      removeQuiet(p.record);
      removeQuiet(p.safetensors);
      throw new DownloadError(w.tag, url, `cannot write to the cache ${p.dir}: ${msg(e)}`, { cause: e });
    }
  } finally {
    for (const s of signals) {
      try {
        Deno.removeSignalListener(s, onSignal);
      } catch { /* unsupported */ }
    }
    release();
  }
}

/**
 * Makes sure the cache holds a tag's original and converted files, downloading and converting as needed,
 * and checks the converted file's SHA-256 against the record (a damaged one is converted again from the
 * original, itself checked).
 *
 * @throws {DownloadError} naming the tag and URL
 */
export async function ensureInFolder(
  w: PretrainedWeights,
  url: string,
  o: ResolvedHubOptions,
): Promise<CachedFiles> {
  let downloaded = false, converted = false;
  for (let round = 0; round < 3; round++) {
    const c = await fill(w, url, o);
    downloaded ||= c.downloaded;
    converted ||= c.converted;
    if (await sha256File(c.safetensors) === c.record.safetensorsSha256) {
      return { ...c, downloaded, converted };
    }
    note(
      o,
      `${w.tag}: the cached ${baseName(c.safetensors)} does not match its recorded SHA-256; converting again`,
    );
    removeQuiet(c.safetensors);
  }
  throw new DownloadError(w.tag, url, `the cache in ${o.cacheDir} keeps failing its SHA-256 checks`);
}

/**
 * The converted weights of a tag as bytes, from the cache folder (SHA-256 checked) or fetched into it.
 *
 * @throws {DownloadError} naming the tag and URL
 */
export async function loadFromFolder(
  w: PretrainedWeights,
  url: string,
  o: ResolvedHubOptions,
): Promise<{ bytes: Uint8Array; file: string; downloaded: boolean }> {
  let downloaded = false;
  for (let round = 0; round < 3; round++) {
    const c = await fill(w, url, o);
    downloaded ||= c.downloaded;
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(c.safetensors);
    } catch (e) {
      if (e instanceof T2tVitError) throw e;
      continue; // removed meanwhile: fill again
    }
    if (await sha256Bytes(bytes) === c.record.safetensorsSha256) {
      return { bytes, file: c.safetensors, downloaded };
    }
    note(
      o,
      `${w.tag}: the cached ${baseName(c.safetensors)} does not match its recorded SHA-256; converting again`,
    );
    removeQuiet(c.safetensors);
  }
  throw new DownloadError(w.tag, url, `the cache in ${o.cacheDir} keeps failing its SHA-256 checks`);
}
