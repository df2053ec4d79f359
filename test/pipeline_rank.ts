/**
 * One rank of test/pipeline.test.ts: a tiny GPT cut into pipeline pieces, trained `steps` AdamW
 * steps on one fixed global batch stream (every rank draws the same tokens), or the whole model on
 * one rank (`stages` 0: the reference). Returns the per-step losses and the rank's parameters.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { GPT } from '../src/nn/gpt.js';
import { gptPipeline } from '../src/nn/gpt_plan.js';
import { bindParameters } from '../src/nn/module.js';
import { AdamW } from '../src/optim/adamw.js';
import { PipelineStage } from '../src/parallel/pipeline.js';
import { pipelineTable } from '../src/parallel/pipeline_schedule.js';
import type { ScheduleKind } from '../src/parallel/pipeline_schedule.js';
import { setThreads } from '../src/runtime/executor.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { gradStep } from '../src/train/step.js';
import { Rng } from '../src/tensor/random.js';
import type { Feed } from '../src/tensor/compile.js';

export interface PipelineRankArgs { kind: ScheduleKind | 'none'; microbatches: number; chunks: number; steps: number; batch: number; wholeBackward?: boolean }
export interface PipelineRankResult {
  losses: number[];
  params: Record<string, number[]>;
  /** The last step as the stage ran it: compute actions by start time, the most in flight, the peak saved bytes. */
  ran?: { order: string[]; overlaps: number; inFlight: number; peakSavedBytes: number; bubble: number; windowMs: number; busyMs: number; earlyGradientSends: number };
}

export const CONFIG = { vocab: 64, ctx: 8, d: 16, layers: 8, heads: 2 };

/** The global batch of step t: `batch` rows of ctx + 1 tokens, the same on every rank. */
export function batchAt(t: number, batch: number): Feed[] {
  const rng = new Rng(1000 + t);
  const T = CONFIG.ctx;
  const [idx, tgt] = [new BigInt64Array(batch * T), new BigInt64Array(batch * T)];
  for (let r = 0; r < batch; r++) {
    const row = Array.from({ length: T + 1 }, () => BigInt(rng.int(CONFIG.vocab)));
    for (let j = 0; j < T; j++) { idx[r * T + j] = row[j]!; tgt[r * T + j] = row[j + 1]!; }
  }
  return [{ data: idx, shape: [batch, T], dtype: 'int64' }, { data: tgt, shape: [batch, T], dtype: 'int64' }];
}

export default async function rank(pg: ProcessGroup, a: PipelineRankArgs): Promise<PipelineRankResult> {
  setThreads(1);
  const gpt = new GPT(CONFIG);
  const bound = bindParameters(gpt, { seed: 0 });
  const losses: number[] = [];
  const lr = 3e-3;
  // The attention's key bias has a zero gradient but for float32 rounding (softmax ignores a shift
  // of every score), and AdamW with eps 1e-8 turns rounding of that size into lr-sized steps of
  // either sign: eps 1e-6 keeps its updates at rounding's size, so the comparison measures the
  // pipeline, not the noise (at eps 1e-8 that bias differed by 1.09e-5 relative on 8 blocks).
  const eps = 1e-6;
  if (a.kind === 'none') {
    const grads = FlatBuffer.zeros(bound.flat.layout, 'grads');
    const step = gradStep(bound, grads, (idx, tgt) => gpt.loss(idx!, tgt!));
    const opt = new AdamW(bound.flat, { lr, eps, weightDecay: 0.1 });
    for (let t = 0; t < a.steps; t++) { losses.push(await step(batchAt(t, a.batch))); await opt.step(grads); }
    return { losses, params: Object.fromEntries(bound.flat.layout.slots.map((s) => [s.name, [...bound.flat.view(s.name)]])) };
  }
  const P = pg.size;
  const table = pipelineTable(a.kind, P, a.microbatches, a.chunks);
  const pipe = new PipelineStage(gptPipeline(gpt, P * a.chunks), bound, { stage: pg.rank, stages: P, actions: table.actions[pg.rank]!, microbatches: a.microbatches, chunks: a.chunks, wholeBackward: a.wholeBackward });
  const opt = new AdamW(pipe.params, { lr, eps, weightDecay: 0.1 });
  for (let t = 0; t < a.steps; t++) { losses.push(await pipe.step(batchAt(t, a.batch), { pp: pg })); await opt.step(pipe.grads); }
  const last = pipe.lastStep!;
  const acts = [...last.actions].sort((x, y) => x.start - y.start);
  const overlaps = acts.filter((x, i) => i > 0 && x.start < acts[i - 1]!.end).length;
  // Backwards whose input gradient left before their last program ended (one chunk per stage: the
  // send's tag is 2(s - 1) + 1 on stage s; the action's last compute span sums its gradients).
  const earlyGradientSends = a.chunks !== 1 || pg.rank === 0 ? 0 : acts.filter((x) => {
    if (x.op !== 'backward') return false;
    const send = last.transfers.find((t) => t.name === `weft.Send#${2 * (pg.rank - 1) + 1}` && t.mb === x.mb);
    if (!send) throw new Error(`stage ${pg.rank}: no gradient send of microbatch ${x.mb} in the trace`);
    return send.start < x.compute.at(-2)![1] - 1e-6;
  }).length;
  return {
    losses, params: Object.fromEntries(pipe.params.layout.slots.map((s) => [s.name, [...pipe.params.view(s.name)]])),
    ran: { order: acts.map((x) => `${x.op[0]}${x.mb}.${x.chunk}`), overlaps, inFlight: last.peakInFlight, peakSavedBytes: last.peakSavedBytes, bubble: last.bubble, windowMs: last.windowMs, busyMs: last.busyMs, earlyGradientSends },
  };
}
