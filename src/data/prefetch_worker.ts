/**
 * The prefetch worker: owns a copy of the dataset and the sampler, and keeps up to `depth` batches
 * made ahead of the main thread, whose onnxruntime `run` calls block it. Batches travel as
 * transferred ArrayBuffers (no copy); the dataset's tokens or pixels arrive once, in its spec.
 * Protocol (loader.ts is the other side):
 *   worker -> main: 'ready' once, then 'batch' per batch, then 'end' when the sampler is exhausted,
 *                   or 'error' (after which it sends nothing).
 *   main -> worker: 'more' for each batch the main thread consumed (a credit of one batch).
 * A read retried after a transient error waits on a timer, so the worker keeps taking credits; it
 * makes one batch at a time, in order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BatchMaker, importRecordHook } from './batch.js';
import type { Batch, RetriedRecord, SkippedRecord } from './batch.js';
import { loadDataset } from './dataset.js';
import type { DatasetSpec } from './dataset.js';
import type { RetryPolicy } from './retry.js';
import { samplerFromSpec } from './sampler.js';
import type { SamplerSpec, SamplerState } from './sampler.js';

export interface WorkerInit {
  dataset: DatasetSpec;
  sampler: SamplerSpec;
  state?: SamplerState;
  batch: number;
  depth: number;
  recordHook?: string;
  maxConsecutiveSkips?: number;
  /** BatchMaker settings from the loader's options (`makerOptions`). */
  seed: number;
  rank: number;
  firstBatch: number;
  retry: RetryPolicy;
}

export type ToWorker = { type: 'more' };
export type FromWorker =
  | { type: 'ready' }
  | { type: 'batch'; batch: Batch; skipped: SkippedRecord[]; retried: RetriedRecord[]; state: SamplerState }
  | { type: 'end'; skipped: SkippedRecord[]; retried: RetriedRecord[]; state: SamplerState }
  | { type: 'error'; message: string };

async function run(): Promise<void> {
  const port = parentPort!;
  const init = workerData as WorkerInit;
  const post = (m: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);
  let maker: BatchMaker;
  try {
    const hook = init.recordHook === undefined ? undefined : await importRecordHook(init.recordHook);
    const opts = { batch: init.batch, hook, maxConsecutiveSkips: init.maxConsecutiveSkips, seed: init.seed, rank: init.rank, firstBatch: init.firstBatch, retry: init.retry };
    maker = new BatchMaker(await loadDataset(init.dataset), samplerFromSpec(init.sampler, init.state), opts);
  } catch (e) {
    post({ type: 'error', message: (e as Error).message });
    return;
  }
  let done = false;
  const produce = async (): Promise<void> => {
    try {
      const p = await maker.makeAsync();
      if (p.batch === null) {
        done = true;
        post({ type: 'end', skipped: p.skipped, retried: p.retried, state: p.state });
        return;
      }
      // The field arrays own their buffers (BatchMaker allocates them), so moving them copies nothing.
      post({ type: 'batch', batch: p.batch, skipped: p.skipped, retried: p.retried, state: p.state }, p.batch.fields.map((f) => f.data.buffer as ArrayBuffer));
    } catch (e) {
      done = true;
      post({ type: 'error', message: (e as Error).message });
    }
  };
  // Batches still owed to the main thread; one pump makes them in order (produce never rejects).
  let credits = init.depth;
  let pumping = false;
  const pump = async (): Promise<void> => {
    if (pumping) return;
    pumping = true;
    while (credits > 0 && !done) { credits--; await produce(); }
    pumping = false;
  };
  port.on('message', (m: ToWorker) => { if (m.type === 'more') { credits++; void pump(); } });
  post({ type: 'ready' });
  void pump();
}

if (parentPort !== null) void run();
