/** Running `weft train` from tests. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../../src/train/checkpoint.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** `weft train <cfg> --set out=<out> <args>` fails, its stderr matching `pattern`, before its first step. */
export function trainFails(cfg: string, out: string, args: readonly string[], pattern: RegExp): void {
  const r = spawnSync(process.execPath, [CLI, 'train', cfg, '--set', `out=${out}`, ...args], { encoding: 'utf8' });
  assert.notEqual(r.status, 0, `${args.join(' ')} should fail`);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stdout, /step 1\//, 'nothing trained');
}

/** A tiny GPT run: 5 steps, checkpoint at the end, one thread per rank. */
export function tinyConfig(dir: string): string {
  const path = join(dir, 'tiny.json');
  writeFileSync(path, JSON.stringify({
    out: join(dir, 'run'), model: { ctx: 32, d: 32, layers: 2, heads: 2 },
    train: { steps: 5, batch: 4, lr: 3e-3, warmup: 2, threads: 1, clip: 1 },
    eval: { every: 5, windows: 4 }, checkpoint: { every: 5 }, sample: { tokens: 0 },
  }));
  return path;
}

/** Largest |a - b| over the parameter set, relative to the largest |b|. */
export function relDiff(a: ReturnType<typeof loadCheckpoint>, b: ReturnType<typeof loadCheckpoint>): number {
  let err = 0;
  let max = 0;
  for (const [name, t] of b.weights) {
    const u = a.weights.get(name)!;
    for (let i = 0; i < t.data.length; i++) { err = Math.max(err, Math.abs(u.data[i]! - t.data[i]!)); max = Math.max(max, Math.abs(t.data[i]!)); }
  }
  return err / max;
}

/**
 * Per-step loss and gradient norm of a run. AdamW is nearly invariant to the scale of the
 * gradients, so the parameters alone would not tell a sum from an average across ranks: the
 * norm does.
 */
export function curve(runDir: string): { loss: number; grad_norm: number }[] {
  return readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; grad_norm: number });
}

export function assertSameCurve(a: string, b: string): void {
  const [ca, cb] = [curve(a), curve(b)];
  assert.equal(ca.length, cb.length);
  ca.forEach((r, i) => {
    assert.ok(Math.abs(r.loss - cb[i]!.loss) <= 1e-5 * cb[i]!.loss, `step ${i + 1}: loss ${r.loss} vs ${cb[i]!.loss}`);
    assert.ok(Math.abs(r.grad_norm - cb[i]!.grad_norm) <= 1e-4 * cb[i]!.grad_norm, `step ${i + 1}: grad norm ${r.grad_norm} vs ${cb[i]!.grad_norm}`);
  });
}
