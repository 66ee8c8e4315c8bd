import assert from "node:assert/strict";
import { Parser } from "pickleparser";
import { CheckpointError, UnsafePickleError } from "../../src/core/errors.ts";
import { isTuple, PyDict, PyObject, type PyValue, unpickle } from "../../converters/pickle.ts";
import { ALLOWED_GLOBALS, resolveTorchGlobal, TorchTensor } from "../../converters/torch_globals.ts";
import { parseCheckpoint, walkTensors } from "../../converters/checkpoint.ts";
import { ZipArchive } from "../../converters/zip.ts";
import { MemorySource } from "../../converters/source.ts";
import { OP, Pickle } from "../support/checkpoint_builders.ts";
import { ref } from "../support/fixtures.ts";
import { timeBound } from "../support/timing.ts";

function hex(s: string): Uint8Array {
  return new Uint8Array(s.match(/../g)!.map((h) => parseInt(h, 16)));
}

const noGlobals = () => undefined;

function load(bytes: Uint8Array, resolve = resolveTorchGlobal): PyValue {
  return unpickle(bytes, { file: "test.pkl", resolveGlobal: resolve }).value;
}

/**
 * OBJ = {"int": 5, "neg": -3, "i16": 40000, "i32": -2**31, "big": 2**70, "negbig": -2**70, "f": 1.5,
 *        "nf": -0.25e-300, "inf": float("inf"), "s": "h\u00e9llo \u2713 \U0001F600", "b": b"\x00\xff\n",
 *        "ba": bytearray(b"ab"), "t": (1, (2, 3)), "l": [1, [2]], "set": {1}, "fs": frozenset({2}),
 *        "none": None, "true": True, "false": False, "empty": (), "shared": (shared, shared) with
 *        shared = [7, 8], "od": OrderedDict([("a", 1)]), "quote": "it's \"q\"\\"}
 * pickled by CPython 3.11 with every protocol (0 and 1 reach _codecs.encode, __builtin__.set/bytearray...).
 */
const CPYTHON: [number, string][] = [
  // protocol 0: pickle.dumps(OBJ, protocol=0), CPython 3.11
  [
    0,
    "286470300a56696e740a70310a49350a73566e65670a70320a492d330a73566931360a70330a4934303030300a735669" +
    "33320a70340a492d323134373438333634380a73566269670a70350a4c31313830353931363230373137343131333033" +
    "3432344c0a73566e65676269670a70360a4c2d313138303539313632303731373431313330333432344c0a7356660a70" +
    "370a46312e350a73566e660a70380a462d322e35652d3330310a7356696e660a70390a46696e660a7356730a7031300a" +
    "5668e96c6c6f205c7532373133205c5530303031663630300a7031310a7356620a7031320a635f636f646563730a656e" +
    "636f64650a7031330a28565c7530303030ff5c75303030610a7031340a566c6174696e310a7031350a747031360a5270" +
    "31370a735662610a7031380a635f5f6275696c74696e5f5f0a6279746561727261790a7031390a286731330a28566162" +
    "0a7032300a6731350a747032310a527032320a747032330a527032340a7356740a7032350a2849310a2849320a49330a" +
    "747032360a747032370a73566c0a7032380a286c7032390a49310a61286c7033300a49320a616173567365740a703331" +
    "0a635f5f6275696c74696e5f5f0a7365740a7033320a28286c7033330a49310a61747033340a527033350a735666730a" +
    "7033360a635f5f6275696c74696e5f5f0a66726f7a656e7365740a7033370a28286c7033380a49320a61747033390a52" +
    "7034300a73566e6f6e650a7034310a4e7356747275650a7034320a4930310a735666616c73650a7034330a4930300a73" +
    "56656d7074790a7034340a287473567368617265640a7034350a28286c7034360a49370a6149380a616734360a747034" +
    "370a73566f640a7034380a63636f6c6c656374696f6e730a4f726465726564446963740a7034390a2874527035300a56" +
    "610a7035310a49310a73735671756f74650a7035320a5669742773202271225c75303035630a7035330a732e" +
    "",
  ],
  // protocol 1: pickle.dumps(OBJ, protocol=1), CPython 3.11
  [
    1,
    "7d7100285803000000696e7471014b0558030000006e656771024afdffffff580300000069313671034d409c58030000" +
    "0069333271044a00000080580300000062696771054c313138303539313632303731373431313330333432344c0a5806" +
    "0000006e656762696771064c2d313138303539313632303731373431313330333432344c0a5801000000667107473ff8" +
    "00000000000058020000006e6671084781856e1fc2f8f3595803000000696e667109477ff00000000000005801000000" +
    "73710a580f00000068c3a96c6c6f20e29c9320f09f9880710b580100000062710c635f636f646563730a656e636f6465" +
    "0a710d28580400000000c3bf0a710e58060000006c6174696e31710f747110527111580200000062617112635f5f6275" +
    "696c74696e5f5f0a6279746561727261790a711328680d28580200000061627114680f74711552711674711752711858" +
    "01000000747119284b01284b024b0374711a74711b58010000006c711c5d711d284b015d711e4b026165580300000073" +
    "6574711f635f5f6275696c74696e5f5f0a7365740a7120285d71214b0161747122527123580200000066737124635f5f" +
    "6275696c74696e5f5f0a66726f7a656e7365740a7125285d71264b026174712752712858040000006e6f6e6571294e58" +
    "0400000074727565712a4930310a580500000066616c7365712b4930300a5805000000656d707479712c295806000000" +
    "736861726564712d285d712e284b074b0865682e74712f58020000006f64713063636f6c6c656374696f6e730a4f7264" +
    "65726564446963740a71312952713258010000006171334b0173580500000071756f7465713458090000006974277320" +
    "2271225c7135752e" +
    "",
  ],
  // protocol 2: pickle.dumps(OBJ, protocol=2), CPython 3.11
  [
    2,
    "80027d7100285803000000696e7471014b0558030000006e656771024afdffffff580300000069313671034d409c5803" +
    "00000069333271044a00000080580300000062696771058a0900000000000000004058060000006e656762696771068a" +
    "090000000000000000c05801000000667107473ff800000000000058020000006e6671084781856e1fc2f8f359580300" +
    "0000696e667109477ff0000000000000580100000073710a580f00000068c3a96c6c6f20e29c9320f09f9880710b5801" +
    "00000062710c635f636f646563730a656e636f64650a710d580400000000c3bf0a710e58060000006c6174696e31710f" +
    "867110527111580200000062617112635f5f6275696c74696e5f5f0a6279746561727261790a7113680d580200000061" +
    "627114680f86711552711685711752711858010000007471194b014b024b0386711a86711b58010000006c711c5d711d" +
    "284b015d711e4b0261655803000000736574711f635f5f6275696c74696e5f5f0a7365740a71205d71214b0161857122" +
    "527123580200000066737124635f5f6275696c74696e5f5f0a66726f7a656e7365740a71255d71264b02618571275271" +
    "2858040000006e6f6e6571294e580400000074727565712a88580500000066616c7365712b895805000000656d707479" +
    "712c295806000000736861726564712d5d712e284b074b0865682e86712f58020000006f64713063636f6c6c65637469" +
    "6f6e730a4f726465726564446963740a71312952713258010000006171334b0173580500000071756f74657134580900" +
    "000069742773202271225c7135752e" +
    "",
  ],
  // protocol 3: pickle.dumps(OBJ, protocol=3), CPython 3.11
  [
    3,
    "80037d7100285803000000696e7471014b0558030000006e656771024afdffffff580300000069313671034d409c5803" +
    "00000069333271044a00000080580300000062696771058a0900000000000000004058060000006e656762696771068a" +
    "090000000000000000c05801000000667107473ff800000000000058020000006e6671084781856e1fc2f8f359580300" +
    "0000696e667109477ff0000000000000580100000073710a580f00000068c3a96c6c6f20e29c9320f09f9880710b5801" +
    "00000062710c430300ff0a710d58020000006261710e636275696c74696e730a6279746561727261790a710f43026162" +
    "711085711152711258010000007471134b014b024b0386711486711558010000006c71165d7117284b015d71184b0261" +
    "6558030000007365747119636275696c74696e730a7365740a711a5d711b4b016185711c52711d58020000006673711e" +
    "636275696c74696e730a66726f7a656e7365740a711f5d71204b026185712152712258040000006e6f6e6571234e5804" +
    "00000074727565712488580500000066616c73657125895805000000656d707479712629580600000073686172656471" +
    "275d7128284b074b0865682886712958020000006f64712a63636f6c6c656374696f6e730a4f72646572656444696374" +
    "0a712b2952712c580100000061712d4b0173580500000071756f7465712e580900000069742773202271225c712f752e" +
    "",
  ],
  // protocol 4: pickle.dumps(OBJ, protocol=4), CPython 3.11
  [
    4,
    "8004956d010000000000007d94288c03696e74944b058c036e6567944afdffffff8c03693136944d409c8c0369333294" +
    "4a000000808c03626967948a090000000000000000408c066e6567626967948a090000000000000000c08c016694473f" +
    "f80000000000008c026e66944781856e1fc2f8f3598c03696e6694477ff00000000000008c0173948c0f68c3a96c6c6f" +
    "20e29c9320f09f9880948c016294430300ff0a948c026261948c086275696c74696e73948c0962797465617272617994" +
    "93944302616294859452948c0174944b014b024b03869486948c016c945d94284b015d944b0261658c03736574948f94" +
    "284b01908c02667394284b0291948c046e6f6e65944e8c047472756594888c0566616c736594898c05656d7074799429" +
    "8c06736861726564945d94284b074b0865682486948c026f64948c0b636f6c6c656374696f6e73948c0b4f7264657265" +
    "64446963749493942952948c0161944b01738c0571756f7465948c0969742773202271225c94752e" +
    "",
  ],
  // protocol 5: pickle.dumps(OBJ, protocol=5), CPython 3.11
  [
    5,
    "80059557010000000000007d94288c03696e74944b058c036e6567944afdffffff8c03693136944d409c8c0369333294" +
    "4a000000808c03626967948a090000000000000000408c066e6567626967948a090000000000000000c08c016694473f" +
    "f80000000000008c026e66944781856e1fc2f8f3598c03696e6694477ff00000000000008c0173948c0f68c3a96c6c6f" +
    "20e29c9320f09f9880948c016294430300ff0a948c026261949602000000000000006162948c0174944b014b024b0386" +
    "9486948c016c945d94284b015d944b0261658c03736574948f94284b01908c02667394284b0291948c046e6f6e65944e" +
    "8c047472756594888c0566616c736594898c05656d70747994298c06736861726564945d94284b074b0865681f86948c" +
    "026f64948c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c0161944b01738c057175" +
    "6f7465948c0969742773202271225c94752e" +
    "",
  ],
];

Deno.test("pickle: CPython pickles of every protocol 0-5 decode to the same values", () => {
  for (const [proto, h] of CPYTHON) {
    const v = load(hex(h));
    assert.ok(v instanceof PyDict, `protocol ${proto}`);
    const d = v as PyDict;
    const g = (k: string) => d.get(k);
    assert.equal(g("int"), 5);
    assert.equal(g("neg"), -3);
    assert.equal(g("i16"), 40000);
    assert.equal(g("i32"), -(2 ** 31));
    assert.equal(g("big"), 2n ** 70n, `protocol ${proto} big`);
    assert.equal(g("negbig"), -(2n ** 70n), `protocol ${proto} negbig`);
    assert.equal(g("f"), 1.5);
    assert.equal(g("nf"), -0.25e-300);
    assert.equal(g("inf"), Infinity);
    assert.equal(g("s"), "h\u00e9llo \u2713 \u{1F600}", `protocol ${proto} str`);
    assert.deepEqual(g("b"), new Uint8Array([0, 255, 10]), `protocol ${proto} bytes`);
    assert.deepEqual(g("ba"), new Uint8Array([97, 98]), `protocol ${proto} bytearray`);
    const t = g("t") as PyValue[];
    assert.ok(isTuple(t) && isTuple(t[1]));
    assert.deepEqual([...t[0 + 1] as number[]], [2, 3]);
    const l = g("l") as PyValue[];
    assert.ok(Array.isArray(l) && !isTuple(l) && Array.isArray(l[1]));
    assert.deepEqual(g("set"), new Set([1]));
    assert.deepEqual(g("fs"), new Set([2]));
    assert.equal(g("none"), null);
    assert.equal(g("true"), true);
    assert.equal(g("false"), false);
    assert.ok(isTuple(g("empty")) && (g("empty") as PyValue[]).length === 0);
    const shared = g("shared") as PyValue[][];
    assert.equal(shared[0], shared[1], `protocol ${proto}: the memo keeps identity`);
    assert.deepEqual(shared[0], [7, 8]);
    const od = g("od") as PyDict;
    assert.ok(od instanceof PyDict && od.pyClass === "collections.OrderedDict");
    assert.equal(od.get("a"), 1);
    assert.equal(g("quote"), 'it\'s "q"\\');
    assert.deepEqual([...d.keys()].slice(0, 3), ["int", "neg", "i16"], "insertion order");
  }
});

Deno.test("pickle: text opcodes, memo forms, marks and stack operations", () => {
  // protocol 0 STRING with escapes, INT booleans, LONG with L, PUT/GET, DUP, POP, POP_MARK, LIST, DICT
  const p = new Pickle()
    .mark().line("S'a\\'b\\x41\\n'").line("I01").line("L-12345678901234567890L").raw(OP.LIST)
    .raw(OP.PUT).line("7").raw(OP.POP)
    .mark().raw(OP.GET).line("7").raw(OP.DUP).raw(OP.TUPLE)
    .mark().int(1).int(2).raw(OP.POP_MARK)
    .raw(OP.LONG_BINPUT, 0xff, 0xff, 0xff, 0xff).raw(OP.LONG_BINGET, 0xff, 0xff, 0xff, 0xff)
    .raw(OP.MEMOIZE)
    .raw(OP.TUPLE2).stop().bytesOut();
  const v = load(p) as PyValue[][];
  assert.ok(isTuple(v));
  assert.deepEqual(v[0], v[1]);
  assert.equal(v[0][0], v[0][1], "DUP keeps identity");
  assert.deepEqual(v[0][0], ["a'bA\n", true, -12345678901234567890n]);
  // DICT from a mark, SHORT_BINSTRING, BINSTRING, SHORT_BINBYTES, BINUNICODE8, BINBYTES8, BYTEARRAY8, FRAME
  const q = new Pickle().proto(4).raw(OP.FRAME, 20, 0, 0, 0, 0, 0, 0, 0)
    .mark()
    .raw(OP.SHORT_BINSTRING, 1, 0x6b).raw(OP.BINSTRING, 2, 0, 0, 0, 0x68, 0x69)
    .raw(OP.SHORT_BINUNICODE, 1, 0x75).raw(OP.SHORT_BINBYTES, 2, 1, 2)
    .raw(OP.BINUNICODE8, 1, 0, 0, 0, 0, 0, 0, 0, 0x7a).raw(OP.BINBYTES8, 1, 0, 0, 0, 0, 0, 0, 0, 9)
    .str("y").raw(OP.BYTEARRAY8, 1, 0, 0, 0, 0, 0, 0, 0, 8).raw(OP.READONLY_BUFFER)
    .raw(OP.DICT).stop().bytesOut();
  const d = load(q) as PyDict;
  assert.equal(d.get("k"), "hi");
  assert.deepEqual(d.get("u"), new Uint8Array([1, 2]));
  assert.deepEqual(d.get("z"), new Uint8Array([9]));
  assert.deepEqual(d.get("y"), new Uint8Array([8]));
  assert.deepEqual(
    unpickle(q, { resolveGlobal: noGlobals }).protocol,
    4,
  );
  // LONG1/LONG4 edge cases: 255 (needs a sign byte), -1, -128, 2^63
  for (const n of [0n, 255n, -1n, -128n, 128n, 2n ** 63n, -(2n ** 63n), 2n ** 53n + 1n]) {
    const got = load(new Pickle().proto(2).int(n).stop().bytesOut());
    assert.equal(BigInt(got as number | bigint), n);
    assert.equal(typeof got, Number.isSafeInteger(Number(n)) ? "number" : "bigint");
  }
  const long4 = load(new Pickle().proto(2).raw(OP.LONG4, 2, 0, 0, 0, 0x00, 0x80).stop().bytesOut());
  assert.equal(long4, -32768);
  // FLOAT text forms
  for (const [s, x] of [["1e-05", 1e-5], ["-inf", -Infinity], ["2.5", 2.5]] as const) {
    assert.equal(load(new Pickle().raw(OP.FLOAT).line(s).stop().bytesOut()), x);
  }
  assert.ok(Number.isNaN(load(new Pickle().raw(OP.FLOAT).line("nan").stop().bytesOut()) as number));
  // sets: EMPTY_SET + ADDITEMS, FROZENSET
  const s = load(
    new Pickle().proto(4).raw(OP.EMPTY_SET).mark().int(1).int(2).raw(OP.ADDITEMS).stop().bytesOut(),
  );
  assert.deepEqual(s, new Set([1, 2]));
  // UNICODE raw-unicode-escape
  assert.equal(
    load(new Pickle().raw(OP.UNICODE).line("a\\u00e9\\U0001f600").stop().bytesOut()),
    "a\u00e9\u{1F600}",
  );
});

Deno.test("pickle: argparse.Namespace, numpy scalars and dtypes stay inert data", () => {
  // Namespace via NEWOBJ + BUILD (as torch.save of args writes it)
  const ns = new Pickle().proto(2).global("argparse", "Namespace").emptyTuple().newobj()
    .value(new Map<string, unknown>([["model", "t2t_vit_7"], ["lr", 5e-4]])).build().stop().bytesOut();
  const o = load(ns) as PyObject;
  assert.ok(o instanceof PyObject);
  assert.equal(o.pyClass, "argparse.Namespace");
  assert.equal(o.attrs.get("model"), "t2t_vit_7");
  // numpy.core.multiarray.scalar(numpy.dtype("f8", False, True) with BUILD state, _codecs.encode(bytes))
  // as `torch.save({"metric": np.float64(71.7)})` writes it with protocol 2.
  const raw = new Uint8Array(new Float64Array([71.7]).buffer);
  const latin1 = String.fromCharCode(...raw);
  const np = new Pickle().proto(2).global("numpy.core.multiarray", "scalar")
    .global("numpy", "dtype").value(["f8", false, true]).reduce()
    .value([3, "<", null, null, null, -1, -1, 0]).build()
    .global("_codecs", "encode").value([latin1, "latin1"]).reduce()
    .raw(OP.TUPLE2).reduce().stop().bytesOut();
  const sc = load(np) as PyObject;
  assert.equal(sc.pyClass, "numpy.scalar");
  assert.equal(sc.value, 71.7);
  // numpy 2's module name works too, and an int64 scalar decodes
  const i8 = new Uint8Array(new BigInt64Array([-5n]).buffer);
  const np2 = new Pickle().proto(3).global("numpy._core.multiarray", "scalar")
    .global("numpy", "dtype").value(["i8", false, true]).reduce()
    .bytes(i8).raw(OP.TUPLE2).reduce().stop().bytesOut();
  assert.equal((load(np2) as PyObject).value, -5);
});

/** Globals that picklescan / fickling flag, plus anything else not on the allowlist. */
const HOSTILE: [string, string][] = [
  ["os", "system"],
  ["posix", "system"],
  ["nt", "system"],
  ["os", "popen"],
  ["os", "execv"],
  ["subprocess", "Popen"],
  ["subprocess", "check_output"],
  ["subprocess", "run"],
  ["builtins", "eval"],
  ["builtins", "exec"],
  ["builtins", "getattr"],
  ["builtins", "__import__"],
  ["builtins", "open"],
  ["builtins", "compile"],
  ["__builtin__", "eval"],
  ["runpy", "_run_code"],
  ["runpy", "run_path"],
  ["importlib", "import_module"],
  ["webbrowser", "open"],
  ["socket", "socket"],
  ["copyreg", "_reconstructor"],
  ["copy_reg", "_reconstructor"],
  ["pickle", "loads"],
  ["shutil", "rmtree"],
  ["sys", "exit"],
  ["torch", "load"],
  ["torch.serialization", "load"],
  ["torch._utils", "_rebuild_qtensor"],
  ["torch._utils", "_rebuild_sparse_tensor"],
  ["numpy", "load"],
  ["numpy.testing._private.utils", "runstring"],
  ["collections", "defaultdict"],
  ["builtins", "dict"],
];

function expectUnsafe(bytes: Uint8Array, qualname: string, atOpcode?: number) {
  assert.throws(() => load(bytes), (e: unknown) => {
    assert.ok(e instanceof UnsafePickleError, `expected UnsafePickleError, got ${e}`);
    assert.ok(e.message.includes(qualname), `message names ${qualname}: ${e.message}`);
    assert.ok(e.message.includes("test.pkl"), "message names the file");
    assert.ok(e.message.includes("nothing was executed"));
    if (atOpcode !== undefined) assert.equal(e.offset, atOpcode, "refused at the global, before any call");
    return true;
  });
}

Deno.test("pickle: every non-allowlisted global is refused by name, via GLOBAL, STACK_GLOBAL, INST, OBJ, NEWOBJ", () => {
  for (const [m, n] of HOSTILE) {
    const q = `${m === "__builtin__" ? "builtins" : m === "copy_reg" ? "copyreg" : m}.${n}`;
    // GLOBAL + REDUCE (protocol 2)
    expectUnsafe(
      new Pickle().proto(2).global(m, n).value(["touch /tmp/pwned"]).reduce().stop().bytesOut(),
      q,
      2,
    );
    // STACK_GLOBAL + REDUCE (protocol 4)
    expectUnsafe(
      new Pickle().proto(4).stackGlobal(m, n).value(["touch /tmp/pwned"]).reduce().stop().bytesOut(),
      q,
    );
    // INST (protocol 0)
    expectUnsafe(new Pickle().mark().str("x").raw(OP.INST).line(m).line(n).stop().bytesOut(), q);
    // OBJ (protocol 1)
    expectUnsafe(new Pickle().mark().global(m, n).str("x").raw(OP.OBJ).stop().bytesOut(), q);
    // NEWOBJ and NEWOBJ_EX
    expectUnsafe(new Pickle().proto(2).global(m, n).value(["x"]).newobj().stop().bytesOut(), q);
    expectUnsafe(
      new Pickle().proto(4).stackGlobal(m, n).value(["x"]).dict().raw(OP.NEWOBJ_EX).stop().bytesOut(),
      q,
    );
    // hidden inside a realistic state_dict, after valid tensors
    const nested = new Pickle().proto(2).dict().str("state_dict").global("collections", "OrderedDict")
      .emptyTuple().reduce().mark().str("w").global(m, n).value(["rm -rf /"]).reduce().setitems().setitem()
      .stop().bytesOut();
    expectUnsafe(nested, q);
  }
  for (const q of ALLOWED_GLOBALS) assert.ok(!HOSTILE.some(([m, n]) => `${m}.${n}` === q));
});

Deno.test("pickle: extension codes, wrong persistent ids, calls on non-callables and inert classes are refused", () => {
  for (const ext of [[OP.EXT1, 1], [OP.EXT2, 1, 0], [OP.EXT4, 1, 0, 0, 0]]) {
    assert.throws(() => load(new Pickle().proto(2).raw(...ext).stop().bytesOut()), UnsafePickleError);
  }
  // persistent ids with no persistent_load (the legacy magic/sys_info pickles take none)
  assert.throws(
    () => load(new Pickle().proto(2).value(["storage"]).binpersid().stop().bytesOut()),
    UnsafePickleError,
  );
  assert.throws(() => load(new Pickle().raw(OP.PERSID).line("0").stop().bytesOut()), UnsafePickleError);
  // REDUCE on data, not a global: a str, a dict
  assert.throws(
    () => load(new Pickle().proto(2).str("os.system").value(["x"]).reduce().stop().bytesOut()),
    UnsafePickleError,
  );
  assert.throws(
    () => load(new Pickle().proto(2).dict().value(["x"]).reduce().stop().bytesOut()),
    UnsafePickleError,
  );
  // allowlisted names that are data, not functions: calling or instantiating them is refused
  expectUnsafe(
    new Pickle().proto(2).global("torch", "FloatStorage").value([10]).reduce().stop().bytesOut(),
    "torch.FloatStorage",
  );
  expectUnsafe(
    new Pickle().proto(2).global("torch", "float32").emptyTuple().reduce().stop().bytesOut(),
    "torch.float32",
  );
  expectUnsafe(
    new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").emptyTuple().newobj().stop()
      .bytesOut(),
    "torch._utils._rebuild_tensor_v2",
  );
  // _rebuild_from_type_v2 only forwards to allowlisted rebuild functions
  const viaType = new Pickle().proto(2).global("torch._tensor", "_rebuild_from_type_v2")
    .mark().global("collections", "OrderedDict").global("torch", "Tensor").emptyTuple().none().tuple()
    .reduce()
    .stop().bytesOut();
  assert.throws(() => load(viaType), CheckpointError);
  // _codecs.encode with an exotic codec
  assert.throws(
    () =>
      load(
        new Pickle().proto(2).global("_codecs", "encode").value(["x", "rot13"]).reduce().stop().bytesOut(),
      ),
    CheckpointError,
  );
  // rebuild functions check their arguments
  assert.throws(
    () =>
      load(
        new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").value([
          "not a storage",
          0,
          [1],
          [1],
          false,
          null,
        ])
          .reduce().stop().bytesOut(),
      ),
    /persistent storage reference is required/,
  );
});

Deno.test("pickle: malformed streams give CheckpointError, never another error", () => {
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["no STOP", new Pickle().proto(2).int(1).bytesOut()],
    ["STOP on empty stack", new Pickle().stop().bytesOut()],
    ["POP on empty stack", new Pickle().raw(OP.POP).stop().bytesOut()],
    ["TUPLE without MARK", new Pickle().int(1).tuple().stop().bytesOut()],
    ["unknown opcode", new Pickle().raw(0xff).stop().bytesOut()],
    ["protocol 6", new Pickle().proto(6).none().stop().bytesOut()],
    ["GET of a missing memo", new Pickle().raw(OP.BINGET, 3).stop().bytesOut()],
    ["bad GET index", new Pickle().raw(OP.GET).line("x1").stop().bytesOut()],
    ["APPEND to a tuple", new Pickle().emptyTuple().int(1).append().stop().bytesOut()],
    ["SETITEM on a list", new Pickle().list().int(1).int(2).setitem().stop().bytesOut()],
    ["odd DICT", new Pickle().mark().int(1).raw(OP.DICT).stop().bytesOut()],
    ["unhashable key", new Pickle().dict().list().int(1).setitem().stop().bytesOut()],
    ["BUILD on an int", new Pickle().int(1).dict().build().stop().bytesOut()],
    ["STRING unquoted", new Pickle().raw(OP.STRING).line("abc").stop().bytesOut()],
    ["INT garbage", new Pickle().raw(OP.INT).line("12a").stop().bytesOut()],
    ["FLOAT garbage", new Pickle().raw(OP.FLOAT).line("1.2.3").stop().bytesOut()],
    ["negative BINSTRING", new Pickle().raw(OP.BINSTRING, 0xff, 0xff, 0xff, 0xff).stop().bytesOut()],
    ["NEXT_BUFFER", new Pickle().proto(5).raw(OP.NEXT_BUFFER).stop().bytesOut()],
    ["STACK_GLOBAL of ints", new Pickle().proto(4).int(1).int(2).raw(OP.STACK_GLOBAL).stop().bytesOut()],
    [
      "REDUCE args not a tuple",
      new Pickle().proto(2).global("collections", "OrderedDict").int(1).reduce().stop().bytesOut(),
    ],
    ["line without newline", new Pickle().raw(OP.INT, 0x31).bytesOut()],
  ];
  for (const [what, bytes] of cases) {
    assert.throws(() => load(bytes), (e: unknown) => e instanceof CheckpointError, what);
  }
});

Deno.test("pickle: resource bombs are cheap and bounded", () => {
  const time = (what: string, f: () => void) => {
    const t = performance.now();
    f();
    const ms = performance.now() - t;
    assert.ok(ms < timeBound(1000), `${what} took ${ms.toFixed(0)} ms`);
  };
  // a million nested lists (each APPENDed into the previous one) and 200k nested MARKs
  time("deep nesting", () => {
    const n = 1_000_000;
    const b = new Uint8Array(n * 2 + 2);
    for (let i = 0; i < n; i++) b[i] = OP.EMPTY_LIST;
    for (let i = 0; i < n - 1; i++) b[n + i] = OP.APPEND;
    b[2 * n - 1] = OP.STOP;
    const v = load(b.subarray(0, 2 * n));
    assert.ok(Array.isArray(v));
    const marks = new Uint8Array(200_001).fill(OP.MARK);
    marks[200_000] = OP.STOP;
    assert.throws(() => load(marks), CheckpointError);
  });
  // self-referencing list: [l] with l appended to itself
  time("cycle", () => {
    const v = load(
      new Pickle().list().raw(OP.BINPUT, 0).raw(OP.BINGET, 0).append().stop().bytesOut(),
    ) as PyValue[];
    assert.equal(v[0], v);
  });
  // a memo index of 2^32-1 costs nothing
  time("huge memo index", () => {
    load(new Pickle().none().raw(OP.LONG_BINPUT, 0xff, 0xff, 0xff, 0xff).stop().bytesOut());
  });
  // declared lengths far beyond the data: refused before allocating
  time("lying lengths", () => {
    for (
      const b of [
        new Pickle().raw(OP.BINBYTES8, 0, 0, 0, 0, 0, 0, 0x10, 0).stop().bytesOut(),
        new Pickle().raw(OP.BINUNICODE8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0).stop().bytesOut(),
        new Pickle().raw(OP.BINUNICODE, 0xff, 0xff, 0xff, 0x7f).stop().bytesOut(),
        new Pickle().raw(OP.LONG4, 0xff, 0xff, 0xff, 0x7f).stop().bytesOut(),
        new Pickle().raw(OP.BYTEARRAY8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff).stop().bytesOut(),
      ]
    ) assert.throws(() => load(b), CheckpointError);
  });
  // integers beyond Python's 4300-digit limit
  time("huge int", () => {
    assert.throws(
      () => load(new Pickle().raw(OP.INT).line("9".repeat(5000)).stop().bytesOut()),
      /4300-digit/,
    );
    assert.throws(
      () => load(new Pickle().raw(OP.LONG4, 0, 0x10, 0, 0, ...new Uint8Array(4096)).stop().bytesOut()),
      /limit/,
    );
  });
});

function dataPkl(path: string): Uint8Array {
  const zip = ZipArchive.open(new MemorySource(Deno.readFileSync(path), path));
  const name = [...zip.entries.keys()].find((k) => k.endsWith("/data.pkl"))!;
  return zip.read(zip.entries.get(name)!);
}

Deno.test("pickle: every truncation of a real data.pkl is a CheckpointError", () => {
  const pkl = dataPkl(ref("checkpoints/tiny-train.pth.tar"));
  const persistentLoad = () => null;
  let n = 0;
  for (let cut = 0; cut < pkl.length; cut += cut < 600 ? 1 : 13) {
    assert.throws(
      () =>
        unpickle(pkl.subarray(0, cut), { file: "cut", resolveGlobal: resolveTorchGlobal, persistentLoad }),
      (e: unknown) => e instanceof CheckpointError,
      `cut at ${cut}`,
    );
    n++;
  }
  assert.ok(n > 1000);
});

Deno.test("pickle: same tree as npm:pickleparser on the real checkpoints (a second, independent reader)", () => {
  for (const f of ["tiny-train.pth.tar", "t2t_vit_7.pth.tar", "tiny-views.pth"]) {
    const path = ref(`checkpoints/${f}`);
    // pickleparser with inert hooks: every global becomes a tagged record, persistent ids stay data
    type Rec = { g: string; args: unknown[] };
    const parser = new Parser({
      unpicklingTypeOfDictionary: "Map",
      nameResolver: {
        resolve: (module: string, name: string) =>
          function (...args: unknown[]): Rec | Map<unknown, unknown> {
            return module === "collections" && name === "OrderedDict"
              ? new Map()
              : { g: `${module}.${name}`, args };
          },
      },
      persistentResolver: { resolve: (pid: unknown) => ({ g: "pid", args: pid as unknown[] }) },
    });
    const theirs = parser.parse<Map<string, unknown>>(dataPkl(path));
    const ours = parseCheckpoint(Deno.readFileSync(path), f).root as PyDict;
    assert.deepEqual([...theirs.keys()], [...ours.keys()].map(String), f);
    const rebuilt = (r: Rec) => {
      // _rebuild_tensor_v2(storage pid, offset, size, stride, ...)
      const pid = (r.args[0] as Rec).args as unknown[];
      return {
        key: pid[2],
        offset: r.args[1],
        size: [...r.args[2] as number[]],
        stride: [...r.args[3] as number[]],
      };
    };
    let compared = 0;
    const walk = (a: unknown, b: PyValue, path: string) => {
      if (b instanceof TorchTensor) {
        const r = rebuilt(a as Rec);
        assert.deepEqual(
          r,
          { key: b.storage.key, offset: b.storageOffset, size: b.shape, stride: b.stride },
          path,
        );
        compared++;
      } else if (b instanceof PyDict) {
        const m = a instanceof Map ? a : (a as Rec & Record<string, unknown>);
        if (m instanceof Map) { for (const [k, v] of b) walk(m.get(k), v, `${path}/${String(k)}`); }
      } else if (typeof b === "number" || typeof b === "string" || typeof b === "boolean") {
        assert.equal(a, b, path);
      }
    };
    walk(theirs, ours, f);
    assert.equal(compared, [...walkTensors(ours)].length, `${f}: every tensor compared`);
  }
});
