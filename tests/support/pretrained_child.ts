/**
 * A child process of tests/zoo/pretrained_test.ts: fetches one released model into the cache named by
 * T2T_VIT_CACHE from T2T_VIT_WEIGHTS_URL and prints what it got as JSON (exit 1 with the error on stderr).
 */
import { ensurePretrained } from "../../zoo/hub.ts";
import { sha256File } from "../../zoo/hub_fs.ts";

const [name, tag] = Deno.args;
try {
  const r = await ensurePretrained(name, tag ?? true, { retryDelayMs: 10 });
  console.log(JSON.stringify({
    safetensors: r.safetensors,
    original: r.original,
    sha256: r.sha256,
    safetensorsSha256: await sha256File(r.safetensors),
    downloaded: r.downloaded,
    converted: r.converted,
  }));
} catch (e) {
  console.error(`error: ${(e as Error).message}`);
  Deno.exit(1);
}
