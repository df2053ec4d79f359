/**
 * A rank of test/chaos.test.ts: the tiny GPT under data parallelism; rank `kill.rank` exits (its
 * thread dies, as a killed process would) the first time it finishes each step in `kill.steps`.
 * A marker file per step in the run directory makes each kill happen once across restarts.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

export interface ChaosArgs { config: unknown; resume: boolean; kill: { rank: number; steps: number[] } | null }

export default async function (pg: ProcessGroup, a: ChaosArgs): Promise<{ params: number[] }> {
  const cfg = parseConfig(a.config, 'chaos config');
  const trainer = new Trainer(cfg, { pg });
  await trainer.run({
    out: null, resume: a.resume,
    afterStep: (step, rank) => {
      if (a.kill === null || rank !== a.kill.rank || !a.kill.steps.includes(step)) return;
      const marker = join(cfg.out, `.chaos-${step}`);
      if (existsSync(marker)) return;
      writeFileSync(marker, '');
      process.exit(137);
    },
  });
  return { params: Array.from(trainer.params.flat.data) };
}
