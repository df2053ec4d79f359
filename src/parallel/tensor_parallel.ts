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
 * sqrt(sum of squares): sharded slots' squares summed over the axis (one all-reduce of a float64),
 * replicated slots counted once (every rank holds the same copy).
 */
export function shardedNorm(layout: Layout, placements: Placements, group: ProcessGroup): (g: FloatArray) => Promise<number> {
  return async (g) => {
    let sharded = 0;
    let replicated = 0;
    for (const s of layout.slots) {
      let ss = 0;
      for (let i = s.offset; i < s.offset + s.size; i++) ss += g[i]! * g[i]!;
      if (placements.get(s.name)) sharded += ss; else replicated += ss;
    }
    const sum = Float64Array.of(sharded);
    await group.allReduce(sum, 'sum').wait();
    return Math.sqrt(sum[0]! + replicated);
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
