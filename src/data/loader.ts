/**
 * Loaders: batches `{ B, fields }` (one [B, ...rowShape] array per dataset field) from a dataset and
 * a sampler.
 *
 * - `SyncLoader` makes each batch in the calling thread when asked (tests, tiny runs, eval).
 * - `PrefetchLoader` makes them on a worker thread, `depth` batches ahead, while the main thread is
 *   blocked in onnxruntime; buffers are transferred, not copied. Every wait on the worker has a
 *   timeout whose error names the worker and what was awaited; `close()` terminates it.
 *
 * Both run the same `BatchMaker`, so for the same dataset, sampler spec and state they yield the
 * same batches. A bad record (the dataset or the record hook throws) is skipped, counted in
 * `stats.skipped` and reported through `onSkip` (default: a console warning naming the record);
 * so is a record that does not fit the dataset's fields.
 *
 * Random image transforms draw from a generator per batch, `batchRng(augmentSeed, rank, index)`,
 * where index is the batch's position in the loader's stream (`LoaderState.batches` before it):
 * a resumed loader yields exactly the batches, augmentations included, of an uninterrupted one.
 *
 * `state()` is the state after the last batch the caller *consumed* (not the last one the worker
 * made ahead); a loader created with `{ state }` continues with exactly the next batch.
 *
 * @example
 *   const { train } = brownSplit();
 *   const ds = new TokenDataset(train, 256);
 *   const loader = await createLoader({ dataset: ds, sampler: { kind: 'random', n: ds.size, seed: 1 }, batch: 32 });
 *   for (let step = 0; step < steps; step++) { const { fields } = (await loader.next())!; await trainStep(fields); }
 *   checkpoint.data = loader.state();
 *   await loader.close();
 */
import { Worker } from 'node:worker_threads';
import { workerExecArgv } from '../runtime/workers.js';
import { BatchMaker, importRecordHook } from './batch.js';
import type { Batch, BatchField, Produced, RecordHook, SkippedRecord } from './batch.js';
import type { Dataset } from './dataset.js';
import { samplerFromSpec } from './sampler.js';
import type { SamplerSpec, SamplerState } from './sampler.js';
import type { FromWorker, ToWorker, WorkerInit } from './prefetch_worker.js';

export type { Batch, BatchField, RecordHook, SkippedRecord };

export interface LoaderState {
  /** The sampler's state after the last consumed batch. */
  sampler: SamplerState;
  /** Batches consumed so far (including those before a resume). */
  batches: number;
}

export interface LoaderStats {
  /** Batches consumed from this loader. */
  batches: number;
  /** Records skipped in those batches. */
  skipped: number;
  /** Milliseconds `next()` spent waiting for the worker (0 when prefetch keeps up). */
  waitMs: number;
}

export interface LoaderOptions {
  dataset: Dataset;
  sampler: SamplerSpec;
  /** Rows per batch. */
  batch: number;
  /** Resume: continue after the batch this state was taken at. */
  state?: LoaderState;
  /** Module (absolute path, file: or data: URL) whose default export is a `RecordHook`. */
  recordHook?: string;
  /** Called for each skipped record as its batch is consumed. Default: console.warn. */
  onSkip?: (s: SkippedRecord) => void;
  /** Fail after this many bad records in a row. Default 1000. */
  maxConsecutiveSkips?: number;
  /** Seed of the per-batch transform generators (with the sampler's rank). Default: the sampler's seed. */
  augmentSeed?: number;
}

/** The BatchMaker settings a loader's options imply (shared by both loaders, so they agree). */
export function makerOptions(opts: LoaderOptions): { seed: number; rank: number; firstBatch: number } {
  return { seed: opts.augmentSeed ?? opts.sampler.seed ?? 0, rank: opts.sampler.rank ?? 0, firstBatch: opts.state?.batches ?? 0 };
}

export interface PrefetchOptions extends LoaderOptions {
  /** Batches made ahead. Default 2. */
  depth?: number;
  /** Limit on every wait on the worker (start, each batch, exit), in ms. Default 30000. */
  timeoutMs?: number;
  /** Worker name, used in errors. Default `weft-data-<n>`. */
  name?: string;
}

export interface Loader extends AsyncIterable<Batch> {
  /** The next batch, or null when the sampler is exhausted. */
  next(): Promise<Batch | null>;
  state(): LoaderState;
  readonly stats: LoaderStats;
  close(): Promise<void>;
}

const warnSkip = (s: SkippedRecord): void => console.warn(`weft data: skipped record ${s.index} (${s.record}): ${s.reason}`);

/** The accounting both loaders share: stats, skip reports, and the consumed state. */
abstract class LoaderBase implements Loader {
  readonly stats: LoaderStats = { batches: 0, skipped: 0, waitMs: 0 };
  protected ended = false;
  private consumed: LoaderState;

  constructor(protected readonly opts: LoaderOptions) {
    this.consumed = opts.state ?? { sampler: samplerFromSpec(opts.sampler).state(), batches: 0 };
    if (this.consumed.sampler.kind !== opts.sampler.kind) {
      throw new Error(`loader: state is for a ${this.consumed.sampler.kind} sampler but the sampler spec is ${opts.sampler.kind}`);
    }
  }

  abstract next(): Promise<Batch | null>;
  abstract close(): Promise<void>;

  state(): LoaderState { return { sampler: structuredClone(this.consumed.sampler), batches: this.consumed.batches }; }

  /** Record that the caller consumed this produced batch (or the end of the stream). */
  protected consume(skipped: readonly SkippedRecord[], state: SamplerState, batch: Batch | null): Batch | null {
    for (const s of skipped) (this.opts.onSkip ?? warnSkip)(s);
    this.stats.skipped += skipped.length;
    if (batch === null) this.ended = true; else this.stats.batches++;
    this.consumed = { sampler: state, batches: this.consumed.batches + (batch === null ? 0 : 1) };
    return batch;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    for (let b = await this.next(); b !== null; b = await this.next()) yield b;
  }
}

/** Makes each batch in the calling thread. */
export class SyncLoader extends LoaderBase {
  private readonly maker: BatchMaker;

  /** `hook` as a function (in-thread only); `create` also accepts `opts.recordHook` as a module. */
  constructor(opts: LoaderOptions, hook?: RecordHook) {
    super(opts);
    if (opts.recordHook !== undefined && hook === undefined) throw new Error(`SyncLoader: recordHook ${opts.recordHook.slice(0, 80)} is a module; use SyncLoader.create to import it`);
    const sampler = samplerFromSpec(opts.sampler, opts.state?.sampler);
    this.maker = new BatchMaker(opts.dataset, sampler, { batch: opts.batch, hook, maxConsecutiveSkips: opts.maxConsecutiveSkips, ...makerOptions(opts) });
  }

  static async create(opts: LoaderOptions): Promise<SyncLoader> {
    return new SyncLoader(opts, opts.recordHook === undefined ? undefined : await importRecordHook(opts.recordHook));
  }

  nextSync(): Batch | null {
    if (this.ended) return null;
    const p: Produced = this.maker.make();
    return this.consume(p.skipped, p.state, p.batch);
  }

  async next(): Promise<Batch | null> { return this.nextSync(); }
  async close(): Promise<void> { this.ended = true; }
}

let workers = 0;

/** Makes batches ahead on a worker thread. Create with `PrefetchLoader.create` (waits until it is ready). */
export class PrefetchLoader extends LoaderBase {
  readonly name: string;
  private readonly worker: Worker;
  private readonly timeoutMs: number;
  private readonly inbox: FromWorker[] = [];
  private waiter: { resolve: (m: FromWorker) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private exited = false;
  private closed = false;
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(opts: PrefetchOptions) {
    super(opts);
    this.name = opts.name ?? `weft-data-${workers++}`;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    const depth = opts.depth ?? 2;
    if (!(Number.isInteger(depth) && depth >= 1)) throw new Error(`PrefetchLoader: depth must be a positive integer, got ${depth}`);
    const init: WorkerInit = {
      dataset: opts.dataset.spec(), sampler: opts.sampler, state: opts.state?.sampler, batch: opts.batch, depth,
      recordHook: opts.recordHook, maxConsecutiveSkips: opts.maxConsecutiveSkips, ...makerOptions(opts),
    };
    this.worker = new Worker(new URL('./prefetch_worker.js', import.meta.url), { workerData: init, name: this.name, execArgv: workerExecArgv() });
    this.worker.on('message', (m: FromWorker) => {
      if (this.waiter !== null) { const w = this.waiter; this.waiter = null; w.resolve(m); } else this.inbox.push(m);
    });
    this.worker.on('error', (e: Error) => this.fail(new Error(`data loader worker '${this.name}' crashed: ${e.message}`)));
    this.worker.on('exit', (code: number) => {
      this.exited = true;
      if (!this.closed) this.fail(new Error(`data loader worker '${this.name}' exited unexpectedly (code ${code})`));
    });
    // A loader that is never closed must not keep the process alive; waits hold their own timer.
    // (After the listeners: adding a 'message' listener refs the worker's port again.)
    this.worker.unref();
  }

  static async create(opts: PrefetchOptions): Promise<PrefetchLoader> {
    const l = new PrefetchLoader(opts);
    try {
      const m = await l.receive('its ready message');
      if (m.type === 'error') throw new Error(`data loader worker '${l.name}' failed to start: ${m.message}`);
      if (m.type !== 'ready') throw new Error(`data loader worker '${l.name}' sent '${m.type}' before 'ready'`);
    } catch (e) {
      await l.close();
      throw e;
    }
    return l;
  }

  private fail(e: Error): void {
    this.failure ??= e;
    if (this.waiter !== null) { const w = this.waiter; this.waiter = null; w.reject(this.failure); }
  }

  /** The next message from the worker, within the timeout. */
  private receive(what: string): Promise<FromWorker> {
    const m = this.inbox.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise<FromWorker>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`data loader worker '${this.name}' did not send ${what} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiter = {
        resolve: (msg) => { clearTimeout(timer); resolve(msg); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });
  }

  /** Calls run one after another, so concurrent `next()`s get consecutive batches. */
  next(): Promise<Batch | null> {
    const p = this.chain.then(() => this.take());
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async take(): Promise<Batch | null> {
    if (this.closed) throw new Error(`data loader '${this.name}' is closed`);
    if (this.ended) return null;
    const t0 = performance.now();
    const m = await this.receive(`batch ${this.state().batches + 1}`);
    this.stats.waitMs += performance.now() - t0;
    if (m.type === 'error') {
      this.fail(new Error(`data loader worker '${this.name}' failed: ${m.message}`));
      throw this.failure!;
    }
    if (m.type === 'ready') throw new Error(`data loader worker '${this.name}' sent 'ready' twice`);
    if (m.type === 'end') return this.consume(m.skipped, m.state, null);
    this.worker.postMessage({ type: 'more' } satisfies ToWorker);
    return this.consume(m.skipped, m.state, m.batch);
  }

  /** Terminate the worker; batches made ahead are dropped (`state()` does not count them). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new Error(`data loader '${this.name}' was closed`));
    if (this.exited) return;
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`data loader worker '${this.name}' did not exit within ${this.timeoutMs} ms of terminate()`)), this.timeoutMs);
    });
    try {
      await Promise.race([this.worker.terminate(), limit]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A `PrefetchLoader` with `depth` batches ahead, or a `SyncLoader` when depth is 0. */
export async function createLoader(opts: PrefetchOptions): Promise<Loader> {
  return opts.depth === 0 ? SyncLoader.create(opts) : PrefetchLoader.create(opts);
}
