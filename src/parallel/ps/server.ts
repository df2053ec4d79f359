/**
 * A parameter server rank: serves every worker's requests against its shard (a `ShardStore`),
 * under the consistency mode's clocks (clocks.ts). One receive loop per worker, so a worker that
 * waits on a bound never delays another's requests; replies to one worker leave in the order its
 * requests came (a chain per worker), and a held read copies its rows at the moment the bound
 * lets it (so a BSP read sees exactly the state after the step it waited for).
 *
 * A worker that fails (a point-to-point receive from it fails: it died, or returned without
 * Op.done) is retired from the clocks and logged; the server goes on with the others. The server
 * returns when every worker is done or lost.
 *
 * Resizes: at a resize's clock c the ring changes (a server joins or leaves). When every worker has
 * finished c steps (so every push of an earlier step is applied here: a worker's pushes precede its
 * clock on the same channel), each server of the old ring sends the rows it no longer owns, with
 * their versions and optimizer state, to their new owners and forgets them; every server of the
 * new ring takes one Op.move per table from each other server of the old ring. Reads and pushes of
 * clock c or later wait for that, so no update is lost or applied twice: a resize is a barrier.
 */
import { CollectiveError } from '../../comm/process_group.js';
import type { ProcessGroup } from '../../comm/process_group.js';
import { Clocks } from './clocks.js';
import { decodePush } from './compress.js';
import type { PushCompression } from './compress.js';
import type { HashRing } from '../hash_ring.js';
import { rowKey } from '../hash_ring.js';
import { CODECS, FAIL, H, HEADER, hashWords, OK, Op, serverName, STAT_NAMES, TAG_KEYS, TAG_MOVE, TAG_REP, TAG_REQ, TAG_RVALS, TAG_RVERS, TAG_VALS } from './protocol.js';
import type { Consistency, ServerStats, ShardWritten } from './protocol.js';
import { PS_STATE } from './store.js';
import type { RowsBlob, ShardStore, TableSpec } from './store.js';

/** A change of the ring at `clock`: `before` serves steps before it, `after` steps from it on. */
export interface Resize { clock: number; before: HashRing; after: HashRing }

export interface ServerOptions {
  /** This server's index in [0, S). */
  index: number;
  /** World ranks of the workers, in worker order. */
  workers: readonly number[];
  store: ShardStore;
  tables: readonly TableSpec[];
  mode: Consistency;
  staleness: number;
  /** The step the workers start from (a resumed checkpoint's; default 0). */
  startClock?: number;
  /** Persists the shard of a save at `clock`; resolves when it is durable, with the file's length and SHA-256 (hex). */
  save: (clock: number, blobs: RowsBlob[]) => Promise<ShardWritten>;
  /** World ranks of every server (server i is `ps${i}` on the rings), for resizes. */
  servers?: readonly number[];
  /** Ring changes, by clock ascending. */
  resizes?: readonly Resize[];
  log?: (line: string) => void;
}

export async function runServer(pg: ProcessGroup, opts: ServerOptions): Promise<ServerStats> {
  const { store, workers } = opts;
  const W = workers.length;
  const clocks = new Clocks(W, opts.mode, opts.staleness, opts.startClock ?? 0);
  const stats = Object.fromEntries(STAT_NAMES.map((n) => [n, 0])) as ServerStats;
  const me = `parameter server ${opts.index} (rank ${pg.rank})`;
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  // Rows of a 'given' table exist once a worker has set them (Op.init) or a resize brought them:
  // a read of one that is missing waits for that.
  let waitingRows: { table: number; keys: Int32Array; go: () => void }[] = [];
  const present = (table: number, keys: Int32Array): boolean => keys.every((k) => store.version(table, k) >= 0);
  const rowsFor = (table: number, keys: Int32Array): Promise<void> | null => {
    if (store.table(table).init.kind !== 'given' || present(table, keys)) return null;
    return new Promise<void>((go) => waitingRows.push({ table, keys, go }));
  };
  const rowsArrived = (): void => {
    const ready = waitingRows.filter((w) => present(w.table, w.keys));
    waitingRows = waitingRows.filter((w) => !ready.includes(w));
    for (const w of ready) w.go();
  };
  // BSP: the pushes of a step are summed and applied once every live worker has finished it; the
  // sum is of each worker's batch mean over W, so the update is the combined batch's mean gradient.
  const sync = opts.mode === 'bsp';
  const resizes = (opts.resizes ?? []).filter((r) => r.clock > (opts.startClock ?? 0));
  const moves = resizes.map(() => { let done!: () => void; const p = new Promise<void>((r) => { done = r; }); return { started: false, done, p }; });
  /** Resolves once every resize at or before `clock` has moved its rows. */
  const movedBy = (clock: number): Promise<unknown> | null => {
    const ps = resizes.flatMap((r, i) => (r.clock <= clock && clock >= 0 ? [moves[i]!.p] : []));
    return ps.length === 0 ? null : Promise.all(ps);
  };
  const applyStep = (newMin: number): void => {
    if (sync) stats.updates += store.applyPending();
    resizes.forEach((r, i) => {
      if (moves[i]!.started || newMin < r.clock) return;
      moves[i]!.started = true;
      resize(r).then(moves[i]!.done, (e: unknown) => fatal(e as Error));
    });
  };

  /** The rows this server gives away and takes in at one resize. */
  const resize = async (r: Resize): Promise<void> => {
    const name = serverName(opts.index);
    const servers = opts.servers ?? [];
    const idx = (n: string): number => Number(n.slice(2));
    const out: Promise<void>[] = [];
    stats.heldAtResize = opts.tables.reduce((n, t) => n + store.size(t.id), 0);
    if (r.before.servers.includes(name)) {
      for (const t of opts.tables) {
        const blob = store.exportRows(t.id, (k) => r.after.ownerName(rowKey(t.id, k)) !== name);
        store.removeRows(t.id, blob.keys);
        stats.movedOut += blob.keys.length;
        for (const dest of r.after.servers) {
          if (dest === name) continue;
          const keep = (k: number): boolean => r.after.ownerName(rowKey(t.id, k)) === dest;
          out.push(sendRows(servers[idx(dest)]!, pick(blob, keep), r.clock));
        }
      }
    }
    if (r.after.servers.includes(name)) {
      for (const src of r.before.servers) {
        if (src === name) continue;
        for (const t of opts.tables) out.push(recvRows(servers[idx(src)]!, t.id, r.clock).then((b) => { stats.movedIn += store.importRows(b); rowsArrived(); }));
      }
    }
    await Promise.all(out);
    log(`${me}: resize at step ${r.clock} (${r.before.servers.length} -> ${r.after.servers.length} servers): ${stats.movedOut} rows moved out, ${stats.movedIn} in so far`);
  };
  const stateArrays = (kind: RowsBlob['optimizer']): string[] => [...PS_STATE[kind].perElement, ...PS_STATE[kind].perRow];
  const sendRows = async (dst: number, b: RowsBlob, clock: number): Promise<void> => {
    const h = new Float64Array(HEADER);
    h[H.op] = Op.move; h[H.table] = b.table; h[H.clock] = clock; h[H.n] = b.keys.length;
    const parts = [h, b.keys, b.values, b.versions, ...stateArrays(b.optimizer).map((k) => b.state[k]!)];
    await Promise.all(parts.map((a, i) => pg.send(a, dst, TAG_MOVE + i).wait()));
  };
  const recvRows = async (src: number, table: number, clock: number): Promise<RowsBlob> => {
    const h = new Float64Array(HEADER);
    await pg.recv(h, src, TAG_MOVE).wait();
    if (h[H.op] !== Op.move || h[H.table] !== table || h[H.clock] !== clock) throw new Error(`resize at step ${clock}: rank ${src} sent rows of table ${h[H.table]} at step ${h[H.clock]}, expected table ${table}`);
    const n = h[H.n]!;
    const dim = store.table(table).dim;
    const kind = store.optimizer;
    const state: Record<string, Float32Array | Int32Array> = {};
    const keys = new Int32Array(n); const values = new Float32Array(n * dim); const versions = new Int32Array(n);
    const recvs = [pg.recv(keys, src, TAG_MOVE + 1).wait(), pg.recv(values, src, TAG_MOVE + 2).wait(), pg.recv(versions, src, TAG_MOVE + 3).wait()];
    stateArrays(kind).forEach((k, j) => {
      state[k] = PS_STATE[kind].perRow.includes(k) ? new Int32Array(n) : new Float32Array(n * dim);
      recvs.push(pg.recv(state[k]!, src, TAG_MOVE + 4 + j).wait());
    });
    await Promise.all(recvs);
    return { table, dim, optimizer: kind, keys, values, versions, state };
  };

  // A request the server cannot carry out (a bad key, a missing row) fails the server, naming it,
  // rather than leaving its worker waiting for a reply.
  let fatal!: (e: Error) => void;
  const failed = new Promise<never>((_, reject) => { fatal = (e) => reject(new Error(`${me}: ${e.message}`, { cause: e })); });
  failed.catch(() => undefined);

  const serveWorker = async (wi: number): Promise<void> => {
    const w = workers[wi]!;
    const hdr = new Float64Array(HEADER);
    let chain: Promise<void> = Promise.resolve();
    let failed: Error | null = null;
    const later = (fn: () => Promise<void>): void => {
      chain = chain.then(async () => { if (failed === null) await fn(); }).catch((e: unknown) => { failed ??= e as Error; });
    };
    const recv = async <A extends Float64Array | Float32Array | Int32Array>(a: A, tag: number): Promise<A> => {
      await pg.recv(a, w, tag).wait();
      stats.bytesIn += a.byteLength;
      return a;
    };
    const send = async (a: Float64Array | Float32Array | Int32Array, tag: number): Promise<void> => {
      await pg.send(a, w, tag).wait();
      stats.bytesOut += a.byteLength;
    };
    const replyHeader = (status: number, n: number, arg = 0): Float64Array => {
      const r = new Float64Array(HEADER);
      r[H.op] = status; r[H.n] = n; r[H.arg] = arg; r[H.clock] = clocks.minClock();
      return r;
    };
    try {
      for (;;) {
        await recv(hdr, TAG_REQ);
        const op = hdr[H.op]!;
        const table = hdr[H.table]!;
        const clock = hdr[H.clock]!;
        const n = hdr[H.n]!;
        switch (op) {
          case Op.pull: {
            const keys = await recv(new Int32Array(n), TAG_KEYS);
            const dim = store.table(table).dim;
            const vals = new Float32Array(n * dim);
            const vers = new Int32Array(n);
            const t0 = performance.now();
            const copied = Promise.resolve(movedBy(clock)).then(() => rowsFor(table, keys)).then(() => new Promise<void>((res) => clocks.whenReadable(clock, () => {
              try { store.pull(table, keys, vals, vers); res(); } catch (e) { fatal(e as Error); }
            })));
            stats.pulls++;
            stats.rowsPulled += n;
            later(async () => {
              await copied;
              stats.heldMs += performance.now() - t0;
              await send(replyHeader(OK, n), TAG_REP);
              await send(vals, TAG_RVALS);
              await send(vers, TAG_RVERS);
            });
            break;
          }
          case Op.push: {
            const codec = CODECS[hdr[H.codec]!] as PushCompression;
            const dim = store.table(table).dim;
            const keys = await recv(new Int32Array(n), TAG_KEYS);
            const payload = await recv(codec === 'none' ? new Float32Array(n * dim) : new Int32Array(hdr[H.arg]!), TAG_VALS);
            const moving = movedBy(clock);
            if (moving !== null) await moving;
            let grads: Float32Array;
            if (codec === 'none') grads = payload as Float32Array;
            else { grads = new Float32Array(n * dim); decodePush(payload, n, dim, codec, grads); }
            if (sync) store.accumulate(table, keys, grads, 1 / W);
            else { store.apply(table, keys, grads, 1); stats.updates += n; }
            stats.pushes++;
            stats.rowsPushed += n;
            break;
          }
          case Op.clock:
            clocks.tick(wi, clock, applyStep);
            break;
          case Op.init: {
            const dim = store.table(table).dim;
            const keys = await recv(new Int32Array(n), TAG_KEYS);
            const vals = await recv(new Float32Array(n * dim), TAG_VALS);
            const set = store.set(table, keys, vals);
            rowsArrived();
            later(() => send(replyHeader(OK, set), TAG_REP));
            break;
          }
          case Op.save: {
            // At a resize's clock the shard is the one after the move.
            const blobs = Promise.resolve(movedBy(clock)).then(() => new Promise<RowsBlob[]>((res) => clocks.whenMin(clock, () => res(opts.tables.map((t) => store.exportRows(t.id))))));
            later(async () => {
              // The reply carries the file's length and hash, so the checkpoint records them without reading the file again.
              let written: ShardWritten = { bytes: 0, sha256: '' };
              let status = OK;
              try { written = await opts.save(clock, await blobs); } catch (e) {
                status = FAIL;
                log(`${me}: saving its shard at step ${clock} failed: ${(e as Error).message}`);
              }
              await send(replyHeader(status, written.bytes), TAG_REP);
              await send(hashWords(written.sha256), TAG_RVALS);
            });
            break;
          }
          case Op.stats:
            later(async () => {
              stats.maxStaleness = clocks.maxStaleness;
              stats.reads = clocks.reads;
              stats.heldReads = clocks.held;
              await send(Float64Array.from(STAT_NAMES, (k) => stats[k]), TAG_REP);
            });
            break;
          case Op.done:
            await chain;
            clocks.retire(wi, applyStep);
            return;
          default:
            throw new Error(`${me}: worker ${wi} (rank ${w}) sent an unknown request op ${op}`);
        }
        if (failed !== null) throw failed;
      }
    } catch (e) {
      if (!(e instanceof CollectiveError)) { fatal(e as Error); return; }
      // The worker is gone: it holds no one back from now on.
      stats.lostWorkers++;
      log(`${me}: worker ${wi} (rank ${w}) lost at clock ${clocks.clockOf(wi)}: ${(e as Error).message}; `
        + `it is excluded from the clock bound, ${clocks.liveCount() - 1} worker(s) remain`);
      clocks.retire(wi, applyStep);
    }
  };

  await Promise.race([Promise.all(workers.map((_, wi) => serveWorker(wi))), failed]);
  stats.maxStaleness = clocks.maxStaleness;
  stats.reads = clocks.reads;
  stats.heldReads = clocks.held;
  return stats;
}

/** The rows of `b` whose key passes `keep`. */
function pick(b: RowsBlob, keep: (key: number) => boolean): RowsBlob {
  const idx: number[] = [];
  b.keys.forEach((k, i) => { if (keep(k)) idx.push(i); });
  const rows = <A extends Float32Array | Int32Array>(a: A, w: number): A => {
    const o = new (a.constructor as new (n: number) => A)(idx.length * w);
    idx.forEach((i, j) => o.set(a.subarray(i * w, (i + 1) * w), j * w));
    return o;
  };
  const state: Record<string, Float32Array | Int32Array> = {};
  for (const [k, a] of Object.entries(b.state)) state[k] = rows(a, a.length / Math.max(1, b.keys.length));
  return { ...b, keys: rows(b.keys, 1), values: rows(b.values, b.dim), versions: rows(b.versions, 1), state };
}
