/**
 * One rank of the MPI backend's tests, started by test/dist_mpi.test.ts as
 *   mpirun -np N node dist/test/mpi_worker.js <case> [timeoutMs] [large]
 * (`large`: elements of the suite's large cases, default the suite's own)
 * Cases:
 *   suite  the backend-independent suite (test/helpers/collective_suite.ts), then what is particular
 *          to MPI: agreement errors, receives of the wrong size, many operations in flight,
 *          same-tag ordering, a device mesh; prints "rank R ok" and exits 0
 *   throw  rank 1 throws while the others wait in an all-reduce
 *   exit   rank 1 calls process.exit(7) while the others wait in an all-reduce
 *   kill   rank 1 is killed by SIGKILL while the others wait in an all-reduce
 *   hang   rank 1 blocks its thread; the others' all-reduce times out and they exit with the error
 *   hang-caught  as hang, but the others catch the error and carry on: MPI_Abort ends the job
 */
import assert from 'node:assert/strict';
import { CollectiveError, deviceMesh } from '../src/comm/process_group.js';
import type { CommArray, ProcessGroup } from '../src/comm/process_group.js';
import { initMpi } from '../src/comm/mpi/group.js';
import { runCollectiveSuite } from './helpers/collective_suite.js';

const [kase = 'suite', timeoutArg, largeArg] = process.argv.slice(2);
const pg = initMpi({ timeoutMs: Number(timeoutArg) || 20000 });
const { rank, size } = pg;
const range = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));
const sumTo = (n: number): number => (n * (n - 1)) / 2; // 0 + 1 + ... + (n-1)

/** Rejects with a CollectiveError whose message matches every pattern. */
async function rejects(work: () => Promise<void>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(work, (e: unknown) => {
    assert.ok(e instanceof CollectiveError, `expected a CollectiveError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

const checks: Record<string, (g: ProcessGroup) => Promise<void>> = {
  'send and recv around a ring, both issued before either is awaited': async (g) => {
    const next = (g.rank + 1) % g.size;
    const prev = (g.rank + g.size - 1) % g.size;
    const big = new Float32Array(1 << 18).fill(g.rank); // rendezvous-sized: a blocking send would deadlock
    const got = new Float32Array(1 << 18);
    const a = new Int32Array(1), b = new Int32Array(1);
    const works = [g.send(big, next, 3), g.recv(got, prev, 3), g.send(new Int32Array([1]), next, 5),
      g.send(new Int32Array([2]), next, 5), g.recv(a, prev, 5), g.recv(b, prev, 5)];
    await Promise.all(works.map((w) => w.wait()));
    assert.equal(got[0], prev);
    assert.equal(got[got.length - 1], prev);
    assert.deepEqual([a[0], b[0]], [1, 2], 'messages with one tag arrive in order');
  },
  'many operations in flight at once, completed in any order': async (g) => {
    const bufs = range(32, (i) => new Float32Array(64 * (i + 1)).fill(g.rank + i));
    const works = bufs.map((b) => g.allReduce(b));
    await g.barrier().wait();
    for (const w of works.reverse()) await w.wait();
    bufs.forEach((b, i) => assert.equal(b[b.length - 1], sumTo(g.size) + g.size * i));
  },
  'a device mesh gives one group per axis': async (g) => {
    if (g.size % 2) return;
    const { coords, groups } = await deviceMesh(g, { dp: g.size / 2, tp: 2 });
    const b = new Int32Array([g.rank]);
    await groups['tp']!.allReduce(b).wait();
    assert.equal(b[0], 2 * (g.rank - coords['tp']!) + 1); // tp groups are the pairs (2k, 2k+1)
    for (const sub of Object.values(groups)) await sub.destroy();
  },
  'sizes that disagree fail on every rank, naming both ranks and both sizes': async (g) => {
    await rejects(() => g.allReduce(new Float32Array(g.rank === 1 ? 12 : 10)).wait(),
      new RegExp(`^rank ${g.rank}: allReduce#\\d+: sizes disagree: rank 0 has 10 elements but rank 1 has 12$`));
    await rejects(() => g.allReduce(g.rank === 1 ? new Int32Array(4) : new Float32Array(4)).wait(),
      /dtypes disagree: rank 0 has float32 but rank 1 has int32/);
    await rejects(() => (g.rank === 1 ? g.broadcast(new Float32Array(2), 0) : g.allReduce(new Float32Array(2))).wait(),
      /ranks disagree on the operation: rank 0 called allReduce#\d+ but rank 1 called broadcast#\d+/);
    const counts = range(g.size, () => 1);
    const recv = g.rank === 1 ? [...counts.slice(0, -1), 2] : counts;
    await rejects(() => g.allToAllV(new Float32Array(g.size), counts, new Float32Array(g.size + 1), recv).wait(),
      new RegExp(`sizes disagree: rank ${g.size - 1} sends 1 elements to rank 1 but rank 1 expects 2 from rank ${g.size - 1}`));
    // The group still works afterwards.
    const ok = new Float32Array([1]);
    await g.allReduce(ok).wait();
    assert.equal(ok[0], g.size);
  },
  'a receive of the wrong size fails naming both ranks; the sender completes': async (g) => {
    if (g.rank === 0) await g.send(new Float32Array(3), 1, 9).wait();
    if (g.rank === 1) await rejects(() => g.recv(new Float32Array(5), 0, 9).wait(), /rank 1: recv#\d+: sizes disagree: rank 0 sent 3 elements \(tag 9\) but rank 1 expects 5/);
    await g.barrier().wait();
  },
  'arguments are checked on the calling rank': async (g) => {
    assert.throws(() => g.allGather(new Float32Array(2), new Float32Array(3)), /allGather: out has 3 elements but needs input.length x size = /);
    assert.throws(() => g.broadcast(new Float32Array(1), g.size), /broadcast: root must be a rank in \[0, \d+\), got \d+/);
    assert.throws(() => g.allToAll(new Float32Array(g.size), new Int32Array(g.size)), /input is a Float32Array but out is a Int32Array/);
    assert.throws(() => g.send(new Float32Array(1), 0, -1), /send: tag must be an integer in \[0, 32767\]/);
  },
};

async function suite(): Promise<void> {
  const log = process.env['WEFT_MPI_TRACE'] ? (line: string): void => console.log(`rank ${rank} at ${Math.round(performance.now())} ms: ${line}`) : undefined;
  await runCollectiveSuite(pg, { ...(log ? { log } : {}), ...(largeArg ? { large: Number(largeArg) } : {}) });
  for (const [name, check] of Object.entries(checks)) {
    try {
      log?.(name);
      await check(pg);
    } catch (e) {
      throw new Error(`rank ${rank}: ${name}: ${(e as Error).message}`);
    }
  }
  await pg.destroy();
  console.log(`rank ${rank} ok: the collective suite and ${Object.keys(checks).length} MPI checks on ${size} ranks`);
}

/** Every rank but 1 waits in an all-reduce that rank 1 never joins, because `fail` happens first. */
async function peerFails(fail: () => void): Promise<void> {
  await pg.barrier().wait(); // everyone is up: the failure happens mid-job
  if (rank === 1) fail();
  const b: CommArray = new Float32Array(4);
  await pg.allReduce(b).wait();
  await pg.destroy();
}

function block(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
}

switch (kase) {
  case 'suite': await suite(); break;
  case 'throw': await peerFails(() => { throw new Error('rank 1 fails on purpose'); }); break;
  case 'exit': await peerFails(() => process.exit(7)); break;
  case 'kill': await peerFails(() => process.kill(process.pid, 'SIGKILL')); break;
  case 'hang': await peerFails(block); break;
  case 'hang-caught':
    try {
      await peerFails(block);
    } catch (e) {
      console.log(`rank ${rank} caught: ${(e as Error).message}`);
      setInterval(() => undefined, 1000); // carry on as if nothing happened
    }
    break;
  default: throw new Error(`mpi_worker: unknown case ${kase}`);
}
