/**
 * Shared-memory layout of the threads backend. Everything here is read and written by several
 * threads; only Atomics publish (a counter or stamp written last with Atomics.store, read first
 * with Atomics.load), plain reads and writes move the payload.
 *
 * Control block (one per launch, `Control`), Int32 words:
 *   [0] abort state (0 none, 1 set)    [1] world rank that failed   [2] reason length (bytes)
 *   [3] world size                      [4] first timeout (0 none, -1 being written, 1 + world rank)
 *   [5] its reason length               [16 + 16 r] doorbell of rank r's comm thread (one cache line each)
 *   [16 + 16 n + r] status of rank r (0 running, 1 returned, 2 failed), then the abort reason and
 *   the first timeout's reason (UTF-8), then per rank its flight recorder's activity (see
 *   `setActivity`).
 * A comm thread sleeps on its own doorbell only; whoever changes something it may wait for
 * (a channel counter, a header stamp, the abort state, a status) increments and notifies it.
 *
 * Group block (one per process group, `groupGeometry`):
 *   headers: per rank two slots (used by sequence numbers of alternating parity; each collective is
 *   a full synchronisation, so a slot is read by everyone before its owner reuses it) holding
 *   [stamp = seq, op, count, dtype, root, reduce, algorithm, nCounts, counts..., inline data];
 *   then per rank the sequence number of the last collective it completed (for diagnosis);
 *   channels: per ordered pair (src, dst) one collective channel and one point-to-point channel,
 *   single-producer single-consumer rings of fixed-size slots; their data lies in dst's region of
 *   `regionBytes` (3/4 for collective channels, 1/4 for point-to-point). Messages of any length
 *   stream through these windows chunk by chunk.
 */
import type { CommArray, ReduceOp } from '../process_group.js';

export const OPS = ['', 'allReduce', 'broadcast', 'reduce', 'allGather', 'reduceScatter', 'gather', 'scatter', 'allToAll', 'allToAllV', 'barrier', 'split'] as const;
export type CollOp = Exclude<(typeof OPS)[number], ''>;
export const opCode = (op: CollOp): number => OPS.indexOf(op);

export const DTYPES = ['', 'float32', 'float64', 'int32'] as const;
export type DTypeName = Exclude<(typeof DTYPES)[number], ''>;
export const DTYPE_BYTES = [0, 4, 8, 4] as const;

export const REDUCE_OPS = ['', 'sum', 'mean', 'max'] as const;
export const reduceCode = (op: ReduceOp | null): number => (op === null ? 0 : REDUCE_OPS.indexOf(op));

export const ALGORITHMS = ['', 'ring', 'recursive_doubling', 'inline'] as const;
export type AllReduceAlgorithm = Exclude<(typeof ALGORITHMS)[number], ''>;

/** 1 float32, 2 float64, 3 int32. */
export function dtypeCode(a: unknown): number {
  if (a instanceof Float32Array) return 1;
  if (a instanceof Float64Array) return 2;
  if (a instanceof Int32Array) return 3;
  const what = a === null ? 'null' : typeof a === 'object' ? (a.constructor?.name ?? 'object') : typeof a;
  throw new TypeError(`expected a Float32Array, Float64Array or Int32Array, got ${what}`);
}

export function typedView(dtype: number, buf: SharedArrayBuffer, byteOffset: number, length: number): CommArray {
  if (dtype === 1) return new Float32Array(buf, byteOffset, length);
  if (dtype === 2) return new Float64Array(buf, byteOffset, length);
  return new Int32Array(buf, byteOffset, length);
}

export const align = (x: number, a: number): number => Math.ceil(x / a) * a;

export const RUNNING = 0;
export const RETURNED = 1;
export const FAILED = 2;
const BELLS = 16;
/** Int32 words between doorbells: 64 bytes, so ringing one rank does not invalidate its neighbours' line. */
const BELL_STRIDE = 16;
const REASON_BYTES = 4096;
/** Per rank: [version, length] Int32, since (Float64), then the activity's UTF-8 bytes. */
const ACTIVITY_BYTES = 256;
const ACTIVITY_TEXT = ACTIVITY_BYTES - 16;
const HUNG = 4;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class Control {
  readonly i32: Int32Array;
  readonly size: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.i32 = new Int32Array(sab);
    this.size = this.i32[3]!;
  }

  static create(size: number): Control {
    const sab = new SharedArrayBuffer(align((BELLS + (BELL_STRIDE + 1) * size) * 4, 8) + 2 * REASON_BYTES + size * ACTIVITY_BYTES);
    new Int32Array(sab)[3] = size;
    return new Control(sab);
  }

  bell(rank: number): number { return BELLS + BELL_STRIDE * rank; }

  /** Wakes the comm thread of world rank `rank`. */
  ring(rank: number): void {
    Atomics.add(this.i32, BELLS + BELL_STRIDE * rank, 1);
    Atomics.notify(this.i32, BELLS + BELL_STRIDE * rank);
  }

  ringAll(): void { for (let r = 0; r < this.size; r++) this.ring(r); }

  status(rank: number): number { return Atomics.load(this.i32, BELLS + BELL_STRIDE * this.size + rank); }

  setStatus(rank: number, s: number): void {
    Atomics.store(this.i32, BELLS + BELL_STRIDE * this.size + rank, s);
    this.ringAll();
  }

  /** Records the first failure (later ones are ignored) and wakes every comm thread. Main thread only. */
  abort(rank: number, reason: string): void {
    if (Atomics.load(this.i32, 0) !== 0) return;
    const bytes = encoder.encode(reason).subarray(0, REASON_BYTES);
    new Uint8Array(this.sab, this.reasonOffset(), bytes.length).set(bytes);
    this.i32[1] = rank;
    this.i32[2] = bytes.length;
    Atomics.store(this.i32, 0, 1);
    this.ringAll();
  }

  aborted(): { rank: number; reason: string } | null {
    if (Atomics.load(this.i32, 0) === 0) return null;
    const bytes = new Uint8Array(this.i32[2]!);
    bytes.set(new Uint8Array(this.sab, this.reasonOffset(), bytes.length));
    return { rank: this.i32[1]!, reason: decoder.decode(bytes) };
  }

  /**
   * Records the first timeout of the launch (later ones are ignored) and wakes every comm thread,
   * so that every rank writes its flight dump. Any comm thread; true for the one that was first.
   */
  timedOut(rank: number, reason: string): boolean {
    if (Atomics.compareExchange(this.i32, HUNG, 0, -1) !== 0) return false;
    const bytes = encoder.encode(reason).subarray(0, REASON_BYTES);
    new Uint8Array(this.sab, this.reasonOffset() + REASON_BYTES, bytes.length).set(bytes);
    this.i32[HUNG + 1] = bytes.length;
    Atomics.store(this.i32, HUNG, rank + 1);
    this.ringAll();
    return true;
  }

  /** The launch's first timeout, once its reason is complete. */
  firstTimeout(): { rank: number; reason: string } | null {
    const h = Atomics.load(this.i32, HUNG);
    if (h <= 0) return null;
    const bytes = new Uint8Array(this.i32[HUNG + 1]!);
    bytes.set(new Uint8Array(this.sab, this.reasonOffset() + REASON_BYTES, bytes.length));
    return { rank: h - 1, reason: decoder.decode(bytes) };
  }

  /**
   * Rank thread of `rank` only: publishes its flight recorder's activity for peers' diagnostics
   * (the first ACTIVITY_TEXT bytes). A version word, odd while writing, lets readers skip a torn copy.
   */
  setActivity(rank: number, text: string, at: number): void {
    const off = this.activityOffset(rank);
    const ver = off / 4;
    const v = this.i32[ver]!;
    Atomics.store(this.i32, ver, v + 1);
    const { written } = encoder.encodeInto(text, new Uint8Array(this.sab, off + 16, ACTIVITY_TEXT));
    this.i32[ver + 1] = written;
    new Float64Array(this.sab, off + 8, 1)[0] = at;
    Atomics.store(this.i32, ver, v + 2);
  }

  /** Rank `rank`'s latest activity, or null when none was noted (or it is being rewritten). */
  activity(rank: number): { text: string; at: number } | null {
    const off = this.activityOffset(rank);
    const ver = off / 4;
    const v = Atomics.load(this.i32, ver);
    if (v === 0 || (v & 1) === 1) return null;
    const bytes = new Uint8Array(Math.min(ACTIVITY_TEXT, this.i32[ver + 1]!));
    bytes.set(new Uint8Array(this.sab, off + 16, bytes.length));
    const at = new Float64Array(this.sab, off + 8, 1)[0]!;
    if (Atomics.load(this.i32, ver) !== v) return null;
    return { text: decoder.decode(bytes), at };
  }

  private reasonOffset(): number { return align((BELLS + (BELL_STRIDE + 1) * this.size) * 4, 8); }
  private activityOffset(rank: number): number { return this.reasonOffset() + 2 * REASON_BYTES + rank * ACTIVITY_BYTES; }
}

/** Int32 words per channel slot's metadata: byte length, tag, element count, flags (dtype | FIRST). */
const META = 4;
export const FIRST = 16;
/** Slots per channel: enough to keep a sender a few chunks ahead of its receiver. */
const SLOTS = 4;
/** Words of a header slot before the allToAllV counts. */
export const HDR = 8;
/** Bytes of data a header slot carries inline (the 'inline' all-reduce: no channel round at all). */
export const INLINE_BYTES = 256;

export interface GroupGeometry {
  size: number;
  regionBytes: number;
  headerInts: number;
  /** Word offset, within a header slot, of the inline data (8-byte aligned). */
  inlineWord: number;
  collSlotBytes: number;
  p2pSlotBytes: number;
  slots: number;
  /** Total bytes of the group's SharedArrayBuffer. */
  bytes: number;
  /** Int32 index of channel (kind 0 collective / 1 point-to-point, src -> dst)'s counters. */
  ctlIndex(kind: number, src: number, dst: number): number;
  /** Int32 index of the sequence number of the last collective rank r completed (0: none). */
  doneIndex(r: number): number;
  dataOffset(kind: number, src: number, dst: number): number;
}

/** 4 MiB per rank and group: collective chunks of 768 KiB on 2 ranks, 110 KiB on 8; 256 KiB and 37 KiB point-to-point. */
export const DEFAULT_REGION_BYTES = 4 << 20;

export function groupGeometry(size: number, regionBytes = DEFAULT_REGION_BYTES): GroupGeometry {
  const peers = Math.max(1, size - 1);
  const slotBytes = (share: number): number => Math.max(4096, Math.floor(share / peers / SLOTS / 64) * 64);
  const collSlotBytes = slotBytes((regionBytes * 3) / 4);
  const p2pSlotBytes = slotBytes(regionBytes / 4);
  const inlineWord = align(HDR + 2 * size, 2);
  const headerInts = inlineWord + INLINE_BYTES / 4;
  // Counters padded to 64 bytes apart: the sender's tail and the receiver's head live on
  // different cache lines.
  const chanInts = 32 + align(SLOTS * META, 16);
  const doneBase = 2 * size * headerInts;
  const ctlBase = align(doneBase + size, 16);
  const ctlInts = ctlBase + 2 * size * size * chanInts;
  const dataBase = align(ctlInts * 4, 64);
  const region = (SLOTS * (collSlotBytes + p2pSlotBytes)) * peers;
  const pairIndex = (src: number, dst: number): number => src < dst ? src : src - 1;
  return {
    size, regionBytes, headerInts, inlineWord, collSlotBytes, p2pSlotBytes, slots: SLOTS,
    bytes: dataBase + (size > 1 ? region * size : 0),
    ctlIndex: (kind, src, dst) => ctlBase + ((kind * size + src) * size + dst) * chanInts,
    doneIndex: (r) => doneBase + r,
    dataOffset: (kind, src, dst) => dataBase + dst * region + (kind === 0 ? 0 : SLOTS * collSlotBytes * peers)
      + pairIndex(src, dst) * SLOTS * (kind === 0 ? collSlotBytes : p2pSlotBytes),
  };
}

/**
 * One direction between two ranks: a ring of `slots` windows of `slotBytes`. The sender alone
 * advances `tail` (messages written), the receiver alone `head` (messages consumed).
 */
export class Channel {
  private readonly tail: number;
  private readonly head: number;
  private readonly meta: number;

  constructor(readonly ctl: Int32Array, base: number, readonly sab: SharedArrayBuffer, readonly dataOffset: number, readonly slots: number, readonly slotBytes: number) {
    this.tail = base;
    this.head = base + 16;
    this.meta = base + 32;
  }

  /** Sender: byte offset of the next free window, or -1 when all are unread. */
  free(): number {
    const t = Atomics.load(this.ctl, this.tail);
    return t - Atomics.load(this.ctl, this.head) < this.slots ? this.dataOffset + (t % this.slots) * this.slotBytes : -1;
  }

  /** Sender: publishes the window returned by `free()`. */
  publish(bytes: number, tag = 0, count = 0, flags = 0): void {
    const t = this.ctl[this.tail]!;
    const m = this.meta + (t % this.slots) * META;
    this.ctl[m] = bytes;
    this.ctl[m + 1] = tag;
    this.ctl[m + 2] = count;
    this.ctl[m + 3] = flags;
    Atomics.store(this.ctl, this.tail, t + 1);
  }

  /** Receiver: index of the oldest unread window, or -1. */
  peek(): number {
    const h = Atomics.load(this.ctl, this.head);
    return h < Atomics.load(this.ctl, this.tail) ? h % this.slots : -1;
  }

  offset(slot: number): number { return this.dataOffset + slot * this.slotBytes; }
  bytes(slot: number): number { return this.ctl[this.meta + slot * META]!; }
  tag(slot: number): number { return this.ctl[this.meta + slot * META + 1]!; }
  count(slot: number): number { return this.ctl[this.meta + slot * META + 2]!; }
  flags(slot: number): number { return this.ctl[this.meta + slot * META + 3]!; }

  /** Receiver: hands the oldest window back to the sender. */
  release(): void { Atomics.store(this.ctl, this.head, this.ctl[this.head]! + 1); }
}
