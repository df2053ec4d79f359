/**
 * The MNIST recipe as a benchmark: trains `recipes/mnist-cnn.json` (or the config given) and
 * prints one JSON line: the CPU, wall time, examples/s, the test accuracy at every evaluation, and
 * the time at which test accuracy first reached the target (default 0.98).
 *
 *   npm run build && node dist/bench/mnist.js [config.json] [--nproc 2] [--set key=value ...] [--target 0.98]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchThreads } from '../src/comm/threads/launch.js';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { loadConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';
import type { TrainResult } from '../src/train/trainer.js';

interface Args { config: string; sets: string[]; target: number }

/** One rank's run (rank 0 reports); also the entry `launchThreads` starts per rank. */
export default async function rank(pg: ProcessGroup | undefined, a: Args): Promise<{ result: TrainResult; seconds: number; reached: number | null }> {
  const cfg = loadConfig(a.config, a.sets);
  let reached: number | null = null;
  const t0 = performance.now();
  const result = await new Trainer(cfg, {
    ...(pg ? { pg } : {}),
    callbacks: [{ onEvalEnd: (m) => { if (reached === null && (m['accuracy'] ?? 0) >= a.target) reached = (performance.now() - t0) / 1000; } }],
  }).run({ out: process.stderr });
  return { result, seconds: (performance.now() - t0) / 1000, reached };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const sets: string[] = [];
  let nproc = 1;
  let target = 0.98;
  let config = fileURLToPath(new URL('../../recipes/mnist-cnn.json', import.meta.url));
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    if (x === '--set') sets.push(argv[++i]!);
    else if (x === '--nproc') nproc = Number(argv[++i]);
    else if (x === '--target') target = Number(argv[++i]);
    else config = x;
  }
  const dir = mkdtempSync(join(tmpdir(), 'weft-mnist-bench-'));
  sets.push(`out=${dir}`);
  const args: Args = { config, sets, target };
  try {
    const t0 = performance.now();
    let evals: TrainResult['evals'];
    let reached: number | null;
    let rate: number;
    if (nproc > 1) {
      const results = await launchThreads({ nproc, entry: new URL(import.meta.url), args, timeoutMs: 600_000 }) as { result: TrainResult; reached: number | null }[];
      ({ evals } = results[0]!.result); reached = results[0]!.reached; rate = results[0]!.result.tokensPerS;
    } else {
      const r = await rank(undefined, args);
      ({ evals } = r.result); reached = r.reached; rate = r.result.tokensPerS;
    }
    const accuracy = evals.map((e) => ({ step: e.step, accuracy: e.metrics['accuracy'], val_loss: e.metrics['val_loss'] }));
    process.stdout.write(`${JSON.stringify({
      bench: 'mnist-cnn', config, sets: sets.slice(0, -1), nproc, cpu: cpuInfo(), wall_s: (performance.now() - t0) / 1000,
      examples_per_s: rate, final_accuracy: accuracy.at(-1)?.accuracy, target, seconds_to_target: reached, accuracy,
    })}\n`);
  } finally { rmSync(dir, { recursive: true, force: true }); }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main().catch((e: unknown) => { process.stderr.write(`${(e as Error).stack}\n`); process.exitCode = 1; });
