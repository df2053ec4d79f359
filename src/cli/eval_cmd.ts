/**
 * `weft eval <run-or-checkpoint> [--test N]`: AUC and log loss of a CTR run (model.kind 'ctr',
 * trained on a parameter server) on its planted test split, beside the planted model's own (the
 * best achievable), as JSON. Reads the checkpoint's shard files whatever number of servers wrote
 * them (train/ps_train.ts `evaluateCheckpoint`).
 */
import { existsSync } from 'node:fs';
import { evaluateCheckpoint } from '../train/ps_train.js';
import { num, parse, UsageError } from './args.js';

export const EVAL_USAGE = 'weft eval <ctr-run-or-checkpoint> [--test N]';

export async function evalCommand(argv: string[]): Promise<void> {
  const { pos, opt } = parse(argv, ['--test'], []);
  if (pos.length !== 1) throw new UsageError(`weft eval takes one run or checkpoint directory: ${EVAL_USAGE}`);
  if (!existsSync(pos[0]!)) throw new Error(`weft eval: ${pos[0]} does not exist`);
  const test = opt.has('--test') ? num(opt, '--test', 0) : undefined;
  if (test !== undefined && !(Number.isInteger(test) && test >= 1)) throw new UsageError(`--test must be a positive integer, got ${opt.get('--test')}`);
  const r = await evaluateCheckpoint(pos[0]!, test === undefined ? {} : { test });
  const round = (x: number): number => Number(x.toFixed(5));
  process.stdout.write(`${JSON.stringify({
    step: r.step, examples: r.examples, servers: r.servers, auc: round(r.auc), log_loss: round(r.logLoss),
    planted_auc: round(r.oracleAuc), planted_log_loss: round(r.oracleLogLoss), auc_gap: round(r.oracleAuc - r.auc),
  })}\n`);
}
