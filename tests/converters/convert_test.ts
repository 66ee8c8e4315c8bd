import assert from "node:assert/strict";
import { CheckpointError, SafetensorsError, UnsafePickleError } from "../../src/core/errors.ts";
import {
  convertCheckpoint,
  convertToSafetensorsBytes,
  defaultOutputPath,
  planConversion,
  verifyOutput,
} from "../../converters/convert.ts";
import { openCheckpoint, parseCheckpoint } from "../../converters/checkpoint.ts";
import { parseSafetensors, readSafetensors } from "../../converters/safetensors.ts";
import {
  f32bytes,
  makeLegacyCheckpoint,
  makeZipCheckpoint,
  torchPickle,
} from "../support/checkpoint_builders.ts";
import { ref } from "../support/fixtures.ts";
import { ZipArchive } from "../../converters/zip.ts";
import { describeWeights } from "../../zoo/arch.ts";
import { MemorySource } from "../../converters/source.ts";

const CK = (f: string) => ref(`checkpoints/${f}`);
const CLI = new URL("../../convert.ts", import.meta.url).pathname;

function tmpdir(): string {
  return Deno.makeTempDirSync({ prefix: "t2t-convert-" });
}

function ls(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

async function cli(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A zip checkpoint whose pickle calls os.system("touch <canary>") after a valid state_dict. */
function evilZip(canary: string): Uint8Array {
  const pkl = torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]], {
    extra: (p) => p.str("x").global("os", "system").value([`touch ${canary}`]).reduce().setitem(),
  });
  return makeZipCheckpoint(pkl, { "0": f32bytes([1]) });
}

Deno.test("convert: default output names", () => {
  assert.equal(defaultOutputPath("a/81.5_T2T_ViT_14.pth.tar"), "a/81.5_T2T_ViT_14.safetensors");
  assert.equal(defaultOutputPath("x.pth"), "x.safetensors");
  assert.equal(defaultOutputPath("x.PT"), "x.safetensors");
  assert.equal(defaultOutputPath("x.bin"), "x.safetensors");
  assert.equal(defaultOutputPath("x.tar"), "x.safetensors");
  assert.equal(defaultOutputPath("model"), "model.safetensors");
});

Deno.test("convert: library conversion of every fixture, metadata, streaming = in-memory bytes", async () => {
  const dir = tmpdir();
  try {
    const expected = (await readSafetensors(CK("tiny-expected.safetensors"))).tensors;
    const cases: [string, string, string][] = [
      ["tiny-state-dict.pth", "", "custom"],
      ["tiny-cifar.pth", "net", "custom"],
      ["tiny-train.pth.tar", "state_dict_ema", "custom"],
      ["tiny-train-legacy.pth.tar", "state_dict_ema", "custom"],
      ["tiny-fp16.pth", "state_dict", "custom"],
      ["tiny-bf16-legacy.pth", "state_dict", "custom"],
      ["tiny-views.pth", "state_dict", "custom"],
      ["t2t_vit_7.pth.tar", "state_dict_ema", "t2t_vit_7"],
    ];
    for (const [file, key, arch] of cases) {
      const output = `${dir}/${file}.safetensors`;
      let calls = 0;
      const r = await convertCheckpoint(CK(file), {
        output,
        verify: true,
        describe: describeWeights,
        onProgress: () => calls++,
      });
      assert.equal(r.verified, true);
      assert.equal(calls, r.tensors.length, `${file}: progress after each tensor`);
      const bytes = Deno.readFileSync(output);
      assert.equal(bytes.length, r.outputBytes);
      const st = parseSafetensors(bytes, output);
      assert.equal(st.metadata.format, "pt");
      assert.equal(st.metadata.source, file);
      assert.equal(st.metadata.weights_key, key);
      assert.equal(st.metadata.architecture, arch, file);
      // the streaming writer and the in-memory path (the shared serializer) produce identical files
      const mem = convertToSafetensorsBytes(Deno.readFileSync(CK(file)), {
        file: CK(file),
        describe: describeWeights,
      });
      assert.deepEqual(mem.bytes, bytes, `${file}: streamed bytes = serializeSafetensors bytes`);
      if (arch === "custom" && !file.includes("16")) {
        assert.equal(st.metadata.img_size, "32");
        assert.equal(st.metadata.num_classes, "10");
        assert.deepEqual(JSON.parse(st.metadata.config), {
          img_size: 32,
          tokens_type: "performer",
          embed_dim: 32,
          depth: 2,
          mlp_ratio: 2,
          token_dim: 16,
          num_classes: 10,
          in_chans: 3,
        });
        if (!key.endsWith("ema")) {
          for (const [k, t] of expected) assert.deepEqual(st.tensors.get(k)!.data, t.data, `${file} ${k}`);
        }
      }
    }
    // no temporary files left behind
    assert.ok(ls(dir).every((f) => f.endsWith(".safetensors")), ls(dir).join(", "));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert: --dtype on the library path; integer tensors are never converted", async () => {
  const dir = tmpdir();
  try {
    const half = await readSafetensors(CK("tiny-expected-fp16.safetensors"));
    const r = await convertCheckpoint(CK("tiny-fp16.pth"), { output: `${dir}/a.safetensors`, dtype: "f32" });
    assert.equal(r.metadata.dtype, "f32");
    const st = await readSafetensors(`${dir}/a.safetensors`);
    for (const [k, t] of half.tensors) assert.deepEqual(st.tensors.get(k)!.data, t.data, k);
    // bf16 from f32 then f32 again is what the reference bf16 file holds
    await convertCheckpoint(CK("tiny-state-dict.pth"), {
      output: `${dir}/b.safetensors`,
      dtype: "bf16",
      verify: true,
    });
    const bf = await readSafetensors(`${dir}/b.safetensors`);
    for (const t of bf.tensors.values()) assert.equal(t.dtype, "BF16");
    const spec = { key: "0", storage: "LongStorage", numel: 2, shape: [2] };
    const ints = makeZipCheckpoint(torchPickle([["n", spec]]), { "0": new Uint8Array(16).fill(1) });
    const p = planConversion(parseCheckpoint(ints, "ints"), { dtype: "f16" });
    assert.equal(p.tensors[0].dtype, "I64");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert: never overwrites without force, never leaves partial output", async () => {
  const dir = tmpdir();
  try {
    const output = `${dir}/out.safetensors`;
    Deno.writeTextFileSync(output, "precious");
    await assert.rejects(() => convertCheckpoint(CK("tiny-cifar.pth"), { output }), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError);
      assert.match(e.message, /already exists/);
      return true;
    });
    assert.equal(Deno.readTextFileSync(output), "precious");
    await convertCheckpoint(CK("tiny-cifar.pth"), { output, force: true });
    assert.equal(parseSafetensors(Deno.readFileSync(output)).tensors.size, 56);
    // a checkpoint that fails half way (a bad tensor after good ones) leaves nothing behind
    const good = { key: "0", storage: "FloatStorage", numel: 1, shape: [1] };
    const pkl = torchPickle([["a", good], ["b", { ...good, key: "1" }]]);
    const zip = makeZipCheckpoint(pkl, { "0": f32bytes([1]), "1": f32bytes([2]) });
    // corrupt the second record's bytes so its CRC fails while writing
    const z = ZipArchive.open(new MemorySource(zip));
    zip[z.dataOffset(z.entries.get("archive/data/1")!) + 3] ^= 0x01;
    Deno.writeFileSync(`${dir}/bad.pth`, zip);
    await assert.rejects(() => convertCheckpoint(`${dir}/bad.pth`), CheckpointError);
    assert.deepEqual(ls(dir), ["bad.pth", "out.safetensors"]);
    // hostile input: refused, nothing written, nothing executed
    Deno.writeFileSync(`${dir}/evil.pth`, evilZip(`${dir}/pwned`));
    await assert.rejects(() => convertCheckpoint(`${dir}/evil.pth`), UnsafePickleError);
    assert.deepEqual(ls(dir), ["bad.pth", "evil.pth", "out.safetensors"]);
    // the output may not be the input
    await assert.rejects(
      () => convertCheckpoint(`${dir}/bad.pth`, { output: `${dir}/bad.pth` }),
      /overwrite the input/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert: verifyOutput catches a changed byte", async () => {
  const dir = tmpdir();
  try {
    const output = `${dir}/v.safetensors`;
    await convertCheckpoint(CK("tiny-state-dict.pth"), { output });
    const good = Deno.readFileSync(output);
    const b = good.slice();
    b[b.length - 1] ^= 0x80;
    Deno.writeFileSync(output, b);
    using ck = openCheckpoint(CK("tiny-state-dict.pth"));
    assert.throws(() => verifyOutput(output, planConversion(ck), ck.file), /verify failed: bytes differ/);
    // the header is read back too: metadata, an entry's shape, its length, and the file's length
    const n = Number(new DataView(good.buffer).getBigUint64(0, true));
    const text = new TextDecoder().decode(good.subarray(8, 8 + n));
    const damaged = (edit: (t: string) => string) => {
      const t = edit(text);
      assert.notEqual(t, text);
      const b = good.slice();
      b.set(new TextEncoder().encode(t), 8);
      return b;
    };
    for (
      const [bytes, re] of [
        [damaged((t) => t.replace('"format":"pt"', '"format":"pu"')), /metadata differs/],
        [damaged((t) => t.replace("[1,1,32]", "[1,32,1]")), /cls_token.*expected/],
        [good.subarray(0, good.length - 1), /file is \d+ bytes, expected/],
      ] as const
    ) {
      Deno.writeFileSync(output, bytes);
      assert.throws(() => verifyOutput(output, planConversion(ck), ck.file), re);
    }
    const short = good.slice();
    new DataView(short.buffer).setBigUint64(0, BigInt(n - 8), true);
    Deno.writeFileSync(output, short);
    assert.throws(() => verifyOutput(output, planConversion(ck), ck.file), /header length/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert CLI: converts, lists, refuses, and exits with the right status", async () => {
  const dir = tmpdir();
  try {
    Deno.copyFileSync(CK("tiny-train.pth.tar"), `${dir}/tiny-train.pth.tar`);
    let r = await cli(["--help"], dir);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: deno run -A convert.ts <checkpoint>/);

    r = await cli(["tiny-train.pth.tar"], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /wrote tiny-train.safetensors: 56 tensors .* from 'state_dict_ema'; custom, 32px, 10 classes/,
    );
    assert.match(r.stdout, /dropped: epoch \(int 12\), arch .*optimizer \(dict with 2 keys\)/);
    assert.deepEqual(ls(dir), ["tiny-train.pth.tar", "tiny-train.safetensors"]);
    const first = Deno.readFileSync(`${dir}/tiny-train.safetensors`);

    r = await cli(["tiny-train.pth.tar"], dir);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, "one-line cause");
    assert.match(r.stderr, /^error: tiny-train.safetensors: already exists \(use --force to overwrite\)/);

    r = await cli(
      ["tiny-train.pth.tar", "--force", "--verify", "--key", "state_dict", "--dtype", "f16"],
      dir,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /from 'state_dict'.*verified bit for bit/);
    const st = parseSafetensors(Deno.readFileSync(`${dir}/tiny-train.safetensors`));
    assert.equal(st.metadata.weights_key, "state_dict");
    assert.equal(st.tensors.get("head.weight")!.dtype, "F16");
    assert.notDeepEqual(Deno.readFileSync(`${dir}/tiny-train.safetensors`), first);

    r = await cli(["tiny-train.pth.tar", "--list"], dir);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /zip checkpoint; 56 tensors/);
    assert.match(r.stdout, /\nhead\.weight\s+F32\s+\[10, 32\]\n/);
    r = await cli(["tiny-train.pth.tar", "--list", "--json", "--dtype", "bf16"], dir);
    const listed = JSON.parse(r.stdout);
    assert.equal(listed.weightsKey, "state_dict_ema");
    assert.equal(listed.tensors.length, 56);
    assert.equal(listed.tensors[0].dtype, "BF16");
    assert.equal(listed.tensors[0].sourceDtype, "float32");

    r = await cli(["tiny-train.pth.tar", "-o", "sub.safetensors", "--json"], dir);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.output, "sub.safetensors");
    assert.equal(res.architecture.name, "custom");
    assert.deepEqual(ls(dir), ["sub.safetensors", "tiny-train.pth.tar", "tiny-train.safetensors"]);

    // hostile, truncated, missing and wrong inputs: status 1, one line, no output, nothing executed
    Deno.writeFileSync(`${dir}/evil.pth`, evilZip(`${dir}/canary`));
    Deno.writeFileSync(
      `${dir}/cut.pth`,
      Deno.readFileSync(CK("tiny-train-legacy.pth.tar")).subarray(0, 300_000),
    );
    for (
      const [args, re] of [
        [["evil.pth"], /refusing pickle global 'os\.system'.*nothing was executed/],
        [["cut.pth"], /truncated/],
        [["missing.pth"], /missing\.pth/],
        [["tiny-train.safetensors", "-o", "x.safetensors"], /already a safetensors file/],
        [
          ["tiny-train.pth.tar", "--key", "optimizer", "-o", "y.safetensors"],
          /'optimizer'.*not a dict of tensors/,
        ],
      ] as const
    ) {
      const before = ls(dir);
      r = await cli([...args], dir);
      assert.equal(r.code, 1, `${args}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, `${args}: one line`);
      assert.match(r.stderr, re);
      assert.deepEqual(ls(dir), before, `${args}: nothing written`);
    }
    assert.ok(!ls(dir).includes("canary"));

    // usage errors: status 2
    for (
      const args of [[], ["a", "b"], ["x.pth", "--dtype", "f8"], ["x.pth", "--nope"], [
        "x.pth",
        "--list",
        "-o",
        "y",
      ]]
    ) {
      r = await cli(args, dir);
      assert.equal(r.code, 2, `${args}: ${r.stderr}`);
      assert.match(r.stderr, /^error: /);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("convert CLI: a legacy hostile file is refused too", async () => {
  const dir = tmpdir();
  try {
    const pkl = torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]], {
      legacy: true,
      extra: (p) =>
        p.str("x").stackGlobal("subprocess", "Popen").value([["sh", "-c", "touch canary"]]).reduce()
          .setitem(),
    });
    Deno.writeFileSync(`${dir}/evil.pth.tar`, makeLegacyCheckpoint(pkl, [["0", f32bytes([1]), 1]]));
    const r = await cli(["evil.pth.tar"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /evil\.pth\.tar: 'subprocess\.Popen': refusing pickle global 'subprocess\.Popen'/);
    assert.deepEqual(ls(dir), ["evil.pth.tar"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
