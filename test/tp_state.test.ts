/**
 * Per-rank state under tensor parallelism: parameters, gradients and both AdamW moments hold this
 * rank's shards plus the replicated tensors, each slot aligned to 16 floats, as the profiler
 * reports; ranks whose plans differ fail before the first step, naming both.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchThreads } from '../src/comm/threads/launch.js';
import type { TpStateArgs } from './tp_rank.js';

const entry = new URL('./tp_rank.js', import.meta.url);

test('tp=2: each rank holds its shards and the replicated tensors, in every buffer', async () => {
  const out = mkdtempSync(join(tmpdir(), 'weft-tp-state-'));
  try {
    const one = await launchThreads({ nproc: 1, entry, args: { scenario: 'memory', out, tp: 1 } satisfies TpStateArgs, timeoutMs: 60_000 }) as { held: Record<string, number>; slots: number[]; names: string[] }[];
    const two = await launchThreads({ nproc: 2, entry, args: { scenario: 'memory', out, tp: 2 } satisfies TpStateArgs, timeoutMs: 60_000 }) as typeof one;
    const whole = new Map(one[0]!.names.map((n, i) => [n, one[0]!.slots[i]!]));
    // Sharded: the token table, q|k|v, proj's, fc1's and fc2's weights and the column-parallel biases.
    const sharded = (n: string): boolean => n === 'tok.w' || /\.(qkv|fc1)\.[wb]$/.test(n) || /\.(proj|fc2)\.w$/.test(n);
    for (const r of two) {
      r.names.forEach((n, i) => assert.equal(r.slots[i], sharded(n) ? whole.get(n)! / 2 : whole.get(n), `${n}`));
      const bytes = 4 * r.slots.reduce((a, s) => a + Math.ceil(s / 16) * 16, 0);
      for (const kind of ['params', 'grads', 'adamw.m', 'adamw.v']) assert.equal(r.held[kind], bytes, `${kind}: ${r.held[kind]} bytes`);
      assert.ok(r.held['params']! < one[0]!.held['params']!, 'less than one device holds');
    }
  } finally { rmSync(out, { recursive: true, force: true }); }
});

test('ranks whose parallel plans differ fail before the first step, naming both', async () => {
  const out = mkdtempSync(join(tmpdir(), 'weft-tp-disagree-'));
  try {
    await assert.rejects(launchThreads({ nproc: 2, entry, args: { scenario: 'disagree', out, tp: 2 } satisfies TpStateArgs, timeoutMs: 60_000, graceMs: 300 }),
      /parallel plan: rank 1 has tp=2 sp=true, rank 0 tp=2 sp=false/);
  } finally { rmSync(out, { recursive: true, force: true }); }
});
