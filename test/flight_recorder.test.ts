/**
 * The flight recorder (src/comm/flight.ts): the ring itself, then hangs on the threads backend (a
 * rank that stops joining all-reduces; a receive from a rank that never sends) and, where mpirun
 * and the addon exist, on MPI. The ranks' entry is test/flight_rank.ts; dumps are read from the
 * WEFT_FLIGHT_DIR files each rank writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlightRecorder } from '../src/comm/flight.js';
import type { FlightDump } from '../src/comm/flight.js';
import { launchThreads, LaunchError } from '../src/comm/threads/launch.js';
import { bindingPath, NOT_BUILT } from '../src/comm/mpi/binding.js';
import type { FlightArgs } from './flight_rank.js';

const entry = new URL('./flight_rank.js', import.meta.url);
const TIMEOUT = 1500;

test('the ring keeps the last N operations, oldest first, and ignores settling one it has dropped', () => {
  const out: string[] = [];
  const rec = new FlightRecorder(3, null, (t) => out.push(t));
  rec.attach(5, 'test');
  const tickets = [1, 2, 3, 4, 5].map((i) => rec.issue('world', 'allReduce', i, `allReduce#${i}`, 10 * i, 'float32'));
  rec.settle(tickets[0]!, null); // dropped: slot reused by allReduce#4
  rec.settle(tickets[3]!, null);
  rec.settle(tickets[4]!, 'boom');
  const s = rec.snapshot();
  assert.equal(s.recorded, 5);
  assert.deepEqual(s.ops.map((o) => [o.label, o.count, o.state, o.error]), [
    ['allReduce#3', 30, 'issued', null], ['allReduce#4', 40, 'completed', null], ['allReduce#5', 50, 'failed', 'boom']]);
  assert.equal(s.ops[0]!.completedAt, null);
  assert.ok(s.ops[1]!.completedAt! >= s.ops[1]!.issuedAt);
});

test('a dump is written once, with the activity and every line prefixed with the rank', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-flight-'));
  try {
    const out: string[] = [];
    const rec = new FlightRecorder(4, dir, (t) => out.push(t));
    rec.attach(1, 'test');
    rec.note('program fwd_bwd#3');
    rec.issue('world', 'recv', 1, 'recv#1', 3, 'int32', 0, 7);
    const wait = { group: 'world', label: 'recv#1', missing: [0], missingWorld: [0], detail: 'rank 0 never sent a message with tag 7' };
    assert.equal(rec.trigger('rank 1: recv#1 timed out', [wait]), true);
    assert.equal(rec.trigger('again', []), false);
    assert.equal(out.length, 1);
    const lines = out[0]!.trimEnd().split('\n');
    assert.ok(lines.every((l) => l.startsWith('[flight rank 1] ')), out[0]);
    assert.match(out[0]!, /activity: 'program fwd_bwd#3'/);
    assert.match(out[0]!, /waiting: recv#1 on group world: rank 0 never sent a message with tag 7/);
    assert.match(out[0]!, /world recv#1 from 0 tag 7 3 int32 issued -\d+\.\d ms still pending/);
    const file = JSON.parse(readFileSync(join(dir, 'flight-rank-1.json'), 'utf8')) as FlightDump;
    assert.equal(file.reason, 'rank 1: recv#1 timed out');
    assert.deepEqual(file.waits, [wait]);
    assert.equal(file.ops[0]!.peer, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with capacity 0 nothing is recorded or dumped', () => {
  const out: string[] = [];
  const rec = new FlightRecorder(0, null, (t) => out.push(t));
  assert.equal(rec.issue('world', 'barrier', 1, 'barrier#1', 0, 'int32'), 0);
  rec.settle(0, null);
  assert.equal(rec.trigger('x', []), false);
  assert.deepEqual(rec.snapshot().ops, []);
  assert.deepEqual(out, []);
});

interface Hang { error: LaunchError; dumps: (FlightDump | null)[]; stderr: string; ms: number }

/** Launches a scenario that hangs; returns the launch's error, each rank's dump file and stderr. */
async function hang(nproc: number, args: FlightArgs): Promise<Hang> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-flight-'));
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => { stderr += chunk.toString(); return true; }) as typeof write;
  const t0 = performance.now();
  try {
    await launchThreads({ nproc, entry, args, timeoutMs: TIMEOUT, graceMs: 500, env: { WEFT_FLIGHT_DIR: dir } });
    assert.fail('the launch should fail');
  } catch (e) {
    const ms = performance.now() - t0;
    process.stderr.write = write;
    if (!(e instanceof LaunchError)) throw e;
    const dumps = Array.from({ length: nproc }, (_, r) => {
      const f = join(dir, `flight-rank-${r}.json`);
      return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as FlightDump) : null;
    });
    return { error: e, dumps, stderr, ms };
  } finally {
    process.stderr.write = write;
    rmSync(dir, { recursive: true, force: true });
  }
}

test('threads: a rank that stops joining all-reduces is named, with the sequence number, by every other rank\'s dump', async () => {
  const { error, dumps, stderr, ms } = await hang(4, { scenario: 'collective', rounds: 3, hung: 2, sleepMs: 30_000 });
  const never = /^rank 2 never arrived \(it last completed allReduce#3 on group world; its activity: 'sleeping instead of the next allReduce' \(for \d+\.\d s\)\)$/;
  assert.match(error.message, /rank [013]: allReduce#4 timed out after 1500 ms: rank 2 never arrived \(it last completed allReduce#3 on group world; its activity: 'sleeping instead/);
  assert.ok(ms < TIMEOUT + 5000, `the launch took ${ms} ms (timeout ${TIMEOUT})`);
  for (const r of [0, 1, 3]) {
    const d = dumps[r];
    assert.ok(d, `rank ${r} wrote no dump:\n${stderr}`);
    assert.equal(d.rank, r);
    assert.equal(d.backend, 'threads');
    assert.match(d.reason!, /allReduce#4 timed out after 1500 ms: rank 2 never arrived/);
    assert.equal(d.activity, 'step 3');
    assert.equal(d.waits.length, 1, JSON.stringify(d.waits));
    const [w] = d.waits;
    assert.deepEqual([w!.group, w!.label, w!.missing, w!.missingWorld], ['world', 'allReduce#4', [2], [2]]);
    assert.match(w!.detail, never);
    assert.deepEqual(d.ops.map((o) => [o.group, o.label, o.count, o.dtype]),
      [['world', 'allReduce#1', 16, 'float32'], ['world', 'allReduce#2', 17, 'float32'], ['world', 'allReduce#3', 18, 'float32'], ['world', 'allReduce#4', 8, 'float32']]);
    assert.deepEqual(d.ops.slice(0, 3).map((o) => o.state), ['completed', 'completed', 'completed']);
    const stuck = d.ops[3]!;
    assert.notEqual(stuck.state, 'completed');
    // Written on this rank's own timeout or on the first one anywhere: all issued allReduce#4 together.
    const waited = d.at - stuck.issuedAt;
    assert.ok(waited >= TIMEOUT * 0.9 && waited < TIMEOUT + 3000, `rank ${r} dumped ${waited} ms after issuing allReduce#4`);
    assert.match(stderr, new RegExp(`\\[flight rank ${r}\\] waiting: allReduce#4 on group world: rank 2 never arrived`));
  }
  // The rank that hung is free to run (it awaits a timer), so it dumps too: it did nothing wrong in the ring.
  const h = dumps[2];
  assert.ok(h, `the hung rank wrote no dump:\n${stderr}`);
  assert.equal(h.activity, 'sleeping instead of the next allReduce');
  assert.deepEqual(h.waits, []);
  assert.deepEqual(h.ops.map((o) => `${o.label} ${o.state}`), ['allReduce#1 completed', 'allReduce#2 completed', 'allReduce#3 completed']);
  assert.match(stderr, /\[rank 2\] \[flight rank 2\] activity: 'sleeping instead of the next allReduce'/);
});

test('threads: a receive from a rank that never sends names the peer, the tag and what it sent instead', async () => {
  const { error, dumps, stderr } = await hang(2, { scenario: 'p2p', rounds: 2, hung: 1, sleepMs: 30_000 });
  const detail = "rank 1 never sent a message with tag 7 (it last completed allReduce#2 on group world; its activity: 'sleeping instead of sending tag 7'";
  assert.equal(error.rank, 0);
  assert.ok(error.message.includes(`rank 0: recv#1 from rank 1 (tag 7) timed out after 1500 ms: ${detail}`), error.message);
  assert.match(error.message, /messages from it with tag 5 are set aside unmatched\)/);
  const d = dumps[0];
  assert.ok(d, `rank 0 wrote no dump:\n${stderr}`);
  assert.equal(d.waits.length, 1);
  assert.deepEqual([d.waits[0]!.label, d.waits[0]!.missing], ['recv#1', [1]]);
  assert.ok(d.waits[0]!.detail.startsWith(detail), d.waits[0]!.detail);
  const recv = d.ops.at(-1)!;
  assert.deepEqual([recv.op, recv.peer, recv.tag, recv.count, recv.dtype], ['recv', 1, 7, 3, 'int32']);
  const sent = dumps[1]?.ops.at(-1);
  assert.deepEqual([sent?.label, sent?.state, sent?.peer, sent?.tag], ['send#1', 'completed', 0, 5], `rank 1's dump:\n${stderr}`);
});

const mpiRank = fileURLToPath(new URL('./flight_rank.js', import.meta.url));
const hasMpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { stdio: 'ignore' }).status === 0;
const missing = !bindingPath() ? NOT_BUILT : !hasMpirun ? 'mpirun is not on PATH (install openmpi-bin)' : null;
const skip = missing && process.env['CI'] !== 'true' ? missing : false;

test('mpi: when a rank hangs, every other rank\'s dump names the same stuck all-reduce and sequence number', { skip }, async () => {
  if (missing) assert.fail(missing);
  const dir = mkdtempSync(join(tmpdir(), 'weft-flight-'));
  try {
    const args = JSON.stringify({ scenario: 'collective', rounds: 3, hung: 2, sleepMs: 30_000, timeoutMs: TIMEOUT });
    const child = spawn('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '4', '-x', 'WEFT_FLIGHT_DIR', process.execPath, mpiRank, args], {
      env: { ...process.env, WEFT_FLIGHT_DIR: dir, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => { clearTimeout(timer); resolve(c); }));
    assert.notEqual(code, 0, out);
    for (const r of [0, 1, 3]) {
      const f = join(dir, `flight-rank-${r}.json`);
      assert.ok(existsSync(f), `rank ${r} wrote no dump:\n${out}`);
      const d = JSON.parse(readFileSync(f, 'utf8')) as FlightDump;
      assert.equal(d.backend, 'mpi');
      assert.equal(d.reason, `rank ${r}: allReduce#3 timed out after 1500 ms`);
      assert.equal(d.activity, 'step 3');
      assert.deepEqual(d.waits.map((w) => [w.group, w.label, w.missing]), [['world', 'allReduce#3', []]]);
      assert.match(d.waits[0]!.detail, /^MPI does not show which ranks of the group \(world ranks 0,1,2,3\) joined allReduce#3/);
      assert.deepEqual(d.ops.map((o) => [o.label, o.count, o.dtype, o.state]),
        [['allReduce#0', 16, 'float32', 'completed'], ['allReduce#1', 17, 'float32', 'completed'], ['allReduce#2', 18, 'float32', 'completed'], ['allReduce#3', 8, 'float32', 'failed']]);
      assert.match(out, new RegExp(`\\[flight rank ${r}\\] waiting: allReduce#3 on group world: MPI does not show`));
    }
    // MPI_Abort ends the rank that hung before anything asks it for a dump.
    assert.equal(existsSync(join(dir, 'flight-rank-2.json')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
