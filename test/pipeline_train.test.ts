/**
 * `weft train` with pipeline parallelism (parallel.pp): a tiny GPT on Brown, 4 layers, on 2 and 4
 * stages (threads), dp 2 x pp 2 and the 3-D mesh dp 2 x tp 2 x pp 2 on 8 ranks, equal to one rank
 * with the same global batch (losses 1e-5, and every parameter and AdamW moment of the step-5
 * checkpoint: 1e-5, 3e-5 with dp or tp); checkpoints move between layouts (pp 2 -> 1,
 * 1 -> pp 4 x tp 2); bad settings fail before the first step, naming the numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { trainFails } from './helpers/cli.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function config(dir: string): string {
  const path = join(dir, 'tiny.json');
  writeFileSync(path, JSON.stringify({
    model: { ctx: 16, d: 32, layers: 4, heads: 2 },
    train: { steps: 5, batch: 8, lr: 3e-3, warmup: 2, threads: 1, clip: 1 },
    eval: { every: 5, windows: 8, batch: 8 }, checkpoint: { every: 5 }, sample: { tokens: 0 },
  }));
  return path;
}
const train = (args: string[]): string => execFileSync(process.execPath, [CLI, 'train', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const metrics = (run: string): { loss: number; val_loss?: number }[] => readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; val_loss?: number });

/** Losses, the validation loss, and every tensor of the step-`step` checkpoints agree to `tol` (relative to each tensor set's largest value). */
function assertSame(run: string, ref: string, what: string, tol = 1e-5, step = 5): void {
  const [a, b] = [metrics(run), metrics(ref)];
  assert.equal(a.length, b.length, `${what}: steps`);
  a.forEach((m, i) => assert.ok(Math.abs(m.loss - b[i]!.loss) <= 1e-5 * b[i]!.loss, `${what}: step ${i + 1} loss ${m.loss} vs ${b[i]!.loss}`));
  const [va, vb] = [a.at(-1)!.val_loss!, b.at(-1)!.val_loss!];
  assert.ok(Math.abs(va - vb) <= 1e-5 * vb, `${what}: val loss ${va} vs ${vb}`);
  const name = `step-${String(step).padStart(6, '0')}`;
  const [ca, cb] = [loadCheckpoint(join(run, name)), loadCheckpoint(join(ref, name))];
  for (const k of ['weights', 'optimizer'] as const) {
    assert.deepEqual([...ca[k].keys()].sort(), [...cb[k].keys()].sort(), `${what}: the same ${k} tensors`);
    let err = 0, max = 0;
    for (const [n, t] of cb[k]) {
      const u = ca[k].get(n)!;
      for (let i = 0; i < t.data.length; i++) { err = Math.max(err, Math.abs(u.data[i]! - t.data[i]!)); max = Math.max(max, Math.abs(t.data[i]!)); }
    }
    assert.ok(err / max < tol, `${what}: ${k} differ by ${err / max} (relative)`);
  }
}

test('weft train: pipelines (gpipe and 1f1b on 2 stages, 1f1b on 4, dp 2 x pp 2, dp 2 x tp 2 x pp 2) equal one rank; checkpoints move between layouts (pp 2 -> 1, 1 -> pp 4 x tp 2)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-pp-'));
  try {
    const cfg = config(dir);
    train([cfg, '--set', `out=${join(dir, 'one')}`]);
    const runs: [string, string[]][] = [
      ['gpipe2', ['--set', 'parallel.pp=2', '--set', 'parallel.schedule=gpipe', '--set', 'parallel.microbatches=4', '--nproc', '2']],
      ['1f1b2', ['--set', 'parallel.pp=2', '--set', 'parallel.microbatches=4', '--nproc', '2']],
      ['1f1b4', ['--set', 'parallel.pp=4', '--set', 'parallel.microbatches=4', '--nproc', '4']],
      // dp 2: each replica's batch is half the global one.
      ['dp2pp2', ['--set', 'parallel.pp=2', '--set', 'parallel.microbatches=2', '--set', 'train.batch=4', '--nproc', '4']],
      // The 3-D mesh: dp 2 x tp 2 x pp 2 on 8 ranks.
      ['dp2tp2pp2', ['--set', 'parallel.pp=2', '--set', 'parallel.tp=2', '--set', 'parallel.microbatches=2', '--set', 'train.batch=4', '--nproc', '8']],
    ];
    for (const [name, args] of runs) {
      train([cfg, '--set', `out=${join(dir, name)}`, ...args]);
      // With dp 2 the replicas' gradients are averaged after the flush (and with tp 2 the row-parallel
      // sums are split): more float32 rounding, which AdamW turns into up to 1.1e-5 (dp 2 x pp 2) and
      // 2.2e-5 (with tp 2) at single elements of mlp.fc2.w (measured; one's v is 2.9e-8, so its first
      // updates were lr g / (|g| + eps) with |g| near eps). Losses agree to 1e-5.
      assertSame(join(dir, name), join(dir, 'one'), name, name.startsWith('dp') ? 3e-5 : 1e-5);
    }
    // pp 2 -> 1 and 1 -> 4, resumed at step 2: the uninterrupted one-rank run.
    for (const [name, first, second] of [
      ['pp2to1', ['--set', 'parallel.pp=2', '--nproc', '2'], []],
      ['pp1to4x2', [], ['--set', 'parallel.pp=4', '--set', 'parallel.tp=2', '--set', 'parallel.microbatches=4', '--nproc', '8']],
    ] as const) {
      const out = join(dir, name);
      train([cfg, '--set', `out=${out}`, ...first, '--set', 'train.steps=2', '--set', 'checkpoint.every=2']);
      train([cfg, '--set', `out=${out}`, ...second, '--resume']);
      assertSame(out, join(dir, 'one'), name, second.length > 0 ? 3e-5 : 1e-5);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weft train: bad pipeline settings fail before the first step, naming the numbers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-pp-bad-'));
  try {
    const cfg = config(dir);
    const fails = (args: string[], pattern: RegExp): void => trainFails(cfg, join(dir, 'bad'), args, pattern);
    fails(['--set', 'model.layers=3', '--set', 'parallel.pp=2', '--nproc', '2'], /3 layers do not split evenly into 2 pieces/);
    fails(['--set', 'parallel.pp=2', '--set', 'parallel.microbatches=1', '--nproc', '2'], /microbatches \(1\) must be at least the pipeline stages \(2\)/);
    fails(['--set', 'parallel.pp=2', '--set', 'parallel.microbatches=3', '--nproc', '2'], /train.batch \(8\) must divide into parallel.microbatches \(3\)/);
    fails(['--set', 'parallel.pp=3', '--nproc', '2'], /parallel.tp \(1\) x parallel.pp \(3\) = 3 must divide the 2 ranks/);
    fails(['--set', 'model.layers=3', '--set', 'parallel.pp=2', '--set', 'parallel.stages=[2,1]', '--set', 'parallel.stages=[2,2]', '--nproc', '2'], /parallel.stages \[2, 2\] must be non-negative integers summing to the model's 3 layers/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
