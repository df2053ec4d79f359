/**
 * Per-worker clocks on a server, and the read rule of each consistency mode (Ho et al., "More
 * Effective Distributed ML via a Stale Synchronous Parallel Parameter Server", NIPS 2013).
 *
 * A worker's clock is the number of steps it has finished (its Op.clock messages). A read at clock
 * c (the worker's step c, 0-based) may proceed when the slowest live worker has finished at least
 * c - s steps, so every update of steps before c - s is in what it reads: its staleness c - min
 * clock is at most s. BSP is s = 0 with the pushes of a step applied together once the last worker
 * has finished it; SSP is a bound s >= 0 with pushes applied as they come; ASP never waits.
 * Workers that are done or lost no longer hold anyone back.
 */
import type { Consistency } from './protocol.js';

interface Waiter { need: number; run: () => void }

export class Clocks {
  private readonly clocks: number[];
  private readonly live: boolean[];
  private waiters: Waiter[] = [];
  maxStaleness = 0;
  reads = 0;
  held = 0;

  /** `start`: the step every worker resumes from (a checkpoint's), 0 for a fresh run. */
  constructor(readonly workers: number, readonly mode: Consistency, readonly staleness: number, start = 0) {
    if (!Number.isInteger(staleness) || staleness < 0) throw new Error(`ps.staleness must be an integer >= 0, got ${staleness}`);
    this.clocks = new Array<number>(workers).fill(start);
    this.live = new Array<boolean>(workers).fill(true);
  }

  /** The bound s of the mode (BSP 0, ASP unbounded). */
  get bound(): number { return this.mode === 'bsp' ? 0 : this.mode === 'ssp' ? this.staleness : Infinity; }

  /** The fewest steps any live worker has finished (Infinity when none is live). */
  minClock(): number {
    let m = Infinity;
    for (let w = 0; w < this.workers; w++) if (this.live[w]) m = Math.min(m, this.clocks[w]!);
    return m;
  }

  clockOf(w: number): number { return this.clocks[w]!; }
  isLive(w: number): boolean { return this.live[w]!; }
  liveCount(): number { return this.live.filter(Boolean).length; }

  canRead(clock: number): boolean { return clock < 0 || this.minClock() >= clock - this.bound; }

  /**
   * Runs `run` (synchronously) once a read at `clock` is allowed: now, or when a clock advances
   * far enough; waiters released together run in the order they came (one worker's reads come in
   * clock order, so they are released in order). Staleness is recorded when it runs.
   */
  whenReadable(clock: number, run: () => void): void {
    this.whenMin(clock < 0 ? -Infinity : clock - this.bound, () => { this.record(clock); run(); });
  }

  /** Runs `run` (synchronously) once every live worker has finished at least `need` steps. */
  whenMin(need: number, run: () => void): void {
    if (this.minClock() >= need) { run(); return; }
    this.held++;
    this.waiters.push({ need, run });
  }

  /** Reads waiting for a clock. */
  get waiting(): number { return this.waiters.length; }

  /** Worker `w` finished `clock` steps; `beforeRelease` runs first (BSP applies the step's pushes there). */
  tick(w: number, clock: number, beforeRelease?: (newMin: number, oldMin: number) => void): void {
    if (clock !== this.clocks[w]! + 1) throw new Error(`worker ${w}: clock ${clock} after ${this.clocks[w]} (clocks advance by one)`);
    const before = this.minClock();
    this.clocks[w] = clock;
    this.advanced(before, beforeRelease);
  }

  /** Worker `w` is done or lost: it no longer holds the others back. */
  retire(w: number, beforeRelease?: (newMin: number, oldMin: number) => void): void {
    if (!this.live[w]) return;
    const before = this.minClock();
    this.live[w] = false;
    this.advanced(before, beforeRelease);
  }

  private advanced(before: number, beforeRelease?: (newMin: number, oldMin: number) => void): void {
    const after = this.minClock();
    if (after > before) beforeRelease?.(after, before);
    this.release();
  }

  /** Runs the waiters that may read now, in the order they came. */
  private release(): void {
    const m = this.minClock();
    const ready = this.waiters.filter((x) => m >= x.need);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((x) => m < x.need);
    for (const x of ready) x.run();
  }

  private record(clock: number): void {
    if (clock < 0) return;
    this.reads++;
    const m = this.minClock();
    if (m !== Infinity) this.maxStaleness = Math.max(this.maxStaleness, clock - m);
  }
}
