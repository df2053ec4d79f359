/**
 * Making one batch: draw record indices from the sampler, read each record (again, after a wait,
 * when the read fails with a transient error: retry.ts), check it against the dataset's fields,
 * skip the bad ones, and stack the rest into one array per field (int64 fields as BigInt64Array:
 * the model's Gather and targets take int64). Shared by the in-thread loader and the prefetch
 * worker, so both produce identical batches from identical state.
 */
import { endianness } from 'node:os';
import { pathToFileURL } from 'node:url';
import type { Rng } from '../tensor/random.js';
import type { DataRecord, Dataset, FieldDType, FieldValues, IntArray } from './record.js';
import { rowSize } from './record.js';
import { DEFAULT_RETRY, retryDelays, sleep, sleepSync, transientLabel } from './retry.js';
import type { RetryPolicy } from './retry.js';
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

/** A record whose read failed with a transient error and was tried again. */
export interface RetriedRecord {
  index: number;
  /** The dataset's name for it (`describe`). */
  record: string;
  /** Reads after the first: 1..policy.retries. */
  retries: number;
  /** The wait before each retry, in ms. */
  delaysMs: number[];
  /** The first error's transient label (its Node code, or e.g. 'TransientError') and message. */
  code: string;
  message: string;
  /** true: a retry read it and it is in the batch; false: it kept failing and was skipped. */
  recovered: boolean;
}

/** Called for every record before it enters a batch; throwing marks the record bad (it is skipped). */
export type RecordHook = (index: number, record: DataRecord) => void;

export interface Produced {
  /** Null when the sampler was exhausted before any record of this batch. */
  batch: Batch | null;
  skipped: SkippedRecord[];
  /** Records read again after transient errors (recovered, or also in `skipped`). */
  retried: RetriedRecord[];
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
  /** How reads that fail with a transient error are retried (validated by `retryPolicy`). Default `DEFAULT_RETRY`. */
  retry?: RetryPolicy;
}

/** What making a batch asks of its driver: wait this many ms (a retry's backoff), then resume. */
type Making = Generator<number, Produced, void>;

const messageOf = (e: unknown): string => (e === null || e === undefined ? String(e) : (e as Error).message ?? String(e));

export class BatchMaker {
  private readonly B: number;
  private readonly maxSkips: number;
  private readonly seed: number;
  private readonly rank: number;
  /** The wait before each retry of a read, in ms (`retryDelays`). */
  private readonly delays: readonly number[];
  /** Index of the next batch in the loader's stream. */
  private index: number;

  constructor(private readonly dataset: Dataset, private readonly sampler: Sampler, private readonly opts: BatchMakerOptions) {
    if (!(Number.isInteger(opts.batch) && opts.batch >= 1)) throw new Error(`BatchMaker: batch must be a positive integer, got ${opts.batch}`);
    this.B = opts.batch;
    this.maxSkips = opts.maxConsecutiveSkips ?? 1000;
    this.seed = opts.seed ?? 0;
    this.rank = opts.rank ?? 0;
    this.index = opts.firstBatch ?? 0;
    this.delays = retryDelays(opts.retry ?? DEFAULT_RETRY);
    if (!Number.isSafeInteger(this.seed)) throw new Error(`BatchMaker: seed must be an integer, got ${this.seed}`);
    if (!(Number.isInteger(this.index) && this.index >= 0)) throw new Error(`BatchMaker: firstBatch must be an integer >= 0, got ${this.index}`);
  }

  /**
   * The next batch, blocking this thread through any retry's backoff. Same batches as `makeAsync`.
   */
  make(): Produced {
    const m = this.making();
    for (let r = m.next(); ; r = m.next()) {
      if (r.done === true) return r.value;
      sleepSync(r.value);
    }
  }

  /** The next batch, awaiting any retry's backoff (the thread stays free for messages and timers). */
  async makeAsync(): Promise<Produced> {
    const m = this.making();
    for (let r = m.next(); ; r = m.next()) {
      if (r.done === true) return r.value;
      await sleep(r.value);
    }
  }

  /** One batch, yielding each backoff to the driver. */
  private *making(): Making {
    const rows: DataRecord[] = [];
    const skipped: SkippedRecord[] = [];
    const retried: RetriedRecord[] = [];
    const rng = batchRng(this.seed, this.rank, this.index);
    let inARow = 0;
    while (rows.length < this.B) {
      const i = this.sampler.next();
      if (i === null) break;
      const read = yield* this.read(i, rng, retried);
      if (typeof read === 'string') {
        const s = { index: i, record: this.dataset.describe(i), reason: read };
        skipped.push(s);
        if (++inARow >= this.maxSkips) {
          throw new Error(`data: ${inARow} records in a row failed; the last was record ${i} (${s.record}): ${s.reason}`);
        }
        continue;
      }
      inARow = 0;
      rows.push(read);
    }
    const state = this.sampler.state();
    if (rows.length === 0) return { batch: null, skipped, retried, state };
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
    return { batch: { B, fields }, skipped, retried, state };
  }

  /**
   * Record i, checked; or why it is bad. A transient failure is retried after each of the policy's
   * delays, with `rng` rewound to where the failed read began (so the read that succeeds draws
   * what a first read would have); any other failure, or one after the last retry, is final.
   */
  private *read(i: number, rng: Rng, retried: RetriedRecord[]): Generator<number, DataRecord | string, void> {
    const start = rng.getState();
    const delaysMs: number[] = [];
    let first: { code: string; message: string } | null = null;
    for (;;) {
      let failure: unknown;
      try {
        const rec = this.dataset.record(i, rng);
        const why = misfit(this.dataset, rec);
        if (why !== null) throw new Error(why);
        this.opts.hook?.(i, rec);
        if (first !== null) retried.push({ index: i, record: this.dataset.describe(i), retries: delaysMs.length, delaysMs, ...first, recovered: true });
        return rec;
      } catch (e) {
        failure = e;
      }
      const code = transientLabel(failure);
      if (code !== null && delaysMs.length < this.delays.length) {
        first ??= { code, message: messageOf(failure) };
        const ms = this.delays[delaysMs.length]!;
        delaysMs.push(ms);
        yield ms;
        rng.setState(start);
        continue;
      }
      const message = messageOf(failure);
      if (first === null) return message;
      retried.push({ index: i, record: this.dataset.describe(i), retries: delaysMs.length, delaysMs, ...first, recovered: false });
      const n = delaysMs.length;
      const label = code ?? (failure instanceof Error ? failure.name : typeof failure);
      return `${label} after ${n} ${n === 1 ? 'retry' : 'retries'} (${delaysMs.join(', ')} ms): ${message}`;
    }
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
