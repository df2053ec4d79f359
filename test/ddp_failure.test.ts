/**
 * A rank that dies mid-step fails the whole training job fast, with a message naming the rank:
 * on the threads backend (the launcher and the surviving rank's collectives) and under mpirun.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchThreads } from '../src/comm/threads/launch.js';
import { bindingPath, NOT_BUILT } from '../src/comm/mpi/binding.js';

const entry = new URL('./fault_rank.js', import.meta.url);
const TIMEOUT_S = 20;

test('threads: a rank that exits mid-step fails the job within the timeout, naming the rank', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-fail-'));
  try {
    const t0 = performance.now();
    await assert.rejects(
      launchThreads({ nproc: 2, entry, args: { out: dir, victim: 1, call: 7, timeoutS: TIMEOUT_S }, timeoutMs: TIMEOUT_S * 1000 }),
      (e: Error) => /rank 1/.test(e.message) && /exit/i.test(e.message),
    );
    const s = (performance.now() - t0) / 1000;
    assert.ok(s < TIMEOUT_S, `the job failed after ${s.toFixed(1)} s; the timeout is ${TIMEOUT_S} s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const hasMpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { stdio: 'ignore' }).status === 0;
const missing = !bindingPath() ? NOT_BUILT : !hasMpirun ? 'mpirun is not on PATH (install openmpi-bin)' : null;

test('mpi: a rank that exits mid-step ends the job within the timeout, naming the rank', { skip: missing && process.env['CI'] !== 'true' ? missing : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-fail-mpi-'));
  try {
    const t0 = performance.now();
    const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, fileURLToPath(entry),
      JSON.stringify({ out: dir, victim: 1, call: 7, timeoutS: TIMEOUT_S })],
    { encoding: 'utf8', env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' }, timeout: 3 * TIMEOUT_S * 1000 });
    const s = (performance.now() - t0) / 1000;
    const out = `${r.stdout}${r.stderr}`;
    assert.notEqual(r.status, 0, 'mpirun reports the failure');
    assert.match(out, /rank 1|\[\[\d+,\d+\],1\]/, `the output names rank 1:\n${out.slice(-2000)}`);
    assert.ok(s < TIMEOUT_S, `the job ended after ${s.toFixed(1)} s; the timeout is ${TIMEOUT_S} s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
