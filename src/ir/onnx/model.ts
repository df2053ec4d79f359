/**
 * Any ONNX model as plain data, for passes that rewrite files weft did not write (deploy/):
 * nodes keep their op, domain, inputs, outputs and attributes as found, so an op no pass knows
 * round-trips untouched, and every field this module does not model (doc strings, metadata,
 * training info, functions, sparse initializers, attribute subgraphs) is kept as its raw bytes and
 * written back in place. `decodeModel(encodeModel(m))` equals `m`.
 *
 * Unlike `fromModelProto` (import.ts), nothing here knows what an op computes: no shape
 * inference, no registry. Tensors are decoded to typed arrays for the element types weft knows;
 * others (and external data) stay raw and a pass treats them as opaque.
 */
import { allocate, BYTES, dtypeFromOnnx, ONNX_CODE } from '../dtype.js';
import type { DType, TypedArray } from '../dtype.js';
import { asFloat, asInt, asString, packedFloats, packedVarints, readFields, WireError, Writer } from './wire.js';
import type { Field } from './wire.js';

/** A tensor: an initializer, or a Constant's / an attribute's value. */
export interface OnnxTensor {
  name: string;
  dims: number[];
  /** TensorProto.DataType code. */
  elemType: number;
  /** The values, for element types weft knows (null: `raw` holds the whole TensorProto). */
  data: TypedArray | null;
  /** The encoded TensorProto, kept for element types or storage weft does not model. */
  raw?: Uint8Array;
}

export type OnnxAttrValue = number | Uint8Array | OnnxTensor | number[] | Uint8Array[];

/** An attribute: its name, AttributeProto.type and value; `raw` for types not modelled (graphs). */
export interface OnnxAttr {
  name: string;
  /** AttributeProto.AttributeType: 1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 6 FLOATS, 7 INTS, 8 STRINGS; others raw. */
  type: number;
  value: OnnxAttrValue | null;
  raw?: Uint8Array;
}

export interface OnnxNode {
  name: string;
  op: string;
  /** '' for the default domain (ai.onnx). */
  domain: string;
  /** '' marks an omitted optional input or output. */
  inputs: string[];
  outputs: string[];
  attrs: OnnxAttr[];
  /** Fields not modelled (doc_string), written back as they came. */
  extra: Field[];
}

/** A graph input's, output's or value_info's name, element type and shape (null dims: unknown). */
export interface OnnxValueInfo {
  name: string;
  elemType: number;
  /** null: no shape given; a dim is a number (dim_value), a string (dim_param) or null (neither). */
  shape: (number | string | null)[] | null;
  /** The encoded ValueInfoProto for non-tensor types, written back as it came. */
  raw?: Uint8Array;
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  valueInfo: OnnxValueInfo[];
  extra: Field[];
}

export interface OnnxModel {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  producer: string;
  graph: OnnxGraph;
  extra: Field[];
}

/** Thrown for bytes that are not an ONNX model; the message names the file and the part at fault. */
export class OnnxFormatError extends Error {}

export function decodeModel(bytes: Uint8Array, source = 'model'): OnnxModel {
  try {
    return decodeModelFields(bytes, source);
  } catch (e) {
    if (e instanceof OnnxFormatError) throw e;
    if (e instanceof WireError) throw new OnnxFormatError(e.message.startsWith(source) ? `${e.message} (not a valid ONNX protobuf)` : `${source}: not a valid ONNX protobuf: ${e.message}`);
    throw new OnnxFormatError(`${source}: ${(e as Error).message}`);
  }
}

const fail = (msg: string): never => { throw new OnnxFormatError(msg); };

function decodeModelFields(bytes: Uint8Array, source: string): OnnxModel {
  if (bytes.length === 0) fail(`${source}: the file is empty`);
  const m: OnnxModel = { irVersion: 0, opsets: [], producer: '', graph: emptyGraph(), extra: [] };
  let graph: Uint8Array | null = null;
  for (const f of readFields(bytes, source)) {
    if (f.field === 1 && f.wire === 0) m.irVersion = asInt(f, `${source}: ir_version`);
    else if (f.field === 2 && f.wire === 2) m.producer = asString(f);
    else if (f.field === 7 && f.wire === 2) graph = f.bytes;
    else if (f.field === 8 && f.wire === 2) {
      let domain = '';
      let version = 0;
      for (const g of readFields(f.bytes, `${source}: opset_import`)) {
        if (g.field === 1) domain = asString(g);
        if (g.field === 2) version = asInt(g, `${source}: opset_import version`);
      }
      m.opsets.push({ domain, version });
    } else m.extra.push(copyField(f));
  }
  if (graph === null) fail(`${source}: no graph (ModelProto field 7): not an ONNX model`);
  if (m.irVersion <= 0) fail(`${source}: no ir_version (ModelProto field 1): not an ONNX model`);
  m.graph = decodeGraph(graph!, `${source}: graph`);
  return m;
}

const emptyGraph = (): OnnxGraph => ({ name: '', nodes: [], initializers: [], inputs: [], outputs: [], valueInfo: [], extra: [] });

/** Fields are views into the file's bytes; a kept field owns a copy. */
const copyField = (f: Field): Field => ({ ...f, bytes: f.bytes.slice() });

function decodeGraph(bytes: Uint8Array, where: string): OnnxGraph {
  const g = emptyGraph();
  for (const f of readFields(bytes, where)) {
    if (f.field === 1 && f.wire === 2) g.nodes.push(decodeNode(f.bytes, `${where}: node ${g.nodes.length}`));
    else if (f.field === 2 && f.wire === 2) g.name = asString(f);
    else if (f.field === 5 && f.wire === 2) g.initializers.push(decodeTensor(f.bytes, `${where}: initializer ${g.initializers.length}`));
    else if (f.field === 11 && f.wire === 2) g.inputs.push(decodeValueInfo(f.bytes, `${where}: input`));
    else if (f.field === 12 && f.wire === 2) g.outputs.push(decodeValueInfo(f.bytes, `${where}: output`));
    else if (f.field === 13 && f.wire === 2) g.valueInfo.push(decodeValueInfo(f.bytes, `${where}: value_info`));
    else g.extra.push(copyField(f));
  }
  return g;
}

function decodeNode(bytes: Uint8Array, where: string): OnnxNode {
  const n: OnnxNode = { name: '', op: '', domain: '', inputs: [], outputs: [], attrs: [], extra: [] };
  for (const f of readFields(bytes, where)) {
    if (f.field === 1) n.inputs.push(asString(f));
    else if (f.field === 2) n.outputs.push(asString(f));
    else if (f.field === 3) n.name = asString(f);
    else if (f.field === 4) n.op = asString(f);
    else if (f.field === 7) n.domain = asString(f);
    else if (f.field === 5 && f.wire === 2) n.attrs.push(decodeAttr(f.bytes, `${where} (${n.op || '?'}) attribute`));
    else n.extra.push(copyField(f));
  }
  if (n.op === '') fail(`${where}: a node without an op_type`);
  return n;
}

function decodeAttr(bytes: Uint8Array, where: string): OnnxAttr {
  const fs = readFields(bytes, where);
  let name = '';
  let type = 0;
  for (const f of fs) {
    if (f.field === 1) name = asString(f);
    if (f.field === 20) type = asInt(f, `${where} type`);
  }
  const at = `${where} '${name}'`;
  const get = (k: number): Field[] => fs.filter((f) => f.field === k);
  const one = (k: number): Field => get(k)[0] ?? fail(`${at}: no value for its type ${type}`);
  switch (type) {
    case 1: return { name, type, value: asFloat(one(2), at) };
    case 2: return { name, type, value: asInt(one(3), at) };
    case 3: return { name, type, value: one(4).bytes.slice() };
    case 4: return { name, type, value: decodeTensor(one(5).bytes, at) };
    case 6: return { name, type, value: get(7).flatMap((f) => packedFloats(f, at)) };
    case 7: return { name, type, value: get(8).flatMap((f) => packedVarints(f, at)) };
    case 8: return { name, type, value: get(9).map((f) => f.bytes.slice()) };
    default: return { name, type, value: null, raw: bytes.slice() };
  }
}

/** The graphs an attribute kept raw holds (AttributeProto g, field 6, and graphs, field 11). */
export function subgraphs(rawAttr: Uint8Array): OnnxGraph[] {
  return readFields(rawAttr, 'attribute').filter((f) => (f.field === 6 || f.field === 11) && f.wire === 2).map((f) => decodeGraph(f.bytes, 'subgraph'));
}

/** TensorProto; element types weft does not know, segments and external data stay raw. */
export function decodeTensor(bytes: Uint8Array, where: string): OnnxTensor {
  const dims: number[] = [];
  let elemType = 0;
  let name = '';
  let raw: Uint8Array | null = null;
  const typed: number[] = [];
  const typedFields = new Set<number>();
  let opaque = false;
  for (const f of readFields(bytes, where)) {
    if (f.field === 1) dims.push(...packedVarints(f, where));
    else if (f.field === 2) elemType = asInt(f, `${where} data_type`);
    else if (f.field === 8) name = asString(f);
    else if (f.field === 9) raw = f.bytes;
    else if (f.field === 12) continue; // doc_string
    else if (f.field === 4) { typed.push(...packedFloats(f, where)); typedFields.add(4); }
    else if (f.field === 5 || f.field === 7) { typed.push(...packedVarints(f, where)); typedFields.add(f.field); }
    else if (f.field === 10) {
      typedFields.add(10);
      const c = f.bytes.slice();
      if (f.wire === 1) typed.push(new DataView(c.buffer).getFloat64(0, true));
      else typed.push(...new Float64Array(c.buffer, 0, c.length >> 3));
    } else opaque = true; // segment, string_data, external data, uint64_data, doc_string, ...
  }
  const at = `${where} '${name}'`;
  if (dims.some((d) => d < 0)) fail(`${at}: negative dim in [${dims.join(', ')}]`);
  let dtype: DType | null = null;
  try { dtype = dtypeFromOnnx(elemType, at); } catch { dtype = null; }
  if (opaque || dtype === null) return { name, dims, elemType, data: null, raw: bytes.slice() };
  const n = dims.reduce((p, q) => p * q, 1);
  if (!Number.isSafeInteger(n)) fail(`${at}: shape [${dims.join(', ')}] is too large`);
  if (raw !== null && raw.length !== n * BYTES[dtype]) fail(`${at}: raw_data has ${raw.length} bytes, shape [${dims.join(', ')}] of ${dtype} needs ${n * BYTES[dtype]}`);
  if (raw === null && typed.length !== n) fail(`${at}: holds ${typed.length} values, shape [${dims.join(', ')}] needs ${n}`);
  // ONNX stores 16-bit floats as their bit patterns in int32_data.
  if ((dtype === 'float16' || dtype === 'bfloat16') && raw === null && n > 0 && !(typedFields.size === 1 && typedFields.has(5))) fail(`${at}: ${dtype} values must be in raw_data or int32_data`);
  const data = allocate(dtype, n);
  if (raw !== null) new Uint8Array(data.buffer).set(raw);
  else if (data instanceof BigInt64Array) typed.forEach((x, i) => { data[i] = BigInt(x); });
  else (data as Float32Array).set(typed);
  return { name, dims, elemType, data };
}

/** A ValueInfoProto; kept raw (whole) when it is not a plain tensor type or has fields beyond name and type. */
export function decodeValueInfo(bytes: Uint8Array, where: string): OnnxValueInfo {
  let name = '';
  let type: Uint8Array | null = null;
  let other = false;
  for (const f of readFields(bytes, where)) {
    if (f.field === 1) name = asString(f);
    else if (f.field === 2) type = f.bytes;
    else other = true;
  }
  const tensor = type === null ? undefined : readFields(type, `${where} '${name}' type`);
  const tt = tensor?.length === 1 ? tensor.find((f) => f.field === 1) : undefined;
  if (tt === undefined || other) return { name, elemType: 0, shape: null, raw: bytes.slice() };
  let elemType = 0;
  let shape: (number | string | null)[] | null = null;
  for (const f of readFields(tt.bytes, `${where} '${name}' tensor type`)) {
    if (f.field === 1) elemType = asInt(f, `${where} '${name}' elem_type`);
    if (f.field === 2) {
      shape = [];
      for (const d of readFields(f.bytes, `${where} '${name}' shape`)) {
        const dim = readFields(d.bytes, `${where} '${name}' dim`);
        const value = dim.find((x) => x.field === 1);
        const param = dim.find((x) => x.field === 2);
        shape.push(value ? asInt(value, `${where} '${name}' dim_value`) : param ? asString(param) : null);
      }
    }
  }
  return { name, elemType, shape };
}

export function encodeModel(m: OnnxModel): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  if (m.producer !== '') w.string(2, m.producer);
  w.message(7, (g) => encodeGraph(g, m.graph));
  for (const o of m.opsets) w.message(8, (ow) => { ow.string(1, o.domain); ow.int(2, o.version); });
  for (const f of m.extra) w.field(f);
  return w.finish();
}

function encodeGraph(w: Writer, g: OnnxGraph): void {
  for (const n of g.nodes) w.message(1, (nw) => encodeNode(nw, n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, (tw) => encodeTensor(tw, t));
  for (const v of g.inputs) w.message(11, (vw) => encodeValueInfo(vw, v));
  for (const v of g.outputs) w.message(12, (vw) => encodeValueInfo(vw, v));
  for (const v of g.valueInfo) w.message(13, (vw) => encodeValueInfo(vw, v));
  for (const f of g.extra) w.field(f);
}

function encodeNode(w: Writer, n: OnnxNode): void {
  for (const s of n.inputs) w.string(1, s);
  for (const s of n.outputs) w.string(2, s);
  if (n.name !== '') w.string(3, n.name);
  w.string(4, n.op);
  for (const a of n.attrs) {
    if (a.raw !== undefined) w.bytes(5, a.raw);
    else w.message(5, (aw) => encodeAttr(aw, a));
  }
  if (n.domain !== '') w.string(7, n.domain);
  for (const f of n.extra) w.field(f);
}

function encodeAttr(w: Writer, a: OnnxAttr): void {
  w.string(1, a.name);
  w.int(20, a.type);
  const v = a.value;
  switch (a.type) {
    case 1: w.float(2, v as number); break;
    case 2: w.int(3, v as number); break;
    case 3: w.bytes(4, v as Uint8Array); break;
    case 4: w.message(5, (tw) => encodeTensor(tw, v as OnnxTensor)); break;
    case 6: for (const x of v as number[]) w.float(7, x); break;
    case 7: w.packedInts(8, v as number[]); break;
    case 8: for (const x of v as Uint8Array[]) w.bytes(9, x); break;
    default: throw new Error(`encodeModel: attribute '${a.name}' of type ${a.type} has no raw bytes`);
  }
}

export function encodeTensor(w: Writer, t: OnnxTensor): void {
  if (t.data === null) {
    // An opaque tensor: its own bytes, with the name a pass may have changed.
    for (const f of readFields(t.raw!, `tensor '${t.name}'`)) if (f.field !== 8) w.field(f);
    w.string(8, t.name);
    return;
  }
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.elemType);
  w.string(8, t.name);
  w.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).slice());
}

function encodeValueInfo(w: Writer, v: OnnxValueInfo): void {
  if (v.raw !== undefined) {
    for (const f of readFields(v.raw, `value_info '${v.name}'`)) if (f.field !== 1) w.field(f);
    w.string(1, v.name);
    return;
  }
  w.string(1, v.name);
  w.message(2, (t) => t.message(1, (tt) => {
    tt.int(1, v.elemType);
    if (v.shape !== null) {
      tt.message(2, (s) => {
        for (const d of v.shape!) s.message(1, (dw) => { if (typeof d === 'number') dw.int(1, d); else if (typeof d === 'string') dw.string(2, d); });
      });
    }
  }));
}

/** A tensor of weft's element type `dtype` (the helpers passes build constants with). */
export function tensorOf(name: string, dtype: DType, dims: readonly number[], data: TypedArray): OnnxTensor {
  const n = dims.reduce((p, q) => p * q, 1);
  if (data.length !== n) throw new Error(`tensorOf: '${name}' has ${data.length} elements for dims [${dims.join(', ')}]`);
  return { name, dims: [...dims], elemType: ONNX_CODE[dtype], data };
}

/** The weft element type of a decoded tensor (null: opaque). */
export function tensorDtype(t: OnnxTensor): DType | null {
  if (t.data === null) return null;
  return dtypeFromOnnx(t.elemType, `tensor '${t.name}'`);
}

/** An attribute's value by name, or undefined. */
export function attr(n: OnnxNode, name: string): OnnxAttrValue | null | undefined {
  return n.attrs.find((a) => a.name === name)?.value;
}

export const attrInt = (n: OnnxNode, name: string, d: number): number => {
  const v = attr(n, name);
  return typeof v === 'number' ? v : d;
};
export const attrFloat = attrInt;
export const attrInts = (n: OnnxNode, name: string): number[] | undefined => {
  const v = attr(n, name);
  return Array.isArray(v) && (v.length === 0 || typeof v[0] === 'number') ? (v as number[]) : undefined;
};
export const attrString = (n: OnnxNode, name: string): string | undefined => {
  const v = attr(n, name);
  return v instanceof Uint8Array ? new TextDecoder().decode(v) : undefined;
};

/** Builders for attributes. */
export const attrs = {
  int: (name: string, value: number): OnnxAttr => ({ name, type: 2, value }),
  float: (name: string, value: number): OnnxAttr => ({ name, type: 1, value }),
  ints: (name: string, value: number[]): OnnxAttr => ({ name, type: 7, value }),
  floats: (name: string, value: number[]): OnnxAttr => ({ name, type: 6, value }),
  string: (name: string, value: string): OnnxAttr => ({ name, type: 3, value: new TextEncoder().encode(value) }),
  tensor: (name: string, value: OnnxTensor): OnnxAttr => ({ name, type: 4, value }),
};
