/**
 * Moving a range of a staging array through a channel, chunk by chunk, without blocking: a
 * `Xfer` is one send or receive; `pump` advances a set of them until all are complete, yielding
 * the peer it waits for whenever none can move. The comm thread's engine resumes the generator
 * when a doorbell rings. Chunks are always full windows (the last one excepted), so every
 * transfer over a channel cuts a range the same way and `limit`s line up with chunk boundaries.
 */
import type { CommArray } from '../process_group.js';
import type { Channel } from './layout.js';
import { typedView } from './layout.js';

export type Gen = Generator<number, void, void>;

/** What a pump needs from its group: a progress counter and a way to wake a peer. */
export interface PumpHost {
  /** Incremented on every chunk moved or flag seen; the engine sleeps only when it stands still. */
  work: number;
  /** Wakes the comm thread of group rank `peer`. */
  notify(peer: number): void;
}

/** Receive modes: copy, or reduce with sum (1) or max (3) (codes of REDUCE_OPS; mean reduces as sum). */
export const COPY = 0;
export const SUM = 1;
export const MAX = 3;

export class Xfer {
  done = 0;
  readonly dtype: number;

  /**
   * @param limit  elements of the range that may be moved so far (for relays: what has arrived;
   *               for in-place exchanges: what has been sent); null means all.
   * @param divisor  a SUM receive that completes a mean: each element is divided by it as it is reduced (0: none).
   */
  constructor(readonly send: boolean, readonly ch: Channel, readonly peer: number, readonly arr: CommArray,
    readonly start: number, readonly count: number, readonly mode = COPY, readonly limit: (() => number) | null = null,
    readonly divisor = 0) {
    this.dtype = arr instanceof Float32Array ? 1 : arr instanceof Float64Array ? 2 : 3;
  }
}

const DONE = 0;
const CHANNEL = 1;
const LIMIT = 2;

export function copyInto(dst: CommArray, dstOffset: number, src: CommArray): void {
  (dst as Float64Array).set(src as Float64Array, dstOffset);
}

// One function per element type and op: V8 compiles a loop over a single typed-array kind into
// tight machine code; a loop that has seen several kinds is ~3x slower (measured: 1.6 vs 0.5 GB/s
// for a float32 sum over 64 KiB chunks on the 2-core development machine). The float32 sums are
// unrolled by four, which V8 does not do itself.
function sumF32(d: Float32Array, o: number, s: Float32Array, n: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const j = o + i;
    d[j] = d[j]! + s[i]!; d[j + 1] = d[j + 1]! + s[i + 1]!; d[j + 2] = d[j + 2]! + s[i + 2]!; d[j + 3] = d[j + 3]! + s[i + 3]!;
  }
  for (; i < n; i++) d[o + i] = d[o + i]! + s[i]!;
}
function sumF64(d: Float64Array, o: number, s: Float64Array, n: number): void { for (let i = 0; i < n; i++) d[o + i] = d[o + i]! + s[i]!; }
function sumI32(d: Int32Array, o: number, s: Int32Array, n: number): void { for (let i = 0; i < n; i++) d[o + i] = (d[o + i]! + s[i]!) | 0; }
// Sum and mean in one pass: the element is rounded to its type after the sum, then divided, so
// the result is exactly the sum's (sumX) followed by divX's, one pass over the data fewer.
function sumDivF32(d: Float32Array, o: number, s: Float32Array, n: number, k: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const j = o + i;
    d[j] = Math.fround(d[j]! + s[i]!) / k; d[j + 1] = Math.fround(d[j + 1]! + s[i + 1]!) / k;
    d[j + 2] = Math.fround(d[j + 2]! + s[i + 2]!) / k; d[j + 3] = Math.fround(d[j + 3]! + s[i + 3]!) / k;
  }
  for (; i < n; i++) d[o + i] = Math.fround(d[o + i]! + s[i]!) / k;
}
function sumDivF64(d: Float64Array, o: number, s: Float64Array, n: number, k: number): void { for (let i = 0; i < n; i++) d[o + i] = (d[o + i]! + s[i]!) / k; }
function sumDivI32(d: Int32Array, o: number, s: Int32Array, n: number, k: number): void { for (let i = 0; i < n; i++) d[o + i] = ((d[o + i]! + s[i]!) | 0) / k; }
function maxF32(d: Float32Array, o: number, s: Float32Array, n: number): void { for (let i = 0; i < n; i++) { const v = s[i]!; if (v > d[o + i]!) d[o + i] = v; } }
function maxF64(d: Float64Array, o: number, s: Float64Array, n: number): void { for (let i = 0; i < n; i++) { const v = s[i]!; if (v > d[o + i]!) d[o + i] = v; } }
function maxI32(d: Int32Array, o: number, s: Int32Array, n: number): void { for (let i = 0; i < n; i++) { const v = s[i]!; if (v > d[o + i]!) d[o + i] = v; } }
function divF32(a: Float32Array, lo: number, hi: number, k: number): void { for (let i = lo; i < hi; i++) a[i] = a[i]! / k; }
function divF64(a: Float64Array, lo: number, hi: number, k: number): void { for (let i = lo; i < hi; i++) a[i] = a[i]! / k; }
function divI32(a: Int32Array, lo: number, hi: number, k: number): void { for (let i = lo; i < hi; i++) a[i] = a[i]! / k; }

/**
 * dst[off + i] = op(dst[off + i], src[i]) for i < n, op sum (1) or max (3), in dst's element type
 * (int32 sums wrap). With `divisor` (sum only), each sum is then divided by it: the mean's last
 * reduction, exactly as reduceInto followed by `divide`.
 */
export function reduceInto(dst: CommArray, off: number, src: CommArray, n: number, op: number, divisor = 0): void {
  if (divisor !== 0 && op !== MAX) {
    if (dst instanceof Float32Array) sumDivF32(dst, off, src as Float32Array, n, divisor);
    else if (dst instanceof Float64Array) sumDivF64(dst, off, src as Float64Array, n, divisor);
    else sumDivI32(dst, off, src as Int32Array, n, divisor);
    return;
  }
  if (dst instanceof Float32Array) (op === MAX ? maxF32 : sumF32)(dst, off, src as Float32Array, n);
  else if (dst instanceof Float64Array) (op === MAX ? maxF64 : sumF64)(dst, off, src as Float64Array, n);
  else (op === MAX ? maxI32 : sumI32)(dst, off, src as Int32Array, n);
}

/** a[i] = a[i] / k for i in [lo, hi), in a's element type (int32 truncates toward zero). */
export function divide(a: CommArray, lo: number, hi: number, k: number): void {
  if (a instanceof Float32Array) divF32(a, lo, hi, k);
  else if (a instanceof Float64Array) divF64(a, lo, hi, k);
  else divI32(a, lo, hi, k);
}

function stepSend(h: PumpHost, x: Xfer): number {
  const bpe = x.arr.BYTES_PER_ELEMENT;
  const chunk = Math.floor(x.ch.slotBytes / bpe);
  while (x.done < x.count) {
    const n = Math.min(chunk, x.count - x.done);
    if (x.limit !== null && x.done + n > x.limit()) return LIMIT;
    const off = x.ch.free();
    if (off < 0) return CHANNEL;
    const from = x.start + x.done;
    copyInto(typedView(x.dtype, x.ch.sab, off, n), 0, x.arr.subarray(from, from + n));
    x.ch.publish(n * bpe);
    x.done += n;
    h.work++;
    h.notify(x.peer);
  }
  return DONE;
}

function stepRecv(h: PumpHost, x: Xfer): number {
  const bpe = x.arr.BYTES_PER_ELEMENT;
  while (x.done < x.count) {
    const s = x.ch.peek();
    if (s < 0) return CHANNEL;
    const n = x.ch.bytes(s) / bpe;
    if (!(Number.isInteger(n) && n > 0 && x.done + n <= x.count)) {
      throw new Error(`protocol error: a chunk of ${x.ch.bytes(s)} bytes from rank ${x.peer} does not fit the ${x.count - x.done} elements expected`);
    }
    if (x.limit !== null && x.done + n > x.limit()) return LIMIT;
    const src = typedView(x.dtype, x.ch.sab, x.ch.offset(s), n);
    if (x.mode === COPY) copyInto(x.arr, x.start + x.done, src);
    else reduceInto(x.arr, x.start + x.done, src, n, x.mode, x.divisor);
    x.ch.release();
    x.done += n;
    h.work++;
    h.notify(x.peer);
  }
  return DONE;
}

/** Runs transfers concurrently until all are complete; yields the peer it waits for. */
export function* pump(h: PumpHost, xs: readonly Xfer[]): Gen {
  for (;;) {
    let pending = false;
    let blockedOn = -1;
    let before: number;
    // A few passes while chunks keep moving, then yield so the engine also serves the rank's
    // other groups and point-to-point traffic (each pass moves at most one window-ring per transfer).
    let passes = 0;
    do {
      before = h.work;
      pending = false;
      blockedOn = -1;
      for (const x of xs) {
        if (x.done >= x.count) continue;
        const st = x.send ? stepSend(h, x) : stepRecv(h, x);
        if (st === DONE) continue;
        pending = true;
        if (st === CHANNEL && blockedOn < 0) blockedOn = x.peer;
      }
    } while (pending && h.work !== before && ++passes < 4);
    if (!pending) return;
    yield blockedOn >= 0 ? blockedOn : xs.find((x) => x.done < x.count)!.peer;
  }
}
