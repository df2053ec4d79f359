/**
 * The parameter server under mpirun: `weft train` with ps.servers on 3 MPI processes (2 workers,
 * 1 server) writes the same checkpoint, row for row, as the same run on thread ranks. Skips
 * without the MPI addon or mpirun, except under CI=true.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindingPath, NOT_BUILT } from '../src/comm/mpi/binding.js';
import { launchThreads } from '../src/comm/threads/launch.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { readShards } from '../src/train/ps_train.js';

const hasMpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { stdio: 'ignore' }).status === 0;
const missing = !bindingPath() ? NOT_BUILT : !hasMpirun ? 'mpirun is not on PATH (install openmpi-bin)' : null;
const skip = missing && process.env['CI'] !== 'true' ? missing : false;
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function rows(out: string): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const st = loadCheckpoint(out).state as { ps?: { shards: string; servers: number } };
  for (const file of readShards(out, st, out)) for (const b of file) b.keys.forEach((k, i) => m.set(`${b.table}:${k}`, [...b.values.subarray(i * b.dim, (i + 1) * b.dim)]));
  return m;
}

test('mpi: parameter-server training on 3 processes equals the same run on 3 thread ranks', { skip }, async () => {
  if (missing) assert.fail(missing);
  const dir = mkdtempSync(join(tmpdir(), 'weft-ps-mpi-'));
  try {
    const cfg = (out: string): unknown => ({
      out, model: { kind: 'ctr', ctr: { dim: 4, hidden: [8] } }, data: { ctr: { fields: [5, 20, 60, 200], rows: 4096, train: 4000, test: 512, seed: 3 } },
      train: { steps: 5, batch: 16, threads: 1 }, ps: { servers: 1, chunk: 64 }, eval: { every: 1000 }, checkpoint: { every: 1000 }, log: { every: 1 }, dist: { timeoutS: 30 },
    });
    const file = join(dir, 'mpi.json');
    writeFileSync(file, JSON.stringify(cfg(join(dir, 'mpi'))));
    const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '3', process.execPath, cli, 'train', file], {
      env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' }, encoding: 'utf8', timeout: 120_000,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    await launchThreads({ nproc: 3, entry: new URL('./ps_rank.js', import.meta.url), args: { kind: 'train', config: cfg(join(dir, 'threads')) }, timeoutMs: 60_000 });
    const a = rows(join(dir, 'mpi'));
    const b = rows(join(dir, 'threads'));
    assert.equal(a.size, b.size);
    assert.ok(a.size > 50);
    for (const [k, v] of a) assert.deepEqual(v, b.get(k), `row ${k}`);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
