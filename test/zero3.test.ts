/**
 * ZeRO stage 3's schedule as data (parallel/zero3.ts, runtime/schedule.ts), without running a
 * model: the traced step of a 4-block GPT on a 2-rank data-parallel axis, cut into programs. Its
 * forward gathers one segment per boundary in the order the forward uses them, its backward gathers
 * again, each block's gathered parameters live over at most two stages (one gather in use, one in
 * flight), and each gradient segment is reduce-scattered once, one boundary after its gradients.
 * Offloaded, each gather reads its slice through a load issued at most two boundaries ahead.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Node, Value } from '../src/ir/graph.js';
import { partition } from '../src/runtime/schedule.js';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';
import { zero3Segments } from '../src/parallel/zero3.js';
import { Layout } from '../src/runtime/flat.js';
import '../src/comm/kernels.js';

/** Rank 0 of 2 for tracing only: nothing here communicates. */
const traceOnly = { rank: 0, size: 2, backend: 'trace-only' } as unknown as ProcessGroup;

async function stage3Schedule(extra: Record<string, unknown> = {}, parallel: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'weft-zero3-'));
  try {
    const cfg = parseConfig({
      out: dir, model: { ctx: 16, d: 32, layers: 4, heads: 2 }, train: { steps: 1, batch: 2, threads: 1, ...extra },
      parallel: { zero: 3, ...parallel }, eval: { every: 100, windows: 2 }, sample: { tokens: 0 },
    }, 'zero3 test');
    const t = new Trainer(cfg, { pg: traceOnly });
    const { step } = await t.traceStep();
    return { t, plan: partition(step.outputs) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('stage 3 segments: each block is one segment, the runs between blocks one each', () => {
  const layout = new Layout([
    { name: 'tok.w', shape: [8, 4] }, { name: 'pos', shape: [4, 4] },
    { name: 'h0.a.w', shape: [4, 4] }, { name: 'h0.b.w', shape: [3] }, { name: 'h1.a.w', shape: [4, 4] }, { name: 'lnf.g', shape: [4] },
  ]);
  const segs = zero3Segments(layout, ['h*']);
  assert.deepEqual(segs.map((s) => s.unit), [null, 'h0', 'h1', null]);
  // Segments tile the layout from slot offsets (16-aligned slots: 32, 16, 16, 16, 16, 16 elements).
  assert.deepEqual(segs.map((s) => [s.lo, s.hi]), [[0, 48], [48, 80], [80, 96], [96, 112]]);
});

for (const extra of [{}, { precision: 'fp16', checkpointing: 'full' }]) {
  test(`stage 3's schedule${Object.keys(extra).length ? ' (fp16, full checkpointing)' : ''}: gathers one layer ahead, at most two blocks gathered at a time, one reduce-scatter per segment`, async () => {
    const { t, plan } = await stage3Schedule(extra);
    const z3 = t.zero3!;
    const S = z3.shard.ranges.length;
    assert.deepEqual(z3.units, [null, 'h0', 'h1', 'h2', 'h3', null]);
    const stageOf = new Map<Node, number>();
    plan.stages.forEach((st, k) => { for (const n of [...st.before.flat(), ...st.during.flat(), ...st.host]) stageOf.set(n, k); });
    const gathers = plan.order.filter((n) => n.op === 'weft.AllGather');
    const scatters = plan.order.filter((n) => n.op === 'weft.ReduceScatter');
    const segmentOf = (n: Node): number => Number(/zero\.segment(\d+)/.exec(n.inputs[0]!.name ?? '')![1]);
    // Forward: segment k gathered at boundary k; every segment gathered once more for the backward.
    const forward = gathers.slice(0, S);
    assert.deepEqual(forward.map(segmentOf), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(forward.map((n) => stageOf.get(n)), [0, 1, 2, 3, 4, 5]);
    assert.equal(gathers.length, 2 * S, 'each segment gathered for the forward and again for the backward');
    const backward = gathers.slice(S);
    // The backward's gathers run in the order it needs them: the head's (tied embedding), the final
    // LayerNorm, then the blocks from the last; one boundary each.
    assert.deepEqual(backward.map(segmentOf), [0, 5, 4, 3, 2, 1]);
    backward.forEach((n, i) => assert.equal(stageOf.get(n), S + i, `backward gather ${i}`));
    assert.equal(scatters.length, S, 'one reduce-scatter per segment');
    assert.deepEqual([...new Set(scatters.map((n) => n.outputs[0]!.shape[0]))].sort(), [...new Set(z3.shard.ranges.map((r) => r.c))].sort());

    // How long each gather's parameters live: from the boundary that issues it to the last stage
    // with a node reading them (through the slices that cut them into tensors).
    const readers = new Map<Value, Node[]>();
    for (const n of plan.order) for (const v of n.inputs) if (v) readers.set(v, [...(readers.get(v) ?? []), n]);
    const lastUse = (v: Value): number => Math.max(...(readers.get(v) ?? []).map((r) => (r.op === 'Slice' || r.op === 'Reshape' ? lastUse(r.outputs[0]!) : stageOf.get(r)!)));
    const live = gathers.map((g) => ({ block: z3.units[segmentOf(g)] !== null, from: stageOf.get(g)! + 1, to: lastUse(g.outputs[0]!) }));
    for (const l of live) assert.ok(l.to >= l.from, 'a gather is read after it lands');
    for (let s = 0; s < plan.stages.length; s++) {
      const blocks = live.filter((l) => l.block && l.from <= s && s <= l.to).length;
      assert.ok(blocks <= 2, `stage ${s}: ${blocks} blocks' parameters gathered at once`);
    }
    // A block's gathered parameters are used in one stage only: the next block's gather flies meanwhile.
    for (const l of live.filter((x) => x.block)) assert.equal(l.to, l.from, `a block gathered for stage ${l.from} is still read at ${l.to}`);
  });
}

test("stage 3 offloaded: each gather's input is a load of its segment's slice, read at most two boundaries ahead, and at most two slices read and not yet gathered at once", async () => {
  const { t, plan } = await stage3Schedule({}, { offload: 'disk' });
  const z3 = t.zero3!;
  assert.ok(z3.file !== null && z3.params.detached, 'the shard is in a file, the buffer detached');
  const stageOf = new Map<Node, number>();
  plan.stages.forEach((st, k) => { for (const n of [...st.before.flat(), ...st.during.flat(), ...st.host]) stageOf.set(n, k); });
  const gathers = plan.order.filter((n) => n.op === 'weft.AllGather');
  const loads = plan.order.filter((n) => n.op === 'weft.Load');
  assert.equal(loads.length, 2 * z3.shard.ranges.length, 'one load per gather');
  gathers.forEach((g, i) => {
    const l = g.inputs[0]!.node!;
    assert.equal(l.op, 'weft.Load', `gather ${i} reads a load`);
    // The load reads the slice the gather's segment has in the shard file.
    const r = z3.shard.ranges.find((x) => x.at === l.attrs['offset'])!;
    assert.ok(r, `load ${i} starts at a segment's slice`);
    assert.equal(l.attrs['length'], r.c);
    assert.equal(g.outputs[0]!.shape[0], 2 * r.c);
    const ahead = stageOf.get(g)! - stageOf.get(l)!;
    assert.ok(ahead >= 1 && ahead <= 2, `gather ${i}: its load is ${ahead} boundaries ahead`);
  });
  // Slices read and not yet gathered (a load's output lives from its boundary to its gather's).
  for (let s = 0; s < plan.stages.length; s++) {
    const held = gathers.filter((g) => stageOf.get(g.inputs[0]!.node!)! < s + 1 && s + 1 <= stageOf.get(g)!).length;
    assert.ok(held <= 2, `boundary ${s}: ${held} slices waiting`);
  }
});
