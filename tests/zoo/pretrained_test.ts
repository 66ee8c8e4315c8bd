/**
 * Official weights by name: the table, and download / check / convert / cache against a release server of
 * our own on 127.0.0.1 (never the internet) serving the reference checkpoints under the release layout.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { DownloadError, ModelError } from "../../src/core/errors.ts";
import { fill, fillInput } from "../../src/core/fill.ts";
import {
  createModel,
  type DownloadProgress,
  ensurePretrained,
  formatProgress,
  type HubOptions,
  loadPretrainedBytes,
  MODEL_CONFIGS,
  MODEL_NAMES,
  PRETRAINED_TAGS,
  PRETRAINED_WEIGHTS,
  resolveConfig,
  resolvePretrained,
  setBackend,
  T2tVit14,
  T2tVit7,
  tf,
  weightsUrl,
} from "../../zoo/mod.ts";
import { CACHE_NAME } from "../../zoo/hub_web.ts";
import { makeZipCheckpoint, torchPickle } from "../support/checkpoint_builders.ts";
import { manifest, ref } from "../support/fixtures.ts";
import { startWeightsServer, type WeightsServer } from "../support/weights_server.ts";
import { maxAbsDiff } from "../support/zoo.ts";

const T7_FILE = "71.7_T2T_ViT_7.pth.tar";
const T7_BYTES = Deno.readFileSync(ref("checkpoints/t2t_vit_7.pth.tar"));
const T7_SHA = createHash("sha256").update(T7_BYTES).digest("hex");
const ROOT = new URL("../../", import.meta.url).pathname;
const CHILD = new URL("../support/pretrained_child.ts", import.meta.url).pathname;

await setBackend("wasm");

function tmp(): string {
  return Deno.makeTempDirSync({ prefix: "t2t-pretrained-" });
}

function ls(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** Hub options for a test: this server, this cache, fast retries, progress collected. */
function hub(server: { base: string }, cacheDir: string, extra: HubOptions = {}): HubOptions {
  return { baseUrl: server.base, cacheDir, progress: false, retryDelayMs: 5, ...extra };
}

function dead(): { base: string } {
  // a port nobody listens on: bind one, note it, close it
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return { base: `http://127.0.0.1:${port}/releases/download/main` };
}

async function withServer<T>(
  files: Record<string, Uint8Array>,
  fn: (s: WeightsServer) => Promise<T>,
): Promise<T> {
  const s = startWeightsServer(files);
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}

const ENTRY_T7 = "t2t_vit_7.in1k";

Deno.test("pretrained table: 11 ImageNet files and 4 CIFAR ones, tags resolve, rows fit the variant table", () => {
  assert.equal(PRETRAINED_WEIGHTS.length, 15);
  assert.equal(new Set(PRETRAINED_TAGS).size, 15);
  assert.equal(PRETRAINED_WEIGHTS.filter((w) => w.dataset === "imagenet-1k").length, 11);
  for (const w of PRETRAINED_WEIGHTS) {
    assert.ok((MODEL_NAMES as readonly string[]).includes(w.model), w.tag);
    assert.equal(w.tag, `${w.model}.${w.variant}`);
    // the architecture at this size and class count is a valid config of the variant table
    resolveConfig({ ...MODEL_CONFIGS[w.model], imgSize: w.imgSize, numClasses: w.numClasses });
    assert.equal(w.bytes, undefined, "no size was recorded without seeing the file");
  }
  assert.equal(resolvePretrained("t2t_vit_14").tag, "t2t_vit_14.in1k");
  assert.equal(resolvePretrained("t2t_vit_14", "in1k_384").file, "83.3_T2T_ViT_14.pth.tar");
  assert.equal(resolvePretrained("t2t_vit_14", "t2t_vit_14.in1k_384").imgSize, 384);
  assert.equal(resolvePretrained("t2t_vit_24.in1k_token_labeling").file, "84.2_T2T_ViT_24.pth.tar");
  assert.equal(resolvePretrained("t2t_vit_19", "in1k_ft_cifar100").numClasses, 100);
  assert.equal(
    weightsUrl(resolvePretrained("t2t_vit_t_14")),
    "https://github.com/yitu-opensource/T2T-ViT/releases/download/main/81.7_T2T_ViTt_14.pth.tar",
  );
  assert.throws(
    () => resolvePretrained("t2t_vit_14", "in21k"),
    /no released weights 't2t_vit_14.in21k'.*in1k_384/,
  );
  assert.throws(() => resolvePretrained("t2t_vit_dense"), /released no weights/);
  assert.throws(() => resolvePretrained("t2t_vit_7", "t2t_vit_14.in1k"), ModelError);
  // the README's table lists every tag and file
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  for (const w of PRETRAINED_WEIGHTS) {
    assert.ok(readme.includes(`\`${w.tag}\``), `README lacks ${w.tag}`);
    assert.ok(readme.includes(weightsUrl(w)), `README lacks ${weightsUrl(w)}`);
  }
});

Deno.test("formatProgress: size, rate, time left", () => {
  const p: DownloadProgress = {
    tag: "t2t_vit_14.in1k",
    url: "u",
    bytesDone: 45e6,
    bytesTotal: 100e6,
    resumedFrom: 0,
    bytesPerSecond: 5e6,
    secondsLeft: 11,
    finished: false,
  };
  assert.match(
    formatProgress(p),
    /t2t_vit_14\.in1k \[#+\.+\] {2}45% {2}45\.0\/100\.0 MB {2}5\.0 MB\/s {2}0:11 left/,
  );
});

Deno.test("pretrained: first download converts and caches; the model reproduces the official-init logits; the cache serves it with the server gone", async () => {
  const cacheDir = tmp();
  try {
    const reports: DownloadProgress[] = [];
    await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
      const m = await T2tVit7.create({
        pretrained: true,
        hub: hub(s, cacheDir, { progress: (p) => reports.push(p) }),
      });
      try {
        const want = (await readSafetensors(ref("outputs/t2t_vit_7.official-init.safetensors"))).tensors;
        const x = tf.tensor4d(fillInput(2, 224), [2, 3, 224, 224]);
        const l = m.forward(x);
        const el = maxAbsDiff(await l.data(), toFloat32(want.get("logits")!));
        tf.dispose([x, l]);
        assert.ok(el <= 5e-5, `logits differ by ${el}`);
        console.log(
          `t2t_vit_7.in1k via the pretrained path: logits within ${el.toExponential(2)} of official-init`,
        );
      } finally {
        m.dispose();
      }
      assert.equal(s.requests.length, 1);
      assert.equal(s.requests[0].range, null);
    });
    const last = reports[reports.length - 1];
    assert.ok(last.finished && last.bytesDone === T7_BYTES.length && last.bytesTotal === T7_BYTES.length);
    const dir = `${cacheDir}/${ENTRY_T7}`;
    assert.deepEqual(ls(dir), [T7_FILE, `${T7_FILE}.json`, "71.7_T2T_ViT_7.safetensors"]);
    const rec = JSON.parse(Deno.readTextFileSync(`${dir}/${T7_FILE}.json`));
    assert.equal(rec.sha256, T7_SHA);
    assert.equal(rec.bytes, T7_BYTES.length);
    // the cache answers with the server stopped, online or offline
    for (const offline of [false, true]) {
      const r = await loadPretrainedBytes("t2t_vit_7", true, hub(dead(), cacheDir, { offline }));
      assert.equal(r.downloaded, false);
      assert.equal(r.file, `${dir}/71.7_T2T_ViT_7.safetensors`);
    }
    const before = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) {
      const m2 = await createModel("t2t_vit_7", {
        pretrained: "in1k",
        hub: hub(dead(), cacheDir, { offline: true }),
      });
      assert.equal(m2.name, "t2t_vit_7");
      m2.dispose();
    }
    assert.equal(tf.memory().numTensors, before, "loading from the cache leaks no tensors");
    // a tag as the name, as timm takes it
    const m3 = await createModel("t2t_vit_7.in1k", {
      pretrained: true,
      hub: hub(dead(), cacheDir, { offline: true }),
    });
    assert.equal(m3.name, "t2t_vit_7");
    m3.dispose();
    const m4 = await createModel("t2t_vit_14.in1k_384"); // no pretrained: the tag's architecture, random init
    assert.deepEqual([m4.name, m4.config.imgSize, m4.config.numClasses], ["t2t_vit_14", 384, 1000]);
    m4.dispose();
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
});

Deno.test("pretrained: a cut download resumes with a Range request (automatically, and on the next run)", async () => {
  const cacheDir = tmp();
  const dir = `${cacheDir}/${ENTRY_T7}`;
  try {
    await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
      // retried in the same call
      s.faults = { cutAfter: 5 << 20 };
      const r = await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir));
      assert.equal(r.downloaded, true);
      assert.deepEqual(s.requests.map((q) => [q.range, q.status]), [[null, 200], [`bytes=${5 << 20}-`, 206]]);
      assert.ok(s.requests[1].ifRange?.startsWith('"'), "If-Range carries the ETag");
      const rec = JSON.parse(Deno.readTextFileSync(`${dir}/${T7_FILE}.json`));
      assert.equal(rec.sha256, T7_SHA);
      Deno.removeSync(cacheDir, { recursive: true });

      // no retries: the call fails, keeps the .part, and the next call resumes it
      s.requests.length = 0;
      s.faults = { cutAfter: 3 << 20 };
      await assert.rejects(loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 0 })), (e) => {
        assert.ok(e instanceof DownloadError);
        assert.match(
          e.message,
          new RegExp(`^t2t_vit_7\\.in1k \\(${s.base}/${T7_FILE}\\): download cut after`),
        );
        assert.match(
          e.message,
          new RegExp(`cut after ${3 << 20} of ${T7_BYTES.length} bytes .*; run again to resume`),
        );
        assert.ok(!e.message.includes("\n"));
        return true;
      });
      assert.deepEqual(ls(dir), [`${T7_FILE}.part`, `${T7_FILE}.part.json`]);
      assert.equal(Deno.statSync(`${dir}/${T7_FILE}.part`).size, 3 << 20);
      const r2 = await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 0 }));
      assert.equal(r2.downloaded, true);
      assert.deepEqual(s.requests.map((q) => [q.range, q.status]), [[null, 200], [`bytes=${3 << 20}-`, 206]]);
      assert.equal(JSON.parse(Deno.readTextFileSync(`${dir}/${T7_FILE}.json`)).sha256, T7_SHA);
      Deno.removeSync(cacheDir, { recursive: true });

      // the server ignores ranges: start over cleanly
      s.requests.length = 0;
      s.faults = { cutAfter: 2 << 20 };
      await assert.rejects(
        loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 0 })),
        DownloadError,
      );
      s.faults = { ignoreRange: true };
      await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 0 }));
      assert.deepEqual(s.requests.map((q) => [q.range, q.status]), [[null, 200], [`bytes=${2 << 20}-`, 200]]);
      assert.equal(JSON.parse(Deno.readTextFileSync(`${dir}/${T7_FILE}.json`)).sha256, T7_SHA);
      Deno.removeSync(cacheDir, { recursive: true });

      // the file changed on the server (new ETag): If-Range makes it send the whole new file
      s.requests.length = 0;
      s.faults = { cutAfter: 2 << 20 };
      await assert.rejects(
        loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 0 })),
        DownloadError,
      );
      s.faults = {};
      s.files.set(T7_FILE, T7_BYTES.slice());
      await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 0 }));
      assert.equal(s.requests[1].status, 200);
      assert.equal(JSON.parse(Deno.readTextFileSync(`${dir}/${T7_FILE}.json`)).sha256, T7_SHA);
    });
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
});

Deno.test("pretrained: HTTP 404 and 500, no network, a file that is not a checkpoint, the wrong model: one-line errors, nothing cached", async () => {
  const cacheDir = tmp();
  try {
    const garbage = new Uint8Array(1 << 20).map((_, i) => (i * 2654435761) >>> 24);
    const wrong = Deno.readFileSync(ref("checkpoints/tiny-train.pth.tar"));
    await withServer({ [T7_FILE]: garbage, "75.2_T2T_ViT_10.pth.tar": wrong }, async (s) => {
      const cases: [string, HubOptions, RegExp][] = [
        [
          "t2t_vit_12",
          {},
          /^t2t_vit_12\.in1k \(http:\/\/127\.0\.0\.1:\d+\/releases\/download\/main\/76\.5_T2T_ViT_12\.pth\.tar\): HTTP 404/,
        ],
        ["t2t_vit_7", {}, /^t2t_vit_7\.in1k \(.*\): the downloaded file is not a usable checkpoint: /],
        [
          "t2t_vit_10",
          {},
          /^t2t_vit_10\.in1k \(.*\): the file holds custom .* not t2t_vit_10 \(224 px, 1000 classes\)/,
        ],
      ];
      for (const [name, extra, re] of cases) {
        await assert.rejects(loadPretrainedBytes(name, true, hub(s, cacheDir, extra)), (e) => {
          assert.ok(e instanceof DownloadError, String(e));
          assert.match(e.message, re);
          assert.ok(!e.message.includes("\n"));
          return true;
        });
      }
      s.faults = { status: 500 };
      s.requests.length = 0;
      await assert.rejects(
        loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { retries: 1 })),
        /^DownloadError: t2t_vit_7\.in1k \(.*\): HTTP 500/,
      );
      assert.equal(s.requests.length, 2, "a 500 is retried");
    });
    await assert.rejects(
      loadPretrainedBytes("t2t_vit_7", true, hub(dead(), cacheDir, { retries: 0 })),
      /^DownloadError: t2t_vit_7\.in1k \(http:\/\/127\.0\.0\.1:\d+\/.*\): cannot reach the server: .*no network\?/,
    );
    // nothing half-written: no file in any entry folder
    for (const d of ls(cacheDir)) assert.deepEqual(ls(`${cacheDir}/${d}`), [], d);
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
});

Deno.test({
  name: "pretrained: a full disk is one clear error and leaves nothing",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const cacheDir = tmp();
    const dir = `${cacheDir}/${ENTRY_T7}`;
    try {
      await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
        // the .part file is /dev/full: every write fails with ENOSPC
        Deno.mkdirSync(dir, { recursive: true });
        Deno.symlinkSync("/dev/full", `${dir}/${T7_FILE}.part`);
        Deno.writeTextFileSync(
          `${dir}/${T7_FILE}.part.json`,
          JSON.stringify({ url: `${s.base}/${T7_FILE}` }),
        );
        await assert.rejects(loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir)), (e) => {
          assert.ok(e instanceof DownloadError);
          assert.match(e.message, /^t2t_vit_7\.in1k \(.*\): cannot write .*\.part: No space left on device/);
          return true;
        });
        assert.deepEqual(ls(dir), []);
      });
    } finally {
      Deno.removeSync(cacheDir, { recursive: true });
    }
  },
});

Deno.test("pretrained: offline without a cache entry fails without touching the network; tampering is caught", async () => {
  const cacheDir = tmp();
  try {
    await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
      await assert.rejects(
        loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { offline: true })),
        (e) => {
          assert.ok(e instanceof DownloadError);
          assert.match(e.message, /^t2t_vit_7\.in1k \(.*\): not in the cache .* network is off/);
          return true;
        },
      );
      assert.equal(s.requests.length, 0);
      assert.deepEqual(ls(cacheDir), []);
      await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir));
    });
    const dir = `${cacheDir}/${ENTRY_T7}`;
    const st = `${dir}/71.7_T2T_ViT_7.safetensors`;
    const good = Deno.readFileSync(st);
    const flip = (path: string, at: number) => {
      const b = Deno.readFileSync(path);
      b[at] ^= 1;
      Deno.writeFileSync(path, b);
    };
    // a modified safetensors is converted again from the (checked) original, offline
    flip(st, good.length - 100);
    const r = await loadPretrainedBytes("t2t_vit_7", true, hub(dead(), cacheDir, { offline: true }));
    assert.deepEqual(r.bytes, good);
    // a modified original too: offline cannot repair it, and says so
    flip(st, good.length - 100);
    flip(`${dir}/${T7_FILE}`, T7_BYTES.length - 100);
    await assert.rejects(
      loadPretrainedBytes("t2t_vit_7", true, hub(dead(), cacheDir, { offline: true })),
      /^DownloadError: t2t_vit_7\.in1k \(.*\): the cached copy .* failed its SHA-256 check and the network is off/,
    );
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
});

Deno.test("pretrained: two processes asking at once share one download; a dead owner's lock is broken", async () => {
  const cacheDir = tmp();
  try {
    await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
      s.faults = { chunkDelayMs: 6 }; // a ~3 s transfer: the two really overlap
      const env = { T2T_VIT_CACHE: cacheDir, T2T_VIT_WEIGHTS_URL: s.base, NO_COLOR: "1" };
      const run = () =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", CHILD, "t2t_vit_7"],
          env,
          stdout: "piped",
          stderr: "piped",
        }).output();
      const outs = await Promise.all([run(), run()]);
      const dec = new TextDecoder();
      const got = outs.map((o) => {
        assert.equal(o.code, 0, dec.decode(o.stderr));
        return JSON.parse(dec.decode(o.stdout));
      });
      assert.equal(s.requests.length, 1, "one download");
      assert.deepEqual(got.map((g) => g.downloaded).sort(), [false, true]);
      for (const g of got) assert.equal(g.sha256, T7_SHA);
      assert.equal(got[0].safetensorsSha256, got[1].safetensorsSha256);
      const err = outs.map((o) => dec.decode(o.stderr)).join("\n");
      const waiter = outs[got.findIndex((g) => !g.downloaded)];
      assert.match(dec.decode(waiter.stderr), /another process is fetching it; waiting \(lock .*\.lock\)/);
      assert.match(
        err,
        /t2t_vit_7\.in1k \[#+\] 100% {2}\d+\.\d\/\d+\.\d MB {2}[\d.]+ MB\/s {2}done/,
        "progress bar on stderr",
      );
      assert.deepEqual(ls(`${cacheDir}/${ENTRY_T7}`), [
        T7_FILE,
        `${T7_FILE}.json`,
        "71.7_T2T_ViT_7.safetensors",
      ]);

      // a lock left by a process that died is broken at once
      Deno.removeSync(cacheDir, { recursive: true });
      Deno.mkdirSync(`${cacheDir}/${ENTRY_T7}`, { recursive: true });
      const gone = new Deno.Command("true").spawn();
      await gone.status;
      Deno.writeTextFileSync(
        `${cacheDir}/${ENTRY_T7}/.lock`,
        JSON.stringify({ pid: gone.pid, host: Deno.hostname(), token: "x" }),
      );
      s.faults = {};
      const t0 = performance.now();
      const r = await ensurePretrained("t2t_vit_7", true, hub(s, cacheDir, { lockStaleMs: 60_000 }));
      assert.ok(performance.now() - t0 < 20_000);
      assert.equal(r.downloaded, true);
      assert.ok(!ls(`${cacheDir}/${ENTRY_T7}`).includes(".lock"));

      // a lock of another machine that nobody refreshed for an hour is broken too
      Deno.removeSync(cacheDir, { recursive: true });
      Deno.mkdirSync(`${cacheDir}/${ENTRY_T7}`, { recursive: true });
      const lock = `${cacheDir}/${ENTRY_T7}/.lock`;
      Deno.writeTextFileSync(lock, JSON.stringify({ pid: 1, host: "elsewhere", token: "y" }));
      const hourAgo = new Date(Date.now() - 3600_000);
      Deno.utimeSync(lock, hourAgo, hourAgo);
      const r2 = await ensurePretrained("t2t_vit_7", true, hub(s, cacheDir));
      assert.equal(r2.downloaded, true);
      assert.ok(!ls(`${cacheDir}/${ENTRY_T7}`).includes(".lock"));
    });
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
});

Deno.test({
  name: "pretrained: Ctrl-C during a download keeps the .part for the next run and releases the lock",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const cacheDir = tmp();
    const dir = `${cacheDir}/${ENTRY_T7}`;
    try {
      await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
        s.faults = { chunkDelayMs: 20 };
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", CHILD, "t2t_vit_7"],
          env: { T2T_VIT_CACHE: cacheDir, T2T_VIT_WEIGHTS_URL: s.base },
          stdout: "null",
          stderr: "null",
        }).spawn();
        const t0 = performance.now();
        while (
          (ls(dir).includes(`${T7_FILE}.part`) ? Deno.statSync(`${dir}/${T7_FILE}.part`).size : 0) < 1 << 20
        ) {
          assert.ok(performance.now() - t0 < 60_000, "the download never started");
          await new Promise((r) => setTimeout(r, 50));
        }
        child.kill("SIGINT");
        assert.equal((await child.status).code, 130);
        assert.deepEqual(ls(dir), [`${T7_FILE}.part`, `${T7_FILE}.part.json`]);
        s.faults = {};
        s.requests.length = 0;
        const r = await ensurePretrained("t2t_vit_7", true, hub(s, cacheDir));
        assert.equal(r.downloaded, true);
        assert.match(s.requests[0].range ?? "", /^bytes=\d+-$/);
        assert.equal(r.sha256, T7_SHA);
      });
    } finally {
      Deno.removeSync(cacheDir, { recursive: true });
    }
  },
});

Deno.test("pretrained CLIs: convert --pretrained, predict --pretrained from the cache, --offline / T2T_VIT_OFFLINE on an empty cache", async () => {
  const cacheDir = tmp();
  const empty = tmp();
  const dec = new TextDecoder();
  const cli = async (script: string, args: string[], env: Record<string, string>) => {
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}${script}`, ...args],
      env: { NO_COLOR: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
  };
  try {
    await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
      const env = { T2T_VIT_CACHE: cacheDir, T2T_VIT_WEIGHTS_URL: s.base };
      const c = await cli("convert.ts", ["--pretrained", "t2t_vit_7"], env);
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, new RegExp(`${cacheDir}/${ENTRY_T7}/71\\.7_T2T_ViT_7\\.safetensors`));
      assert.match(c.stderr, /MB\/s/);
      const off = await cli("predict.ts", [
        ref("images/photo.jpg"),
        "--model",
        "t2t_vit_7",
        "--pretrained",
        "--offline",
        "--json",
      ], {
        ...env,
        T2T_VIT_WEIGHTS_URL: dead().base,
      });
      assert.equal(off.code, 0, off.stderr);
      const j = JSON.parse(off.stdout);
      assert.equal(j.model, "t2t_vit_7");
      assert.equal(j.results[0].predictions.length, 5);
      for (
        const [args, extraEnv] of [
          [["--offline"], {}],
          [[], { T2T_VIT_OFFLINE: "1" }],
        ] as [string[], Record<string, string>][]
      ) {
        const p = await cli("predict.ts", [
          ref("images/photo.jpg"),
          "--model",
          "t2t_vit_7",
          "--pretrained",
          ...args,
        ], {
          T2T_VIT_CACHE: empty,
          T2T_VIT_WEIGHTS_URL: s.base,
          ...extraEnv,
        });
        assert.equal(p.code, 1);
        assert.match(
          p.stderr,
          /^error: t2t_vit_7\.in1k \(http:\/\/127\.0\.0\.1:\d+\/releases\/download\/main\/71\.7_T2T_ViT_7\.pth\.tar\): not in the cache .*network is off.*\n$/,
        );
      }
      const u = await cli("convert.ts", ["--pretrained", "t2t_vit_7", "--offline"], {
        T2T_VIT_CACHE: empty,
        T2T_VIT_WEIGHTS_URL: s.base,
      });
      assert.equal(u.code, 1);
      assert.equal(s.requests.length, 1, "only convert --pretrained used the network");
    });
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
    Deno.removeSync(empty, { recursive: true });
  }
});

Deno.test("pretrained: the Cache Storage back end (the browser's) downloads, converts, verifies and serves from the cache", async () => {
  const cacheDir = tmp();
  await caches.delete(CACHE_NAME);
  try {
    await withServer({ [T7_FILE]: T7_BYTES }, async (s) => {
      const fsBytes = (await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir))).bytes;
      const r = await loadPretrainedBytes("t2t_vit_7", true, hub(s, cacheDir, { storage: "cache-storage" }));
      assert.equal(r.downloaded, true);
      assert.equal(r.file, `${s.base}/${T7_FILE}.safetensors`);
      assert.deepEqual(r.bytes, fsBytes, "the same conversion as the file cache's");
      const base = s.base;
      await s.stop();
      const again = await loadPretrainedBytes("t2t_vit_7", true, {
        baseUrl: base,
        storage: "cache-storage",
        offline: true,
        progress: false,
      });
      assert.equal(again.downloaded, false);
      assert.deepEqual(again.bytes, fsBytes);
    });
    await assert.rejects(
      loadPretrainedBytes("t2t_vit_7", true, {
        ...hub(dead(), cacheDir, { storage: "cache-storage", offline: true }),
      }),
      /^DownloadError: t2t_vit_7\.in1k \(.*\): not in the browser cache/,
    );
  } finally {
    await caches.delete(CACHE_NAME);
    Deno.removeSync(cacheDir, { recursive: true });
  }
});

Deno.test('pretrained: T2tVit14.create({ pretrained: "in1k_384" }) at full size reproduces the official t2t_vit_14@384 outputs', async () => {
  // a release-layout checkpoint of t2t_vit_14 at 384 px with the reference's filled weights (87 MB)
  const entry = manifest()["t2t_vit_14@384"];
  const specs: [string, { key: string; storage: string; numel: number; shape: number[] }][] = [];
  const storages: Record<string, Uint8Array> = {};
  for (const [i, [k, shape]] of entry.state_dict.entries()) {
    const v = fill(k, shape);
    specs.push([k, { key: String(i), storage: "FloatStorage", numel: v.length, shape }]);
    storages[String(i)] = new Uint8Array(v.buffer);
  }
  const ckpt = makeZipCheckpoint(torchPickle(specs, { topKey: "state_dict_ema" }), storages, {
    prefix: "83.3_T2T_ViT_14.pth",
  });
  const cacheDir = tmp();
  try {
    await withServer({ "83.3_T2T_ViT_14.pth.tar": ckpt }, async (s) => {
      const m = await T2tVit14.create({ pretrained: "in1k_384", hub: hub(s, cacheDir) });
      try {
        assert.equal(m.config.imgSize, 384);
        const want = (await readSafetensors(ref("outputs/t2t_vit_14_384.safetensors"))).tensors;
        const x = tf.tensor4d(fillInput(2, 384), [2, 3, 384, 384]);
        const l = m.forward(x);
        const el = maxAbsDiff(await l.data(), toFloat32(want.get("logits")!));
        tf.dispose([x, l]);
        assert.ok(el <= 5e-5, `logits differ by ${el}`);
        console.log(`t2t_vit_14.in1k_384 via the pretrained path: logits within ${el.toExponential(2)}`);
      } finally {
        m.dispose();
      }
    });
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
});
