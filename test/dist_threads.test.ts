/**
 * The threads backend: the collective suite on 2, 3, 4 and 8 ranks, failures (a rank that throws,
 * exits, hangs, or disagrees on sizes), and overlap of communication with a blocked rank thread.
 * This module is also the ranks' entry: its default export runs the scenario named in args.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMainThread } from 'node:worker_threads';
import { CollectiveError } from '../src/comm/process_group.js';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { launchThreads, LaunchError } from '../src/comm/threads/launch.js';
import type { ThreadsWork } from '../src/comm/threads/group.js';
import { runCollectiveSuite } from './helpers/collective_suite.js';
import { DistributedDataParallel } from '../src/parallel/ddp.js';
import { bindParameters, Linear } from '../src/nn/index.js';
import { FlatBuffer } from '../src/runtime/flat.js';

type Scenario = 'suite' | 'throw' | 'exit' | 'hang' | 'mismatch' | 'overlap' | 'groups' | 'env' | 'straggler';

interface Caught { name: string; message: string; collective: boolean; ms: number }

const clock = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for `w`, returning what it threw (or null) and how long the wait took. */
async function caught(w: { wait(): Promise<void> }): Promise<Caught | null> {
  const t = performance.now();
  try {
    await w.wait();
    return null;
  } catch (e) {
    return { name: (e as Error).name, message: (e as Error).message, collective: e instanceof CollectiveError, ms: performance.now() - t };
  }
}

export default async function rank(pg: ProcessGroup, args: { scenario: Scenario; large?: number }): Promise<unknown> {
  const { rank: r } = pg;
  switch (args.scenario) {
    case 'suite':
      await runCollectiveSuite(pg, args.large === undefined ? {} : { large: args.large });
      return 'ok';
    case 'throw': case 'exit': {
      await pg.allReduce(new Float32Array(10)).wait();
      if (r === 1) {
        await sleep(200); // the others are inside allReduce#2 by now
        if (args.scenario === 'exit') process.exit(3);
        throw new Error('boom on rank 1');
      }
      const pending = await caught(pg.allReduce(new Float32Array(100_000)));
      const later = await caught(pg.barrier());
      return { pending, later };
    }
    case 'hang': {
      if (r === 1) { await sleep(1600); return 'slept'; }
      const first = await caught(pg.allReduce(new Float32Array(5)));
      const later = await caught(pg.allReduce(new Float32Array(5)));
      return { first, later };
    }
    case 'mismatch': {
      const size = await caught(pg.allReduce(new Float32Array(r === 2 ? 99 : 100)));
      const ok = Float32Array.of(r);
      const after = await caught(pg.allReduce(ok));
      const dtype = await caught(pg.broadcast(r === 1 ? new Float64Array(4) : new Float32Array(4), 0));
      const root = await caught(pg.broadcast(new Int32Array(4), r === 0 ? 0 : 2));
      const counts = await caught(pg.allToAllV(new Int32Array(6), [2, 2, 2], new Int32Array(6), r === 2 ? [2, 1, 2] : [2, 2, 2]));
      let divisibility = '';
      try { pg.reduceScatter(new Float32Array(10), new Float32Array(3)); } catch (e) { divisibility = (e as Error).message; }
      return { size, after, sum: ok[0], dtype, root, counts, divisibility };
    }
    case 'overlap': {
      const buf = new Float32Array(1 << 18).fill(r + 1); // 1 MiB: the ring
      const w = pg.allReduce(buf, 'sum') as ThreadsWork;
      const blockStart = clock();
      // Stands for onnxruntime's run: this thread is blocked and runs no JavaScript for 300 ms.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
      const blockEnd = clock();
      await w.wait();
      return { issued: w.issuedAt, completedAt: w.completedAt, blockStart, blockEnd, resolved: clock(), value: buf[0], last: buf[buf.length - 1] };
    }
    case 'groups': {
      // Sub-groups {0, 2} and {1, 3}. Ranks 0, 1 issue the sub-group's all-reduce first, ranks 2, 3
      // the world's; each group progresses on its own, so neither order blocks the other.
      const sub = await pg.split(r % 2);
      const a = Float64Array.of(r);
      const b = Float64Array.of(r);
      const works = r < 2 ? [sub.allReduce(a), pg.allReduce(b)] : [pg.allReduce(b), sub.allReduce(a)];
      // Point-to-point beside collectives: rank 0 sends before its barrier, rank 1 receives after it.
      const msg = Int32Array.of(r === 0 ? 42 : 0);
      if (r === 0) works.push(pg.send(msg, 1, 5));
      works.push(pg.barrier());
      if (r === 1) works.push(pg.recv(msg, 0, 5));
      await Promise.all(works.map((w) => w.wait()));
      await sub.destroy();
      return { sub: a[0], world: b[0], msg: r === 1 ? msg[0] : null };
    }
    case 'straggler': {
      // Rank 1 reaches its backward 400 ms late: rank 0's wait after its own backward is waiting
      // for a peer, which DDP must report as such and not as exposed communication.
      const lin = new Linear(8, 4);
      const params = bindParameters(lin, { seed: 0 });
      const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
      const ddp = new DistributedDataParallel(pg, params, grads, (x) => { const y = lin.forward(x!); return y.mul(y).mean(); });
      const feeds = [{ data: new Float32Array(16 * 8).fill(r + 1), shape: [16, 8], dtype: 'float32' as const }];
      await ddp.step(feeds);
      await pg.barrier().wait();
      if (r === 1) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
      await ddp.step(feeds);
      return { ...ddp.stats };
    }
    case 'env':
      console.log(`marker ${process.env['RANK']}`);
      return { RANK: process.env['RANK'], WORLD_SIZE: process.env['WORLD_SIZE'], LOCAL_RANK: process.env['LOCAL_RANK'], rank: pg.rank, size: pg.size, backend: pg.backend };
  }
}

const entry = new URL(import.meta.url);

async function launchFailing(nproc: number, scenario: Scenario, timeoutMs: number): Promise<LaunchError> {
  try {
    await launchThreads({ nproc, entry, args: { scenario }, timeoutMs, graceMs: 300 });
  } catch (e) {
    assert.ok(e instanceof LaunchError, `expected a LaunchError, got ${String(e)}`);
    return e;
  }
  assert.fail(`launch of '${scenario}' resolved; expected it to reject`);
}

if (isMainThread) {
  for (const nproc of [2, 3, 4, 8]) {
    test(`collective suite on ${nproc} thread ranks matches the serial reference`, async () => {
      const results = await launchThreads({ nproc, entry, args: { scenario: 'suite' }, timeoutMs: 20_000 });
      assert.deepEqual(results, new Array(nproc).fill('ok'));
    });
  }

  // 'auto' sends the small sizes inline and only large ones through the ring: run every size
  // through each channel algorithm too (3 ranks: recursive doubling folds a rank; 4: it does not).
  for (const allReduceAlgorithm of ['ring', 'recursive_doubling'] as const) {
    for (const nproc of [3, 4]) {
      test(`collective suite (small sizes) on ${nproc} thread ranks with every all-reduce by ${allReduceAlgorithm}`, async () => {
        const results = await launchThreads({ nproc, entry, args: { scenario: 'suite', large: 0 }, timeoutMs: 20_000, allReduceAlgorithm });
        assert.deepEqual(results, new Array(nproc).fill('ok'));
      });
    }
  }

  for (const scenario of ['throw', 'exit'] as const) {
    const what = scenario === 'throw' ? 'Error: boom on rank 1' : 'Error: exited with code 3 before returning from its entry';
    test(`a rank that ${scenario === 'throw' ? 'throws' : 'calls process.exit(3)'} mid-collective: the others fail fast naming it, the launcher rejects naming it`, async () => {
      const e = await launchFailing(3, scenario, 5000);
      assert.equal(e.rank, 1);
      assert.equal(e.message, `rank 1 failed: ${what}`);
      assert.deepEqual(e.failures.map((f) => f.rank), [1]);
      for (const r of [0, 2]) {
        const { pending, later } = e.results[r] as { pending: Caught; later: Caught };
        assert.equal(pending.collective, true);
        assert.equal(pending.message, `rank ${r}: allReduce#2 aborted: rank 1 failed: ${what}`);
        assert.ok(pending.ms < 3000, `rank ${r} waited ${pending.ms} ms; the timeout is 5000`);
        assert.equal(later.message, `rank ${r}: barrier#3 aborted: rank 1 failed: ${what}`);
        assert.ok(later.ms < 1000, `a collective after the abort took ${later.ms} ms to fail`);
      }
    });
  }

  test('a rank that never joins: the others time out naming the operation and the peer; the group is then unusable', async () => {
    const results = await launchThreads<{ first: Caught; later: Caught } | string>({ nproc: 3, entry, args: { scenario: 'hang' }, timeoutMs: 1000 });
    assert.equal(results[1], 'slept');
    for (const r of [0, 2]) {
      const { first, later } = results[r] as { first: Caught; later: Caught };
      assert.equal(first.message, `rank ${r}: allReduce#1 timed out after 1000 ms: rank 1 never arrived (it has completed no collective on group world)`);
      assert.ok(first.collective);
      assert.ok(first.ms >= 950 && first.ms < 5000, `timed out after ${first.ms} ms (timeout 1000; the bound leaves room for a loaded machine)`);
      assert.match(later.message, new RegExp(`^rank ${r}: allReduce#2 not run: the group is unusable after an earlier failure \\(rank ${r}: allReduce#1 timed out`));
    }
  });

  test('ranks that disagree on sizes, dtypes, roots or counts all fail naming both ranks and both values; the group stays usable', async () => {
    const results = await launchThreads<Record<string, Caught | null | number | string>>({ nproc: 3, entry, args: { scenario: 'mismatch' }, timeoutMs: 5000 });
    for (const res of results) {
      assert.equal((res['size'] as Caught).message, 'allReduce#1: rank 0 has 100 elements, rank 2 has 99');
      assert.ok((res['size'] as Caught).collective);
      assert.equal(res['after'], null);
      assert.equal(res['sum'], 3);
      assert.equal((res['dtype'] as Caught).message, 'broadcast#3: rank 0 has float32, rank 1 has float64');
      assert.equal((res['root'] as Caught).message, 'broadcast#4: rank 0 has root 0, rank 1 has root 2');
      assert.equal((res['counts'] as Caught).message, 'allToAllV#5: rank 1 sends 2 elements to rank 2, rank 2 expects 1 from rank 1');
      assert.equal(res['divisibility'], 'reduceScatter: input has 10 elements, not divisible by the group size 3 (equal blocks, as MPI_Reduce_scatter_block)');
    }
  });

  test('an all-reduce completes on the comm threads while every rank thread is blocked', async () => {
    type R = { issued: number; completedAt: number; blockStart: number; blockEnd: number; resolved: number; value: number; last: number };
    const results = await launchThreads<R>({ nproc: 2, entry, args: { scenario: 'overlap' }, timeoutMs: 10_000 });
    for (const r of results) {
      assert.equal(r.value, 3);
      assert.equal(r.last, 3);
      assert.ok(r.completedAt > r.issued && r.completedAt < r.blockEnd, `completed at ${r.completedAt - r.blockStart} ms into a block of ${r.blockEnd - r.blockStart} ms`);
      assert.ok(r.resolved - r.blockEnd < 200, `wait() resolved ${r.resolved - r.blockEnd} ms after the block`);
    }
  });

  test('data parallel tells waiting for a late rank from exposed communication', async () => {
    type S = { exposedMs: number; peerWaitMs: number; commExposedMs: number };
    const [r0, r1] = await launchThreads<S>({ nproc: 2, entry, args: { scenario: 'straggler' }, timeoutMs: 20_000 });
    assert.ok(r0!.peerWaitMs > 250 && r0!.peerWaitMs <= r0!.exposedMs, `rank 0 waited ${r0!.peerWaitMs} ms for rank 1 (of ${r0!.exposedMs} ms)`);
    assert.ok(r0!.commExposedMs < 150, `rank 0: ${r0!.commExposedMs} ms of communication exposed beyond the wait`);
    assert.ok(r1!.peerWaitMs < 100, `rank 1, the late one, waited ${r1!.peerWaitMs} ms for a peer`);
  });

  test('operations of different groups and point-to-point progress independently of their issue order', async () => {
    const results = await launchThreads({ nproc: 4, entry, args: { scenario: 'groups' }, timeoutMs: 5000 });
    assert.deepEqual(results, [
      { sub: 2, world: 6, msg: null }, { sub: 4, world: 6, msg: 42 }, { sub: 2, world: 6, msg: null }, { sub: 4, world: 6, msg: null },
    ]);
  });

  test('ranks see RANK, WORLD_SIZE, LOCAL_RANK; their output lines are prefixed with the rank', async () => {
    const lines: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
      const s = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
      if (s.includes('marker')) { lines.push(...s.split('\n').filter((l) => l.includes('marker'))); return true; }
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
    let results: unknown[];
    try {
      results = await launchThreads({ nproc: 2, entry, args: { scenario: 'env' } });
      await sleep(50); // the last lines may arrive just after the exit events
    } finally {
      process.stdout.write = write;
    }
    assert.deepEqual(results, [0, 1].map((r) => ({ RANK: String(r), WORLD_SIZE: '2', LOCAL_RANK: String(r), rank: r, size: 2, backend: 'threads' })));
    assert.deepEqual(lines.sort(), ['[rank 0] marker 0', '[rank 1] marker 1']);
  });
}
