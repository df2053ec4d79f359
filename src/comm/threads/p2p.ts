/**
 * Point-to-point messages on a comm thread. Sends to one destination go out in order through the
 * pair's point-to-point channel, each message framed by its first chunk's metadata (tag, element
 * count, dtype). Receives match by tag, not arrival: a message whose tag nobody waits for is set
 * aside (copied out of the channel) once some receive from that source is waiting, so the channel
 * keeps moving; with no receive posted it stays in the channel and flow control holds its sender.
 */
import type { CommArray } from '../process_group.js';
import { Mismatch } from './comm_group.js';
import type { Group } from './comm_group.js';
import { DTYPES, DTYPE_BYTES, FIRST, typedView } from './layout.js';
import { copyInto } from './transport.js';
import type { Gen } from './transport.js';

export interface RecvEntry {
  tag: number;
  arr: CommArray;
  dtype: number;
  desc: string;
  matched: boolean;
  complete: boolean;
  error: string | null;
}

interface Unexpected { tag: number; dtype: number; count: number; data: CommArray }

/** Point-to-point arrivals from one source: posted receives, messages nobody matched yet, the message being read. */
export interface Inbox {
  /** Chunks consumed so far: every receive waiting on this source counts them as its progress. */
  moved: number;
  posted: RecvEntry[];
  unexpected: Unexpected[];
  cur: { entry: RecvEntry | null; sink: CommArray | null; unexp: Unexpected | null; done: number; count: number; dtype: number } | null;
}

function newArray(dtype: number, n: number): CommArray {
  return dtype === 1 ? new Float32Array(n) : dtype === 2 ? new Float64Array(n) : new Int32Array(n);
}

export function* p2pSend(g: Group, dst: number, tag: number, arr: CommArray, dtype: number): Gen {
  const ch = g.p2pTo(dst);
  const bpe = DTYPE_BYTES[dtype]!;
  const chunk = Math.floor(ch.slotBytes / bpe);
  let done = 0;
  let first = true;
  while (first || done < arr.length) {
    const off = ch.free();
    if (off < 0) { yield dst; continue; }
    const n = Math.min(chunk, arr.length - done);
    copyInto(typedView(dtype, ch.sab, off, n), 0, arr.subarray(done, done + n));
    ch.publish(n * bpe, tag, arr.length, dtype | (first ? FIRST : 0));
    first = false;
    done += n;
    g.work++;
    g.notify(dst);
  }
}

/** Reads point-to-point messages from `src` into the receives posted for their tags. */
function serviceInbox(g: Group, src: number): void {
  const box = g.inbox[src]!;
  const me = g.who(g.rank);
  const deliver = (e: RecvEntry, dtype: number, count: number): boolean => {
    if (dtype === e.dtype && count === e.arr.length) return true;
    e.error = `${e.desc}: ${g.who(src)} sent ${count} ${DTYPES[dtype]} elements, ${me} expects ${e.arr.length} ${DTYPES[e.dtype]}`;
    return false;
  };
  for (const e of box.posted) {
    if (e.matched) continue;
    const i = box.unexpected.findIndex((u) => u.tag === e.tag);
    if (i < 0) continue;
    const u = box.unexpected.splice(i, 1)[0]!;
    e.matched = true;
    if (deliver(e, u.dtype, u.count)) copyInto(e.arr, 0, u.data);
    e.complete = true;
    box.moved++;
    g.work++;
  }
  const ch = g.p2pFrom(src);
  for (;;) {
    const s = ch.peek();
    if (s < 0) return;
    if (box.cur === null) {
      if ((ch.flags(s) & FIRST) === 0) throw new Error(`protocol error: a point-to-point message from ${g.who(src)} starts mid-message`);
      const tag = ch.tag(s);
      const count = ch.count(s);
      const dtype = ch.flags(s) & (FIRST - 1);
      const e = box.posted.find((r) => !r.matched && r.tag === tag);
      if (e !== undefined) {
        e.matched = true;
        box.cur = { entry: e, sink: deliver(e, dtype, count) ? e.arr : null, unexp: null, done: 0, count, dtype };
      } else if (box.posted.some((r) => !r.matched)) {
        // Someone waits for another tag: set this message aside so the channel moves on.
        const u = { tag, dtype, count, data: newArray(dtype, count) };
        box.cur = { entry: null, sink: u.data, unexp: u, done: 0, count, dtype };
      } else {
        return; // Nobody waits: the message stays in the channel; the sender's flow control holds the rest.
      }
    }
    const cur = box.cur;
    const n = ch.bytes(s) / DTYPE_BYTES[cur.dtype]!;
    if (cur.sink !== null) copyInto(cur.sink, cur.done, typedView(cur.dtype, ch.sab, ch.offset(s), n));
    cur.done += n;
    ch.release();
    box.moved++;
    g.work++;
    g.notify(src);
    if (cur.done >= cur.count) {
      if (cur.entry !== null) cur.entry.complete = true;
      if (cur.unexp !== null) box.unexpected.push(cur.unexp);
      box.cur = null;
    }
  }
}

export function* p2pRecv(g: Group, src: number, e: RecvEntry): Gen {
  const box = g.inbox[src]!;
  let seen = box.moved;
  for (;;) {
    serviceInbox(g, src);
    // Another receive's step may have moved this one's message: that is progress for it too.
    if (box.moved !== seen) { seen = box.moved; g.work++; }
    if (e.complete) {
      if (e.error !== null) throw new Mismatch(e.error);
      return;
    }
    yield src;
  }
}
