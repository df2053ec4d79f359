/**
 * Transient read errors and the retry policy of record reads.
 *
 * A *bad record* fails on every read (corrupt bytes, a wrong shape); a *transient* error is one a
 * file or network read may not repeat (a busy disk, a reset connection, too many open files). The
 * BatchMaker reads a record again after a transient error, waiting
 *
 *   delay_k = min(backoffMs * 2^k, maxBackoffMs),  k = 0 .. retries - 1
 *
 * before retry k + 1 (50, 100, 200 ms by default). No random jitter: jitter spreads many clients'
 * retries against one server, while one loader's reads are sequential, and fixed waits keep runs
 * reproducible in time as well as in content. Retries never change a batch's content: the
 * sampler is not advanced again, and the batch's generator is rewound to where the failed read
 * started, so a record read on its third try is the record a first try would have given.
 *
 * @example
 *   record(i) {
 *     try { return readShard(i); }
 *     catch (e) { throw new TransientError(`shard server busy for record ${i}`, { cause: e }); }
 *   }
 */

/**
 * Node error codes (`err.code`) taken as transient: the device or peer may answer on a later try.
 *   EAGAIN, EINTR: the call was interrupted or would block; EBUSY: the resource is held;
 *   EIO: a low-level I/O error (network file systems, flaky disks); ETIMEDOUT, ECONNRESET: the
 *   peer was slow or dropped the connection; EMFILE, ENFILE: out of file descriptors (they free up).
 */
export const TRANSIENT_CODES: ReadonlySet<string> = new Set(['EAGAIN', 'EBUSY', 'EIO', 'ETIMEDOUT', 'ECONNRESET', 'EMFILE', 'ENFILE', 'EINTR']);

/**
 * An error a dataset (or record hook) marks as transient: the loader retries the read. Any error
 * with `transient: true` counts the same (e.g. from another copy of this module); `transient:
 * false` marks an error as permanent even when its `code` is in `TRANSIENT_CODES`.
 */
export class TransientError extends Error {
  readonly transient = true;
  /** Optional, like Node's: names the error in skip reasons ("ESHARD after 3 retries ..."). */
  readonly code: string | undefined;

  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TransientError';
    this.code = options?.code;
  }
}

/** Causes followed when classifying an error (fetch wraps its socket error in `cause`). */
const MAX_CAUSES = 4;

/**
 * The label of a transient error (its Node code, or its name when it is marked transient), or null
 * when it is not transient. The error is read first, then its `cause` chain: the first one with a
 * boolean `transient` decides, otherwise the first with a code in `TRANSIENT_CODES`.
 */
export function transientLabel(e: unknown): string | null {
  let x: unknown = e;
  for (let depth = 0; depth <= MAX_CAUSES && typeof x === 'object' && x !== null; depth++) {
    const o = x as { transient?: unknown; code?: unknown; name?: unknown; cause?: unknown };
    const code = typeof o.code === 'string' ? o.code : null;
    if (typeof o.transient === 'boolean') return o.transient ? (code ?? (typeof o.name === 'string' ? o.name : 'TransientError')) : null;
    if (code !== null && TRANSIENT_CODES.has(code)) return code;
    x = o.cause;
  }
  return null;
}

/** How a BatchMaker retries a record read (structured-clonable: it travels to the prefetch worker). */
export interface RetryPolicy {
  /** Reads after the first one that failed with a transient error; 0: none. */
  retries: number;
  /** The wait before the first retry, in ms; it doubles before each next one. */
  backoffMs: number;
  /** No wait is longer than this, in ms. */
  maxBackoffMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = { retries: 3, backoffMs: 50, maxBackoffMs: 1000 };

/** The policy with defaults filled in, or an error naming the option that is out of range. */
export function retryPolicy(o: Partial<RetryPolicy>): RetryPolicy {
  const p: RetryPolicy = {
    retries: o.retries ?? DEFAULT_RETRY.retries,
    backoffMs: o.backoffMs ?? DEFAULT_RETRY.backoffMs,
    maxBackoffMs: o.maxBackoffMs ?? Math.max(DEFAULT_RETRY.maxBackoffMs, o.backoffMs ?? 0),
  };
  if (!(Number.isInteger(p.retries) && p.retries >= 0)) throw new Error(`loader: retries must be an integer >= 0, got ${p.retries}`);
  if (!(Number.isFinite(p.backoffMs) && p.backoffMs >= 0)) throw new Error(`loader: backoffMs must be a finite number >= 0, got ${p.backoffMs}`);
  if (!(Number.isFinite(p.maxBackoffMs) && p.maxBackoffMs >= p.backoffMs)) {
    throw new Error(`loader: maxBackoffMs must be a finite number >= backoffMs (${p.backoffMs}), got ${p.maxBackoffMs}`);
  }
  return p;
}

/** The waits before retries 1..retries, in ms: min(backoffMs * 2^k, maxBackoffMs). */
export function retryDelays(p: RetryPolicy): number[] {
  return Array.from({ length: p.retries }, (_, k) => Math.min(p.backoffMs * 2 ** k, p.maxBackoffMs));
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Block this thread for `ms` (the in-thread `nextSync` path, which cannot await). */
export function sleepSync(ms: number): void {
  const end = performance.now() + ms;
  for (let left = ms; left > 0; left = end - performance.now()) Atomics.wait(sleeper, 0, 0, left);
}

/** Wait at least `ms` (timers may fire a millisecond early, so it checks the clock). */
export async function sleep(ms: number): Promise<void> {
  const end = performance.now() + ms;
  for (let left = ms; left > 0; left = end - performance.now()) {
    await new Promise<void>((resolve) => setTimeout(resolve, Math.ceil(left)));
  }
}
