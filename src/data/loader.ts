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
 * A read that fails with a transient error (a Node code in `TRANSIENT_CODES` such as EIO, or a
 * `TransientError`: retry.ts) is retried first, `retries` times after waits of `backoffMs`,
 * doubling up to `maxBackoffMs`; each retry counts in `stats.retries`, and each retried record is
 * reported through `onRetry` (default: a console warning naming it and its error). A record that still fails is a bad record, its reason naming the
 * retries ("EIO after 3 retries (50, 100, 200 ms): ..."). Retries happen where records are read
 * (the worker, or the calling thread) and never change a batch or the sampler's position. With a
 * prefetch worker, one batch's retries must fit in `timeoutMs` (at the defaults, 350 ms per record).
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
import type { Batch, BatchField, Produced, RecordHook, RetriedRecord, SkippedRecord } from './batch.js';
import type { Dataset } from './dataset.js';
import { retryPolicy } from './retry.js';
import type { RetryPolicy } from './retry.js';
import { samplerFromSpec } from './sampler.js';
import type { SamplerSpec, SamplerState } from './sampler.js';
import type { FromWorker, ToWorker, WorkerInit } from './prefetch_worker.js';

export type { Batch, BatchField, RecordHook, RetriedRecord, SkippedRecord };

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
  /** Retried reads in those batches (a record read on its third try counts 2). */
  retries: number;
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
  /** Reads of a record after a transient error before it counts as bad; 0: no retries. Default 3. */
  retries?: number;
  /** The wait before the first retry of a read, in ms, doubling before each next one. Default 50. */
  backoffMs?: number;
  /** The longest wait before a retry, in ms. Default max(1000, backoffMs). */
  maxBackoffMs?: number;
  /** Called for each retried record as its batch is consumed. Default: console.warn, one line per record. */
  onRetry?: (r: RetriedRecord) => void;
  /** Seed of the per-batch transform generators (with the sampler's rank). Default: the sampler's seed. */
  augmentSeed?: number;
}

/** The BatchMaker settings a loader's options imply (shared by both loaders, so they agree). */
export function makerOptions(opts: LoaderOptions): { seed: number; rank: number; firstBatch: number; retry: RetryPolicy } {
  const retry = retryPolicy({ retries: opts.retries, backoffMs: opts.backoffMs, maxBackoffMs: opts.maxBackoffMs });
  return { seed: opts.augmentSeed ?? opts.sampler.seed ?? 0, rank: opts.sampler.rank ?? 0, firstBatch: opts.state?.batches ?? 0, retry };
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
const warnRetry = (r: RetriedRecord): void => {
  const error = r.message.startsWith(r.code) ? r.message : `${r.code}: ${r.message}`;
  const outcome = r.recovered ? `read on retry ${r.retries}` : `still failing after ${r.retries} ${r.retries === 1 ? 'retry' : 'retries'}, skipped`;
  console.warn(`weft data: record ${r.index} (${r.record}) failed with ${error}; ${outcome} (waits ${r.delaysMs.join(', ')} ms)`);
};

/** The accounting both loaders share: stats, skip and retry reports, the consumed state, and one batch at a time. */
abstract class LoaderBase implements Loader {
  readonly stats: LoaderStats = { batches: 0, skipped: 0, retries: 0, waitMs: 0 };
  protected ended = false;
  private consumed: LoaderState;
  private chain: Promise<unknown> = Promise.resolve();
  /** `next()` calls not yet settled. */
  protected pending = 0;

  constructor(protected readonly opts: LoaderOptions) {
    this.consumed = opts.state ?? { sampler: samplerFromSpec(opts.sampler).state(), batches: 0 };
    if (this.consumed.sampler.kind !== opts.sampler.kind) {
      throw new Error(`loader: state is for a ${this.consumed.sampler.kind} sampler but the sampler spec is ${opts.sampler.kind}`);
    }
  }

  /** The next batch (or null at the end); called one at a time. */
  protected abstract take(): Promise<Batch | null>;
  abstract close(): Promise<void>;

  /** Calls run one after another, so concurrent `next()`s get consecutive batches. */
  next(): Promise<Batch | null> {
    this.pending++;
    const p = this.chain.then(() => this.take()).finally(() => { this.pending--; });
    this.chain = p.catch(() => undefined);
    return p;
  }

  state(): LoaderState { return { sampler: structuredClone(this.consumed.sampler), batches: this.consumed.batches }; }

  /** Record that the caller consumed this produced batch (or the end of the stream). */
  protected consume(p: Pick<Produced, 'skipped' | 'retried' | 'state'>, batch: Batch | null): Batch | null {
    const { skipped, retried, state } = p;
    for (const r of retried) (this.opts.onRetry ?? warnRetry)(r);
    for (const s of skipped) (this.opts.onSkip ?? warnSkip)(s);
    this.stats.retries += retried.reduce((n, r) => n + r.retries, 0);
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

  /** The next batch, made now; a retry's backoff blocks the calling thread (`next()` awaits it instead). */
  nextSync(): Batch | null {
    if (this.pending > 0) throw new Error(`SyncLoader: nextSync() while ${this.pending} next() call(s) are unsettled; await them first`);
    if (this.ended) return null;
    const p: Produced = this.maker.make();
    return this.consume(p, p.batch);
  }

  protected async take(): Promise<Batch | null> {
    if (this.ended) return null;
    const p = await this.maker.makeAsync();
    return this.consume(p, p.batch);
  }

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

  protected async take(): Promise<Batch | null> {
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
    if (m.type === 'end') return this.consume(m, null);
    this.worker.postMessage({ type: 'more' } satisfies ToWorker);
    return this.consume(m, m.batch);
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
