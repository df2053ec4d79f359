/**
 * The one file that loads weft's MPI addon and gives it types. The addon (native/weft_mpi.c) is
 * built by scripts/build_mpi.mjs, the package's install script, into native/build/weft_mpi.node
 * wherever OpenMPI's `mpicc` is on PATH. Set WEFT_MPI_BINDING to load a binding from elsewhere.
 *
 * Every operation returns a promise settled from the addon's progress thread; see the comment at
 * the top of native/weft_mpi.c for how operations are ordered, checked and polled.
 */
import { createRequire } from 'node:module';
import { addonPath } from '../../runtime/addon.js';
import type { CommArray } from '../process_group.js';

/** Operation kinds, in the order of the enum in native/weft_mpi.c. */
const KINDS = ['allReduce', 'broadcast', 'reduce', 'allGather', 'reduceScatter', 'gather', 'scatter',
  'allToAll', 'allToAllV', 'barrier', 'split', 'destroy', 'send', 'recv'] as const;
export type MpiOpKind = (typeof KINDS)[number];
/** Reduce ops, in the order of the addon's enum; mean is sum then a division by the group size. */
const REDUCE_OPS = ['sum', 'max', 'mean'] as const;
export type MpiReduceOp = (typeof REDUCE_OPS)[number];

export interface MpiInitInfo {
  /** Rank and size in MPI_COMM_WORLD. */
  rank: number;
  size: number;
  /** Handle of MPI_COMM_WORLD. */
  world: number;
  /** The thread support MPI_Init_thread provided (MPI_THREAD_MULTIPLE was requested). */
  threadLevel: 'multiple' | 'serialized' | 'funneled' | 'single';
}

export interface MpiSplitResult {
  /** Handle of the new communicator. */
  handle: number;
  rank: number;
  size: number;
  /** World rank of each member, by rank in the new communicator. */
  worldRanks: number[];
}

/** One operation as the addon takes it. */
export interface MpiOp {
  kind: Exclude<MpiOpKind, 'split'>;
  /** Communicator handle. */
  comm: number;
  /** Sequence number of collectives on this communicator: equal on every rank (checked). */
  seq: number;
  /** All-gather a header and check that every rank agrees before the collective runs. */
  validate: boolean;
  /** Input, or the buffer written in place (allReduce, broadcast, reduce, send, recv). */
  a?: CommArray | null;
  /** Output (allGather, reduceScatter, gather, scatter, allToAll, allToAllV). */
  b?: CommArray | null;
  root?: number;
  op?: MpiReduceOp;
  peer?: number;
  tag?: number;
  /** allToAllV: send counts then receive counts, one per rank. */
  counts?: Int32Array;
}

export interface MpiBinding {
  /** MPI_Init_thread, then starts the progress thread. Once per process. */
  init(): MpiInitInfo;
  /** Stops the progress thread and calls MPI_Finalize; throws while operations are in flight. */
  finalize(): void;
  /** MPI_Abort(MPI_COMM_WORLD, code): mpirun ends every rank. Never returns. */
  abort(code: number): never;
  /** MPI_Get_library_version. */
  libraryVersion(): string;
  run(op: MpiOp): Promise<void>;
  /** MPI_Comm_split (color >= 0), after the same agreement check as other collectives. */
  split(comm: number, seq: number, validate: boolean, color: number, key: number): Promise<MpiSplitResult>;
}

interface Native {
  init(): MpiInitInfo;
  finalize(): void;
  abort(code: number): never;
  libraryVersion(): string;
  submit(kind: number, comm: number, seq: number, flags: number, a: CommArray | null, b: CommArray | null,
    x: number, y: number, counts?: Int32Array): Promise<unknown>;
}

export const NOT_BUILT = 'the MPI backend is not built: install OpenMPI (openmpi-bin libopenmpi-dev) and run npm ci';

/** Where the binding is: WEFT_MPI_BINDING, else native/build/weft_mpi.node above this file. */
export const bindingPath = (): string | null => addonPath('weft_mpi.node', 'WEFT_MPI_BINDING');

let cached: MpiBinding | null = null;

/** Loads the binding, or throws an Error that says how to build it. */
export function loadMpiBinding(): MpiBinding {
  if (cached) return cached;
  const path = bindingPath();
  if (!path) throw new Error(NOT_BUILT);
  let native: Native;
  try {
    native = createRequire(import.meta.url)(path) as Native;
  } catch (e) {
    throw new Error(`the MPI backend at ${path} does not load (${(e as Error).message}); rebuild it with node scripts/build_mpi.mjs`);
  }
  const VALIDATE = 1;
  cached = {
    init: () => native.init(),
    finalize: () => native.finalize(),
    abort: (code) => native.abort(code),
    libraryVersion: () => native.libraryVersion(),
    run: async (op) => {
      const rooted = op.kind === 'broadcast' || op.kind === 'reduce' || op.kind === 'gather' || op.kind === 'scatter';
      const p2p = op.kind === 'send' || op.kind === 'recv';
      const x = rooted ? op.root ?? 0 : p2p ? op.peer ?? 0 : 0;
      const y = p2p ? op.tag ?? 0 : REDUCE_OPS.indexOf(op.op ?? 'sum');
      await native.submit(KINDS.indexOf(op.kind), op.comm, op.seq, op.validate ? VALIDATE : 0, op.a ?? null, op.b ?? null, x, y, op.counts);
    },
    split: async (comm, seq, validate, color, key) =>
      await native.submit(KINDS.indexOf('split'), comm, seq, validate ? VALIDATE : 0, null, null, color, key) as MpiSplitResult,
  };
  return cached;
}
