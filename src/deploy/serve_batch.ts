/**
 * Dynamic batching for `weft serve`: requests wait in one bounded queue; a run takes the oldest
 * request and, behind it in arrival order, every other request with the same non-batch dims (a
 * GPT request of seq 16 cannot share a run with one of seq 32) while the rows fit in `maxBatch`.
 * A run starts when those rows fill `maxBatch` (or the next such request would not fit), or when
 * the oldest request has waited `maxWaitMs`. Inputs are concatenated along dim 0, the session runs
 * once, and each request gets its own rows of every output.
 *
 * One run at a time: onnxruntime-node's `run` blocks the JS thread, so a second run could not
 * overlap the first, and HTTP parsing waits behind it either way. After a run the next one is
 * scheduled with setImmediate, after the event loop's I/O phase, so requests that arrived during
 * the run are parsed and queued first and can join it.
 */
import type { InferenceSession, Named } from '../runtime/ort.js';
import type { ServeMetrics } from './serve_metrics.js';
import { concatRows, outputRows, RequestError } from './serve_request.js';
import type { PredictRequest, ServeSignature } from './serve_request.js';

/** A request's answer: its `outputs` JSON, as `outputRows` gives it. */
export type Outputs = ReturnType<typeof outputRows>;

interface Job { req: PredictRequest; since: number; resolve(o: Outputs): void; reject(e: Error): void }

export interface BatcherOptions {
  /** Most rows in one run; 1 turns batching off. */
  maxBatch: number;
  /** Longest the oldest queued request waits for others to join its run. */
  maxWaitMs: number;
  /** Most requests waiting; past it `submit` refuses with 429. */
  queue: number;
}

export class Batcher {
  private readonly pending: Job[] = [];
  private running = false;
  private timer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly session: InferenceSession, private readonly sig: ServeSignature, private readonly o: BatcherOptions, private readonly metrics: ServeMetrics) {}

  /** Requests waiting for a run. */
  get depth(): number { return this.pending.length; }

  /** Whether nothing is queued or running. */
  get idle(): boolean { return this.pending.length === 0 && !this.running; }

  /** Queues `req`; resolves with its outputs after its run. A full queue is a RequestError 429. */
  submit(req: PredictRequest): Promise<Outputs> {
    if (this.pending.length >= this.o.queue) {
      return Promise.reject(new RequestError(`the queue is full (${this.o.queue} requests waiting); retry later`, 429));
    }
    return new Promise<Outputs>((resolve, reject) => {
      this.pending.push({ req, since: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  /** Resolves when the queue is empty and no run is going (at once if so). */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Starts a run if one is due, else arms the timer for the oldest request's deadline. */
  private schedule(): void {
    if (this.running || this.pending.length === 0) return;
    const oldest = this.pending[0]!;
    const take: number[] = [];
    let rows = 0;
    let full = false;
    const merge = this.sig.splittable;
    for (let i = 0; i < this.pending.length; i++) {
      const r = this.pending[i]!.req;
      if (r.key !== oldest.req.key) continue;
      if (rows + r.rows > this.o.maxBatch || (!merge && take.length > 0)) { full = true; break; }
      take.push(i);
      rows += r.rows;
      if (rows === this.o.maxBatch) { full = true; break; }
    }
    const waited = performance.now() - oldest.since;
    if (!full && waited < this.o.maxWaitMs) {
      if (this.timer === null) {
        this.timer = setTimeout(() => { this.timer = null; this.schedule(); }, this.o.maxWaitMs - waited);
      }
      return;
    }
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
    const jobs = take.map((i) => this.pending[i]!);
    for (let k = take.length - 1; k >= 0; k--) this.pending.splice(take[k]!, 1);
    this.running = true;
    void this.run(jobs, rows);
  }

  private async run(jobs: readonly Job[], rows: number): Promise<void> {
    try {
      let outputs: Record<string, Named>;
      try {
        outputs = await this.session.run(concatRows(jobs.map((j) => j.req), this.sig));
      } catch (e) {
        throw new RequestError(`the model's run failed: ${(e as Error).message}`, 500);
      }
      this.metrics.batch(rows);
      const whole = jobs.length === 1;
      if (!whole) {
        for (const [name, o] of Object.entries(outputs)) {
          if (o.dims[0] !== rows) throw new RequestError(`output '${name}' has ${o.dims[0]} rows for a run of ${rows}; it cannot be split per request`, 500);
        }
      }
      let start = 0;
      for (const j of jobs) {
        j.resolve(outputRows(outputs, start, j.req.rows, whole));
        start += j.req.rows;
      }
    } catch (e) {
      for (const j of jobs) j.reject(e as Error);
    } finally {
      this.running = false;
      if (this.idle) { const w = this.idleWaiters; this.idleWaiters = []; for (const r of w) r(); }
      setImmediate(() => this.schedule());
    }
  }

  /** Stops the wait timer (the queue is empty when the server closes). */
  dispose(): void {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
  }
}
