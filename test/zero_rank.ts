/**
 * One rank of test/zero.test.ts: a data-parallel Trainer at ZeRO stage `zero` (optionally offloaded), one step; returns
 * the bytes it holds by label, the full layout's size and its shard's.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { profiler } from '../src/runtime/profiler.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

export interface ZeroRankArgs { out: string; zero: number; optimizer: 'adamw' | 'sgd'; offload?: 'none' | 'disk' }
export interface ZeroRankResult { held: Record<string, number>; full: number; shard: number; segments: number[] }

export default async function rank(pg: ProcessGroup, a: ZeroRankArgs): Promise<ZeroRankResult> {
  const cfg = parseConfig({
    out: `${a.out}/r${pg.rank}`, model: { ctx: 16, d: 32, layers: 2, heads: 2 },
    train: { steps: 1, batch: 2, threads: 1, optimizer: a.optimizer }, parallel: { zero: a.zero, offload: a.offload ?? 'none' }, dist: { bucketMB: 0.02 },
    eval: { every: 100, windows: 2 }, checkpoint: { every: 100 }, sample: { tokens: 0 },
  }, 'zero test');
  const t = new Trainer(cfg, { pg });
  await t.run({ out: null, stopAfter: 1 });
  return {
    held: profiler.report().heldBytes, full: t.params.flat.layout.size, shard: t.zero?.shard.layout.size ?? 0,
    segments: t.zero?.shard.ranges.map((r) => r.segHi - r.segLo) ?? [],
  };
}
