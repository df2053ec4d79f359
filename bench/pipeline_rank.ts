/**
 * One stage of bench/pipeline.ts: a GPT whose stages cost the same (blocks dominate: the head and
 * the embeddings are a few percent of a stage), trained `steps` steps under one schedule; returns
 * each measured step's trace (bubble, busy time, saved activations in flight).
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { GPT } from '../src/nn/gpt.js';
import { gptPipeline } from '../src/nn/gpt_plan.js';
import { bindParameters } from '../src/nn/module.js';
import { SGD } from '../src/optim/sgd.js';
import { PipelineStage } from '../src/parallel/pipeline.js';
import type { PipelineStepTrace } from '../src/parallel/pipeline.js';
import { pipelineTable } from '../src/parallel/pipeline_schedule.js';
import type { ScheduleKind } from '../src/parallel/pipeline_schedule.js';
import { setThreads } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';
import type { Feed } from '../src/tensor/compile.js';

export interface PipelineBenchArgs { kind: ScheduleKind; microbatches: number; chunks: number; steps: number; rows: number; config: { vocab: number; ctx: number; d: number; layers: number; heads: number }; wholeBackward: boolean; keepTransfers?: boolean }

export default async function rank(pg: ProcessGroup, a: PipelineBenchArgs): Promise<PipelineStepTrace[]> {
  setThreads(1);
  const gpt = new GPT(a.config);
  const bound = bindParameters(gpt, { seed: 0 });
  const table = pipelineTable(a.kind, pg.size, a.microbatches, a.chunks);
  const pipe = new PipelineStage(gptPipeline(gpt, pg.size * a.chunks), bound, { stage: pg.rank, stages: pg.size, actions: table.actions[pg.rank]!, microbatches: a.microbatches, chunks: a.chunks, wholeBackward: a.wholeBackward });
  const opt = new SGD(pipe.params, { lr: 1e-3 });
  const T = a.config.ctx;
  const rng = new Rng(7);
  const batch = (): Feed[] => {
    const [idx, tgt] = [new BigInt64Array(a.rows * T), new BigInt64Array(a.rows * T)];
    for (let i = 0; i < idx.length; i++) { idx[i] = BigInt(rng.int(a.config.vocab)); tgt[i] = BigInt(rng.int(a.config.vocab)); }
    return [{ data: idx, shape: [a.rows, T], dtype: 'int64' }, { data: tgt, shape: [a.rows, T], dtype: 'int64' }];
  };
  const out: PipelineStepTrace[] = [];
  for (let s = 0; s < a.steps; s++) {
    const b = batch();
    // Every stage starts the step together, so each one's clock measures the same window.
    await pg.barrier().wait();
    await pipe.step(b, { pp: pg });
    await opt.step(pipe.grads);
    if (s >= 2) out.push({ ...pipe.lastStep!, transfers: a.keepTransfers ? pipe.lastStep!.transfers : [] });
  }
  return out;
}
