/**
 * `npm run bench:zero-memory`: the memory estimate against every MPI rank's measured peak RSS, for
 * ZeRO stages 0 to 3 on 2 ranks. Per stage: `weft memory --json --nproc 2` (a fresh process, as
 * `weft train --budget` takes it), then `weft train` under `mpirun -np 2` (a few AdamW steps, one
 * evaluation and one checkpoint), whose `<out>/memory.json` holds each rank's peak RSS (VmHWM since
 * the run began). Prints one JSON object: the CPU, and per stage the estimate's parts and each
 * rank's measured peak with its error (estimate / measured - 1).
 *
 *   node dist/bench/zero_memory.js [--stages 0,1,2,3] [--set key=value ...]
 *
 * The default model is the one test/memory_rss.test.ts trains: GPT d512 x 8 blocks (25.5M
 * parameters), ctx 128, batch 4 per rank, 3 steps. `--set` overrides it (e.g. the 85M-parameter
 * model of bench/zero_fit.ts: model.d=768 model.layers=12 model.heads=12 model.ctx=64 train.batch=2).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo } from '../src/runtime/cpu.js';
import type { MemoryEstimate } from '../src/train/memory.js';
import type { MemoryFile } from '../src/train/trainer.js';

/** The run: 3 AdamW steps, the evaluation and the checkpoint both at step 3, no sample. */
export const ZERO_MEMORY_CONFIG = {
  model: { ctx: 128, d: 512, layers: 8, heads: 8 },
  train: { steps: 3, batch: 4, lr: 1e-3, warmup: 1, threads: 1 },
  eval: { every: 3, windows: 2 }, checkpoint: { every: 3 }, sample: { tokens: 0 }, log: { every: 1000 },
};

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const env = { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' };
const NP = 2;

/** One stage: the estimate (a child process) and every rank's accounting after a real run. */
export function measureStage(config: string, zero: number, sets: readonly string[], dir: string): { estimate: MemoryEstimate; memory: MemoryFile } {
  const out = join(dir, `z${zero}`);
  const args = [...sets, `parallel.zero=${zero}`, `out=${out}`].flatMap((s) => ['--set', s]);
  const estimate = JSON.parse(execFileSync(process.execPath, [CLI, 'memory', config, '--json', '--nproc', String(NP), ...args], { encoding: 'utf8', env })) as MemoryEstimate;
  execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(NP), process.execPath, CLI, 'train', config, ...args, '--backend', 'mpi'],
    { stdio: ['ignore', 'ignore', 'inherit'], env, timeout: 600_000 });
  return { estimate, memory: JSON.parse(readFileSync(join(out, 'memory.json'), 'utf8')) as MemoryFile };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const stages = argv.includes('--stages') ? argv[argv.indexOf('--stages') + 1]!.split(',').map(Number) : [0, 1, 2, 3];
  const sets = argv.flatMap((a, i) => (a === '--set' ? [argv[i + 1]!] : []));
  const mib = (b: number): number => +(b / 2 ** 20).toFixed(1);
  const dir = mkdtempSync(join(tmpdir(), 'weft-bench-zero-memory-'));
  const rows = [];
  try {
    const config = join(dir, 'gpt.json');
    writeFileSync(config, JSON.stringify(ZERO_MEMORY_CONFIG));
    for (const zero of stages) {
      const { estimate: e, memory: m } = measureStage(config, zero, sets, dir);
      const ranks = m.ranks.map((r, rank) => ({
        rank, measured_mib: r.peak_rss_bytes === null ? null : mib(r.peak_rss_bytes),
        error: r.peak_rss_bytes === null ? null : +(e.peak_bytes / r.peak_rss_bytes - 1).toFixed(4), held_mib: mib(r.held_bytes),
      }));
      const row = {
        zero, estimate_mib: mib(e.peak_bytes), ranks,
        parts_mib: { params: mib(e.params_bytes), grads: mib(e.grads_bytes), optimizer: mib(e.optimizer_bytes), activations: mib(e.activations_bytes), workspace: mib(e.workspace_bytes), runtime: mib(e.runtime_bytes) },
      };
      process.stderr.write(`zero ${zero}: estimate ${row.estimate_mib} MiB; ${ranks.map((r) => `rank ${r.rank} ${r.measured_mib} MiB (${r.error})`).join(', ')}\n`);
      rows.push(row);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify({ cpu: cpuInfo(), ranks: NP, config: ZERO_MEMORY_CONFIG, sets, stages: rows }, null, 1)}\n`);
}
