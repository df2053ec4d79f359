/**
 * Placements: how a parameter lies on a mesh axis. A sharded parameter holds, on rank `index` of
 * the axis's `size`, the `index`-th 1/size of `dim`; with `parts` > 1 the dim is first cut into
 * `parts` equal blocks and each block is sharded (a fused q|k|v weight keeps its q, k and v heads
 * together). A parameter without a placement is replicated. Pure index arithmetic: the plan that
 * sets placements lives beside the model, and checkpoints gather (`unshard`) and slice (`shard`)
 * by them, so a checkpoint holds whole tensors whatever layout wrote it.
 */
import { fmt } from '../ir/shape.js';
import type { FloatArray } from '../runtime/flat.js';

export interface Placement {
  /** Mesh axis, e.g. 'tp'. */
  readonly axis: string;
  /** Ranks on the axis, and this rank's position. */
  readonly size: number;
  readonly index: number;
  /** The tensor dim that is split. */
  readonly dim: number;
  /** Blocks of `dim` sharded one by one (default 1). */
  readonly parts?: number;
}

/** The shape this rank holds. */
export function localShape(shape: readonly number[], p: Placement | null): number[] {
  if (p === null) return [...shape];
  const parts = p.parts ?? 1;
  const d = shape[p.dim];
  if (d === undefined || d % (parts * p.size) !== 0) {
    throw new Error(`placement: dim ${p.dim} of shape ${fmt(shape)} does not split into ${parts} block(s) x ${p.size} '${p.axis}' shards`);
  }
  return shape.map((e, i) => (i === p.dim ? e / p.size : e));
}

/** Runs of the shard inside the whole tensor: [offset in whole, offset in shard, length]. */
function runs(shape: readonly number[], p: Placement, index: number): [number, number, number][] {
  const parts = p.parts ?? 1;
  const outer = shape.slice(0, p.dim).reduce((a, e) => a * e, 1);
  const inner = shape.slice(p.dim + 1).reduce((a, e) => a * e, 1);
  const D = shape[p.dim]!;
  const block = D / parts;
  const c = block / p.size;
  const out: [number, number, number][] = [];
  for (let o = 0; o < outer; o++) {
    for (let q = 0; q < parts; q++) {
      out.push([(o * D + q * block + index * c) * inner, (o * (D / p.size) + q * c) * inner, c * inner]);
    }
  }
  return out;
}

/** This rank's shard of the whole tensor `full` (a copy). */
export function shard<A extends FloatArray>(full: A, shape: readonly number[], p: Placement | null): A {
  if (p === null) return full.slice() as A;
  const local = localShape(shape, p).reduce((a, e) => a * e, 1);
  const out = (full instanceof Float64Array ? new Float64Array(local) : new Float32Array(local)) as A;
  for (const [from, to, n] of runs(shape, p, p.index)) out.set(full.subarray(from, from + n), to);
  return out;
}

/** The whole tensor from every rank's shard (`shards[i]` from index i), the inverse of `shard`. */
export function unshard<A extends FloatArray>(shards: readonly A[], shape: readonly number[], p: Placement): A {
  const total = shape.reduce((a, e) => a * e, 1);
  const out = (shards[0] instanceof Float64Array ? new Float64Array(total) : new Float32Array(total)) as A;
  shards.forEach((s, i) => { for (const [to, from, n] of runs(shape, p, i)) out.set(s.subarray(from, from + n), to); });
  return out;
}
