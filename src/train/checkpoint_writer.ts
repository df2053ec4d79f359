/**
 * The background checkpoint writer's thread (async_checkpoint.ts): takes a snapshot (tensors whose
 * buffers were transferred to it, the state as JSON) and writes it with `saveCheckpoint`, the same
 * files and the same crash safety as a synchronous save.
 */
import { parentPort } from 'node:worker_threads';
import { saveCheckpoint } from './checkpoint.js';
import type { CheckpointTensor } from './checkpoint.js';

export interface WriteRequest {
  id: number; runDir: string; step: number; keep?: number; state: unknown;
  weights: [string, CheckpointTensor][]; optimizer: [string, CheckpointTensor][];
}
export type WriteReply = { id: number; path: string; ms: number } | { id: number; error: string };

const port = parentPort!;
port.on('message', (m: WriteRequest) => {
  const t0 = performance.now();
  try {
    const path = saveCheckpoint(m.runDir, m.step, { weights: new Map(m.weights), optimizer: new Map(m.optimizer), state: m.state, ...(m.keep !== undefined ? { keep: m.keep } : {}) });
    port.postMessage({ id: m.id, path, ms: performance.now() - t0 } satisfies WriteReply);
  } catch (e) {
    port.postMessage({ id: m.id, error: (e as Error).message } satisfies WriteReply);
  }
});
