/**
 * The collective algorithms of the threads backend, as generators over a group's channels (see
 * transport.ts). Every reduction combines contributions in an order fixed by the schedule, never
 * by arrival, so results are identical on every rank and from run to run.
 *
 * Mean is the sum divided by the group size once per element at the end (`x / n` in the element
 * type: int32 truncates toward zero), in the same pass as the last reduction of that element.
 */
import type { CommArray } from '../process_group.js';
import { binomialTree, blockRange, mod, recursiveDoubling, ringAllGatherStep, ringReduceScatterStep } from '../algorithms.js';
import type { Channel } from './layout.js';
import { COPY, MAX, pump, SUM, Xfer } from './transport.js';
import type { Gen, PumpHost } from './transport.js';

export interface CollHost extends PumpHost {
  readonly size: number;
  readonly rank: number;
  collTo(peer: number): Channel;
  collFrom(peer: number): Channel;
}

/** REDUCE_OPS code -> receive mode: mean reduces as a sum and divides at the end. */
const modeOf = (reduce: number): number => (reduce === 3 ? MAX : SUM);
const MEAN = 2;

const send = (g: CollHost, peer: number, arr: CommArray, start: number, count: number, limit: (() => number) | null = null): Xfer =>
  new Xfer(true, g.collTo(peer), peer, arr, start, count, COPY, limit);
const recv = (g: CollHost, peer: number, arr: CommArray, start: number, count: number, mode = COPY, limit: (() => number) | null = null, divisor = 0): Xfer =>
  new Xfer(false, g.collFrom(peer), peer, arr, start, count, mode, limit, divisor);

/**
 * Ring reduce-scatter over blocks `blockRange(m, n, b)`; leaves the reduction of block r on rank r
 * (n > 1). The last step's receive is block r's last reduction, so a mean divides there.
 */
function* ringReduceScatterBlocks(g: CollHost, data: CommArray, reduce: number): Gen {
  const { size: n, rank: r } = g;
  const m = data.length;
  for (let s = 0; s < n - 1; s++) {
    const { send: sb, recv: rb } = ringReduceScatterStep(r, n, s);
    const [s0, s1] = blockRange(m, n, sb);
    const [r0, r1] = blockRange(m, n, rb);
    const divisor = reduce === MEAN && s === n - 2 ? n : 0;
    yield* pump(g, [send(g, mod(r + 1, n), data, s0, s1 - s0), recv(g, mod(r - 1, n), data, r0, r1 - r0, modeOf(reduce), null, divisor)]);
  }
}

function* ringAllGatherBlocks(g: CollHost, data: CommArray): Gen {
  const { size: n, rank: r } = g;
  const m = data.length;
  for (let s = 0; s < n - 1; s++) {
    const { send: sb, recv: rb } = ringAllGatherStep(r, n, s);
    const [s0, s1] = blockRange(m, n, sb);
    const [r0, r1] = blockRange(m, n, rb);
    yield* pump(g, [send(g, mod(r + 1, n), data, s0, s1 - s0), recv(g, mod(r - 1, n), data, r0, r1 - r0)]);
  }
}

/** Bandwidth-optimal: each rank moves 2(n-1)/n of the vector, in 2(n-1) neighbour steps. */
export function* ringAllReduce(g: CollHost, data: CommArray, reduce: number): Gen {
  if (g.size === 1) return;
  yield* ringReduceScatterBlocks(g, data, reduce);
  yield* ringAllGatherBlocks(g, data);
}

/** Latency-optimised: ceil(log2 n) (+2 when n is not a power of two) exchanges of the whole vector. */
export function* recursiveDoublingAllReduce(g: CollHost, data: CommArray, reduce: number): Gen {
  const m = data.length;
  const plan = recursiveDoubling(g.rank, g.size);
  if (plan.foldTo >= 0) {
    yield* pump(g, [send(g, plan.foldTo, data, 0, m)]);
    yield* pump(g, [recv(g, plan.foldTo, data, 0, m)]);
    return;
  }
  const parts = plan.partners;
  // A mean divides in its last reduction (the last partner's, else the fold's), in the same pass.
  const divisor = reduce === MEAN ? g.size : 0;
  if (plan.foldFrom >= 0) yield* pump(g, [recv(g, plan.foldFrom, data, 0, m, modeOf(reduce), null, parts.length === 0 ? divisor : 0)]);
  for (const [i, p] of parts.entries()) {
    // In place: a chunk is reduced only after this rank's own copy of it has been sent.
    const out = send(g, p, data, 0, m);
    yield* pump(g, [out, recv(g, p, data, 0, m, modeOf(reduce), () => out.done, i === parts.length - 1 ? divisor : 0)]);
  }
  if (plan.foldFrom >= 0) yield* pump(g, [send(g, plan.foldFrom, data, 0, m)]);
}

/** Binomial tree; a rank forwards each chunk to its children as soon as it has arrived. */
export function* treeBroadcast(g: CollHost, data: CommArray, root: number): Gen {
  if (g.size === 1) return;
  const { parent, children } = binomialTree(g.rank, g.size, root);
  const m = data.length;
  const up = parent >= 0 ? recv(g, parent, data, 0, m) : null;
  const have = up === null ? null : (): number => up.done;
  yield* pump(g, [...(up === null ? [] : [up]), ...children.map((c) => send(g, c, data, 0, m, have))]);
}

/** Binomial tree toward `root`; children are reduced in a fixed order, chunk by chunk, then passed up. */
export function* treeReduce(g: CollHost, data: CommArray, root: number, reduce: number): Gen {
  if (g.size === 1) return;
  const { parent, children } = binomialTree(g.rank, g.size, root);
  const m = data.length;
  const ins: Xfer[] = [];
  // The root's last child completes the reduction: a mean divides there, in the same pass.
  const divisor = parent < 0 && reduce === MEAN ? g.size : 0;
  for (const [i, c] of children.entries()) {
    const prev = ins.at(-1);
    ins.push(recv(g, c, data, 0, m, modeOf(reduce), prev === undefined ? null : () => prev.done, i === children.length - 1 ? divisor : 0));
  }
  const last = ins.at(-1);
  const up = parent >= 0 ? [send(g, parent, data, 0, m, last === undefined ? null : () => last.done)] : [];
  yield* pump(g, [...ins, ...up]);
}

/** `out` holds size blocks of k; this rank's block is already in place. */
export function* ringAllGather(g: CollHost, out: CommArray): Gen {
  if (g.size > 1) yield* ringAllGatherBlocks(g, out);
}

/** `data` holds size blocks of k; leaves the reduction of block r in place on rank r. */
export function* ringReduceScatter(g: CollHost, data: CommArray, reduce: number): Gen {
  if (g.size > 1) yield* ringReduceScatterBlocks(g, data, reduce);
}

/** Every rank sends its block straight to root, which receives them all at once. */
export function* directGather(g: CollHost, buf: CommArray, root: number, k: number): Gen {
  if (g.rank !== root) { yield* pump(g, [send(g, root, buf, 0, k)]); return; }
  const xs: Xfer[] = [];
  for (let j = 0; j < g.size; j++) if (j !== root) xs.push(recv(g, j, buf, j * k, k));
  yield* pump(g, xs);
}

export function* directScatter(g: CollHost, buf: CommArray, root: number, k: number): Gen {
  if (g.rank !== root) { yield* pump(g, [recv(g, root, buf, 0, k)]); return; }
  const xs: Xfer[] = [];
  for (let j = 0; j < g.size; j++) if (j !== root) xs.push(send(g, j, buf, j * k, k));
  yield* pump(g, xs);
}

/** All pairs at once: block j of `input` goes to rank j, block i of `out` comes from rank i. */
export function* pairwiseAllToAllV(g: CollHost, input: CommArray, sendCounts: readonly number[], out: CommArray, recvCounts: readonly number[]): Gen {
  const xs: Xfer[] = [];
  let so = 0;
  let ro = 0;
  for (let j = 0; j < g.size; j++) {
    const sc = sendCounts[j]!;
    const rc = recvCounts[j]!;
    if (j === g.rank) (out as Float64Array).set((input as Float64Array).subarray(so, so + sc), ro);
    else xs.push(send(g, j, input, so, sc), recv(g, j, out, ro, rc));
    so += sc;
    ro += rc;
  }
  yield* pump(g, xs);
}
