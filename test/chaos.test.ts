/**
 * Restarts on failure (train/restart.ts, `weft train --max-restarts`, `weft launch`): a data-parallel
 * run on 2 and 4 thread ranks whose rank is killed at 3 random steps restarts from its newest
 * checkpoint each time and ends with the parameters of an uninterrupted run, bit for bit, with
 * every step's metrics written once. `weft launch` re-runs a failing command with --resume.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchThreads } from '../src/comm/threads/launch.js';
import { withRestarts } from '../src/train/restart.js';
import { Rng } from '../src/tensor/random.js';
import type { ChaosArgs } from './chaos_rank.js';

const dirs: string[] = [];
const tmp = (): string => { const d = mkdtempSync(join(tmpdir(), 'weft-chaos-')); dirs.push(d); return d; };
process.on('exit', () => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

const config = (out: string): unknown => ({
  out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
  train: { steps: 14, batch: 4, lr: 3e-3, warmup: 2, threads: 1 },
  eval: { every: 7, windows: 4 }, checkpoint: { every: 2, keep: 2 }, log: { every: 1 }, sample: { tokens: 0 },
});

const run = (nproc: number, a: ChaosArgs): Promise<{ params: number[] }[]> =>
  launchThreads<{ params: number[] }>({ nproc, entry: new URL('./chaos_rank.js', import.meta.url), args: a, timeoutMs: 60_000 });

for (const nproc of [2, 4]) {
  test(`chaos: ${nproc} ranks, a rank killed at 3 random steps, --max-restarts 3: the parameters of an uninterrupted run, bitwise`, async () => {
    const rng = new Rng(nproc);
    const steps = rng.shuffle(Array.from({ length: 12 }, (_, i) => i + 2)).slice(0, 3).sort((x, y) => x - y);
    const rank = 1 + rng.int(nproc - 1);
    const whole = tmp();
    const clean = await run(nproc, { config: config(whole), resume: false, kill: null });
    const out = tmp();
    const log: string[] = [];
    let final: { params: number[] }[] = [];
    const restarts = await withRestarts(async (n) => { final = await run(nproc, { config: config(out), resume: n > 0, kill: { rank, steps } }); }, { maxRestarts: 3, log: (l) => log.push(l) });
    assert.equal(restarts, 3, log.join('\n'));
    assert.equal(log.length, 3);
    for (const l of log) assert.match(l, new RegExp(`weft: restart \\d of 3: rank ${rank} failed: .*exited with code 137`));
    for (let r = 0; r < nproc; r++) assert.deepEqual(final[r]!.params, clean[r]!.params, `rank ${r} (killed at steps ${steps.join(', ')} on rank ${rank})`);
    const logged = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    assert.deepEqual(logged, Array.from({ length: 14 }, (_, i) => i + 1), 'every step logged once');
  });
}

test('withRestarts gives up after K restarts with the cause, and never retries a config error', async () => {
  let calls = 0;
  await assert.rejects(withRestarts(async () => { calls++; throw new Error('boom'); }, { maxRestarts: 2, log: () => undefined }), /boom \(after 2 restarts, --max-restarts 2\)/);
  assert.equal(calls, 3);
  const { ConfigError } = await import('../src/train/config.js');
  calls = 0;
  await assert.rejects(withRestarts(async () => { calls++; throw new ConfigError('bad key'); }, { maxRestarts: 5, log: () => undefined }), /bad key/);
  assert.equal(calls, 1);
});

test('weft launch re-runs a failing command with --resume until it succeeds, and stops at --max-restarts', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = tmp();
  // Fails twice (counting its runs in a file), then succeeds; records its arguments.
  const script = join(dir, 'job.mjs');
  writeFileSync(script, `import { appendFileSync, readFileSync, existsSync } from 'node:fs';
const f = ${JSON.stringify(join(dir, 'runs'))};
appendFileSync(f, JSON.stringify(process.argv.slice(2)) + '\\n');
const n = readFileSync(f, 'utf8').trim().split('\\n').length;
process.exit(n <= 2 ? 3 : 0);`);
  const ok = spawnSync(process.execPath, [cli, 'launch', '--max-restarts', '3', '--', process.execPath, script, 'train', 'x.json'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /weft: restart 1 of 3: .* exited with code 3; resuming/);
  const argvs = readFileSync(join(dir, 'runs'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
  assert.deepEqual(argvs, [['train', 'x.json'], ['train', 'x.json', '--resume'], ['train', 'x.json', '--resume']]);
  rmSync(join(dir, 'runs'));
  const fail = spawnSync(process.execPath, [cli, 'launch', '--max-restarts', '1', '--', process.execPath, script], { encoding: 'utf8' });
  assert.notEqual(fail.status, 0);
  assert.match(fail.stderr, /exited with code 3 \(after 1 restart, --max-restarts 1\)/);
});
