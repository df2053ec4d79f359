/**
 * ZeRO's partition of the flat parameter vector over the data-parallel ranks (Rajbhandari et al.,
 * "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models"; DeepSpeed's stage 1/2
 * layout). The vector is cut into segments (DDP's gradient buckets, or the whole vector); each
 * segment [lo, hi) is split into N equal slices of c = ceil((hi - lo) / N) elements, and rank r
 * owns slice r of every segment (the last ranks' slices are shorter or empty where c does not
 * divide the segment). Per-bucket slices are what makes stage 2 work: a bucket's reduce-scatter
 * hands every rank exactly its slice as soon as the backward has produced the bucket.
 *
 * A rank's shard is its slices laid end to end, each at a stride of c (`ranges[k].at`): one
 * contiguous vector (the `layout` of one 1-D slot per segment) holds its optimizer moments and, at
 * stage 2, its reduced gradients. The optimizer updates the rank's slices of the parameters in
 * place (weft's parameters are float32, so they are the master weights; `ShardSpec` in
 * optim/common.ts), and the slices are then all-gathered back into every rank's parameters.
 *
 * @example
 *   const z = new ZeroShard(layout, makeBuckets(layout.slots, 25 * 2 ** 20), { rank: dp.rank, size: dp.size });
 *   const opt = new AdamW(params, { lr, shard: z });   // moments over the shard
 *   await opt.step(shardGrads, lr, { norm });          // this rank's slices updated in place
 *   await z.allGatherInPlace(dp, params.data);         // every rank's slices -> full parameters
 */
import type { CommArray, ProcessGroup, Work } from '../comm/process_group.js';
import { FlatBuffer, Layout } from '../runtime/flat.js';

/** One segment of the flat vector, from this rank's point of view. */
export interface ZeroRange {
  /** The segment [segLo, segHi) of the flat vector and its slice length c. */
  readonly segLo: number;
  readonly segHi: number;
  readonly c: number;
  /** This rank's slice of it, [lo, hi) in the flat vector (empty when lo = hi). */
  readonly lo: number;
  readonly hi: number;
  /** Where the slice starts in the shard (a stride of c per segment). */
  readonly at: number;
}

/**
 * All-gathers in flight at once in `allGatherInPlace`: two keep the link busy (one completes while
 * the next is sent) and bound the receive buffers to two segments'.
 */
export const GATHER_WINDOW = 2;

export class ZeroShard {
  readonly ranges: readonly ZeroRange[];
  /** The shard's layout: one 1-D slot of c elements per segment. */
  readonly layout: Layout;

  /** `axis`: this rank's index and the size of the data-parallel axis the shard is over. */
  constructor(readonly full: Layout, segments: readonly { lo: number; hi: number }[], readonly axis: { rank: number; size: number }) {
    const N = axis.size;
    let at = 0;
    let covered = 0;
    this.ranges = [...segments].sort((a, b) => a.lo - b.lo).map((s) => {
      if (s.lo !== covered) throw new Error(`ZeroShard: segments must tile the flat vector; a gap or overlap at ${covered}, next segment starts at ${s.lo}`);
      covered = s.hi;
      // Slices are whole multiples of 16 elements, as every flat-buffer slot is, so a rank's slice
      // of the parameters is a range the optimizer can update in place.
      const c = Math.ceil((s.hi - s.lo) / N / 16) * 16;
      const lo = Math.min(s.lo + axis.rank * c, s.hi);
      const r = { segLo: s.lo, segHi: s.hi, c, lo, hi: Math.min(lo + c, s.hi), at };
      at += c;
      return r;
    });
    if (covered !== full.size) throw new Error(`ZeroShard: segments cover ${covered} of the layout's ${full.size} elements`);
    this.layout = new Layout(this.ranges.map((r, k) => ({ name: `zero.segment${k}`, shape: [r.c] })));
  }

  /** The index of the segment holding element `offset` of the full vector. */
  segmentOf(offset: number): number {
    const k = this.ranges.findIndex((r) => offset >= r.segLo && offset < r.segHi);
    if (k < 0) throw new Error(`ZeroShard: element ${offset} is outside the ${this.full.size}-element vector`);
    return k;
  }

  /** A zeroed buffer over the shard layout, held under `label`. */
  zeros(label: string): FlatBuffer<Float32Array> { return FlatBuffer.zeros(this.layout, label); }

  /** Copies this rank's slices of a full flat vector into a shard vector. */
  take(full: Float32Array, shard: Float32Array): void {
    for (const r of this.ranges) shard.set(full.subarray(r.lo, r.hi), r.at);
  }

  /**
   * Every rank's shard into `out`, the full flat vector (an all-gather per segment; each rank's
   * slice is sent at the stride c, and the padding past a segment's end is dropped).
   */
  async allGather(group: ProcessGroup, shard: Float32Array, out: Float32Array): Promise<void> {
    this.check(group);
    const works = this.ranges.map((r, k) => ({ r, segment: this.gatherSegment(group, k, shard) }));
    for (const { r, segment } of works) out.set(await segment, r.segLo);
  }

  /**
   * Segment k of the full vector (its segHi - segLo elements), all-gathered from every rank's shard;
   * received into `into` (at least N x c elements, e.g. a `gatherBuffer`) when given, so the
   * segment is a view of it, valid until `into` is gathered into again.
   */
  allGatherSegment(group: ProcessGroup, k: number, shard: Float32Array, into?: Float32Array): Promise<Float32Array> {
    this.check(group);
    return this.gatherSegment(group, k, shard, into);
  }

  /** The same from this rank's slice of segment k alone (its c elements: a shard kept in a file reads only that). */
  allGatherSlice(group: ProcessGroup, k: number, slice: Float32Array, into?: Float32Array): Promise<Float32Array> {
    this.check(group);
    const r = this.ranges[k]!;
    if (slice.length !== r.c) throw new Error(`ZeroShard: segment ${k}'s slice has ${r.c} elements per rank, got ${slice.length}`);
    return this.gatherSlice(group, k, slice, into);
  }

  /** Issues segment k's all-gather now (so several issued in order stay in order on every rank); resolves with the segment. */
  private gatherSegment(group: ProcessGroup, k: number, shard: Float32Array, into?: Float32Array): Promise<Float32Array> {
    const r = this.ranges[k]!;
    return this.gatherSlice(group, k, shard.subarray(r.at, r.at + r.c), into);
  }

  private gatherSlice(group: ProcessGroup, k: number, slice: Float32Array, into?: Float32Array): Promise<Float32Array> {
    const r = this.ranges[k]!;
    const buf = into ? into.subarray(0, group.size * r.c) : new Float32Array(group.size * r.c);
    const w: Work = group.allGather(slice as CommArray, buf as CommArray);
    return w.wait().then(() => buf.subarray(0, r.segHi - r.segLo));
  }

  /**
   * Every rank's slices of `full` gathered into `full` itself (the parameters after each rank
   * updated its own slices in place), segment by segment with `GATHER_WINDOW` all-gathers in
   * flight. This rank's slice is sent from `full` itself (copied only where it is shorter than c),
   * and the window's receive buffers are the reused `gatherBuffer`s: before, the whole vector and
   * a shard were allocated for every gather (145 MiB a step on a d512 x 8 GPT's 2 ranks, garbage
   * right after; the gather set the ranks' peak RSS at stage 1, by 40-150 MiB from run to run).
   */
  async allGatherInPlace(group: ProcessGroup, full: Float32Array): Promise<void> {
    this.check(group);
    const issue = (r: ZeroRange, k: number): { r: ZeroRange; done: Promise<Float32Array> } => {
      let send = full.subarray(r.lo, r.hi);
      if (send.length !== r.c) { const padded = new Float32Array(r.c); padded.set(send); send = padded; }
      // Buffer k % window: the gather that used it last (k - window) has landed (see the loop below).
      const recv = this.gatherBuffer(k % GATHER_WINDOW).subarray(0, group.size * r.c);
      const w = group.allGather(send as CommArray, recv as CommArray);
      return { r, done: w.wait().then(() => recv.subarray(0, r.segHi - r.segLo)) };
    };
    // Segment k lands in [segLo, segHi) once its gather completed; the gathers still in flight send
    // from other segments' ranges, so nothing they read is overwritten.
    const inflight: { r: ZeroRange; done: Promise<Float32Array> }[] = [];
    for (const [k, r] of this.ranges.entries()) {
      inflight.push(issue(r, k));
      if (inflight.length === GATHER_WINDOW) { const g = inflight.shift()!; full.set(await g.done, g.r.segLo); }
    }
    for (const g of inflight) full.set(await g.done, g.r.segLo);
  }

  /**
   * Segment k's send buffer, N x c elements: fill its first segHi - segLo with the segment and hand
   * it to `reduceScatter`, which then sends it as it is (no copy). Every segment's is a region of
   * one vector of N x S elements, made on first use and reused by every later step (a step's
   * reduce-scatters all complete before the next writes it; the padding is never written, so it
   * stays zero): stage 2's gradients are copied there each step instead of into fresh arrays.
   */
  sendBuffer(k: number): Float32Array {
    const N = this.axis.size;
    const r = this.ranges[k]!;
    this.sends ??= new Float32Array(N * this.layout.size);
    return this.sends.subarray(N * r.at, N * (r.at + r.c));
  }

  /**
   * Receive buffer i (0 <= i < GATHER_WINDOW) of the all-gathers, N x the largest c elements, made
   * on first use and reused by every later gather: the parameters' gather after each update and a
   * checkpoint's segments leave no gradient-sized garbage behind.
   */
  gatherBuffer(i: number): Float32Array {
    if (!(i >= 0 && i < GATHER_WINDOW)) throw new Error(`ZeroShard.gatherBuffer: index ${i} is outside the window of ${GATHER_WINDOW}`);
    return (this.gathers[i] ??= new Float32Array(this.axis.size * Math.max(0, ...this.ranges.map((r) => r.c))));
  }

  private sends: Float32Array | null = null;
  private readonly gathers: Float32Array[] = [];

  /**
   * The mean over ranks of segment k's values (`segment`, its segHi - segLo elements, every rank's
   * own; or a `sendBuffer`, N x c), this rank's slice written into `out` (c elements; past the
   * segment's end, zeros). A segment shorter than N x c is copied into a padded buffer first.
   * Returns the reduce-scatter's work: `out` is final when it completes (`segment` is only read).
   */
  reduceScatter(group: ProcessGroup, k: number, segment: Float32Array, out: Float32Array): Work {
    this.check(group);
    const r = this.ranges[k]!;
    const n = group.size * r.c;
    if (segment.length !== n && segment.length !== r.segHi - r.segLo) {
      throw new Error(`ZeroShard.reduceScatter: segment ${k} has ${r.segHi - r.segLo} elements (${n} padded), got ${segment.length}`);
    }
    let send = segment;
    if (segment.length !== n) { send = new Float32Array(n); send.set(segment); }
    return group.reduceScatter(send as CommArray, out as CommArray, 'mean');
  }

  /**
   * The squares of this rank's owned gradients, summed over the data-parallel ranks (what the
   * global norm needs at stage 2, where no rank holds every gradient), in two parts: elements of
   * slots `sharded` says are split over another axis (tensor parallel: to be summed over it too)
   * and the rest.
   */
  async sumSquares(group: ProcessGroup, grads: Float32Array, sharded: (slot: string) => boolean = () => false): Promise<{ sharded: number; replicated: number }> {
    this.check(group);
    const sums = new Float64Array(2);
    for (const r of this.ranges) {
      for (const s of this.full.slots) {
        const lo = Math.max(r.lo, s.offset);
        const hi = Math.min(r.hi, s.offset + s.size);
        if (lo >= hi) continue;
        let ss = 0;
        for (let i = lo; i < hi; i++) { const g = grads[r.at + i - r.lo]!; ss += g * g; }
        sums[sharded(s.name) ? 0 : 1]! += ss;
      }
    }
    await group.allReduce(sums, 'sum').wait();
    return { sharded: sums[0]!, replicated: sums[1]! };
  }

  private check(group: ProcessGroup): void {
    if (group.size !== this.axis.size || group.rank !== this.axis.rank) {
      throw new Error(`ZeroShard: built for rank ${this.axis.rank} of ${this.axis.size}, called on rank ${group.rank} of ${group.size}`);
    }
  }
}
