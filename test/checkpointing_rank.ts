/**
 * One rank of test/checkpointing.test.ts (threads backend). 'ddp': the tiny GPT under data
 * parallelism with checkpointing, on this rank's half of a global batch, returns the averaged
 * gradients. 'tp': the tiny GPT under tensor parallelism (collectives in the traced step), returns
 * the largest difference between the gradients with and without checkpointing, and what the
 * transform did (host ops are kept, never cloned).
 */
import type { CheckpointMode, CheckpointStats } from '../src/autodiff/checkpoint.js';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { bindParameters, GPT, scopeModules } from '../src/nn/index.js';
import { parallelizeGPT } from '../src/nn/gpt_plan.js';
import { DistributedDataParallel } from '../src/parallel/ddp.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { setThreads } from '../src/runtime/executor.js';
import { gradStep } from '../src/train/step.js';
import { CFG, tokens } from './checkpointing_data.js';

export interface RankArgs { scenario: 'ddp' | 'tp'; mode: CheckpointMode; batch: number }
export interface RankResult { grads: number[]; maxDiff: number; stats: CheckpointStats | null }

export default async function rank(pg: ProcessGroup, a: RankArgs): Promise<RankResult> {
  setThreads(1);
  const model = new GPT(CFG);
  if (a.scenario === 'tp') parallelizeGPT(model, { axis: 'tp', size: pg.size, index: pg.rank });
  const params = bindParameters(model, { seed: 1 });
  scopeModules(model, ['h*']);
  const loss = (x: Parameters<GPT['loss']>[0], y: Parameters<GPT['loss']>[1]): ReturnType<GPT['loss']> => model.loss(x, y);
  const { x, y } = tokens(7, a.batch);
  if (a.scenario === 'ddp') {
    const half = a.batch / pg.size;
    const part = (t: BigInt64Array): BigInt64Array => t.slice(pg.rank * half * CFG.ctx, (pg.rank + 1) * half * CFG.ctx);
    const grads = FlatBuffer.zeros(params.flat.layout);
    const ddp = new DistributedDataParallel(pg, params, grads, (p, q) => loss(p!, q!), { bucketBytes: 20_000, step: { checkpointing: { mode: a.mode, units: ['h*'] } } });
    await ddp.step([{ data: part(x), shape: [half, CFG.ctx], dtype: 'int64' }, { data: part(y), shape: [half, CFG.ctx], dtype: 'int64' }]);
    return { grads: Array.from(grads.data), maxDiff: 0, stats: ddp.checkpointStats };
  }
  const feeds = [{ data: x, shape: [a.batch, CFG.ctx], dtype: 'int64' as const }, { data: y, shape: [a.batch, CFG.ctx], dtype: 'int64' as const }];
  const context = { groups: { tp: pg } };
  const plain = FlatBuffer.zeros(params.flat.layout);
  const ck = FlatBuffer.zeros(params.flat.layout);
  await gradStep(params, plain, (p, q) => loss(p!, q!), 'fwd_bwd', { context })(feeds);
  const step = gradStep(params, ck, (p, q) => loss(p!, q!), 'fwd_bwd', { context, checkpointing: { mode: a.mode, units: ['h*'] } });
  await step(feeds);
  let maxDiff = 0;
  for (let i = 0; i < plain.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(plain.data[i]! - ck.data[i]!));
  return { grads: [], maxDiff, stats: step.checkpoint };
}
