/**
 * A safe unpickler: a small pickle virtual machine for protocols 0 to 5 that never executes anything.
 *
 * Python's unpickler imports whatever `module.name` a pickle names and calls it, which is how a checkpoint
 * downloaded from the internet can run code. This one resolves every global through an allowlist supplied by
 * the caller; an allowlisted global is an inert descriptor whose behaviour is our own TypeScript (building a
 * dict, a tensor record, a namespace). Any other global, any extension-registry code and any call on a value
 * that is not an allowlisted global is refused with an {@link UnsafePickleError} that names it.
 *
 * The machine is iterative (no recursion, so deep nesting cannot overflow the JS stack), every length is
 * checked against the bytes that are really there before anything is allocated, memo indices live in a Map
 * (a huge index costs nothing), and integers are capped at Python's own 4300-digit limit.
 *
 * @module
 */

import { CheckpointError, UnsafePickleError } from "../src/core/errors.ts";

/**
 * An unpickled Python value, as inert data:
 * `None` → `null`, `bool` → `boolean`, `int` → `number` (or `bigint` beyond 2^53), `float` → `number`,
 * `str` → `string`, `bytes`/`bytearray` → `Uint8Array`, `list` → array, `tuple` → frozen array,
 * `dict`/`OrderedDict` → {@link PyDict}, `set`/`frozenset` → `Set`, anything an allowlist builds →
 * {@link PyObject} (or a caller-defined object such as a tensor record).
 */
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyDict
  | Set<PyValue>
  | PyObject
  | PyGlobal
  | object;

/** A Python dict (or OrderedDict): insertion-ordered, keys compared like JS Map keys. */
export class PyDict extends Map<PyValue, PyValue> {
  /** The Python class: `"dict"` or `"collections.OrderedDict"`. */
  pyClass: string;
  private _attrs: Map<string, PyValue> | undefined;
  /** Attributes set by BUILD (an OrderedDict state_dict carries `_metadata` this way); made on first use. */
  get attrs(): Map<string, PyValue> {
    return this._attrs ??= new Map();
  }
  /** Makes an empty dict of the given Python class. */
  constructor(pyClass = "dict") {
    super();
    this.pyClass = pyClass;
  }
}

/**
 * An instance of an allowlisted Python class, kept as data: its class name, the arguments it was created
 * with, and the attributes BUILD gave it (e.g. an `argparse.Namespace`'s fields).
 */
export class PyObject {
  /** `module.name` of the class. */
  readonly pyClass: string;
  /** Positional arguments it was created with. */
  readonly args: PyValue[];
  /** Attributes (from BUILD state or keyword arguments). */
  readonly attrs: Map<string, PyValue> = new Map();
  /** A decoded plain value, when the class has one (a numpy scalar's number, a path's string). */
  value?: PyValue;
  /** Makes a record of `pyClass` built from `args`. */
  constructor(pyClass: string, args: PyValue[] = []) {
    this.pyClass = pyClass;
    this.args = args;
  }
}

/** What an allowlisted global does when the pickle uses it. Each hook receives inert values only. */
export interface GlobalBehaviour {
  /** REDUCE (`f(*args)`): returns the value. Absent: the global cannot be called. */
  call?: (args: readonly PyValue[], ctx: CallContext) => PyValue;
  /** NEWOBJ / NEWOBJ_EX / OBJ / INST (`cls.__new__(cls, *args)`): returns the new object. */
  construct?: (args: readonly PyValue[], kwargs: PyDict | null, ctx: CallContext) => PyValue;
}

/** Passed to {@link GlobalBehaviour} hooks so their errors can name the file and offset. */
export interface CallContext {
  /** File name for error messages. */
  file: string;
  /** Byte offset of the opcode being run. */
  offset: number;
  /** `module.name` of the global being called. */
  global: string;
  /**
   * Charges `count` copied items of `each` bytes ({@link COPY_COST}) against the pickle's copying budget
   * ({@link workBudget}); throws a {@link CheckpointError} once the budget is spent. Hooks call it before
   * copying anything whose size the pickle controls, so memo references cannot replay a big copy for free.
   */
  charge(count: number, each: number): void;
}

/** An allowlisted global as it sits on the pickle stack: a name and our own behaviour, never Python code. */
export class PyGlobal {
  /** `module.name`. */
  readonly qualname: string;
  /** What REDUCE/NEWOBJ do with it. */
  readonly behaviour: GlobalBehaviour;
  /** Wraps a resolved allowlist entry. */
  constructor(qualname: string, behaviour: GlobalBehaviour) {
    this.qualname = qualname;
    this.behaviour = behaviour;
  }
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** File name used in error messages (default `<pickle>`). */
  file?: string;
  /** The pickle's record inside the file (`archive/data.pkl`), named in error messages. */
  record?: string;
  /** Where the pickle starts in `bytes` (default 0). */
  offset?: number;
  /**
   * Resolves `module`, `name` to an allowlisted behaviour, or `undefined` to refuse it. Names arrive with
   * Python 2 module names already mapped (`__builtin__` → `builtins`, `copy_reg` → `copyreg`).
   */
  resolveGlobal: (module: string, name: string) => GlobalBehaviour | undefined;
  /** Resolves a persistent id (BINPERSID / PERSID). Absent: persistent ids are refused. */
  persistentLoad?: (pid: PyValue, ctx: CallContext) => PyValue;
  /**
   * Set when `bytes` is only a prefix of the data: running off its end then throws {@link NeedMoreData}
   * instead of a truncation error, so the caller can retry with more bytes.
   */
  partial?: boolean;
  /**
   * With `partial`: how many bytes the whole data has from the start of `bytes`. A length that reaches past
   * this is reported as truncation at once instead of asking for more.
   */
  available?: number;
}

/** Result of {@link unpickle}: the value and where the pickle ended. */
export interface UnpickleResult {
  /** The unpickled value. */
  value: PyValue;
  /** Offset just past the STOP opcode. */
  end: number;
  /** The protocol named by a PROTO opcode (0 when there is none). */
  protocol: number;
}

/** Thrown (only with `partial: true`) when the pickle runs past the bytes given; retry with more. */
export class NeedMoreData extends Error {
  /** Makes the signal. */
  constructor() {
    super("pickle needs more bytes");
  }
}

/**
 * The copying budget of a pickle of `n` bytes, in bytes of memory: {@link WORK_PER_BYTE} per byte of pickle
 * plus {@link WORK_SLACK}. Charged is everything the machine or an allowlisted hook copies out of a value
 * that already exists (a memo reference makes such a copy cost a few bytes of pickle), at the memory it
 * takes ({@link COPY_COST}); everything else the machine builds is already proportional to the bytes it
 * reads. Real checkpoints use well under 1% of it.
 */
export function workBudget(n: number): number {
  return WORK_PER_BYTE * n + WORK_SLACK;
}
/** See {@link workBudget}. */
export const WORK_PER_BYTE = 4;
/** See {@link workBudget}: 16 MiB. */
export const WORK_SLACK: number = 16 << 20;
/** What one copied item costs against {@link workBudget}: about the memory it takes in the engine. */
export const COPY_COST: Readonly<{ byte: number; char: number; element: number; entry: number }> = Object
  .freeze({ byte: 1, char: 2, element: 8, entry: 64 });
/**
 * The longest text a pickle may decode in one string, line or key: 64 MiB (JS strings stop near 512 MiB, and no
 * checkpoint holds a string of this size).
 */
export const MAX_TEXT_BYTES: number = 64 << 20;

/** Python's own limit on decimal digits in an int (sys.int_info.default_max_str_digits). */
const MAX_INT_DIGITS = 4300;
/** The most bytes a LONG4 may have (4300 decimal digits fit in 1786 bytes). */
const MAX_LONG_BYTES = 1800;

const MARK = Symbol("mark");

const PY2_MODULES: ReadonlyMap<string, string> = new Map([
  ["__builtin__", "builtins"],
  ["copy_reg", "copyreg"],
  ["exceptions", "builtins"],
]);

const OPNAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

const utf8 = new TextDecoder("utf-8");
const latin1 = new TextDecoder("latin1");

/** True for a Python tuple as this unpickler represents it (a frozen array). */
export function isTuple(v: unknown): v is readonly PyValue[] {
  return Array.isArray(v) && Object.isFrozen(v);
}

/** A short human description of a value's Python type, for messages. */
export function pyTypeName(v: unknown): string {
  if (v === null) return "None";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "bigint") return "int";
  if (typeof v === "string") return "str";
  if (v instanceof Uint8Array) return "bytes";
  if (Array.isArray(v)) return Object.isFrozen(v) ? "tuple" : "list";
  if (v instanceof PyDict) return v.pyClass;
  if (v instanceof Set) return "set";
  if (v instanceof PyObject) return v.pyClass;
  if (v instanceof PyGlobal) return v.qualname;
  if (typeof v === "object" && v !== null) return (v as { constructor: { name: string } }).constructor.name;
  return typeof v;
}

/**
 * A short, Python-like rendering of an unpickled value for messages and report keys: bounded in depth and
 * length, so a pickle's deeply nested or huge structure cannot overflow the stack or flood a message (which
 * `String()` of a nested array would).
 *
 * @example
 * ```ts
 * import { pyRepr } from "./pickle.ts";
 * pyRepr(Object.freeze([1, "a", null])); // "(1, 'a', None)"
 * ```
 */
export function pyRepr(v: unknown, maxLength = 80): string {
  let out = "";
  const put = (s: string): boolean => {
    out += s;
    return out.length < maxLength;
  };
  const go = (x: unknown, depth: number): boolean => {
    if (x === null) return put("None");
    if (typeof x === "boolean") return put(x ? "True" : "False");
    if (typeof x === "number") {
      return put(Number.isNaN(x) ? "nan" : x === Infinity ? "inf" : x === -Infinity ? "-inf" : String(x));
    }
    if (typeof x === "bigint") return put(String(x));
    if (typeof x === "string") return put(`'${x.length > maxLength ? x.slice(0, maxLength) : x}'`);
    if (x instanceof Uint8Array) return put(`<bytes of ${x.length}>`);
    if (x instanceof PyGlobal) return put(x.qualname);
    if (x instanceof PyObject) return put(x.pyClass);
    if (depth >= 4) return put("…");
    const items = (open: string, close: string, list: Iterable<unknown>, pairs: boolean): boolean => {
      if (!put(open)) return false;
      let first = true;
      for (const item of list) {
        if (!first && !put(", ")) return false;
        first = false;
        if (pairs) {
          const [k, val] = item as [unknown, unknown];
          if (!go(k, depth + 1) || !put(": ") || !go(val, depth + 1)) return false;
        } else if (!go(item, depth + 1)) return false;
      }
      return put(close);
    };
    if (Array.isArray(x)) {
      if (Object.isFrozen(x)) return items("(", x.length === 1 ? ",)" : ")", x, false);
      return items("[", "]", x, false);
    }
    if (x instanceof PyDict) return items("{", "}", x, true);
    if (x instanceof Set) return items("{", "}", x, false);
    if (typeof x === "object") {
      return put(`<${(x as { constructor?: { name?: string } }).constructor?.name ?? "object"}>`);
    }
    return put(typeof x);
  };
  go(v, 0);
  return out.length > maxLength ? out.slice(0, maxLength - 1) + "…" : out;
}

/** A dict key as text: strings as themselves, anything else as a bounded {@link pyRepr}. */
export function keyText(k: unknown): string {
  return typeof k === "string" ? k : typeof k === "number" || typeof k === "bigint" ? String(k) : pyRepr(k);
}

function fmtGlobal(module: string, name: string): string {
  return `${module}.${name}`;
}

/**
 * Runs a pickle without executing anything: only globals that `resolveGlobal` allows are accepted, and they
 * run our own inert code.
 *
 * @throws {UnsafePickleError} for a refused global, extension code, persistent id or call, naming it
 * @throws {CheckpointError} for malformed or truncated pickles
 *
 * @example
 * ```ts
 * import { PyDict, unpickle } from "./pickle.ts";
 * // {"a": 1} pickled with protocol 2
 * const bytes = new Uint8Array([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x4b, 1, 0x73, 0x2e]);
 * const { value } = unpickle(bytes, { resolveGlobal: () => undefined });
 * (value as PyDict).get("a"); // 1
 * ```
 */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions): UnpickleResult {
  return new Machine(bytes, opts).run();
}

class Machine {
  private readonly b: Uint8Array;
  private readonly dv: DataView;
  private pos: number;
  private readonly file: string;
  private readonly opts: UnpickleOptions;
  private opStart = 0;
  private protocol = 0;
  private work = 0;
  private readonly workLimit: number;

  constructor(bytes: Uint8Array, opts: UnpickleOptions) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = opts.offset ?? 0;
    this.file = opts.file ?? "<pickle>";
    this.opts = opts;
    this.workLimit = workBudget(opts.available ?? bytes.length - this.pos);
  }

  /** Charges `count` items of `each` bytes of copying against the budget (see {@link workBudget}). */
  private charge(count: number, each: number): void {
    this.work += count * each;
    if (this.work > this.workLimit) {
      this.fail(
        `the pickle asks for more than ${this.workLimit} bytes of copying (${WORK_PER_BYTE} per byte of ` +
          `pickle + ${WORK_SLACK >> 20} MiB): memo references replaying big copies; refusing`,
      );
    }
  }

  private fail(msg: string): never {
    const where = this.opts.record ? ` ${this.opts.record}` : "";
    throw new CheckpointError(`pickle${where}: ${msg} (at byte ${this.opStart})`, {
      file: this.file,
      offset: this.opStart,
    });
  }

  private unsafe(msg: string, key?: string): never {
    const where = this.opts.record ? ` in ${this.opts.record}` : "";
    throw new UnsafePickleError(`${msg}${where}; nothing was executed`, {
      file: this.file,
      key,
      offset: this.opStart,
    });
  }

  private more(p: number, n: number): boolean {
    const avail = this.opts.available;
    return this.opts.partial === true && (avail === undefined || n <= avail - p);
  }

  private need(n: number): number {
    const p = this.pos;
    if (n > this.b.length - p) {
      if (this.more(p, n)) throw new NeedMoreData();
      this.fail(`truncated: needs ${n} more bytes, ${this.b.length - p} left`);
    }
    this.pos = p + n;
    return p;
  }

  private u8(): number {
    return this.b[this.need(1)];
  }

  private u16(): number {
    return this.dv.getUint16(this.need(2), true);
  }

  private i32(): number {
    return this.dv.getInt32(this.need(4), true);
  }

  private u32(): number {
    return this.dv.getUint32(this.need(4), true);
  }

  private u64(): number {
    const p = this.need(8);
    const lo = this.dv.getUint32(p, true);
    const hi = this.dv.getUint32(p + 4, true);
    if (hi >= 0x200000) this.fail("64-bit length does not fit in the file");
    return hi * 0x100000000 + lo;
  }

  private bytes(n: number): Uint8Array {
    if (n < 0) this.fail(`negative length ${n}`);
    const p = this.need(n);
    return this.b.subarray(p, p + n);
  }

  private line(): string {
    const end = this.b.indexOf(0x0a, this.pos);
    if (end < 0) {
      if (this.more(this.b.length, 1)) throw new NeedMoreData();
      this.fail("truncated: missing end of line");
    }
    if (end - this.pos > MAX_TEXT_BYTES) {
      this.fail(`a text line of ${end - this.pos} bytes exceeds the limit`);
    }
    const s = latin1.decode(this.b.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }

  run(): UnpickleResult {
    try {
      return this.loop();
    } catch (e) {
      // Engine limits that bad input can reach (a Map past 2^24 entries, an array or string past the engine's
      // maximum, memory for a huge container) become this reader's typed error.
      if (e instanceof RangeError || e instanceof TypeError) {
        this.fail(`${e.message} (an engine limit: the pickle's data is too large)`);
      }
      throw e;
    }
  }

  private loop(): UnpickleResult {
    let stack: (PyValue | typeof MARK)[] = [];
    const markStack: (PyValue | typeof MARK)[][] = [];
    const memo = new Map<number, PyValue>();
    const b = this.b;

    const pop = (): PyValue => {
      if (stack.length === 0) this.fail("stack underflow");
      return stack.pop() as PyValue;
    };
    const top = (): PyValue => {
      if (stack.length === 0) this.fail("stack underflow");
      return stack[stack.length - 1] as PyValue;
    };
    const popMark = (): PyValue[] => {
      const items = stack as PyValue[];
      const prev = markStack.pop();
      if (prev === undefined) this.fail("MARK missing");
      stack = prev;
      return items;
    };
    const charge = (count: number, each: number) => this.charge(count, each);
    const ctx = (global: string): CallContext => ({ file: this.file, offset: this.opStart, global, charge });
    const resolve = (module: string, name: string): PyGlobal => {
      const mod = PY2_MODULES.get(module) ?? module;
      const q = fmtGlobal(mod, name);
      const beh = this.opts.resolveGlobal(mod, name);
      if (!beh) this.unsafe(`refusing pickle global '${q}' (not in the allowlist)`, q);
      return new PyGlobal(q, beh);
    };
    const construct = (cls: PyValue, args: PyValue, kwargs: PyDict | null, op: string): PyValue => {
      if (!(cls instanceof PyGlobal)) this.unsafe(`${op} on a ${pyTypeName(cls)}, which is not a class`);
      if (!isTuple(args) && !Array.isArray(args)) this.fail(`${op} arguments are a ${pyTypeName(args)}`);
      const c = cls.behaviour.construct;
      if (!c) this.unsafe(`refusing to instantiate '${cls.qualname}'`, cls.qualname);
      return this.guard(() => c(args as PyValue[], kwargs, ctx(cls.qualname)));
    };

    for (;;) {
      this.opStart = this.pos;
      if (this.pos >= b.length) {
        if (this.more(this.pos, 1)) throw new NeedMoreData();
        this.fail("truncated: no STOP opcode");
      }
      const op = b[this.pos++];
      switch (op) {
        case 0x80: { // PROTO
          const v = this.u8();
          if (v > 5) this.fail(`unsupported pickle protocol ${v}`);
          this.protocol = v;
          break;
        }
        case 0x95: { // FRAME
          const n = this.u64();
          if (n > b.length - this.pos && !this.opts.partial) {
            this.fail(`frame of ${n} bytes runs past the end`);
          }
          break;
        }
        case 0x2e: { // STOP
          const v = pop();
          return { value: v, end: this.pos, protocol: this.protocol };
        }
        case 0x28: // MARK
          markStack.push(stack);
          stack = [];
          break;
        case 0x31: // POP_MARK
          popMark();
          break;
        case 0x30: // POP
          if (stack.length === 0) this.fail("stack underflow");
          stack.pop();
          break;
        case 0x32: // DUP
          stack.push(top());
          break;
        // memo
        case 0x70: // PUT
          memo.set(this.memoIndex(this.line()), top());
          break;
        case 0x71: // BINPUT
          memo.set(this.u8(), top());
          break;
        case 0x72: // LONG_BINPUT
          memo.set(this.u32(), top());
          break;
        case 0x94: // MEMOIZE
          memo.set(memo.size, top());
          break;
        case 0x67: // GET
          stack.push(this.memoGet(memo, this.memoIndex(this.line())));
          break;
        case 0x68: // BINGET
          stack.push(this.memoGet(memo, this.u8()));
          break;
        case 0x6a: // LONG_BINGET
          stack.push(this.memoGet(memo, this.u32()));
          break;
        // constants and numbers
        case 0x4e: // NONE
          stack.push(null);
          break;
        case 0x88: // NEWTRUE
          stack.push(true);
          break;
        case 0x89: // NEWFALSE
          stack.push(false);
          break;
        case 0x49: { // INT
          const s = this.line();
          if (s === "00") stack.push(false);
          else if (s === "01") stack.push(true);
          else stack.push(this.parseDecimal(s));
          break;
        }
        case 0x4c: { // LONG
          const s = this.line();
          stack.push(this.parseDecimal(s.endsWith("L") ? s.slice(0, -1) : s));
          break;
        }
        case 0x46: { // FLOAT
          const s = this.line().trim();
          // `\d+(\.\d*)?` rather than `\d+\.?\d*`: the latter backtracks quadratically on a long run of digits
          if (!/^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|nan|infinity)$/i.test(s)) {
            this.fail(`bad FLOAT ${JSON.stringify(s.slice(0, 40))}`);
          }
          const lower = s.toLowerCase().replace(/^\+/, "");
          stack.push(
            lower.endsWith("nan")
              ? NaN
              : lower === "inf" || lower === "infinity"
              ? Infinity
              : lower === "-inf" || lower === "-infinity"
              ? -Infinity
              : Number(s),
          );
          break;
        }
        case 0x4a: // BININT
          stack.push(this.i32());
          break;
        case 0x4b: // BININT1
          stack.push(this.u8());
          break;
        case 0x4d: // BININT2
          stack.push(this.u16());
          break;
        case 0x8a: // LONG1
          stack.push(this.decodeLong(this.bytes(this.u8())));
          break;
        case 0x8b: { // LONG4
          const n = this.i32();
          if (n < 0) this.fail(`negative LONG4 length ${n}`);
          if (n > MAX_LONG_BYTES) this.fail(`integer of ${n} bytes exceeds the ${MAX_LONG_BYTES}-byte limit`);
          stack.push(this.decodeLong(this.bytes(n)));
          break;
        }
        case 0x47: { // BINFLOAT (big-endian double)
          stack.push(this.dv.getFloat64(this.need(8), false));
          break;
        }
        // strings
        case 0x53: // STRING
          stack.push(this.decodeStringRepr(this.line()));
          break;
        case 0x54: { // BINSTRING
          const n = this.i32();
          if (n < 0) this.fail(`negative BINSTRING length ${n}`);
          stack.push(this.decodeText(this.bytes(n)));
          break;
        }
        case 0x55: // SHORT_BINSTRING
          stack.push(this.decodeText(this.bytes(this.u8())));
          break;
        case 0x56: // UNICODE (raw-unicode-escape)
          stack.push(decodeRawUnicodeEscape(this.line()));
          break;
        case 0x58: // BINUNICODE
          stack.push(this.utf8(this.bytes(this.u32())));
          break;
        case 0x8c: // SHORT_BINUNICODE
          stack.push(this.utf8(this.bytes(this.u8())));
          break;
        case 0x8d: // BINUNICODE8
          stack.push(this.utf8(this.bytes(this.u64())));
          break;
        case 0x42: // BINBYTES
          stack.push(this.bytes(this.u32()));
          break;
        case 0x43: // SHORT_BINBYTES
          stack.push(this.bytes(this.u8()));
          break;
        case 0x8e: // BINBYTES8
          stack.push(this.bytes(this.u64()));
          break;
        case 0x96: // BYTEARRAY8
          stack.push(this.bytes(this.u64()).slice());
          break;
        case 0x97: // NEXT_BUFFER
          this.fail("out-of-band buffers (NEXT_BUFFER) are not supported");
          break;
        case 0x98: // READONLY_BUFFER
          top();
          break;
        // tuples, lists, dicts, sets
        case 0x29: // EMPTY_TUPLE
          stack.push(Object.freeze([]));
          break;
        case 0x74: { // TUPLE
          const items = popMark(); // before reading `stack`: popMark replaces it
          stack.push(Object.freeze(items));
          break;
        }
        case 0x85: { // TUPLE1
          const a = pop();
          stack.push(Object.freeze([a]));
          break;
        }
        case 0x86: { // TUPLE2
          const y = pop();
          const x = pop();
          stack.push(Object.freeze([x, y]));
          break;
        }
        case 0x87: { // TUPLE3
          const z = pop();
          const y = pop();
          const x = pop();
          stack.push(Object.freeze([x, y, z]));
          break;
        }
        case 0x5d: // EMPTY_LIST
          stack.push([]);
          break;
        case 0x6c: { // LIST
          const items = popMark();
          stack.push(items);
          break;
        }
        case 0x61: { // APPEND
          const v = pop();
          const list = top();
          if (!Array.isArray(list) || Object.isFrozen(list)) this.fail(`APPEND to a ${pyTypeName(list)}`);
          list.push(v);
          break;
        }
        case 0x65: { // APPENDS
          const items = popMark();
          const list = top();
          if (!Array.isArray(list) || Object.isFrozen(list)) this.fail(`APPENDS to a ${pyTypeName(list)}`);
          for (let i = 0; i < items.length; i++) list.push(items[i]);
          break;
        }
        case 0x7d: // EMPTY_DICT
          stack.push(new PyDict());
          break;
        case 0x64: { // DICT
          const items = popMark();
          if (items.length % 2) this.fail("DICT with an odd number of items");
          const d = new PyDict();
          for (let i = 0; i < items.length; i += 2) d.set(this.key(items[i]), items[i + 1]);
          stack.push(d);
          break;
        }
        case 0x73: { // SETITEM
          const v = pop();
          const k = pop();
          const d = top();
          if (!(d instanceof PyDict)) this.fail(`SETITEM on a ${pyTypeName(d)}`);
          d.set(this.key(k), v);
          break;
        }
        case 0x75: { // SETITEMS
          const items = popMark();
          const d = top();
          if (!(d instanceof PyDict)) this.fail(`SETITEMS on a ${pyTypeName(d)}`);
          if (items.length % 2) this.fail("SETITEMS with an odd number of items");
          for (let i = 0; i < items.length; i += 2) d.set(this.key(items[i]), items[i + 1]);
          break;
        }
        case 0x8f: // EMPTY_SET
          stack.push(new Set<PyValue>());
          break;
        case 0x90: { // ADDITEMS
          const items = popMark();
          const s = top();
          if (!(s instanceof Set)) this.fail(`ADDITEMS on a ${pyTypeName(s)}`);
          for (const v of items) s.add(this.key(v));
          break;
        }
        case 0x91: { // FROZENSET
          const items = popMark();
          stack.push(new Set<PyValue>(items.map((v) => this.key(v))));
          break;
        }
        // globals, calls, objects
        case 0x63: { // GLOBAL
          const module = this.line();
          const name = this.line();
          stack.push(resolve(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = pop();
          const module = pop();
          if (typeof module !== "string" || typeof name !== "string") {
            this.fail(`STACK_GLOBAL needs two strings, got ${pyTypeName(module)} and ${pyTypeName(name)}`);
          }
          stack.push(resolve(module, name));
          break;
        }
        case 0x82: // EXT1
        case 0x83: // EXT2
        case 0x84: { // EXT4
          const code = op === 0x82 ? this.u8() : op === 0x83 ? this.u16() : this.i32();
          this.unsafe(`refusing extension registry code ${code} (${OPNAMES[op]})`, `ext:${code}`);
          break;
        }
        case 0x52: { // REDUCE
          const args = pop();
          const f = pop();
          if (!(f instanceof PyGlobal)) {
            this.unsafe(`REDUCE on a ${pyTypeName(f)}, which is not a callable global`);
          }
          if (!isTuple(args)) this.fail(`REDUCE arguments are a ${pyTypeName(args)}, not a tuple`);
          const call = f.behaviour.call;
          if (!call) this.unsafe(`refusing to call '${f.qualname}'`, f.qualname);
          stack.push(this.guard(() => call(args, ctx(f.qualname))));
          break;
        }
        case 0x81: { // NEWOBJ
          const args = pop();
          const cls = pop();
          stack.push(construct(cls, args, null, "NEWOBJ"));
          break;
        }
        case 0x92: { // NEWOBJ_EX
          const kwargs = pop();
          const args = pop();
          const cls = pop();
          if (!(kwargs instanceof PyDict)) {
            this.fail(`NEWOBJ_EX keyword arguments are a ${pyTypeName(kwargs)}`);
          }
          stack.push(construct(cls, args, kwargs, "NEWOBJ_EX"));
          break;
        }
        case 0x6f: { // OBJ
          const items = popMark();
          if (items.length === 0) this.fail("OBJ without a class");
          const cls = items[0];
          stack.push(construct(cls, Object.freeze(items.slice(1)), null, "OBJ"));
          break;
        }
        case 0x69: { // INST
          const module = this.line();
          const name = this.line();
          const cls = resolve(module, name);
          const items = popMark();
          stack.push(construct(cls, Object.freeze(items), null, "INST"));
          break;
        }
        case 0x62: { // BUILD
          const state = pop();
          const obj = top();
          this.build(obj, state);
          break;
        }
        case 0x50: { // PERSID
          const pid = this.line();
          stack.push(this.persistent(pid));
          break;
        }
        case 0x51: { // BINPERSID
          stack.push(this.persistent(pop()));
          break;
        }
        default:
          this.fail(`unknown opcode 0x${op.toString(16).padStart(2, "0")}`);
      }
    }
  }

  /** Runs an allowlist hook, turning anything but our typed errors into a CheckpointError. */
  private guard(f: () => PyValue): PyValue {
    try {
      return f();
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      throw new CheckpointError(`pickle: ${(e as Error).message} (at byte ${this.opStart})`, {
        file: this.file,
        offset: this.opStart,
        cause: e,
      });
    }
  }

  private persistent(pid: PyValue): PyValue {
    const pl = this.opts.persistentLoad;
    if (!pl) this.unsafe("refusing a persistent id (this pickle stream takes none)", "persistent_id");
    return this.guard(() =>
      pl(pid, {
        file: this.file,
        offset: this.opStart,
        global: "persistent_load",
        charge: (count, each) => this.charge(count, each),
      })
    );
  }

  private build(obj: PyValue, state: PyValue): void {
    if (obj instanceof PyDict) {
      // OrderedDict.__setstate__ is object's: a dict state sets attributes (state_dict._metadata).
      const dict = this.stateDict(state, obj.pyClass);
      if (dict) {
        this.charge(dict.size, COPY_COST.entry);
        for (const [k, v] of dict) obj.attrs.set(keyText(k), v);
      }
      return;
    }
    if (obj instanceof PyObject) {
      if (obj.pyClass === "numpy.dtype" || obj.pyClass === "numpy.ndarray") {
        obj.attrs.set("__state__", state);
        return;
      }
      const dict = this.stateDict(state, obj.pyClass);
      if (dict) {
        this.charge(dict.size, COPY_COST.entry);
        for (const [k, v] of dict) obj.attrs.set(keyText(k), v);
      }
      return;
    }
    if (obj !== null && typeof obj === "object" && "setState" in obj && typeof obj.setState === "function") {
      // Caller-defined records (tensors) accept and keep a state without acting on it.
      (obj as { setState: (s: PyValue) => void }).setState(state);
      return;
    }
    this.fail(`BUILD on a ${pyTypeName(obj)}`);
  }

  /** The attribute dict of a BUILD state: a dict, or (dict-or-None, slots-dict). */
  private stateDict(state: PyValue, cls: string): PyDict | null {
    if (state === null) return null;
    if (state instanceof PyDict) return state;
    if (isTuple(state) && state.length === 2) {
      const [d, slots] = state;
      const out = new PyDict();
      for (const part of [d, slots]) {
        if (part === null) continue;
        if (!(part instanceof PyDict)) this.fail(`BUILD state of ${cls} holds a ${pyTypeName(part)}`);
        this.charge(part.size, COPY_COST.entry);
        for (const [k, v] of part) out.set(k, v);
      }
      return out;
    }
    this.fail(`BUILD state of ${cls} is a ${pyTypeName(state)}`);
  }

  private key(k: PyValue): PyValue {
    if (Array.isArray(k) && !Object.isFrozen(k)) this.fail("unhashable list used as a dict key or set item");
    if (k instanceof PyDict) this.fail("unhashable dict used as a dict key or set item");
    return k;
  }

  private memoIndex(s: string): number {
    if (!/^\d{1,15}$/.test(s)) this.fail(`bad memo index ${JSON.stringify(s.slice(0, 40))}`);
    return Number(s);
  }

  private memoGet(memo: Map<number, PyValue>, i: number): PyValue {
    const v = memo.get(i);
    if (v === undefined) this.fail(`memo index ${i} was never stored`);
    return v;
  }

  private parseDecimal(s: string): number | bigint | boolean {
    const t = s.trim();
    if (!/^[+-]?\d+$/.test(t)) this.fail(`bad integer ${JSON.stringify(t.slice(0, 40))}`);
    const digits = t.replace(/^[+-]/, "").length;
    if (digits > MAX_INT_DIGITS) {
      this.fail(`integer of ${digits} digits exceeds the ${MAX_INT_DIGITS}-digit limit`);
    }
    const n = Number(t);
    if (Number.isSafeInteger(n)) return n;
    return BigInt(t);
  }

  private decodeLong(data: Uint8Array): number | bigint {
    const n = data.length;
    if (n === 0) return 0;
    if (n <= 6) {
      let v = 0;
      for (let i = n - 1; i >= 0; i--) v = v * 256 + data[i];
      if (data[n - 1] & 0x80) v -= 2 ** (8 * n);
      return v;
    }
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[i]);
    if (data[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return Number.isSafeInteger(Number(v)) && BigInt(Number(v)) === v ? Number(v) : v;
  }

  private textSize(data: Uint8Array): void {
    if (data.length > MAX_TEXT_BYTES) {
      this.fail(`a string of ${data.length} bytes exceeds the ${MAX_TEXT_BYTES}-byte limit`);
    }
  }

  private utf8(data: Uint8Array): string {
    this.textSize(data);
    return utf8.decode(data);
  }

  /** Python 2 str payloads: torch.load decodes them as UTF-8; fall back to latin-1 for other bytes. */
  private decodeText(data: Uint8Array): string {
    this.textSize(data);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(data);
    } catch {
      return latin1.decode(data);
    }
  }

  private decodeStringRepr(s: string): string {
    const t = s.trimEnd(); // (not /\s+$/: quadratic on long runs of spaces)
    if (t.length < 2 || t[0] !== t[t.length - 1] || (t[0] !== "'" && t[0] !== '"')) {
      this.fail("the STRING opcode argument must be quoted");
    }
    const body = t.slice(1, -1);
    // One byte per character at most: decode into a byte array of that size (not a number[] per byte).
    const out = new Uint8Array(body.length);
    let o = 0;
    const hex = (c: number): number =>
      c >= 0x30 && c <= 0x39
        ? c - 0x30
        : c >= 0x61 && c <= 0x66
        ? c - 0x57
        : c >= 0x41 && c <= 0x46
        ? c - 0x37
        : -1;
    for (let i = 0; i < body.length; i++) {
      const c = body.charCodeAt(i);
      if (c !== 0x5c) {
        out[o++] = c & 0xff;
        continue;
      }
      if (i + 1 >= body.length) this.fail("STRING ends with a backslash");
      const n = body.charCodeAt(++i);
      const simple = SIMPLE_ESCAPES.get(n);
      if (simple !== undefined) {
        if (simple >= 0) out[o++] = simple;
      } else if (n === 0x78) { // x
        const h1 = hex(body.charCodeAt(i + 1)), h2 = hex(body.charCodeAt(i + 2));
        if (h1 < 0 || h2 < 0) this.fail("bad \\x escape in STRING");
        out[o++] = h1 * 16 + h2;
        i += 2;
      } else if (n >= 0x30 && n <= 0x37) {
        let v = 0;
        let j = i;
        while (j < i + 3 && j < body.length && body.charCodeAt(j) >= 0x30 && body.charCodeAt(j) <= 0x37) {
          v = v * 8 + body.charCodeAt(j) - 0x30;
          j++;
        }
        out[o++] = v & 0xff;
        i = j - 1;
      } else {
        out[o++] = 0x5c;
        out[o++] = n & 0xff;
      }
    }
    return this.decodeText(out.subarray(0, o));
  }
}

/** The single-character escapes of Python's string literals (a backslash-newline continues the line: -1). */
const SIMPLE_ESCAPES: ReadonlyMap<number, number> = new Map([
  [0x5c, 0x5c],
  [0x27, 0x27],
  [0x22, 0x22],
  [0x61, 7],
  [0x62, 8],
  [0x66, 12],
  [0x6e, 10],
  [0x72, 13],
  [0x74, 9],
  [0x76, 11],
  [0x0a, -1],
]);

/** Decodes Python's raw-unicode-escape (the UNICODE opcode): only \uXXXX and \UXXXXXXXX are escapes. */
function decodeRawUnicodeEscape(s: string): string {
  if (!s.includes("\\")) return s;
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (m, u4: string, u8: string) => {
    const cp = parseInt(u4 ?? u8, 16);
    return cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
  });
}
