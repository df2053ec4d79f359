/**
 * A process group as a comm thread sees it: the shared block (headers and channels), the queues of
 * its operations, and the collective entry point: publish this rank's header, wait for every
 * peer's, check that all agree, run the algorithm.
 */
import type { CommArray } from '../process_group.js';
import { directGather, directScatter, pairwiseAllToAllV, recursiveDoublingAllReduce, ringAllGather, ringAllReduce, ringReduceScatter, treeBroadcast, treeReduce } from './collectives.js';
import type { CollHost } from './collectives.js';
import { ALGORITHMS, Channel, DTYPES, groupGeometry, HDR, opCode, OPS, REDUCE_OPS, typedView } from './layout.js';
import type { Control, GroupGeometry } from './layout.js';
import type { Inbox, RecvEntry } from './p2p.js';
import type { CollRequest } from './protocol.js';
import { copyInto, divide, reduceInto } from './transport.js';
import type { Gen } from './transport.js';

/** Header disagreement: fails the operation on every rank alike and leaves the group usable. */
export class Mismatch extends Error {}

/** What a group needs from its engine: the progress counter and the doorbells. */
export interface EngineHost { work: number; readonly control: Control }

/**
 * One operation on the comm thread: its generator, where it queues, when it last moved. `label` is
 * "allReduce#7" or "send#2", `desc` the longer phrase errors use; `seq` is a collective's sequence
 * number (0 for point-to-point), `peer` a point-to-point operation's peer (-1 for collectives).
 */
export class Task {
  lastProgress = performance.now();
  waitingOn = -1;
  constructor(readonly id: number, readonly label: string, readonly desc: string, readonly group: Group, readonly gen: Gen,
    readonly queue: Task[] | null, readonly seq: number, readonly peer: number,
    readonly recv: { src: number; entry: RecvEntry } | null = null) {}
}

export class Group implements CollHost {
  readonly size: number;
  readonly rank: number;
  readonly geo: GroupGeometry;
  readonly i32: Int32Array;
  readonly collQueue: Task[] = [];
  readonly sendQueues: Task[][] = [];
  readonly inbox: Inbox[] = [];
  readonly tasks = new Set<Task>();
  private readonly chans: Channel[][][] = [];
  broken: string | null = null;

  constructor(readonly eng: EngineHost, readonly gid: number, readonly name: string, readonly sab: SharedArrayBuffer,
    readonly members: readonly number[], rank: number, regionBytes: number) {
    this.size = members.length;
    this.rank = rank;
    this.geo = groupGeometry(this.size, regionBytes);
    if (sab.byteLength !== this.geo.bytes) throw new Error(`group '${name}': shared block has ${sab.byteLength} bytes, its layout needs ${this.geo.bytes}`);
    this.i32 = new Int32Array(sab);
    for (let kind = 0; kind < 2; kind++) {
      const slotBytes = kind === 0 ? this.geo.collSlotBytes : this.geo.p2pSlotBytes;
      const to: Channel[] = [];
      const from: Channel[] = [];
      for (let p = 0; p < this.size; p++) {
        const mk = (src: number, dst: number): Channel => new Channel(this.i32, this.geo.ctlIndex(kind, src, dst), sab, this.geo.dataOffset(kind, src, dst), this.geo.slots, slotBytes);
        to.push(p === rank ? (null as unknown as Channel) : mk(rank, p));
        from.push(p === rank ? (null as unknown as Channel) : mk(p, rank));
      }
      this.chans.push([to, from]);
    }
    for (let p = 0; p < this.size; p++) {
      this.sendQueues.push([]);
      this.inbox.push({ moved: 0, posted: [], unexpected: [], cur: null });
    }
  }

  get work(): number { return this.eng.work; }
  set work(v: number) { this.eng.work = v; }
  notify(peer: number): void { this.eng.control.ring(this.members[peer]!); }
  collTo(p: number): Channel { return this.chans[0]![0]![p]!; }
  collFrom(p: number): Channel { return this.chans[0]![1]![p]!; }
  p2pTo(p: number): Channel { return this.chans[1]![0]![p]!; }
  p2pFrom(p: number): Channel { return this.chans[1]![1]![p]!; }

  /** "rank 2", or "rank 2 (world 5)" in a sub-group. */
  who(r: number): string { return this.gid === 0 ? `rank ${r}` : `rank ${r} (world ${this.members[r]})`; }

  headerBase(r: number, seq: number): number { return (r * 2 + (seq & 1)) * this.geo.headerInts; }

  /** The inline data area of rank r's header slot for `seq`. */
  inlineData(r: number, seq: number, dtype: number, count: number): CommArray {
    return typedView(dtype, this.sab, (this.headerBase(r, seq) + this.geo.inlineWord) * 4, count);
  }
}

/** ALGORITHMS code of the inline all-reduce. */
const INLINE = 3;

function checkHeaders(g: Group, seq: number): string | null {
  const h = g.i32;
  const at = (r: number, k: number): number => h[g.headerBase(r, seq) + k]!;
  const A = g.who(0);
  for (let j = 1; j < g.size; j++) {
    const B = g.who(j);
    if (at(0, 1) !== at(j, 1)) return `collective #${seq}: ${A} called ${OPS[at(0, 1)]}, ${B} called ${OPS[at(j, 1)]}`;
    const label = `${OPS[at(0, 1)]}#${seq}`;
    if (at(0, 3) !== at(j, 3)) return `${label}: ${A} has ${DTYPES[at(0, 3)]}, ${B} has ${DTYPES[at(j, 3)]}`;
    if (at(0, 2) !== at(j, 2)) return `${label}: ${A} has ${at(0, 2)} elements, ${B} has ${at(j, 2)}`;
    if (at(0, 4) !== at(j, 4)) return `${label}: ${A} has root ${at(0, 4)}, ${B} has root ${at(j, 4)}`;
    if (at(0, 5) !== at(j, 5)) return `${label}: ${A} reduces with ${REDUCE_OPS[at(0, 5)]}, ${B} with ${REDUCE_OPS[at(j, 5)]}`;
    if (at(0, 6) !== at(j, 6)) return `${label}: ${A} uses ${ALGORITHMS[at(0, 6)]}, ${B} uses ${ALGORITHMS[at(j, 6)]}`;
  }
  if (at(0, 1) === opCode('allToAllV')) {
    for (let i = 0; i < g.size; i++) {
      for (let j = 0; j < g.size; j++) {
        const sent = at(i, HDR + j);
        const expected = at(j, HDR + g.size + i);
        if (sent !== expected) return `allToAllV#${seq}: ${g.who(i)} sends ${sent} elements to ${g.who(j)}, ${g.who(j)} expects ${expected} from ${g.who(i)}`;
      }
    }
  }
  return null;
}

/** Publishes this rank's header, waits for every peer's, checks agreement, runs the algorithm. */
export function* collective(g: Group, req: CollRequest, bufs: CommArray[]): Gen {
  const h = g.i32;
  const base = g.headerBase(g.rank, req.seq);
  h[base + 1] = opCode(req.op);
  h[base + 2] = req.count;
  h[base + 3] = req.dtype;
  h[base + 4] = req.root;
  h[base + 5] = req.reduce;
  h[base + 6] = req.algo;
  const counts = req.counts ?? [];
  h[base + 7] = counts.length;
  for (let i = 0; i < counts.length; i++) h[base + HDR + i] = counts[i]!;
  const inline = req.op === 'allReduce' && req.algo === INLINE;
  if (inline) copyInto(g.inlineData(g.rank, req.seq, req.dtype, req.count), 0, bufs[0]!);
  Atomics.store(h, base, req.seq);
  g.work++;
  for (let p = 0; p < g.size; p++) if (p !== g.rank) g.notify(p);
  for (let p = 0; p < g.size; p++) {
    if (p === g.rank || Atomics.load(h, g.headerBase(p, req.seq)) === req.seq) continue;
    do yield p; while (Atomics.load(h, g.headerBase(p, req.seq)) !== req.seq);
    g.work++;
  }
  const mismatch = checkHeaders(g, req.seq);
  if (mismatch !== null) throw new Mismatch(mismatch);
  const n = g.size;
  const [a, b] = [bufs[0]!, bufs[1]!];
  if (inline) { inlineAllReduce(g, req, bufs[0]!); return; }
  switch (req.op) {
    case 'allReduce':
      yield* (req.algo === 1 ? ringAllReduce(g, a, req.reduce) : recursiveDoublingAllReduce(g, a, req.reduce));
      return;
    case 'broadcast': yield* treeBroadcast(g, a, req.root); return;
    case 'reduce': yield* treeReduce(g, a, req.root, req.reduce); return;
    case 'allGather': case 'split': yield* ringAllGather(g, a); return;
    case 'reduceScatter': yield* ringReduceScatter(g, a, req.reduce); return;
    case 'gather': yield* directGather(g, a, req.root, req.count); return;
    case 'scatter': yield* directScatter(g, a, req.root, req.count); return;
    case 'allToAll': {
      const k = req.count / n;
      yield* pairwiseAllToAllV(g, a, new Array<number>(n).fill(k), b, new Array<number>(n).fill(k));
      return;
    }
    case 'allToAllV': yield* pairwiseAllToAllV(g, a, counts.slice(0, n), b, counts.slice(n)); return;
    case 'barrier': return;
  }
}

/**
 * Every rank's vector rode in its header: reduce them in rank order (the same order, hence the
 * same result, everywhere). One synchronisation in all; for messages of a few hundred bytes.
 */
function inlineAllReduce(g: Group, req: CollRequest, buf: CommArray): void {
  copyInto(buf, 0, g.inlineData(0, req.seq, req.dtype, req.count));
  for (let r = 1; r < g.size; r++) reduceInto(buf, 0, g.inlineData(r, req.seq, req.dtype, req.count), req.count, req.reduce === 3 ? 3 : 1);
  if (req.reduce === 2) divide(buf, 0, req.count, g.size);
}
