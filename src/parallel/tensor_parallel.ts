/**
 * What a tensor-parallel run needs beyond its model's plan: the true global gradient norm over
 * sharded buffers, and whole tensors for layout-free checkpoints (every shard gathered over the
 * axis) and back (each rank's slice of a whole tensor).
 */
import type { CommArray, ProcessGroup } from '../comm/process_group.js';
import { shard, unshard } from '../nn/placement.js';
import type { Placement } from '../nn/placement.js';
import type { FloatArray, Layout } from '../runtime/flat.js';

/** The placement of each slot of a layout, by name (null: replicated). */
export type Placements = ReadonlyMap<string, Placement | null>;

/**
 * sqrt(sum of squares): sharded slots' squares summed over their axis (one all-reduce of a float64
 * per axis, on `group`, or `group(axis)` where tensors are split over several: tp and ep),
 * replicated slots counted once (every rank holds the same copy).
 */
export function shardedNorm(layout: Layout, placements: Placements, group: ProcessGroup | ((axis: string) => ProcessGroup)): (g: FloatArray) => Promise<number> {
  const groupOf = typeof group === 'function' ? group : (): ProcessGroup => group;
  return async (g) => {
    // Squares by the axis their tensor is split over ('' for replicated), each sum over its axis's group.
    const sums = new Map<string, number>();
    for (const s of layout.slots) {
      let ss = 0;
      for (let i = s.offset; i < s.offset + s.size; i++) ss += g[i]! * g[i]!;
      const axis = placements.get(s.name)?.axis ?? '';
      sums.set(axis, (sums.get(axis) ?? 0) + ss);
    }
    let total = sums.get('') ?? 0;
    for (const [axis, v] of [...sums].filter(([a]) => a !== '').sort(([a], [b]) => (a < b ? -1 : 1))) {
      const sum = Float64Array.of(v);
      await groupOf(axis).allReduce(sum, 'sum').wait();
      total += sum[0]!;
    }
    return Math.sqrt(total);
  };
}

/** The whole tensor of a (possibly sharded) local one: an all-gather over the axis when sharded. */
export async function wholeTensor(local: Float32Array, shape: readonly number[], p: Placement | null, group: ProcessGroup): Promise<Float32Array> {
  if (p === null) return local;
  if (group.size !== p.size) throw new Error(`wholeTensor: the placement is over ${p.size} ranks of '${p.axis}', the group has ${group.size}`);
  const all = new Float32Array(local.length * group.size);
  await group.allGather(local as CommArray, all as CommArray).wait();
  return unshard(Array.from({ length: group.size }, (_, i) => all.subarray(i * local.length, (i + 1) * local.length)), shape, p);
}

/** This rank's part of a whole tensor (a copy; the tensor itself when replicated). */
export const localPart = (whole: Float32Array, shape: readonly number[], p: Placement | null): Float32Array => (p === null ? whole : shard(whole, shape, p));
