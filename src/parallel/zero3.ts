/**
 * ZeRO stage 3 (Rajbhandari et al. 2020; DeepSpeed's `zero_optimization.stage: 3`): the parameters
 * are sharded too. Each rank holds its slice of every segment of the flat parameter vector (the
 * same `ZeroShard` partition as stages 1 and 2, parallel/zero.ts), and the traced step is rewritten
 * so that each segment is all-gathered just before the layer that uses it, once for the forward and
 * again for the backward, and its gradients reduce-scattered into the rank's shard:
 *
 *   forward   G_k  = AllGather(shard_k, after G_{k-1})      each parameter a slice of G_k
 *   backward  G'_k = AllGather(shard_k, after G'_{k+1})     (the backward reads G'_k, not G_k)
 *   gradient  dshard_k = ReduceScatter(dW_k, after G'_{k-1}) / N
 *
 * With `offload` (ZeRO-Infinity's parameter offload, `parallel.offload: 'disk'` at stage 3) the shard
 * is not in memory but in a file, `<dir>/zero.params.f32`: each gather's input is a `weft.Load` of
 * the segment's slice (ir/ops/storage.ts), itself chained to the gather two before it, so the read
 * of slice k + 1 flies with gather k, and the optimizer streams the file through its update
 * (optim/offload.ts, `OffloadConfig.params`). A rank then holds no parameter at all between uses.
 *
 * A segment is a unit of the model (the GPT task's blocks, `Task.checkpointUnits`) or a run of
 * parameters outside every unit (embeddings, the final LayerNorm). The gathers are IR collectives
 * (ir/ops/collective.ts) and the step is cut at them by the one schedule (runtime/schedule.ts),
 * which issues a host op at the first boundary where its inputs exist and frees each value after its
 * last reader. The `after` inputs (ordering only) chain the gathers in the order the forward first
 * uses each segment, and the backward's in the order the backward does: gather k + 1 is issued
 * when gather k has landed, so it flies while layer k computes (a prefetch of one layer), and at
 * most two segments' full parameters exist at a time. A reduce-scatter waits for the next
 * backward gather, so it too flies while the next layer's backward computes.
 *
 * Forward values computed from parameters alone (mixed precision's half-precision copy of a
 * weight) are recomputed in the backward from G'_k, so nothing gathered for the forward is kept
 * for the backward. Everything else the backward reads from the forward (activations) is kept as
 * before, or recomputed by activation checkpointing, which runs before this rewrite.
 *
 * @example
 *   const z3 = new ZeroStage3(bound, { units: ['h*'], rank: dp.rank, size: dp.size });
 *   const step = gradStep(bound, z3.grads, loss, 'fwd_bwd', { context: { groups: { dp } }, shardParameters: z3.rewrite });
 *   await step(batch);                       // z3.grads: this rank's averaged gradient shard
 *   await new AdamW(z3.params, { lr }).step(z3.grads);   // updates this rank's parameter shard
 */
import * as b from '../ir/build.js';
import { topoNodes } from '../ir/graph.js';
import type { Value } from '../ir/graph.js';
import { allGather, reduceScatter } from '../ir/ops/collective.js';
import { load } from '../ir/ops/storage.js';
import { apply } from '../ir/registry.js';
import { unitMatcher, withScope } from '../ir/scope.js';
import { join } from 'node:path';
import { FlatBuffer } from '../runtime/flat.js';
import type { Layout, Slot } from '../runtime/flat.js';
import type { BoundParameters } from '../nn/module.js';
import type { ProcessGroup } from '../comm/process_group.js';
import { FileVector, offloadDir } from '../optim/offload.js';
import { ZeroShard } from './zero.js';

/** The store name of an offloaded parameter shard in a run's context (`context.stores`). */
export const PARAMS_STORE = 'zero.params';

/**
 * Stage 3's segments of a layout: each maximal run of consecutive slots that lie in the same unit
 * (`units`: module-path globs, as activation checkpointing's), and each run lying in none.
 */
export function zero3Segments(layout: Layout, units: readonly string[]): { lo: number; hi: number; unit: string | null }[] {
  const unitOf = unitMatcher(units);
  const out: { lo: number; hi: number; unit: string | null }[] = [];
  for (const s of layout.slots) {
    const u = unitOf(s.name);
    const last = out.at(-1);
    if (last && last.unit === u) continue;
    if (last) last.hi = s.offset;
    out.push({ lo: s.offset, hi: layout.size, unit: u });
  }
  return out;
}

/** The step's graph as the rewrite sees it: forward outputs (loss, buffer updates) and one gradient per parameter slot. */
export interface StepParts { forward: Value[]; grads: Value[] }

export class ZeroStage3 {
  readonly shard: ZeroShard;
  /** This rank's parameter shard (float32 masters), over `shard.layout`; detached (no data) when offloaded. */
  readonly params: FlatBuffer<Float32Array>;
  /** With `offload`: the file holding the shard instead (what the optimizer streams, `OffloadConfig.params`); else null. */
  readonly file: FileVector | null;
  /** What a run's context must hold for this plan's loads (`context.stores`): empty without offload. */
  readonly stores: Readonly<Record<string, FileVector>>;
  /** This rank's averaged gradient shard, over `shard.layout` (what a step writes). */
  readonly grads: FlatBuffer<Float32Array>;
  /** The segments' units (null for a run outside every unit), in segment order. */
  readonly units: readonly (string | null)[];
  private readonly leaves: Value[];
  private readonly layout: Layout;
  private readonly slotOf: Map<Value, { k: number; slot: Slot }>;

  /**
   * Shards `bound`'s parameters (every rank bound the same initial values; each keeps its slices)
   * and detaches them from the model: afterwards the model's parameter tensors have no data, and
   * only steps and programs rewritten by this plan can run it.
   */
  constructor(bound: BoundParameters, o: { units: readonly string[]; rank: number; size: number; axis?: string; offload?: { dir: string } }) {
    this.layout = bound.flat.layout;
    this.axis = o.axis ?? 'dp';
    const segments = zero3Segments(this.layout, o.units);
    this.units = segments.map((s) => s.unit);
    this.shard = new ZeroShard(this.layout, segments, { rank: o.rank, size: o.size });
    this.grads = this.shard.zeros('zero.grads');
    if (o.offload) {
      this.params = FlatBuffer.detached(this.shard.layout, 'zero.params');
      offloadDir('ZeroStage3', o.offload.dir);
      this.file = new FileVector(join(o.offload.dir, `${PARAMS_STORE}.f32`), this.shard.layout.size);
      this.stores = { [PARAMS_STORE]: this.file };
      this.leaves = [];
    } else {
      this.params = this.shard.zeros('zero.params');
      this.file = null;
      this.stores = {};
      this.leaves = this.shard.layout.slots.map((s) => this.params.leaf(s.name));
    }
    this.load(bound.flat.data);
    this.slotOf = new Map();
    for (const s of this.layout.slots) {
      const v = bound.tensors[s.name]!.value;
      v.data = null;
      this.slotOf.set(v, { k: this.shard.segmentOf(s.offset), slot: s });
    }
  }

  /** The mesh axis the shards are over (the step's context must hold its group). */
  readonly axis: string;

  /** The traced step with every parameter gathered per segment and every gradient reduce-scattered (see the file comment). */
  readonly rewrite = (g: StepParts): StepParts => this.apply(g.forward, g.grads);

  /** A forward-only graph (evaluation) with its parameters gathered per segment. */
  forward(outputs: readonly Value[]): Value[] { return this.apply(outputs, []).forward; }

  private apply(forward: readonly Value[], grads: readonly Value[]): StepParts {
    const N = this.shard.axis.size;
    const fwd = new Set(topoNodes(forward));
    const order = topoNodes([...forward, ...grads]);
    // Forward values of parameters alone (a weight's half-precision cast): the segments they read.
    const derived = new Map<Value, Set<number>>();
    const segsOf = (v: Value | null): Set<number> | null => {
      if (v === null) return null;
      const e = this.slotOf.get(v);
      return e ? new Set([e.k]) : derived.get(v) ?? null;
    };
    for (const n of order) {
      if (!fwd.has(n)) continue;
      const ins = n.inputs.filter((v): v is Value => v !== null);
      if (!ins.some((v) => segsOf(v) !== null) || !ins.every((v) => segsOf(v) !== null || (v.node === null && v.constant))) continue;
      const segs = new Set(ins.flatMap((v) => [...(segsOf(v) ?? [])]));
      for (const o of n.outputs) derived.set(o, segs);
    }
    // The order each pass first uses each segment.
    const fwdOrder: number[] = [];
    const bwdOrder: number[] = [];
    for (const n of order) {
      const list = fwd.has(n) ? fwdOrder : bwdOrder;
      for (const v of n.inputs) {
        const e = v === null ? null : fwd.has(n) ? (this.slotOf.has(v) ? new Set([this.slotOf.get(v)!.k]) : null) : segsOf(v);
        for (const k of e ?? []) if (!list.includes(k)) list.push(k);
      }
    }
    // Every gather waits for the one before it; an offloaded slice's load for the one before that.
    const issued: Value[] = [];
    const gather = (k: number): Value => withScope(null, () => {
      const r = this.shard.ranges[k]!;
      const before = issued.at(-2);
      const src = this.file ? load(PARAMS_STORE, r.at, r.c, before ? [before] : []) : this.leaves[k]!;
      const last = issued.at(-1);
      const G = allGather(src, this.axis, N, 0, 'reduce_scatter', last ? [last] : []);
      issued.push(G);
      return G;
    });
    const fwdGather = new Map<number, Value>();
    const bwdGather = new Map<number, Value>();
    for (const k of fwdOrder) fwdGather.set(k, gather(k));
    for (const k of bwdOrder) bwdGather.set(k, gather(k));
    const views = new Map<Value, Map<Slot, Value>>();
    const view = (G: Value, k: number, s: Slot): Value => {
      let m = views.get(G);
      if (!m) views.set(G, (m = new Map()));
      let v = m.get(s);
      if (!v) {
        const at = s.offset - this.shard.ranges[k]!.segLo;
        m.set(s, (v = withScope(null, () => b.reshape(b.slice(G, [at], [at + s.size], [0]), s.shape))));
      }
      return v;
    };

    const fmap = new Map<Value, Value>();
    const bmap = new Map<Value, Value>();
    const fget = (v: Value | null): Value | null => {
      if (v === null) return null;
      const e = this.slotOf.get(v);
      return e ? view(fwdGather.get(e.k)!, e.k, e.slot) : fmap.get(v) ?? v;
    };
    const bget = (v: Value | null): Value | null => {
      if (v === null) return null;
      const e = this.slotOf.get(v);
      if (e) return view(bwdGather.get(e.k)!, e.k, e.slot);
      if (derived.has(v)) return recompute(v);
      return bmap.get(v) ?? fget(v);
    };
    // A parameter-only forward value, recomputed in the backward from the backward's gathers.
    const again = new Map<Value, Value>();
    const recompute = (v: Value): Value => {
      const hit = again.get(v);
      if (hit) return hit;
      const n = v.node!;
      const outs = withScope(n.scope, () => apply(n.op, n.inputs.map(bget), n.attrs, n.outputs.length));
      n.outputs.forEach((o, i) => again.set(o, outs[i]!));
      return again.get(v)!;
    };
    for (const n of order) {
      const [get, map] = fwd.has(n) ? [fget, fmap] : [bget, bmap];
      const outs = withScope(n.scope, () => apply(n.op, n.inputs.map(get), n.attrs, n.outputs.length));
      n.outputs.forEach((o, i) => map.set(o, outs[i]!));
    }
    const out = (v: Value): Value => bmap.get(v) ?? fget(v)!;

    const shardGrads: Value[] = [];
    if (grads.length > 0) {
      if (grads.length !== this.layout.slots.length) throw new Error(`ZeroStage3: ${grads.length} gradients for ${this.layout.slots.length} parameters`);
      const next = new Map(bwdOrder.map((k, i) => [k, bwdGather.get(bwdOrder[i + 1]!)]));
      this.shard.ranges.forEach((r, k) => {
        const parts: Value[] = [];
        let at = r.segLo;
        this.layout.slots.forEach((s, i) => {
          if (s.offset < r.segLo || s.offset >= r.segHi) return;
          if (s.offset > at) parts.push(b.zeros([s.offset - at], 'float32'));
          parts.push(b.reshape(out(grads[i]!), [s.size]));
          at = s.offset + s.size;
        });
        const tail = r.segLo + N * r.c - at;
        if (tail > 0) parts.push(b.zeros([tail], 'float32'));
        const after = next.get(k);
        const summed = reduceScatter(parts.length === 1 ? parts[0]! : b.concat(parts, 0), this.axis, N, 0, after ? [after] : []);
        shardGrads.push(N === 1 ? summed : b.mul(summed, b.scalarLike(1 / N, summed)));
      });
    }
    return { forward: forward.map(out), grads: shardGrads };
  }

  /** Every rank's shards gathered into `out`, the full flat parameter vector (generation; every rank calls it). */
  async gatherParameters(group: ProcessGroup, out: Float32Array): Promise<void> {
    return this.shard.allGather(group, await this.shardData(), out);
  }

  /**
   * Sets this rank's shard from a full flat vector (its slices of it): in memory at once, offloaded
   * written behind (every later read of the file, a step's loads included, comes after it).
   */
  load(full: Float32Array): void {
    if (full.length !== this.layout.size) throw new Error(`ZeroStage3.load: the vector has ${full.length} elements, the parameters ${this.layout.size}`);
    if (this.file === null) { this.shard.take(full, this.params.data); return; }
    const mine = new Float32Array(this.shard.layout.size);
    this.shard.take(full, mine);
    void this.file.write(0, mine);
  }

  /** Flushes and closes the offloaded shard's file (it stays on disk); nothing to do in memory. */
  async close(): Promise<void> { await this.file?.close(); }

  /** This rank's whole shard: its own buffer, or read from the file (after the writes issued before). */
  private async shardData(): Promise<Float32Array> {
    if (this.file === null) return this.params.data;
    const a = new Float32Array(this.shard.layout.size);
    await this.file.read(0, a);
    return a;
  }
}
