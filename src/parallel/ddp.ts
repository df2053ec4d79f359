/**
 * Distributed data parallel (PyTorch DDP's design, on flat buffers):
 * - parameters are broadcast from rank 0 at start;
 * - gradients are packed into buckets of contiguous ranges of the flat gradient buffer, in reverse
 *   layer order (the order backward produces them), default 25 MB each;
 * - the traced forward + backward is cut into programs (a schedule whose target groups are sets of
 *   buckets, runtime/schedule.ts, the one mechanism that cuts steps); as soon as a program has
 *   produced its buckets' gradients, their all-reduces are issued and run on the communication
 *   thread while the next program computes. Every activation the later programs' backward reads
 *   crosses the cut (onnxruntime-node copies each program output), so by default the step is cut
 *   once (`programs: 'tail'`): the last program holds the backward of the layout's first eighth
 *   of the gradients (a bucket of its own), which hides every other bucket's all-reduce;
 *   `'buckets'` cuts before every bucket (PyTorch's overlap), `'none'` not at all. The tail is the
 *   default; `'auto'` is 'none' where every rank runs on this machine and their threads fill its cores
 *   (the all-reduce then takes its CPU time from the compute whether it overlaps or not, and the
 *   cut's copies are pure cost), else 'tail' (`resolveDDPPrograms`);
 * - gradients are averaged (all-reduce mean) through a communication hook, replaceable as in
 *   DDP's register_comm_hook (`fp16Hook` halves the bytes sent);
 * - `noSync` micro-steps accumulate locally and communicate nothing; the step after them
 *   all-reduces the accumulated gradients once.
 */
import { addDecoded16, encode16, fromHalf, toHalf } from '../ir/dtype.js';
import type { FlatBuffer, Slot } from '../runtime/flat.js';
import { compileSchedule } from '../runtime/schedule.js';
import type { Schedule } from '../runtime/schedule.js';
import { profiler } from '../runtime/profiler.js';
import { applyBufferUpdates } from '../nn/module.js';
import type { BoundParameters } from '../nn/module.js';
import { stepFeeds, traceStepGraph } from '../nn/step_graph.js';
import type { StepGraphOptions } from '../nn/step_graph.js';
import type { CheckpointStats } from '../autodiff/checkpoint.js';
import type { ZeroShard } from './zero.js';
import type { Feed } from '../tensor/compile.js';
import { placeholder } from '../tensor/tensor.js';
import type { Signature, Traced } from '../tensor/compile.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Value } from '../ir/graph.js';
import type { ProcessGroup, Work } from '../comm/process_group.js';
import { availableParallelism } from 'node:os';
import { settings } from '../runtime/executor.js';
import '../comm/kernels.js';
import type { CollectiveContext } from '../comm/kernels.js';

/** A contiguous range [lo, hi) of the flat gradient buffer, holding whole tensors. */
export interface Bucket { readonly index: number; readonly lo: number; readonly hi: number; readonly slots: readonly Slot[] }

/**
 * Reduces one bucket across ranks, in place, to the average over ranks. Returns the work; the
 * bucket's contents are final when it completes.
 */
export type CommHook = (pg: ProcessGroup, bucket: Float32Array, b: Bucket) => Work;

/** The default hook: all-reduce with mean. */
export const allReduceHook: CommHook = (pg, bucket) => pg.allReduce(bucket, 'mean');

export interface DDPOptions {
  /** Bucket size in bytes. Default 25 MB (PyTorch's bucket_cap_mb). */
  bucketBytes?: number;
  /**
   * How the backward is cut into programs (each cut: the activations later programs read are
   * copied out of one onnxruntime program and into the next). 'tail' (default): once, before the
   * tail bucket (the layout's first `tailFraction` of gradient bytes, which the backward produces
   * last); every other bucket's all-reduce runs during the tail's backward. 'buckets': before
   * every bucket, no tail. 'none': one program, every all-reduce after it. 'auto': `resolveDDPPrograms`.
   */
  programs?: DDPPrograms;
  /** 'tail' only: the tail bucket's share of the gradient bytes, at least (whole tensors). Default 1/8. */
  tailFraction?: number;
  hook?: CommHook;
  /**
   * The mesh axis collectives inside the step name for these ranks (SyncBatchNorm's statistics);
   * default 'dp'. The step's schedule runs them on this group.
   */
  axis?: string;
  /**
   * ZeRO stage 2: each bucket is reduce-scattered into this rank's slice of the shard gradients
   * (`grads`, over `shard.layout`; overwritten on a step, added to with `accumulate`), and no full
   * gradient buffer is kept (pass null as the constructor's `grads`). The segments of `shard` must
   * be this DDP's buckets. Every micro-step communicates (`noSync` is refused), as DeepSpeed's
   * stage 2 reduces each micro-batch into the partitioned gradients.
   */
  zero?: { shard: ZeroShard; grads: FlatBuffer<Float32Array> };
  /** Mixed precision, loss scaling and activation checkpointing of the traced step (nn/step_graph.ts), as `gradStep`'s. */
  step?: StepGraphOptions;
  /**
   * Other axes' groups the step's collectives name (expert parallelism's 'ep'), by axis. Read at
   * each step, so the caller may fill it after construction (this group is added under `axis`).
   */
  groups?: Record<string, ProcessGroup>;
}

/** Where DDP may cut its backward (DDPOptions.programs); 'auto' resolves to one of the others (`resolveDDPPrograms`). */
export const DDP_PROGRAMS = ['auto', 'tail', 'buckets', 'none'] as const;
export type DDPPrograms = (typeof DDP_PROGRAMS)[number];
/** A cut once 'auto' is resolved. */
export type DDPCut = Exclude<DDPPrograms, 'auto'>;

/**
 * Every rank of `pg` on this machine: thread ranks always; MPI ranks when Open MPI says the whole
 * world is local (OMPI_COMM_WORLD_LOCAL_SIZE equals the group's size).
 */
export function ranksShareMachine(pg: Pick<ProcessGroup, 'backend' | 'size'>, env: NodeJS.ProcessEnv = process.env): boolean {
  if (pg.backend === 'threads') return true;
  const local = Number(env['OMPI_COMM_WORLD_LOCAL_SIZE']);
  return Number.isInteger(local) && local === pg.size;
}

/**
 * 'auto' as a cut: 'none' when every rank shares this machine and ranks x threads (onnxruntime's
 * intra-op threads, `setThreads`) fill its cores, else 'tail'. Measured on 2 cores, 2 thread
 * ranks x 1 thread, medium GPT (`npm run bench:ddp-cut`, interleaved with two independent copies
 * of the step; bench/results/ddp_cut.json): one program reached 0.997 of the independent copies'
 * tokens/s (0.970 measured again as 'auto', at another place in each round), the tail cut 0.937;
 * in an earlier session one program 0.970, the tail 0.959. Across machines the all-reduce waits on a network instead,
 * which the tail hides. Other values pass through.
 */
export function resolveDDPPrograms(programs: DDPPrograms | undefined, pg: Pick<ProcessGroup, 'backend' | 'size'>, threads = settings.threads, cores = availableParallelism()): DDPCut {
  const p = programs ?? 'tail';
  if (!(DDP_PROGRAMS as readonly string[]).includes(p)) throw new Error(`DistributedDataParallel: programs must be ${DDP_PROGRAMS.join(', ')}; got '${String(p)}'`);
  if (p !== 'auto') return p;
  return ranksShareMachine(pg) && pg.size * threads >= cores ? 'none' : 'tail';
}

/** The tail bucket's default share of the gradient bytes. */
export const TAIL_FRACTION = 1 / 8;

/**
 * DDP's buckets for these options (the trainer's ZeRO shard takes the same as its segments):
 * with programs 'tail', the layout's first tensors reaching `tailFraction` of the bytes are the
 * last bucket, the rest packed by `bucketBytes`; otherwise `makeBuckets`.
 */
export function ddpBuckets(slots: readonly Slot[], o: { bucketBytes?: number; programs?: DDPCut; tailFraction?: number } = {}): Bucket[] {
  const cap = o.bucketBytes ?? 25 * 2 ** 20;
  const programs = o.programs ?? 'tail';
  if ((programs as DDPPrograms) === 'auto') throw new Error("ddpBuckets: resolve programs 'auto' with resolveDDPPrograms first");
  const fraction = o.tailFraction ?? TAIL_FRACTION;
  if (!(fraction > 0 && fraction < 1)) throw new Error(`DistributedDataParallel: tailFraction must be in (0, 1), got ${fraction}`);
  if (programs !== 'tail') return makeBuckets(slots, cap);
  const total = slots.reduce((a, x) => a + x.size * 4, 0);
  let n = 0;
  for (let bytes = 0; n < slots.length && bytes < fraction * total; n++) bytes += slots[n]!.size * 4;
  // The tail is at most everything but the last tensor: some bucket's all-reduce must have a backward to hide behind.
  n = Math.min(n, slots.length - 1);
  if (n <= 0) return makeBuckets(slots, cap);
  const head = makeBuckets(slots.slice(n), cap);
  const tailEnd = slots[n]!.offset;
  return [...head, { index: head.length, lo: slots[0]!.offset, hi: tailEnd, slots: slots.slice(0, n) }];
}

/** Packs tensors into buckets from the end of the layout backwards (gradients arrive in that order). */
export function makeBuckets(slots: readonly Slot[], bucketBytes: number): Bucket[] {
  const out: Bucket[] = [];
  let cur: Slot[] = [];
  let bytes = 0;
  const flush = (): void => {
    if (cur.length === 0) return;
    const lo = cur[cur.length - 1]!.offset;
    const last = cur[0]!;
    // A bucket ends where the next tensor (in layout order) begins, covering alignment padding.
    out.push({ index: out.length, lo, hi: last.offset + Math.ceil(last.size / 16) * 16, slots: [...cur].reverse() });
    cur = [];
    bytes = 0;
  };
  for (let i = slots.length - 1; i >= 0; i--) {
    const s = slots[i]!;
    cur.push(s);
    bytes += s.size * 4;
    if (bytes >= bucketBytes) flush();
  }
  flush();
  return out;
}

/** One input signature's programs: cut per bucket, and whole (compiled on first noSync use). */
interface Compiled { segmented: Schedule; whole: Schedule | null; outputs: Value[]; inputs: Value[]; updated: string[] }

export interface DDPStats {
  /** Time the last synchronized step waited after its backward finished (peerWaitMs included). */
  exposedMs: number;
  /**
   * The part of `exposedMs` spent waiting for the slowest rank to finish its backward (no
   * reduction can complete before every rank has contributed): load imbalance, not communication.
   * Measured from every rank's backward end time (wall clock; across hosts it assumes synchronized
   * clocks).
   */
  peerWaitMs: number;
  /** `exposedMs` less `peerWaitMs`: communication left over once the last rank was done. */
  commExposedMs: number;
  /** Bytes of gradients reduced on the last synchronized step. */
  bytes: number;
  /** Bytes of activations moved between backward segments on the last step. */
  crossingBytes: number;
}

export class DistributedDataParallel {
  readonly buckets: Bucket[];
  /** Where the backward is cut (DDPOptions.programs, 'auto' resolved). */
  readonly cut: DDPCut;
  /** The bucket indices each program of the cut backward produces, in order. */
  readonly programBuckets: number[][];
  readonly stats: DDPStats = { exposedMs: 0, peerWaitMs: 0, commExposedMs: 0, bytes: 0, crossingBytes: 0 };
  private readonly hook: CommHook;
  /** Per input signature: the segmented program, and the whole one (compiled on first noSync use). */
  private programs = new Map<string, Compiled>();
  private readonly stepOptions: StepGraphOptions;
  private readonly zero: { shard: ZeroShard; grads: FlatBuffer<Float32Array> } | null;
  /** Bucket k's segment in the zero shard's ranges. */
  private zeroRange: number[] = [];
  /** What activation checkpointing did to the last trace (null without the option). */
  checkpointStats: CheckpointStats | null = null;

  constructor(
    readonly pg: ProcessGroup,
    readonly params: BoundParameters,
    readonly grads: FlatBuffer<Float32Array> | null,
    private readonly loss: (...inputs: Tensor[]) => Tensor,
    opts: DDPOptions = {},
  ) {
    if (grads !== null && grads.layout !== params.flat.layout) throw new Error('DistributedDataParallel: grads must share the parameters\' layout');
    if (grads === null && !opts.zero) throw new Error('DistributedDataParallel: grads may be null only with zero (stage 2 keeps the shard\'s gradients instead)');
    this.cut = resolveDDPPrograms(opts.programs, pg);
    this.buckets = ddpBuckets(params.flat.layout.slots, { ...opts, programs: this.cut });
    // The buckets of each program, in backward order.
    const n = this.buckets.length;
    const all = this.buckets.map((b) => b.index);
    this.programBuckets = this.cut === 'buckets' ? all.map((k) => [k]) : this.cut === 'none' || n === 1 ? [all] : [all.slice(0, n - 1), [n - 1]];
    this.zero = opts.zero ?? null;
    if (this.zero) {
      const starts = new Map(this.zero.shard.ranges.map((r, i) => [r.segLo, i]));
      this.zeroRange = this.buckets.map((b) => {
        const i = starts.get(b.lo);
        if (i === undefined || this.zero!.shard.ranges[i]!.segHi !== b.hi) throw new Error(`DistributedDataParallel: zero's segments are not this DDP's buckets (bucket [${b.lo}, ${b.hi}))`);
        return i;
      });
    }
    this.hook = opts.hook ?? allReduceHook;
    this.stepOptions = opts.step ?? {};
    const groups = opts.groups ?? {};
    groups[opts.axis ?? 'dp'] = pg;
    this.context = { groups };
  }

  /** The groups collectives in the traced step run on (this group, under its axis name). */
  private readonly context: CollectiveContext;

  /**
   * Makes every rank's parameters (and buffers) equal to rank 0's; with `sharded`, the parameters
   * named there equal to those of rank 0 of `group` (the ranks holding the same shard).
   */
  async broadcastParameters(sharded?: { names: ReadonlySet<string>; group: ProcessGroup | null }): Promise<void> {
    if (!sharded || sharded.names.size === 0) await this.pg.broadcast(this.params.flat.data, 0).wait();
    else {
      // Runs of slots: replicated ones from rank 0 of every rank, shards (experts) from rank 0 of
      // the ranks holding the same shard (`group`; null: this rank alone holds it).
      const slots = this.params.flat.layout.slots;
      const data = this.params.flat.data;
      for (let i = 0; i < slots.length;) {
        const own = sharded.names.has(slots[i]!.name);
        let j = i;
        while (j < slots.length && sharded.names.has(slots[j]!.name) === own) j++;
        const run = data.subarray(slots[i]!.offset, j < slots.length ? slots[j]!.offset : data.length);
        if (!own) await this.pg.broadcast(run, 0).wait();
        else if (sharded.group) await sharded.group.broadcast(run, 0).wait();
        i = j;
      }
    }
    await this.broadcastBuffers();
  }

  /**
   * Makes every rank's buffers equal to rank 0's, as PyTorch DDP's broadcast_buffers=True does
   * before each forward: BatchNorm normalizes each rank's batch with that batch's own statistics
   * (no SyncBatchNorm), and the running statistics that are evaluated and checkpointed are rank 0's.
   */
  async broadcastBuffers(): Promise<void> {
    if (this.params.buffers.data.length > 0) await this.pg.broadcast(this.params.buffers.data, 0).wait();
  }

  private async compiled(feeds: readonly Feed[]): Promise<Compiled> {
    const sig = feeds.map((f) => `${f.dtype}[${f.shape.join(',')}]`).join(';');
    let p = this.programs.get(sig);
    if (p === undefined) {
      const t = this.trace(...feeds);
      p = { segmented: await compileSchedule(t.groups.flat(), t.inputs, { groups: t.groups }), whole: null, outputs: t.outputs, inputs: t.inputs, updated: t.updated };
      this.programs.set(sig, p);
    }
    return p;
  }

  /**
   * The step's graph for one input signature, traced and not compiled: `outputs` the loss, the
   * gradients (layout order) and the buffer updates; `groups` the per-bucket targets the schedule
   * cuts it by (group 0 also holds the loss and the buffer updates).
   */
  trace(...feeds: Signature[]): Traced & { groups: Value[][]; updated: string[] } {
    const inputs = feeds.map((f, i) => placeholder(f.shape, f.dtype, `arg${i}`));
    const slots = this.params.flat.layout.slots;
    const { outputs, updated, checkpoint } = traceStepGraph(this.params, this.loss, inputs, this.stepOptions);
    this.checkpointStats = checkpoint;
    const [l, ...rest] = outputs as [Value, ...Value[]];
    const updates = rest.slice(slots.length);
    const gradOf = new Map(slots.map((s, i) => [s.name, rest[i]!]));
    // Group 0 also returns the loss and the buffer updates (forward values); group k the
    // gradients of program k's buckets.
    const groups = this.programBuckets.map((ks, k) => [...(k === 0 ? [l, ...updates] : []), ...ks.flatMap((i) => this.buckets[i]!.slots.map((s) => gradOf.get(s.name)!))]);
    return { outputs, inputs: inputs.map((t) => t.value), groups, updated };
  }


  /**
   * Forward + backward on this rank's batch. With `noSync` the gradients stay local (added to the
   * buffer when `accumulate`); otherwise every bucket is averaged across ranks, its all-reduce
   * overlapping the rest of the backward. Returns this rank's loss.
   */
  async step(batch: Feed[], o: { accumulate?: boolean; noSync?: boolean; lossScale?: number } = {}): Promise<number> {
    const feeds = stepFeeds('DistributedDataParallel', this.stepOptions, batch, o.lossScale);
    const p = await this.compiled(feeds);
    if (this.zero) return this.zeroStep(p, feeds, o.accumulate === true, o.noSync === true);
    const grads = this.grads!;
    const g = grads.data;
    const write = (slot: Slot, src: Float32Array): void => grads.write(slot, src, o.accumulate);
    if (o.noSync) {
      p.whole ??= await compileSchedule(p.outputs, p.inputs);
      const out = await p.whole.run(feeds, this.context, 'fwd_bwd');
      const slots = this.params.flat.layout.slots;
      slots.forEach((s, i) => write(s, out[i + 1] as Float32Array));
      applyBufferUpdates(this.params, p.updated, out.slice(slots.length + 1) as Float32Array[]);
      return Number(out[0]![0]);
    }
    const { loss, works } = await this.backward(p, feeds, (b, outs) => {
      b.slots.forEach((s, i) => write(s, outs[i]!));
      return this.hook(this.pg, g.subarray(b.lo, b.hi), b);
    });
    const t0 = performance.now();
    // Every rank's backward end time (wall clock) rides along on one inline-sized all-gather, to
    // tell waiting for a slower rank from waiting for communication.
    const end = performance.timeOrigin + t0;
    const ends = new Float64Array(this.pg.size);
    works.push(this.pg.allGather(Float64Array.of(end), ends));
    for (const w of works) await w.wait();
    this.stats.exposedMs = performance.now() - t0;
    this.stats.peerWaitMs = Math.min(this.stats.exposedMs, Math.max(0, Math.max(...ends) - end));
    this.stats.commExposedMs = this.stats.exposedMs - this.stats.peerWaitMs;
    this.stats.bytes = this.buckets.reduce((s, b) => s + (b.hi - b.lo) * 4, 0);
    this.stats.crossingBytes = p.segmented.stats.crossingBytes;
    profiler.record('ddp_peer_wait', this.stats.peerWaitMs, 0, 0);
    profiler.record('ddp_exposed_comm', this.stats.commExposedMs, 0, this.stats.bytes);
    return loss;
  }

  /**
   * The bucketed backward: runs the segmented schedule, applies the buffer updates, and hands each
   * bucket's gradients (in slot order) to `reduce` as soon as its program has made them.
   */
  private async backward(p: Compiled, feeds: Feed[], reduce: (b: Bucket, grads: Float32Array[]) => Work): Promise<{ loss: number; works: Work[] }> {
    const works: Work[] = [];
    let loss = 0;
    await p.segmented.run(feeds, this.context, 'ddp_bwd', { onGroup: (k, targets) => {
      let off = k === 0 ? 1 + p.updated.length : 0;
      if (k === 0) {
        loss = Number(targets[0]![0]);
        applyBufferUpdates(this.params, p.updated, targets.slice(1, off) as Float32Array[]);
      }
      for (const i of this.programBuckets[k]!) {
        const b = this.buckets[i]!;
        works.push(reduce(b, targets.slice(off, off + b.slots.length) as Float32Array[]));
        off += b.slots.length;
      }
    } });
    return { loss, works };
  }

  /** ZeRO stage 2's step: every bucket's gradients reduce-scattered into this rank's shard as the backward produces them. */
  private async zeroStep(p: Compiled, feeds: Feed[], accumulate: boolean, noSync: boolean): Promise<number> {
    if (noSync) throw new Error('DistributedDataParallel: ZeRO stage 2 reduces every micro-step; noSync is not supported');
    const { shard, grads } = this.zero!;
    const { loss, works } = await this.backward(p, feeds, (b, outs) => {
      // The bucket's gradients go straight into the padded send buffer: one copy, not two.
      const seg = shard.sendBuffer(this.zeroRange[b.index]!);
      b.slots.forEach((s, i) => seg.set(outs[i]!, s.offset - b.lo));
      const r = shard.ranges[this.zeroRange[b.index]!]!;
      const dest = grads.data.subarray(r.at, r.at + r.c);
      const out = accumulate ? new Float32Array(r.c) : dest;
      const w = shard.reduceScatter(this.pg, this.zeroRange[b.index]!, seg, out);
      return accumulate ? { label: w.label, wait: async () => { await w.wait(); for (let i = 0; i < r.c; i++) dest[i]! += out[i]!; } } : w;
    });
    const t0 = performance.now();
    for (const w of works) await w.wait();
    // What the reduce-scatters left after the backward (slower ranks' time included: not split here).
    this.stats.exposedMs = this.stats.commExposedMs = performance.now() - t0;
    this.stats.peerWaitMs = 0;
    this.stats.bytes = this.buckets.reduce((s, b) => s + (b.hi - b.lo) * 4, 0);
    this.stats.crossingBytes = p.segmented.stats.crossingBytes;
    return loss;
  }
}

/**
 * Half-precision compression by all-gather (DDP's fp16_compress_hook; `bf16Hook` is its
 * bf16_compress_hook): each rank sends its bucket as 16-bit floats packed two to an int32 and
 * averages every rank's copy in float32. On two ranks this sends half the bytes of a float32 ring
 * all-reduce; past four ranks the gather sends more than a ring would, so prefer `allReduceHook`
 * there. Gradients lose precision to the 16-bit format (fp16 ~3 decimal digits, bf16 ~2).
 */
function halfHook(dtype: 'float16' | 'bfloat16', name: string): CommHook {
  return (pg, bucket) => {
    const n = bucket.length;
    const words = Math.ceil(n / 2);
    const packed = new Int32Array(words);
    encode16(dtype, bucket, new Uint16Array(packed.buffer, 0, n));
    const all = new Int32Array(words * pg.size);
    const gather = pg.allGather(packed, all);
    return {
      label: `${name}(${gather.label})`,
      async wait() {
        await gather.wait();
        bucket.fill(0);
        for (let r = 0; r < pg.size; r++) addDecoded16(dtype, new Uint16Array(all.buffer, r * words * 4, n), bucket);
        const inv = 1 / pg.size;
        for (let i = 0; i < n; i++) bucket[i]! *= inv;
      },
    };
  };
}

export const fp16Hook: CommHook = halfHook('float16', 'fp16');
export const bf16Hook: CommHook = halfHook('bfloat16', 'bf16');

/** Re-exported for callers that compress gradients (kept where it was first exported). */
export { fromHalf, toHalf };
