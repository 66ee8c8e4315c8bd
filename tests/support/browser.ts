/**
 * Shared set-up of the browser test and the browser benchmark: Debian's `chromium` driven by
 * `puppeteer-core`, pages served from this repository on 127.0.0.1 by `web/serve.ts` (one server plain, one
 * cross-origin isolated).
 */
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { serveStatic, type StaticServer } from "../../web/serve.ts";

/** Where Chromium is: `T2T_CHROMIUM`, else the usual Debian/Ubuntu paths; `undefined` when absent. */
export function findChromium(): string | undefined {
  const candidates = [
    Deno.env.get("T2T_CHROMIUM"),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
  ];
  for (const c of candidates) {
    if (!c) continue;
    try {
      if (Deno.statSync(c).isFile) return c;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** The repository root (the servers' root: pages reach `web/dist/` and `tests/fixtures/`). */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

/** A browser and two servers of the repository root. */
export interface BrowserRig {
  browser: Browser;
  /** Plain server (pages are not cross-origin isolated). */
  plain: StaticServer;
  /** COOP/COEP server (pages are cross-origin isolated: SharedArrayBuffer, wasm threads). */
  isolated: StaticServer;
  /** Opens `path` (relative to the root) on one of the servers; page errors are collected in `errors`. */
  open(path: string, opts?: { isolated?: boolean }): Promise<{ page: Page; errors: string[] }>;
  close(): Promise<void>;
}

/** Launches Chromium headless (WebGPU on SwiftShader enabled) and the two servers. */
export async function startRig(chromium: string): Promise<BrowserRig> {
  const plain = await serveStatic({ root: ROOT, isolated: false });
  const isolated = await serveStatic({ root: ROOT, isolated: true });
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    protocolTimeout: 900_000,
    args: [
      "--no-sandbox", // CI runs as root
      "--enable-unsafe-webgpu",
      "--use-webgpu-adapter=swiftshader",
      "--enable-features=Vulkan",
      "--disable-gpu-sandbox",
    ],
  });
  return {
    browser,
    plain,
    isolated,
    async open(path, opts = {}) {
      const page = await browser.newPage();
      page.setDefaultTimeout(900_000);
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error" && !/favicon/.test(m.location()?.url ?? "")) errors.push(m.text());
      });
      const base = opts.isolated ? isolated.url : plain.url;
      await page.goto(base + path, { waitUntil: "load" });
      return { page, errors };
    },
    async close() {
      await browser.close();
      await plain.close();
      await isolated.close();
    },
  };
}
