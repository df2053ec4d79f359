/**
 * Parameter-server training end to end on thread ranks (train/ps_train.ts over parallel/ps/):
 * BSP with W workers equals one worker with the combined batch; a checkpoint resumes exactly on
 * another number of servers; SSP never lets a read be more than s steps stale (an instrument that
 * counts applied pushes, independent of the clocks); a dead worker under ASP/SSP leaves the others
 * running, under BSP it fails the job; a dead server fails the job fast, naming it; bytes pushed
 * follow the batch's distinct ids, not the table; bad settings are clear errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchThreads, LaunchError } from '../src/comm/threads/launch.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { parseConfig } from '../src/train/config.js';
import { psRoles } from '../src/parallel/ps/protocol.js';
import { ctrModel, EMB, evaluateCheckpoint, readShards } from '../src/train/ps_train.js';
import type { PsRunResult } from '../src/train/ps_train.js';
import type { PsRankArgs } from './ps_rank.js';

const entry = new URL('./ps_rank.js', import.meta.url);
const dirs: string[] = [];
const tmp = (): string => { const d = mkdtempSync(join(tmpdir(), 'weft-ps-')); dirs.push(d); return d; };
process.on('exit', () => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function config(out: string, over: { servers: number; batch: number; steps: number; mode?: string; rows?: number; compression?: string; every?: number; optimizer?: string; active?: number; resize?: number[] }): unknown {
  return {
    out, model: { kind: 'ctr', ctr: { dim: 4, hidden: [8] } },
    data: { ctr: { fields: [5, 20, 60, 200], rows: over.rows ?? 4096, train: 4000, test: 512, seed: 3 } },
    train: { steps: over.steps, batch: over.batch, threads: 1 },
    ps: { servers: over.servers, mode: over.mode ?? 'bsp', chunk: 64, optimizer: over.optimizer ?? 'adagrad', lr: 0.05, compression: over.compression ?? 'none', active: over.active ?? 0, resize: over.resize ?? [] },
    eval: { every: 1000 }, checkpoint: { every: over.every ?? 1000 }, log: { every: 1 },
  };
}

const run = (nproc: number, args: PsRankArgs, extra: { tolerate?: number[] } = {}): Promise<PsRunResult[]> =>
  launchThreads<PsRunResult>({ nproc, entry, args, timeoutMs: 60_000, ...extra });

/** Every embedding row of a run's latest checkpoint, whatever servers wrote it. */
function rowsOf(out: string): Map<number, Float32Array> {
  const ck = loadCheckpoint(out);
  const rows = new Map<number, Float32Array>();
  for (const file of readShards(out, ck.state as { ps?: { shards: string; servers: number } }, out)) {
    for (const b of file) {
      if (b.table !== EMB) continue;
      b.keys.forEach((k, i) => { assert.ok(!rows.has(k), `row ${k} is in two shards`); rows.set(k, b.values.slice(i * b.dim, (i + 1) * b.dim)); });
    }
  }
  return rows;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function compareRuns(a: string, b: string, ra: PsRunResult, rb: PsRunResult, tol: number): void {
  assert.ok(maxDiff(ra.dense!, rb.dense!) <= tol, `dense parameters differ by ${maxDiff(ra.dense!, rb.dense!)}`);
  const x = rowsOf(a);
  const y = rowsOf(b);
  assert.equal(x.size, y.size, 'the same rows were touched');
  let m = 0;
  for (const [k, v] of x) m = Math.max(m, maxDiff(v, y.get(k)!));
  assert.ok(m <= tol, `embedding rows differ by ${m}`);
}

test('BSP: 2 workers on 2 servers reach the parameters of 1 worker with the combined batch (1e-6)', async () => {
  const a = tmp(); const b = tmp();
  const two = await run(4, { kind: 'train', config: config(a, { servers: 2, batch: 16, steps: 6 }) });
  const one = await run(2, { kind: 'train', config: config(b, { servers: 1, batch: 32, steps: 6 }) });
  compareRuns(a, b, two[0]!, one[0]!, 1e-6);
  assert.equal(two[0]!.steps, 6);
  // The rows moved: Adagrad from the seeded init, not a no-op.
  assert.ok(rowsOf(a).size > 100);
});

test('resume: 3 steps on 1 server, then 3 more on 2 servers, equals 6 uninterrupted steps', async () => {
  const a = tmp(); const b = tmp();
  const whole = await run(3, { kind: 'train', config: config(a, { servers: 1, batch: 16, steps: 6 }) });
  await run(3, { kind: 'train', config: config(b, { servers: 1, batch: 16, steps: 3 }) });
  const resumed = await run(4, { kind: 'train', resume: true, config: config(b, { servers: 2, batch: 16, steps: 6 }) });
  assert.equal(resumed[0]!.steps, 3);
  compareRuns(a, b, whole[0]!, resumed[0]!, 0);
  const lines = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss?: number });
  assert.deepEqual(lines.filter((l) => l.loss !== undefined).map((l) => l.step), [1, 2, 3, 4, 5, 6]);
});

test('resize while training: a third server joins at step 3, two leave at step 5; nothing lost (equal to 1 server throughout)', async () => {
  const a = tmp(); const b = tmp(); const c = tmp();
  const resized = await run(5, { kind: 'train', config: config(a, { servers: 3, active: 2, resize: [3, 3, 5, 1], batch: 16, steps: 7, optimizer: 'adam' }) });
  const fixed = await run(3, { kind: 'train', config: config(b, { servers: 1, batch: 16, steps: 7, optimizer: 'adam' }) });
  compareRuns(a, b, resized[0]!, fixed[0]!, 0);
  // From step 5 ps0 holds everything: the shards ps1 and ps2 wrote at step 7 are empty.
  const files = readShards(a, loadCheckpoint(a).state as { ps?: { shards: string; servers: number } }, a);
  assert.deepEqual(files.map((f) => f.reduce((n, blob) => n + blob.keys.length, 0) > 0), [true, false, false]);
  // A join alone: the new server takes only its arcs, so every row that moved went to it, about a third of them.
  const joined = await run(5, { kind: 'train', config: config(c, { servers: 3, active: 2, resize: [3, 3], batch: 16, steps: 3 }) });
  const [s0, s1, s2] = joined.slice(2).map((r) => r.stats!);
  assert.equal(s2!.movedIn, s0!.movedOut + s1!.movedOut);
  assert.equal(s2!.movedOut + s0!.movedIn + s1!.movedIn, 0);
  const held = s0!.heldAtResize + s1!.heldAtResize;
  assert.ok(s2!.movedIn > 0.15 * held && s2!.movedIn <= 0.6 * held, `moved ${s2!.movedIn} of ${held} rows joining a third server (1.2 / S = 0.6)`);
});

test('SSP and ASP resize too: the run finishes, every row is on one server, and from the removal ps0 holds them all', async () => {
  for (const mode of ['ssp', 'asp']) {
    const out = tmp();
    const r = await run(6, { kind: 'train', slow: { worker: 0, ms: 5 }, config: config(out, { servers: 3, active: 2, resize: [3, 3, 6, 1], batch: 16, steps: 9, mode }) });
    assert.equal(r[1]!.steps, 9);
    const files = readShards(out, loadCheckpoint(out).state as { ps?: { shards: string; servers: number } }, out);
    assert.deepEqual(files.map((f) => f.reduce((n, blob) => n + blob.keys.length, 0) > 0), [true, false, false], mode);
    assert.ok(rowsOf(out).size > 100);
  }
});

test('a checkpoint taken at a resize step holds the moved rows: resumed on 2 servers it equals 6 steps on 1', async () => {
  const a = tmp(); const b = tmp();
  const whole = await run(3, { kind: 'train', config: config(a, { servers: 1, batch: 16, steps: 6 }) });
  await run(5, { kind: 'train', config: config(b, { servers: 3, active: 2, resize: [3, 3], batch: 16, steps: 3 }) });
  const resumed = await run(4, { kind: 'train', resume: true, config: config(b, { servers: 2, batch: 16, steps: 6 }) });
  compareRuns(a, b, whole[0]!, resumed[0]!, 0);
});

for (const s of [0, 1, 3]) {
  test(`SSP s=${s}: with a straggler no read includes fewer than c - s steps of every worker`, async () => {
    const res = await run(4, { kind: 'counter', counter: { servers: 1, mode: 'ssp', staleness: s, steps: 12, slowMs: 15, keys: 3 } }) as unknown as { reads: { clock: number; applied: number }[] }[];
    let worst = 0;
    for (const w of res.slice(0, 3)) for (const r of w.reads) worst = Math.max(worst, r.clock - r.applied);
    assert.ok(worst <= s, `a read was ${worst} steps stale, bound ${s}`);
    // The bound was reached: the fast workers did run ahead.
    if (s > 0) assert.equal(worst, s);
  });
}

test('BSP reads include exactly every earlier step; ASP reads may lag more than any bound', async () => {
  const bsp = await run(4, { kind: 'counter', counter: { servers: 2, mode: 'bsp', staleness: 0, steps: 8, slowMs: 10, keys: 4 } }) as unknown as { reads: { clock: number; applied: number }[] }[];
  for (const w of bsp.slice(0, 2)) for (const r of w.reads) assert.equal(r.applied, r.clock);
  const asp = await run(4, { kind: 'counter', counter: { servers: 1, mode: 'asp', staleness: 0, steps: 12, slowMs: 15, keys: 2 } }) as unknown as { reads: { clock: number; applied: number }[] }[];
  const worst = Math.max(...asp.slice(1, 3).flatMap((w) => w.reads.map((r) => r.clock - r.applied)));
  assert.ok(worst >= 4, `ASP: the fast workers ran only ${worst} steps ahead of the straggler`);
});

for (const mode of ['asp', 'ssp']) {
  test(`${mode}: a worker that dies leaves the others training to the end; the server logs it`, async () => {
    const out = tmp();
    const res = await run(4, { kind: 'train', failAt: { worker: 1, step: 2 }, config: config(out, { servers: 1, batch: 16, steps: 8, mode }) }, { tolerate: [1, 2] });
    assert.equal(res[1], undefined);
    assert.equal(res[0]!.steps, 8);
    assert.equal(res[2]!.steps, 8);
    assert.equal(res[3]!.stats!.lostWorkers, 1);
  });
}

test('BSP: a dead worker fails the job, naming it', async () => {
  const out = tmp();
  await assert.rejects(run(3, { kind: 'train', failAt: { worker: 1, step: 2 }, config: config(out, { servers: 1, batch: 16, steps: 8 }) }),
    (e: unknown) => e instanceof LaunchError && e.rank === 1 && /injected failure after step 2/.test(e.message));
});

test('a dead server fails the job fast, naming the server', async () => {
  const out = tmp();
  const t0 = Date.now();
  await assert.rejects(run(3, { kind: 'train', killServerAfterMs: 1500, config: config(out, { servers: 1, batch: 16, steps: 100000 }) }),
    (e: unknown) => e instanceof LaunchError && e.rank === 2 && /killed by the test/.test(e.message)
      && e.failures.some((f) => f.rank === 0 && /parameter server 0 \(rank 2\)/.test(f.error.message)));
  assert.ok(Date.now() - t0 < 30_000);
});

test('bytes sent per step follow the distinct ids of the batch by a formula, whatever the table size', async () => {
  const sizes = [1 << 12, 1 << 22];
  const nChunks = Math.ceil(ctrModel(parseConfig(config('x', { servers: 1, batch: 16, steps: 1 })), 4).denseLength / 64);
  for (const rows of sizes) {
    const out = tmp();
    await run(2, { kind: 'train', config: config(out, { servers: 1, batch: 16, steps: 4, rows }) });
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { rows?: number; bytes_out?: number }).filter((l) => l.rows !== undefined);
    assert.equal(lines.length, 4);
    // Five 64-byte headers (two pulls, two pushes, the clock); int32 keys of the dense chunks and the
    // U distinct rows, twice (pull, push); float32 gradients of nChunks x 64 and U x (1 + 4).
    for (const l of lines) assert.equal(l.bytes_out, 5 * 64 + 2 * 4 * nChunks + 4 * 64 * nChunks + 2 * 4 * l.rows! + 4 * 5 * l.rows!, `${rows} table rows`);
  }
});

test('CTR: DeepFM on 2 workers under BSP reaches the planted model\'s AUC within 0.01; int8 pushes too, in fewer bytes', async () => {
  const recipe = JSON.parse(readFileSync(new URL('../../recipes/ctr.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>;
  const outs: string[] = [];
  const at = (compression: string): unknown => ({
    ...recipe, out: (outs.push(tmp()), outs.at(-1)!), data: { ctr: { ...(recipe['data']!['ctr'] as object), test: 50_000 } },
    train: { ...recipe['train'], steps: 400, threads: 1 }, ps: { ...recipe['ps'], servers: 1, compression },
    eval: { every: 100_000 }, checkpoint: { every: 100_000 }, log: { every: 100 },
  });
  const plain = await run(3, { kind: 'train', config: at('none') });
  const int8 = await run(3, { kind: 'train', config: at('int8') });
  for (const r of [plain[0]!, int8[0]!]) {
    const e = r.eval!;
    assert.ok(e.oracleAuc - e.auc < 0.01, `AUC ${e.auc.toFixed(4)} against the planted ${e.oracleAuc.toFixed(4)}`);
    assert.ok(e.auc > 0.75);
  }
  assert.ok(int8[0]!.bytesPerStep!.out < 0.75 * plain[0]!.bytesPerStep!.out, `int8 pushes ${int8[0]!.bytesPerStep!.out} bytes a step, float32 ${plain[0]!.bytesPerStep!.out}`);
  // weft eval reads the checkpoint's shards and finds the training's own evaluation.
  const e = await evaluateCheckpoint(outs[0]!);
  assert.equal(e.step, 400);
  assert.ok(Math.abs(e.auc - plain[0]!.eval!.auc) < 1e-6 && Math.abs(e.logLoss - plain[0]!.eval!.logLoss) < 1e-6, `weft eval ${e.auc} ${e.logLoss}, training ${plain[0]!.eval!.auc} ${plain[0]!.eval!.logLoss}`);
  await assert.rejects(evaluateCheckpoint(tmp()), /no such checkpoint|latest|state.json/);
});

test('bad settings are clear errors: the mode, a negative staleness, more servers than ranks, ctr without servers', () => {
  assert.throws(() => parseConfig({ model: { kind: 'ctr' }, ps: { servers: 1, mode: 'eventual' } }), /'ps.mode' must be one of 'bsp', 'ssp', 'asp', got "eventual"/);
  assert.throws(() => parseConfig({ model: { kind: 'ctr' }, ps: { servers: 1, staleness: -1 } }), /'ps.staleness' must be >= 0, got -1/);
  assert.throws(() => psRoles(2, 2), /ps.servers \(2\) leaves no worker among 2 ranks/);
  assert.throws(() => psRoles(4, 5), /ps.servers \(5\) leaves no worker among 4 ranks/);
  assert.throws(() => parseConfig({ model: { kind: 'ctr' } }), /'model.kind' 'ctr' trains on a parameter server: set 'ps.servers'/);
  assert.throws(() => parseConfig({ ps: { servers: 1 } }), /the parameter server trains model.kind 'ctr', got 'gpt'/);
});
