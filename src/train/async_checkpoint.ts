/**
 * Asynchronous checkpoints (torch.distributed.checkpoint's async_save): the step copies its state
 * into memory and goes on; a writer thread persists the copy with the same atomic save. A second
 * save waits for the first, so at most one snapshot is held (it costs one more copy of the
 * weights and optimizer state in memory). A failed write surfaces at the next save or at the end.
 */
import { Worker } from 'node:worker_threads';
import { workerExecArgv } from '../runtime/workers.js';
import type { CheckpointTensor } from './checkpoint.js';
import type { WriteReply, WriteRequest } from './checkpoint_writer.js';

export interface Snapshot { weights: [string, CheckpointTensor][]; optimizer: [string, CheckpointTensor][]; state: unknown; keep?: number }

export class BackgroundCheckpointer {
  private worker: Worker | null = null;
  private pending: Promise<{ path: string; ms: number }> | null = null;
  private nextId = 1;
  /** The last finished write: its path and how long the writer took. */
  last: { step: number; path: string; ms: number } | null = null;

  /** Waits for the write in flight (rethrowing its error, naming the step). */
  async idle(): Promise<void> {
    const p = this.pending;
    if (p === null) return;
    this.pending = null;
    await p;
  }

  /** Hands a snapshot (its buffers are transferred: the caller must not use them again) to the writer. */
  start(runDir: string, step: number, snap: Snapshot): void {
    if (this.pending !== null) throw new Error('BackgroundCheckpointer.start: a write is in flight; await idle() first');
    const w = this.worker ??= new Worker(new URL('./checkpoint_writer.js', import.meta.url), { execArgv: workerExecArgv(), name: 'weft-checkpoint-writer' });
    w.ref();
    const id = this.nextId++;
    const req: WriteRequest = { id, runDir, step, state: snap.state, weights: snap.weights, optimizer: snap.optimizer, ...(snap.keep !== undefined ? { keep: snap.keep } : {}) };
    const transfer = [...snap.weights, ...snap.optimizer].map(([, t]) => t.data.buffer as ArrayBuffer);
    this.pending = new Promise((resolve, reject) => {
      const onMessage = (m: WriteReply): void => {
        if (m.id !== id) return;
        w.off('message', onMessage); w.off('error', onError); w.unref();
        if ('error' in m) reject(new Error(`the background checkpoint of step ${step} failed: ${m.error}`));
        else { this.last = { step, path: m.path, ms: m.ms }; resolve(m); }
      };
      const onError = (e: Error): void => { w.off('message', onMessage); this.worker = null; reject(new Error(`the checkpoint writer thread crashed writing step ${step}: ${e.message}`)); };
      w.on('message', onMessage);
      w.once('error', onError);
    });
    this.pending.catch(() => undefined);
    w.postMessage(req, transfer);
  }

  async close(): Promise<void> {
    try { await this.idle(); } finally { await this.worker?.terminate(); this.worker = null; }
  }
}
