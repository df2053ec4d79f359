/**
 * The rank side of the threads backend. A `ThreadsProcessGroup` turns each call into a request for
 * the rank's comm thread (one per rank, started with the world group and shared by every
 * sub-group): the caller's array is copied into a staging SharedArrayBuffer (onnxruntime takes
 * only ordinary ArrayBuffers, so callers keep those), the request is posted and the comm thread's
 * doorbell rung. The comm thread runs the operation with its peers' comm threads through shared
 * memory and posts completion back; the result is copied out to the caller's array on this thread
 * when the completion is handled, and `wait()` resolves. The rank's thread may be blocked (in an
 * onnxruntime `run`) the whole time: communication does not need it.
 *
 *   const w = pg.allReduce(grads, 'mean');   // returns at once
 *   session.run(...);                        // blocks this thread; the all-reduce proceeds
 *   await w.wait();                          // grads now holds the mean over ranks
 */
import type { CommArray, ProcessGroup, ReduceOp } from '../process_group.js';
import { CollectiveError } from '../process_group.js';
import { ALGORITHMS, DTYPE_BYTES, DTYPES, dtypeCode, INLINE_BYTES, groupGeometry, reduceCode, typedView } from './layout.js';
import type { AllReduceAlgorithm, CollOp } from './layout.js';
import { CommLink } from './link.js';
import type { ThreadsWork } from './link.js';
import { now } from './protocol.js';
import type { CollRequest, GroupInit, P2pRequest, RankInit } from './protocol.js';

export { ThreadsWork } from './link.js';

/**
 * All-reduces of at least this many bytes use the ring, smaller ones recursive doubling (and up to
 * INLINE_BYTES the inline algorithm). Measured with bench/collectives.ts (float32 sum, median of 3
 * launches, us per op, 4 MiB regions) on the 2-core development machine, which other jobs were
 * loading (load average 2-5: single points vary by +-30%):
 *
 *   bytes      2 ranks rd / ring   4 ranks rd / ring    8 ranks rd / ring    inline 2 / 4 / 8
 *   256 B         130 / 146           462 / 697           1300 / 3024         107 / 373 / 981
 *   4 KiB         148 / 162           393 / 635           1932 / 2509
 *   16 KiB        157 / 164           472 / 568           1382 / 1959
 *   64 KiB        224 / 211           765 / 702           1934 / 4161
 *   256 KiB       516 / 382          1663 / 1191          5323 / 3690
 *   1 MiB        1608 / 1103         6079 / 3442         17602 / 9035
 *   4 MiB        7814 / 6791        23769 / 14839        68560 / 33929
 *   16 MiB      29989 / 23819       86019 / 57181       237449 / 118674
 *
 * The ring wins from 64 KiB on 2 and 4 ranks and from 256 KiB on 8; two earlier sweeps (one in x2
 * steps) put the crossovers at 64/256/256 and 32-64/64/64 KiB. 128 KiB sits between all of them.
 */
export const RING_MIN_BYTES = 128 << 10;

/**
 * Picks the all-reduce algorithm by message size: up to INLINE_BYTES the data rides in the
 * collective's header (one synchronisation, no channel traffic), then recursive doubling, and the
 * ring from RING_MIN_BYTES.
 */
export function chooseAllReduce(bytes: number): AllReduceAlgorithm {
  return bytes <= INLINE_BYTES ? 'inline' : bytes < RING_MIN_BYTES ? 'recursive_doubling' : 'ring';
}

/** Hands SharedArrayBuffers between rank threads (through the launcher) when a split makes a sub-group. */
export interface SharedBroker {
  put(name: string, sab: SharedArrayBuffer, readers: number): void;
  get(name: string, timeoutMs: number): Promise<SharedArrayBuffer>;
}

interface Buf { length: number; fill?: (v: CommArray) => void }

export interface ThreadsGroupOptions {
  /** 'auto' (default) picks by message size, see `chooseAllReduce`. */
  allReduceAlgorithm?: 'auto' | AllReduceAlgorithm;
}

const checkRoot = (what: string, root: number, size: number): void => {
  if (!(Number.isInteger(root) && root >= 0 && root < size)) throw new RangeError(`${what}: root ${root} is not a rank of this group of ${size}`);
};

function checkSame(what: string, a: CommArray, b: CommArray): void {
  if (dtypeCode(a) !== dtypeCode(b)) throw new TypeError(`${what}: input is ${DTYPES[dtypeCode(a)]} but out is ${DTYPES[dtypeCode(b)]}`);
}

function checkReduce(what: string, op: ReduceOp): void {
  if (op !== 'sum' && op !== 'mean' && op !== 'max') throw new RangeError(`${what}: reduce op must be 'sum', 'mean' or 'max', got '${String(op)}'`);
}

/** Ranks are worker threads of one process; see the module comment. */
export class ThreadsProcessGroup implements ProcessGroup {
  readonly backend = 'threads';
  private seq = 0;
  private sends = 0;
  private recvs = 0;
  private destroyed = false;
  private readonly algorithm: 'auto' | AllReduceAlgorithm;

  private constructor(private readonly link: CommLink, private readonly gid: number, readonly name: string,
    readonly rank: number, readonly size: number, readonly members: readonly number[], readonly timeoutMs: number,
    private readonly regionBytes: number, private readonly broker: SharedBroker, opts: ThreadsGroupOptions) {
    this.algorithm = opts.allReduceAlgorithm ?? 'auto';
  }

  /** The world group of a rank started by `launchThreads` (rank_worker.ts calls this). */
  static start(init: RankInit, broker: SharedBroker): ThreadsProcessGroup {
    const members = Array.from({ length: init.size }, (_, i) => i);
    const world: GroupInit = { type: 'group', gid: 0, name: 'world', sab: init.world, members, rank: init.rank, regionBytes: init.regionBytes };
    const link = new CommLink(init.rank, init.control, init.timeoutMs, world);
    return new ThreadsProcessGroup(link, 0, 'world', init.rank, init.size, members, init.timeoutMs, init.regionBytes, broker, { allReduceAlgorithm: init.allReduceAlgorithm });
  }

  /** Operations of this rank (every group) submitted to the comm thread and not yet completed. */
  get inFlight(): number { return this.link.inFlight; }

  private live(what: string): void {
    if (this.destroyed) throw new CollectiveError(`rank ${this.rank}: ${what} on a destroyed process group`);
  }

  /** Stages `bufs`, posts the collective; `finish` copies results out (on this thread, at completion). */
  private coll(op: CollOp, hdr: { dtype: number; count: number; root?: number; reduce?: ReduceOp; algo?: AllReduceAlgorithm; counts?: number[] },
    bufs: Buf[], finish: ((views: CommArray[]) => void) | null): ThreadsWork {
    this.live(op);
    const seq = ++this.seq;
    const bytes = DTYPE_BYTES[hdr.dtype]!;
    const stagings = bufs.map((b) => this.link.stage(b.length * bytes));
    const views = bufs.map((b, i) => typedView(hdr.dtype, stagings[i]!.sab, 0, b.length));
    bufs.forEach((b, i) => b.fill?.(views[i]!));
    const req: CollRequest = {
      type: 'coll', id: 0, gid: this.gid, op, seq, dtype: hdr.dtype, count: hdr.count, root: hdr.root ?? 0,
      reduce: reduceCode(hdr.reduce ?? null), algo: hdr.algo === undefined ? 0 : ALGORITHMS.indexOf(hdr.algo),
      bufs: bufs.map((b, i) => this.link.ref(stagings[i]!, b.length)),
    };
    if (hdr.counts !== undefined) req.counts = hdr.counts;
    const label = `${op}#${seq}`;
    const count = op === 'allToAllV' ? bufs[0]!.length : hdr.count;
    const at = now();
    const ticket = this.link.flight.issue(this.name, op, seq, label, count, DTYPES[hdr.dtype]!, -1, -1, at);
    return this.link.submit(label, req, stagings, finish === null ? null : () => finish(views), ticket, at);
  }

  allReduce(buf: CommArray, op: ReduceOp = 'sum'): ThreadsWork {
    const algo = this.algorithm === 'auto' ? chooseAllReduce(buf.byteLength) : this.algorithm;
    return this.allReduceWith(buf, op, algo);
  }

  /** allReduce with a fixed algorithm (every rank must pick the same; the header check enforces it). */
  allReduceWith(buf: CommArray, op: ReduceOp, algo: AllReduceAlgorithm): ThreadsWork {
    const dtype = dtypeCode(buf);
    checkReduce('allReduce', op);
    if (algo === 'inline' && buf.byteLength > INLINE_BYTES) throw new RangeError(`allReduce: the inline algorithm carries at most ${INLINE_BYTES} bytes, got ${buf.byteLength}`);
    return this.coll('allReduce', { dtype, count: buf.length, reduce: op, algo }, [{ length: buf.length, fill: (v) => copy(v, buf) }], ([v]) => copy(buf, v!));
  }

  broadcast(buf: CommArray, root: number): ThreadsWork {
    const dtype = dtypeCode(buf);
    checkRoot('broadcast', root, this.size);
    const me = this.rank === root;
    return this.coll('broadcast', { dtype, count: buf.length, root }, [{ length: buf.length, fill: me ? (v) => copy(v, buf) : undefined }], me ? null : ([v]) => copy(buf, v!));
  }

  reduce(buf: CommArray, root: number, op: ReduceOp = 'sum'): ThreadsWork {
    const dtype = dtypeCode(buf);
    checkRoot('reduce', root, this.size);
    checkReduce('reduce', op);
    return this.coll('reduce', { dtype, count: buf.length, root, reduce: op }, [{ length: buf.length, fill: (v) => copy(v, buf) }], this.rank === root ? ([v]) => copy(buf, v!) : null);
  }

  allGather(input: CommArray, out: CommArray): ThreadsWork {
    const dtype = dtypeCode(input);
    checkSame('allGather', input, out);
    const k = input.length;
    if (out.length !== this.size * k) throw new RangeError(`allGather: out has ${out.length} elements, expected group size x input = ${this.size} x ${k} = ${this.size * k}`);
    return this.coll('allGather', { dtype, count: k }, [{ length: this.size * k, fill: (v) => copy(v, input, this.rank * k) }], ([v]) => copy(out, v!));
  }

  reduceScatter(input: CommArray, out: CommArray, op: ReduceOp = 'sum'): ThreadsWork {
    const dtype = dtypeCode(input);
    checkSame('reduceScatter', input, out);
    checkReduce('reduceScatter', op);
    const m = input.length;
    if (m % this.size !== 0) throw new RangeError(`reduceScatter: input has ${m} elements, not divisible by the group size ${this.size} (equal blocks, as MPI_Reduce_scatter_block)`);
    const k = m / this.size;
    if (out.length !== k) throw new RangeError(`reduceScatter: out has ${out.length} elements, expected input / group size = ${m} / ${this.size} = ${k}`);
    return this.coll('reduceScatter', { dtype, count: m, reduce: op }, [{ length: m, fill: (v) => copy(v, input) }], ([v]) => copy(out, v!.subarray(this.rank * k, (this.rank + 1) * k)));
  }

  gather(input: CommArray, out: CommArray | null, root: number): ThreadsWork {
    const dtype = dtypeCode(input);
    checkRoot('gather', root, this.size);
    const k = input.length;
    if (this.rank !== root) return this.coll('gather', { dtype, count: k, root }, [{ length: k, fill: (v) => copy(v, input) }], null);
    if (out === null) throw new TypeError(`gather: the root (rank ${root}) needs an out array`);
    checkSame('gather', input, out);
    if (out.length !== this.size * k) throw new RangeError(`gather: out has ${out.length} elements, expected group size x input = ${this.size} x ${k} = ${this.size * k}`);
    return this.coll('gather', { dtype, count: k, root }, [{ length: this.size * k, fill: (v) => copy(v, input, root * k) }], ([v]) => copy(out, v!));
  }

  scatter(input: CommArray | null, out: CommArray, root: number): ThreadsWork {
    const dtype = dtypeCode(out);
    checkRoot('scatter', root, this.size);
    const k = out.length;
    if (this.rank !== root) return this.coll('scatter', { dtype, count: k, root }, [{ length: k }], ([v]) => copy(out, v!));
    if (input === null) throw new TypeError(`scatter: the root (rank ${root}) needs an input array`);
    checkSame('scatter', input, out);
    if (input.length !== this.size * k) throw new RangeError(`scatter: input has ${input.length} elements, expected group size x out = ${this.size} x ${k} = ${this.size * k}`);
    return this.coll('scatter', { dtype, count: k, root }, [{ length: this.size * k, fill: (v) => copy(v, input) }], ([v]) => copy(out, v!.subarray(root * k, (root + 1) * k)));
  }

  allToAll(input: CommArray, out: CommArray): ThreadsWork {
    const dtype = dtypeCode(input);
    checkSame('allToAll', input, out);
    const m = input.length;
    if (m % this.size !== 0) throw new RangeError(`allToAll: input has ${m} elements, not divisible by the group size ${this.size}`);
    if (out.length !== m) throw new RangeError(`allToAll: out has ${out.length} elements, input has ${m}; they must match`);
    return this.coll('allToAll', { dtype, count: m }, [{ length: m, fill: (v) => copy(v, input) }, { length: m }], ([, v]) => copy(out, v!));
  }

  /** The first sum(sendCounts) elements of `input` are sent; the first sum(recvCounts) of `out` are written. */
  allToAllV(input: CommArray, sendCounts: readonly number[], out: CommArray, recvCounts: readonly number[]): ThreadsWork {
    const dtype = dtypeCode(input);
    checkSame('allToAllV', input, out);
    const sum = (what: string, c: readonly number[], cap: number, arr: string): number => {
      if (c.length !== this.size || !c.every((x) => Number.isInteger(x) && x >= 0)) throw new RangeError(`allToAllV: ${what} must be ${this.size} non-negative integers, got [${c.join(', ')}]`);
      const s = c.reduce((a, b) => a + b, 0);
      if (s > cap) throw new RangeError(`allToAllV: ${what} add up to ${s} elements but ${arr} has ${cap}`);
      return s;
    };
    const ns = sum('sendCounts', sendCounts, input.length, 'input');
    const nr = sum('recvCounts', recvCounts, out.length, 'out');
    return this.coll('allToAllV', { dtype, count: 0, counts: [...sendCounts, ...recvCounts] },
      [{ length: ns, fill: (v) => copy(v, input.subarray(0, ns)) }, { length: nr }], ([, v]) => copy(out, v!));
  }

  barrier(): ThreadsWork {
    return this.coll('barrier', { dtype: 3, count: 0 }, [], null);
  }

  private p2p(type: 'send' | 'recv', buf: CommArray, peer: number, tag: number): ThreadsWork {
    this.live(type);
    const dtype = dtypeCode(buf);
    if (!(Number.isInteger(peer) && peer >= 0 && peer < this.size && peer !== this.rank)) {
      throw new RangeError(`${type}: peer ${peer} must be another rank of this group of ${this.size} (this is rank ${this.rank})`);
    }
    if (!(Number.isInteger(tag) && tag >= 0 && tag <= 0x7fffffff)) throw new RangeError(`${type}: tag must be an integer in [0, 2^31), got ${tag}`);
    const seq = type === 'send' ? ++this.sends : ++this.recvs;
    const s = this.link.stage(buf.byteLength);
    const v = typedView(dtype, s.sab, 0, buf.length);
    if (type === 'send') copy(v, buf);
    const req: P2pRequest = { type, id: 0, gid: this.gid, seq, peer, tag, dtype, buf: this.link.ref(s, buf.length) };
    const label = `${type}#${seq}`;
    const at = now();
    const ticket = this.link.flight.issue(this.name, type, seq, label, buf.length, DTYPES[dtype]!, peer, tag, at);
    return this.link.submit(label, req, [s], type === 'recv' ? () => copy(buf, v) : null, ticket, at);
  }

  send(buf: CommArray, dst: number, tag = 0): ThreadsWork { return this.p2p('send', buf, dst, tag); }
  recv(buf: CommArray, src: number, tag = 0): ThreadsWork { return this.p2p('recv', buf, src, tag); }

  async split(color: number, key: number = this.rank): Promise<ProcessGroup> {
    for (const [what, v] of [['color', color], ['key', key]] as const) {
      if (!(Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff)) throw new RangeError(`split: ${what} must be a 32-bit integer, got ${v}`);
    }
    const n = this.size;
    const table = new Int32Array(2 * n);
    const work = this.coll('split', { dtype: 3, count: 2 }, [{ length: 2 * n, fill: (v) => { v[2 * this.rank] = color; v[2 * this.rank + 1] = key; } }], ([v]) => copy(table, v!));
    await work.wait();
    const members = Array.from({ length: n }, (_, j) => j)
      .filter((j) => table[2 * j] === color)
      .sort((a, b) => table[2 * a + 1]! - table[2 * b + 1]! || a - b);
    const rank = members.indexOf(this.rank);
    const name = `${this.name}/${work.label}:${color}`;
    const geo = groupGeometry(members.length, this.regionBytes);
    let sab: SharedArrayBuffer;
    if (rank === 0) {
      sab = new SharedArrayBuffer(geo.bytes);
      if (members.length > 1) this.broker.put(name, sab, members.length - 1);
    } else {
      try {
        sab = await this.broker.get(name, this.timeoutMs);
      } catch (e) {
        throw new CollectiveError(`rank ${this.rank}: ${work.label} failed waiting for rank ${members[0]} to share the sub-group's memory: ${(e as Error).message}`);
      }
    }
    const gid = this.link.nextGid++;
    const worldMembers = members.map((j) => this.members[j]!);
    this.link.post({ type: 'group', gid, name, sab, members: worldMembers, rank, regionBytes: this.regionBytes });
    return new ThreadsProcessGroup(this.link, gid, name, rank, members.length, worldMembers, this.timeoutMs, this.regionBytes, this.broker, { allReduceAlgorithm: this.algorithm });
  }

  /** A sub-group releases its channels; the world group also stops the comm thread (every sub-group with it). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.gid === 0) await this.link.close(this.timeoutMs);
    else this.link.post({ type: 'close', gid: this.gid });
  }
}

/** dst[offset...] = src (same element type). */
function copy(dst: CommArray, src: CommArray, offset = 0): void {
  (dst as Float64Array).set(src as Float64Array, offset);
}
