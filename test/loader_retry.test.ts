/**
 * Loaders retry reads that fail with a transient error (retry.ts) and skip bad records as before.
 * Every case runs three ways: the in-thread loader's `nextSync` (blocking waits) and `next`
 * (awaited waits), and the prefetch worker (which rebuilds the flaky dataset from its module).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createLoader, moduleDataset, retryDelays, retryPolicy, SyncLoader, TransientError, TRANSIENT_CODES, transientLabel } from '../src/data/index.js';
import type { Batch, LoaderOptions, LoaderState, LoaderStats, RetriedRecord, SkippedRecord } from '../src/data/index.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-retry-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A dataset whose record i fails `plan[i].times` times (-1: always) with an EIO error as `fs`
 * throws it, a `TransientError`, or a plain error. Each read first draws its noise field from the
 * batch's generator, as a random transform would, so a retry that did not rewind it would change
 * the batch. Messages carry the read's attempt number and, after the first, the ms since it
 * (measured in the thread that reads, the worker's included).
 */
const flakyModule = join(dir, 'flaky.mjs');
writeFileSync(flakyModule, `import { TransientError } from ${JSON.stringify(new URL('../src/data/retry.js', import.meta.url).href)};
export default ({ n, plan }) => {
  const tries = new Map();
  const firstAt = new Map();
  return {
    size: n,
    fields: [{ name: 'x', dtype: 'int64', shape: [3] }, { name: 'noise', dtype: 'float32', shape: [] }],
    record(i, rng) {
      const noise = rng.uniform();
      const t = (tries.get(i) ?? 0) + 1;
      tries.set(i, t);
      if (t === 1) firstAt.set(i, performance.now());
      const p = plan[i];
      if (p !== undefined && (p.times < 0 || t <= p.times)) {
        const at = '(record ' + i + ', attempt ' + t + (t === 1 ? '' : ', +' + (performance.now() - firstAt.get(i)) + ' ms') + ')';
        if (p.kind === 'eio') throw Object.assign(new Error('EIO: i/o error, read ' + at), { code: 'EIO', errno: -5, syscall: 'read' });
        if (p.kind === 'transient') throw new TransientError('shard busy ' + at);
        throw new Error('corrupt ' + at);
      }
      return [Int32Array.of(i, 10 * i, 100 * i), Float32Array.of(noise)];
    },
    describe: (i) => 'flaky[' + i + ']',
    spec: () => { throw new Error('flaky: rebuilt from its module'); },
  };
};
`);

type Plan = Record<number, { kind: 'eio' | 'transient' | 'bad'; times: number }>;
type Mode = 'nextSync' | 'next' | 'prefetch';
const MODES: Mode[] = ['nextSync', 'next', 'prefetch'];

interface Run {
  batches: Batch[];
  /** `state()` after each batch. */
  states: LoaderState[];
  stats: LoaderStats;
  retried: RetriedRecord[];
  skipped: SkippedRecord[];
  ms: number;
}

/** 16 records, shuffled, in batches of 4: 4 batches, then null. */
const N = 16;
const base = (plan: Plan, extra: Partial<LoaderOptions>): Promise<LoaderOptions> => moduleDataset({ kind: 'module', module: flakyModule, args: { n: N, plan } })
  .then((dataset) => ({ dataset, sampler: { kind: 'sequential', items: N, shuffle: true, seed: 7 }, batch: 4, ...extra }));

/** Every batch of a loader over the flaky dataset, from `state` when given. */
async function drain(mode: Mode, plan: Plan, extra: Partial<LoaderOptions> = {}): Promise<Run> {
  const retried: RetriedRecord[] = [];
  const skipped: SkippedRecord[] = [];
  const opts = await base(plan, { onRetry: (r) => retried.push(r), onSkip: (s) => skipped.push(s), ...extra });
  const t0 = performance.now();
  const batches: Batch[] = [];
  const states: LoaderState[] = [];
  if (mode === 'nextSync') {
    const l = new SyncLoader(opts);
    for (let b = l.nextSync(); b !== null; b = l.nextSync()) { batches.push(b); states.push(l.state()); }
    return { batches, states, stats: l.stats, retried, skipped, ms: performance.now() - t0 };
  }
  const l = mode === 'next' ? new SyncLoader(opts) : await createLoader({ ...opts, depth: 2, name: 'retry-test' });
  try {
    for (let b = await l.next(); b !== null; b = await l.next()) { batches.push(b); states.push(l.state()); }
  } finally { await l.close(); }
  return { batches, states, stats: l.stats, retried, skipped, ms: performance.now() - t0 };
}

/** Each field's bytes, in hex: what the model would be fed. */
const bytes = (bs: Batch[]): string[][] => bs.map((b) => b.fields.map((f) => Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength).toString('hex')));
const ids = (b: Batch): number[] => Array.from({ length: b.B }, (_, r) => Number(b.fields[0]!.data[r * 3]));
const clean = (mode: Mode): Promise<Run> => drain(mode, {});

for (const mode of MODES) {
  test(`${mode}: record 5 fails with EIO twice, then reads: same batches (bytes) and sampler states as a run without failures`, async () => {
    const ref = await clean(mode);
    const got = await drain(mode, { 5: { kind: 'eio', times: 2 } }, { backoffMs: 5 });
    assert.equal(got.batches.length, 4);
    assert.ok(got.batches.some((b) => ids(b).includes(5)), 'record 5 is in a batch');
    assert.deepEqual(bytes(got.batches), bytes(ref.batches));
    assert.deepEqual(got.batches, ref.batches);
    assert.deepEqual(got.states, ref.states);
    assert.equal(got.stats.retries, 2);
    assert.equal(got.stats.skipped, 0);
    assert.deepEqual(got.skipped, []);
    assert.deepEqual(got.retried, [{
      index: 5, record: 'flaky[5]', retries: 2, delaysMs: [5, 10], code: 'EIO', message: 'EIO: i/o error, read (record 5, attempt 1)', recovered: true,
    }]);
    assert.ok(got.ms >= 15, `took ${got.ms} ms, the waits sum to 5 + 10`);
  });

  test(`${mode}: a resume from the state of a run that retried continues with the no-failure run's batches`, async () => {
    const ref = await clean(mode);
    const plan: Plan = { 5: { kind: 'eio', times: 2 } };
    const first = await drain(mode, plan, { backoffMs: 1 });
    for (let k = 1; k < 4; k++) {
      const state = JSON.parse(JSON.stringify(first.states[k - 1])) as LoaderState;
      const rest = await drain(mode, plan, { backoffMs: 1, state });
      assert.deepEqual(bytes(rest.batches), bytes(ref.batches.slice(k)), `resumed after batch ${k}`);
      assert.deepEqual(rest.states, ref.states.slice(k));
    }
  });

  test(`${mode}: record 5 failing with EIO forever is skipped after exactly \`retries\` retries, waiting min(backoffMs * 2^k, maxBackoffMs) before each`, async () => {
    const opts = { retries: 4, backoffMs: 10, maxBackoffMs: 30 };
    const delays = retryDelays(retryPolicy(opts));
    assert.deepEqual(delays, [10, 20, 30, 30]);
    const got = await drain(mode, { 5: { kind: 'eio', times: -1 } }, opts);
    const sum = delays.reduce((a, b) => a + b, 0);
    assert.ok(got.ms >= sum, `took ${got.ms} ms, the waits sum to ${sum}`);
    assert.equal(got.stats.retries, 4);
    assert.equal(got.stats.skipped, 1);
    const [s] = got.skipped;
    assert.deepEqual({ ...s, reason: '' }, { index: 5, record: 'flaky[5]', reason: '' });
    const m = /^EIO after 4 retries \(10, 20, 30, 30 ms\): EIO: i\/o error, read \(record 5, attempt 5, \+([\d.e-]+) ms\)$/.exec(s!.reason);
    assert.ok(m, s!.reason);
    assert.ok(Number(m[1]) >= sum, `the fifth read came ${m[1]} ms after the first, the waits sum to ${sum}`);
    assert.deepEqual(got.retried, [{
      index: 5, record: 'flaky[5]', retries: 4, delaysMs: [10, 20, 30, 30], code: 'EIO', message: 'EIO: i/o error, read (record 5, attempt 1)', recovered: false,
    }]);
    assert.ok(got.batches.every((b) => !ids(b).includes(5)));
    // Then it is a bad record like any other: the batches and states of a run where it fails at once.
    const bad = await drain(mode, { 5: { kind: 'bad', times: -1 } });
    assert.deepEqual(bytes(got.batches), bytes(bad.batches));
    assert.deepEqual(got.states, bad.states);
  });

  test(`${mode}: a non-transient error is skipped at once with its own message, no retry`, async () => {
    const t0 = performance.now();
    const got = await drain(mode, { 5: { kind: 'bad', times: 1 } }, { backoffMs: 2000 });
    assert.ok(performance.now() - t0 < 2000, 'no backoff');
    assert.equal(got.stats.retries, 0);
    assert.deepEqual(got.retried, []);
    assert.deepEqual(got.skipped, [{ index: 5, record: 'flaky[5]', reason: 'corrupt (record 5, attempt 1)' }]);
    // Today's behaviour exactly: the batches of a loader that does not retry at all.
    const noRetry = await drain(mode, { 5: { kind: 'bad', times: 1 } }, { retries: 0 });
    assert.deepEqual(bytes(got.batches), bytes(noRetry.batches));
    assert.deepEqual(got.states, noRetry.states);
    assert.equal(got.batches.flatMap(ids).length, N - 1);
  });

  test(`${mode}: a TransientError is retried like EIO; with retries 0, EIO is skipped at once with its message`, async () => {
    const ref = await clean(mode);
    const got = await drain(mode, { 5: { kind: 'transient', times: 1 }, 11: { kind: 'transient', times: 3 } }, { backoffMs: 1 });
    assert.deepEqual(bytes(got.batches), bytes(ref.batches));
    assert.deepEqual(got.states, ref.states);
    assert.equal(got.stats.retries, 4);
    assert.deepEqual(got.retried.map((r) => [r.index, r.retries, r.code, r.recovered]).sort(), [[11, 3, 'TransientError', true], [5, 1, 'TransientError', true]]);
    const none = await drain(mode, { 5: { kind: 'eio', times: 1 } }, { retries: 0 });
    assert.equal(none.stats.retries, 0);
    assert.deepEqual(none.skipped, [{ index: 5, record: 'flaky[5]', reason: 'EIO: i/o error, read (record 5, attempt 1)' }]);
  });
}

test('the default onRetry warns once per retried record, naming it and its error', async () => {
  const lines: string[] = [];
  const warn = console.warn;
  console.warn = (...a: unknown[]) => { lines.push(a.join(' ')); };
  try {
    const opts = await base({ 5: { kind: 'eio', times: 2 }, 9: { kind: 'transient', times: -1 } }, { backoffMs: 1, retries: 2 });
    const l = new SyncLoader(opts);
    while (l.nextSync() !== null);
    assert.equal(l.stats.retries, 4);
  } finally { console.warn = warn; }
  assert.deepEqual(lines.map((l) => l.replace(/\+[\d.e-]+ ms/, '+<ms> ms')).sort(), [
    'weft data: record 5 (flaky[5]) failed with EIO: i/o error, read (record 5, attempt 1); read on retry 2 (waits 1, 2 ms)',
    'weft data: record 9 (flaky[9]) failed with TransientError: shard busy (record 9, attempt 1); still failing after 2 retries, skipped (waits 1, 2 ms)',
    'weft data: skipped record 9 (flaky[9]): TransientError after 2 retries (1, 2 ms): shard busy (record 9, attempt 3, +<ms> ms)',
  ]);
});

test('transientLabel: the documented Node codes, TransientError, causes; transient: false and other codes are not', () => {
  assert.deepEqual([...TRANSIENT_CODES].sort(), ['EAGAIN', 'EBUSY', 'ECONNRESET', 'EINTR', 'EIO', 'EMFILE', 'ENFILE', 'ETIMEDOUT']);
  for (const code of TRANSIENT_CODES) assert.equal(transientLabel(Object.assign(new Error(code), { code })), code);
  assert.equal(transientLabel(new TransientError('busy')), 'TransientError');
  assert.equal(transientLabel(new TransientError('busy', { code: 'ESHARD' })), 'ESHARD');
  assert.equal(transientLabel({ transient: true, name: 'Busy' }), 'Busy');
  // fetch() rejects with TypeError('fetch failed') whose cause carries the socket's code.
  assert.equal(transientLabel(new TypeError('fetch failed', { cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) })), 'ECONNRESET');
  assert.equal(transientLabel(Object.assign(new Error('bad sector'), { code: 'EIO', transient: false })), null);
  assert.equal(transientLabel(Object.assign(new Error('no file'), { code: 'ENOENT' })), null);
  assert.equal(transientLabel(new Error('corrupt')), null);
  assert.equal(transientLabel('EIO'), null);
  assert.equal(transientLabel(null), null);
});

test('retry options: defaults 3 retries from 50 ms; out-of-range values are errors that name them', async () => {
  assert.deepEqual(retryDelays(retryPolicy({})), [50, 100, 200]);
  assert.deepEqual(retryDelays(retryPolicy({ retries: 12 })).slice(-3), [1000, 1000, 1000]);
  assert.deepEqual(retryDelays(retryPolicy({ retries: 2, backoffMs: 3000 })), [3000, 3000]);
  assert.deepEqual(retryDelays(retryPolicy({ retries: 0 })), []);
  const opts = await base({}, {});
  assert.throws(() => new SyncLoader({ ...opts, retries: 1.5 }), /loader: retries must be an integer >= 0, got 1.5/);
  assert.throws(() => new SyncLoader({ ...opts, backoffMs: -1 }), /loader: backoffMs must be a finite number >= 0, got -1/);
  assert.throws(() => new SyncLoader({ ...opts, backoffMs: 100, maxBackoffMs: 10 }), /loader: maxBackoffMs must be a finite number >= backoffMs \(100\), got 10/);
  await assert.rejects(createLoader({ ...opts, retries: -1 }), /loader: retries must be an integer >= 0, got -1/);
});

test('SyncLoader: concurrent next() calls get consecutive batches; nextSync while one is unsettled is an error', async () => {
  const ref = await clean('nextSync');
  const l = new SyncLoader(await base({ 2: { kind: 'eio', times: 1 } }, { backoffMs: 5, onRetry: () => undefined }));
  const p = Promise.all([l.next(), l.next(), l.next()]);
  assert.throws(() => l.nextSync(), /SyncLoader: nextSync\(\) while 3 next\(\) call\(s\) are unsettled/);
  assert.deepEqual(bytes((await p) as Batch[]), bytes(ref.batches.slice(0, 3)));
  assert.deepEqual(bytes([l.nextSync()!]), bytes(ref.batches.slice(3)));
});
