/**
 * One rank of test/prune.test.ts's data-parallel case: a pruning Trainer at ZeRO stage `zero` on
 * `batch` sequences per rank; returns the losses, the masks (as one byte vector in model order)
 * and the exact zeros of the prunable weights.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import type { RunConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

export interface PruneRankArgs { out: string; zero: number; batch: number }
export interface PruneRankResult { losses: number[]; masks: Uint8Array; sparsity: number }

/** The config the data-parallel case trains, on each rank and on one process. */
export const pruneDpConfig = (a: PruneRankArgs, rank: number): RunConfig => parseConfig({
  out: `${a.out}/r${rank}`, model: { ctx: 16, d: 32, layers: 2, heads: 2 },
  train: { steps: 6, batch: a.batch, lr: 3e-3, warmup: 2, threads: 1, eps: 1e-6, prune: { sparsity: 0.6, start: 0, end: 4, every: 2 } },
  parallel: { zero: a.zero }, dist: { bucketMB: 0.02 },
  eval: { every: 100, windows: 2 }, checkpoint: { every: 100 }, sample: { tokens: 0 },
}, 'prune dp test');

/** Trains the config on `pg` and reports what the test compares. */
export async function trainPruned(pg: ProcessGroup | undefined, a: PruneRankArgs): Promise<PruneRankResult> {
  const t = new Trainer(pruneDpConfig(a, pg?.rank ?? 0), pg ? { pg } : {});
  const r = await t.run({ out: null });
  const masks = [...t.pruner!.masks().values()];
  const all = new Uint8Array(masks.reduce((s, m) => s + m.length, 0));
  let at = 0;
  for (const m of masks) { all.set(m, at); at += m.length; }
  return { losses: r.losses, masks: all, sparsity: t.pruner!.sparsity(t.params.flat.data) };
}

export default async function rank(pg: ProcessGroup, a: PruneRankArgs): Promise<PruneRankResult> {
  return trainPruned(pg, a);
}
