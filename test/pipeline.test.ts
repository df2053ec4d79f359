/**
 * Pipeline parallelism (parallel/pipeline.ts) against one rank: a tiny GPT (8 blocks) cut into 2
 * or 4 stages on thread ranks (and 2 under mpirun), trained 5 AdamW steps under each schedule, gives the per-step losses and the
 * parameters of the whole model trained on one rank with the same global batch (1e-5), every stage
 * holding only its pieces' parameters (the tied embedding on the first and last).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchThreads } from '../src/comm/threads/launch.js';
import { mpirunRanks, skipMpi } from './helpers/mpi.js';
import { pipelineTable } from '../src/parallel/pipeline_schedule.js';
import type { PipelineRankArgs, PipelineRankResult } from './pipeline_rank.js';

const entry = new URL('./pipeline_rank.js', import.meta.url);
const STEPS = 5;
const BATCH = 8;
const run = (nproc: number, a: Omit<PipelineRankArgs, 'steps' | 'batch'>): Promise<PipelineRankResult[]> =>
  launchThreads<PipelineRankResult>({ nproc, entry, args: { ...a, steps: STEPS, batch: BATCH } satisfies PipelineRankArgs, timeoutMs: 120_000 });

let reference: Promise<PipelineRankResult> | null = null;
const single = (): Promise<PipelineRankResult> => (reference ??= run(1, { kind: 'none', microbatches: 1, chunks: 1 }).then((r) => r[0]!));

/** The stages' parameters cover the model once (the tied embedding twice, equal), and equal the reference's to `tol` relative. */
function assertSame(ranks: readonly PipelineRankResult[], ref: PipelineRankResult, what: string, tol = 1e-5): void {
  ranks.forEach((r) => r.losses.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]!) <= 1e-5 * ref.losses[i]!, `${what}: step ${i + 1} loss ${l} vs ${ref.losses[i]}`)));
  const max = Math.max(...Object.values(ref.params).flat().map(Math.abs));
  const seen = new Map<string, number[]>();
  for (const r of ranks) {
    for (const [k, v] of Object.entries(r.params)) {
      const want = ref.params[k];
      assert.ok(want, `${what}: '${k}' is a parameter of the model`);
      const err = Math.max(...v.map((x, i) => Math.abs(x - want[i]!)));
      assert.ok(err / max < tol, `${what}: '${k}' differs by ${err / max} (relative)`);
      const other = seen.get(k);
      if (other) assert.deepEqual(v, other, `${what}: the copies of tied '${k}' agree`);
      seen.set(k, v);
    }
  }
  assert.deepEqual([...seen.keys()].sort(), Object.keys(ref.params).sort(), `${what}: the stages hold every parameter`);
  const first = Object.keys(ranks[0]!.params);
  assert.ok(ranks.length === 1 || first.length < Object.keys(ref.params).length, `${what}: a stage holds only its pieces`);
}

for (const [kind, P, M, V] of [['gpipe', 2, 4, 1], ['1f1b', 2, 4, 1], ['gpipe', 4, 8, 1], ['1f1b', 4, 4, 1], ['1f1b', 4, 8, 1], ['interleaved', 2, 4, 2], ['interleaved', 2, 2, 2], ['interleaved', 4, 4, 2], ['interleaved', 2, 4, 4]] as const) {
  test(`threads: ${kind} on ${P} stages with ${M} microbatches${V > 1 ? ` and ${V} chunks per stage` : ''} equals one rank (losses and parameters after ${STEPS} AdamW steps)`, async () => {
    assertSame(await run(P, { kind, microbatches: M, chunks: V }), await single(), `${kind} p=${P} m=${M} v=${V}`);
  });
}

for (const kind of ['gpipe', '1f1b', 'interleaved'] as const) {
  test(`mpi: ${kind} on 2 stages (4 microbatches${kind === 'interleaved' ? ', 2 chunks each' : ''}) equals one rank`, { skip: skipMpi }, async () => {
    const args: PipelineRankArgs = { kind, microbatches: 4, chunks: kind === 'interleaved' ? 2 : 1, steps: STEPS, batch: BATCH };
    const ranks = mpirunRanks<PipelineRankResult>(2, new URL('./pipeline_mpi.js', import.meta.url), args);
    assertSame(ranks, await single(), `mpi ${kind}`);
  });
}

test('each stage runs its table: compute in the table\'s order, one action at a time; in flight and saved activations: GPipe m, 1F1B min(p - r, m)', async () => {
  for (const [kind, P, M] of [['gpipe', 2, 4], ['1f1b', 2, 4], ['gpipe', 4, 8], ['1f1b', 4, 8]] as const) {
    const ranks = await run(P, { kind, microbatches: M, chunks: 1 });
    const table = pipelineTable(kind, P, M, 1);
    const perMicrobatch = ranks.map((r) => r.ran!.peakSavedBytes / r.ran!.inFlight);
    ranks.forEach((r, rank) => {
      const want = table.actions[rank]!.filter((a) => a.op === 'forward' || a.op === 'backward').map((a) => `${a.op[0]}${a.mb}.${a.chunk}`);
      assert.deepEqual(r.ran!.order, want, `${kind} p=${P} m=${M} rank ${rank}: the table's order`);
      assert.equal(r.ran!.overlaps, 0, 'one compute action at a time');
      assert.equal(r.ran!.inFlight, kind === 'gpipe' ? M : Math.min(P - rank, M), `${kind} p=${P} m=${M} rank ${rank}: microbatches in flight`);
      assert.ok(perMicrobatch[rank]! > 0, 'a microbatch saves activations');
    });
    // The middle stages run the same blocks on the same shapes: the same bytes per microbatch.
    if (P > 2) assert.equal(perMicrobatch[1], perMicrobatch[2]);
  }
});

test('a backward sends its input gradient before its weight gradients are done, or (wholeBackward) after: the same training either way; the bubble over the pipeline\'s window', async () => {
  const early = await run(2, { kind: '1f1b', microbatches: 4, chunks: 1 });
  const whole = await run(2, { kind: '1f1b', microbatches: 4, chunks: 1, wholeBackward: true });
  assert.ok(early[1]!.ran!.earlyGradientSends > 0, `by default stage 1 sends dx while its weight gradients compute (${early[1]!.ran!.earlyGradientSends} of 4 backwards)`);
  assert.equal(whole[1]!.ran!.earlyGradientSends, 0, 'wholeBackward: every dx leaves after its backward\'s programs');
  assertSame(whole, await single(), '1f1b p=2 m=4 wholeBackward');
  for (const r of [...early, ...whole]) {
    const { windowMs, busyMs, bubble } = r.ran!;
    // Every stage measures the same window (the first compute to the last on any stage).
    assert.equal(windowMs, early.includes(r) ? early[0]!.ran!.windowMs : whole[0]!.ran!.windowMs);
    assert.ok(busyMs > 0 && busyMs < windowMs, `busy ${busyMs} ms within the window ${windowMs} ms`);
    assert.ok(Math.abs(bubble - (1 - busyMs / windowMs)) < 1e-12);
  }
});
