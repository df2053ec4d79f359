/**
 * Datasets from arrays in memory (PyTorch's TensorDataset), and datasets a module builds (any
 * source: files, shards, a database), for data that is neither token windows nor images.
 *
 * Both work in the prefetch worker: `ArrayDataset` moves its arrays into shared memory once, and a
 * module dataset is rebuilt in the worker by importing its module (as record hooks are).
 */
import { pathToFileURL } from 'node:url';
import type { ArrayDatasetSpec, DataRecord, Dataset, FieldDType, FieldSpec, FieldValues, IntArray, ModuleDatasetSpec } from './record.js';
import { rowSize } from './record.js';

/** One field of an `ArrayDataset`: n rows of `shape`, back to back. Integer arrays feed int64 fields. */
export interface ArrayField { data: FieldValues; shape?: readonly number[] }


/** A typed array of the same kind over shared memory (itself when it already is). */
function toShared(a: FieldValues): FieldValues {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const Ctor = a.constructor as new (b: SharedArrayBuffer) => FieldValues;
  const s = new Ctor(new SharedArrayBuffer(a.byteLength));
  s.set(a as ArrayLike<number>);
  return s;
}

const dtypeOf = (a: FieldValues): FieldDType => (a instanceof Float32Array ? 'float32' : 'int64');

/**
 * Records made of rows of typed arrays, one array per field in the order given (the last field is
 * the target when training). Float32Array fields are float32, integer arrays (Uint8, Uint16,
 * Int32, Uint32) int64.
 *
 * @example
 *   // 1000 rows of 8 features and a class label
 *   const ds = new ArrayDataset({ x: { data: features, shape: [8] }, y: { data: labels } });
 *   await fit(model, { train: ds, ... });
 */
export class ArrayDataset implements Dataset {
  readonly size: number;
  readonly fields: readonly FieldSpec[];
  private readonly arrays: FieldValues[];
  private readonly rows: number[];

  constructor(fields: Readonly<Record<string, ArrayField>>, readonly name = 'arrays') {
    const entries = Object.entries(fields);
    if (entries.length === 0) throw new Error(`ArrayDataset ${name}: give at least one field`);
    let n = -1;
    this.fields = entries.map(([k, f]) => {
      const shape = [...(f.shape ?? [])];
      if (!shape.every((d) => Number.isInteger(d) && d >= 1)) throw new Error(`ArrayDataset ${name}: field '${k}' shape must hold positive integers, got ${JSON.stringify(f.shape)}`);
      const isTyped = f.data instanceof Float32Array || f.data instanceof Uint8Array || f.data instanceof Uint16Array || f.data instanceof Int32Array || f.data instanceof Uint32Array;
      if (!isTyped) throw new Error(`ArrayDataset ${name}: field '${k}' data must be a Float32Array or an integer typed array (Uint8, Uint16, Int32, Uint32), got ${Object.prototype.toString.call(f.data)}`);
      const per = rowSize(shape);
      if (f.data.length % per !== 0) throw new Error(`ArrayDataset ${name}: field '${k}' has ${f.data.length} values, not a whole number of rows of [${shape.join(', ')}] (${per} each)`);
      const rows = f.data.length / per;
      if (n >= 0 && rows !== n) throw new Error(`ArrayDataset ${name}: field '${k}' has ${rows} rows, the fields before it ${n}`);
      n = rows;
      return { name: k, dtype: dtypeOf(f.data), shape };
    });
    if (n < 1) throw new Error(`ArrayDataset ${name}: no rows`);
    this.size = n;
    this.arrays = entries.map(([, f]) => toShared(f.data));
    this.rows = this.fields.map((f) => rowSize(f.shape));
  }

  static fromSpec(s: ArrayDatasetSpec): ArrayDataset {
    return new ArrayDataset(Object.fromEntries(s.fields.map((f) => [f.name, { data: f.data, shape: f.shape }])), s.name);
  }

  record(i: number): DataRecord {
    if (!(Number.isInteger(i) && i >= 0 && i < this.size)) throw new RangeError(`${this.describe(i)} is outside [0, ${this.size})`);
    return this.arrays.map((a, k) => a.subarray(i * this.rows[k]!, (i + 1) * this.rows[k]!) as IntArray | Float32Array);
  }

  describe(i: number): string { return `${this.name}[${i}]`; }

  spec(): ArrayDatasetSpec {
    return { kind: 'arrays', name: this.name, fields: this.fields.map((f, k) => ({ name: f.name, shape: [...f.shape], data: this.arrays[k]! })) };
  }
}

/**
 * Builds the dataset of a module spec (in whichever thread calls it); its `spec()` stays the module
 * spec. The prefetch worker imports the module and builds its own copy, so any source works there:
 * the dataset a module returns may itself have any `spec()`, since only this one crosses threads.
 */
export async function moduleDataset(spec: ModuleDatasetSpec): Promise<Dataset> {
  const url = spec.module.startsWith('/') ? pathToFileURL(spec.module).href : spec.module;
  let mod: { default?: unknown };
  try { mod = await import(url) as { default?: unknown }; } catch (e) {
    throw new Error(`dataset module ${spec.module.slice(0, 80)}: cannot import it (${(e as Error).message})`);
  }
  if (typeof mod.default !== 'function') throw new Error(`dataset module ${spec.module.slice(0, 80)}: its default export must be a function (args) => Dataset, got ${typeof mod.default}`);
  const ds = await (mod.default as (args: unknown) => Dataset | Promise<Dataset>)(spec.args);
  if (!ds || typeof ds.record !== 'function' || !Array.isArray(ds.fields) || !Number.isInteger(ds.size)) {
    throw new Error(`dataset module ${spec.module.slice(0, 80)}: its default export did not return a Dataset (size, fields, record, describe)`);
  }
  const inner = ds;
  return {
    size: inner.size, fields: inner.fields,
    record: (i, rng) => inner.record(i, rng), describe: (i) => inner.describe(i),
    spec: () => spec,
  };
}
