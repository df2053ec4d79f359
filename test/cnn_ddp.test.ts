/**
 * Data parallel for the image task, through `weft train --nproc 2` on MNIST: without BatchNorm,
 * 2 ranks with batch b train to the parameters of one process with batch 2b (1e-5 relative);
 * with BatchNorm, each rank normalizes its own half-batch (PyTorch's DDP without SyncBatchNorm),
 * so the losses differ from one process's within the noise of batch statistics, not bit for bit;
 * with SyncBatchNorm (statistics all-reduced inside the step) 2 ranks give one process's batch-2b
 * parameters to 1e-5; under mpirun both give the threads backend's losses and parameters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { mpirunTrain, skipMpi } from './helpers/mpi.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function config(dir: string, name: string, batchNorm: boolean, batch: number, syncBatchNorm = false): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({
    out: join(dir, name), model: { kind: 'cnn', channels: [4, 8], hidden: 16, batchNorm, dropout: 0 },
    data: { images: 'mnist', cropPadding: 0 }, dist: { syncBatchNorm },
    train: { steps: 4, batch, lr: 3e-3, warmup: 0, schedule: 'constant', weightDecay: 0, clip: 1, threads: 1 },
    eval: { every: 4, batch: 1000 }, checkpoint: { every: 4 },
  }));
  return path;
}

const train = (args: string[]): string => execFileSync(process.execPath, [CLI, 'train', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const curve = (run: string): { loss: number; grad_norm: number }[] =>
  readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; grad_norm: number });

function relDiff(a: string, b: string): number {
  const [ca, cb] = [loadCheckpoint(a), loadCheckpoint(b)];
  let err = 0, max = 0;
  for (const [name, t] of cb.weights) {
    const u = ca.weights.get(name)!;
    for (let i = 0; i < t.data.length; i++) { err = Math.max(err, Math.abs(u.data[i]! - t.data[i]!)); max = Math.max(max, Math.abs(t.data[i]!)); }
  }
  return err / max;
}

test('CNN data parallel: 2 ranks x batch 4 reach the 1-rank batch-8 parameters (no BatchNorm)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cnn-ddp-'));
  try {
    train([config(dir, 'one', false, 8)]);
    const out = train([config(dir, 'two', false, 4), '--nproc', '2']);
    assert.match(out, /2 ranks \(threads\)/);
    const d = relDiff(join(dir, 'two'), join(dir, 'one'));
    assert.ok(d < 1e-5, `parameters differ by ${d} (relative)`);
    const [c1, c2] = [curve(join(dir, 'one')), curve(join(dir, 'two'))];
    c1.forEach((r, i) => assert.ok(Math.abs(r.loss - c2[i]!.loss) <= 1e-5 * r.loss, `step ${i + 1}: ${c2[i]!.loss} vs ${r.loss}`));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('CNN data parallel with SyncBatchNorm: 2 ranks x batch 4 reach the 1-rank batch-8 parameters', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cnn-sync-'));
  try {
    train([config(dir, 'one', true, 8, true)]);
    train([config(dir, 'two', true, 4, true), '--nproc', '2']);
    const d = relDiff(join(dir, 'two'), join(dir, 'one'));
    assert.ok(d < 1e-5, `parameters differ by ${d} (relative)`);
    const [c1, c2] = [curve(join(dir, 'one')), curve(join(dir, 'two'))];
    c1.forEach((r, i) => assert.ok(Math.abs(r.loss - c2[i]!.loss) <= 1e-5 * r.loss, `step ${i + 1}: ${c2[i]!.loss} vs ${r.loss}`));
    // The running statistics are those of the whole batch, on every rank alike.
    const [a, b] = [loadCheckpoint(join(dir, 'one')).weights.get('1.running_var')!, loadCheckpoint(join(dir, 'two')).weights.get('1.running_var')!];
    a.data.forEach((v, i) => assert.ok(Math.abs(v - b.data[i]!) <= 1e-5 * Math.abs(v), `running_var[${i}] ${b.data[i]} vs ${v}`));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('CNN data parallel with BatchNorm: per-rank batch statistics, losses within noise of one process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cnn-bn-'));
  try {
    train([config(dir, 'one', true, 8)]);
    train([config(dir, 'two', true, 4), '--nproc', '2']);
    const [c1, c2] = [curve(join(dir, 'one')), curve(join(dir, 'two'))];
    assert.equal(c2.length, 4);
    // Step 1 starts from the same parameters on the same 8 images: only the statistics differ.
    assert.ok(c1[0]!.loss !== c2[0]!.loss, 'per-rank statistics give a different loss than one batch of 8');
    c1.forEach((r, i) => assert.ok(Math.abs(r.loss - c2[i]!.loss) <= 0.1 * r.loss, `step ${i + 1}: ${c2[i]!.loss} vs ${r.loss}`));
    const rv = loadCheckpoint(join(dir, 'two')).weights.get('1.running_var')!;
    assert.ok(rv.data.every((v) => v > 0 && v !== 1), 'rank 0 checkpointed its moved running variance');
  } finally { rmSync(dir, { recursive: true, force: true }); }
});


test('CNN with BatchNorm and with SyncBatchNorm under mpirun: the same losses and parameters as the threads backend', { skip: skipMpi }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cnn-mpi-'));
  try {
    for (const sync of [false, true]) {
      const [t, m] = [`threads${sync ? '_sync' : ''}`, `mpi${sync ? '_sync' : ''}`];
      train([config(dir, t, true, 4, sync), '--nproc', '2']);
      mpirunTrain(2, [config(dir, m, true, 4, sync)]);
      const [a, b] = [curve(join(dir, m)), curve(join(dir, t))];
      a.forEach((r, i) => assert.ok(Math.abs(r.loss - b[i]!.loss) <= 1e-6 * b[i]!.loss, `${m} step ${i + 1}: ${r.loss} vs threads ${b[i]!.loss}`));
      assert.ok(relDiff(join(dir, m), join(dir, t)) < 1e-6);
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
