/**
 * Samplers: which record each batch row reads, one record index at a time, for one rank of
 * `worldSize`. Both kinds give every rank the same number of records, disjoint from the other
 * ranks' (as draws, or as positions of the epoch's order), and save/restore their exact position.
 *
 * A sampler is built from a structured-clonable `SamplerSpec` (so a prefetch worker can own it) and
 * optionally a `SamplerState` to resume from.
 */
import { Rng } from '../tensor/random.js';

export interface Sampler {
  /** The next record index for this rank, or null when the sampler is exhausted. */
  next(): number | null;
  /** Everything needed to continue exactly after the last `next()` (JSON-serializable). */
  state(): SamplerState;
}

export interface RandomSamplerOptions {
  /** Records are drawn uniformly from [0, n) (`TokenDataset.size`). */
  n: number;
  seed?: number;
  rank?: number;
  worldSize?: number;
}

export interface SequentialSamplerOptions {
  /** The records in order: indices 0..items-1, or an explicit list (e.g. `evalWindows(val)`). */
  items: number | readonly number[];
  /** Permute each epoch with Rng(seed + epoch) (torch's DistributedSampler convention). */
  shuffle?: boolean;
  seed?: number;
  /** Passes over the items before `next()` returns null; Infinity for endless. Default 1. */
  epochs?: number;
  /** Drop the tail that does not divide by worldSize (else pad it by repeating the first items). */
  dropLast?: boolean;
  rank?: number;
  worldSize?: number;
}

export type SamplerSpec = ({ kind: 'random' } & RandomSamplerOptions) | ({ kind: 'sequential' } & SequentialSamplerOptions);
export type SamplerState = { kind: 'random'; rng: number[]; drawn: number } | { kind: 'sequential'; epoch: number; pos: number };

function checkRank(who: string, rank: number, worldSize: number, seed: number): void {
  if (!Number.isSafeInteger(seed)) throw new Error(`${who}: seed must be an integer, got ${seed}`);
  if (!(Number.isInteger(worldSize) && worldSize >= 1)) throw new Error(`${who}: worldSize must be a positive integer, got ${worldSize}`);
  if (!(Number.isInteger(rank) && rank >= 0 && rank < worldSize)) throw new Error(`${who}: rank must be an integer in [0, ${worldSize}), got ${rank}`);
}

/**
 * Uniform random windows with replacement, as torch_brown.py's `batch()`: each record index is
 * uniform in [0, n). All ranks run the same generator from the same seed; the global stream of
 * draws is dealt round-robin, so rank r's j-th record is global draw j * worldSize + r. With
 * worldSize W and per-rank batch B, one step's W shares together are exactly the W * B draws a
 * single process would make (only their assignment to rows differs).
 */
export class RandomWindowSampler implements Sampler {
  private readonly rng: Rng;
  private drawn = 0;
  readonly n: number;
  readonly rank: number;
  readonly worldSize: number;

  constructor(opts: RandomSamplerOptions, state?: SamplerState) {
    const { n, seed = 0, rank = 0, worldSize = 1 } = opts;
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`RandomWindowSampler: n must be a positive integer, got ${n}`);
    checkRank('RandomWindowSampler', rank, worldSize, seed);
    this.n = n; this.rank = rank; this.worldSize = worldSize;
    this.rng = new Rng(seed);
    if (state !== undefined) {
      if (state.kind !== 'random') throw new Error(`RandomWindowSampler: cannot resume from a ${state.kind} sampler state`);
      this.rng.setState(state.rng);
      this.drawn = state.drawn;
    }
  }

  next(): number {
    let mine = 0;
    for (let r = 0; r < this.worldSize; r++) {
      const v = this.rng.int(this.n);
      if (r === this.rank) mine = v;
    }
    this.drawn++;
    return mine;
  }

  state(): SamplerState { return { kind: 'random', rng: this.rng.getState(), drawn: this.drawn }; }
}

/**
 * The items in order (or shuffled per epoch), split across ranks like torch's DistributedSampler:
 * the epoch's order is padded (or truncated with dropLast) to a multiple of worldSize and rank r
 * takes positions r, r + W, r + 2W, ... Every rank gets ceil(N / W) records (floor with dropLast);
 * without dropLast the padding repeats up to W - 1 records.
 */
export class SequentialSampler implements Sampler {
  private readonly items: readonly number[] | null;
  private readonly count: number;
  private epoch = 0;
  private pos = 0;
  private share: number[] = [];
  private shareEpoch = -1;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly epochs: number;
  readonly dropLast: boolean;
  readonly rank: number;
  readonly worldSize: number;

  constructor(opts: SequentialSamplerOptions, state?: SamplerState) {
    const { items, shuffle = false, seed = 0, epochs = 1, dropLast = false, rank = 0, worldSize = 1 } = opts;
    this.items = typeof items === 'number' ? null : items;
    this.count = typeof items === 'number' ? items : items.length;
    if (!(Number.isInteger(this.count) && this.count >= 0)) throw new Error(`SequentialSampler: items must be a count >= 0 or a list, got ${items}`);
    if (!(epochs >= 0 && (Number.isInteger(epochs) || epochs === Infinity))) throw new Error(`SequentialSampler: epochs must be an integer >= 0 or Infinity, got ${epochs}`);
    checkRank('SequentialSampler', rank, worldSize, seed);
    this.shuffle = shuffle; this.seed = seed; this.epochs = epochs; this.dropLast = dropLast;
    this.rank = rank; this.worldSize = worldSize;
    if (state !== undefined) {
      if (state.kind !== 'sequential') throw new Error(`SequentialSampler: cannot resume from a ${state.kind} sampler state`);
      this.epoch = state.epoch; this.pos = state.pos;
    }
  }

  /** Records per rank per epoch. */
  get perRank(): number { return this.dropLast ? Math.floor(this.count / this.worldSize) : Math.ceil(this.count / this.worldSize); }

  /** This rank's records for `epoch`, in order. */
  shareOf(epoch: number): number[] {
    const order = Array.from({ length: this.count }, (_, i) => i);
    if (this.shuffle) new Rng(this.seed + epoch).shuffle(order);
    const total = this.perRank * this.worldSize;
    const share: number[] = [];
    for (let p = this.rank; p < total; p += this.worldSize) {
      const k = order[p % this.count]!;
      share.push(this.items === null ? k : this.items[k]!);
    }
    return share;
  }

  next(): number | null {
    while (this.epoch < this.epochs) {
      if (this.shareEpoch !== this.epoch) { this.share = this.shareOf(this.epoch); this.shareEpoch = this.epoch; }
      if (this.pos < this.share.length) return this.share[this.pos++]!;
      if (this.share.length === 0) return null; // nothing to give, however many epochs
      this.epoch++; this.pos = 0;
    }
    return null;
  }

  state(): SamplerState { return { kind: 'sequential', epoch: this.epoch, pos: this.pos }; }
}

export function samplerFromSpec(spec: SamplerSpec, state?: SamplerState): Sampler {
  if (spec.kind === 'random') return new RandomWindowSampler(spec, state);
  if (spec.kind === 'sequential') return new SequentialSampler(spec, state);
  throw new Error(`samplerFromSpec: unknown sampler kind ${JSON.stringify((spec as { kind: unknown }).kind)}`);
}

/**
 * The sampler state of rank `rank` of `worldSize` that continues the global stream the states of
 * an earlier run with `states.length` ranks stopped at, so a run can resume with another number of
 * data-parallel ranks. Both kinds deal one global stream round-robin: every old rank holds the
 * same generator state (random) or epoch (sequential), and the global position is a rank's count
 * times the old world size, which must divide by the new one.
 */
export function reshardSamplerState(states: readonly SamplerState[], worldSize: number, rank: number): SamplerState {
  const old = states.length;
  const first = states[0];
  if (first === undefined) throw new Error('reshardSamplerState: no states');
  const same = states.every((s) => JSON.stringify(s) === JSON.stringify(first));
  if (!same) throw new Error(`reshardSamplerState: the ${old} ranks' sampler states differ (a stream interrupted mid-batch cannot be re-dealt)`);
  if (!(Number.isInteger(rank) && rank >= 0 && rank < worldSize)) throw new Error(`reshardSamplerState: rank ${rank} is outside [0, ${worldSize})`);
  const count = first.kind === 'random' ? first.drawn : first.pos;
  const global = count * old;
  if (global % worldSize !== 0) throw new Error(`reshardSamplerState: ${global} records were dealt to ${old} ranks; they do not split evenly over ${worldSize}`);
  return first.kind === 'random' ? { ...first, rng: [...first.rng], drawn: global / worldSize } : { ...first, pos: global / worldSize };
}
