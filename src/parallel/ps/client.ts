/**
 * A worker's end of the parameter server: pulls and pushes rows of tables by key, split by owner
 * on the consistent-hash ring and sent to every owner at once. Keys of one call must be distinct
 * (the worker deduplicates a batch's ids first: `uniqueIds`). Every method may overlap the others
 * (a pull of the next batch while this batch computes): requests to one server leave in the
 * order they are issued and its replies come back in that order.
 *
 *   const ps = new PsClient(pg, { servers: [4, 5], ring, tables, worker: 0 });
 *   const { values } = await ps.pull(EMB, keys, step);   // keys.length x dim
 *   await ps.push(EMB, keys, grads); await ps.clock(step + 1);
 */
import type { ProcessGroup } from '../../comm/process_group.js';
import { rowKey } from '../hash_ring.js';
import type { HashRing } from '../hash_ring.js';
import { encodePush, pushBytes } from './compress.js';
import type { PushCompression } from './compress.js';
import { CODECS, FAIL, H, HEADER, Op, STAT_NAMES, wordsHash, TAG_KEYS, TAG_REP, TAG_REQ, TAG_RVALS, TAG_RVERS, TAG_VALS } from './protocol.js';
import type { OpCode, ServerStats, ShardWritten } from './protocol.js';
import type { TableSpec } from './store.js';

export interface ClientOptions {
  /** World ranks of the servers; server i is `ps${i}` on the ring. */
  servers: readonly number[];
  /** Where keys live: one ring, or the ring of each step (resizes: parallel/ps/server.ts). */
  ring: HashRing | ((clock: number) => HashRing);
  tables: readonly TableSpec[];
  /** This worker's index (for errors). */
  worker: number;
  compression?: PushCompression;
}

/** A batch's distinct ids and, for each id, its position among them (the batch's local index). */
export function uniqueIds(ids: Int32Array): { keys: Int32Array; local: Int32Array } {
  const pos = new Map<number, number>();
  const local = new Int32Array(ids.length);
  const keys: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const k = ids[i]!;
    let p = pos.get(k);
    if (p === undefined) { p = keys.length; pos.set(k, p); keys.push(k); }
    local[i] = p;
  }
  return { keys: Int32Array.from(keys), local };
}

interface Split { owner: number; idx: Int32Array; keys: Int32Array }

export class PsClient {
  /** Payload bytes sent and received (headers included). */
  bytesOut = 0;
  bytesIn = 0;
  private readonly dims = new Map<number, number>();
  private readonly codec: PushCompression;

  constructor(private readonly pg: ProcessGroup, private readonly opts: ClientOptions) {
    for (const t of opts.tables) this.dims.set(t.id, t.dim);
    this.codec = opts.compression ?? 'none';
    const ring = this.ringAt(0);
    if (ring.servers.length > opts.servers.length) throw new Error(`PsClient: the ring has ${ring.servers.length} servers, the launch ${opts.servers.length}`);
  }

  private ringAt(clock: number): HashRing { return typeof this.opts.ring === 'function' ? this.opts.ring(clock) : this.opts.ring; }

  private dim(table: number): number {
    const d = this.dims.get(table);
    if (d === undefined) throw new Error(`PsClient: unknown table ${table} (tables: ${[...this.dims.keys()].join(', ')})`);
    return d;
  }

  /** Keys grouped by owning server (positions into `keys` kept, to put replies back in place). */
  split(table: number, keys: Int32Array, clock: number): Split[] {
    const S = this.opts.servers.length;
    const ring = this.ringAt(clock);
    // Ring index -> server index (a resized ring names a subset of the servers).
    const server = ring.servers.map((n) => Number(n.slice(2)));
    const owner = new Uint16Array(keys.length);
    const count = new Int32Array(S);
    for (let i = 0; i < keys.length; i++) { const o = server[ring.owner(rowKey(table, keys[i]!))]!; owner[i] = o; count[o]!++; }
    const out: Split[] = [];
    for (let s = 0; s < S; s++) if (count[s]! > 0) out.push({ owner: s, idx: new Int32Array(count[s]!), keys: new Int32Array(count[s]!) });
    const at = new Int32Array(S);
    const byOwner = new Map(out.map((p) => [p.owner, p]));
    for (let i = 0; i < keys.length; i++) {
      const p = byOwner.get(owner[i]!)!;
      const j = at[p.owner]!++;
      p.idx[j] = i;
      p.keys[j] = keys[i]!;
    }
    return out;
  }

  private who(s: number): string { return `parameter server ${s} (rank ${this.opts.servers[s]})`; }

  private header(op: OpCode, table: number, clock: number, n: number, codec = 0, arg = 0): Float64Array {
    const h = new Float64Array(HEADER);
    h[H.op] = op; h[H.table] = table; h[H.clock] = clock; h[H.n] = n; h[H.codec] = codec; h[H.arg] = arg;
    return h;
  }

  private sendTo(s: number, a: Float64Array | Float32Array | Int32Array, tag: number): Promise<void> {
    this.bytesOut += a.byteLength;
    return this.pg.send(a, this.opts.servers[s]!, tag).wait();
  }

  private recvFrom<A extends Float64Array | Float32Array | Int32Array>(s: number, a: A, tag: number): Promise<A> {
    return this.pg.recv(a, this.opts.servers[s]!, tag).wait().then(() => { this.bytesIn += a.byteLength; return a; });
  }

  private async guard<T>(what: string, s: number, p: Promise<T>): Promise<T> {
    try { return await p; } catch (e) {
      throw new Error(`worker ${this.opts.worker}: ${what} with ${this.who(s)} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Rows `keys` of `table` (keys.length x dim, in the order of keys) and their versions, as of a
   * read at `clock` (the worker's step; -1 reads at once, outside the bound: evaluation).
   */
  async pull(table: number, keys: Int32Array, clock: number): Promise<{ values: Float32Array; versions: Int32Array; minClock: number }> {
    const dim = this.dim(table);
    const values = new Float32Array(keys.length * dim);
    const versions = new Int32Array(keys.length);
    let minClock = Infinity;
    await Promise.all(this.split(table, keys, clock).map((p) => this.guard('a pull', p.owner, (async () => {
      const n = p.keys.length;
      const sent = Promise.all([this.sendTo(p.owner, this.header(Op.pull, table, clock, n), TAG_REQ), this.sendTo(p.owner, p.keys, TAG_KEYS)]);
      const [rep, vals, vers] = await Promise.all([
        this.recvFrom(p.owner, new Float64Array(HEADER), TAG_REP),
        this.recvFrom(p.owner, new Float32Array(n * dim), TAG_RVALS),
        this.recvFrom(p.owner, new Int32Array(n), TAG_RVERS),
        sent,
      ]);
      minClock = Math.min(minClock, rep[H.clock]!);
      for (let j = 0; j < n; j++) {
        const i = p.idx[j]!;
        values.set(vals.subarray(j * dim, (j + 1) * dim), i * dim);
        versions[i] = vers[j]!;
      }
    })())));
    return { values, versions, minClock };
  }

  /** Gradients of rows `keys` (keys.length x dim) of step `clock`: to their owners, compressed as configured. */
  async push(table: number, keys: Int32Array, grads: Float32Array, clock: number): Promise<void> {
    const dim = this.dim(table);
    if (grads.length !== keys.length * dim) throw new Error(`PsClient.push: table ${table}: grads has ${grads.length} values, keys ${keys.length} x dim ${dim} = ${keys.length * dim}`);
    const codec = CODECS.indexOf(this.codec);
    await Promise.all(this.split(table, keys, clock).map((p) => {
      const n = p.keys.length;
      const g = new Float32Array(n * dim);
      for (let j = 0; j < n; j++) { const i = p.idx[j]!; g.set(grads.subarray(i * dim, (i + 1) * dim), j * dim); }
      const payload = encodePush(g, dim, this.codec);
      if (this.codec !== 'none' && payload.byteLength !== pushBytes(n, dim, this.codec)) throw new Error('PsClient.push: encoded size disagrees with pushBytes');
      return this.guard('a push', p.owner, Promise.all([
        this.sendTo(p.owner, this.header(Op.push, table, clock, n, codec, payload.length), TAG_REQ),
        this.sendTo(p.owner, p.keys, TAG_KEYS),
        this.sendTo(p.owner, payload, TAG_VALS),
      ]));
    }));
  }

  /** This worker has finished `clock` steps (after every push of the last one was issued). */
  async clock(clock: number): Promise<void> {
    await Promise.all(this.opts.servers.map((_, s) => this.guard(`clock ${clock}`, s, this.sendTo(s, this.header(Op.clock, 0, clock, 0), TAG_REQ))));
  }

  /** Sets the initial rows of a 'given' table (worker 0, before any pull of it); resolves when set. */
  async init(table: number, keys: Int32Array, values: Float32Array): Promise<void> {
    const dim = this.dim(table);
    await Promise.all(this.split(table, keys, 0).map((p) => this.guard('init', p.owner, (async () => {
      const n = p.keys.length;
      const v = new Float32Array(n * dim);
      for (let j = 0; j < n; j++) { const i = p.idx[j]!; v.set(values.subarray(i * dim, (i + 1) * dim), j * dim); }
      await Promise.all([
        this.sendTo(p.owner, this.header(Op.init, table, -1, n), TAG_REQ), this.sendTo(p.owner, p.keys, TAG_KEYS), this.sendTo(p.owner, v, TAG_VALS),
        this.recvFrom(p.owner, new Float64Array(HEADER), TAG_REP),
      ]);
    })())));
  }

  /**
   * Every server writes its shard once all workers have finished `clock` steps; resolves when all
   * are written, with each server's file length and SHA-256, in server order.
   */
  async save(clock: number): Promise<ShardWritten[]> {
    return Promise.all(this.opts.servers.map((_, s) => this.guard(`saving step ${clock}`, s, (async () => {
      const [, rep, hash] = await Promise.all([this.sendTo(s, this.header(Op.save, 0, clock, 0), TAG_REQ), this.recvFrom(s, new Float64Array(HEADER), TAG_REP), this.recvFrom(s, new Int32Array(8), TAG_RVALS)]);
      if (rep[H.op] === FAIL) throw new Error(`it could not write its shard of step ${clock} (its log says why)`);
      return { bytes: rep[H.n]!, sha256: wordsHash(hash) };
    })())));
  }

  /** Each server's counters. */
  async stats(): Promise<ServerStats[]> {
    return Promise.all(this.opts.servers.map((_, s) => this.guard('stats', s, (async () => {
      const [, r] = await Promise.all([this.sendTo(s, this.header(Op.stats, 0, -1, 0), TAG_REQ), this.recvFrom(s, new Float64Array(STAT_NAMES.length), TAG_REP)]);
      return Object.fromEntries(STAT_NAMES.map((k, i) => [k, r[i]!])) as ServerStats;
    })())));
  }

  /** This worker sends nothing more. */
  async done(): Promise<void> {
    await Promise.all(this.opts.servers.map((_, s) => this.guard('done', s, this.sendTo(s, this.header(Op.done, 0, -1, 0), TAG_REQ))));
  }
}
