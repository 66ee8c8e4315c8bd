/**
 * The command-line tools facing hostile files and awkward paths: SIGINT/SIGTERM during a conversion leave no
 * temporary file; the output is compared with the input by the file it names (`dir/./in.pth`, a symlink, a
 * hard link); FIFOs, devices and directories are refused before they are opened; names from a file are
 * printed escaped (no control bytes reach the terminal); `--list` handles 200,000 tensors; a weights file
 * whose `config` asks for a huge model is refused by `predict.ts` with exit 1.
 */

import assert from "node:assert/strict";
import { printable } from "../../src/core/errors.ts";
import { serializeSafetensors } from "../../converters/safetensors.ts";
import {
  f32bytes,
  makeZipCheckpoint,
  OP,
  Pickle,
  type TensorSpec,
  torchPickle,
} from "../support/checkpoint_builders.ts";
import { timeBound } from "../support/timing.ts";

const CONVERT = new URL("../../convert.ts", import.meta.url).pathname;
const PREDICT = new URL("../../predict.ts", import.meta.url).pathname;

async function run(
  cli: string,
  args: string[],
  cwd: string,
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: performance.now() - t,
  };
}

/** No byte a terminal would act on: C0 controls other than newline, DEL, and C1 controls. */
function assertNoControlBytes(text: string, what: string): void {
  // deno-lint-ignore no-control-regex
  const bad = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/.exec(text);
  assert.equal(
    bad,
    null,
    `${what} prints a control character: ${JSON.stringify(bad?.[0])} in ${
      JSON.stringify(text.slice(0, 300))
    }`,
  );
}

function tmpFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".tmp"));
}

const ONE: [string, TensorSpec][] = [["w", { key: "0", storage: "FloatStorage", numel: 4, shape: [4] }]];

Deno.test("convert CLI: SIGINT and SIGTERM mid-conversion remove the temporary file", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-sig-" });
  try {
    // 48 tensors of 1 MiB, converted to float16: long enough to be caught with its temporary file open
    const specs: [string, TensorSpec][] = [];
    const storages: Record<string, Uint8Array> = {};
    for (let i = 0; i < 48; i++) {
      specs.push([`blocks.${i}.w`, {
        key: String(i),
        storage: "FloatStorage",
        numel: 1 << 18,
        shape: [512, 512],
      }]);
      storages[String(i)] = new Uint8Array(1 << 20);
    }
    Deno.writeFileSync(`${dir}/big.pth`, makeZipCheckpoint(torchPickle(specs), storages));
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      let caught = false;
      for (let attempt = 0; attempt < 5 && !caught; attempt++) {
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", CONVERT, "big.pth", "--dtype", "f16", "--force", "-q"],
          cwd: dir,
          stdout: "null",
          stderr: "piped",
        }).spawn();
        const t = performance.now();
        while (performance.now() - t < timeBound(4000)) {
          if (tmpFiles(dir).length) {
            child.kill(signal);
            caught = true;
            break;
          }
          await new Promise((r) => setTimeout(r, 2));
        }
        const status = await child.status;
        await child.stderr.cancel();
        if (caught) {
          assert.equal(status.code, signal === "SIGINT" ? 130 : 143, `${signal}: exit status`);
          assert.deepEqual(tmpFiles(dir), [], `${signal} left a temporary file`);
        }
        try {
          Deno.removeSync(`${dir}/big.safetensors`);
        } catch { /* not written */ }
      }
      assert.ok(caught, `the conversion was never caught with its temporary file (${signal})`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert CLI: the output is compared with the input by file, not by spelling", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-same-" });
  try {
    Deno.mkdirSync(`${dir}/d`);
    const file = makeZipCheckpoint(torchPickle(ONE), { "0": f32bytes([1, 2, 3, 4]) });
    Deno.writeFileSync(`${dir}/d/in.pth`, file);
    Deno.symlinkSync(`${dir}/d/in.pth`, `${dir}/link.pth`);
    Deno.linkSync(`${dir}/d/in.pth`, `${dir}/hard.pth`);
    for (const out of [`${dir}/d/./in.pth`, "d/../d/in.pth", "link.pth", "hard.pth", `${dir}//d/in.pth`]) {
      const r = await run(CONVERT, ["d/in.pth", "-o", out, "--force"], dir);
      assert.equal(r.code, 1, `${out}: ${r.stderr}`);
      assert.match(r.stderr, /would overwrite the input/);
      assert.deepEqual(Deno.readFileSync(`${dir}/d/in.pth`), file, `${out} overwrote the input`);
    }
    assert.deepEqual(tmpFiles(`${dir}/d`), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("CLIs refuse FIFOs, devices and directories before opening them", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-fifo-" });
  try {
    const mk = await new Deno.Command("mkfifo", { args: [`${dir}/pipe.pth`] }).output();
    assert.equal(mk.code, 0);
    Deno.mkdirSync(`${dir}/folder.pth`);
    for (const input of ["pipe.pth", "/dev/zero", "folder.pth"]) {
      for (const args of [[input], [input, "--list"]]) {
        const r = await run(CONVERT, args, dir);
        assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
        assert.match(r.stderr, /not a regular file/, args.join(" "));
        assert.ok(r.ms < timeBound(3000), `${args.join(" ")} took ${r.ms} ms`);
      }
    }
    const p = await run(PREDICT, [
      `${dir}/pipe.pth`,
      "--model",
      "t2t_vit_7",
      "--fill-weights",
      "--backend",
      "cpu",
    ], dir);
    assert.equal(p.code, 1, p.stderr);
    assert.match(p.stderr, /not a regular file/);
    const w = await run(PREDICT, ["x.png", "--weights", `${dir}/pipe.pth`, "--backend", "cpu"], dir);
    assert.equal(w.code, 1, w.stderr);
    assert.match(w.stderr, /not a regular file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("CLIs print names from a file escaped: no control bytes reach the terminal", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-esc-" });
  try {
    const paint = "sys\x1b[2K\r\x07wrote ok";
    // a refused global whose name tries to paint a success line over the error
    const evil = torchPickle(ONE, {
      extra: (p) => p.str("x").global("os", paint).value(["id"]).reduce().setitem(),
    });
    Deno.writeFileSync(`${dir}/evil.pth`, makeZipCheckpoint(evil, { "0": f32bytes([1, 2, 3, 4]) }));
    const r = await run(CONVERT, ["evil.pth"], dir);
    assert.equal(r.code, 1);
    assertNoControlBytes(r.stdout + r.stderr, "a refused global");
    assert.ok(r.stderr.includes(printable(`'os.${paint}'`)), r.stderr);
    assert.match(r.stderr, /\\x1b\[2K\\x0d\\x07wrote ok/);
    // a module named 'constructor'
    const ctor = torchPickle(ONE, {
      extra: (p) => p.str("x").global("constructor", "system").value(["id"]).reduce().setitem(),
    });
    Deno.writeFileSync(`${dir}/ctor.pth`, makeZipCheckpoint(ctor, { "0": f32bytes([1, 2, 3, 4]) }));
    const c = await run(CONVERT, ["ctor.pth"], dir);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /refusing pickle global 'constructor\.system'/);
    // tensor names, dropped keys and storage keys with control characters, listed and converted
    const names: [string, TensorSpec][] = [
      [`blocks.0\x1b]0;pwned\x07.w`, { key: "0", storage: "FloatStorage", numel: 4, shape: [4] }],
      ["head\r.bias\u0085", { key: "0", storage: "FloatStorage", numel: 4, shape: [4] }],
    ];
    const pkl = torchPickle(names, { extra: (p) => p.str("epoch\x1b[31m").int(3).setitem() });
    Deno.writeFileSync(`${dir}/names.pth`, makeZipCheckpoint(pkl, { "0": f32bytes([1, 2, 3, 4]) }));
    for (
      const args of [["names.pth", "--list"], ["names.pth", "--list", "--json"], ["names.pth"], [
        "names.pth",
        "--json",
        "-o",
        "n2.safetensors",
      ]]
    ) {
      const o = await run(CONVERT, args, dir);
      assert.equal(o.code, 0, `${args.join(" ")}: ${o.stderr}`);
      assertNoControlBytes(o.stdout + o.stderr, args.join(" "));
    }
    const listed = await run(CONVERT, ["names.pth", "--list", "--json"], dir);
    assert.equal(JSON.parse(listed.stdout).tensors[0].name, names[0][0], "JSON stays exact");
    // a storage key with an escape in an error message
    const badKey = new Pickle().proto(2).raw(0x7d).str("w").global("torch._utils", "_rebuild_tensor_v2")
      .mark()
      .mark().str("storage").global("torch", "FloatStorage").str("k\x1b[2J").str("cpu").int(4).tuple()
      .binpersid()
      .int(0).value([4]).value([1]).bool(false).none().tuple().reduce().setitem().stop().bytesOut();
    Deno.writeFileSync(`${dir}/key.pth`, makeZipCheckpoint(badKey, { "0": f32bytes([1, 2, 3, 4]) }));
    const k = await run(CONVERT, ["key.pth"], dir);
    assert.equal(k.code, 1);
    assertNoControlBytes(k.stderr, "a bad storage key");
    // an image name with control characters, classified
    const img = await run(PREDICT, [
      "nope\x1b[2J.png",
      "--model",
      "t2t_vit_7",
      "--fill-weights",
      "--backend",
      "cpu",
    ], dir);
    assert.equal(img.code, 1);
    assertNoControlBytes(img.stdout + img.stderr, "an image path");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A compact pickle of an OrderedDict of `n` one-element tensors on one storage (memo references: ~25 B each). */
function manyTensors(n: number): Uint8Array {
  const head = new Pickle().proto(2).global("collections", "OrderedDict").emptyTuple().reduce()
    .global("torch._utils", "_rebuild_tensor_v2").raw(OP.BINPUT, 0, OP.POP)
    .mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(n).tuple().binpersid()
    .raw(OP.BINPUT, 1, OP.POP).value([1]).raw(OP.BINPUT, 2, OP.POP).mark().bytesOut();
  const out = new Uint8Array(head.length + 32 * n + 2);
  out.set(head);
  let o = head.length;
  const enc = new TextEncoder();
  for (let i = 0; i < n; i++) {
    const name = enc.encode(`t${i}`);
    out.set([OP.SHORT_BINUNICODE, name.length], o);
    out.set(name, o + 2);
    o += 2 + name.length;
    out.set([OP.BINGET, 0, OP.MARK, OP.BINGET, 1, OP.BININT], o);
    new DataView(out.buffer).setInt32(o + 6, i, true);
    o += 10;
    out.set([OP.BINGET, 2, OP.BINGET, 2, OP.NEWFALSE, OP.NONE, OP.TUPLE, OP.REDUCE], o);
    o += 8;
  }
  out.set([OP.SETITEMS, OP.STOP], o);
  return out.subarray(0, o + 2);
}

Deno.test("convert CLI: --list of 200,000 tensors is a loop, not a spread", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-list-" });
  try {
    const n = 200_000;
    Deno.writeFileSync(`${dir}/many.pth`, makeZipCheckpoint(manyTensors(n), { "0": new Uint8Array(4 * n) }));
    const r = await run(CONVERT, ["many.pth", "--list"], dir);
    assert.equal(r.code, 0, r.stderr.slice(0, 500));
    assert.equal(r.stdout.trimEnd().split("\n").length, n + 1);
    assert.ok(r.ms < timeBound(10_000), `took ${r.ms} ms`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("predict CLI: a weights file whose config asks for a huge model exits 1 at once", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-cfg-" });
  try {
    for (
      const config of [
        '{"embed_dim": 4000000, "depth": 1, "num_heads": 1}',
        '{"embed_dim": 64, "depth": 10000000, "num_heads": 4}',
      ]
    ) {
      Deno.writeFileSync(`${dir}/w.safetensors`, serializeSafetensors(new Map(), { config }));
      const r = await run(PREDICT, ["x.png", "--weights", "w.safetensors", "--backend", "cpu"], dir);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /exceeds the limit|refusing to build/);
      assert.ok(r.ms < timeBound(4000), `took ${r.ms} ms`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
