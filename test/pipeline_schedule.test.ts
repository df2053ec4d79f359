/**
 * Pipeline schedules as data (parallel/pipeline_schedule.ts), without running a model: every table
 * of GPipe, 1F1B and Megatron's interleaved 1F1B over a grid of stages, microbatches and chunks runs
 * to completion in the simulator; each rank's peak of held microbatch-chunks and the bubble come out
 * as the formulas say, exactly; the orders are Megatron's; and tables broken by hand (a deadlock, a
 * backward before its forward, a send or recv without its partner) are refused, naming the rank and
 * the action.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeAction, gpipe, interleaved, oneFOneB, pipelineTable, simulate, validate } from '../src/parallel/pipeline_schedule.js';
import type { Action, PipelineTable, ScheduleKind } from '../src/parallel/pipeline_schedule.js';

const P = [1, 2, 3, 4, 5, 6, 7, 8];
/** The microbatch counts tried for p stages: p, p + 1, 2p, 3p + 1, and for GPipe also fewer than p. */
const microbatches = (kind: ScheduleKind, p: number): number[] =>
  [...new Set([...(kind === 'gpipe' ? [1, p - 1].filter((m) => m >= 1 && m < p) : []), p, p + 1, 2 * p, 3 * p + 1])];

/** Every table the grid tests: gpipe and 1f1b on the microbatch counts above, interleaved on m in {p, 2p, 3p} for v in {2, 3}. */
function grid(): { kind: ScheduleKind; p: number; m: number; v: number }[] {
  const out: { kind: ScheduleKind; p: number; m: number; v: number }[] = [];
  for (const p of P) {
    for (const kind of ['gpipe', '1f1b'] as const) for (const m of microbatches(kind, p)) out.push({ kind, p, m, v: 1 });
    for (const v of [2, 3]) for (const m of [p, 2 * p, 3 * p]) out.push({ kind: 'interleaved', p, m, v });
  }
  return out;
}

/** Megatron's interleaved warm-up forwards, capped at m v: the peak held is one more (the steady state's forward before its backward), again capped. */
const interleavedPeak = (p: number, m: number, v: number, r: number): number => Math.min((p - r - 1) * 2 + (v - 1) * p + 1, m * v);

const short = (a: Action): string => ('peer' in a ? `${a.op === 'send' ? 's' : 'r'}${a.what[0]!.toUpperCase()}${a.mb}` : `${a.op[0]!.toUpperCase()}${a.mb}`);
const computes = (t: PipelineTable, r: number): string[] =>
  t.actions[r]!.filter((a) => !('peer' in a)).map((a) => `${a.op[0]!.toUpperCase()}${a.mb}.${a.chunk}`);

test('every table of the grid validates: dependencies met, no deadlock, each (mb, piece) forward and backward once, each send received once', () => {
  const cases = grid();
  // 44 gpipe (13 with m < p), 31 1f1b (p = 1 repeats m = 2), 48 interleaved.
  assert.equal(cases.length, 123);
  for (const { kind, p, m, v } of cases) {
    const t = pipelineTable(kind, p, m, v);
    const sim = validate(t);
    const all = t.actions.flat();
    const name = `${kind} p=${p} m=${m} v=${v}`;
    // Counted independently of the simulator: one forward and one backward per (mb, piece), and one
    // activation and one gradient transfer, each a send and a recv, per boundary between pieces.
    assert.equal(all.filter((a) => a.op === 'forward').length, m * v * p, name);
    assert.equal(all.filter((a) => a.op === 'backward').length, m * v * p, name);
    const transfers = p === 1 ? 0 : 2 * m * (v * p - 1);
    assert.equal(all.filter((a) => a.op === 'send').length, transfers, name);
    assert.equal(all.filter((a) => a.op === 'recv').length, transfers, name);
    assert.ok(t.actions.every((l, r) => l.every((a) => !('peer' in a) || a.peer !== r)), `${name}: no rank sends to itself`);
    assert.deepEqual(sim.busy, new Array(p).fill(3 * m * v), `${name}: each rank computes m v forwards (1) and backwards (2)`);
  }
});

test('in-flight microbatch-chunks per rank: GPipe m, 1F1B min(p - r, m), interleaved Megatron\'s warm-up + 1, capped at m v', () => {
  let checked = 0;
  for (const { kind, p, m, v } of grid()) {
    const { inFlight } = validate(pipelineTable(kind, p, m, v));
    const want = Array.from({ length: p }, (_, r) =>
      kind === 'gpipe' ? m : kind === '1f1b' ? Math.min(p - r, m) : interleavedPeak(p, m, v, r));
    assert.deepEqual(inFlight, want, `${kind} p=${p} m=${m} v=${v}`);
    checked++;
  }
  assert.equal(checked, 123);
  // Spelled out: 1F1B holds p on rank 0 whatever m; interleaved p=4, m=8, v=2 holds
  // 2 (4 - r - 1) + 4 + 1 = 11, 9, 7, 5, and with m = p = 4 rank 0's 11 is capped at m v = 8.
  assert.deepEqual(validate(oneFOneB(4, 13)).inFlight, [4, 3, 2, 1]);
  assert.deepEqual(validate(interleaved(4, 8, 2)).inFlight, [11, 9, 7, 5]);
  assert.deepEqual(validate(interleaved(4, 4, 2)).inFlight, [8, 8, 7, 5]);
});

// With uniform costs (forward tf, backward tb = 2 tf, free sends) every rank idles (p - 1)(tf + tb): r tf
// before its first forward, r tb after its last backward (which ends r tb before rank 0's), and
// (p - 1 - r)(tf + tb) between its forwards and the first gradient. So the makespan is
// (m + p - 1)(tf + tb) and the bubble (p - 1) / (m + p - 1), for GPipe and 1F1B alike (1F1B moves
// the idle time, it does not shorten it). Interleaved pieces are 1/v of a stage: the fill and drain are
// p - 1 chunk steps of (tf + tb) / v, the work v m of them, so the makespan is (v m + p - 1)(tf + tb) / v
// and the bubble (p - 1) / (v m + p - 1). The simulator finds these exactly for every table of the grid
// (also m = p, where rank 0 runs all its forwards first): Megatron's order has no idle time beyond fill
// and drain when m % p == 0.
test('bubble with uniform costs: (p - 1) / (m + p - 1) for GPipe and 1F1B, (p - 1) / (v m + p - 1) interleaved at 1/v cost per chunk', () => {
  let checked = 0;
  for (const { kind, p, m, v } of grid()) {
    const sim = simulate(pipelineTable(kind, p, m, v), { forward: 1 / v, backward: 2 / v, send: 0 });
    const steps = v * m + p - 1;  // v = 1: m + p - 1
    assert.ok(Math.abs(sim.makespan - (steps * 3) / v) < 1e-12, `${kind} p=${p} m=${m} v=${v}: makespan ${sim.makespan}`);
    assert.ok(Math.abs(sim.bubble - (p - 1) / steps) < 1e-12, `${kind} p=${p} m=${m} v=${v}: bubble ${sim.bubble}, expected ${(p - 1) / steps}`);
    checked++;
  }
  assert.equal(checked, 123);
  // Two values by hand: 1F1B p=4 m=8: 3 / 11; interleaved p=4 m=8 v=2: 3 / 19, half the idle time.
  assert.ok(Math.abs(validate(oneFOneB(4, 8)).bubble - 3 / 11) < 1e-12);
  assert.ok(Math.abs(simulate(interleaved(4, 8, 2), { forward: 0.5, backward: 1 }).bubble - 3 / 19) < 1e-12);
});

// A send's latency d: GPipe p=4 m=4's critical path is mb 3's forward up the 3 hops, then mb 0..3's
// backwards down them: 21 + 6d. 1F1B's is longer: mb 0 goes up 3 hops and its gradient comes down 2 to
// rank 1, which runs that backward before forward 3 (its 1F1B order), then mb 3 goes up 2 hops and its
// gradient down 3: 10 hops, 21 + 10d. The simulator finds both, and 1F1B p=2 m=2 in full by hand.
test('a send\'s latency: each hop on the critical path costs it (GPipe 6 hops, 1F1B 10, for p=4 m=4)', () => {
  const d = 0.5;
  assert.equal(validate(gpipe(4, 4)).makespan, 21);
  assert.equal(validate(oneFOneB(4, 4)).makespan, 21);  // (4 + 4 - 1) * 3
  assert.equal(simulate(gpipe(4, 4), { send: d }).makespan, 21 + 6 * d);
  const slow = simulate(oneFOneB(4, 4), { send: d });
  assert.equal(slow.makespan, 21 + 10 * d);
  assert.deepEqual(slow.order.map((o) => o[0]!.start), [0, 1.5, 3, 4.5], 'rank r starts after r forwards and r hops');
  const span = (o: { op: string; mb: number; start: number; end: number }) => `${o.op[0]!.toUpperCase()}${o.mb} ${o.start}-${o.end}`;
  assert.deepEqual(simulate(oneFOneB(2, 2), { send: d }).order.map((o) => o.map(span)), [
    ['F0 0-1', 'F1 1-2', 'B0 5-7', 'B1 8-10'],        // B0 waits for 4 + 2d, B1 for rank 1's B1 + d
    ['F0 1.5-2.5', 'B0 2.5-4.5', 'F1 4.5-5.5', 'B1 5.5-7.5'],
  ]);
});

test('1F1B is Megatron\'s without interleaving: p=2 m=2 in full, and rank 1 of p=4 m=6 by its computes', () => {
  const t = oneFOneB(2, 2);
  assert.deepEqual(t.actions.map((l) => l.map(short)), [
    ['F0', 'sA0', 'F1', 'sA1', 'rG0', 'B0', 'rG1', 'B1'],
    ['rA0', 'F0', 'B0', 'sG0', 'rA1', 'F1', 'B1', 'sG1'],
  ]);
  // Warm-up min(4 - 1 - 1, 6) = 2 forwards, 4 forward-backward pairs, 2 cool-down backwards.
  assert.deepEqual(computes(oneFOneB(4, 6), 1), ['F0.0', 'F1.0', 'F2.0', 'B0.0', 'F3.0', 'B1.0', 'F4.0', 'B2.0', 'F5.0', 'B3.0', 'B4.0', 'B5.0']);
  assert.deepEqual(computes(gpipe(2, 3), 0), ['F0.0', 'F1.0', 'F2.0', 'B0.0', 'B1.0', 'B2.0']);
});

test('interleaved is Megatron\'s order: groups of p microbatches through chunk 0 then chunk 1, backwards through the chunks reversed', () => {
  const t = interleaved(2, 4, 2);
  // Rank 0: warm-up 2 (2 - 0 - 1) + (2 - 1) 2 = 4 forwards; rank 1: 2.
  assert.deepEqual(computes(t, 0), [
    'F0.0', 'F1.0', 'F0.1', 'F1.1',
    'F2.0', 'B0.1', 'F3.0', 'B1.1', 'F2.1', 'B0.0', 'F3.1', 'B1.0',
    'B2.1', 'B3.1', 'B2.0', 'B3.0',
  ]);
  assert.deepEqual(computes(t, 1), [
    'F0.0', 'F1.0',
    'F0.1', 'B0.1', 'F1.1', 'B1.1', 'F2.0', 'B0.0', 'F3.0', 'B1.0', 'F2.1', 'B2.1', 'F3.1', 'B3.1',
    'B2.0', 'B3.0',
  ]);
  // Rank 1's chunk 0 (piece 1) feeds rank 0's chunk 1 (piece 2), whose gradient comes back.
  assert.deepEqual(t.actions[1]!.slice(0, 3).map(describeAction), ['recv activation mb 0 chunk 0 from rank 0', 'forward mb 0 chunk 0', 'send activation mb 0 chunk 0 to rank 0']);
  assert.ok(t.actions[0]!.some((a) => describeAction(a) === 'recv activation mb 0 chunk 1 from rank 1'));
  assert.ok(t.actions[0]!.some((a) => describeAction(a) === 'send gradient mb 0 chunk 1 to rank 1'));
  // On one rank the pieces pass values locally: no transfers, and chunks run in Megatron's order.
  const one = interleaved(1, 2, 3);
  assert.deepEqual(computes(one, 0), ['F0.0', 'F0.1', 'F0.2', 'B0.2', 'F1.0', 'B0.1', 'F1.1', 'B0.0', 'F1.2', 'B1.2', 'B1.1', 'B1.0']);
  assert.equal(validate(one).bubble, 0);
});

/** A copy of `t` with rank r's actions replaced by `edit` of them. */
function edited(t: PipelineTable, r: number, edit: (l: Action[]) => Action[]): PipelineTable {
  return { ...t, actions: t.actions.map((l, q) => (q === r ? edit([...l]) : l)) };
}
const move = (from: number, to: number) => (l: Action[]): Action[] => { l.splice(to, 0, ...l.splice(from, 1)); return l; };
const drop = (i: number) => (l: Action[]): Action[] => { l.splice(i, 1); return l; };

test('broken tables are refused, naming the rank and the action', () => {
  const t = oneFOneB(2, 2);  // rank 0: F0 sA0 F1 sA1 rG0 B0 rG1 B1; rank 1: rA0 F0 B0 sG0 rA1 F1 B1 sG1
  assert.throws(() => validate(edited(t, 0, move(4, 0))), {
    message: 'deadlock: rank 0 waits at action 0 (recv gradient mb 0 chunk 0 from rank 1) for rank 1\'s action 3, not yet run; ' +
      'rank 1 waits at action 0 (recv activation mb 0 chunk 0 from rank 0) for rank 0\'s action 2, not yet run; cycle: rank 0 -> rank 1 -> rank 0',
  });
  assert.throws(() => validate(edited(t, 1, move(2, 1))), {
    message: 'rank 1, action 1 (backward mb 0 chunk 0, piece 1): runs before the forward of mb 0 on piece 1 (its saved activations)',
  });
  assert.throws(() => validate(edited(t, 0, drop(3))), { message: 'rank 1, action 4 (recv activation mb 1 chunk 0 from rank 0): no matching send on rank 0' });
  assert.throws(() => validate(edited(t, 1, drop(4))), { message: 'rank 0, action 3 (send activation mb 1 chunk 0 to rank 1): no matching recv on rank 1' });
  assert.throws(() => validate(edited(t, 0, move(1, 0))), { message: 'rank 0, action 0 (send activation mb 0 chunk 0 to rank 1, piece 0): sends the activation before the forward of mb 0 that produces it' });
  assert.throws(() => validate(edited(t, 0, (l) => [...l, { op: 'forward', mb: 0, chunk: 0 }])), { message: 'rank 0, action 8 (forward mb 0 chunk 0): appears twice on the rank (first at action 0)' });
  assert.throws(() => validate(edited(t, 0, drop(7))), { message: 'rank 0: the backward of mb 1 chunk 0 (piece 0) is missing from its actions' });
  // Rank 1's first forward with its recv (and rank 0's send) removed: its input is nowhere.
  const noInput = edited(edited(t, 0, drop(1)), 1, drop(0));
  assert.throws(() => validate(noInput), { message: 'rank 1, action 0 (forward mb 0 chunk 0, piece 1): its input activation (piece 0\'s output for mb 0) was neither computed on this rank nor received before it' });
  // A backward whose gradient recv was moved after it.
  assert.throws(() => validate(edited(t, 0, move(4, 5))), { message: /^rank 0, action 4 \(backward mb 0 chunk 0, piece 0\): the gradient of its output/ });
  // Wrong peers, and a send to oneself.
  const toSelf: Action = { op: 'send', what: 'activation', mb: 0, chunk: 0, peer: 0 };
  assert.throws(() => validate(edited(gpipe(1, 1), 0, (l) => [l[0]!, toSelf, l[1]!])), { message: /^rank 0, action 1 \(send activation mb 0 chunk 0 to rank 0\): a rank never sends to itself/ });
  const wrongPeer = edited(gpipe(3, 1), 0, (l) => l.map((a) => ('peer' in a ? { ...a, peer: 2 } : a)));
  assert.throws(() => validate(wrongPeer), { message: 'rank 0, action 1 (send activation mb 0 chunk 0 to rank 2): piece 1 is on rank 1, not rank 2' });
});

test('a deadlock among three ranks reports the cycle and the rank blocked behind it', () => {
  // GPipe p=3 m=1, rank 0's gradient recv moved first: ranks 0 and 1 wait on each other, rank 2 on rank 1.
  const t = edited(gpipe(3, 1), 0, move(2, 0));
  assert.throws(() => validate(t), {
    message: 'deadlock: rank 0 waits at action 0 (recv gradient mb 0 chunk 0 from rank 1) for rank 1\'s action 5, not yet run; ' +
      'rank 1 waits at action 0 (recv activation mb 0 chunk 0 from rank 0) for rank 0\'s action 2, not yet run; cycle: rank 0 -> rank 1 -> rank 0; ' +
      'also blocked: rank 2 waits at action 0 (recv activation mb 0 chunk 0 from rank 1) for rank 1\'s action 2, not yet run',
  });
});

test('bad shapes are refused with the numbers', () => {
  assert.throws(() => pipelineTable('1f1b', 4, 3), { message: 'microbatches (3) must be at least the pipeline stages (4) for 1f1b' });
  assert.throws(() => pipelineTable('interleaved', 4, 3, 2), { message: 'microbatches (3) must be at least the pipeline stages (4) for interleaved' });
  assert.throws(() => interleaved(4, 6, 2), { message: 'interleaved needs the microbatches (6) to be a multiple of the pipeline stages (4): microbatches run in groups of 4' });
  assert.throws(() => interleaved(2, 4, 1), { message: 'interleaved needs at least 2 chunks per rank, got 1; 1f1b is the schedule for one' });
  assert.throws(() => pipelineTable('gpipe', 2, 4, 2), { message: 'gpipe runs one chunk per rank, got chunks 2; interleaved runs several' });
  assert.throws(() => pipelineTable('1f1b', 2, 4, 2), { message: '1f1b runs one chunk per rank, got chunks 2; interleaved runs several' });
  assert.throws(() => gpipe(1.5, 2), { message: 'gpipe: pipeline stages must be a positive integer, got 1.5' });
  assert.throws(() => oneFOneB(2, 0), { message: '1f1b: microbatches must be a positive integer, got 0' });
  assert.throws(() => interleaved(2, 4, 2.5), { message: 'interleaved: chunks must be a positive integer, got 2.5' });
  assert.throws(() => pipelineTable('zb' as ScheduleKind, 2, 4), { message: 'unknown pipeline schedule \'zb\': expected gpipe, 1f1b or interleaved' });
  assert.throws(() => simulate(gpipe(2, 2), { forward: -1 }), { message: 'simulate: cost.forward must be a finite number >= 0, got -1' });
  // GPipe takes fewer microbatches than stages.
  assert.equal(validate(gpipe(4, 2)).makespan, (2 + 4 - 1) * 3);
});

test('simulate replays each action\'s own cost (cost.of): GPipe p=2 m=2 with a slower forward on stage 1', () => {
  // Stage 0: F0 [0,1] F1 [1,2], B0 waits for stage 1's B0 [5,7]: [7,9], B1 [9,11]. Stage 1: F0 [1,3] F1 [3,5] B0 [5,7] B1 [7,9].
  const sim = simulate(gpipe(2, 2), { of: (r, op) => (op === 'forward' ? (r === 1 ? 2 : 1) : 2) });
  assert.equal(sim.makespan, 11);
  assert.deepEqual(sim.busy, [6, 8]);
  assert.ok(Math.abs(sim.bubble - 8 / 22) < 1e-12);
  assert.throws(() => simulate(gpipe(2, 2), { of: () => Number.NaN }), /the cost of rank 0, action 0 \(forward mb 0 chunk 0, piece 0\) must be a finite number >= 0, got NaN/);
});
