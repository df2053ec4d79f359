/** A rank of bench/ps.ts: runPs on a config, with an optional straggler (`slow`: worker, ms per step; `base`: every worker's ms per step). */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import { runPs } from '../src/train/ps_train.js';
import type { PsRunResult } from '../src/train/ps_train.js';

export default async function (pg: ProcessGroup, args: { config: unknown; slow?: { worker: number; factor: number; baseMs: number } }): Promise<PsRunResult> {
  const cfg = parseConfig(args.config, 'bench config');
  const s = args.slow;
  return runPs(cfg, pg, s ? { delayMs: (w) => (w === s.worker ? s.baseMs * s.factor : s.baseMs) } : {});
}
