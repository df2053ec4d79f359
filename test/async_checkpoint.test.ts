/**
 * Asynchronous checkpoints (train/async_checkpoint.ts, checkpoint.async): the files equal a
 * synchronous save's, byte for byte; a resume from them is exact; the step's blocked time is in
 * the metrics; a write that fails surfaces as the run's error, naming the step.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/train/config.js';
import type { RunConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

const dirs: string[] = [];
const tmp = (): string => { const d = mkdtempSync(join(tmpdir(), 'weft-async-ck-')); dirs.push(d); return d; };
process.on('exit', () => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

const tiny = (out: string, async: boolean, steps = 8): RunConfig => parseConfig({
  out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
  train: { steps, batch: 4, lr: 3e-3, warmup: 2, threads: 1 },
  eval: { every: 100, windows: 4 }, checkpoint: { every: 2, keep: 10, async }, sample: { tokens: 0 },
}, 'test config');

const files = (dir: string, step: string): Buffer[] => ['model.safetensors', 'optimizer.safetensors'].map((f) => readFileSync(join(dir, step, f)));

test('asynchronous checkpoints hold the same bytes as synchronous ones, and the metrics say how long each step was held', async () => {
  const a = tmp(); const b = tmp();
  const sync = await new Trainer(tiny(a, false)).run({ out: null });
  const asyn = await new Trainer(tiny(b, true)).run({ out: null });
  assert.deepEqual(asyn.losses, sync.losses);
  const steps = readdirSync(a).filter((d) => d.startsWith('step-')).sort();
  assert.deepEqual(readdirSync(b).filter((d) => d.startsWith('step-')).sort(), steps);
  assert.equal(steps.length, 4);
  for (const s of steps) assert.deepEqual(files(b, s), files(a, s), s);
  assert.equal(asyn.checkpoints.length, 4);
  assert.ok(asyn.checkpoints.at(-1)!.writeMs !== null && asyn.checkpoints.at(-1)!.writeMs! > 0);
  const held = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; checkpoint_blocked_ms?: number }).filter((m) => m.checkpoint_blocked_ms !== undefined);
  assert.deepEqual(held.map((m) => m.step), [3, 5, 7], 'the step after each checkpoint reports its blocked time');
});

test('a resume from an asynchronous checkpoint continues exactly', async () => {
  const a = tmp(); const b = tmp();
  const whole = await new Trainer(tiny(a, true)).run({ out: null });
  await new Trainer(tiny(b, true)).run({ out: null, stopAfter: 4 });
  const rest = await new Trainer(tiny(b, true)).run({ out: null, resume: true });
  assert.deepEqual(rest.losses, whole.losses.slice(4));
});

test('a background write that fails is the run\'s error, naming the step', async () => {
  const out = tmp();
  // `latest` is in the way as a non-empty directory: the writer's rename of the pointer fails.
  mkdirSync(join(out, 'latest'), { recursive: true });
  writeFileSync(join(out, 'latest', 'x'), '');
  await assert.rejects(new Trainer(tiny(out, true, 4)).run({ out: null }), /the background checkpoint of step 2 failed/);
});
