/**
 * Process groups: the one interface every parallel plan (data parallel, ZeRO, tensor, pipeline,
 * expert parallel, parameter server) talks to. Backends: `threads` (ranks are worker_threads of
 * one process; data moves through SharedArrayBuffers; communication progresses on a separate
 * thread while the rank's thread is blocked in onnxruntime) and `mpi` (ranks are processes started
 * by mpirun; a native binding over libmpi makes its calls off the JavaScript thread).
 *
 * Every collective returns a `Work` handle at once; `await work.wait()` (or `work.done`) finishes
 * it, so communication overlaps compute. Every wait has a timeout; a rank that throws, exits or
 * stops answering makes every other rank's pending and later calls fail within the timeout with a
 * `CollectiveError` naming the rank and the operation. Sizes that disagree across ranks are an
 * error naming both ranks and both sizes.
 *
 * Buffers: collectives read and write caller-owned typed arrays (float32, float64, int32, and
 * uint16 carrying fp16/bf16 bits for reduce ops marked as such). Outputs are written in place
 * (all-reduce, broadcast) or into the given output array. A buffer must not be touched by the
 * caller between issuing a collective and its completion.
 */

export type ReduceOp = 'sum' | 'mean' | 'max';

/** Element types a collective moves. Reductions run in the element type. */
export type CommArray = Float32Array | Float64Array | Int32Array;

export interface Work {
  /** Resolves when the operation has completed on this rank (its output buffers are final). */
  wait(): Promise<void>;
  /** The operation's name and sequence number, for errors and profiles ("allReduce#12"). */
  readonly label: string;
}

export interface ProcessGroup {
  readonly rank: number;
  readonly size: number;
  /** 'threads' or 'mpi'. */
  readonly backend: string;
  /** Timeout applied to every wait, in milliseconds. */
  readonly timeoutMs: number;

  allReduce(buf: CommArray, op?: ReduceOp): Work;
  broadcast(buf: CommArray, root: number): Work;
  /** Reduces into `buf` on `root`; other ranks' `buf` are left unspecified. */
  reduce(buf: CommArray, root: number, op?: ReduceOp): Work;
  /** out = concat over ranks of `input` (every rank's input has the same length). */
  allGather(input: CommArray, out: CommArray): Work;
  /** out (length input.length / size) = this rank's share of the reduction of `input`. */
  reduceScatter(input: CommArray, out: CommArray, op?: ReduceOp): Work;
  /** On root, out = concat over ranks of `input`; `out` is ignored elsewhere (may be null). */
  gather(input: CommArray, out: CommArray | null, root: number): Work;
  /** Root's `input` (size x out.length) is split; each rank receives its share in `out`. */
  scatter(input: CommArray | null, out: CommArray, root: number): Work;
  /** Equal splits: input and out have size x k elements; block j of input goes to rank j. */
  allToAll(input: CommArray, out: CommArray): Work;
  /** Variable splits: sendCounts[j] elements go to rank j; recvCounts[j] come from rank j. */
  allToAllV(input: CommArray, sendCounts: readonly number[], out: CommArray, recvCounts: readonly number[]): Work;
  barrier(): Work;
  send(buf: CommArray, dst: number, tag?: number): Work;
  recv(buf: CommArray, src: number, tag?: number): Work;

  /**
   * A sub-group of the ranks that pass the same `color`, ordered by `key` (default: rank), as
   * MPI_Comm_split. Every rank of this group must call it, in the same order as other collectives.
   */
  split(color: number, key?: number): Promise<ProcessGroup>;

  /** Releases the group's threads and buffers. */
  destroy(): Promise<void>;
}

/** A collective failed: timed out, a peer died, or ranks disagreed. */
export class CollectiveError extends Error {
  override readonly name = 'CollectiveError';
}

/**
 * A device mesh: named axes (e.g. { dp: 2, tp: 2 }) whose sizes multiply to the world size, with
 * one sub-group per axis for this rank. Ranks are laid out row-major over the axes in the given
 * order (the last axis varies fastest).
 */
export async function deviceMesh(world: ProcessGroup, axes: Readonly<Record<string, number>>): Promise<{ coords: Record<string, number>; groups: Record<string, ProcessGroup> }> {
  const names = Object.keys(axes);
  const sizes = names.map((n) => axes[n]!);
  const product = sizes.reduce((a, b) => a * b, 1);
  if (product !== world.size) {
    throw new Error(`deviceMesh: axes ${names.map((n, i) => `${n}=${sizes[i]}`).join(' x ')} multiply to ${product}, but the world has ${world.size} ranks`);
  }
  const coords: Record<string, number> = {};
  let rest = world.rank;
  for (let i = names.length - 1; i >= 0; i--) { coords[names[i]!] = rest % sizes[i]!; rest = Math.floor(rest / sizes[i]!); }
  const groups: Record<string, ProcessGroup> = {};
  for (const axis of names) {
    // Ranks that share every other coordinate form this axis's group.
    const color = names.filter((n) => n !== axis).reduce((c, n) => c * axes[n]! + coords[n]!, 0);
    groups[axis] = await world.split(color, coords[axis]);
  }
  return { coords, groups };
}
