/**
 * ONNX ModelProto bytes -> IR. Every node is re-applied through the op registry, so shapes are
 * re-inferred and checked; an op weft does not know is an error that names it and its node.
 */
import { dtypeFromOnnx } from '../dtype.js';
import type { DType, TypedArray } from '../dtype.js';
import type { AttrValue, TensorAttr } from '../graph.js';
import { Value } from '../graph.js';
import { apply, opDef } from '../registry.js';
import type { Dim } from '../shape.js';
import { asFloat, asInt, asString, packedFloats, packedVarints, readFields, WireError } from './wire.js';
import type { Field } from './wire.js';
import { OPSET } from './export.js';
import { decodeTensor } from './model.js';
import type { OnnxTensor } from './model.js';

export interface ImportedModel {
  inputs: Value[];
  outputs: Value[];
  /** Initializers that are not constants folded into the graph: the model's weights, by name. */
  initializers: Map<string, Value>;
  opset: number;
}

/** Thrown for malformed or unsupported ONNX models; `message` names the file part at fault. */
export class OnnxImportError extends Error {}

export function fromModelProto(bytes: Uint8Array, source = 'model'): ImportedModel {
  try {
    return parseModel(bytes, source);
  } catch (e) {
    if (e instanceof OnnxImportError) throw e;
    if (e instanceof WireError) {
      const detail = e.message.startsWith(`${source}: `) ? e.message.slice(source.length + 2) : e.message;
      throw new OnnxImportError(`${source}: not a valid ONNX protobuf: ${detail}`);
    }
    throw new OnnxImportError(`${source}: ${(e as Error).message}`);
  }
}

const bad = (msg: string): never => { throw new OnnxImportError(msg); };

function parseModel(bytes: Uint8Array, source: string): ImportedModel {
  const fields = readFields(bytes, source);
  let graph: Uint8Array | null = null;
  let opset = -1;
  for (const f of fields) {
    if (f.field === 7 && f.wire === 2) graph = f.bytes;
    if (f.field === 8 && f.wire === 2) {
      let domain = '';
      let version = 0;
      for (const g of readFields(f.bytes, `${source}: opset_import`)) {
        if (g.field === 1) domain = asString(g);
        if (g.field === 2) version = asInt(g, `${source}: opset_import version`);
      }
      if (domain === '' || domain === 'ai.onnx') opset = version;
    }
  }
  if (graph === null) bad(`${source}: no graph (ModelProto field 7) — is this an ONNX model?`);
  if (opset < 13 || opset > OPSET) bad(`${source}: default-domain opset ${opset} is not supported (weft reads opset 13..${OPSET})`);
  return { ...parseGraph(graph!, source), opset };
}

function parseGraph(bytes: Uint8Array, source: string): Omit<ImportedModel, 'opset'> {
  const where = `${source}: graph`;
  const fields = readFields(bytes, where);
  const env = new Map<string, Value>();
  const initializers = new Map<string, Value>();
  for (const f of fields.filter((f) => f.field === 5)) {
    const t = parseTensor(f.bytes, `${where}: initializer`);
    const v = new Value(t.dtype, t.shape, null, 0, t.data);
    v.name = t.name;
    // Small integer tensors (shapes, axes) are structure; everything else is a weight.
    v.constant = t.dtype === 'int64' && t.data.length <= 64;
    env.set(t.name, v);
    if (!v.constant) initializers.set(t.name, v);
  }
  const inputs: Value[] = [];
  for (const f of fields.filter((f) => f.field === 11)) {
    const vi = parseValueInfo(f.bytes, `${where}: input`);
    if (env.has(vi.name)) continue; // an initializer listed as input (IR < 4 style)
    const v = new Value(vi.dtype, vi.shape);
    v.name = vi.name;
    env.set(vi.name, v);
    inputs.push(v);
  }
  fields.filter((f) => f.field === 1).forEach((f, k) => importNode(f.bytes, `${where}: node ${k}`, env));
  const outputs = fields.filter((f) => f.field === 12).map((f) => {
    const vi = parseValueInfo(f.bytes, `${where}: output`);
    return env.get(vi.name) ?? bad(`${where}: output '${vi.name}' is produced by no node`);
  });
  return { inputs, outputs, initializers };
}

function importNode(bytes: Uint8Array, where: string, env: Map<string, Value>): void {
  const ins: string[] = [];
  const outs: string[] = [];
  let op = '';
  let domain = '';
  let name = '';
  const attrs: Record<string, AttrValue> = {};
  for (const f of readFields(bytes, where)) {
    if (f.field === 1) ins.push(asString(f));
    else if (f.field === 2) outs.push(asString(f));
    else if (f.field === 3) name = asString(f);
    else if (f.field === 4) op = asString(f);
    else if (f.field === 7) domain = asString(f);
    else if (f.field === 5) { const [k, v] = parseAttr(f.bytes, `${where} (${op}) attribute`); attrs[k] = v; }
  }
  const label = `${where} '${name || outs[0] || '?'}' (${op})`;
  if (domain !== '' && domain !== 'ai.onnx') bad(`${label}: op domain '${domain}' is not supported`);
  if (op === 'Constant') {
    if (outs.length !== 1 || outs[0] === '') bad(`${label}: a Constant has exactly one output, got ${outs.length}`);
    const t = constantValue(attrs, label);
    const v = new Value(t.dtype, t.shape, null, 0, t.data);
    v.constant = true;
    env.set(outs[0]!, v);
    return;
  }
  try { opDef(op, label); } catch (e) { bad((e as Error).message); }
  const inputs = ins.map((n) => (n === '' ? null : env.get(n) ?? bad(`${label}: input '${n}' is not defined before this node`)));
  while (inputs.length > 0 && inputs[inputs.length - 1] === null) inputs.pop();
  let values: Value[];
  try { values = apply(op, inputs, attrs, outs.length); } catch (e) { return bad(`${label}: ${(e as Error).message}`); }
  outs.forEach((n, i) => { if (n !== '') env.set(n, values[i]!); });
}

/** A Constant node's value: the tensor form, or value_float / value_int / value_floats / value_ints. */
function constantValue(attrs: Record<string, AttrValue>, label: string): TensorAttr {
  const keys = Object.keys(attrs);
  if (keys.length !== 1) bad(`${label}: a Constant needs exactly one value attribute, got [${keys.join(', ')}]`);
  const v = attrs[keys[0]!]!;
  switch (keys[0]) {
    case 'value': if (typeof v === 'object' && !Array.isArray(v)) return v; break;
    case 'value_float': if (typeof v === 'number') return { dtype: 'float32', shape: [], data: Float32Array.of(v) }; break;
    case 'value_int': if (typeof v === 'number') return { dtype: 'int64', shape: [], data: BigInt64Array.of(BigInt(v)) }; break;
    case 'value_floats': if (Array.isArray(v)) return { dtype: 'float32', shape: [v.length], data: Float32Array.from(v as number[]) }; break;
    case 'value_ints': if (Array.isArray(v)) return { dtype: 'int64', shape: [v.length], data: BigInt64Array.from(v as number[], BigInt) }; break;
    default: return bad(`${label}: Constant attribute '${keys[0]}' is not supported (weft reads value, value_float, value_int, value_floats, value_ints)`);
  }
  return bad(`${label}: Constant attribute '${keys[0]}' has the wrong type`);
}

export interface ParsedTensor { name: string; dtype: DType; shape: number[]; data: TypedArray }

/** A TensorProto as weft's values: `decodeTensor`'s reading, where a tensor it keeps opaque is an error. */
export function parseTensor(bytes: Uint8Array, where: string): ParsedTensor {
  let t: OnnxTensor;
  try { t = decodeTensor(bytes, where); } catch (e) { return bad((e as Error).message); }
  const dtype = dtypeFromOnnx(t.elemType, `${where} '${t.name}'`);
  if (t.data === null) return bad(`${where} '${t.name}': external data (or another storage weft does not read) is not supported`);
  return { name: t.name, dtype, shape: t.dims, data: t.data };
}


export function parseValueInfo(bytes: Uint8Array, where: string): { name: string; dtype: DType; shape: Dim[] } {
  let name = '';
  let type: Uint8Array | null = null;
  for (const f of readFields(bytes, where)) {
    if (f.field === 1) name = asString(f);
    if (f.field === 2) type = f.bytes;
  }
  const tensor = type && readFields(type, `${where} '${name}' type`).find((f) => f.field === 1);
  if (!tensor) return bad(`${where} '${name}': only tensor types are supported`);
  let code = 0;
  const shape: Dim[] = [];
  for (const f of readFields(tensor.bytes, `${where} '${name}' tensor type`)) {
    if (f.field === 1) code = asInt(f, `${where} '${name}' elem_type`);
    if (f.field === 2) {
      for (const d of readFields(f.bytes, `${where} '${name}' shape`)) {
        const dim = readFields(d.bytes, `${where} '${name}' dim`);
        const value = dim.find((x) => x.field === 1);
        const param = dim.find((x) => x.field === 2);
        const n = value ? asInt(value, `${where} '${name}' dim_value`) : null;
        if (n !== null && n < 0) bad(`${where} '${name}': negative dim_value ${n} at axis ${shape.length}`);
        shape.push(n ?? (param ? asString(param) : `${name}_dim${shape.length}`));
      }
    }
  }
  return { name, dtype: dtypeFromOnnx(code, `${where} '${name}'`), shape };
}

function parseAttr(bytes: Uint8Array, where: string): [string, AttrValue] {
  let name = '';
  let type = 0;
  const fs = readFields(bytes, where);
  for (const f of fs) {
    if (f.field === 1) name = asString(f);
    if (f.field === 20) type = asInt(f, `${where} type`);
  }
  const at = `${where} '${name}'`;
  const get = (n: number): Field[] => fs.filter((f) => f.field === n);
  switch (type) {
    case 1: return [name, asFloat(get(2)[0] ?? bad(`${at}: FLOAT without a value`), at)];
    case 2: return [name, asInt(get(3)[0] ?? bad(`${at}: INT without a value`), at)];
    case 3: return [name, asString(get(4)[0] ?? bad(`${at}: STRING without a value`))];
    case 4: {
      const t = parseTensor((get(5)[0] ?? bad(`${at}: TENSOR without a value`)).bytes, at);
      return [name, { dtype: t.dtype, shape: t.shape, data: t.data }];
    }
    case 6: return [name, get(7).flatMap((f) => packedFloats(f, at))];
    case 7: return [name, get(8).flatMap((f) => packedVarints(f, at))];
    case 8: return [name, get(9).map(asString)];
    default: return bad(`${at}: attribute type ${type} is not supported`);
  }
}
