/**
 * `deno task serve:web`: a static file server for the demo page on 127.0.0.1, cross-origin isolated (COOP and
 * COEP headers, so the page gets `SharedArrayBuffer` and the wasm backend its threads). Builds `web/dist/`
 * first when it is missing. Also used by the browser test.
 *
 * ```sh
 * deno task serve:web [--port 8123] [--no-isolation] [--root web]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json",
  wasm: "application/wasm",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  txt: "text/plain; charset=utf-8",
  md: "text/plain; charset=utf-8",
};

/** Options of {@linkcode serveStatic}. */
export interface ServeOptions {
  /** The folder served (default `web/`). */
  root?: string;
  /** Port (default 0: any free one). */
  port?: number;
  /** Send COOP/COEP so pages are cross-origin isolated (default true). */
  isolated?: boolean;
  /** Called for each request (tests count them). */
  onRequest?: (path: string, status: number) => void;
}

/** A running server. */
export interface StaticServer {
  /** `http://127.0.0.1:<port>/`. */
  url: string;
  /** Stops it. */
  close(): Promise<void>;
}

/** Serves `root` on 127.0.0.1 (GET and HEAD), never outside it. */
export function serveStatic(opts: ServeOptions = {}): Promise<StaticServer> {
  const root = (opts.root ?? new URL("./", import.meta.url).pathname).replace(/\/+$/, "");
  const isolated = opts.isolated ?? true;
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: opts.port ?? 0,
      onListen: ({ port }) => resolve({ url: `http://127.0.0.1:${port}/`, close: () => server.shutdown() }),
    }, async (req) => {
      const headers = new Headers({ "cache-control": "no-store" });
      if (isolated) {
        headers.set("cross-origin-opener-policy", "same-origin");
        headers.set("cross-origin-embedder-policy", "require-corp");
        headers.set("cross-origin-resource-policy", "same-origin");
      }
      const reply = (status: number, body: BodyInit | null) => {
        opts.onRequest?.(new URL(req.url).pathname, status);
        return new Response(req.method === "HEAD" ? null : body, { status, headers });
      };
      if (req.method !== "GET" && req.method !== "HEAD") return reply(405, "method not allowed\n");
      let path: string;
      try {
        path = decodeURIComponent(new URL(req.url).pathname);
      } catch {
        return reply(400, "bad path\n");
      }
      if (path.split("/").some((p) => p === "..") || path.includes("\0")) return reply(403, "forbidden\n");
      if (path.endsWith("/")) path += "index.html";
      const file = root + path;
      try {
        const st = await Deno.stat(file);
        if (!st.isFile) return reply(404, "not found\n");
        const ext = path.slice(path.lastIndexOf(".") + 1).toLowerCase();
        headers.set("content-type", TYPES[ext] ?? "application/octet-stream");
        headers.set("content-length", String(st.size));
        if (req.method === "HEAD") return reply(200, null);
        const f = await Deno.open(file);
        return reply(200, f.readable);
      } catch {
        return reply(404, "not found\n");
      }
    });
  });
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", default: "8123" },
      root: { type: "string" },
      "no-isolation": { type: "boolean", default: false },
    },
  });
  const root = values.root ?? new URL("./", import.meta.url).pathname;
  try {
    await Deno.stat(new URL("./dist/t2t-vit.js", import.meta.url));
  } catch {
    const { buildWeb } = await import("./build.ts");
    console.log("web/dist/ is missing: building it");
    await buildWeb();
  }
  const s = await serveStatic({ root, port: Number(values.port), isolated: !values["no-isolation"] });
  console.log(
    `serving ${root} at ${s.url} (${
      values["no-isolation"] ? "not " : ""
    }cross-origin isolated); Ctrl-C stops`,
  );
}
