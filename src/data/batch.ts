/**
 * Making one batch: draw record indices from the sampler, read each record, skip the bad ones, and
 * write x / y as int64 (the model's Gather and targets take int64). Shared by the in-thread loader
 * and the prefetch worker, so both produce identical batches from identical state.
 */
import { endianness } from 'node:os';
import { pathToFileURL } from 'node:url';
import type { TokenArray, WindowDataset } from './dataset.js';
import type { Sampler, SamplerState } from './sampler.js';

/** Rows of T tokens: x[r * T + t] predicts y[r * T + t] (y is x shifted left by one). */
export interface Batch { x: BigInt64Array; y: BigInt64Array; B: number; T: number }

export interface SkippedRecord { index: number; record: string; reason: string }

/** Called for every record before it enters a batch; throwing marks the record bad (it is skipped). */
export type RecordHook = (index: number, record: TokenArray) => void;

export interface Produced {
  /** Null when the sampler was exhausted before any record of this batch. */
  batch: Batch | null;
  skipped: SkippedRecord[];
  /** The sampler's state after this batch: resuming from it yields the next batch. */
  state: SamplerState;
}

const LITTLE_ENDIAN = endianness() === 'LE';

/** Write token ids into an int64 array; through the low 32-bit words when the host is little-endian. */
function writeInt64(dst: BigInt64Array, at: number, src: TokenArray, from: number, count: number): void {
  if (LITTLE_ENDIAN) {
    const words = new Int32Array(dst.buffer, dst.byteOffset, dst.length * 2);
    for (let i = 0; i < count; i++) { words[2 * (at + i)] = src[from + i]!; words[2 * (at + i) + 1] = 0; }
  } else {
    for (let i = 0; i < count; i++) dst[at + i] = BigInt(src[from + i]!);
  }
}

export interface BatchMakerOptions {
  /** Rows per batch (the last batch of a finite sampler may have fewer). */
  batch: number;
  hook?: RecordHook;
  /** Give up (throw) after this many bad records in a row rather than spin forever. Default 1000. */
  maxConsecutiveSkips?: number;
}

export class BatchMaker {
  private readonly B: number;
  private readonly maxSkips: number;

  constructor(private readonly dataset: WindowDataset, private readonly sampler: Sampler, private readonly opts: BatchMakerOptions) {
    if (!(Number.isInteger(opts.batch) && opts.batch >= 1)) throw new Error(`BatchMaker: batch must be a positive integer, got ${opts.batch}`);
    this.B = opts.batch;
    this.maxSkips = opts.maxConsecutiveSkips ?? 1000;
  }

  make(): Produced {
    const T = this.dataset.ctx;
    const rows: TokenArray[] = [];
    const skipped: SkippedRecord[] = [];
    let inARow = 0;
    while (rows.length < this.B) {
      const i = this.sampler.next();
      if (i === null) break;
      let rec: TokenArray;
      try {
        rec = this.dataset.record(i);
        if (rec.length !== T + 1) throw new Error(`expected ${T + 1} tokens, got ${rec.length}`);
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
    const x = new BigInt64Array(rows.length * T);
    const y = new BigInt64Array(rows.length * T);
    rows.forEach((rec, r) => { writeInt64(x, r * T, rec, 0, T); writeInt64(y, r * T, rec, 1, T); });
    return { batch: { x, y, B: rows.length, T }, skipped, state };
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
