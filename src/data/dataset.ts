/**
 * Datasets of language-modelling records: record i is ctx + 1 consecutive token ids; a batch row
 * takes x = record[0..ctx) and y = record[1..ctx+1). A dataset is described by a structured-clonable
 * `DatasetSpec`, so a prefetch worker can rebuild it in its own thread (`datasetFromSpec`); sharded
 * file datasets add a kind there.
 */

/** Token storage: bytes, 16-bit ids (vocabulary <= 65536), or 32-bit ids. */
export type TokenArray = Uint8Array | Uint16Array | Int32Array | Uint32Array;

export interface WindowDataset {
  /** Tokens a model sees per row (T); each record has ctx + 1. */
  readonly ctx: number;
  /** Number of records: indices 0..size-1. */
  readonly size: number;
  /** Record i (a view when possible, never to be written). May throw for a bad record. */
  record(i: number): TokenArray;
  /** Names record i in warnings and errors ("tokens[1200..1457)"). */
  describe(i: number): string;
  /** A structured-clonable description that `datasetFromSpec` turns back into this dataset. */
  spec(): DatasetSpec;
}

export type DatasetSpec = { kind: 'tokens'; tokens: TokenArray; ctx: number };

/**
 * One 1-D token array; record i is the window tokens[i .. i + ctx + 1).
 *
 * `size` is `tokens.length - ctx - 1`, the range torch_brown.py draws starts from
 * (`torch.randint(0, len - T - 1)`, exclusive), so the very last window is never a record: random
 * starts and `evalWindows` then index records exactly as the reference does.
 */
export class TokenDataset implements WindowDataset {
  readonly size: number;

  constructor(readonly tokens: TokenArray, readonly ctx: number) {
    if (!(Number.isInteger(ctx) && ctx >= 1)) throw new Error(`TokenDataset: ctx must be a positive integer, got ${ctx}`);
    this.size = tokens.length - ctx - 1;
    if (this.size < 1) throw new Error(`TokenDataset: ${tokens.length} tokens hold no window of ctx + 1 = ${ctx + 1} with a start in [0, len - ctx - 1); need at least ${ctx + 2}`);
  }

  record(i: number): TokenArray {
    if (!(Number.isInteger(i) && i >= 0 && i < this.size)) throw new RangeError(`TokenDataset: record ${i} is outside [0, ${this.size})`);
    return this.tokens.subarray(i, i + this.ctx + 1);
  }

  describe(i: number): string { return `tokens[${i}..${i + this.ctx + 1})`; }

  /**
   * Tokens in a SharedArrayBuffer are shared with a worker; others are copied into it. A view of a
   * larger buffer (e.g. `brownSplit().val`) is compacted first, since structured cloning a view
   * copies its whole underlying buffer.
   */
  spec(): DatasetSpec {
    const t = this.tokens;
    const whole = t.buffer instanceof SharedArrayBuffer || t.byteLength === t.buffer.byteLength;
    return { kind: 'tokens', tokens: whole ? t : t.slice(), ctx: this.ctx };
  }
}

export function datasetFromSpec(spec: DatasetSpec): WindowDataset {
  if (spec.kind === 'tokens') return new TokenDataset(spec.tokens, spec.ctx);
  throw new Error(`datasetFromSpec: unknown dataset kind ${JSON.stringify((spec as { kind: unknown }).kind)}`);
}

/**
 * The fixed evaluation windows of torch_brown.py's `evaluate`: start i is
 * `i * (len - T - 1) // n` for i in 0..n-1 (used with batch 1, in order).
 */
export function evalWindows(dataset: { size: number }, n = 20): number[] {
  if (!(Number.isInteger(n) && n >= 1)) throw new Error(`evalWindows: n must be a positive integer, got ${n}`);
  return Array.from({ length: n }, (_, i) => Math.floor((i * dataset.size) / n));
}
