/**
 * The ONNX file format, written and read by our own small protobuf encoder and decoder: the subset of
 * `onnx.proto` a feed-forward inference graph needs (`ModelProto`, `GraphProto`, `NodeProto`, `AttributeProto`,
 * `TensorProto`, `ValueInfoProto`, `OperatorSetIdProto`, `StringStringEntryProto`). No knowledge of any model
 * here: {@linkcode OnnxGraphBuilder} collects nodes and initializers and {@linkcode encodeOnnxModel} writes the
 * bytes; {@linkcode decodeOnnxModel} reads them back (used to verify written files and in tests).
 *
 * Field numbers follow `onnx/onnx.proto` (proto2). Repeated scalars are written unpacked, as proto2 does by
 * default; the decoder accepts both packed and unpacked forms.
 *
 * @example
 * ```ts
 * import { decodeOnnxModel, encodeOnnxModel, OnnxGraphBuilder } from "./onnx.ts";
 * const g = new OnnxGraphBuilder("tiny");
 * g.input("x", "float32", ["batch", 4]);
 * const w = g.initializer("w", "float32", [4, 2], new Float32Array(8).fill(0.5));
 * g.node("MatMul", ["x", w], { outputs: ["y"] });
 * g.output("y", "float32", ["batch", 2]);
 * const bytes = encodeOnnxModel(g, { opset: 17 });
 * decodeOnnxModel(bytes).graph.initializers[0].name; // "w"
 * ```
 *
 * @module
 */

import { T2tVitError } from "../src/core/errors.ts";

/** A malformed ONNX file, or a graph that cannot be written. */
export class OnnxError extends T2tVitError {}

/** Element types of ONNX tensors we write and read, by ONNX's `TensorProto.DataType` code. */
export const ONNX_DTYPES = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
} as const;

/** An ONNX element type name. */
export type OnnxDType = keyof typeof ONNX_DTYPES;

const DTYPE_BYTES: Record<OnnxDType, number> = {
  float32: 4,
  uint8: 1,
  int8: 1,
  int32: 4,
  int64: 8,
  bool: 1,
  float16: 2,
  float64: 8,
};

/** The name of an ONNX `TensorProto.DataType` code, or undefined for codes outside our subset. */
export function onnxDTypeName(code: number): OnnxDType | undefined {
  return (Object.keys(ONNX_DTYPES) as OnnxDType[]).find((k) => ONNX_DTYPES[k] === code);
}

/**
 * The IR version that goes with an opset of the default domain (ONNX 1.8: opset 13, IR 7; 1.10-1.13: opsets
 * 15-18, IR 8; 1.14-1.15: opsets 19-20, IR 9; 1.16-1.17: opsets 21-22, IR 10).
 */
export function irVersionForOpset(opset: number): number {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

// ---------------------------------------------------------------------------------------------------------
// protobuf encoding

/** A protobuf message being built: a list of byte parts (large payloads are kept by reference, not copied). */
class Msg {
  readonly parts: Uint8Array[] = [];
  #partsLength = 0;
  #scratch: number[] = [];

  /** Bytes so far. */
  get length(): number {
    return this.#partsLength + this.#scratch.length;
  }

  #push(p: Uint8Array): void {
    this.parts.push(p);
    this.#partsLength += p.length;
  }

  #flush(): void {
    if (this.#scratch.length) {
      this.#push(Uint8Array.from(this.#scratch));
      this.#scratch = [];
    }
  }

  #varint(v: number | bigint): void {
    const s = this.#scratch;
    if (typeof v === "number" && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      let n = v;
      while (n >= 0x80) {
        s.push((n % 0x80) | 0x80);
        n = Math.floor(n / 0x80);
      }
      s.push(n);
      return;
    }
    // negative or big: 64-bit two's complement, 10 bytes for negatives
    let b = BigInt.asUintN(64, BigInt(v));
    while (b >= 0x80n) {
      s.push(Number(b & 0x7fn) | 0x80);
      b >>= 7n;
    }
    s.push(Number(b));
  }

  #key(field: number, wire: number): void {
    this.#varint(field * 8 + wire);
  }

  /** A varint field (int32, int64, enum; negative values as 64-bit two's complement). */
  int(field: number, v: number | bigint): this {
    this.#key(field, 0);
    this.#varint(v);
    return this;
  }

  /** A 32-bit float field. */
  float(field: number, v: number): this {
    this.#key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.#scratch.push(...b);
    return this;
  }

  /** A length-delimited bytes field; `data` is kept by reference. */
  bytes(field: number, data: Uint8Array): this {
    this.#key(field, 2);
    this.#varint(data.length);
    if (data.length < 64) this.#scratch.push(...data);
    else {
      this.#flush();
      this.#push(data);
    }
    return this;
  }

  /** A UTF-8 string field. */
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  /** An embedded message field. */
  message(field: number, m: Msg): this {
    m.#flush();
    this.#key(field, 2);
    this.#varint(m.length);
    this.#flush();
    for (const p of m.parts) this.#push(p);
    return this;
  }

  /** The message's bytes (one copy of every part). */
  finish(): Uint8Array {
    this.#flush();
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------
// graph building

/** An attribute value: numbers are ints unless listed in `floats` of {@linkcode NodeOptions}. */
export type AttrValue = number | string | number[] | OnnxTensor;

/** A tensor value (initializer or `Constant` attribute). */
export interface OnnxTensor {
  /** Name (initializers; empty for attribute values). */
  name: string;
  /** Element type. */
  dtype: OnnxDType;
  /** Dimensions. */
  dims: number[];
  /** Little-endian bytes in C order. */
  data: Uint8Array;
}

/** A graph input or output: name, element type and dimensions (a string is a symbolic dimension). */
export interface ValueInfo {
  /** Name of the value. */
  name: string;
  /** Element type. */
  dtype: OnnxDType;
  /** Dimensions; strings are named symbolic dimensions (`"batch"`). */
  dims: (number | string)[];
}

/** Options of {@linkcode OnnxGraphBuilder.node}. */
export interface NodeOptions {
  /** Output names (default: one fresh name per output, `outputCount` of them). */
  outputs?: string[];
  /** Number of outputs when `outputs` is not given (default 1). */
  outputCount?: number;
  /** The node's name (default: a fresh one). */
  name?: string;
  /** Attributes. */
  attrs?: Record<string, AttrValue>;
  /** Names of attributes whose numbers are floats (FLOAT / FLOATS) rather than ints. */
  floats?: string[];
}

/** A node of the graph. */
export interface OnnxNode {
  /** Operator. */
  opType: string;
  /** Input value names (`""` for an omitted optional input). */
  inputs: string[];
  /** Output value names. */
  outputs: string[];
  /** Node name. */
  name: string;
  /** Attributes. */
  attrs: Record<string, AttrValue>;
  /** Float attributes. */
  floats: Set<string>;
}

function toBytes(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Collects the nodes, initializers, inputs and outputs of one ONNX graph. */
export class OnnxGraphBuilder {
  /** Nodes in topological order. */
  readonly nodes: OnnxNode[] = [];
  /** Initializers in insertion order. */
  readonly initializers: OnnxTensor[] = [];
  /** Graph inputs. */
  readonly inputs: ValueInfo[] = [];
  /** Graph outputs. */
  readonly outputs: ValueInfo[] = [];
  readonly #names = new Set<string>();
  readonly #counts = new Map<string, number>();

  /** A graph called `name`. */
  constructor(readonly name: string) {}

  /** A fresh value name starting with `hint`. */
  fresh(hint: string): string {
    let n = this.#counts.get(hint) ?? 0;
    let name: string;
    do name = `${hint}_${n++}`; while (this.#names.has(name));
    this.#counts.set(hint, n);
    this.#names.add(name);
    return name;
  }

  #claim(name: string, what: string): string {
    if (this.#names.has(name)) throw new OnnxError(`duplicate ${what} name`, { key: name });
    this.#names.add(name);
    return name;
  }

  /** Declares a graph input. */
  input(name: string, dtype: OnnxDType, dims: (number | string)[]): string {
    this.inputs.push({ name: this.#claim(name, "input"), dtype, dims });
    return name;
  }

  /** Declares a graph output (an existing value). */
  output(name: string, dtype: OnnxDType, dims: (number | string)[]): void {
    this.outputs.push({ name, dtype, dims });
  }

  /**
   * Adds an initializer (a named constant tensor stored in the file). `data` is kept by reference until the
   * model is encoded.
   */
  initializer(name: string, dtype: OnnxDType, dims: number[], data: ArrayBufferView): string {
    const bytes = toBytes(data);
    const n = dims.reduce((a, b) => a * b, 1);
    if (bytes.length !== n * DTYPE_BYTES[dtype]) {
      throw new OnnxError(`${bytes.length} bytes do not hold ${dtype}[${dims.join(", ")}]`, { key: name });
    }
    this.initializers.push({ name: this.#claim(name, "initializer"), dtype, dims: [...dims], data: bytes });
    return name;
  }

  /** Adds a node; returns its output names. */
  node(opType: string, inputs: string[], opts: NodeOptions = {}): string[] {
    const outputs = opts.outputs?.map((o) => this.#claim(o, "value")) ??
      Array.from({ length: opts.outputCount ?? 1 }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({
      opType,
      inputs,
      outputs,
      name: opts.name ?? this.fresh(`n_${opType}`),
      attrs: opts.attrs ?? {},
      floats: new Set(opts.floats ?? []),
    });
    return outputs;
  }

  /** A node with one output; returns its name. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, floats: string[] = []): string {
    return this.node(opType, inputs, { attrs, floats })[0];
  }

  /** A `Constant` node holding an int64 tensor (1-D, or a scalar with `scalar: true`). */
  constInt64(values: number[], scalar = false): string {
    const data = new BigInt64Array(values.map((v) => BigInt(v)));
    const dims = scalar ? [] : [values.length];
    return this.op("Constant", [], { value: { name: "", dtype: "int64", dims, data: toBytes(data) } });
  }

  /** A `Constant` node holding a float32 tensor (a scalar by default). */
  constFloat(values: number[] | Float32Array, dims: number[] = []): string {
    const data = values instanceof Float32Array ? values : new Float32Array(values);
    return this.op("Constant", [], { value: { name: "", dtype: "float32", dims, data: toBytes(data) } });
  }
}

/** Options of {@linkcode encodeOnnxModel}. */
export interface EncodeOptions {
  /** Opset of the default domain. */
  opset: number;
  /** `producer_name` (default `"t2t-vit"`). */
  producerName?: string;
  /** `producer_version`. */
  producerVersion?: string;
  /** `doc_string` of the model. */
  docString?: string;
  /** `metadata_props`, in order. */
  metadata?: Record<string, string>;
}

function tensorMsg(t: OnnxTensor): Msg {
  const m = new Msg();
  for (const d of t.dims) m.int(1, d);
  m.int(2, ONNX_DTYPES[t.dtype]);
  if (t.name) m.string(8, t.name);
  m.bytes(9, t.data);
  return m;
}

function valueInfoMsg(v: ValueInfo): Msg {
  const shape = new Msg();
  for (const d of v.dims) {
    const dim = new Msg();
    if (typeof d === "number") dim.int(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new Msg().int(1, ONNX_DTYPES[v.dtype]).message(2, shape);
  const type = new Msg().message(1, tensorType);
  return new Msg().string(1, v.name).message(2, type);
}

function attrMsg(name: string, v: AttrValue, isFloat: boolean): Msg {
  const m = new Msg().string(1, name);
  if (typeof v === "string") m.string(4, v).int(20, 3);
  else if (typeof v === "number") {
    if (isFloat) m.float(2, v).int(20, 1);
    else {
      if (!Number.isSafeInteger(v)) throw new OnnxError(`attribute is not an integer: ${v}`, { key: name });
      m.int(3, v).int(20, 2);
    }
  } else if (Array.isArray(v)) {
    if (isFloat) { for (const x of v) m.float(7, x); }
    else {
      for (const x of v) {
        if (!Number.isSafeInteger(x)) throw new OnnxError(`attribute is not an integer: ${x}`, { key: name });
        m.int(8, x);
      }
    }
    m.int(20, isFloat ? 6 : 7);
  } else m.message(5, tensorMsg(v)).int(20, 4);
  return m;
}

function nodeMsg(n: OnnxNode): Msg {
  const m = new Msg();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.name);
  m.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attrs)) m.message(5, attrMsg(k, v, n.floats.has(k)));
  return m;
}

/**
 * Encodes the graph as an ONNX `ModelProto`. The initializers' bytes are copied once, into the result.
 *
 * @throws {OnnxError} when the file would exceed protobuf's 2 GiB limit or an attribute is malformed
 */
export function encodeOnnxModel(graph: OnnxGraphBuilder, opts: EncodeOptions): Uint8Array {
  const g = new Msg();
  for (const n of graph.nodes) g.message(1, nodeMsg(n));
  g.string(2, graph.name);
  for (const t of graph.initializers) g.message(5, tensorMsg(t));
  for (const v of graph.inputs) g.message(11, valueInfoMsg(v));
  for (const v of graph.outputs) g.message(12, valueInfoMsg(v));
  const m = new Msg();
  m.int(1, irVersionForOpset(opts.opset));
  m.string(2, opts.producerName ?? "t2t-vit");
  if (opts.producerVersion) m.string(3, opts.producerVersion);
  if (opts.docString) m.string(6, opts.docString);
  m.message(7, g);
  m.message(8, new Msg().string(1, "").int(2, opts.opset));
  for (const [k, v] of Object.entries(opts.metadata ?? {})) {
    m.message(14, new Msg().string(1, k).string(2, v));
  }
  if (m.length >= 2 ** 31) {
    throw new OnnxError(
      `the model needs ${m.length} bytes, over protobuf's 2 GiB limit (use dtype f16 or a smaller model)`,
    );
  }
  return m.finish();
}

// ---------------------------------------------------------------------------------------------------------
// protobuf decoding

interface Field {
  field: number;
  wire: number;
  /** varint value (as bigint when over 2^53), fixed32/fixed64 raw bytes, or length-delimited bytes. */
  value: number | bigint | Uint8Array;
}

function* fields(buf: Uint8Array, what: string): Generator<Field> {
  let p = 0;
  const varint = (): number | bigint => {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (p >= buf.length) throw new OnnxError(`truncated varint in ${what}`, { offset: p });
      const b = buf[p++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(result) : result;
      shift += 7n;
    }
    throw new OnnxError(`varint over 10 bytes in ${what}`, { offset: p });
  };
  while (p < buf.length) {
    const keyAt = p;
    const key = varint();
    const k = typeof key === "bigint" ? Number(key & 0xffffffffn) : key;
    const field = Math.floor(k / 8);
    const wire = k % 8;
    if (field === 0) throw new OnnxError(`field number 0 in ${what}`, { offset: keyAt });
    let value: number | bigint | Uint8Array;
    if (wire === 0) value = varint();
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (p + n > buf.length) throw new OnnxError(`truncated fixed field in ${what}`, { offset: p });
      value = buf.subarray(p, p + n);
      p += n;
    } else if (wire === 2) {
      const len = varint();
      if (typeof len !== "number" || p + len > buf.length) {
        throw new OnnxError(`length-delimited field ${field} runs past the end of ${what}`, { offset: p });
      }
      value = buf.subarray(p, p + len);
      p += len;
    } else throw new OnnxError(`unsupported wire type ${wire} in ${what}`, { offset: keyAt });
    yield { field, wire, value };
  }
}

function asInt(f: Field): number {
  const v = f.value;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(BigInt.asIntN(64, v));
  throw new OnnxError(`field ${f.field}: expected a varint`);
}

function asBytes(f: Field): Uint8Array {
  if (f.value instanceof Uint8Array && f.wire === 2) return f.value;
  throw new OnnxError(`field ${f.field}: expected a length-delimited field`);
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
function asString(f: Field): string {
  try {
    return UTF8.decode(asBytes(f));
  } catch (e) {
    if (e instanceof OnnxError) throw e;
    throw new OnnxError(`field ${f.field}: invalid UTF-8 string`);
  }
}

/** Repeated int64 in either the unpacked (varint) or packed (length-delimited) form. */
function pushInts(out: number[], f: Field): void {
  if (f.wire === 0) out.push(asInt(f));
  else for (const g of fields(asBytes(f), "packed ints")) out.push(asInt({ ...g, wire: 0 }));
}

/** A decoded tensor. */
export interface DecodedTensor {
  /** Name. */
  name: string;
  /** `TensorProto.DataType` code. */
  dataType: number;
  /** Dimensions. */
  dims: number[];
  /** The tensor's bytes (`raw_data`, or `float_data`/`int64_data`/`int32_data` re-encoded little-endian). */
  data: Uint8Array;
}

/** A decoded attribute. */
export interface DecodedAttribute {
  /** Name. */
  name: string;
  /** `AttributeProto.AttributeType` code. */
  type: number;
  /** FLOAT, INT or STRING value. */
  value?: number | string;
  /** FLOATS or INTS values. */
  values?: number[];
  /** TENSOR value. */
  tensor?: DecodedTensor;
}

/** A decoded node. */
export interface DecodedNode {
  /** Operator. */
  opType: string;
  /** Domain (`""` is the default ONNX domain). */
  domain: string;
  /** Name. */
  name: string;
  /** Inputs. */
  inputs: string[];
  /** Outputs. */
  outputs: string[];
  /** Attributes. */
  attributes: DecodedAttribute[];
}

/** A decoded ONNX model: what {@linkcode decodeOnnxModel} returns. */
export interface DecodedModel {
  /** `ir_version`. */
  irVersion: number;
  /** `producer_name`. */
  producerName: string;
  /** `producer_version`. */
  producerVersion: string;
  /** Opsets by domain (`""` is the default domain). */
  opsets: Map<string, number>;
  /** `metadata_props`. */
  metadata: Map<string, string>;
  /** The main graph. */
  graph: {
    name: string;
    nodes: DecodedNode[];
    initializers: DecodedTensor[];
    inputs: ValueInfo[];
    outputs: ValueInfo[];
  };
}

function decodeTensor(buf: Uint8Array): DecodedTensor {
  const t: DecodedTensor = { name: "", dataType: 0, dims: [], data: new Uint8Array(0) };
  const floats: number[] = [];
  const ints: number[] = [];
  let raw: Uint8Array | undefined;
  for (const f of fields(buf, "TensorProto")) {
    if (f.field === 1) pushInts(t.dims, f);
    else if (f.field === 2) t.dataType = asInt(f);
    else if (f.field === 8) t.name = asString(f);
    else if (f.field === 9) raw = asBytes(f);
    else if (f.field === 4) {
      if (f.wire === 5) floats.push(new DataView(asFixed(f)).getFloat32(0, true));
      else {
        const b = asBytes(f);
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        for (let i = 0; i + 4 <= b.length; i += 4) floats.push(dv.getFloat32(i, true));
      }
    } else if (f.field === 5 || f.field === 7) pushInts(ints, f);
    else if (f.field === 13 || f.field === 14) {
      if (f.field === 14 && asInt(f) === 1) {
        throw new OnnxError("tensor data stored in an external file is not supported", { key: t.name });
      }
    }
  }
  if (raw) t.data = raw;
  else if (floats.length) t.data = new Uint8Array(new Float32Array(floats).buffer);
  else if (ints.length) {
    t.data = t.dataType === ONNX_DTYPES.int64
      ? new Uint8Array(new BigInt64Array(ints.map((v) => BigInt(v))).buffer)
      : new Uint8Array(new Int32Array(ints).buffer);
  }
  return t;
}

function asFixed(f: Field): ArrayBuffer {
  const b = f.value as Uint8Array;
  return b.slice().buffer;
}

function decodeAttribute(buf: Uint8Array): DecodedAttribute {
  const a: DecodedAttribute = { name: "", type: 0 };
  for (const f of fields(buf, "AttributeProto")) {
    if (f.field === 1) a.name = asString(f);
    else if (f.field === 20) a.type = asInt(f);
    else if (f.field === 2) a.value = new DataView(asFixed(f)).getFloat32(0, true);
    else if (f.field === 3) a.value = asInt(f);
    else if (f.field === 4) a.value = asString(f);
    else if (f.field === 5) a.tensor = decodeTensor(asBytes(f));
    else if (f.field === 7) {
      a.values ??= [];
      if (f.wire === 5) a.values.push(new DataView(asFixed(f)).getFloat32(0, true));
      else {
        const b = asBytes(f);
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        for (let i = 0; i + 4 <= b.length; i += 4) a.values.push(dv.getFloat32(i, true));
      }
    } else if (f.field === 8) pushInts(a.values ??= [], f);
  }
  return a;
}

function decodeNode(buf: Uint8Array): DecodedNode {
  const n: DecodedNode = { opType: "", domain: "", name: "", inputs: [], outputs: [], attributes: [] };
  for (const f of fields(buf, "NodeProto")) {
    if (f.field === 1) n.inputs.push(asString(f));
    else if (f.field === 2) n.outputs.push(asString(f));
    else if (f.field === 3) n.name = asString(f);
    else if (f.field === 4) n.opType = asString(f);
    else if (f.field === 7) n.domain = asString(f);
    else if (f.field === 5) n.attributes.push(decodeAttribute(asBytes(f)));
  }
  return n;
}

function decodeValueInfo(buf: Uint8Array): ValueInfo {
  const v: ValueInfo = { name: "", dtype: "float32", dims: [] };
  for (const f of fields(buf, "ValueInfoProto")) {
    if (f.field === 1) v.name = asString(f);
    else if (f.field === 2) {
      for (const t of fields(asBytes(f), "TypeProto")) {
        if (t.field !== 1) continue;
        for (const tt of fields(asBytes(t), "TypeProto.Tensor")) {
          if (tt.field === 1) {
            const code = asInt(tt);
            const name = onnxDTypeName(code);
            if (!name) throw new OnnxError(`unsupported element type ${code}`, { key: v.name });
            v.dtype = name;
          } else if (tt.field === 2) {
            for (const d of fields(asBytes(tt), "TensorShapeProto")) {
              if (d.field !== 1) continue;
              let dim: number | string = "?";
              for (const dd of fields(asBytes(d), "Dimension")) {
                if (dd.field === 1) dim = asInt(dd);
                else if (dd.field === 2) dim = asString(dd);
              }
              v.dims.push(dim);
            }
          }
        }
      }
    }
  }
  return v;
}

/**
 * Decodes an ONNX `ModelProto`: opsets, metadata, nodes, initializers (data viewed in place in `bytes`),
 * inputs and outputs.
 *
 * @throws {OnnxError} on malformed protobuf (truncated fields, bad lengths, invalid strings) or a model
 *   without a graph
 */
export function decodeOnnxModel(bytes: Uint8Array, file?: string): DecodedModel {
  try {
    const model: DecodedModel = {
      irVersion: 0,
      producerName: "",
      producerVersion: "",
      opsets: new Map(),
      metadata: new Map(),
      graph: { name: "", nodes: [], initializers: [], inputs: [], outputs: [] },
    };
    let sawGraph = false;
    for (const f of fields(bytes, "ModelProto")) {
      if (f.field === 1) model.irVersion = asInt(f);
      else if (f.field === 2) model.producerName = asString(f);
      else if (f.field === 3) model.producerVersion = asString(f);
      else if (f.field === 8) {
        let domain = "", version = 0;
        for (const g of fields(asBytes(f), "OperatorSetIdProto")) {
          if (g.field === 1) domain = asString(g);
          else if (g.field === 2) version = asInt(g);
        }
        model.opsets.set(domain, version);
      } else if (f.field === 14) {
        let key = "", value = "";
        for (const g of fields(asBytes(f), "StringStringEntryProto")) {
          if (g.field === 1) key = asString(g);
          else if (g.field === 2) value = asString(g);
        }
        model.metadata.set(key, value);
      } else if (f.field === 7) {
        sawGraph = true;
        const g = model.graph;
        for (const h of fields(asBytes(f), "GraphProto")) {
          if (h.field === 1) g.nodes.push(decodeNode(asBytes(h)));
          else if (h.field === 2) g.name = asString(h);
          else if (h.field === 5) g.initializers.push(decodeTensor(asBytes(h)));
          else if (h.field === 11) g.inputs.push(decodeValueInfo(asBytes(h)));
          else if (h.field === 12) g.outputs.push(decodeValueInfo(asBytes(h)));
        }
      }
    }
    if (!sawGraph) throw new OnnxError("not an ONNX model: no graph");
    return model;
  } catch (e) {
    if (e instanceof OnnxError && file !== undefined && e.file === undefined) {
      throw new OnnxError(e.message, { file, offset: e.offset, cause: e });
    }
    throw e;
  }
}

/**
 * The `metadata_props` of an ONNX model, read without decoding the graph (cheap for any file size).
 *
 * @throws {OnnxError} on malformed protobuf
 */
export function readOnnxMetadata(bytes: Uint8Array, file?: string): Map<string, string> {
  const out = new Map<string, string>();
  try {
    for (const f of fields(bytes, "ModelProto")) {
      if (f.field !== 14) continue;
      let key = "", value = "";
      for (const g of fields(asBytes(f), "StringStringEntryProto")) {
        if (g.field === 1) key = asString(g);
        else if (g.field === 2) value = asString(g);
      }
      out.set(key, value);
    }
  } catch (e) {
    if (e instanceof OnnxError && file !== undefined) {
      throw new OnnxError(e.message, { file, offset: e.offset, cause: e });
    }
    throw e;
  }
  return out;
}
