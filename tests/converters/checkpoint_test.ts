import assert from "node:assert/strict";
import { decodeBase64 } from "../support/base64.ts";
import { CheckpointError, UnsafePickleError } from "../../src/core/errors.ts";
import {
  type Checkpoint,
  openCheckpoint,
  parseCheckpoint,
  sniffFormat,
  walkTensors,
} from "../../converters/checkpoint.ts";
import { type PyDict, PyObject } from "../../converters/pickle.ts";
import { selectWeights } from "../../converters/weights.ts";
import { configKwargs, describeWeights, detectArchitecture } from "../../zoo/arch.ts";
import { convertToSafetensorsBytes, planConversion } from "../../converters/convert.ts";
import { configFromKwargs, MODEL_CONFIGS, type ModelName } from "../../zoo/configs.ts";
import { parseSafetensors, readSafetensors } from "../../converters/safetensors.ts";
import type { RawTensor, TensorMap } from "../../src/core/types.ts";
import {
  f32bytes,
  makeLegacyCheckpoint,
  makeZip,
  makeZipCheckpoint,
  Pickle,
  type TensorSpec,
  torchPickle,
} from "../support/checkpoint_builders.ts";
import { manifest, ref } from "../support/fixtures.ts";

const CK = (f: string) => ref(`checkpoints/${f}`);

function tensorsOf(ckpt: Checkpoint, key?: string): TensorMap {
  const sel = selectWeights(ckpt.root, { key, file: ckpt.file });
  const out: TensorMap = new Map();
  for (const [k, t] of sel.tensors) out.set(k, t.read(ckpt.file));
  return out;
}

function assertSameTensors(got: TensorMap, want: TensorMap, what: string) {
  assert.deepEqual([...got.keys()], [...want.keys()], `${what}: keys and order`);
  for (const [k, w] of want) {
    const g = got.get(k)!;
    assert.equal(g.dtype, w.dtype, `${what}: ${k} dtype`);
    assert.deepEqual(g.shape, w.shape, `${what}: ${k} shape`);
    assert.deepEqual(g.data, w.data, `${what}: ${k} bytes`);
  }
}

function f32(t: RawTensor): Float32Array {
  return new Float32Array(t.data.slice().buffer);
}

/**
 * The EMA copies were made by torch as `v + 1e-3` on float32 tensors: torch casts the Python scalar to float32
 * and adds in float32, i.e. fround(v + fround(1e-3)). (fround(v + 1e-3), adding the double, differs in about
 * 8% of the elements; checked against tiny-train.pth.tar.)
 */
function plusEma(t: RawTensor): RawTensor {
  const v = f32(t).map((x) => Math.fround(x + Math.fround(1e-3)));
  return { dtype: "F32", shape: t.shape, data: new Uint8Array(v.buffer) };
}

const expected = (await readSafetensors(CK("tiny-expected.safetensors"))).tensors;

function both(file: string): Checkpoint[] {
  return [parseCheckpoint(Deno.readFileSync(CK(file)), file), openCheckpoint(CK(file))];
}

Deno.test("checkpoint: formats are detected from bytes, records found under the file's stem", () => {
  const cases: [string, string, string | null][] = [
    ["t2t_vit_7.pth.tar", "zip", "t2t_vit_7.pth"],
    ["tiny-train.pth.tar", "zip", "tiny-train.pth"],
    ["tiny-train-legacy.pth.tar", "legacy", null],
    ["tiny-cifar.pth", "zip", "tiny-cifar"],
    ["tiny-bf16-legacy.pth", "legacy", null],
  ];
  for (const [f, format, prefix] of cases) {
    for (const c of both(f)) {
      assert.equal(c.format, format, f);
      assert.equal(c.recordPrefix, prefix, f);
      assert.equal(c.byteOrder, "little");
      c.close();
    }
  }
  assert.equal(
    sniffFormat(Deno.readFileSync(CK("tiny-expected.safetensors")).subarray(0, 512)),
    "safetensors",
  );
  assert.throws(
    () => parseCheckpoint(Deno.readFileSync(CK("tiny-expected.safetensors")), "x"),
    /already a safetensors/,
  );
  assert.throws(() => parseCheckpoint(new Uint8Array(0), "empty"), /empty/);
  assert.throws(
    () => parseCheckpoint(new TextEncoder().encode("hello world"), "txt"),
    /not a PyTorch checkpoint/,
  );
  const plain = new Pickle().proto(2).value(new Map([["a", 1]])).stop().bytesOut();
  assert.throws(() => parseCheckpoint(plain, "p"), /plain pickle/);
  const tar = new Uint8Array(1024);
  tar.set(new TextEncoder().encode("ustar"), 257);
  assert.throws(() => parseCheckpoint(tar, "t"), /tar-based/);
});

Deno.test("checkpoint: every tiny-* file gives exactly the expected tensors", () => {
  // bare state_dict, CIFAR DataParallel save, explicit state_dict of the training saves (zip and legacy)
  for (
    const [file, key] of [
      ["tiny-state-dict.pth", undefined],
      ["tiny-cifar.pth", undefined],
      ["tiny-train.pth.tar", "state_dict"],
      ["tiny-train-legacy.pth.tar", "state_dict"],
    ] as const
  ) {
    for (const c of both(file)) {
      assertSameTensors(tensorsOf(c, key), expected, `${file} (${c.source.inMemory ? "memory" : "file"})`);
      c.close();
    }
  }
  // EMA is the default choice, and holds state_dict + 1e-3
  const ema: TensorMap = new Map([...expected].map(([k, t]) => [k, plusEma(t)]));
  for (const file of ["tiny-train.pth.tar", "tiny-train-legacy.pth.tar"]) {
    for (const c of both(file)) {
      const sel = selectWeights(c.root, { file });
      assert.equal(sel.key, "state_dict_ema");
      assertSameTensors(tensorsOf(c), ema, file);
      const dropped = sel.dropped.map((d) => d.key);
      assert.deepEqual(dropped, [
        "epoch",
        "arch",
        "state_dict",
        "optimizer",
        "version",
        "args",
        "amp_scaler",
        "metric",
      ]);
      c.close();
    }
  }
  // CIFAR: "net" with "module." stripped; acc and epoch dropped
  const cifar = selectWeights(parseCheckpoint(Deno.readFileSync(CK("tiny-cifar.pth"))).root);
  assert.equal(cifar.key, "net");
  assert.equal(cifar.strippedPrefix, "module.");
  assert.deepEqual(cifar.dropped, [{ key: "acc", what: "float 98.3" }, { key: "epoch", what: "int 59" }]);
  assert.equal(selectWeights(parseCheckpoint(Deno.readFileSync(CK("tiny-state-dict.pth"))).root).key, null);
});

Deno.test("checkpoint: float16 and bfloat16 are kept, widened exactly, and narrowing matches torch", async () => {
  const half = await readSafetensors(CK("tiny-expected-fp16.safetensors"));
  const bf = await readSafetensors(CK("tiny-expected-bf16.safetensors"));
  for (
    const [file, dtype, wide] of [["tiny-fp16.pth", "F16", half], [
      "tiny-bf16-legacy.pth",
      "BF16",
      bf,
    ]] as const
  ) {
    for (const c of both(file)) {
      const kept = tensorsOf(c);
      for (const t of kept.values()) assert.equal(t.dtype, dtype);
      // keep: the raw 16-bit values, byte for byte what torch stored
      const keepOut = parseSafetensors(convertToSafetensorsBytes(c).bytes);
      assertSameTensors(keepOut.tensors, kept, `${file} keep`);
      // f32: widened exactly to the reference's float32 values
      const wideOut = parseSafetensors(convertToSafetensorsBytes(c, { dtype: "f32" }).bytes);
      assertSameTensors(wideOut.tensors, wide.tensors, `${file} f32`);
      // narrowing the float32 originals rounds to nearest even, exactly as torch's .half()/.bfloat16() did
      const sd = parseCheckpoint(Deno.readFileSync(CK("tiny-state-dict.pth")), "sd");
      const narrow = parseSafetensors(
        convertToSafetensorsBytes(sd, { dtype: dtype === "F16" ? "f16" : "bf16" }).bytes,
      );
      assertSameTensors(narrow.tensors, kept, `tiny-state-dict narrowed to ${dtype}`);
      c.close();
    }
  }
});

Deno.test("checkpoint: strided, offset and shared-storage views are materialised contiguous", async () => {
  const views = (await readSafetensors(CK("tiny-expected-views.safetensors"))).tensors;
  for (const c of both("tiny-views.pth")) {
    const got = tensorsOf(c);
    const sel = selectWeights(c.root);
    const head = sel.tensors.get("head.weight")!;
    assert.ok(!head.isContiguous, "head.weight is a column-major view");
    assert.equal(sel.tensors.get("extra.shared_a")!.storageOffset, 6);
    assert.equal(sel.tensors.get("extra.shared_a")!.storage, sel.tensors.get("extra.shared_b")!.storage);
    for (const [k, want] of views) assertSameTensors(new Map([[k, got.get(k)!]]), new Map([[k, want]]), k);
    for (const [k, want] of expected) {
      if (!views.has(k)) assertSameTensors(new Map([[k, got.get(k)!]]), new Map([[k, want]]), k);
    }
    c.close();
  }
});

Deno.test("checkpoint: t2t_vit_7.pth.tar is t2t_vit_7, EMA picked, 111 tensors = state_dict + 1e-3", () => {
  const m = manifest()["t2t_vit_7"];
  for (const c of both("t2t_vit_7.pth.tar")) {
    const plan = planConversion(c, { describe: describeWeights });
    assert.equal(plan.weightsKey, "state_dict_ema");
    assert.equal(plan.tensors.length, 111);
    assert.equal(plan.architecture.name, "t2t_vit_7");
    assert.equal(plan.architecture.numHeads, 4);
    assert.deepEqual(plan.tensors.map((t) => [t.name, t.shape]), m.state_dict);
    assert.deepEqual(plan.metadata, {
      format: "pt",
      architecture: "t2t_vit_7",
      source: "t2t_vit_7.pth.tar",
      weights_key: "state_dict_ema",
      img_size: "224",
      num_classes: "1000",
      config: JSON.stringify({
        img_size: 224,
        tokens_type: "performer",
        embed_dim: 256,
        depth: 7,
        num_heads: 4,
        mlp_ratio: 2,
        token_dim: 64,
        num_classes: 1000,
        in_chans: 3,
      }),
    });
    const sd = tensorsOf(c, "state_dict");
    const ema = tensorsOf(c);
    for (const [k, t] of sd) assert.deepEqual(ema.get(k)!.data, plusEma(t).data, k);
    const root = c.root as PyDict;
    assert.ok(root.get("args") instanceof PyObject);
    assert.equal((root.get("args") as PyObject).attrs.get("model"), "t2t_vit_7");
    assert.equal(root.get("metric"), 71.7);
    c.close();
  }
});

// torch 1.13.1 (Debian python3-torch) saving every dtype, a transposed int64 view, a 0-d and an empty tensor,
// an nn.Parameter, a storage offset, numpy scalars/arrays, a torch.device and a torch.Size:
//   sd = OrderedDict(f64=[1.5, -2.25], f32=[[0.1, -0.2, 3e38]], f16=[0.1, 65504, -6e-8], bf16=[0.1, -3e38, 1],
//     i64=(arange(12).reshape(3, 4) * 2**40 - 5).t(), i32=[-7, 2**31-1], i16=[-300, 300], i8=[-128, 127],
//     u8=[0, 255], bool=[True, False, True], scalar=tensor(2.5), empty=zeros(0, 3),
//     param=nn.Parameter([1., 2.]), offset=arange(10.)[3:7])
//   torch.save({"state_dict": sd, "metric": np.float64(71.7), "count": np.int64(3),
//     "arr": np.arange(3, dtype=np.float32), "device": torch.device("cuda", 0), "size": torch.Size([2, 3])}, f,
//     pickle_protocol=4)                       (TORCH_ZIP_P4)
//   ... and again with _use_new_zipfile_serialization=False (TORCH_LEGACY)
const TORCH_ZIP_P4 =
  "UEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAAQABIAYXJjaGl2ZS9kYXRhLnBrbEZCDgBaWlpaWlpaWlpaWlpaWoAElR0FAAAAAAAA" +
  "fZQojApzdGF0ZV9kaWN0lIwLY29sbGVjdGlvbnOUjAtPcmRlcmVkRGljdJSTlClSlCiMA2Y2NJSMDHRvcmNoLl91dGlsc5SMEl9y" +
  "ZWJ1aWxkX3RlbnNvcl92MpSTlCgojAdzdG9yYWdllIwFdG9yY2iUjA1Eb3VibGVTdG9yYWdllJOUjAEwlIwDY3B1lEsCdJRRSwBL" +
  "AoWUSwGFlIloBClSlHSUUpSMA2YzMpRoCSgoaApoC4wMRmxvYXRTdG9yYWdllJOUjAExlGgPSwN0lFFLAEsBSwOGlEsDSwGGlIlo" +
  "BClSlHSUUpSMA2YxNpRoCSgoaApoC4wLSGFsZlN0b3JhZ2WUk5SMATKUaA9LA3SUUUsASwOFlEsBhZSJaAQpUpR0lFKUjARiZjE2" +
  "lGgJKChoCmgLjA9CRmxvYXQxNlN0b3JhZ2WUk5SMATOUaA9LA3SUUUsASwOFlEsBhZSJaAQpUpR0lFKUjANpNjSUaAkoKGgKaAuM" +
  "C0xvbmdTdG9yYWdllJOUjAE0lGgPSwx0lFFLAEsESwOGlEsBSwSGlIloBClSlHSUUpSMA2kzMpRoCSgoaApoC4wKSW50U3RvcmFn" +
  "ZZSTlIwBNZRoD0sCdJRRSwBLAoWUSwGFlIloBClSlHSUUpSMA2kxNpRoCSgoaApoC4wMU2hvcnRTdG9yYWdllJOUjAE2lGgPSwJ0" +
  "lFFLAEsChZRLAYWUiWgEKVKUdJRSlIwCaTiUaAkoKGgKaAuMC0NoYXJTdG9yYWdllJOUjAE3lGgPSwJ0lFFLAEsChZRLAYWUiWgE" +
  "KVKUdJRSlIwCdTiUaAkoKGgKaAuMC0J5dGVTdG9yYWdllJOUjAE4lGgPSwJ0lFFLAEsChZRLAYWUiWgEKVKUdJRSlIwEYm9vbJRo" +
  "CSgoaApoC4wLQm9vbFN0b3JhZ2WUk5SMATmUaA9LA3SUUUsASwOFlEsBhZSJaAQpUpR0lFKUjAZzY2FsYXKUaAkoKGgKaBiMAjEw" +
  "lGgPSwF0lFFLACkpiWgEKVKUdJRSlIwFZW1wdHmUaAkoKGgKaBiMAjExlGgPSwB0lFFLAEsASwOGlEsDSwGGlIloBClSlHSUUpSM" +
  "BXBhcmFtlGgHjBJfcmVidWlsZF9wYXJhbWV0ZXKUk5RoCSgoaApoGIwCMTKUaA9LAnSUUUsASwKFlEsBhZSJaAQpUpR0lFKUiGgE" +
  "KVKUh5RSlIwGb2Zmc2V0lGgJKChoCmgYjAIxM5RoD0sKdJRRSwNLBIWUSwGFlIloBClSlHSUUpR1jAZtZXRyaWOUjBVudW1weS5j" +
  "b3JlLm11bHRpYXJyYXmUjAZzY2FsYXKUk5SMBW51bXB5lIwFZHR5cGWUk5SMAmY4lImIh5RSlChLA4wBPJROTk5K/////0r/////" +
  "SwB0lGJDCM3MzMzM7FFAlIaUUpSMBWNvdW50lGiWaJmMAmk4lImIh5RSlChLA2idTk5OSv////9K/////0sAdJRiQwgDAAAAAAAA" +
  "AJSGlFKUjANhcnKUaJSMDF9yZWNvbnN0cnVjdJSTlGiXjAduZGFycmF5lJOUSwCFlEMBYpSHlFKUKEsBSwOFlGiZjAJmNJSJiIeU" +
  "UpQoSwNonU5OTkr/////Sv////9LAHSUYolDDAAAAAAAAIA/AAAAQJR0lGKMBmRldmljZZRoC4wGZGV2aWNllJOUjARjdWRhlEsA" +
  "hpRSlIwEc2l6ZZRoC4wEU2l6ZZSTlEsCSwOGlIWUUpR1LlBLBwh4KLN3KAUAACgFAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAA" +
  "AA4AHABhcmNoaXZlL2RhdGEvMEZCGABaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWloAAAAAAAD4PwAAAAAAAALAUEsHCAko+rcQAAAA" +
  "EAAAAFBLAwQAAAgIAAAAAAAAAAAAAAAAAAAAAAAADgA0AGFyY2hpdmUvZGF0YS8xRkIwAFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWs3MzD3NzEy+5rFhf1BLBwh/DzcVDAAAAAwAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAA" +
  "AAAAAA8ANwBhcmNoaXZlL2RhdGEvMTBGQjMAWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaAAAgQFBLBwguuhzCBAAAAAQAAABQSwMEAAAACAAAAAAAAAAAAAAAAAAAAAAAAA8APwBhcmNoaXZlL2RhdGEvMTFGQjsAWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpQSwMEAAAICAAAAAAAAAAAAAAA" +
  "AAAAAAAAAA8AEwBhcmNoaXZlL2RhdGEvMTJGQg8AWlpaWlpaWlpaWlpaWlpaAACAPwAAAEBQSwcIdqU/LggAAAAIAAAAUEsDBAAA" +
  "CAgAAAAAAAAAAAAAAAAAAAAAAAAPADsAYXJjaGl2ZS9kYXRhLzEzRkI3AFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWloAAAAAAACAPwAAAEAAAEBAAACAQAAAoEAAAMBAAADgQAAAAEEAABBBUEsHCGnnpeYoAAAA" +
  "KAAAAFBLAwQAAAgIAAAAAAAAAAAAAAAAAAAAAAAADgAcAGFyY2hpdmUvZGF0YS8yRkIYAFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WmYu/3sBgFBLBwig75xjBgAAAAYAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAA4APgBhcmNoaXZlL2RhdGEvM0ZCOgBaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpazT1i/4A/UEsHCO1uV+cGAAAABgAA" +
  "AFBLAwQAAAgIAAAAAAAAAAAAAAAAAAAAAAAADgA+AGFyY2hpdmUvZGF0YS80RkI6AFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlr7//////////v/////AAAA+/////8BAAD7/////wIAAPv/////AwAA+///" +
  "//8EAAD7/////wUAAPv/////BgAA+/////8HAAD7/////wgAAPv/////CQAA+/////8KAABQSwcIGvqK12AAAABgAAAAUEsDBAAA" +
  "CAgAAAAAAAAAAAAAAAAAAAAAAAAOACQAYXJjaGl2ZS9kYXRhLzVGQiAAWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlr5" +
  "////////f1BLBwi7VZMKCAAAAAgAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAA4APABhcmNoaXZlL2RhdGEvNkZCOABaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWtT+LAFQSwcIMPQeeQQAAAAEAAAAUEsD" +
  "BAAACAgAAAAAAAAAAAAAAAAAAAAAAAAOAEAAYXJjaGl2ZS9kYXRhLzdGQjwAWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpagH9QSwcIGebgugIAAAACAAAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAAO" +
  "AEIAYXJjaGl2ZS9kYXRhLzhGQj4AWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaWlpaWloA/1BLBwhy/dtsAgAAAAIAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAA4AQgBhcmNoaXZlL2RhdGEvOUZCPgBa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWgEAAVBLBwizg4SJAwAA" +
  "AAMAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAA8AQABhcmNoaXZlL3ZlcnNpb25GQjwAWlpaWlpaWlpaWlpaWlpaWlpaWlpa" +
  "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaMwpQSwcI0Z5nVQIAAAACAAAAUEsBAgAAAAAICAAAAAAAAHgo" +
  "s3coBQAAKAUAABAAAAAAAAAAAAAAAAAAAAAAAGFyY2hpdmUvZGF0YS5wa2xQSwECAAAAAAgIAAAAAAAACSj6txAAAAAQAAAADgAA" +
  "AAAAAAAAAAAAAAB4BQAAYXJjaGl2ZS9kYXRhLzBQSwECAAAAAAgIAAAAAAAAfw83FQwAAAAMAAAADgAAAAAAAAAAAAAAAADgBQAA" +
  "YXJjaGl2ZS9kYXRhLzFQSwECAAAAAAgIAAAAAAAALrocwgQAAAAEAAAADwAAAAAAAAAAAAAAAABcBgAAYXJjaGl2ZS9kYXRhLzEw" +
  "UEsBAgAAAAAACAAAAAAAAAAAAAAAAAAAAAAAAA8AAAAAAAAAAAAAAAAA1AYAAGFyY2hpdmUvZGF0YS8xMVBLAQIAAAAACAgAAAAA" +
  "AAB2pT8uCAAAAAgAAAAPAAAAAAAAAAAAAAAAAEAHAABhcmNoaXZlL2RhdGEvMTJQSwECAAAAAAgIAAAAAAAAaeel5igAAAAoAAAA" +
  "DwAAAAAAAAAAAAAAAACYBwAAYXJjaGl2ZS9kYXRhLzEzUEsBAgAAAAAICAAAAAAAAKDvnGMGAAAABgAAAA4AAAAAAAAAAAAAAAAA" +
  "OAgAAGFyY2hpdmUvZGF0YS8yUEsBAgAAAAAICAAAAAAAAO1uV+cGAAAABgAAAA4AAAAAAAAAAAAAAAAAlggAAGFyY2hpdmUvZGF0" +
  "YS8zUEsBAgAAAAAICAAAAAAAABr6itdgAAAAYAAAAA4AAAAAAAAAAAAAAAAAFgkAAGFyY2hpdmUvZGF0YS80UEsBAgAAAAAICAAA" +
  "AAAAALtVkwoIAAAACAAAAA4AAAAAAAAAAAAAAAAA8AkAAGFyY2hpdmUvZGF0YS81UEsBAgAAAAAICAAAAAAAADD0HnkEAAAABAAA" +
  "AA4AAAAAAAAAAAAAAAAAWAoAAGFyY2hpdmUvZGF0YS82UEsBAgAAAAAICAAAAAAAABnm4LoCAAAAAgAAAA4AAAAAAAAAAAAAAAAA" +
  "1AoAAGFyY2hpdmUvZGF0YS83UEsBAgAAAAAICAAAAAAAAHL922wCAAAAAgAAAA4AAAAAAAAAAAAAAAAAUgsAAGFyY2hpdmUvZGF0" +
  "YS84UEsBAgAAAAAICAAAAAAAALODhIkDAAAAAwAAAA4AAAAAAAAAAAAAAAAA0gsAAGFyY2hpdmUvZGF0YS85UEsBAgAAAAAICAAA" +
  "AAAAANGeZ1UCAAAAAgAAAA8AAAAAAAAAAAAAAAAAUwwAAGFyY2hpdmUvdmVyc2lvblBLBgYsAAAAAAAAAB4DLQAAAAAAAAAAABAA" +
  "AAAAAAAAEAAAAAAAAADHAwAAAAAAANIMAAAAAAAAUEsGBwAAAACZEAAAAAAAAAEAAABQSwUGAAAAABAAEADHAwAA0gwAAAAA" +
  "";
const TORCH_LEGACY =
  "gAKKCmz8nEb5IGqoUBkugAJN6QMugAJ9cQAoWBAAAABwcm90b2NvbF92ZXJzaW9ucQFN6QNYDQAAAGxpdHRsZV9lbmRpYW5xAohY" +
  "CgAAAHR5cGVfc2l6ZXNxA31xBChYBQAAAHNob3J0cQVLAlgDAAAAaW50cQZLBFgEAAAAbG9uZ3EHSwR1dS6AAn1xAChYCgAAAHN0" +
  "YXRlX2RpY3RxAWNjb2xsZWN0aW9ucwpPcmRlcmVkRGljdApxAilScQMoWAMAAABmNjRxBGN0b3JjaC5fdXRpbHMKX3JlYnVpbGRf" +
  "dGVuc29yX3YyCnEFKChYBwAAAHN0b3JhZ2VxBmN0b3JjaApEb3VibGVTdG9yYWdlCnEHWAkAAAA1NjAwNTU3NzZxCFgDAAAAY3B1" +
  "cQlLAk50cQpRSwBLAoVxC0sBhXEMiWgCKVJxDXRxDlJxD1gDAAAAZjMycRBoBSgoaAZjdG9yY2gKRmxvYXRTdG9yYWdlCnERWAkA" +
  "AAA1ODQxNDQ0NjRxEmgJSwNOdHETUUsASwFLA4ZxFEsDSwGGcRWJaAIpUnEWdHEXUnEYWAMAAABmMTZxGWgFKChoBmN0b3JjaApI" +
  "YWxmU3RvcmFnZQpxGlgJAAAANTYwMTQ4ODgwcRtoCUsDTnRxHFFLAEsDhXEdSwGFcR6JaAIpUnEfdHEgUnEhWAQAAABiZjE2cSJo" +
  "BSgoaAZjdG9yY2gKQkZsb2F0MTZTdG9yYWdlCnEjWAkAAAA1NjAxNDk1MzZxJGgJSwNOdHElUUsASwOFcSZLAYVxJ4loAilScSh0" +
  "cSlScSpYAwAAAGk2NHEraAUoKGgGY3RvcmNoCkxvbmdTdG9yYWdlCnEsWAkAAAA1NjAwNTUyNDhxLWgJSwxOdHEuUUsASwRLA4Zx" +
  "L0sBSwSGcTCJaAIpUnExdHEyUnEzWAMAAABpMzJxNGgFKChoBmN0b3JjaApJbnRTdG9yYWdlCnE1WAkAAAA1NjAxNTA0MDBxNmgJ" +
  "SwJOdHE3UUsASwKFcThLAYVxOYloAilScTp0cTtScTxYAwAAAGkxNnE9aAUoKGgGY3RvcmNoClNob3J0U3RvcmFnZQpxPlgJAAAA" +
  "NTYwMTUxMDU2cT9oCUsCTnRxQFFLAEsChXFBSwGFcUKJaAIpUnFDdHFEUnFFWAIAAABpOHFGaAUoKGgGY3RvcmNoCkNoYXJTdG9y" +
  "YWdlCnFHWAkAAAA1NjAxNTE3NjBxSGgJSwJOdHFJUUsASwKFcUpLAYVxS4loAilScUx0cU1ScU5YAgAAAHU4cU9oBSgoaAZjdG9y" +
  "Y2gKQnl0ZVN0b3JhZ2UKcVBYCQAAADU2MDE1MjQ2NHFRaAlLAk50cVJRSwBLAoVxU0sBhXFUiWgCKVJxVXRxVlJxV1gEAAAAYm9v" +
  "bHFYaAUoKGgGY3RvcmNoCkJvb2xTdG9yYWdlCnFZWAkAAAA1NjAxNTMxNjhxWmgJSwNOdHFbUUsASwOFcVxLAYVxXYloAilScV50" +
  "cV9ScWBYBgAAAHNjYWxhcnFhaAUoKGgGaBFYCQAAADU2MDE1Mzg3MnFiaAlLAU50cWNRSwApKYloAilScWR0cWVScWZYBQAAAGVt" +
  "cHR5cWdoBSgoaAZoEVgJAAAANTYwMTUzNzYwcWhoCUsATnRxaVFLAEsASwOGcWpLA0sBhnFriWgCKVJxbHRxbVJxblgFAAAAcGFy" +
  "YW1xb2N0b3JjaC5fdXRpbHMKX3JlYnVpbGRfcGFyYW1ldGVyCnFwaAUoKGgGaBFYCQAAADU2MDE1MzA1NnFxaAlLAk50cXJRSwBL" +
  "AoVxc0sBhXF0iWgCKVJxdXRxdlJxd4hoAilScXiHcXlScXpYBgAAAG9mZnNldHF7aAUoKGgGaBFYCQAAADU2MDE0ODc2OHF8aAlL" +
  "Ck50cX1RSwNLBIVxfksBhXF/iWgCKVJxgHRxgVJxgnVYBgAAAG1ldHJpY3GDY251bXB5LmNvcmUubXVsdGlhcnJheQpzY2FsYXIK" +
  "cYRjbnVtcHkKZHR5cGUKcYVYAgAAAGY4cYaJiIdxh1JxiChLA1gBAAAAPHGJTk5OSv////9K/////0sAdHGKYmNfY29kZWNzCmVu" +
  "Y29kZQpxi1gOAAAAw43DjMOMw4zDjMOsUUBxjFgGAAAAbGF0aW4xcY2GcY5ScY+GcZBScZFYBQAAAGNvdW50cZJohGiFWAIAAABp" +
  "OHGTiYiHcZRScZUoSwNoiU5OTkr/////Sv////9LAHRxlmJoi1gIAAAAAwAAAAAAAABxl2iNhnGYUnGZhnGaUnGbWAMAAABhcnJx" +
  "nGNudW1weS5jb3JlLm11bHRpYXJyYXkKX3JlY29uc3RydWN0CnGdY251bXB5Cm5kYXJyYXkKcZ5LAIVxn2iLWAEAAABicaBojYZx" +
  "oVJxoodxo1JxpChLAUsDhXGlaIVYAgAAAGY0caaJiIdxp1JxqChLA2iJTk5OSv////9K/////0sAdHGpYoloi1gNAAAAAAAAAAAA" +
  "woA/AAAAQHGqaI2GcatScax0ca1iWAYAAABkZXZpY2VxrmN0b3JjaApkZXZpY2UKca9YBAAAAGN1ZGFxsEsAhnGxUnGyWAQAAABz" +
  "aXplcbNjdG9yY2gKU2l6ZQpxtEsCSwOGcbWFcbZScbd1LoACXXEAKFgJAAAANTYwMDU1MjQ4cQFYCQAAADU2MDA1NTc3NnECWAkA" +
  "AAA1NjAxNDg3NjhxA1gJAAAANTYwMTQ4ODgwcQRYCQAAADU2MDE0OTUzNnEFWAkAAAA1NjAxNTA0MDBxBlgJAAAANTYwMTUxMDU2" +
  "cQdYCQAAADU2MDE1MTc2MHEIWAkAAAA1NjAxNTI0NjRxCVgJAAAANTYwMTUzMDU2cQpYCQAAADU2MDE1MzE2OHELWAkAAAA1NjAx" +
  "NTM3NjBxDFgJAAAANTYwMTUzODcycQ1YCQAAADU4NDE0NDQ2NHEOZS4MAAAAAAAAAPv/////////+/////8AAAD7/////wEAAPv/" +
  "////AgAA+/////8DAAD7/////wQAAPv/////BQAA+/////8GAAD7/////wcAAPv/////CAAA+/////8JAAD7/////woAAAIAAAAA" +
  "AAAAAAAAAAAA+D8AAAAAAAACwAoAAAAAAAAAAAAAAAAAgD8AAABAAABAQAAAgEAAAKBAAADAQAAA4EAAAABBAAAQQQMAAAAAAAAA" +
  "Zi7/ewGAAwAAAAAAAADNPWL/gD8CAAAAAAAAAPn///////9/AgAAAAAAAADU/iwBAgAAAAAAAACAfwIAAAAAAAAAAP8CAAAAAAAA" +
  "AAAAgD8AAABAAwAAAAAAAAABAAEAAAAAAAAAAAEAAAAAAAAAAAAgQAMAAAAAAAAAzczMPc3MTL7msWF/" +
  "";

// torch.save({"state_dict": OrderedDict(w=[[1., 2.], [3., 4.]], b=tensor([-1]))}, f,
//            _use_new_zipfile_serialization=False, pickle_protocol=4): every pickle starts with a FRAME
const TORCH_LEGACY_P4 =
  "gASVDQAAAAAAAACKCmz8nEb5IGqoUBkugASVBAAAAAAAAABN6QMugASVWAAAAAAAAAB9lCiMEHByb3RvY29sX3ZlcnNpb26UTekDjA1saXR0bGVfZW5kaWFu" +
  "lIiMCnR5cGVfc2l6ZXOUfZQojAVzaG9ydJRLAowDaW50lEsEjARsb25nlEsEdXUugASV9gAAAAAAAAB9lIwKc3RhdGVfZGljdJSMC2NvbGxlY3Rpb25zlIwLT3Jk" +
  "ZXJlZERpY3SUk5QpUpQojAF3lIwMdG9yY2guX3V0aWxzlIwSX3JlYnVpbGRfdGVuc29yX3YylJOUKCiMB3N0b3JhZ2WUjAV0b3JjaJSMDEZsb2F0U3RvcmFnZZST" +
  "lIwINDYxOTAxNjCUjANjcHWUSwROdJRRSwBLAksChpRLAksBhpSJaAQpUpR0lFKUjAFilGgJKChoCmgLjAtMb25nU3RvcmFnZZSTlIwJMTA4MDg4MjA4lGgPSwFO" +
  "dJRRSwBLAYWUSwGFlIloBClSlHSUUpR1cy6ABJUcAAAAAAAAAF2UKIwJMTA4MDg4MjA4lIwINDYxOTAxNjCUZS4BAAAAAAAAAP//////////BAAAAAAAAAAAAIA/" +
  "AAAAQAAAQEAAAIBA";

Deno.test("checkpoint: a legacy file pickled with protocol 4 (framed) is recognised", () => {
  const c = parseCheckpoint(decodeBase64(TORCH_LEGACY_P4), "p4-legacy.pth");
  assert.equal(c.format, "legacy");
  assert.equal(c.protocol, 4);
  const t = tensorsOf(c);
  assert.deepEqual([...f32(t.get("w")!)], [1, 2, 3, 4]);
  assert.deepEqual([...new BigInt64Array(t.get("b")!.data.slice().buffer)], [-1n]);
});

Deno.test("checkpoint: every dtype torch saves, views, 0-d, empty, Parameter, numpy and device values", () => {
  for (const [what, b64] of [["zip, protocol 4", TORCH_ZIP_P4], ["legacy", TORCH_LEGACY]]) {
    const c = parseCheckpoint(decodeBase64(b64), what);
    const t = tensorsOf(c);
    const view = <T>(k: string, C: new (b: ArrayBuffer) => T) => new C(t.get(k)!.data.slice().buffer);
    assert.deepEqual([...view("f64", Float64Array)], [1.5, -2.25]);
    assert.deepEqual([...view("f32", Float32Array)], [0.1, -0.2, 3e38].map(Math.fround));
    assert.deepEqual(t.get("f32")!.shape, [1, 3]);
    assert.deepEqual([...view("f16", Int16Array)], [11878, 31743, -32767]);
    assert.deepEqual([...view("bf16", Int16Array)], [15821, -158, 16256]);
    const i64 = [...view("i64", BigInt64Array)].map(Number);
    assert.deepEqual(i64, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11].map((i) => i * 2 ** 40 - 5));
    assert.deepEqual(t.get("i64")!.shape, [4, 3]);
    assert.deepEqual([...view("i32", Int32Array)], [-7, 2 ** 31 - 1]);
    assert.deepEqual([...view("i16", Int16Array)], [-300, 300]);
    assert.deepEqual([...view("i8", Int8Array)], [-128, 127]);
    assert.deepEqual([...t.get("u8")!.data], [0, 255]);
    assert.deepEqual([...t.get("bool")!.data], [1, 0, 1]);
    assert.deepEqual(["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"], [
      ...["f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool"].map((k) => t.get(k)!.dtype),
    ]);
    assert.deepEqual(t.get("scalar")!.shape, []);
    assert.deepEqual([...view("scalar", Float32Array)], [2.5]);
    assert.deepEqual(t.get("empty")!.shape, [0, 3]);
    assert.equal(t.get("empty")!.data.length, 0);
    assert.deepEqual([...view("param", Float32Array)], [1, 2]);
    assert.deepEqual([...view("offset", Float32Array)], [3, 4, 5, 6]);
    const sel = selectWeights(c.root);
    assert.equal(sel.tensors.get("param")!.requiresGrad, true);
    const root = c.root as PyDict;
    assert.equal((root.get("metric") as PyObject).value, 71.7);
    assert.equal((root.get("count") as PyObject).value, 3);
    assert.equal((root.get("arr") as PyObject).pyClass, "numpy.ndarray");
    assert.equal((root.get("device") as PyObject).value, "cuda:0");
    assert.deepEqual(root.get("size"), [2, 3]);
    assert.deepEqual(sel.dropped.map((d) => d.key), ["metric", "count", "arr", "device", "size"]);
    // the converted file round-trips through the strict reader
    const out = parseSafetensors(convertToSafetensorsBytes(c).bytes);
    assertSameTensors(out.tensors, t, what);
  }
});

Deno.test("checkpoint: architecture detection on every manifest variant", () => {
  const m = manifest();
  for (const [entry, e] of Object.entries(m)) {
    const shapes = new Map(e.state_dict.map(([k, s]) => [k, { shape: s }]));
    const info = detectArchitecture(shapes);
    const name = entry.split("@")[0];
    if (name === "t2t_vit_14_resnext") {
      // identical weights to t2t_vit_14 (heads differ): ambiguous without a hint, resolved by one
      assert.deepEqual(info.candidates, ["t2t_vit_14", "t2t_vit_14_resnext"]);
      assert.equal(info.name, "t2t_vit_14");
      assert.equal(detectArchitecture(shapes, { hints: ["81.5_T2T_ViT_14_resnext.pth.tar"] }).name, name);
      assert.equal(detectArchitecture(shapes, { hints: [null, "t2t_vit_14_resnext"] }).numHeads, 32);
    } else {
      assert.equal(info.name, name, entry);
      assert.equal(detectArchitecture(shapes, { hints: ["81.5_T2T_ViT_14.pth.tar"] }).name, name, entry);
    }
    assert.equal(info.imgSize, e.img_size, entry);
    assert.equal(info.numClasses, 1000, entry);
    assert.equal(info.tokenDim, 64, entry);
    assert.equal(info.inChans, 3, entry);
    assert.equal(info.tokensType, name.startsWith("t2t_vit_t_") ? "transformer" : "performer", entry);
  }
  const dense = detectArchitecture(new Map(m["t2t_vit_dense"].state_dict.map(([k, s]) => [k, { shape: s }])));
  assert.deepEqual(dense.blockConfig, [3, 6, 6, 4]);
  assert.equal(dense.embedDim, 128);
  // a custom configuration: the tiny model (embed 32, depth 2, token_dim 16, 10 classes, 32 px)
  const tiny = detectArchitecture(new Map([...expected].map(([k, t]) => [k, { shape: t.shape }])));
  assert.equal(tiny.name, "custom");
  assert.deepEqual(
    [
      tiny.blockType,
      tiny.tokensType,
      tiny.embedDim,
      tiny.depth,
      tiny.mlpRatio,
      tiny.tokenDim,
      tiny.numClasses,
      tiny.imgSize,
    ],
    ["vit", "performer", 32, 2, 2, 16, 10, 32],
  );
  assert.equal(tiny.numHeads, null);
  // fine-tuned head, other image size, no head at all
  const sd = m["t2t_vit_14"].state_dict.map(([k, s]): [string, { shape: number[] }] => [
    k,
    {
      shape: k === "head.weight"
        ? [10, 384]
        : k === "head.bias"
        ? [10]
        : k === "pos_embed"
        ? [1, 101, 384]
        : s,
    },
  ]);
  const ft = detectArchitecture(new Map(sd));
  assert.deepEqual([ft.name, ft.numClasses, ft.imgSize], ["t2t_vit_14", 10, 160]);
  const headless = detectArchitecture(new Map(sd.filter(([k]) => !k.startsWith("head."))));
  assert.equal(headless.numClasses, 0);
  assert.equal(detectArchitecture(new Map([["fc.weight", { shape: [2, 2] }]])).name, "unknown");
});

Deno.test("checkpoint: the config metadata builds exactly the zoo's configuration of each variant", () => {
  for (const [entry, e] of Object.entries(manifest())) {
    const name = entry.split("@")[0] as ModelName;
    const shapes = new Map(e.state_dict.map(([k, s]) => [k, { shape: s }]));
    const kwargs = configKwargs(detectArchitecture(shapes, { hints: [name] }));
    const got = configFromKwargs(kwargs);
    const want = { ...MODEL_CONFIGS[name], imgSize: e.img_size };
    assert.deepEqual(got, want, entry);
  }
});

Deno.test("checkpoint: weight selection: --key, nested keys, errors", () => {
  const c = parseCheckpoint(Deno.readFileSync(CK("tiny-train.pth.tar")), "t");
  assert.equal(selectWeights(c.root, { key: "state_dict" }).key, "state_dict");
  assert.throws(
    () => selectWeights(c.root, { key: "nope", file: "t" }),
    /no key 'nope'; top-level keys: epoch/,
  );
  assert.throws(() => selectWeights(c.root, { key: "args" }), /argparse.Namespace, not a dict of tensors/);
  assert.throws(() => selectWeights(c.root, { key: "epoch" }), /int 12, not a dict of tensors/);
  // optimizer/state/0 is a dict of tensors reachable by path
  const nested = selectWeights(c.root, { key: "optimizer/state/0" });
  assert.deepEqual([...nested.tensors.keys()], ["step", "exp_avg", "exp_avg_sq"]);
  const noWeights = new Pickle().proto(2).value(new Map<string, unknown>([["epoch", 3], ["lr", 0.1]])).stop()
    .bytesOut();
  assert.throws(
    () => selectWeights(parseCheckpoint(makeZipCheckpoint(noWeights, {}), "nw").root, { file: "nw" }),
    /no weights found.*top-level keys: epoch, lr/,
  );
  // module. collisions are refused rather than silently overwritten
  const spec = (key: string): TensorSpec => ({ key, storage: "FloatStorage", numel: 1, shape: [1] });
  const dup = makeZipCheckpoint(torchPickle([["module.w", spec("0")], ["w", spec("1")]]), {
    "0": f32bytes([1]),
    "1": f32bytes([2]),
  });
  assert.throws(() => selectWeights(parseCheckpoint(dup, "dup").root), /two tensors map to 'w'/);
});

function zipWith(tensors: [string, TensorSpec][], storages: Record<string, Uint8Array>, opts = {}) {
  return makeZipCheckpoint(torchPickle(tensors), storages, opts);
}

function readAll(bytes: Uint8Array, file = "built.pth"): TensorMap {
  return tensorsOf(parseCheckpoint(bytes, file));
}

Deno.test("checkpoint: built zip checkpoints: prefixes, byteorder, and every broken tensor/storage is caught", () => {
  const w: TensorSpec = { key: "0", storage: "FloatStorage", numel: 4, shape: [2, 2] };
  const data = { "0": f32bytes([1, 2, 3, 4]) };
  // any record folder name works; ZIP32 and ZIP64
  for (const prefix of ["archive", "my model.pth", "x"]) {
    for (const zip64 of [true, false]) {
      const t = readAll(zipWith([["w", w]], data, { prefix, zip64 }));
      assert.deepEqual([...f32(t.get("w")!)], [1, 2, 3, 4]);
    }
  }
  // big-endian data is swapped; a nonsense byteorder is refused
  const be = new Uint8Array(16);
  new DataView(be.buffer).setFloat32(0, 1.5, false);
  new DataView(be.buffer).setFloat32(12, -2, false);
  const swapped = readAll(zipWith([["w", w]], { "0": be }, { byteorder: "big" }));
  assert.deepEqual([...f32(swapped.get("w")!)], [1.5, 0, 0, -2]);
  assert.throws(() => readAll(zipWith([["w", w]], data, { byteorder: "middle" })), /byteorder record/);

  const broken: [string, Uint8Array, RegExp][] = [
    ["missing storage record", zipWith([["w", w]], {}), /missing storage record 'archive\/data\/0'/],
    [
      "record smaller than declared",
      zipWith([["w", w]], { "0": f32bytes([1, 2]) }),
      /holds 8 bytes but the pickle declares 4/,
    ],
    [
      "view outside its storage",
      zipWith([["w", { ...w, shape: [3, 2] }]], data),
      /reaches element 5 but the storage holds 4/,
    ],
    ["offset outside", zipWith([["w", { ...w, offset: 3 }]], data), /reaches element 6/],
    [
      "strides reaching outside",
      zipWith([["w", { ...w, stride: [1, 3] }]], data),
      /reaches element 4/,
    ],
    [
      "element count over 2^53",
      zipWith([["w", { ...w, shape: [2 ** 30, 2 ** 30, 2 ** 30], stride: [0, 0, 0] }]], data),
      /more than 2\^53 elements/,
    ],
    [
      "byte size over 2^53",
      zipWith([["w", { ...w, shape: [2 ** 51] }]], data),
      /more than 2\^53 bytes|reaches element/,
    ],
    ["negative size", zipWith([["w", { ...w, shape: [-1, 2] }]], data), /bad size -1/],
    ["shape/stride mismatch", zipWith([["w", { ...w, stride: [1] }]], data), /differ in length/],
    ["huge numel in the pid", zipWith([["w", { ...w, numel: 2 ** 60 }]], data), /bad element count|declares/],
    ["no data.pkl", makeZipCheckpoint(new Uint8Array(0), {}, { prefix: "a/b" }), /no <folder>\/data.pkl/],
  ];
  for (const [what, bytes, re] of broken) {
    assert.throws(() => readAll(bytes), (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `${what}: ${e}`);
      assert.match(e.message, re, what);
      return true;
    });
  }
  // persistent ids of the wrong shape, storages of the wrong type
  const pid = (build: (p: Pickle) => void) => {
    const p = new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").mark();
    build(p);
    p.binpersid().int(0).value([1]).value([1]).bool(false).none().tuple().reduce().stop();
    return makeZipCheckpoint(p.bytesOut(), data);
  };
  for (
    const [what, b] of [
      ["pid is a str", pid((p) => p.str("storage"))],
      ["pid too short", pid((p) => p.value(["storage", "x"]))],
      ["pid not a storage", pid((p) => p.value(["module", "x", "0", "cpu", 4]))],
      [
        "storage type is OrderedDict",
        pid((p) =>
          p.mark().str("storage").global("collections", "OrderedDict").str("0").str("cpu").int(4).tuple()
        ),
      ],
      [
        "storage key is a path",
        pid((p) =>
          p.mark().str("storage").global("torch", "FloatStorage").str("../../etc/passwd").str("cpu").int(4)
            .tuple()
        ),
      ],
    ] as const
  ) {
    assert.throws(() => parseCheckpoint(b, what), (e: unknown) => e instanceof CheckpointError, what);
  }
  // two data.pkl records are ambiguous
  const two = makeZip([
    { name: "a/data.pkl", data: torchPickle([]) },
    { name: "b/data.pkl", data: torchPickle([]) },
  ]);
  assert.throws(() => parseCheckpoint(two, "two"), /2 data.pkl records/);
});

Deno.test("checkpoint: built legacy files: views, key list and storage checks", () => {
  const spec: TensorSpec = { key: "k0", storage: "FloatStorage", numel: 4, shape: [2, 2] };
  const good = makeLegacyCheckpoint(torchPickle([["w", spec]], { legacy: true }), [[
    "k0",
    f32bytes([1, 2, 3, 4]),
    4,
  ]]);
  for (const c of [parseCheckpoint(good, "legacy"), openLegacy(good)]) {
    assert.deepEqual([...f32(tensorsOf(c).get("w")!)], [1, 2, 3, 4]);
    c.close();
  }
  // an old-style storage view: ('storage', FloatStorage, 'k0', 'cpu', 4, ('v1', 1, 2))
  const p = new Pickle().proto(2).dict().str("state_dict").global("collections", "OrderedDict").emptyTuple()
    .reduce()
    .mark().str("v").global("torch._utils", "_rebuild_tensor_v2").mark()
    .mark().str("storage").global("torch", "FloatStorage").str("k0").str("cpu").int(4).value(["v1", 1, 2])
    .tuple()
    .binpersid().int(0).value([2]).value([1]).bool(false).none().tuple().reduce().setitems().setitem().stop()
    .bytesOut();
  const v = tensorsOf(parseCheckpoint(makeLegacyCheckpoint(p, [["k0", f32bytes([1, 2, 3, 4]), 4]]), "views"));
  assert.deepEqual([...f32(v.get("v")!)], [2, 3]);
  const bad: [string, Uint8Array, RegExp][] = [
    [
      "count mismatch",
      makeLegacyCheckpoint(torchPickle([["w", spec]], { legacy: true }), [["k0", f32bytes([1, 2, 3, 4]), 5]]),
      /holds 5 elements on disk/,
    ],
    [
      "missing data",
      makeLegacyCheckpoint(torchPickle([["w", spec]], { legacy: true }), []),
      /missing storage record/,
    ],
    [
      "unused key",
      makeLegacyCheckpoint(torchPickle([["w", spec]], { legacy: true }), [["zz", f32bytes([1]), 1]]),
      /never used/,
    ],
    [
      "truncated data",
      makeLegacyCheckpoint(torchPickle([["w", spec]], { legacy: true }), [["k0", f32bytes([1, 2]), 4]]),
      /truncated/,
    ],
    [
      "declared bigger than the file",
      makeLegacyCheckpoint(
        torchPickle([["w", { ...spec, numel: 2 ** 40, shape: [2] }]], { legacy: true }),
        [],
      ),
      /more than the whole file/,
    ],
    [
      "bad magic",
      concatBytes(new Pickle().proto(2).int(2n ** 78n).stop().bytesOut(), good.subarray(15)),
      /plain pickle, not a torch.save checkpoint \(no legacy magic number\)/,
    ],
    [
      "bad protocol",
      concatBytes(
        good.subarray(0, 15),
        concatBytes(new Pickle().proto(2).int(1002).stop().bytesOut(), good.subarray(21)),
      ),
      /protocol version 1002/,
    ],
  ];
  for (const [what, bytes, re] of bad) {
    assert.throws(() => tensorsOf(parseCheckpoint(bytes, what)), (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `${what}: ${e}`);
      assert.match(e.message, re, what);
      return true;
    });
  }
  // streaming from a file: a main pickle bigger than the first 1 MiB read (a long note and a text-mode
  // line straddling the chunk edges) is read in growing chunks, and a lying length inside it fails fast
  const note = "x".repeat(1_500_000);
  const long = makeLegacyCheckpoint(
    torchPickle([["w", spec]], {
      legacy: true,
      extra: (p) =>
        p.str("note").str(note).setitem().str("n").raw(0x49).line("1".repeat(3_000_000)).setitem(),
    }),
    [["k0", f32bytes([1, 2, 3, 4]), 4]],
  );
  assert.throws(() => openLegacy(long), /4300-digit limit/);
  const longOk = makeLegacyCheckpoint(
    torchPickle([["w", spec]], { legacy: true, extra: (p) => p.str("note").str(note).setitem() }),
    [["k0", f32bytes([1, 2, 3, 4]), 4]],
  );
  const streamed = openLegacy(longOk);
  assert.equal(((streamed.root as PyDict).get("note") as string).length, 1_500_000);
  assert.deepEqual([...f32(tensorsOf(streamed).get("w")!)], [1, 2, 3, 4]);
  streamed.close();
  const lying = makeLegacyCheckpoint(
    torchPickle([["w", spec]], {
      legacy: true,
      extra: (p) => p.str("note").raw(0x58, 0xff, 0xff, 0xff, 0x70).str(note),
    }),
    [],
  );
  assert.throws(() => openLegacy(lying), /truncated: needs 1895825407 more bytes/);
  // a whole pickled nn.Module (legacy 'module' persistent id) is refused with a hint
  const mod = new Pickle().proto(2).value(["module", "T2T_ViT", "t2t_vit.py", "class T2T_ViT..."]).binpersid()
    .stop().bytesOut();
  assert.throws(() => parseCheckpoint(makeLegacyCheckpoint(mod, []), "m"), /whole nn.Module/);
});

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function openLegacy(bytes: Uint8Array): Checkpoint {
  const path = Deno.makeTempFileSync({ suffix: ".pth" });
  try {
    Deno.writeFileSync(path, bytes);
    return openCheckpoint(path);
  } finally {
    Deno.removeSync(path); // the open handle keeps the data readable
  }
}

Deno.test("checkpoint: hostile globals inside a zip and a legacy file are refused by name", () => {
  for (
    const [m, n] of [["os", "system"], ["builtins", "eval"], ["subprocess", "Popen"], ["posix", "system"]]
  ) {
    const evil = torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]], {
      extra: (p) => {
        // after a valid state_dict: {"state_dict": ..., "x": os.system("touch pwned")}
        p.str("x").global(m, n).value(["touch pwned"]).reduce().setitem();
      },
    });
    for (
      const [what, bytes] of [
        ["zip", makeZipCheckpoint(evil, { "0": f32bytes([1]) })],
        [
          "legacy",
          makeLegacyCheckpoint(
            torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]], {
              legacy: true,
              extra: (p) => p.str("x").global(m, n).value(["touch pwned"]).reduce().setitem(),
            }),
            [["0", f32bytes([1]), 1]],
          ),
        ],
      ] as const
    ) {
      assert.throws(() => parseCheckpoint(bytes, `evil.${what}`), (e: unknown) => {
        assert.ok(e instanceof UnsafePickleError, `${what}: ${e}`);
        assert.equal(e.key, `${m}.${n}`);
        assert.match(e.message, new RegExp(`evil\\.${what}.*'${m}\\.${n}'`));
        return true;
      });
    }
  }
});

Deno.test("checkpoint: truncation at many offsets and random byte damage give only CheckpointErrors", () => {
  let rng = 12345;
  const rand = (n: number) => {
    rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
    return rng % n;
  };
  const tryAll = (bytes: Uint8Array, what: string) => {
    try {
      const c = parseCheckpoint(bytes, what);
      for (const [, t] of walkTensors(c.root)) t.read(what);
      return "ok";
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw new Error(`${what}: ${e}`, { cause: e });
      return "error";
    }
  };
  for (const f of ["tiny-train.pth.tar", "tiny-train-legacy.pth.tar", "tiny-bf16-legacy.pth"]) {
    const bytes = Deno.readFileSync(CK(f));
    for (let i = 0; i < 300; i++) {
      const cut = i < 100 ? i * 37 : rand(bytes.length);
      assert.equal(tryAll(bytes.subarray(0, cut), `${f}[:${cut}]`), "error", `${f} cut at ${cut}`);
    }
    // flips in the first 30 KB (headers, pickle, first storages) and the last 2 KB (zip directory)
    for (let i = 0; i < 300; i++) {
      const b = bytes.slice();
      const at = i % 2 ? rand(Math.min(30000, b.length)) : b.length - 1 - rand(2048);
      b[at] ^= 1 << rand(8);
      tryAll(b, `${f} flip@${at}`);
    }
  }
});
