/**
 * Making one batch: draw record indices from the sampler, read each record, check it against the
 * dataset's fields, skip the bad ones, and stack the rest into one array per field (int64 fields as
 * BigInt64Array: the model's Gather and targets take int64). Shared by the in-thread loader and the
 * prefetch worker, so both produce identical batches from identical state.
 */
import { endianness } from 'node:os';
import { pathToFileURL } from 'node:url';
import type { DataRecord, Dataset, FieldDType, FieldValues, IntArray } from './record.js';
import { rowSize } from './record.js';
import type { Sampler, SamplerState } from './sampler.js';
import { batchRng } from './transforms.js';

/**
 * One field of a batch: B rows of the field's per-row shape, row-major. It is a valid feed of a
 * compiled function as it is (`{ data, shape, dtype }`).
 */
export interface BatchField {
  name: string;
  dtype: FieldDType;
  /** [B, ...rowShape]. */
  shape: number[];
  data: BigInt64Array | Float32Array;
}

/**
 * B records, one `BatchField` per dataset field in the dataset's order. For a `TokenDataset`:
 * x and y int64 [B, T], x[r * T + t] predicts y[r * T + t] (y is x shifted left by one).
 *
 * @example
 *   const b = (await loader.next())!;
 *   await step(b.fields);                 // feeds in field order
 *   const y = batchField(b, 'y').data;    // by name
 */
export interface Batch { B: number; fields: BatchField[] }

/** The field called `name`, or an error listing the batch's fields. */
export function batchField(b: Batch, name: string): BatchField {
  const f = b.fields.find((g) => g.name === name);
  if (f === undefined) throw new Error(`batch has no field '${name}'; its fields are ${b.fields.map((g) => g.name).join(', ')}`);
  return f;
}

export interface SkippedRecord { index: number; record: string; reason: string }

/** Called for every record before it enters a batch; throwing marks the record bad (it is skipped). */
export type RecordHook = (index: number, record: DataRecord) => void;

export interface Produced {
  /** Null when the sampler was exhausted before any record of this batch. */
  batch: Batch | null;
  skipped: SkippedRecord[];
  /** The sampler's state after this batch: resuming from it yields the next batch. */
  state: SamplerState;
}

const LITTLE_ENDIAN = endianness() === 'LE';

/** Write integers into an int64 array; through the 32-bit words when the host is little-endian (BigInt per value is ~10x slower). */
function writeInt64(dst: BigInt64Array, at: number, src: IntArray): void {
  const count = src.length;
  if (LITTLE_ENDIAN) {
    const words = new Int32Array(dst.buffer, dst.byteOffset, dst.length * 2);
    if (src instanceof Int32Array) {
      for (let i = 0; i < count; i++) { const v = src[i]!; words[2 * (at + i)] = v; words[2 * (at + i) + 1] = v < 0 ? -1 : 0; }
    } else {
      for (let i = 0; i < count; i++) { words[2 * (at + i)] = src[i]!; words[2 * (at + i) + 1] = 0; }
    }
  } else {
    for (let i = 0; i < count; i++) dst[at + i] = BigInt(src[i]!);
  }
}

/** Why `rec` does not fit `dataset.fields`, or null when it does. */
function misfit(dataset: Dataset, rec: DataRecord): string | null {
  const fields = dataset.fields;
  if (!Array.isArray(rec) || rec.length !== fields.length) {
    return `expected ${fields.length} fields (${fields.map((f) => f.name).join(', ')}), got ${Array.isArray(rec) ? rec.length : typeof rec}`;
  }
  for (let k = 0; k < fields.length; k++) {
    const f = fields[k]!, v: FieldValues | undefined = rec[k];
    const n = rowSize(f.shape);
    if (!ArrayBuffer.isView(v)) return `field ${f.name}: expected a typed array, got ${typeof v}`;
    if (f.dtype === 'int64' && v instanceof Float32Array) return `field ${f.name}: int64 values must be integers, got a Float32Array`;
    if (v.length !== n) return `field ${f.name}: expected ${n} values (shape [${f.shape.join(', ')}]), got ${v.length}`;
  }
  return null;
}

export interface BatchMakerOptions {
  /** Rows per batch (the last batch of a finite sampler may have fewer). */
  batch: number;
  hook?: RecordHook;
  /** Give up (throw) after this many bad records in a row rather than spin forever. Default 1000. */
  maxConsecutiveSkips?: number;
  /** Seed of the per-batch transform generators (`batchRng`). Default 0. */
  seed?: number;
  /** This rank, for `batchRng`. Default 0. */
  rank?: number;
  /** Index in the loader's stream of the first batch this maker makes (`LoaderState.batches` on resume). Default 0. */
  firstBatch?: number;
}

export class BatchMaker {
  private readonly B: number;
  private readonly maxSkips: number;
  private readonly seed: number;
  private readonly rank: number;
  /** Index of the next batch in the loader's stream. */
  private index: number;

  constructor(private readonly dataset: Dataset, private readonly sampler: Sampler, private readonly opts: BatchMakerOptions) {
    if (!(Number.isInteger(opts.batch) && opts.batch >= 1)) throw new Error(`BatchMaker: batch must be a positive integer, got ${opts.batch}`);
    this.B = opts.batch;
    this.maxSkips = opts.maxConsecutiveSkips ?? 1000;
    this.seed = opts.seed ?? 0;
    this.rank = opts.rank ?? 0;
    this.index = opts.firstBatch ?? 0;
    if (!Number.isSafeInteger(this.seed)) throw new Error(`BatchMaker: seed must be an integer, got ${this.seed}`);
    if (!(Number.isInteger(this.index) && this.index >= 0)) throw new Error(`BatchMaker: firstBatch must be an integer >= 0, got ${this.index}`);
  }

  make(): Produced {
    const rows: DataRecord[] = [];
    const skipped: SkippedRecord[] = [];
    const rng = batchRng(this.seed, this.rank, this.index);
    let inARow = 0;
    while (rows.length < this.B) {
      const i = this.sampler.next();
      if (i === null) break;
      let rec: DataRecord;
      try {
        rec = this.dataset.record(i, rng);
        const why = misfit(this.dataset, rec);
        if (why !== null) throw new Error(why);
        this.opts.hook?.(i, rec);
      } catch (e) {
        const s = { index: i, record: this.dataset.describe(i), reason: (e as Error).message ?? String(e) };
        skipped.push(s);
        if (++inARow >= this.maxSkips) {
          throw new Error(`data: ${inARow} records in a row failed; the last was record ${i} (${s.record}): ${s.reason}`);
        }
        continue;
      }
      inARow = 0;
      rows.push(rec);
    }
    const state = this.sampler.state();
    if (rows.length === 0) return { batch: null, skipped, state };
    this.index++;
    const B = rows.length;
    const fields = this.dataset.fields.map((f, k): BatchField => {
      const n = rowSize(f.shape);
      const shape = [B, ...f.shape];
      if (f.dtype === 'int64') {
        const data = new BigInt64Array(B * n);
        rows.forEach((rec, r) => writeInt64(data, r * n, rec[k] as IntArray));
        return { name: f.name, dtype: f.dtype, shape, data };
      }
      const data = new Float32Array(B * n);
      rows.forEach((rec, r) => data.set(rec[k]!, r * n));
      return { name: f.name, dtype: f.dtype, shape, data };
    });
    return { batch: { B, fields }, skipped, state };
  }
}

/**
 * Load a record hook from a module (its default export): an absolute path, a file: URL, or a data:
 * URL. A module, not a function, because a prefetch worker must load it in its own thread.
 */
export async function importRecordHook(specifier: string): Promise<RecordHook> {
  const url = specifier.startsWith('/') ? pathToFileURL(specifier).href : specifier;
  let mod: { default?: unknown };
  try {
    mod = await import(url) as { default?: unknown };
  } catch (e) {
    throw new Error(`recordHook ${specifier.slice(0, 80)}: cannot import it (${(e as Error).message})`);
  }
  if (typeof mod.default !== 'function') throw new Error(`recordHook ${specifier.slice(0, 80)}: its default export must be a function (index, record) => void, got ${typeof mod.default}`);
  return mod.default as RecordHook;
}
