/**
 * The MoE GPT on Brown (recipes/brown-moe.json: 4 blocks d256, 8 experts top-2 in every other
 * block) against dense GPTs, every run 300 steps on 2 thread ranks of 8 sequences each (the
 * recipes' batch of 16), the MoE's experts split over
 * them, ep 2; the dense ones data parallel), the same data and schedule:
 * - MoE with the load-balancing loss, and without it (auxLoss 0): tokens routed to each expert
 *   (before the capacity), max / mean (the layers' mean, and the worst layer) at the last step and
 *   over the last 20;
 * - dense with the same active parameters per token (every MLP 6d wide: 4 attention blocks + 6
 *   MLPs of 4d, as the MoE's 2 dense MLPs + 2 layers x top-2 experts), and the dense GPT of the
 *   same shape (4d: one expert's worth);
 * each: the validation loss at step 300 and tokens/s (median of the steps after the 10th).
 * Prints JSON. Usage: node dist/bench/moe.js [steps]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo } from '../src/runtime/cpu.js';

const steps = Number(process.argv[2] ?? 300);
/** Per rank: the recipes' global batch of 16 sequences over the 2 ranks. */
const BATCH = 8;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const recipe = (name: string): string => fileURLToPath(new URL(`../../recipes/${name}`, import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'weft-bench-moe-'));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const round = (x: number, k = 4): number => +x.toFixed(k);

const runs: [string, string, string[]][] = [
  ['moe', 'brown-moe.json', ['--set', 'parallel.ep=2']],
  ['moe_no_aux', 'brown-moe.json', ['--set', 'parallel.ep=2', '--set', 'model.moe.auxLoss=0']],
  ['dense_same_active', 'brown-small.json', ['--set', 'model.mlpRatio=6']],
  ['dense_same_shape', 'brown-small.json', []],
];
const out: Record<string, unknown> = {};
try {
  for (const [name, file, args] of runs) {
    const run = join(dir, name);
    const t0 = performance.now();
    const log = execFileSync(process.execPath, [CLI, 'train', recipe(file), '--nproc', '2', '--set', `out=${run}`, '--set', `train.steps=${steps}`,
      '--set', `train.batch=${BATCH}`, '--set', `eval.every=${steps}`, '--set', 'sample.tokens=0', '--set', `checkpoint.every=${steps}`, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
    const m = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const last = m.at(-1)!;
    const params = /\(([\d,]+) params\)/.exec(log)?.[1] ?? '?';
    const perStep = m.slice(10).map((x, i) => (x['elapsed_s']! - m[i + 9]!['elapsed_s']!));
    const tokensPerStep = 2 * BATCH * 128;
    const row: Record<string, unknown> = {
      params_rank0: params, val_loss: round(last['val_loss']!), final_loss: round(last['loss']!),
      tokens_per_s: Math.round(tokensPerStep / median(perStep)), wall_s: Math.round((performance.now() - t0) / 1000),
    };
    if (last['moe_balance'] !== undefined) {
      const tail = m.slice(-20);
      Object.assign(row, {
        routed_per_expert_last: Array.from({ length: 8 }, (_, i) => last[`moe_tokens_e${i}`]),
        kept_per_expert_last: Array.from({ length: 8 }, (_, i) => last[`moe_kept_e${i}`]),
        balance_last: round(last['moe_balance']!, 3), balance_worst_last: round(last['moe_balance_worst']!, 3),
        balance_last20: round(mean(tail.map((x) => x['moe_balance']!)), 3), balance_worst_last20: round(mean(tail.map((x) => x['moe_balance_worst']!)), 3),
        dropped_last20: round(mean(tail.map((x) => x['moe_dropped']!))), aux_last: round(last['moe_aux']!), z_last: round(last['moe_z']!),
      });
    }
    process.stderr.write(`${name}: ${JSON.stringify(row)}\n`);
    out[name] = row;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify({ cpu: cpuInfo().isa, steps, ranks: 2, batch_per_rank: BATCH, ctx: 128, runs: out }, null, 1)}\n`);
