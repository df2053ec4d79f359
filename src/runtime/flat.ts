/**
 * Flat buffers: one Float32Array (or Float64Array) holding many named tensors back to back, each
 * reachable as a zero-copy view. Parameters, gradients and optimizer moments share one layout, so
 * bucketing, sharding and all-reduce work on contiguous ranges without copies.
 */
import { Value } from '../ir/graph.js';
import { numel } from '../ir/shape.js';
import { profiler } from './profiler.js';

export interface Slot { readonly name: string; readonly shape: readonly number[]; readonly offset: number; readonly size: number }

/** Offsets are aligned to 16 elements (64 bytes for float32): a cache line per tensor start. */
const ALIGN = 16;

export class Layout {
  readonly slots: readonly Slot[];
  readonly size: number;
  private byName: Map<string, Slot>;

  constructor(specs: readonly { name: string; shape: readonly number[] }[]) {
    let off = 0;
    const seen = new Set<string>();
    this.slots = specs.map(({ name, shape }) => {
      if (seen.has(name)) throw new Error(`Layout: tensor name '${name}' appears twice`);
      seen.add(name);
      const size = numel(shape);
      const s = { name, shape: [...shape], offset: off, size };
      off += Math.ceil(size / ALIGN) * ALIGN;
      return s;
    });
    this.size = off;
    this.byName = new Map(this.slots.map((s) => [s.name, s]));
  }

  slot(name: string): Slot {
    const s = this.byName.get(name);
    if (!s) throw new Error(`Layout: no tensor named '${name}'`);
    return s;
  }
}

export type FloatArray = Float32Array | Float64Array;

export class FlatBuffer<A extends FloatArray = Float32Array> {
  constructor(readonly layout: Layout, readonly data: A, label?: string, readonly detached = false) {
    if (data.length !== (detached ? 0 : layout.size)) throw new Error(`FlatBuffer: data has ${data.length} elements, layout needs ${layout.size}`);
    if (label) profiler.hold(label, data.byteLength);
  }

  /**
   * A layout whose data lives elsewhere (ZeRO stage 3's parameters: each rank holds a shard, and
   * the whole vector exists only as per-layer gathers inside a step). It holds no elements, and
   * reading a view of it is an error naming the reason.
   */
  static detached(layout: Layout, label?: string): FlatBuffer<Float32Array> {
    return new FlatBuffer(layout, new Float32Array(0), label, true);
  }

  static zeros(layout: Layout, label?: string): FlatBuffer<Float32Array> {
    return new FlatBuffer(layout, new Float32Array(layout.size), label);
  }

  static zeros64(layout: Layout, label?: string): FlatBuffer<Float64Array> {
    return new FlatBuffer(layout, new Float64Array(layout.size), label);
  }

  view(name: string): A {
    if (this.detached) throw new Error(`FlatBuffer: '${name}' is not held here (the buffer is detached: parameters sharded by ZeRO stage 3); gather them first`);
    const s = this.layout.slot(name);
    return this.data.subarray(s.offset, s.offset + s.size) as A;
  }

  /** Writes `src` into a tensor's slot, or adds it there (gradient accumulation). */
  write(slot: Slot, src: ArrayLike<number>, accumulate = false): void {
    const d = this.data;
    if (!accumulate) { d.set(src, slot.offset); return; }
    for (let i = 0; i < slot.size; i++) d[slot.offset + i]! += src[i]!;
  }

  /** A graph leaf over the named tensor's view: computations read the buffer's current contents. */
  leaf(name: string): Value {
    const s = this.layout.slot(name);
    const v = new Value(this.data instanceof Float64Array ? 'float64' : 'float32', s.shape, null, 0, this.view(name));
    v.name = name;
    return v;
  }
}
