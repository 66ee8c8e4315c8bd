/**
 * The hostile-pickle corpus: every construct that picklescan and fickling flag, built byte by byte, fed to the
 * safe unpickler, inside a zip checkpoint, inside a legacy torch.save file, and (for a few) through the CLI.
 * Each must be refused by name with a typed error, and nothing may run: a canary file that every payload would
 * create must not exist, and process spawning, networking, eval and file writes are trapped while the corpus
 * is parsed in-process.
 */

import assert from "node:assert/strict";
import { CheckpointError, printable, UnsafePickleError } from "../../src/core/errors.ts";
import { type PyValue, unpickle } from "../../converters/pickle.ts";
import {
  ALLOWED_GLOBALS,
  resolveTorchGlobal,
  storageClassDType,
  TorchStorage,
} from "../../converters/torch_globals.ts";
import { parseCheckpoint } from "../../converters/checkpoint.ts";
import {
  f32bytes,
  makeLegacyCheckpoint,
  makeZipCheckpoint,
  OP,
  Pickle,
  torchPickle,
} from "../support/checkpoint_builders.ts";

const CANARY_DIR = Deno.makeTempDirSync({ prefix: "t2t-canary-" });
const CANARY = `${CANARY_DIR}/pwned`;
const CMD = `touch ${CANARY}`;

// ---------------------------------------------------------------------------------------------------------
// The corpus

/**
 * Globals that run code, touch the system or reach the network: what picklescan's and fickling's deny
 * lists name, grouped as the issue lists them. Every one is refused through every route below.
 */
const DANGEROUS: Record<string, [string, string][]> = {
  "os / posix / nt system calls": [
    ["os", "system"],
    ["posix", "system"],
    ["nt", "system"],
    ["os", "popen"],
    ["posix", "popen"],
    ["nt", "popen"],
    ["os", "execv"],
    ["os", "execvp"],
    ["os", "execl"],
    ["os", "spawnl"],
    ["os", "spawnv"],
    ["os", "fork"],
    ["os", "kill"],
    ["os", "remove"],
    ["os", "unlink"],
    ["os", "rmdir"],
    ["os", "putenv"],
    ["posix", "execv"],
    ["nt", "startfile"],
    ["pty", "spawn"],
    ["platform", "popen"],
    ["_posixsubprocess", "fork_exec"],
    ["shutil", "rmtree"],
    ["shutil", "move"],
  ],
  "subprocess": [
    ["subprocess", "Popen"],
    ["subprocess", "call"],
    ["subprocess", "check_call"],
    ["subprocess", "check_output"],
    ["subprocess", "run"],
    ["subprocess", "getoutput"],
    ["subprocess", "getstatusoutput"],
    ["asyncio.subprocess", "create_subprocess_shell"],
  ],
  "builtins eval / exec / getattr / __import__ and friends": [
    ["builtins", "eval"],
    ["builtins", "exec"],
    ["builtins", "compile"],
    ["builtins", "getattr"],
    ["builtins", "setattr"],
    ["builtins", "delattr"],
    ["builtins", "__import__"],
    ["builtins", "open"],
    ["builtins", "globals"],
    ["builtins", "breakpoint"],
    ["builtins", "input"],
    ["__builtin__", "eval"], // Python 2 spellings are mapped to builtins, then refused
    ["__builtin__", "execfile"],
    ["__builtin__", "apply"],
    ["__builtin__", "getattr"],
    ["exceptions", "Exception"],
  ],
  "runpy": [
    ["runpy", "_run_code"],
    ["runpy", "run_path"],
    ["runpy", "run_module"],
    ["runpy", "_run_module_code"],
  ],
  "importlib and code loading": [
    ["importlib", "import_module"],
    ["importlib", "__import__"],
    ["importlib.machinery", "SourceFileLoader"],
    ["marshal", "loads"],
    ["types", "FunctionType"],
    ["types", "CodeType"],
    ["code", "InteractiveInterpreter"],
    ["ctypes", "CDLL"],
    ["pickle", "loads"],
    ["_pickle", "loads"],
    ["dill", "loads"],
    ["timeit", "timeit"],
    ["pdb", "run"],
    ["bdb", "Bdb"],
    ["operator", "attrgetter"],
    ["operator", "methodcaller"],
    ["functools", "partial"],
    ["sys", "exit"],
    ["sys", "modules"],
  ],
  "webbrowser": [
    ["webbrowser", "open"],
    ["webbrowser", "open_new"],
    ["webbrowser", "open_new_tab"],
  ],
  "socket and the network": [
    ["socket", "socket"],
    ["socket", "create_connection"],
    ["socket", "create_server"],
    ["http.client", "HTTPSConnection"],
    ["urllib.request", "urlopen"],
    ["requests.api", "get"],
    ["ftplib", "FTP"],
    ["smtplib", "SMTP"],
  ],
  "copyreg": [
    ["copyreg", "_reconstructor"],
    ["copy_reg", "_reconstructor"],
    ["copyreg", "__newobj__"],
    ["copyreg", "__newobj_ex__"],
  ],
  "torch and numpy loaders (recursive loads, code paths outside weights_only)": [
    ["torch", "load"],
    ["torch.serialization", "load"],
    ["torch.hub", "load"],
    ["torch.jit", "load"],
    ["torch._utils", "_rebuild_qtensor"],
    ["torch._utils", "_rebuild_sparse_tensor"],
    ["torch._utils", "_rebuild_device_tensor_from_numpy"],
    ["torch.nn.modules.linear", "Linear"],
    ["numpy", "load"],
    ["numpy.testing._private.utils", "runstring"],
    ["numpy.lib.npyio", "load"],
  ],
  "harmless-looking classes outside the allowlist": [
    ["collections", "defaultdict"],
    ["collections", "namedtuple"],
    ["builtins", "dict"],
    ["builtins", "object"],
    ["builtins", "type"],
    ["__main__", "Evil"],
  ],
  "names that smuggle: attribute paths, case, whitespace, NUL, JS prototype keys": [
    ["collections", "OrderedDict.fromkeys"],
    ["collections.OrderedDict", "__reduce__"],
    ["torch._utils", "_rebuild_tensor_v2.__globals__"],
    ["torch", "FloatStorage.__new__"],
    ["os.path", "join"],
    ["OS", "system"],
    ["os ", "system"],
    ["os", "system "],
    ["os", "sys\u0000tem"],
    ["torch", "constructor"],
    ["torch", "__proto__"],
    ["torch", "toString"],
    ["collections", "hasOwnProperty"],
    ["builtins", "__proto__"],
    ["torch.storage", "constructor"],
  ],
};

type Route = (m: string, n: string) => Uint8Array;

/** Every opcode route by which a pickle can name and use a global. */
const ROUTES: Record<string, Route> = {
  "GLOBAL + REDUCE, protocol 0 text": (m, n) =>
    new Pickle().global(m, n).mark().raw(OP.STRING).line(`'${CMD}'`).tuple().reduce().stop().bytesOut(),
  "GLOBAL + REDUCE, protocol 2": (m, n) =>
    new Pickle().proto(2).global(m, n).value([CMD]).reduce().stop().bytesOut(),
  "STACK_GLOBAL + REDUCE, protocol 4": (m, n) =>
    new Pickle().proto(4).stackGlobal(m, n).value([CMD]).reduce().stop().bytesOut(),
  "STACK_GLOBAL of memoized strings": (m, n) =>
    new Pickle().proto(4).str(m).raw(OP.MEMOIZE).str(n).raw(OP.MEMOIZE).raw(OP.POP, OP.POP)
      .raw(OP.BINGET, 0, OP.BINGET, 1, OP.STACK_GLOBAL).value([CMD]).reduce().stop().bytesOut(),
  "INST, protocol 0": (m, n) => new Pickle().mark().str(CMD).raw(OP.INST).line(m).line(n).stop().bytesOut(),
  "OBJ, protocol 1": (m, n) => new Pickle().mark().global(m, n).str(CMD).raw(OP.OBJ).stop().bytesOut(),
  "NEWOBJ, protocol 2": (m, n) => new Pickle().proto(2).global(m, n).value([CMD]).newobj().stop().bytesOut(),
  "NEWOBJ_EX, protocol 4": (m, n) =>
    new Pickle().proto(4).stackGlobal(m, n).value([CMD]).dict().raw(OP.NEWOBJ_EX).stop().bytesOut(),
  "BUILD state on the class": (m, n) =>
    new Pickle().proto(2).global(m, n).value(new Map([["cmd", CMD]])).build().stop().bytesOut(),
  "as the storage type of a persistent id": (m, n) =>
    new Pickle().proto(2).mark().str("storage").global(m, n).str("0").str("cpu").int(1).tuple().binpersid()
      .stop().bytesOut(),
  "nested in a real state_dict, after valid tensors": (m, n) =>
    torchPickle([["w", { key: "0", storage: "FloatStorage", numel: 1, shape: [1] }]], {
      extra: (p) => p.str("x").global(m, n).value([CMD]).reduce().setitem(),
    }),
};

/** Python-2 module names the unpickler maps before the allowlist (as CPython does). */
function qualname(m: string, n: string): string {
  const mod = m === "__builtin__" || m === "exceptions" ? "builtins" : m === "copy_reg" ? "copyreg" : m;
  return `${mod}.${n}`;
}

/** Pickles that are refused for what they are rather than which global they name. */
const OTHER: {
  group: string;
  name: string;
  bytes: Uint8Array;
  error: typeof CheckpointError;
  says: RegExp;
  /** Fed to the bare unpickler (false: only the checkpoint's own persistent_load judges it). */
  bare: boolean;
  /** Also fed as a zip checkpoint's data.pkl. */
  container: boolean;
  /** Fed to an unpickler that takes no persistent ids (as the legacy format's first pickles are). */
  noPersistentLoad: boolean;
}[] = [];

function other(
  group: string,
  name: string,
  bytes: Uint8Array,
  error: typeof CheckpointError,
  says: RegExp,
  where: "both" | "bare" | "zip" | "no-persistent-load" = "both",
) {
  OTHER.push({
    group,
    name,
    bytes,
    error,
    says,
    bare: where !== "zip",
    container: where === "both" || where === "zip",
    noPersistentLoad: where === "no-persistent-load",
  });
}

// extension-registry codes (copyreg's extension registry can map a code to any global)
for (
  const [what, ext] of [["EXT1 1", [OP.EXT1, 1]], ["EXT2 0x1234", [OP.EXT2, 0x34, 0x12]], [
    "EXT4 2^31-1",
    [OP.EXT4, 0xff, 0xff, 0xff, 0x7f],
  ]] as const
) {
  const code = what.split(" ")[1].replace("0x1234", "4660").replace("2^31-1", "2147483647");
  other(
    "extension-registry codes",
    what,
    new Pickle().proto(2).raw(...ext).value([CMD]).reduce().stop().bytesOut(),
    UnsafePickleError,
    new RegExp(`refusing extension registry code ${code}`),
  );
}

// persistent ids of the wrong shape
const pidPickle = (pid: (p: Pickle) => void) => {
  const p = new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").mark();
  pid(p);
  return p.binpersid().int(0).value([1]).value([1]).bool(false).none().tuple().reduce().stop().bytesOut();
};
const storagePid = (type: (p: Pickle) => void, key: (p: Pickle) => void, numel: (p: Pickle) => void) =>
  pidPickle((p) => {
    p.mark().str("storage");
    type(p);
    key(p);
    p.str("cpu");
    numel(p);
    p.tuple();
  });
const FLOAT = (p: Pickle) => p.global("torch", "FloatStorage");
const KEY = (p: Pickle) => p.str("0");
const ONE = (p: Pickle) => p.int(1);
for (
  const [name, bytes, says] of [
    ["a str", pidPickle((p) => p.str("storage")), /persistent id str is not a \('storage'/],
    ["an int", pidPickle((p) => p.int(7)), /persistent id int is not a \('storage'/],
    ["None", pidPickle((p) => p.none()), /persistent id None is not/],
    ["a dict", pidPickle((p) => p.value(new Map([["storage", 1]]))), /persistent id dict is not/],
    ["a 2-tuple", pidPickle((p) => p.value(["storage", "x"])), /persistent id tuple\(2\) is not/],
    ["a 7-tuple", pidPickle((p) => p.value(["storage", 1, 2, 3, 4, 5, 6])), /tuple\(7\) is not/],
    ["tag 'module'", pidPickle((p) => p.value(["module", "x", "0", "cpu", 1])), /is not a \('storage'/],
    [
      "storage type is a str",
      storagePid((p) => p.str("FloatStorage"), KEY, ONE),
      /storage type str, not a torch/,
    ],
    [
      "storage type is a dtype",
      storagePid((p) => p.global("torch", "float32"), KEY, ONE),
      /storage type torch.float32, not a torch storage class/,
    ],
    [
      "storage type is torch.Tensor",
      storagePid((p) => p.global("torch", "Tensor"), KEY, ONE),
      /storage type torch.Tensor, not a torch storage class/,
    ],
    [
      "storage type is OrderedDict",
      storagePid((p) => p.global("collections", "OrderedDict"), KEY, ONE),
      /storage type collections.OrderedDict/,
    ],
    ["storage key is a path", storagePid(FLOAT, (p) => p.str("../../etc/passwd"), ONE), /bad storage key/],
    ["storage key is an int", storagePid(FLOAT, (p) => p.int(0), ONE), /bad storage key/],
    ["storage key is 1000 chars", storagePid(FLOAT, (p) => p.str("k".repeat(1000)), ONE), /bad storage key/],
    ["numel is negative", storagePid(FLOAT, KEY, (p) => p.int(-1)), /bad element count -1/],
    ["numel is a float", storagePid(FLOAT, KEY, (p) => p.float(1.5)), /bad element count 1.5/],
    [
      "numel is 2^70",
      storagePid(FLOAT, KEY, (p) => p.int(2n ** 70n)),
      /bad element count 1180591620717411303424/,
    ],
    ["numel is a str", storagePid(FLOAT, KEY, (p) => p.str("1")), /bad element count '1'/],
  ] as const
) other("persistent ids of the wrong shape", name, bytes, CheckpointError, says, "zip");

// persistent ids where the stream takes none (the legacy magic, protocol and sys_info pickles)
other(
  "persistent ids of the wrong shape",
  "PERSID in a stream without persistent_load",
  new Pickle().raw(OP.PERSID).line("0").stop().bytesOut(),
  UnsafePickleError,
  /refusing a persistent id/,
  "no-persistent-load",
);

// storages and tensors of the wrong type: what the rebuild functions are handed
const rebuildWith = (storage: (p: Pickle) => void) => {
  const p = new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").mark();
  storage(p);
  return p.int(0).value([1]).value([1]).bool(false).none().tuple().reduce().stop().bytesOut();
};
for (
  const [name, bytes, says] of [
    ["storage is a str", rebuildWith((p) => p.str("storage")), /storage is a str; a persistent storage/],
    ["storage is bytes", rebuildWith((p) => p.bytes(new Uint8Array(64))), /storage is a bytes/],
    ["storage is a dict", rebuildWith((p) => p.dict()), /storage is a dict/],
    ["storage is None", rebuildWith((p) => p.none()), /storage is a None/],
    [
      "storage is a storage class, not an instance",
      rebuildWith((p) => p.global("torch", "FloatStorage")),
      /storage is a torch.FloatStorage; a persistent storage/,
    ],
    [
      "_rebuild_parameter of a str",
      new Pickle().proto(2).global("torch._utils", "_rebuild_parameter").value(["w", true, null]).reduce()
        .stop()
        .bytesOut(),
      /data is a str, not a tensor/,
    ],
    [
      "_rebuild_from_type_v2 forwarding to OrderedDict",
      new Pickle().proto(2).global("torch._tensor", "_rebuild_from_type_v2").mark()
        .global("collections", "OrderedDict").global("torch", "Tensor").emptyTuple().none().tuple().reduce()
        .stop()
        .bytesOut(),
      /func is collections.OrderedDict, not an allowlisted torch._utils rebuild function/,
    ],
    [
      "_rebuild_from_type_v2 to a non-tensor type",
      new Pickle().proto(2).global("torch._tensor", "_rebuild_from_type_v2").mark()
        .global("torch._utils", "_rebuild_tensor_v2").global("collections", "OrderedDict").emptyTuple().none()
        .tuple().reduce().stop().bytesOut(),
      /new_type is collections.OrderedDict, not torch.Tensor/,
    ],
    [
      "_rebuild_tensor_v3 with a storage class as dtype",
      new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v3").mark().none().int(0).value([1])
        .value([1]).bool(false).none().global("torch", "FloatStorage").tuple().reduce().stop().bytesOut(),
      /dtype is a torch.FloatStorage, not a torch dtype/,
    ],
  ] as const
) other("storages and tensors of the wrong type", name, bytes, CheckpointError, says);

// calls on things that are not callable globals, and allowlisted names that are data
for (
  const [name, bytes, says] of [
    [
      "REDUCE on the string 'os.system'",
      new Pickle().proto(2).str("os.system").value([CMD]).reduce().stop().bytesOut(),
      /REDUCE on a str, which is not a callable global/,
    ],
    [
      "REDUCE on a dict",
      new Pickle().proto(2).dict().value([CMD]).reduce().stop().bytesOut(),
      /REDUCE on a dict, which is not a callable global/,
    ],
    [
      "REDUCE on a tensor-rebuilding result",
      new Pickle().proto(2).global("collections", "OrderedDict").emptyTuple().reduce().value([CMD]).reduce()
        .stop()
        .bytesOut(),
      /REDUCE on a collections.OrderedDict, which is not a callable global/,
    ],
    [
      "calling torch.FloatStorage",
      new Pickle().proto(2).global("torch", "FloatStorage").value([10]).reduce().stop().bytesOut(),
      /refusing to call 'torch.FloatStorage'/,
    ],
    [
      "calling torch.float32",
      new Pickle().proto(2).global("torch", "float32").emptyTuple().reduce().stop().bytesOut(),
      /refusing to call 'torch.float32'/,
    ],
    [
      "instantiating _rebuild_tensor_v2 (NEWOBJ)",
      new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").emptyTuple().newobj().stop()
        .bytesOut(),
      /refusing to instantiate 'torch._utils._rebuild_tensor_v2'/,
    ],
    [
      "instantiating torch.Size (INST)",
      new Pickle().mark().int(1).raw(OP.INST).line("torch").line("Size").stop().bytesOut(),
      /refusing to instantiate 'torch.Size'/,
    ],
    [
      "NEWOBJ on a str",
      new Pickle().proto(2).str("subprocess.Popen").value([CMD]).newobj().stop().bytesOut(),
      /NEWOBJ on a str, which is not a class/,
    ],
    [
      "OBJ on an int",
      new Pickle().mark().int(3).str(CMD).raw(OP.OBJ).stop().bytesOut(),
      /OBJ on a int, which is not a class/,
    ],
  ] as const
) other("calls on non-callables", name, bytes, UnsafePickleError, says);

// ---------------------------------------------------------------------------------------------------------
// Traps: nothing in-process may spawn, connect, fetch, eval or write while the corpus is parsed.

const trapped: string[] = [];

function withTraps<T>(f: () => T): T {
  const restore: (() => void)[] = [];
  const trap = (obj: object, name: string) => {
    const d = Object.getOwnPropertyDescriptor(obj, name);
    if (!d) return;
    Object.defineProperty(obj, name, {
      configurable: true,
      get: () => {
        trapped.push(name);
        throw new Error(`trap: ${name} used while parsing a hostile pickle`);
      },
    });
    restore.push(() => Object.defineProperty(obj, name, d));
  };
  for (
    const n of [
      "Command",
      "run",
      "connect",
      "connectTls",
      "listen",
      "writeFile",
      "writeFileSync",
      "writeTextFile",
      "writeTextFileSync",
      "remove",
      "removeSync",
      "open",
      "openSync",
      "create",
      "createSync",
      "chmod",
      "chmodSync",
    ]
  ) trap(Deno, n);
  trap(globalThis, "eval");
  trap(globalThis, "fetch");
  trap(globalThis, "Worker");
  try {
    return f();
  } finally {
    for (const r of restore) r();
  }
}

/** The bare unpickler with a minimal persistent_load (well-formed zip storage ids become data-less storages). */
function load(bytes: Uint8Array, file = "hostile.pkl", noPersistentLoad = false): PyValue {
  if (noPersistentLoad) return unpickle(bytes, { file, resolveGlobal: resolveTorchGlobal }).value;
  return unpickle(bytes, {
    file,
    resolveGlobal: resolveTorchGlobal,
    persistentLoad: (pid) => {
      const dtype = Array.isArray(pid) ? storageClassDType(pid[1]) : undefined;
      if (
        !Array.isArray(pid) || pid.length !== 5 || pid[0] !== "storage" || !dtype ||
        typeof pid[4] !== "number"
      ) {
        throw new CheckpointError("not a storage id");
      }
      return new TorchStorage(String(pid[2]), dtype, "cpu", pid[4] * dtype.itemSize, null);
    },
  }).value;
}

function expectRefused(
  what: string,
  f: () => unknown,
  error: typeof CheckpointError,
  check: (e: CheckpointError) => void,
) {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof error, `${what}: expected ${error.name}, got ${e}`);
    check(e as CheckpointError);
    return true;
  }, what);
}

// ---------------------------------------------------------------------------------------------------------
// Tests

Deno.test("hostile pickles: every dangerous global is refused by name through every opcode route", () => {
  let n = 0;
  withTraps(() => {
    for (const [group, globals] of Object.entries(DANGEROUS)) {
      for (const [m, name] of globals) {
        const q = qualname(m, name);
        assert.ok(!ALLOWED_GLOBALS.includes(q), `${q} must not be allowlisted`);
        assert.equal(resolveTorchGlobal(m, name), undefined, `${q} resolves to nothing`);
        for (const [route, build] of Object.entries(ROUTES)) {
          expectRefused(`${group}: ${q} via ${route}`, () => load(build(m, name)), UnsafePickleError, (e) => {
            assert.equal(e.key, q, `${q} via ${route}: the error names the global`);
            assert.ok(e.message.includes(`'${printable(q)}'`), e.message);
            assert.ok(e.message.includes("hostile.pkl"), "the error names the file");
            assert.ok(e.message.includes("nothing was executed"), e.message);
          });
          n++;
        }
      }
    }
  });
  assert.ok(n > 1000, `${n} hostile pickles`);
  assert.deepEqual(trapped, []);
  assert.ok(!existsSync(CANARY), "the canary was not created");
});

Deno.test("hostile pickles: inside a zip checkpoint and a legacy torch.save file, refused by name", () => {
  withTraps(() => {
    for (const [group, globals] of Object.entries(DANGEROUS)) {
      for (const [m, name] of globals) {
        const q = qualname(m, name);
        const pid = { key: "0", storage: "FloatStorage", numel: 1, shape: [1] };
        const extra = (p: Pickle) => p.str("x").global(m, name).value([CMD]).reduce().setitem();
        const files: [string, Uint8Array][] = [
          ["evil.pth", makeZipCheckpoint(torchPickle([["w", pid]], { extra }), { "0": f32bytes([1]) })],
          [
            "evil-legacy.pth",
            makeLegacyCheckpoint(torchPickle([["w", pid]], { legacy: true, extra }), [[
              "0",
              f32bytes([1]),
              1,
            ]]),
          ],
        ];
        for (const [file, bytes] of files) {
          expectRefused(
            `${group}: ${q} in ${file}`,
            () => parseCheckpoint(bytes, file),
            UnsafePickleError,
            (e) => {
              assert.equal(e.key, q);
              assert.ok(
                e.message.startsWith(`${file}: '${printable(q)}': refusing pickle global '${printable(q)}'`),
                e.message,
              );
            },
          );
        }
      }
    }
  });
  assert.deepEqual(trapped, []);
  assert.ok(!existsSync(CANARY));
});

Deno.test("hostile pickles: extension codes, wrong persistent ids, wrong storage types, calls on data", () => {
  const groups = new Set<string>();
  withTraps(() => {
    for (const c of OTHER) {
      groups.add(c.group);
      if (c.bare) {
        expectRefused(
          `${c.group}: ${c.name}`,
          () => load(c.bytes, "hostile.pkl", c.noPersistentLoad),
          c.error,
          (e) => {
            assert.match(e.message, c.says, `${c.name}: ${e.message}`);
            assert.ok(e.message.includes("hostile.pkl"), e.message);
          },
        );
      }
      if (!c.container) continue;
      // as a zip checkpoint's data.pkl: the checkpoint's own persistent_load judges the ids
      expectRefused(
        `${c.group}: ${c.name} (zip)`,
        () => parseCheckpoint(makeZipCheckpoint(c.bytes, { "0": f32bytes([1]) }), "evil.pth"),
        c.error,
        (e) => {
          assert.ok(e.message.startsWith("evil.pth: "), e.message);
          assert.match(e.message, c.says, `${c.name} (zip): ${e.message}`);
        },
      );
    }
  });
  assert.deepEqual([...groups].sort(), [
    "calls on non-callables",
    "extension-registry codes",
    "persistent ids of the wrong shape",
    "storages and tensors of the wrong type",
  ]);
  assert.deepEqual(trapped, []);
  assert.ok(!existsSync(CANARY));
});

Deno.test("hostile pickles: legacy persistent ids of the wrong shape", () => {
  // legacy ids are ('storage', type, root_key, location, numel, view_metadata)
  const legacy = (pid: (p: Pickle) => void) => {
    const p = new Pickle().proto(2).global("torch._utils", "_rebuild_tensor_v2").mark();
    pid(p);
    p.binpersid().int(0).value([1]).value([1]).bool(false).none().tuple().reduce().stop();
    return makeLegacyCheckpoint(p.bytesOut(), [["0", f32bytes([1]), 1]]);
  };
  const cases: [string, Uint8Array, RegExp][] = [
    [
      "zip-style 5-tuple",
      legacy((p) =>
        p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(1).tuple()
      ),
      /tuple\(5\) is not a \('storage', type, key, location, numel, view\)/,
    ],
    [
      "view metadata is a str",
      legacy((p) =>
        p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(1).str("v").tuple()
      ),
      /storage view metadata is a str/,
    ],
    [
      "view outside its root",
      legacy((p) =>
        p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(1).value(["v", 0, 5])
          .tuple()
      ),
      /storage view 'v' \(0, 5\) is outside '0'/,
    ],
    [
      "a whole pickled nn.Module",
      legacy((p) => p.value(["module", "T2T_ViT", "t2t_vit.py", "class T2T_ViT: ..."])),
      /whole nn.Module/,
    ],
    [
      "root key is a deeply nested tuple",
      legacy((p) => {
        p.mark().str("storage").global("torch", "FloatStorage").int(0);
        for (let i = 0; i < 50_000; i++) p.raw(OP.TUPLE1);
        p.str("cpu").int(1).none().tuple();
      }),
      /bad storage key tuple/,
    ],
  ];
  withTraps(() => {
    for (const [what, bytes, re] of cases) {
      expectRefused(what, () => parseCheckpoint(bytes, "evil-legacy.pth"), CheckpointError, (e) => {
        assert.match(e.message, re, what);
        assert.ok(e.message.startsWith("evil-legacy.pth: "), e.message);
      });
    }
  });
  assert.deepEqual(trapped, []);
});

Deno.test("hostile pickles: the CLI refuses them too, exits 1 with one line, writes nothing, runs nothing", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "t2t-hostile-cli-" });
  try {
    const pid = { key: "0", storage: "FloatStorage", numel: 1, shape: [1] };
    const files: [string, Uint8Array, string][] = [
      [
        "popen.pth",
        makeZipCheckpoint(
          torchPickle([["w", pid]], {
            extra: (p) =>
              p.str("x").global("subprocess", "Popen").value([["sh", "-c", CMD]]).reduce().setitem(),
          }),
          { "0": f32bytes([1]) },
        ),
        "subprocess.Popen",
      ],
      [
        "runpy.pth",
        makeLegacyCheckpoint(
          torchPickle([["w", pid]], {
            legacy: true,
            extra: (p) => p.str("x").stackGlobal("runpy", "_run_code").value([CMD, null]).reduce().setitem(),
          }),
          [["0", f32bytes([1]), 1]],
        ),
        "runpy._run_code",
      ],
    ];
    for (const [name, bytes, q] of files) {
      Deno.writeFileSync(`${dir}/${name}`, bytes);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL("../../convert.ts", import.meta.url).pathname, name],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr).trim();
      assert.equal(out.code, 1, err);
      assert.equal(err.split("\n").length, 1, `one line: ${err}`);
      assert.ok(err.includes(`'${printable(q)}'`) && err.includes("nothing was executed"), err);
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["popen.pth", "runpy.pth"]);
    assert.ok(!existsSync(CANARY), "the canary was not created");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("hostile pickles: the traps work (spawning, eval, fetch, writes are caught)", () => {
  const before = trapped.length;
  withTraps(() => {
    assert.throws(() => new Deno.Command("true"), /trap: Command/);
    assert.throws(() => globalThis.eval("1"), /trap: eval/);
    assert.throws(() => fetch("http://127.0.0.1:9"), /trap: fetch/);
    assert.throws(() => Deno.writeFileSync(CANARY, new Uint8Array(1)), /trap: writeFileSync/);
  });
  assert.deepEqual(trapped.splice(before), ["Command", "eval", "fetch", "writeFileSync"]);
  assert.ok(!existsSync(CANARY));
  assert.equal(typeof Deno.Command, "function", "restored");
});

Deno.test("hostile pickles: the canary works (the payload really would create it)", async () => {
  // The corpus' payload, run by a shell, does create the canary: so its absence above means nothing ran.
  const probe = `${CANARY_DIR}/probe`;
  const out = await new Deno.Command("sh", { args: ["-c", CMD.replace(CANARY, probe)] }).output();
  assert.equal(out.code, 0);
  assert.ok(existsSync(probe));
  Deno.removeSync(probe);
  assert.ok(!existsSync(CANARY));
  Deno.removeSync(CANARY_DIR, { recursive: true });
});

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
