/**
 * safetensors -> .pth: the torch.save zip files we write are compared with files PyTorch wrote
 * (tests/fixtures/torch_export/, made by make_fixture.py there), read back by our reader and by the
 * independent npm:pickleparser, and written through the library and the CLI.
 */
import assert from "node:assert/strict";
import { Parser } from "pickleparser";
import { openCheckpoint } from "../../converters/checkpoint.ts";
import {
  convertCheckpoint,
  defaultTorchOutputPath,
  exportTorchCheckpoint,
  verifyTorchOutput,
} from "../../converters/convert.ts";
import { readSafetensors } from "../../converters/safetensors.ts";
import { MemorySource } from "../../converters/source.ts";
import {
  serializeTorchCheckpoint,
  STORAGE_CLASS_OF,
  torchArchiveName,
  torchStateDictPickle,
} from "../../converters/torch_writer.ts";
import type { RawTensor, TensorMap } from "../../src/core/types.ts";
import { selectWeights } from "../../converters/weights.ts";
import { ZipArchive } from "../../converters/zip.ts";
import { SafetensorsError } from "../../src/core/errors.ts";
import { ref } from "../support/fixtures.ts";
import { describeWeights } from "../../zoo/mod.ts";

const HERE = new URL(".", import.meta.url).pathname;
const FIX = (f: string) => `${HERE}../fixtures/torch_export/${f}`;
const CLI = new URL("../../convert.ts", import.meta.url).pathname;
const dec = new TextDecoder();

function records(bytes: Uint8Array): Map<string, { data: Uint8Array; offset: number }> {
  const z = ZipArchive.open(new MemorySource(bytes, "zip"));
  const out = new Map<string, { data: Uint8Array; offset: number }>();
  for (const e of z.entries.values()) {
    assert.equal(e.method, 0, `${e.name} is stored`);
    out.set(e.name, { data: z.read(e), offset: z.dataOffset(e) });
  }
  return out;
}

/** The tensors of a PyTorch-written fixture, read with our reader, in file order. */
function fixtureTensors(path: string): TensorMap {
  using ck = openCheckpoint(path);
  const m: TensorMap = new Map();
  for (const [k, t] of selectWeights(ck.root, { file: path }).tensors) {
    const r = t.read(path);
    m.set(k, { ...r, data: r.data.slice() });
  }
  return m;
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("export: data.pkl byte-identical to PyTorch's, same records and data, 64-byte aligned", () => {
  for (const [file, wrap] of [["small.pth", null], ["small-ema.pth.tar", "state_dict_ema"]] as const) {
    const path = FIX(file);
    const tensors = fixtureTensors(path);
    // every dtype the fixture covers: f32, f16, bf16, i64 (0-d), f64 (4-d), empty, bool
    assert.deepEqual(
      new Set([...tensors.values()].map((t) => t.dtype)),
      new Set(["F32", "F16", "BF16", "I64", "F64", "BOOL"]),
    );
    const name = torchArchiveName(path);
    assert.equal(name, file === "small.pth" ? "small" : "small-ema.pth");
    const ours = records(serializeTorchCheckpoint(tensors, name, { wrap }));
    const theirs = records(Deno.readFileSync(path));
    assert.deepEqual(
      ours.get(`${name}/data.pkl`)!.data,
      theirs.get(`${name}/data.pkl`)!.data,
      `${file}: data.pkl`,
    );
    // the same records in PyTorch's order, plus byteorder (written by torch >= 2.1, which 1.13 reads past)
    const theirNames = [...theirs.keys()];
    assert.deepEqual([...ours.keys()], [theirNames[0], `${name}/byteorder`, ...theirNames.slice(1)]);
    assert.equal(dec.decode(ours.get(`${name}/byteorder`)!.data), "little");
    for (const [k, r] of theirs) assert.deepEqual(ours.get(k)!.data, r.data, `${file}: ${k}`);
    for (const [k, r] of ours) assert.equal(r.offset % 64, 0, `${file}: ${k} data at ${r.offset}`);
  }
});

Deno.test("export: pickleparser reads it back; only OrderedDict, _rebuild_tensor_v2 and typed storages", () => {
  const tensors = fixtureTensors(FIX("small.pth"));
  // more than one SETITEMS batch (1000) and memo slots past 255 (LONG_BINPUT / LONG_BINGET)
  for (let i = 0; i < 1100; i++) {
    tensors.set(`extra.${i}.bias`, {
      dtype: "F32",
      shape: [2],
      data: new Uint8Array(new Float32Array([i, -i]).buffer),
    });
  }
  for (const wrap of [null, "state_dict_ema", "state_dict"]) {
    const bytes = serializeTorchCheckpoint(tensors, "model", { wrap });
    const recs = records(bytes);
    const globals = new Set<string>();
    type Rec = { g: string; args: unknown[] };
    const parser = new Parser({
      unpicklingTypeOfDictionary: "Map",
      nameResolver: {
        resolve: (module: string, name: string) => {
          globals.add(`${module}.${name}`);
          const f = function (...args: unknown[]): Rec | Map<unknown, unknown> {
            return module === "collections" && name === "OrderedDict"
              ? new Map()
              : { g: `${module}.${name}`, args };
          };
          return Object.assign(f, { g: `${module}.${name}` });
        },
      },
      persistentResolver: { resolve: (pid: unknown) => ({ g: "pid", args: pid as unknown[] }) },
    });
    let root = parser.parse<Map<string, unknown>>(recs.get("model/data.pkl")!.data);
    if (wrap !== null) {
      assert.deepEqual([...root.keys()], [wrap]);
      root = root.get(wrap) as Map<string, unknown>;
    }
    const allowed = new Set(["collections.OrderedDict", "torch._utils._rebuild_tensor_v2"]);
    for (const c of Object.values(STORAGE_CLASS_OF)) allowed.add(`torch.${c}`);
    for (const g of globals) assert.ok(allowed.has(g), `global ${g}`);
    assert.deepEqual([...root.keys()], [...tensors.keys()]);
    let i = 0;
    for (const [k, v] of root) {
      const t = tensors.get(k)!;
      const r = v as Rec;
      assert.equal(r.g, "torch._utils._rebuild_tensor_v2");
      const pid = (r.args[0] as Rec).args;
      const numel = t.shape.reduce((a, b) => a * b, 1);
      // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
      assert.deepEqual([pid[0], (pid[1] as { g: string }).g, ...pid.slice(2)], [
        "storage",
        `torch.${STORAGE_CLASS_OF[t.dtype]}`,
        String(i),
        "cpu",
        numel,
      ], k);
      assert.equal(r.args[1], 0);
      assert.deepEqual([...(r.args[2] as number[])], t.shape, k);
      assert.equal(r.args[4], false);
      assert.deepEqual(recs.get(`model/data/${i}`)!.data, t.data, k);
      i++;
    }
    // and our own reader gives back exactly the tensors
    const tmp = Deno.makeTempFileSync({ suffix: ".pth" });
    try {
      Deno.writeFileSync(tmp, bytes);
      verifyTorchOutput(tmp, tensors, wrap);
    } finally {
      Deno.removeSync(tmp);
    }
  }
});

Deno.test("export: pickles refuse what torch cannot hold", () => {
  assert.throws(() => torchStateDictPickle([{ name: "x", dtype: "F32", shape: [2 ** 60] }]), RangeError);
});

Deno.test("export: library and CLI, t2t_vit_7 checkpoint -> safetensors -> .pth, verified; nothing half-written", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-export-" });
  try {
    const st = `${dir}/t2t_vit_7.safetensors`;
    await convertCheckpoint(ref("checkpoints/t2t_vit_7.pth.tar"), { output: st, describe: describeWeights });
    const src = (await readSafetensors(st)).tensors;
    assert.equal(defaultTorchOutputPath(st), `${dir}/t2t_vit_7.pth`);
    const r = await exportTorchCheckpoint(st, { wrap: "state_dict_ema" });
    assert.equal(r.output, `${dir}/t2t_vit_7.pth`);
    assert.equal(r.verified, true);
    assert.equal(r.tensors, 111);
    assert.equal(r.archiveName, "t2t_vit_7");
    assert.equal(r.metadata.architecture, "t2t_vit_7");
    assert.equal(Deno.statSync(r.output).size, r.outputBytes);
    // read back through the converter: the same tensors, the architecture detected again
    const back = await convertCheckpoint(r.output, {
      output: `${dir}/again.safetensors`,
      describe: describeWeights,
    });
    assert.equal(back.weightsKey, "state_dict_ema");
    assert.equal(back.architecture.name, "t2t_vit_7");
    const again = (await readSafetensors(`${dir}/again.safetensors`)).tensors;
    assert.deepEqual([...again.keys()], [...src.keys()]);
    for (const [k, t] of src) assert.deepEqual(again.get(k)!.data, t.data, k);
    // refuses to overwrite; the CLI does the same job
    await assert.rejects(() => exportTorchCheckpoint(st), SafetensorsError);
    const c = await cli([st, "-o", `${dir}/cli.pth`, "-q"]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(
      c.stdout,
      /wrote .*cli\.pth: torch\.save zip, 111 tensors .* as a bare state dict; t2t_vit_7; .*verified bit for bit/,
    );
    // same bytes as the library's, but for the records' names (the file stem) and the key
    const lib = await exportTorchCheckpoint(st, { output: `${dir}/cli2.pth`, verify: false });
    assert.equal(lib.verified, false);
    const a = records(Deno.readFileSync(`${dir}/cli.pth`));
    const b = records(Deno.readFileSync(`${dir}/cli2.pth`));
    assert.deepEqual([...a.values()].map((x) => x.data), [...b.values()].map((x) => x.data));
    const bad = await cli([st, "-o", `${dir}/x.pth`, "--dtype", "f16"]);
    assert.equal(bad.code, 2);
    const bad2 = await cli([
      ref("checkpoints/t2t_vit_7.pth.tar"),
      "-o",
      `${dir}/x.safetensors`,
      "--wrap",
      "k",
    ]);
    assert.equal(bad2.code, 2);
    const listed = await cli([st, "--list"]);
    assert.equal(listed.code, 0);
    assert.match(listed.stdout, /safetensors file; 111 tensors; t2t_vit_7/);
    // a corrupt input is refused with one line and leaves nothing
    const broken = `${dir}/broken.safetensors`;
    Deno.writeFileSync(broken, Deno.readFileSync(st).subarray(0, 5000));
    const e = await cli([broken, "-o", `${dir}/broken.pth`]);
    assert.equal(e.code, 1);
    assert.equal(e.stderr.trim().split("\n").length, 1, e.stderr);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((x) => x.name).sort(),
      [
        "again.safetensors",
        "broken.safetensors",
        "cli.pth",
        "cli2.pth",
        "t2t_vit_7.pth",
        "t2t_vit_7.safetensors",
      ],
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("export: verification catches a changed tensor, a wrong layout and a wrong order", () => {
  const t: RawTensor = {
    dtype: "F32",
    shape: [4],
    data: new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer),
  };
  const tensors: TensorMap = new Map([["a", t], ["b", { ...t, data: t.data.slice() }]]);
  const dir = Deno.makeTempDirSync({ prefix: "t2t-export-" });
  try {
    const path = `${dir}/m.pth`;
    Deno.writeFileSync(path, serializeTorchCheckpoint(tensors, "m"));
    verifyTorchOutput(path, tensors, null);
    const other: TensorMap = new Map([["a", t], ["b", { ...t, data: new Uint8Array(16) }]]);
    assert.throws(
      () => verifyTorchOutput(path, other, null),
      (e: Error) =>
        e instanceof SafetensorsError && /bytes differ/.test(e.message) && /'b'|b/.test(e.message),
    );
    assert.throws(() => verifyTorchOutput(path, tensors, "state_dict_ema"), SafetensorsError);
    assert.throws(() => verifyTorchOutput(path, new Map([["b", t], ["a", t]]), null), SafetensorsError);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
