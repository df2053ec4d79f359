/**
 * Tensor parallelism through `weft train` on the benchmark's small GPT: tp = 2 and 4, with sequence
 * parallelism, dp x tp on 4 ranks, and under mpirun, each against the single-process run (per-step loss 1e-5, gradient norm
 * 1e-4, parameters after 5 AdamW steps 1e-5); checkpoints hold whole tensors, so a run stopped at
 * one layout resumes at another (tp2 -> tp1, tp1 -> tp4, dp2 x tp2 -> dp4) with the losses the
 * single-process run has; bad degrees fail before the first step, naming the values.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mpirunTrain, skipMpi } from './helpers/mpi.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** A tiny GPT, or the benchmark's small one (d 256, 4 layers, 4 heads, ctx 128, bytes) with batch 2. */
function config(dir: string, steps = 5, model: 'tiny' | 'small' = 'tiny'): string {
  const path = join(dir, `${model}.json`);
  writeFileSync(path, JSON.stringify({
    out: join(dir, 'run'), model: model === 'tiny' ? { ctx: 32, d: 32, layers: 2, heads: 4 } : { ctx: 128, d: 256, layers: 4, heads: 4 },
    // The small model at the Brown recipe's lr 1e-3: AdamW turns float32 rounding in near-zero
    // gradients into parameter differences that grow with lr (4.9e-6 here, 1.5e-5 at 3e-3).
    train: { steps, batch: model === 'tiny' ? 4 : 2, lr: model === 'tiny' ? 3e-3 : 1e-3, warmup: 2, schedule: 'constant', threads: 1, clip: 1 },
    eval: { every: 100, windows: 4 }, checkpoint: { every: 100 }, sample: { tokens: 0 },
  }));
  return path;
}

const run = (args: string[]): string => execFileSync(process.execPath, [CLI, 'train', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const curve = (dir: string): { loss: number; grad_norm: number }[] =>
  readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; grad_norm: number });

function assertSame(a: string, b: string, from = 0): void {
  const [ca, cb] = [curve(a), curve(b)];
  assert.equal(ca.length, cb.length);
  for (let i = from; i < ca.length; i++) {
    assert.ok(Math.abs(ca[i]!.loss - cb[i]!.loss) <= 1e-5 * cb[i]!.loss, `step ${i + 1}: loss ${ca[i]!.loss} vs ${cb[i]!.loss}`);
    assert.ok(Math.abs(ca[i]!.grad_norm - cb[i]!.grad_norm) <= 1e-4 * cb[i]!.grad_norm, `step ${i + 1}: grad norm ${ca[i]!.grad_norm} vs ${cb[i]!.grad_norm}`);
  }
}

function paramDiff(a: string, b: string): number {
  const [ca, cb] = [loadCheckpoint(a), loadCheckpoint(b)];
  let err = 0, max = 0;
  for (const [name, t] of cb.weights) {
    const u = ca.weights.get(name);
    assert.ok(u && u.data.length === t.data.length, `checkpoint ${a} has the whole tensor '${name}'`);
    for (let i = 0; i < t.data.length; i++) { err = Math.max(err, Math.abs(u.data[i]! - t.data[i]!)); max = Math.max(max, Math.abs(t.data[i]!)); }
  }
  return err / max;
}

const layouts: [string, string[]][] = [
  ['tp=2', ['--nproc', '2', '--set', 'parallel.tp=2']],
  ['tp=4', ['--nproc', '4', '--set', 'parallel.tp=4']],
  ['tp=2 with sequence parallelism', ['--nproc', '2', '--set', 'parallel.tp=2', '--set', 'parallel.sp=true']],
  ['dp=2 x tp=2 (batch 1 per replica)', ['--nproc', '4', '--set', 'parallel.tp=2', '--set', 'train.batch=1']],
];

test('tensor parallel runs of the small GPT train as one process does', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-tp-'));
  try {
    const cfg = config(dir, 5, 'small');
    run([cfg, '--set', `out=${join(dir, 'one')}`]);
    for (const [name, args] of layouts) {
      const out = join(dir, name.replace(/\W+/g, '_'));
      run([cfg, '--set', `out=${out}`, ...args]);
      assertSame(out, join(dir, 'one'));
      const d = paramDiff(out, join(dir, 'one'));
      assert.ok(d < 1e-5, `${name}: parameters differ by ${d} (relative)`);
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('a checkpoint written at one layout resumes at another with the single-process losses', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-tp-resume-'));
  try {
    const cfg = config(dir, 8);
    run([cfg, '--set', `out=${join(dir, 'one')}`]);
    const cases: [string, string[], string[]][] = [
      ['tp2 -> tp1', ['--nproc', '2', '--set', 'parallel.tp=2'], []],
      ['tp1 -> tp4', [], ['--nproc', '4', '--set', 'parallel.tp=4']],
      ['dp2 x tp2 -> dp4', ['--nproc', '4', '--set', 'parallel.tp=2', '--set', 'train.batch=2'], ['--nproc', '4', '--set', 'train.batch=1']],
    ];
    for (const [name, first, then] of cases) {
      const out = join(dir, name.replace(/\W+/g, '_'));
      run([cfg, '--set', `out=${out}`, '--set', 'train.steps=4', ...first]);
      run([cfg, '--set', `out=${out}`, '--resume', ...then]);
      assertSame(out, join(dir, 'one'));
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('tensor-parallel degrees that do not divide fail before the first step, naming the values', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-tp-bad-'));
  try {
    const cfg = config(dir);
    const fail = (args: string[]): string => {
      const r = spawnSync(process.execPath, [CLI, 'train', cfg, ...args], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      return r.stderr;
    };
    assert.match(fail(['--nproc', '3', '--set', 'parallel.tp=3']), /tp = 3 must divide the heads \(4\), the vocabulary \(256\), the MLP width 4d \(128\)/);
    assert.match(fail(['--nproc', '3', '--set', 'parallel.tp=2']), /parallel\.tp \(2\) must divide the 3 ranks/);
    assert.match(fail(['--set', 'parallel.sp=true']), /parallel\.sp needs parallel\.tp > 1/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});


test('mpi: the small GPT at tp=2 under mpirun, with and without sequence parallelism, trains as one process does', { skip: skipMpi }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-tp-mpi-'));
  try {
    const cfg = config(dir, 5, 'small');
    run([cfg, '--set', `out=${join(dir, 'one')}`]);
    for (const sp of [false, true]) {
      const out = join(dir, `tp${sp ? '_sp' : ''}`);
      mpirunTrain(2, [cfg, '--set', `out=${out}`, '--set', 'parallel.tp=2', '--set', `parallel.sp=${sp}`]);
      assertSame(out, join(dir, 'one'));
      assert.ok(paramDiff(out, join(dir, 'one')) < 1e-5);
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
