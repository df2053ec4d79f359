/**
 * A rank of bench/ps.ts: runPs on a config, with an optional straggler: every worker sleeps
 * `baseMs` a step, the slow one `factor` x baseMs; with `rotate` the slow one is worker
 * (step mod W), so every worker is slow one step in W (a transient straggler).
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import { runPs } from '../src/train/ps_train.js';
import type { PsRunResult } from '../src/train/ps_train.js';

export default async function (pg: ProcessGroup, args: { config: unknown; slow?: { worker: number; factor: number; baseMs: number; rotate?: boolean } }): Promise<PsRunResult> {
  const cfg = parseConfig(args.config, 'bench config');
  const s = args.slow;
  const W = pg.size - cfg.ps.servers;
  const slow = (w: number, t: number): boolean => (s?.rotate === true ? w === t % W : w === s?.worker);
  return runPs(cfg, pg, s ? { delayMs: (w, t) => (slow(w, t) ? s.baseMs * s.factor : s.baseMs) } : {});
}
