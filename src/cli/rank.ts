/**
 * What one rank runs under `weft train --nproc N` (threads backend): the trainer on its process
 * group. The launcher passes the config path, overrides and flags.
 */
import type { ProcessGroup } from '../comm/process_group.js';
import { loadConfig } from '../train/config.js';
import { runPs } from '../train/ps_train.js';
import { Trainer } from '../train/trainer.js';

export interface RankArgs { config: string; sets: string[]; resume: boolean; trace?: string }

export default async function rank(pg: ProcessGroup, args: RankArgs): Promise<{ steps: number }> {
  const cfg = loadConfig(args.config, args.sets);
  if (cfg.ps.servers > 0) return { steps: (await runPs(cfg, pg, { resume: args.resume })).steps };
  const r = await new Trainer(cfg, { pg }).run({ resume: args.resume, ...(args.trace ? { trace: args.trace } : {}) });
  return { steps: r.steps };
}
