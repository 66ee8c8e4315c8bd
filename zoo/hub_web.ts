/**
 * The browser back end of `hub.ts`: released weights kept in the Cache Storage API (`caches.open`), under
 * the file's URL (the original) and the URL + `.safetensors` (the converted file), each response carrying
 * its SHA-256 in an `x-t2t-vit-sha256` header, checked on every load. A download is held in memory (resumed
 * with a Range request when cut), checked, converted and verified before either entry is stored; the
 * original is stored first, the converted file last, so a load finds either both or a converted file is
 * missing and made again. Concurrent tabs share one download through the Web Locks API where it exists.
 *
 * @module
 */

import { parseCheckpoint } from "../converters/checkpoint.ts";
import { bytesEqual, convertToSafetensorsBytes, materialize } from "../converters/convert.ts";
import { parseSafetensors } from "../converters/safetensors.ts";
import { DownloadError } from "../src/core/errors.ts";
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

/** The Cache Storage cache the weights live in. */
export const CACHE_NAME = "t2t-vit-weights";
const SHA_HEADER = "x-t2t-vit-sha256";

async function sha256(bytes: Uint8Array): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>)));
}

/** A download into memory (a growing list of chunks). */
class MemorySink implements DownloadSink {
  chunks: Uint8Array[] = [];
  size = 0;
  info: { etag?: string; lastModified?: string; total?: number } = {};
  held() {
    return Promise.resolve({ bytes: this.size, ...this.info });
  }
  reset(): Promise<void> {
    this.chunks = [];
    this.size = 0;
    this.info = {};
    return Promise.resolve();
  }
  begin(info: { etag?: string; lastModified?: string; total?: number }): Promise<void> {
    this.info = info;
    return Promise.resolve();
  }
  write(chunk: Uint8Array): Promise<void> {
    this.chunks.push(chunk.slice());
    this.size += chunk.length;
    return Promise.resolve();
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    this.chunks = [out];
    return out;
  }
}

async function readChecked(cache: Cache, key: string): Promise<Uint8Array | null> {
  const hit = await cache.match(key);
  if (!hit) return null;
  const want = hit.headers.get(SHA_HEADER);
  const bytes = new Uint8Array(await hit.arrayBuffer());
  if (want && await sha256(bytes) === want) return bytes;
  await cache.delete(key); // damaged: forget it
  return null;
}

function convertChecked(w: PretrainedWeights, url: string, original: Uint8Array): Uint8Array {
  try {
    const ckpt = parseCheckpoint(original, w.file);
    const { bytes, plan } = convertToSafetensorsBytes(ckpt, {
      sourceName: w.file,
      describe: describeWeights,
    });
    checkPlan(w, url, plan);
    // verify as the file converter does: re-read the output, compare every tensor bit for bit
    const st = parseSafetensors(bytes, `${w.file} (converted)`);
    if (st.tensors.size !== plan.tensors.length) throw new Error("the converted file lost tensors");
    for (const p of plan.tensors) {
      const got = st.tensors.get(p.name);
      const want = materialize(p, w.file);
      if (!got || got.dtype !== want.dtype || !bytesEqual(got.data, want.data)) {
        throw new Error(`verify failed: '${p.name}' differs after conversion`);
      }
    }
    return bytes;
  } catch (e) {
    throw notACheckpoint(w, url, e);
  }
}

async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  type Locks = { request(name: string, cb: () => Promise<T>): Promise<T> };
  const locks = (globalThis.navigator as { locks?: Locks } | undefined)?.locks;
  if (typeof locks?.request === "function") return await locks.request(name, fn);
  return await fn();
}

/**
 * The converted weights of a tag from Cache Storage (SHA-256 checked), fetched, converted and stored when
 * missing.
 *
 * @throws {DownloadError} naming the tag and URL
 */
export async function loadFromCacheStorage(
  w: PretrainedWeights,
  url: string,
  o: ResolvedHubOptions,
): Promise<{ bytes: Uint8Array; file: string; downloaded: boolean }> {
  if (typeof caches === "undefined") {
    throw new DownloadError(w.tag, url, "this runtime has no Cache Storage API (caches) to keep weights in");
  }
  const stKey = `${url}.safetensors`;
  let cache: Cache;
  try {
    cache = await caches.open(CACHE_NAME);
  } catch (e) {
    throw new DownloadError(w.tag, url, `cannot open the cache '${CACHE_NAME}': ${(e as Error).message}`, {
      cause: e,
    });
  }
  const hit = await readChecked(cache, stKey);
  if (hit) return { bytes: hit, file: stKey, downloaded: false };
  return await withLock(`${CACHE_NAME}:${w.tag}`, async () => {
    const again = await readChecked(cache, stKey); // another tab may have stored it meanwhile
    if (again) return { bytes: again, file: stKey, downloaded: false };
    let original = await readChecked(cache, url);
    let downloaded = false;
    if (!original) {
      if (o.offline) {
        throw new DownloadError(
          w.tag,
          url,
          `not in the browser cache '${CACHE_NAME}' and the network is off (offline option)`,
        );
      }
      const sink = new MemorySink();
      await httpDownload(w, url, sink, o);
      original = sink.bytes();
      downloaded = true;
    }
    const sha = await sha256(original);
    if (w.sha256 !== undefined && sha !== w.sha256) {
      throw new DownloadError(w.tag, url, `SHA-256 ${sha} is not the release file's ${w.sha256}`);
    }
    const converted = convertChecked(w, url, original);
    const put = async (key: string, bytes: Uint8Array, digest: string) => {
      try {
        await cache.put(
          key,
          new Response(bytes as Uint8Array<ArrayBuffer>, {
            headers: { "content-type": "application/octet-stream", [SHA_HEADER]: digest },
          }),
        );
      } catch (e) {
        await cache.delete(key).catch(() => false);
        throw new DownloadError(w.tag, url, `cannot store in the browser cache: ${(e as Error).message}`, {
          cause: e,
        });
      }
    };
    if (downloaded) await put(url, original, sha);
    await put(stKey, converted, await sha256(converted));
    return { bytes: converted, file: stKey, downloaded };
  });
}
