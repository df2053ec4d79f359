/**
 * The `mpi` backend end to end: mpirun starts N processes of test/mpi_worker.ts. Needs the addon
 * (scripts/build_mpi.mjs, run by npm ci where OpenMPI is installed) and mpirun. Without them the
 * tests skip with the reason, except under CI=true, which installs OpenMPI: there they fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bindingPath, NOT_BUILT } from '../src/comm/mpi/binding.js';

const worker = fileURLToPath(new URL('./mpi_worker.js', import.meta.url));
const hasMpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { stdio: 'ignore' }).status === 0;
const missing = !bindingPath() ? NOT_BUILT : !hasMpirun ? 'mpirun is not on PATH (install openmpi-bin)' : null;
const skip = missing && process.env['CI'] !== 'true' ? missing : false;

interface Run { code: number | null; signal: string | null; out: string; ms: number }

/** mpirun -np N node mpi_worker.js ...args, killed after `killMs`; stdout and stderr together. */
function mpirun(np: number, args: string[], killMs = 60000): Promise<Run> {
  if (missing) assert.fail(missing);
  const started = Date.now();
  // As root (CI) mpirun wants --allow-run-as-root; --oversubscribe lets N exceed the cores. Vader's
  // single-copy (CMA) needs ptrace rights that containers often withhold, so copy through shm.
  const child = spawn('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(np), process.execPath, worker, ...args], {
    env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const timer = setTimeout(() => child.kill('SIGKILL'), killMs);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, ms: Date.now() - started });
    });
  });
}

for (const np of [2, 3, 4, 8]) {
  test(`mpi: every collective gives exact per-rank values on ${np} ranks`, { skip }, async () => {
    // Eight processes on a small machine: keep the large cases, but smaller (2-4 ranks run them in full).
    const r = await mpirun(np, np > 4 ? ['suite', '20000', '200000'] : ['suite']);
    assert.equal(r.code, 0, r.out);
    for (let rank = 0; rank < np; rank++) assert.match(r.out, new RegExp(`rank ${rank} ok: the collective suite and \\d+ MPI checks on ${np} ranks`), r.out);
  });
}

// The survivors' operations would time out after 20 s; the job must end long before that.
for (const [kase, code, names] of [
  ['throw', 1, /rank 1 exits with code 1[\s\S]*rank 1 fails on purpose/],
  ['exit', 7, /rank 1 exits with code 7/],
  ['kill', null, /process rank 1 with PID \d+ on node \S+ exited on signal 9/],
] as const) {
  test(`mpi: a rank that dies (${kase}) mid-job ends the job at once, naming the rank`, { skip }, async () => {
    const r = await mpirun(3, [kase, '20000']);
    assert.notEqual(r.code, 0, r.out);
    if (code !== null) assert.equal(r.code, code, r.out);
    assert.match(r.out, names);
    assert.ok(r.ms < 15000, `took ${r.ms} ms:\n${r.out}`);
  });
}

test('mpi: when a rank hangs, the others time out naming the operation and the job ends', { skip }, async () => {
  const r = await mpirun(3, ['hang', '1500']);
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.out, /rank 0: allReduce#1 timed out after 1500 ms/);
  assert.match(r.out, /rank 2: allReduce#1 timed out after 1500 ms/);
  assert.ok(r.ms < 15000, `took ${r.ms} ms:\n${r.out}`);
});

test('mpi: a timed-out rank that carries on is ended by MPI_Abort', { skip }, async () => {
  const r = await mpirun(2, ['hang-caught', '1500']);
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.out, /rank 0 caught: rank 0: allReduce#1 timed out after 1500 ms/);
  assert.match(r.out, /rank 0: allReduce#1 timed out after 1500 ms; aborting the job \(MPI_Abort\)/);
  assert.ok(r.ms < 15000, `took ${r.ms} ms:\n${r.out}`);
});
