/**
 * What `weft serve` accepts and returns: a model's signature (its fed inputs and outputs, the
 * leading dim of each the batch), a predict request's JSON checked against it into typed feeds,
 * and the rows of a batch's outputs split back per request. Every refusal is a `RequestError`
 * naming the input and what was expected against what came; the server answers it with 400.
 *
 * Values: a float input takes finite JSON numbers; an integer input (int64 included) takes JSON
 * numbers that are integers within the dtype's range (int64: within +-(2^53 - 1), the integers a
 * JSON number holds exactly); bool takes true/false or 0/1. Outputs come back as JSON numbers
 * (int64 as numbers: exact up to 2^53).
 */
import { allocate, dtypeFromOnnx, fromNumbers, toNumbers } from '../ir/dtype.js';
import type { DType, TypedArray } from '../ir/dtype.js';
import { decodeModel } from '../ir/onnx/model.js';
import type { OnnxValueInfo } from '../ir/onnx/model.js';
import type { Named } from '../runtime/ort.js';
import { BATCH_NAMES } from './bench_infer.js';
import { feedInputs } from './calibrate.js';

/** A bad request: answered with `status` (400 unless said) and `{"error": message}`. */
export class RequestError extends Error {
  constructor(message: string, readonly status = 400) { super(message); }
}

/** One input or output as served: dim 0 is the batch; other dims are sizes, symbolic names, or null (any size). */
export interface ServedTensor { name: string; dtype: DType; dims: (number | string | null)[] }

export interface ServeSignature {
  inputs: ServedTensor[];
  outputs: ServedTensor[];
  /** Whether every output leads with the batch dim, so a merged run's outputs can be split by rows; if not, requests run alone. */
  splittable: boolean;
}

const fmt = (d: readonly (number | string | null)[]): string => `[${d.map((x) => (x === null ? '?' : String(x))).join(', ')}]`;

/**
 * The signature of the ONNX model `bytes` (`source` names it in errors). Every fed input must lead
 * with a symbolic batch dim (named like bench_infer's BATCH_NAMES), which is what lets requests
 * carry their own rows and be concatenated.
 */
export function serveSignature(bytes: Uint8Array, source: string): ServeSignature {
  const m = decodeModel(bytes, source);
  const tensor = (vi: OnnxValueInfo, what: string): ServedTensor => ({
    name: vi.name, dtype: dtypeFromOnnx(vi.elemType, `${source}: ${what} '${vi.name}'`), dims: vi.shape === null ? [] : [...vi.shape],
  });
  const inputs = feedInputs(m).map((vi) => {
    if (vi.shape === null || vi.shape.length === 0) throw new Error(`${source}: input '${vi.name}' declares no shape; weft serve needs a leading batch dim`);
    const d0 = vi.shape[0];
    if (typeof d0 !== 'string' || !BATCH_NAMES.test(d0)) {
      throw new Error(`${source}: input '${vi.name}' has shape ${fmt(vi.shape)}; weft serve needs a symbolic leading batch dim (named batch, batch_size, N or B); export with a symbolic batch`);
    }
    return tensor(vi, 'input');
  });
  if (inputs.length === 0) throw new Error(`${source}: the model has no inputs to feed`);
  const outputs = m.graph.outputs.map((vi) => tensor(vi, 'output'));
  const batch = inputs[0]!.dims[0];
  const splittable = outputs.every((o) => o.dims.length > 0 && o.dims[0] === batch);
  return { inputs, outputs, splittable };
}

/** A checked predict request: its feeds, its rows (dim 0), and the key of the runs it may share (its non-batch dims). */
export interface PredictRequest { rows: number; key: string; feeds: Record<string, Named> }

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], uint16: [0, 65535],
  int32: [-(2 ** 31), 2 ** 31 - 1], int64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The shape of a nested array, read along its first elements (checked against every element by `flatten`). */
function nestedDims(v: unknown): number[] {
  const dims: number[] = [];
  for (let x = v; Array.isArray(x); x = x[0]) { dims.push(x.length); if (x.length === 0) break; }
  return dims;
}

/** The leaves of a nested array in row-major order; a ragged array is an error naming where. */
function flatten(v: unknown, dims: readonly number[], depth: number, out: unknown[], where: string, at: string): void {
  if (depth === dims.length) {
    if (Array.isArray(v)) throw new RequestError(`${where}: ragged nested array: ${at} is an array where the first rows have a number`);
    out.push(v);
    return;
  }
  if (!Array.isArray(v)) throw new RequestError(`${where}: ragged nested array: ${at} is a ${typeof v}, expected an array of ${dims[depth]}`);
  if (v.length !== dims[depth]) throw new RequestError(`${where}: ragged nested array: ${at} has ${v.length} elements, expected ${dims[depth]} (as the first row)`);
  for (let i = 0; i < v.length; i++) flatten(v[i], dims, depth + 1, out, where, `${at}[${i}]`);
}

/** JSON values to a typed array of `dtype`, refusing what the dtype cannot hold exactly (naming the index). */
function toTyped(values: readonly unknown[], dtype: DType, where: string): TypedArray {
  const bad = (i: number, want: string): never => {
    throw new RequestError(`${where}: element ${i} is ${JSON.stringify(values[i]) ?? String(values[i])}, expected ${want} (dtype ${dtype})`);
  };
  const range = INT_RANGE[dtype];
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (dtype === 'bool') { if (!(x === true || x === false || x === 0 || x === 1)) bad(i, 'true, false, 0 or 1'); }
    else if (range !== undefined) { if (typeof x !== 'number' || !Number.isInteger(x) || x < range[0] || x > range[1]) bad(i, `an integer in [${range[0]}, ${range[1]}]`); }
    else if (typeof x !== 'number' || !Number.isFinite(x)) bad(i, 'a finite number');
  }
  // Checked: every value is a number the dtype holds (booleans as 0 / 1).
  return fromNumbers(dtype, dtype === 'bool' ? values.map(Number) : (values as number[]));
}

/** One input's value: a nested array, or `{"dims": [...], "data": [flat values]}`. */
function readInput(v: unknown, t: ServedTensor): { dims: number[]; data: TypedArray } {
  const where = `input '${t.name}'`;
  let dims: number[];
  let values: unknown[];
  if (Array.isArray(v)) {
    dims = nestedDims(v);
    values = [];
    flatten(v, dims, 0, values, where, t.name);
  } else if (isObject(v)) {
    const extra = Object.keys(v).filter((k) => k !== 'dims' && k !== 'data');
    if (extra.length > 0) throw new RequestError(`${where}: unknown field '${extra[0]}' (the compact form is {"dims": [...], "data": [...]})`);
    if (!Array.isArray(v['dims']) || !v['dims'].every((d) => Number.isInteger(d) && (d as number) >= 0)) {
      throw new RequestError(`${where}: "dims" must be an array of non-negative integers, got ${JSON.stringify(v['dims']) ?? 'nothing'}`);
    }
    if (!Array.isArray(v['data'])) throw new RequestError(`${where}: "data" must be a flat array of numbers, got ${typeof v['data'] === 'undefined' ? 'nothing' : typeof v['data']}`);
    dims = v['dims'] as number[];
    values = v['data'];
    const n = dims.reduce((a, b) => a * b, 1);
    if (values.length !== n) throw new RequestError(`${where}: dims ${fmt(dims)} hold ${n} elements, "data" has ${values.length}`);
  } else {
    throw new RequestError(`${where}: expected a nested array or {"dims": [...], "data": [...]}, got ${v === null ? 'null' : typeof v}`);
  }
  return { dims, data: toTyped(values, t.dtype, where) };
}

/**
 * A predict request's JSON body, checked against the model: every input named once, each with
 * the model's rank, fixed dims and dtype, a symbolic dim the same size wherever it appears, and
 * the same rows (dim 0, 1..maxBatch) in every input.
 */
export function parsePredict(body: string, sig: ServeSignature, maxBatch: number): PredictRequest {
  let json: unknown;
  try { json = JSON.parse(body); } catch (e) {
    throw new RequestError(`malformed JSON: ${(e as Error).message}`);
  }
  if (!isObject(json) || !isObject(json['inputs'])) throw new RequestError('the body must be a JSON object {"inputs": {"<name>": ...}}');
  const given = json['inputs'];
  const names = sig.inputs.map((t) => t.name);
  const unknown = Object.keys(given).filter((k) => !names.includes(k));
  if (unknown.length > 0) throw new RequestError(`unknown input '${unknown[0]}'; the model's inputs are ${names.map((n) => `'${n}'`).join(', ')}`);
  const missing = names.filter((n) => !(n in given));
  if (missing.length > 0) throw new RequestError(`missing input '${missing[0]}'; the model's inputs are ${names.map((n) => `'${n}'`).join(', ')}`);
  const feeds: Record<string, Named> = {};
  const symbols = new Map<string, [number, string]>();
  let rows = -1;
  const key: number[][] = [];
  for (const t of sig.inputs) {
    const { dims, data } = readInput(given[t.name], t);
    const where = `input '${t.name}'`;
    if (dims.length !== t.dims.length) throw new RequestError(`${where}: expected rank ${t.dims.length} ${fmt(t.dims)}, got rank ${dims.length} ${fmt(dims)}`);
    if (dims[0] === 0) throw new RequestError(`${where}: the batch (dim 0) is 0; send at least one row`);
    if (dims[0]! > maxBatch) throw new RequestError(`${where}: ${dims[0]} rows is more than the server's max batch ${maxBatch}; split the request`);
    if (rows >= 0 && dims[0] !== rows) throw new RequestError(`${where}: ${dims[0]} rows, but '${sig.inputs[0]!.name}' has ${rows}; every input carries the same rows`);
    rows = dims[0]!;
    for (let i = 1; i < dims.length; i++) {
      const want = t.dims[i];
      if (typeof want === 'number' && dims[i] !== want) throw new RequestError(`${where}: dim ${i} must be ${want}, got ${dims[i]} (expected ${fmt(t.dims)}, got ${fmt(dims)})`);
      if (typeof want === 'string') {
        const seen = symbols.get(want);
        if (seen !== undefined && seen[0] !== dims[i]) throw new RequestError(`${where}: dim ${i} ('${want}') is ${dims[i]}, but it is ${seen[0]} in ${seen[1]}`);
        symbols.set(want, [dims[i]!, where]);
      }
    }
    key.push(dims.slice(1));
    feeds[t.name] = { dtype: t.dtype, dims, data };
  }
  return { rows, key: JSON.stringify(key), feeds };
}

/** The requests' feeds concatenated along dim 0 (one run's input); a single request's feeds are passed as they are. */
export function concatRows(reqs: readonly PredictRequest[], sig: ServeSignature): Record<string, Named> {
  if (reqs.length === 1) return reqs[0]!.feeds;
  const rows = reqs.reduce((a, r) => a + r.rows, 0);
  const out: Record<string, Named> = {};
  for (const t of sig.inputs) {
    const first = reqs[0]!.feeds[t.name]!;
    const per = first.data.length / first.dims[0]!;
    const data = allocate(t.dtype, rows * per);
    let at = 0;
    for (const r of reqs) {
      const x = r.feeds[t.name]!.data;
      (data as Float32Array).set(x as Float32Array, at); // same dtype on both sides: set copies any typed array
      at += x.length;
    }
    out[t.name] = { dtype: t.dtype, dims: [rows, ...first.dims.slice(1)], data };
  }
  return out;
}

/** A run's outputs as each request's JSON `outputs` (rows `start` .. `start + rows` of every output). */
export function outputRows(outputs: Readonly<Record<string, Named>>, start: number, rows: number, whole: boolean): Record<string, { dims: number[]; data: number[] }> {
  const r: Record<string, { dims: number[]; data: number[] }> = {};
  for (const [name, o] of Object.entries(outputs)) {
    if (whole) { r[name] = { dims: [...o.dims], data: toNumbers(o.data, o.dtype) }; continue; }
    const per = o.data.length / o.dims[0]!;
    r[name] = { dims: [rows, ...o.dims.slice(1)], data: toNumbers(o.data.subarray(start * per, (start + rows) * per), o.dtype) };
  }
  return r;
}
