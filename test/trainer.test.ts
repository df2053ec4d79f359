/**
 * The trainer: exact resume, and clear errors (naming the file and what is wrong) for bad
 * configs, data paths and checkpoints, with nothing overwritten.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig, parseConfig } from '../src/train/config.js';
import type { RunConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';

const tiny = (out: string, extra: Record<string, unknown> = {}): RunConfig => parseConfig({
  out,
  model: { ctx: 32, d: 32, layers: 2, heads: 2 },
  train: { steps: 8, batch: 4, lr: 3e-3, warmup: 2, threads: 1, ...extra },
  eval: { every: 4, windows: 4 },
  checkpoint: { every: 4, keep: 2 },
  sample: { tokens: 0 },
}, 'test config');

const tmp = (): string => mkdtempSync(join(tmpdir(), 'weft-trainer-'));

test('resume after a stop at step 5 continues with exactly the losses of an uninterrupted run', async () => {
  const [a, b] = [tmp(), tmp()];
  try {
    const full = await new Trainer(tiny(a)).run({ out: null });
    const first = await new Trainer(tiny(b)).run({ out: null, stopAfter: 5 });
    assert.deepEqual(first.losses, full.losses.slice(0, 5));
    const rest = await new Trainer(tiny(b)).run({ out: null, resume: true });
    assert.equal(rest.losses.length, 3);
    assert.deepEqual(rest.losses, full.losses.slice(5), 'losses 6..8 equal the uninterrupted run exactly');
    assert.deepEqual(rest.valLosses.at(-1), full.valLosses.at(-1));
    // The metrics file reads as one run: steps 1..8 once each.
    const steps = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    assert.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(full.losses[7]! < full.losses[0]!, 'the tiny model learns');
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('gradient accumulation: 2 micro-batches of 2 take the same first step as one batch of 4', async () => {
  const [a, b] = [tmp(), tmp()];
  try {
    const one = await new Trainer(tiny(a, { steps: 1 })).run({ out: null });
    const two = await new Trainer(tiny(b, { steps: 1, batch: 2, accumulate: 2 })).run({ out: null });
    assert.ok(Math.abs(one.losses[0]! - two.losses[0]!) < 1e-5, `${one.losses[0]} vs ${two.losses[0]}`);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('config errors name the file and the key', () => {
  const dir = tmp();
  try {
    const p = join(dir, 'c.json');
    assert.throws(() => loadConfig(join(dir, 'missing.json')), /config file .*missing\.json: cannot be read \(ENOENT\)/);
    writeFileSync(p, '{ "train": { "lr": 1e-3, }');
    assert.throws(() => loadConfig(p), /config file .*c\.json: not valid JSON/);
    writeFileSync(p, JSON.stringify({ train: { lrr: 1 } }));
    assert.throws(() => loadConfig(p), /c\.json: unknown key 'train\.lrr'/);
    writeFileSync(p, JSON.stringify({ train: { lr: 'fast' } }));
    assert.throws(() => loadConfig(p), /c\.json: 'train\.lr' must be a number, got "fast"/);
    writeFileSync(p, JSON.stringify({ train: { steps: 2.5 } }));
    assert.throws(() => loadConfig(p), /'train\.steps' must be an integer, got 2\.5/);
    writeFileSync(p, JSON.stringify({ model: { d: 30, heads: 4 } }));
    assert.throws(() => loadConfig(p), /'model\.heads' \(4\) must divide 'model\.d' \(30\)/);
    writeFileSync(p, JSON.stringify({ data: { tokenizer: 'words' } }));
    assert.throws(() => loadConfig(p), /'data\.tokenizer' must be one of 'byte', 'bpe', got "words"/);
    writeFileSync(p, JSON.stringify({}));
    assert.equal(loadConfig(p, ['train.steps=7', 'out=x']).train.steps, 7);
    assert.throws(() => loadConfig(p, ['train.stepz=7']), /--set train\.stepz=7: unknown key 'train\.stepz'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an unreadable data path is an error naming it', () => {
  const dir = tmp();
  try {
    assert.throws(() => new Trainer(parseConfig({ out: dir, data: { text: join(dir, 'nope.txt') } })), /data\.text: cannot read .*nope\.txt \(ENOENT\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Every file under dir with its bytes, to check that a failed resume changed nothing. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p); else out.set(p, readFileSync(p).toString('base64'));
    }
  };
  walk(dir);
  return out;
}

test('truncated, corrupted and mismatched checkpoints are clear errors and overwrite nothing', async () => {
  const dir = tmp();
  try {
    await new Trainer(tiny(dir, { steps: 4 })).run({ out: null });
    const ck = join(dir, 'step-000004');
    const model = join(ck, 'model.safetensors');

    // A checkpoint of another model shape: the error names the file, the tensor and both shapes.
    const before = snapshot(dir);
    const wide = parseConfig({ ...tiny(dir), model: { ctx: 32, d: 64, layers: 2, heads: 2 } }, 'wide');
    await assert.rejects(new Trainer(wide).run({ out: null, resume: true }), /model\.safetensors: tensor 'pos' has shape \[32, 32\], the model expects \[32, 64\]/);
    const after = snapshot(dir);
    for (const [p, bytes] of before) assert.equal(after.get(p), bytes, `${p} was changed`);

    // Corrupted: one flipped byte inside the data.
    const good = readFileSync(model);
    const bad = Buffer.from(good);
    bad[bad.length - 3]! ^= 0xff;
    writeFileSync(model, bad);
    await assert.rejects(new Trainer(tiny(dir, { steps: 8 })).run({ out: null, resume: true }), /model\.safetensors.*(SHA-256|sha256|checksum)/i);
    // Truncated.
    writeFileSync(model, good);
    truncateSync(model, good.length - 100);
    await assert.rejects(new Trainer(tiny(dir, { steps: 8 })).run({ out: null, resume: true }), /model\.safetensors.*(bytes|truncated)/);
    assert.equal(statSync(model).size, good.length - 100, 'the damaged checkpoint is left as it was, not overwritten');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the weft CLI prints usage for a bad command and names a missing config file', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const r = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /unknown command 'frobnicate'/);
  assert.match(r.stderr, /weft train <config\.json>/);
  const m = spawnSync(process.execPath, [cli, 'train', '/nonexistent/run.json'], { encoding: 'utf8' });
  assert.equal(m.status, 1);
  assert.match(m.stderr, /config file \/nonexistent\/run\.json: cannot be read \(ENOENT\)/);
  // A torchrun-style environment without mpirun must not start ranks that each train alone.
  const recipe = fileURLToPath(new URL('../../recipes/brown-small.json', import.meta.url));
  const w = spawnSync(process.execPath, [cli, 'train', recipe], {
    encoding: 'utf8', env: { ...process.env, RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' },
  });
  assert.equal(w.status, 1);
  assert.match(w.stderr, /WORLD_SIZE=2 is set \(MASTER_ADDR=10\.0\.0\.1:29500\), but weft does not rendezvous over TCP: start the ranks with mpirun/);
  const h = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0);
  assert.match(h.stderr, /weft sample <checkpoint-or-run-dir>/);
});

test('train.init: a run starts from another run\'s weights (its first loss is that run\'s next), with a fresh optimizer; another model\'s checkpoint is refused naming train.init and the tensor', async () => {
  const [a, b, c] = [tmp(), tmp(), tmp()];
  try {
    // Run a for 8 steps; b starts from a's step-8 weights. With lr 0 and no weight decay b's
    // weights never move, so every loss of b is a's trained model on b's batches: b's first loss
    // equals the loss a fresh run with the same data and a's final weights would see, and is
    // far below an untrained model's.
    await new Trainer(tiny(a)).run({ out: null });
    const fine = await new Trainer(tiny(b, { init: a, lr: 0, weightDecay: 0, steps: 2 })).run({ out: null });
    const scratch = await new Trainer(tiny(c, { lr: 0, weightDecay: 0, steps: 2 })).run({ out: null });
    assert.ok(fine.losses[0]! < scratch.losses[0]! - 0.3, `init ${fine.losses[0]} vs scratch ${scratch.losses[0]}`);
    // b's saved weights are a's, bit for bit (lr 0).
    const [wa, wb] = [loadCheckpoint(join(a, 'step-000008')).weights, loadCheckpoint(join(b, 'step-000002')).weights];
    assert.deepEqual([...wb.keys()], [...wa.keys()]);
    for (const [k, t] of wa) assert.deepEqual(wb.get(k)!.data, t.data, `b saved a's '${k}'`);
    const wrong = parseConfig({ ...JSON.parse(JSON.stringify(tiny(c))), out: c, model: { ctx: 32, d: 64, layers: 2, heads: 2 }, train: { ...tiny(c).train, init: a } }, 'test config');
    await assert.rejects(new Trainer(wrong).run({ out: null }), /train\.init: .*model\.safetensors: .*shape|train\.init: .*model\.safetensors/);
    await assert.rejects(new Trainer(tiny(c, { init: join(a, 'nothing-here') })).run({ out: null }), /train\.init: .*nothing-here/);
  } finally {
    for (const d of [a, b, c]) rmSync(d, { recursive: true, force: true });
  }
});
