/**
 * `weft prune <run-or-checkpoint> --out <new-run-dir> [--channels R] [--hidden R] [--heads K]
 * [--neurons R] [--criterion l1|l2|gamma]`: structured pruning of a trained run (train/prune_structured.ts).
 * Writes a new run directory
 *
 *   <out>/config.json     the source run's config with the smaller model.* fields, `out` this
 *                         directory and `train.init` the pruned checkpoint: `weft train
 *                         <out>/config.json` fine-tunes it
 *   <out>/pruned/         a run directory holding one checkpoint of the sliced tensors (its
 *                         state.json carries the new config, and the GPT's tokenizer), which
 *                         `weft export <out>/pruned` exports as it is
 *   <out>/tokenizer.json  a BPE GPT's tokenizer, so that the fine-tuning run reuses it
 *
 * and prints a JSON report (parameters before and after, each stage's or layer's units kept).
 * Everything is checked before anything is written, and the directory is built under a temporary
 * name and renamed into place, so an error leaves no `--out` behind.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { saveTokenizer, tokenizerFromJSON } from '../data/tokenizer.js';
import { loadCheckpoint, saveCheckpoint } from '../train/checkpoint.js';
import { PRUNE_CRITERIA, pruneRun } from '../train/prune_structured.js';
import { readRun } from '../train/run_model.js';
import type { PruneCriterion, PruneReport, StructuredPruneOptions } from '../train/prune_structured.js';
import { parse, UsageError } from './args.js';

export const PRUNE_USAGE = 'weft prune <run-or-checkpoint> --out <new-run-dir> [--channels 0.5] [--hidden 0.5] [--heads K] [--neurons 0.5] [--criterion l1|l2|gamma]';

/** The checkpoint inside the new run directory. */
export const PRUNED_DIR = 'pruned';

function number(opt: Map<string, string>, flag: string): number | undefined {
  const v = opt.get(flag);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} must be a number, got '${v}'`);
  return n;
}

/** The report as printed: one line per stage or layer. */
function formatReport(r: PruneReport & { from: string; out: string; config: string; checkpoint: string }): string {
  const { units, ...head } = r;
  const top = JSON.stringify({ ...head, params: { ...r.params, fraction_kept: +(r.params.after / r.params.before).toFixed(4) } }, null, 2).replace(/\n}$/, '');
  return `${top},\n  "units": [\n${units.map((u) => `    ${JSON.stringify(u)}`).join(',\n')}\n  ]\n}\n`;
}

export async function pruneCommand(argv: string[]): Promise<void> {
  const { pos, opt } = parse(argv, ['--out', '--channels', '--hidden', '--heads', '--neurons', '--criterion'], []);
  if (pos.length !== 1) throw new UsageError(`weft prune takes one run or checkpoint directory, got ${pos.length} argument(s)`);
  const src = pos[0]!;
  const outArg = opt.get('--out');
  if (outArg === undefined) throw new UsageError('weft prune needs --out <new-run-dir> (a directory that does not exist yet)');
  const out = resolve(outArg);
  if (existsSync(out)) throw new UsageError(`--out ${outArg} already exists; weft prune writes a new run directory (choose another, or remove it)`);
  const criterion = opt.get('--criterion');
  if (criterion !== undefined && !(PRUNE_CRITERIA as readonly string[]).includes(criterion)) throw new UsageError(`--criterion must be ${PRUNE_CRITERIA.join(', ')}, got '${criterion}'`);
  // Unset: the model's default (prune_structured.ts: gamma for a CNN with BatchNorm, else l1).
  const options: StructuredPruneOptions = criterion === undefined ? {} : { criterion: criterion as PruneCriterion };
  for (const k of ['channels', 'hidden', 'heads', 'neurons'] as const) {
    const v = number(opt, `--${k}`);
    if (v !== undefined) options[k] = v;
  }

  const { ck, cfg, tokenizer: tokJson } = readRun(src, 'weft prune');
  const tokenizer = tokJson === null ? null : tokenizerFromJSON(tokJson, join(ck.dir, 'state.json'));
  const pruned = pruneRun(cfg, ck.weights, tokenizer?.vocabSize ?? null, options);
  const config = pruned.config;
  config.out = out;
  config.train.init = join(out, PRUNED_DIR);

  // Built beside --out under a temporary name: a failure midway leaves nothing named --out.
  mkdirSync(dirname(out), { recursive: true });
  const tmp = mkdtempSync(join(dirname(out), `.${basename(out)}.tmp-`));
  try {
    chmodSync(tmp, 0o755); // mkdtemp's 0700 would make the run directory private, unlike weft train's
    const state = { step: ck.step, config, ...(tokJson ? { tokenizer: tokJson } : {}), pruned: { from: ck.dir, criterion: pruned.report.criterion, params: pruned.report.params } };
    saveCheckpoint(join(tmp, PRUNED_DIR), ck.step, { weights: pruned.weights, optimizer: new Map(), state });
    writeFileSync(join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    if (tokenizer !== null && tokJson?.type === 'bpe') saveTokenizer(tokenizer, join(tmp, 'tokenizer.json'));
    renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const checkpoint = loadCheckpoint(join(out, PRUNED_DIR)).dir;
  process.stdout.write(formatReport({ ...pruned.report, from: ck.dir, out, config: join(out, 'config.json'), checkpoint }));
}
