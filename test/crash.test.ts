/**
 * A rank killed (SIGKILL) halfway through a write leaves the previous checkpoint whole, and the run
 * resumes from it to the losses and final state of a run never interrupted: ZeRO stage 3 with the
 * optimizer state offloaded to disk, under mpirun on 2 ranks (a single process where MPI is missing).
 * Two writes are cut: the checkpoint of step 4 (rank 0, mid-tensor in model.safetensors) and an
 * offloaded moment (rank 1, mid-chunk in the step after the checkpoint of step 2).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { skipMpi } from './helpers/mpi.js';

const ENTRY = fileURLToPath(new URL('./crash_entry.js', import.meta.url));
const MPI = skipMpi === false;

function config(dir: string): string {
  const path = join(dir, 'tiny.json');
  writeFileSync(path, JSON.stringify({
    model: { ctx: 16, d: 32, layers: 2, heads: 2 },
    train: { steps: 4, batch: 2, lr: 3e-3, warmup: 1, threads: 1 }, parallel: { zero: 3, offload: 'disk' },
    eval: { every: 100, windows: 2 }, checkpoint: { every: 2, keep: 3 }, sample: { tokens: 0 },
  }));
  return path;
}

/** `weft train` on 2 MPI ranks (or one process), through the crash entry; its exit status and output. */
function run(cfg: string, out: string, env: Record<string, string> = {}, extra: string[] = []): { status: number | null; signal: string | null; text: string } {
  const weft = [ENTRY, 'train', cfg, '--set', `out=${out}`, ...extra];
  const [cmd, args] = MPI
    ? ['mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', '-x', 'WEFT_TEST_KILL', '-x', 'WEFT_TEST_KILL_RANK', '-x', 'WEFT_TEST_KILL_OUT', process.execPath, ...weft, '--backend', 'mpi']]
    : [process.execPath, weft];
  const r = spawnSync(cmd, args as string[], {
    encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none', WEFT_TEST_KILL: '', WEFT_TEST_KILL_RANK: '0', WEFT_TEST_KILL_OUT: out, ...env },
  });
  return { status: r.status, signal: r.signal, text: `${r.stdout}${r.stderr}` };
}

const losses = (out: string): number[] => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);

/** Every tensor of two checkpoints' weights and optimizer state, equal bit for bit. */
function sameCheckpoint(a: string, b: string): void {
  const [x, y] = [loadCheckpoint(a), loadCheckpoint(b)];
  for (const k of ['weights', 'optimizer'] as const) {
    assert.deepEqual([...x[k].keys()], [...y[k].keys()], `${k}: the same tensors`);
    for (const [n, t] of y[k]) assert.deepEqual(x[k].get(n)!.data, t.data, `${k} ${n}`);
  }
}

for (const [what, rank, latestAfter] of [['checkpoint:4', '0', 2], ['offload:2', MPI ? '1' : '0', 2]] as const) {
  test(`${MPI ? 'mpi, 2 ranks' : 'one process'}: a rank killed mid-${what.split(':')[0]}-write (${what}) leaves checkpoint ${latestAfter} whole, and the resumed run equals an uninterrupted one`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-crash-'));
    try {
      const cfg = config(dir);
      const ref = join(dir, 'ref');
      const whole = run(cfg, ref);
      assert.equal(whole.status, 0, whole.text);
      const out = join(dir, 'crashed');
      const crashed = run(cfg, out, { WEFT_TEST_KILL: what, WEFT_TEST_KILL_RANK: rank });
      assert.ok(crashed.status !== 0 || crashed.signal !== null, `the run was killed: ${crashed.text}`);
      const latest = JSON.parse(readFileSync(join(out, 'latest'), 'utf8')) as { step: number };
      assert.equal(latest.step, latestAfter, 'latest names the checkpoint before the crash');
      // The previous checkpoint loads (sizes and SHA-256 verified) and equals the uninterrupted run's.
      sameCheckpoint(join(out, `step-00000${latestAfter}`), join(ref, `step-00000${latestAfter}`));
      if (what.startsWith('checkpoint')) {
        // The cut write is there, partial, in a temp directory no loader reads.
        const tmp = readdirSync(out).filter((n) => n.startsWith('.tmp-step-000004'));
        assert.equal(tmp.length, 1, `one interrupted save: ${readdirSync(out).join(', ')}`);
        assert.ok(!existsSync(join(out, tmp[0]!, 'state.json')), 'the interrupted save has no state.json');
        assert.ok(statSync(join(out, tmp[0]!, 'model.safetensors')).size < statSync(join(ref, 'step-000004', 'model.safetensors')).size, 'model.safetensors was cut short');
      }
      const resumed = run(cfg, out, {}, ['--resume']);
      assert.equal(resumed.status, 0, resumed.text);
      assert.deepEqual(losses(out), losses(ref), 'per-step losses after the resume');
      sameCheckpoint(join(out, 'step-000004'), join(ref, 'step-000004'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
