/**
 * The memory estimate against what every rank's process really held: under `mpirun -np 2`, a GPT
 * big enough that its model state, not Node's baseline, sets the peak (d512 x 8 blocks, 25.5M
 * parameters, ctx 128, batch 4 per rank) trains 3 AdamW steps, evaluates and saves a checkpoint at
 * ZeRO stages 0, 1, 2 and 3; each rank's peak RSS (VmHWM since the run began, in `<out>/memory.json`)
 * is within 10% of `weft memory --json --nproc 2` for that stage, taken the way `weft train
 * --budget` takes it: in a fresh process. And with the threads backend memory.json still records
 * every rank (each the one process's figure).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { MemoryEstimate } from '../src/train/memory.js';
import type { MemoryFile } from '../src/train/trainer.js';
import { mpirunTrain, skipMpi } from './helpers/mpi.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const TOLERANCE = 0.1;

function config(dir: string, model: object, steps: number): string {
  const path = join(dir, 'gpt.json');
  writeFileSync(path, JSON.stringify({
    model, train: { steps, batch: 4, lr: 1e-3, warmup: 1, threads: 1 },
    eval: { every: steps, windows: 2 }, checkpoint: { every: steps }, sample: { tokens: 0 }, log: { every: 1000 },
  }));
  return path;
}

const memoryFile = (out: string): MemoryFile => JSON.parse(readFileSync(join(out, 'memory.json'), 'utf8')) as MemoryFile;
const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

test('mpi, 2 ranks: every rank\'s peak RSS is within 10% of the estimate at ZeRO stages 0, 1, 2 and 3 (GPT d512 x 8, 3 AdamW steps, an evaluation and a checkpoint)', { skip: skipMpi }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-memory-rss-'));
  try {
    const cfg = config(dir, { ctx: 128, d: 512, layers: 8, heads: 8 }, 3);
    const stages = [0, 1, 2, 3] as const;
    // The estimates run two at a time, each in its own process (its RSS before the trainer is part
    // of the figure); the training runs one stage at a time, so no two runs share the cores.
    const estimate = async (zero: number): Promise<MemoryEstimate> => {
      const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'memory', cfg, '--json', '--nproc', '2', '--set', `parallel.zero=${zero}`], { encoding: 'utf8' });
      return JSON.parse(stdout) as MemoryEstimate;
    };
    const estimates = [...await Promise.all([estimate(0), estimate(1)]), ...await Promise.all([estimate(2), estimate(3)])];
    const peaks: number[][] = [];
    for (const zero of stages) {
      const out = join(dir, `z${zero}`);
      mpirunTrain(2, [cfg, '--set', `out=${out}`, '--set', `parallel.zero=${zero}`]);
      const m = memoryFile(out);
      assert.equal(m.backend, 'mpi');
      assert.equal(m.ranks.length, 2, 'memory.json holds both ranks');
      assert.deepEqual({ ...m.ranks[0]! }, { held: m.held, held_bytes: m.held_bytes, activations_bytes: m.activations_bytes, step_peak_bytes: m.step_peak_bytes, peak_rss_bytes: m.peak_rss_bytes }, 'the top level is rank 0\'s');
      const want = estimates[zero]!.peak_bytes;
      peaks.push(m.ranks.map((r, rank) => {
        const got = r.peak_rss_bytes;
        assert.ok(got !== null, `rank ${rank} read its peak RSS`);
        const err = got / want - 1;
        assert.ok(Math.abs(err) <= TOLERANCE, `stage ${zero}, rank ${rank}: peak RSS ${mib(got)}, estimate ${mib(want)} (${(100 * err).toFixed(1)}%)`);
        return got;
      }));
    }
    // The stages really differ: sharding the model state shows in both the estimate and every rank.
    assert.ok(estimates[3]!.peak_bytes < 0.8 * estimates[0]!.peak_bytes, 'stage 3 is estimated at under 80% of stage 0');
    for (const rank of [0, 1]) assert.ok(peaks[3]![rank]! < 0.8 * peaks[0]![rank]!, `rank ${rank}: stage 3 peaks under 80% of stage 0`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('threads, 2 ranks: memory.json records every rank, each with its own held buffers and the one process\'s peak RSS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-memory-rss-threads-'));
  try {
    const cfg = config(dir, { ctx: 16, d: 32, layers: 2, heads: 2 }, 2);
    const out = join(dir, 'run');
    const text = execFileSync(process.execPath, [CLI, 'train', cfg, '--set', `out=${out}`, '--set', 'parallel.zero=2', '--nproc', '2'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const m = memoryFile(out);
    assert.equal(m.backend, 'threads');
    assert.equal(m.ranks.length, 2);
    for (const [rank, r] of m.ranks.entries()) {
      // Stage 2 on 2 ranks: the gradient shard, about half the parameters' bytes, on each rank.
      const { params = 0, 'zero.grads': grads = 0 } = r.held;
      assert.ok(params > 0 && Math.abs(grads - params / 2) <= 4 * 16 * 8, `rank ${rank}: zero.grads ${grads} B vs params / 2 = ${params / 2} B`);
      assert.ok(r.peak_rss_bytes !== null && r.peak_rss_bytes > 0, `rank ${rank} read the process's peak RSS`);
    }
    assert.doesNotMatch(text, /max over/, 'threads share one process: no max over ranks is printed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
