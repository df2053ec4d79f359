/**
 * Messages between a rank's thread and its comm thread (control only: what to do and that it is
 * done; the data lies in staging SharedArrayBuffers, sent once and then named by id), and between
 * rank threads and the launcher.
 */
import type { MessagePort } from 'node:worker_threads';
import type { AllReduceAlgorithm, CollOp } from './layout.js';

/** A staging buffer: `sab` travels with the first request that uses it; later ones name its id. */
export interface StagingRef {
  id: number;
  sab?: SharedArrayBuffer;
  /** Elements of the request's dtype that the request uses, from byte 0. */
  length: number;
}

export interface CollRequest {
  type: 'coll';
  id: number;
  gid: number;
  op: CollOp;
  seq: number;
  dtype: number;
  /** Elements agreed on by every rank (0 for allToAllV, whose counts are checked instead). */
  count: number;
  root: number;
  reduce: number;
  algo: number;
  bufs: StagingRef[];
  /** allToAllV: sendCounts then recvCounts (2 x size). */
  counts?: number[];
}

export interface P2pRequest {
  type: 'send' | 'recv';
  id: number;
  gid: number;
  seq: number;
  peer: number;
  tag: number;
  dtype: number;
  buf: StagingRef;
}

export interface GroupInit {
  type: 'group';
  gid: number;
  name: string;
  sab: SharedArrayBuffer;
  /** World rank of each group rank. */
  members: number[];
  rank: number;
  regionBytes: number;
}

export type ToComm =
  | CollRequest
  | P2pRequest
  | GroupInit
  | { type: 'close'; gid: number }
  | { type: 'forget'; ids: number[] }
  | { type: 'exit' };

/** What one of the rank's running operations waits for (flight.ts's FlightWait). */
export interface FlightWaitReport { group: string; label: string; missing: number[]; missingWorld: number[]; detail: string }

/**
 * `at`: completion time on the comm thread (performance.timeOrigin + performance.now(), ms).
 * 'flight': a timeout here or elsewhere in the launch; the rank writes its flight dump.
 */
export type FromComm =
  | { type: 'done'; id: number; error: string | null; at: number }
  | { type: 'flight'; reason: string; waits: FlightWaitReport[] };

/** What a comm thread starts with. */
export interface CommInit {
  rank: number;
  control: SharedArrayBuffer;
  timeoutMs: number;
  port: MessagePort;
}

/** What a rank worker starts with. */
export interface RankInit {
  rank: number;
  size: number;
  control: SharedArrayBuffer;
  world: SharedArrayBuffer;
  regionBytes: number;
  timeoutMs: number;
  entry: string;
  args: unknown;
  allReduceAlgorithm: 'auto' | AllReduceAlgorithm;
}

export interface SerializedError { name: string; message: string; stack?: string }

export type FromRank =
  | { type: 'result'; value: unknown }
  | { type: 'error'; error: SerializedError }
  | { type: 'put'; name: string; sab: SharedArrayBuffer; readers: number }
  | { type: 'get'; name: string; req: number };

export type ToRank = { type: 'got'; req: number; sab: SharedArrayBuffer | null; error?: string };

/** Wall-clock milliseconds comparable across threads. */
export const now = (): number => performance.timeOrigin + performance.now();

export { workerExecArgv } from '../../runtime/workers.js';
