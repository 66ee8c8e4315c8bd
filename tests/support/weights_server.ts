/**
 * A release server of our own for the pretrained-weights tests: serves files under GitHub's release layout
 * (`/releases/download/main/<file>`) on 127.0.0.1 (port 0, never another address), with Range / If-Range
 * support like GitHub's storage, and faults on demand: cut a response after N bytes, ignore ranges, answer
 * an HTTP status, change the ETag, slow the transfer.
 */

/** One request the server saw. */
export interface SeenRequest {
  /** The path. */
  path: string;
  /** Its Range header, if any. */
  range: string | null;
  /** Its If-Range header, if any. */
  ifRange: string | null;
  /** The status answered. */
  status: number;
}

/** The faults a server can be told to make. Change them between requests through `server.faults`. */
export interface Faults {
  /** Close the next `cutCount` responses after this many body bytes. */
  cutAfter?: number;
  /** How many responses to cut (default: 1 when cutAfter is set). */
  cutCount?: number;
  /** Answer this status with no body to every request. */
  status?: number;
  /** Ignore Range headers (always 200 with the whole file). */
  ignoreRange?: boolean;
  /** Milliseconds to wait between 64 KiB chunks. */
  chunkDelayMs?: number;
}

/** A running server. */
export interface WeightsServer {
  /** Base URL for `T2T_VIT_WEIGHTS_URL` (`http://127.0.0.1:<port>/releases/download/main`). */
  base: string;
  /** Requests seen, in order. */
  requests: SeenRequest[];
  /** Current faults (mutable). */
  faults: Faults;
  /** The served files by name (mutable: replace one to change it; its ETag changes with it). */
  files: Map<string, Uint8Array>;
  /** Stops the server. */
  stop(): Promise<void>;
}

const PREFIX = "/releases/download/main/";
const CHUNK = 64 << 10;

function etagOf(bytes: Uint8Array, version: number): string {
  return `"${bytes.length.toString(16)}-${version}"`;
}

/** Starts a server on 127.0.0.1 serving `files` (name -> bytes). */
export function startWeightsServer(files: Record<string, Uint8Array>, faults: Faults = {}): WeightsServer {
  const map = new Map(Object.entries(files));
  const versions = new Map<Uint8Array, number>();
  let nextVersion = 1;
  const version = (b: Uint8Array) => {
    if (!versions.has(b)) versions.set(b, nextVersion++);
    return versions.get(b)!;
  };
  const requests: SeenRequest[] = [];
  const state: WeightsServer = {
    base: "",
    requests,
    faults,
    files: map,
    stop: () => Promise.resolve(),
  };
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    (req) => {
      const url = new URL(req.url);
      const range = req.headers.get("range");
      const ifRange = req.headers.get("if-range");
      const seen: SeenRequest = { path: url.pathname, range, ifRange, status: 0 };
      requests.push(seen);
      const f = state.faults;
      if (f.status !== undefined) {
        seen.status = f.status;
        return new Response(`status ${f.status}`, { status: f.status });
      }
      const name = decodeURIComponent(url.pathname.slice(PREFIX.length));
      const bytes = url.pathname.startsWith(PREFIX) ? map.get(name) : undefined;
      if (!bytes) {
        seen.status = 404;
        return new Response("Not Found", { status: 404 });
      }
      const etag = etagOf(bytes, version(bytes));
      let start = 0;
      let status = 200;
      const m = range ? /^bytes=(\d+)-$/.exec(range) : null;
      if (m && !f.ignoreRange && (ifRange === null || ifRange === etag)) {
        start = Number(m[1]);
        if (start >= bytes.length) {
          seen.status = 416;
          return new Response(null, { status: 416, headers: { "content-range": `bytes */${bytes.length}` } });
        }
        status = 206;
      }
      seen.status = status;
      const body = bytes.subarray(start);
      let cut: number | undefined;
      if (f.cutAfter !== undefined && (f.cutCount ?? 1) > 0) {
        cut = f.cutAfter;
        f.cutCount = (f.cutCount ?? 1) - 1;
      }
      const delay = f.chunkDelayMs ?? 0;
      let off = 0;
      const stream = new ReadableStream<Uint8Array>({
        async pull(ctl) {
          if (delay) await new Promise((r) => setTimeout(r, delay));
          if (cut !== undefined && off >= cut) {
            ctl.close(); // the body ends short of its content-length: the connection is cut
            return;
          }
          const end = Math.min(body.length, off + CHUNK, cut ?? Infinity);
          ctl.enqueue(body.slice(off, end));
          off = end;
          if (off >= body.length) ctl.close();
        },
      });
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        "content-length": String(body.length),
        "accept-ranges": "bytes",
        etag,
      };
      if (status === 206) headers["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
      return new Response(stream, { status, headers });
    },
  );
  state.base = `http://127.0.0.1:${server.addr.port}/releases/download/main`;
  state.stop = async () => {
    ac.abort();
    await server.finished;
  };
  return state;
}
