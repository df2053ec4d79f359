/**
 * `npm run bench:memory`: the memory estimate (`weft memory --json`) against short real runs
 * (`weft train`, a few steps, each in a fresh process; MPI ranks for more than one rank, so each
 * rank's RSS is its own process's), for configurations spanning optimizer x ranks x parallelism.
 * Prints one JSON object: per configuration the predicted and measured peak RSS per rank (rank 0,
 * which also evaluates), weft's accounting (held buffers + activations) against the estimate's,
 * and the ratios; and the CPU.
 *
 *   node dist/bench/memory.js [--only name,...] [--set key=value ...]   (--set applies to every config)
 *
 * Add a configuration by adding a line to CONFIGS; precision and checkpointing are `--set`
 * overrides like any other key. The estimate takes each program's liveness in onnxruntime's own
 * execution order (docs/memory.md); `detail.step_programs[].weftPeakBytes` keeps weft's order for
 * comparison. Results of the last full run: docs/memory.md, "Measured".
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo } from '../src/runtime/cpu.js';
import type { MemoryEstimate } from '../src/train/memory.js';
import type { MemoryAccounting } from '../src/train/trainer.js';

interface BenchConfig { name: string; config: string; ranks: number; sets: string[] }

const SMALL_B64 = ['train.batch=64'];
const MEDIUM = ['model.d=512', 'model.layers=8', 'model.heads=8', 'model.ctx=256', 'train.batch=8'];
export const CONFIGS: readonly BenchConfig[] = [
  { name: 'small-b64-adamw', config: 'recipes/brown-small.json', ranks: 1, sets: SMALL_B64 },
  { name: 'small-b64-sgd', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.optimizer=sgd'] },
  { name: 'small-b64-adafactor', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.optimizer=adafactor'] },
  { name: 'medium-b8-adamw', config: 'recipes/brown-small.json', ranks: 1, sets: MEDIUM },
  { name: 'small-b32-adamw-dp2', config: 'recipes/brown-small.json', ranks: 2, sets: ['train.batch=32'] },
  { name: 'small-b32-sgd-tp2', config: 'recipes/brown-small.json', ranks: 2, sets: ['train.batch=32', 'train.optimizer=sgd', 'parallel.tp=2'] },
  { name: 'medium-b8-adafactor-dp2', config: 'recipes/brown-small.json', ranks: 2, sets: [...MEDIUM, 'train.optimizer=adafactor'] },
  { name: 'small-b64-adamw-fp16', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.precision=fp16'] },
  { name: 'small-b64-adamw-bf16', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.precision=bf16'] },
  { name: 'small-b64-adamw-full', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.checkpointing=full'] },
  { name: 'small-b64-sgd-selective', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.optimizer=sgd', 'train.checkpointing=selective'] },
  { name: 'small-b64-adafactor-bf16-full', config: 'recipes/brown-small.json', ranks: 1, sets: [...SMALL_B64, 'train.optimizer=adafactor', 'train.precision=bf16', 'train.checkpointing=full'] },
  { name: 'small-b32-adamw-dp2-fp16-selective', config: 'recipes/brown-small.json', ranks: 2, sets: ['train.batch=32', 'train.precision=fp16', 'train.checkpointing=selective'] },
  { name: 'medium-b8-adamw-dp2-bf16-full', config: 'recipes/brown-small.json', ranks: 2, sets: [...MEDIUM, 'train.precision=bf16', 'train.checkpointing=full'] },
];

/** Few steps, one evaluation at the end, no sample: the run's peak is its steady state. */
const SHORT = ['train.steps=3', 'eval.every=3', 'checkpoint.every=1000', 'sample.tokens=0', 'log.every=1000'];
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const env = { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' };

function measure(c: BenchConfig, extra: readonly string[]): { accounting: MemoryAccounting; estimate: MemoryEstimate } {
  const out = mkdtempSync(join(tmpdir(), 'weft-bench-memory-'));
  try {
    const sets = [...c.sets, ...extra, ...SHORT, `out=${out}`].flatMap((s) => ['--set', s]);
    const est = JSON.parse(execFileSync(process.execPath, [CLI, 'memory', c.config, '--json', '--nproc', String(c.ranks), ...sets], { encoding: 'utf8', env })) as MemoryEstimate;
    const train = [CLI, 'train', c.config, ...sets];
    if (c.ranks > 1) execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(c.ranks), process.execPath, ...train, '--backend', 'mpi'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    else execFileSync(process.execPath, train, { stdio: ['ignore', 'ignore', 'inherit'], env });
    return { estimate: est, accounting: JSON.parse(readFileSync(join(out, 'memory.json'), 'utf8')) as MemoryAccounting };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const argv = process.argv.slice(2);
const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1]!.split(',') : null;
const extra = argv.flatMap((a, i) => (a === '--set' ? [argv[i + 1]!] : []));
const mib = (b: number): number => +(b / 2 ** 20).toFixed(1);
const rows = [];
for (const c of CONFIGS.filter((x) => only === null || only.includes(x.name))) {
  const { estimate: e, accounting: a } = measure(c, extra);
  const predictedWeft = e.params_bytes + e.buffers_bytes + e.grads_bytes + e.optimizer_bytes + e.activations_bytes;
  const measuredWeft = a.held_bytes + a.activations_bytes;
  const row = {
    name: c.name, ranks: c.ranks, dp: e.dp, tp: e.tp, optimizer: e.optimizer, sets: [...c.sets, ...extra],
    predicted_peak_rss_mib: mib(e.peak_bytes), measured_peak_rss_mib: a.peak_rss_bytes === null ? null : mib(a.peak_rss_bytes),
    rss_ratio: a.peak_rss_bytes === null ? null : +(e.peak_bytes / a.peak_rss_bytes).toFixed(3),
    predicted_weft_mib: mib(predictedWeft), measured_weft_mib: mib(measuredWeft), weft_ratio: +(predictedWeft / measuredWeft).toFixed(3),
    predicted: { params: mib(e.params_bytes), grads: mib(e.grads_bytes), optimizer: mib(e.optimizer_bytes), activations: mib(e.activations_bytes), workspace: mib(e.workspace_bytes), runtime: mib(e.runtime_bytes) },
  };
  process.stderr.write(`${c.name}: predicted ${row.predicted_peak_rss_mib} MiB, measured ${row.measured_peak_rss_mib} MiB (${row.rss_ratio})\n`);
  rows.push(row);
}
process.stdout.write(`${JSON.stringify({ cpu: cpuInfo(), configs: rows }, null, 1)}\n`);
