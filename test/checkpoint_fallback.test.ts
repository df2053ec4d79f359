/**
 * Resuming from the last good checkpoint (train/checkpoint.ts latestGoodCheckpoint): a damaged
 * newest checkpoint (a flipped byte, a truncated file, a lost state.json, a bad `latest`) is
 * skipped, logged and named; a crash at every stage of either saver leaves a run that resumes;
 * pruning never deletes the last checkpoint that verifies.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { CheckpointError, latestGoodCheckpoint, loadCheckpoint, SAVE_STAGES, saveCheckpoint, saveCheckpointStreamed, SimulatedCrash } from '../src/train/checkpoint.js';
import type { Checkpoint, CheckpointTensor, LazyTensor, SaveOptions, SaveStage } from '../src/train/checkpoint.js';
import { launchThreads } from '../src/comm/threads/launch.js';
import { parseConfig } from '../src/train/config.js';
import type { RunConfig } from '../src/train/config.js';
import { EMB, readShards } from '../src/train/ps_train.js';
import type { PsRunResult } from '../src/train/ps_train.js';
import { Trainer } from '../src/train/trainer.js';
import type { PsRankArgs } from './ps_rank.js';

const root = mkdtempSync(join(tmpdir(), 'weft-fallback-'));
after(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;
const freshRun = (): string => join(root, `run-${runs++}`);
const stepDir = (run: string, step: number): string => join(run, `step-${String(step).padStart(6, '0')}`);

/** Two small float32 tensors of weights, one of optimizer state, all values depending on `tag`. */
function contents(tag: number): { weights: Map<string, CheckpointTensor>; optimizer: Map<string, CheckpointTensor>; state: { tag: number } } {
  const f32 = (n: number, k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => tag * 100 + k + i * 0.25);
  return {
    weights: new Map([['w', { shape: [4, 3], data: f32(12, 0) }], ['b', { shape: [3], data: f32(3, 50) }]]),
    optimizer: new Map([['m.w', { shape: [4, 3], data: f32(12, 7) }]]),
    state: { tag },
  };
}

/** The same contents for saveCheckpointStreamed, each tensor produced when the file reaches it. */
function lazy(tensors: Map<string, CheckpointTensor>): [string, LazyTensor][] {
  return [...tensors].map(([k, t]) => [k, { shape: t.shape, dtype: 'F32', read: async () => t.data as Float32Array }]);
}

type Saver = (run: string, step: number, tag: number, opts?: SaveOptions & { keep?: number }) => Promise<string>;
const savers: Record<string, Saver> = {
  saveCheckpoint: async (run, step, tag, opts = {}) => saveCheckpoint(run, step, { ...contents(tag), ...(opts.keep ? { keep: opts.keep } : {}) }, opts),
  saveCheckpointStreamed: (run, step, tag, opts = {}) => {
    const c = contents(tag);
    return saveCheckpointStreamed(run, step, { weights: lazy(c.weights), optimizer: lazy(c.optimizer), state: c.state, ...(opts.keep ? { keep: opts.keep } : {}) }, opts);
  },
};

/** The checkpoint holds exactly contents(tag), at `step`. */
function assertHolds(ck: Checkpoint, step: number, tag: number, what: string): void {
  assert.equal(ck.step, step, `${what}: step`);
  assert.deepEqual(ck.state, { tag }, `${what}: state`);
  const want = contents(tag);
  for (const [got, exp] of [[ck.weights, want.weights], [ck.optimizer, want.optimizer]] as const) {
    assert.deepEqual([...got.keys()], [...exp.keys()], what);
    for (const [k, t] of exp) assert.deepEqual(Array.from(got.get(k)!.data), Array.from(t.data), `${what}: '${k}'`);
  }
}

/** A run with checkpoints of steps 1, 2, 3 (tags equal to the steps); `latest` names step 3. */
function threeSteps(): string {
  const run = freshRun();
  for (const s of [1, 2, 3]) saveCheckpoint(run, s, contents(s));
  return run;
}

function flipByte(file: string, at: (length: number) => number): void {
  const bytes = readFileSync(file);
  bytes[at(bytes.length)]! ^= 0x5a;
  writeFileSync(file, bytes);
}

/** latestGoodCheckpoint with its log lines collected. */
function pick(run: string): { good: ReturnType<typeof latestGoodCheckpoint>; lines: string[] } {
  const lines: string[] = [];
  const good = latestGoodCheckpoint(run, { log: (l) => lines.push(l) });
  return { good, lines };
}

test('one flipped byte in the newest model.safetensors: the previous checkpoint is returned, the skip logged naming the file and SHA-256', () => {
  const run = threeSteps();
  const model = join(stepDir(run, 3), 'model.safetensors');
  flipByte(model, (n) => n - 5); // inside the last tensor's data: the header still decodes
  const { good, lines } = pick(run);
  assert.equal(good!.path, stepDir(run, 2));
  assertHolds(good!.checkpoint, 2, 2, 'fallback');
  assert.equal(good!.skipped.length, 1);
  assert.equal(good!.skipped[0]!.path, stepDir(run, 3));
  assert.match(good!.skipped[0]!.reason, /step-000003\/model\.safetensors: SHA-256 mismatch/);
  assert.deepEqual(lines, [`weft: checkpoint ${stepDir(run, 3)} skipped: ${good!.skipped[0]!.reason}`]);
});

/** Damage done to threeSteps()'s run, and what latestGoodCheckpoint must then say. */
const damages: { name: string; damage: (run: string) => void; step: number; skipped: string; reason: RegExp }[] = [
  {
    name: 'a flipped byte in optimizer.safetensors', damage: (run) => flipByte(join(stepDir(run, 3), 'optimizer.safetensors'), (n) => n - 1),
    step: 2, skipped: 'step-000003', reason: /step-000003\/optimizer\.safetensors: SHA-256 mismatch/,
  },
  {
    name: 'a truncated model.safetensors', damage: (run) => truncateSync(join(stepDir(run, 3), 'model.safetensors'), 60),
    step: 2, skipped: 'step-000003', reason: /step-000003\/model\.safetensors is 60 bytes, state\.json records \d+ \(truncated\?\)/,
  },
  {
    name: 'a deleted state.json', damage: (run) => rmSync(join(stepDir(run, 3), 'state.json')),
    step: 2, skipped: 'step-000003', reason: /step-000003\/state\.json is missing/,
  },
  {
    // The pointer is bad but every step directory is whole: the newest of those is taken.
    name: 'garbage in latest', damage: (run) => writeFileSync(join(run, 'latest'), '\u0000\u0000{"checkp'),
    step: 3, skipped: 'latest', reason: /latest: not valid JSON/,
  },
  {
    name: 'latest pointing at a missing directory', damage: (run) => writeFileSync(join(run, 'latest'), '{"checkpoint": "step-000009", "step": 9}\n'),
    step: 3, skipped: 'latest', reason: /latest points at .*step-000009, which does not exist/,
  },
  {
    // Both: the pointer is skipped, then step 3, and step 2 is the one that verifies.
    name: 'garbage in latest and a flipped byte in step 3', damage: (run) => { writeFileSync(join(run, 'latest'), 'x'); flipByte(join(stepDir(run, 3), 'model.safetensors'), (n) => n - 1); },
    step: 2, skipped: 'latest,step-000003', reason: /latest: not valid JSON.*\|.*step-000003\/model\.safetensors: SHA-256 mismatch/,
  },
];

for (const d of damages) {
  test(`${d.name}: latestGoodCheckpoint returns step ${d.step} and names what it skipped`, () => {
    const run = threeSteps();
    d.damage(run);
    const { good, lines } = pick(run);
    assertHolds(good!.checkpoint, d.step, d.step, d.name);
    assert.equal(good!.path, stepDir(run, d.step));
    assert.deepEqual(good!.skipped.map((s) => s.path), d.skipped.split(',').map((n) => join(run, n)));
    assert.match(good!.skipped.map((s) => s.reason).join(' | '), d.reason);
    assert.equal(lines.length, good!.skipped.length);
    good!.skipped.forEach((s, i) => assert.equal(lines[i], `weft: checkpoint ${s.path} skipped: ${s.reason}`));
  });
}

test('latest names an older checkpoint that verifies: it is taken before newer step directories', () => {
  const run = threeSteps();
  writeFileSync(join(run, 'latest'), '{"checkpoint": "step-000001", "step": 1}\n');
  const { good, lines } = pick(run);
  assertHolds(good!.checkpoint, 1, 1, 'latest first');
  assert.deepEqual(lines, []);
});

test('every checkpoint damaged: a CheckpointError lists each one tried and why', () => {
  const run = threeSteps();
  flipByte(join(stepDir(run, 3), 'model.safetensors'), (n) => n - 1);
  truncateSync(join(stepDir(run, 2), 'optimizer.safetensors'), 10);
  writeFileSync(join(stepDir(run, 1), 'state.json'), '{');
  const lines: string[] = [];
  assert.throws(() => latestGoodCheckpoint(run, { log: (l) => lines.push(l) }), (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    const m = e.message;
    assert.match(m, /no checkpoint verifies; tried 3:/);
    assert.match(m, /step-000003: .*step-000003\/model\.safetensors: SHA-256 mismatch/);
    assert.match(m, /step-000002: .*step-000002\/optimizer\.safetensors is 10 bytes/);
    assert.match(m, /step-000001: .*step-000001\/state\.json: not valid JSON/);
    // Newest first, as they were tried.
    assert.ok(m.indexOf('step-000003:') < m.indexOf('step-000002:') && m.indexOf('step-000002:') < m.indexOf('step-000001:'), m);
    return true;
  });
  assert.equal(lines.length, 3);
});

test('a run with no checkpoint at all: null (an empty directory, a missing one, only temp leftovers)', () => {
  const empty = freshRun();
  mkdirSync(empty);
  assert.equal(latestGoodCheckpoint(empty, { log: () => assert.fail('nothing to log') }), null);
  assert.equal(latestGoodCheckpoint(join(root, 'no-such-run'), { log: () => assert.fail('nothing to log') }), null);
  mkdirSync(join(empty, '.tmp-step-000004-1-abc'));
  writeFileSync(join(empty, 'metrics.jsonl'), '');
  assert.equal(latestGoodCheckpoint(empty), null);
});

test('only a garbled latest: an error, not a fresh start', () => {
  const run = freshRun();
  mkdirSync(run);
  writeFileSync(join(run, 'latest'), 'nope');
  assert.throws(() => latestGoodCheckpoint(run, { log: () => undefined }), (e: unknown) => e instanceof CheckpointError && /tried 1:\n {2}.*latest: .*latest: not valid JSON/.test(e.message));
});

test('verify hook: a checkpoint it rejects is skipped with its reason', () => {
  const run = threeSteps();
  const seen: string[] = [];
  const good = latestGoodCheckpoint(run, {
    log: () => undefined,
    verify: (ck, path) => { seen.push(path); if (ck.step === 3) throw new Error(`${path}: shard file missing`); },
  });
  assert.equal(good!.checkpoint.step, 2);
  assert.deepEqual(seen, [stepDir(run, 3), stepDir(run, 2)]);
  assert.deepEqual(good!.skipped, [{ path: stepDir(run, 3), reason: `${stepDir(run, 3)}: shard file missing` }]);
});

/**
 * What a crash after `stage` leaves `latest` naming: a fresh save of step 2 (after step 1), or a
 * re-save of step 1 with new contents. Stages a save does not pass do not crash it.
 */
function afterCrash(resave: boolean, stage: SaveStage): { crashes: boolean; step: number; tag: number } {
  const files = stage === 'model.safetensors' || stage === 'optimizer.safetensors' || stage === 'state.json';
  if (!resave) {
    const crashes = stage !== 'latest-to-tmp' && stage !== 'old-removed';
    return { crashes, step: stage === 'latest' || !crashes ? 2 : 1, tag: stage === 'latest' || !crashes ? 2 : 1 };
  }
  // From 'latest-to-tmp' on, latest names the complete new copy (first in its temp directory).
  return { crashes: true, step: 1, tag: files ? 1 : 2 };
}

for (const [saverName, save] of Object.entries(savers)) {
  for (const resave of [false, true]) {
    test(`${saverName}: a crash after each of the ${SAVE_STAGES.length} stages of a ${resave ? 're-save' : 'save'} leaves a checkpoint that verifies`, async () => {
      for (const stage of SAVE_STAGES) {
        const run = freshRun();
        await save(run, 1, 1);
        const want = afterCrash(resave, stage);
        let crashed = false;
        try {
          await save(run, resave ? 1 : 2, 2, { crashAfter: stage });
        } catch (e) {
          assert.ok(e instanceof SimulatedCrash, `${stage}: ${String(e)}`);
          crashed = true;
        }
        assert.equal(crashed, want.crashes, `${stage}: crashed`);
        const { good, lines } = pick(run);
        assertHolds(good!.checkpoint, want.step, want.tag, `${saverName} crash after ${stage}`);
        assert.deepEqual(lines, [], `${stage}: a crash leaves nothing damaged to skip`);
        assertHolds(loadCheckpoint(good!.path), want.step, want.tag, `${stage}: the path loads again`);
        // The next save goes through and is the one found.
        await save(run, 5, 5);
        assertHolds(pick(run).good!.checkpoint, 5, 5, `${stage}: next save`);
      }
    });
  }
}

for (const [saverName, save] of Object.entries(savers)) {
  test(`${saverName}: keep=1 deletes older checkpoints only when the new one verifies`, async () => {
    // Control: undamaged, keep=1 leaves the new checkpoint alone.
    const ok = freshRun();
    await save(ok, 1, 1);
    await save(ok, 2, 2, { keep: 1 });
    assert.deepEqual(readdirSync(ok).sort(), ['latest', 'step-000002']);

    // Step 3 is damaged between its commit and the prune (as a failing disk would): step 2 stays.
    const run = freshRun();
    await save(run, 1, 1);
    await save(run, 2, 2, { keep: 1 });
    const logged: string[] = [];
    await save(run, 3, 3, { keep: 1, log: (l) => logged.push(l), beforePrune: (dir) => flipByte(join(dir, 'model.safetensors'), (n) => n - 2) });
    assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000002', 'step-000003']);
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /^weft: keeping step-000002 in .* \(checkpoint\.keep = 1\): the checkpoint just written does not verify: .*step-000003\/model\.safetensors: SHA-256 mismatch/);
    const { good } = pick(run);
    assertHolds(good!.checkpoint, 2, 2, 'kept');
    assert.deepEqual(good!.skipped.map((s) => s.path), [stepDir(run, 3)]);

    // A truncated optimizer file, or a lost state.json, holds the prune back too.
    await save(run, 4, 4, { keep: 1, log: () => undefined, beforePrune: (dir) => truncateSync(join(dir, 'optimizer.safetensors'), 8) });
    await save(run, 5, 5, { keep: 1, log: () => undefined, beforePrune: (dir) => rmSync(join(dir, 'state.json')) });
    assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000002', 'step-000003', 'step-000004', 'step-000005']);
    assertHolds(pick(run).good!.checkpoint, 2, 2, 'still step 2');

    // A good save prunes again, down to itself. (Pruning counts only complete step directories, those
    // with a state.json: step 5 without one is no save's doing and is left for a person to look at.)
    await save(run, 6, 6, { keep: 1 });
    assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000005', 'step-000006']);
    assert.ok(!existsSync(stepDir(run, 2)));
  });
}

/** trainer.test.ts's tiny GPT, checkpointing every 2 steps and keeping 3. */
const tinyGpt = (out: string): RunConfig => parseConfig({
  out,
  model: { ctx: 32, d: 32, layers: 2, heads: 2 },
  train: { steps: 8, batch: 4, lr: 3e-3, warmup: 2, threads: 1 },
  eval: { every: 4, windows: 4 },
  checkpoint: { every: 2, keep: 3 },
  sample: { tokens: 0 },
}, 'test config');

/** A stream that keeps what the trainer prints. */
function collector(): { stream: Writable; lines: () => string[] } {
  let text = '';
  const stream = new Writable({ write(chunk: Buffer, _enc, done) { text += chunk.toString(); done(); } });
  return { stream, lines: () => text.split('\n') };
}

test('Trainer --resume with step 6 damaged resumes from step 4 and ends bitwise equal to an uninterrupted 8-step run', async () => {
  const [a, b] = [freshRun(), freshRun()];
  const full = await new Trainer(tinyGpt(a)).run({ out: null });
  await new Trainer(tinyGpt(b)).run({ out: null, stopAfter: 6 });
  assert.deepEqual(readdirSync(b).filter((n) => n.startsWith('step-')).sort(), ['step-000002', 'step-000004', 'step-000006']);
  flipByte(join(stepDir(b, 6), 'model.safetensors'), (n) => n - 3);
  const log = collector();
  const rest = await new Trainer(tinyGpt(b)).run({ out: log.stream, resume: true });
  const lines = log.lines();
  assert.ok(lines.some((l) => l.startsWith(`weft: checkpoint ${stepDir(b, 6)} skipped: ${join(stepDir(b, 6), 'model.safetensors')}: SHA-256 mismatch`)), lines.join('\n'));
  assert.ok(lines.some((l) => /resuming at step 4 -> step 8/.test(l)), lines.join('\n'));
  assert.equal(rest.losses.length, 4, 'steps 5..8 were run again');
  assert.deepEqual(rest.losses, full.losses.slice(4), 'losses 5..8 equal the uninterrupted run exactly');
  const steps = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7, 8], 'the metrics read as one run');
  // The final parameters and optimizer state, bit for bit.
  const [wa, wb] = [loadCheckpoint(stepDir(a, 8)), loadCheckpoint(stepDir(b, 8))];
  for (const [x, y] of [[wa.weights, wb.weights], [wa.optimizer, wb.optimizer]] as const) {
    assert.deepEqual([...y.keys()], [...x.keys()]);
    for (const [k, t] of x) assert.deepEqual(y.get(k)!.data, t.data, `'${k}'`);
  }
  // The damaged step 6 was re-saved whole on the way.
  assert.equal(loadCheckpoint(stepDir(b, 6)).step, 6);
});

/** ps_train.test.ts's small CTR run: 2 workers and 1 server (3 thread ranks), BSP, checkpoints every 2 steps. */
const psConfig = (out: string, steps: number): unknown => ({
  out, model: { kind: 'ctr', ctr: { dim: 4, hidden: [8] } },
  data: { ctr: { fields: [5, 20, 60, 200], rows: 4096, train: 4000, test: 512, seed: 3 } },
  train: { steps, batch: 16, threads: 1 },
  ps: { servers: 1, mode: 'bsp', chunk: 64, optimizer: 'adagrad', lr: 0.05 },
  eval: { every: 1000 }, checkpoint: { every: 2, keep: 3 }, log: { every: 1 },
});

const psRun = (args: PsRankArgs): Promise<PsRunResult[]> => launchThreads<PsRunResult>({ nproc: 3, entry: new URL('./ps_rank.js', import.meta.url), args, timeoutMs: 60_000 });

/** Every embedding row of the checkpoint `latest` names, from its shard files. */
function psRows(out: string): Map<number, number[]> {
  const rows = new Map<number, number[]>();
  for (const file of readShards(out, loadCheckpoint(out).state as { ps?: { shards: string; servers: number } }, out)) {
    for (const b of file) if (b.table === EMB) b.keys.forEach((k, i) => rows.set(k, Array.from(b.values.subarray(i * b.dim, (i + 1) * b.dim))));
  }
  return rows;
}

test('parameter server --resume: a truncated shard file of step 4 resumes from step 2, and BSP ends equal to an uninterrupted run', async () => {
  const [a, b] = [freshRun(), freshRun()];
  const whole = await psRun({ kind: 'train', config: psConfig(a, 6) });
  await psRun({ kind: 'train', config: psConfig(b, 4) });
  const shard = join(b, 'ps', 'step-000004', 'shard-0-of-1.safetensors');
  // One flipped byte among the values decodes fine, but the recorded SHA-256 catches it.
  const original = readFileSync(shard);
  const flipped = Buffer.from(original);
  flipped[flipped.length - 7]! ^= 0x10;
  writeFileSync(shard, flipped);
  const withHash = latestGoodCheckpoint(b, { log: () => undefined, verify: (ck, path) => { readShards(b, ck.state as { ps?: { shards: string; servers: number } }, path); } });
  assert.equal(withHash!.checkpoint.step, 2);
  assert.match(withHash!.skipped[0]!.reason, /shard-0-of-1\.safetensors: SHA-256 mismatch/);
  writeFileSync(shard, original);
  truncateSync(shard, 100);
  // The run directory's own files all verify: only the shard check can reject step 4.
  assert.equal(loadCheckpoint(stepDir(b, 4)).step, 4);
  const withShards = (): ReturnType<typeof latestGoodCheckpoint> => latestGoodCheckpoint(b, { log: () => undefined, verify: (ck, path) => { readShards(b, ck.state as { ps?: { shards: string; servers: number } }, path); } });
  assert.equal(withShards()!.checkpoint.step, 2);
  assert.match(withShards()!.skipped[0]!.reason, /ps\/step-000004\/shard-0-of-1\.safetensors: 100 bytes, the checkpoint recorded \d+/);
  // A missing shard file the same (it is the resume below that meets the truncated one).
  const bytes = readFileSync(shard);
  rmSync(shard);
  assert.match(withShards()!.skipped[0]!.reason, /shard file .*ps\/step-000004\/shard-0-of-1\.safetensors is missing \(1 servers wrote this checkpoint\)/);
  writeFileSync(shard, bytes);

  const resumed = await psRun({ kind: 'train', resume: true, config: psConfig(b, 6) });
  assert.equal(resumed[0]!.steps, 4, 'steps 3..6 were run: the resume started at step 2');
  assert.deepEqual(Array.from(resumed[0]!.dense!), Array.from(whole[0]!.dense!), 'dense parameters equal exactly');
  const [x, y] = [psRows(a), psRows(b)];
  assert.ok(x.size > 100, `${x.size} rows touched`);
  assert.deepEqual(y, x, 'every embedding row equals exactly');
  const steps = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss?: number }).filter((l) => l.loss !== undefined).map((l) => l.step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
});
