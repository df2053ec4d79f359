/**
 * The rank thread's end of its comm thread: starts the thread, stages buffers (SharedArrayBuffers
 * kept in a pool and sent to the comm thread once, then named by id), posts requests and rings the
 * comm thread's doorbell, and settles each `ThreadsWork` when its completion arrives, after copying
 * results out on this thread. Keeps the rank's event loop alive exactly while work is in flight.
 * Records every operation in the rank's flight recorder (../flight.ts) and writes its dump when the
 * comm thread reports a timeout (its own or another rank's).
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import type { Work } from '../process_group.js';
import { CollectiveError } from '../process_group.js';
import { flightRecorder } from '../flight.js';
import type { FlightRecorder } from '../flight.js';
import { Control } from './layout.js';
import { now, workerExecArgv } from './protocol.js';
import type { CollRequest, FromComm, GroupInit, P2pRequest, StagingRef, ToComm } from './protocol.js';

/** A handle on one operation; `completedAt` is when the comm thread finished it (wall-clock ms). */
export class ThreadsWork implements Work {
  completedAt: number | null = null;
  readonly done: Promise<void>;
  settle!: (error: Error | null) => void;

  constructor(readonly label: string, readonly issuedAt = now()) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (e) => (e === null ? resolve() : reject(e));
    });
    // A Work nobody waits on must not crash the rank with an unhandled rejection.
    this.done.catch(() => undefined);
  }

  wait(): Promise<void> { return this.done; }
}

export interface Staging { id: number; sab: SharedArrayBuffer }

interface Pending { work: ThreadsWork; finish: (() => void) | null; stagings: Staging[]; ticket: number }

/**
 * Freed staging buffers kept for reuse (gradient all-reduces repeat the same sizes): at most this
 * many, and at most POOL_BYTES in all (the oldest go first).
 */
const POOL = 16;
const POOL_BYTES = 256 << 20;

/** The rank thread's connection to its comm thread. */
export class CommLink {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly control: Control;
  private readonly pending = new Map<number, Pending>();
  private readonly free: Staging[] = [];
  private freeBytes = 0;
  private readonly sent = new Set<number>();
  private nextId = 1;
  private nextStaging = 1;
  nextGid = 1;
  private failure: string | null = null;
  private closing = false;
  private readonly exited: Promise<void>;
  readonly flight: FlightRecorder;

  constructor(readonly rank: number, control: SharedArrayBuffer, timeoutMs: number, world: GroupInit) {
    this.control = new Control(control);
    this.flight = flightRecorder();
    this.flight.attach(rank, 'threads');
    // Peers name this rank's activity when they time out waiting for it (diagnose.ts).
    this.flight.share = (text, at) => this.control.setActivity(rank, text, at);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(new URL('./comm_worker.js', import.meta.url), {
      workerData: { init: { rank, control, timeoutMs, port: port2 }, world },
      transferList: [port2], execArgv: workerExecArgv(), name: `weft-comm-${rank}`,
    });
    this.port.on('message', (m: FromComm) => this.complete(m));
    this.port.unref();
    this.worker.on('error', (e: Error) => this.die(`the comm thread of rank ${rank} crashed: ${e.stack ?? e.message}`));
    this.exited = new Promise<void>((resolve) => this.worker.once('exit', (code: number) => {
      if (!this.closing) this.die(`the comm thread of rank ${rank} exited (code ${code})`);
      resolve();
    }));
    this.worker.unref();
  }

  /** Operations submitted and not yet completed. */
  get inFlight(): number { return this.pending.size; }

  post(m: ToComm): void {
    this.port.postMessage(m);
    this.control.ring(this.rank);
  }

  /** A staging buffer of at least `bytes` (reused when one of at most twice the size is free). */
  stage(bytes: number): Staging {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const len = this.free[i]!.sab.byteLength;
      if (len >= bytes && len <= 2 * bytes + 4096 && (best < 0 || len < this.free[best]!.sab.byteLength)) best = i;
    }
    if (best >= 0) {
      const s = this.free.splice(best, 1)[0]!;
      this.freeBytes -= s.sab.byteLength;
      return s;
    }
    return { id: this.nextStaging++, sab: new SharedArrayBuffer(Math.max(8, bytes)) };
  }

  ref(s: Staging, length: number): StagingRef {
    if (this.sent.has(s.id)) return { id: s.id, length };
    this.sent.add(s.id);
    return { id: s.id, sab: s.sab, length };
  }

  /** Posts `req`; `ticket` is its flight recorder entry (issued at `issuedAt`), settled with it. */
  submit(label: string, req: CollRequest | P2pRequest, stagings: Staging[], finish: (() => void) | null, ticket: number, issuedAt: number): ThreadsWork {
    const work = new ThreadsWork(label, issuedAt);
    if (this.failure !== null) {
      const e = new CollectiveError(`rank ${this.rank}: ${label} failed: ${this.failure}`);
      this.flight.settle(ticket, e.message);
      work.settle(e);
      this.release(stagings);
      return work;
    }
    req.id = this.nextId++;
    this.pending.set(req.id, { work, finish, stagings, ticket });
    if (this.pending.size === 1) this.port.ref();
    this.post(req);
    return work;
  }

  private complete(m: FromComm): void {
    if (m.type === 'flight') { this.flight.trigger(m.reason, m.waits); return; }
    const p = this.pending.get(m.id);
    if (p === undefined) return;
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.port.unref();
    p.work.completedAt = m.at;
    let error: Error | null = m.error === null ? null : new CollectiveError(m.error);
    if (error === null && p.finish !== null) {
      try { p.finish(); } catch (e) { error = e as Error; }
    }
    this.release(p.stagings);
    this.flight.settle(p.ticket, error === null ? null : error.message, m.at);
    p.work.settle(error);
  }

  private release(stagings: Staging[]): void {
    for (const s of stagings) {
      this.free.push(s);
      this.freeBytes += s.sab.byteLength;
    }
    const dropped: number[] = [];
    while (this.free.length > POOL || (this.freeBytes > POOL_BYTES && this.free.length > 1)) {
      const old = this.free.shift()!;
      this.freeBytes -= old.sab.byteLength;
      if (this.sent.delete(old.id)) dropped.push(old.id);
    }
    if (dropped.length > 0) this.post({ type: 'forget', ids: dropped });
  }

  private die(reason: string): void {
    this.failure ??= reason;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      const e = new CollectiveError(`rank ${this.rank}: ${p.work.label} failed: ${reason}`);
      this.flight.settle(p.ticket, e.message);
      p.work.settle(e);
    }
    this.port.unref();
  }

  async close(timeoutMs: number): Promise<void> {
    if (this.closing) return this.exited;
    this.closing = true;
    this.post({ type: 'exit' });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs); });
    await Promise.race([this.exited, late]);
    clearTimeout(timer);
    await this.worker.terminate();
    this.die('the process group was destroyed');
    this.port.close();
  }
}
