/**
 * One rank of test/tp_state.test.ts: a tensor-parallel Trainer on the threads group, one step;
 * returns the bytes it holds by kind and the local parameter count, or fails when its plan
 * differs from the other ranks' (scenario 'disagree': rank 1 turns sequence parallelism on).
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { profiler } from '../src/runtime/profiler.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

export interface TpStateArgs { scenario: 'memory' | 'disagree'; out: string; tp: number }

export default async function rank(pg: ProcessGroup, a: TpStateArgs): Promise<{ held: Record<string, number>; slots: number[]; names: string[] }> {
  const cfg = parseConfig({
    out: `${a.out}/r${pg.rank}`, model: { ctx: 16, d: 32, layers: 2, heads: 4 },
    train: { steps: 1, batch: 2, threads: 1 }, parallel: { tp: a.tp, sp: a.scenario === 'disagree' && pg.rank === 1 },
    eval: { every: 100, windows: 2 }, checkpoint: { every: 100 }, sample: { tokens: 0 },
  }, 'tp state test');
  const t = new Trainer(cfg, { pg });
  await t.run({ out: null, stopAfter: 1 });
  return { held: profiler.report().heldBytes, slots: t.params.flat.layout.slots.map((s) => s.size), names: t.params.flat.layout.slots.map((s) => s.name) };
}
