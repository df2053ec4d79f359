/**
 * The `mpi` backend: ranks are processes started by `mpirun`; collectives run on libmpi through
 * the addon in native/weft_mpi.c, off the JavaScript thread.
 *
 *   mpirun -np 4 node train.js                       // each process:
 *   const world = initMpi();                         // MPI_Init_thread, rank/size from MPI
 *   await world.allReduce(grads, 'mean').wait();
 *   await world.destroy();                           // MPI_Finalize
 *
 * Guarantees, as ProcessGroup promises them:
 * - Timeouts. A timer races every operation from the moment it is issued. When it fires, the
 *   operation's wait() rejects with a CollectiveError ("rank 1: allReduce#12 timed out after
 *   30000 ms"), the message goes to stderr, and after `abortGraceMs` the job is ended with
 *   MPI_Abort: a stuck MPI call cannot be cancelled, and MPI_Abort makes mpirun end every rank.
 * - Dead peers. A rank that throws, exits or is killed before MPI_Finalize makes mpirun end the
 *   job within a second or two, naming the rank ("Process name: [[6579,1],1] Exit code: 1"); this
 *   module's exit hook also prints "weft mpi: rank 1 exits with code 1 ...". A clean exit
 *   finalizes MPI by itself; a clean exit with operations still in flight calls MPI_Abort.
 * - Agreement ("validate", on by default; `validate: false` or WEFT_MPI_VALIDATE=0 turns it
 *   off). Before each collective, the ranks all-gather (operation, sequence number, dtype,
 *   element count, root, reduce op) on the same communicator, 64 bytes per rank, and every rank
 *   fails the collective with the same message when they disagree ("rank 1: allReduce#3: sizes
 *   disagree: rank 0 has 10 elements but rank 2 has 12"). This costs one small all-gather's
 *   latency per collective (~35 us on one host: a small all-reduce takes ~120 us instead of ~85);
 *   it does not hold up other communicators or point-to-point traffic. Receives always compare
 *   the incoming size.
 * - Mean is a sum followed by a division by the group size (truncating for Int32Array).
 * - Flight recorder (../flight.ts). Every operation is recorded; a timeout writes this rank's dump
 *   before the job is aborted. MPI shows nothing of a collective's peers, so the dump names the op
 *   and its sequence number and says so (the other ranks' dumps tell who reached it); for a
 *   receive it names the peer and tag, for a send the peer. A rank that is itself stuck (no op of
 *   its own times out) writes no dump: MPI_Abort ends it.
 */
import { CollectiveError } from '../process_group.js';
import type { CommArray, ProcessGroup, ReduceOp, Work } from '../process_group.js';
import { flightRecorder } from '../flight.js';
import type { FlightRecorder, FlightWait } from '../flight.js';
import { loadMpiBinding } from './binding.js';
import type { MpiBinding, MpiOp } from './binding.js';

export interface MpiOptions {
  /** Timeout of every operation in milliseconds. Default: WEFT_DIST_TIMEOUT_MS, else 30000. */
  timeoutMs?: number;
  /** Check before each collective that every rank agrees on it (see above). Default: on. */
  validate?: boolean;
  /** Milliseconds between a timeout's rejection and MPI_Abort, for the error and flight dumps to be written. Default 200. */
  abortGraceMs?: number;
}

/** State of MPI in this process: there is one MPI_Init per process, so this is per process. */
class MpiRuntime {
  state: 'running' | 'finalized' = 'running';
  inflight = 0;
  private aborting = false;
  readonly flight: FlightRecorder;

  constructor(readonly binding: MpiBinding, readonly worldRank: number, readonly abortGraceMs: number) {
    process.on('exit', (code) => this.onExit(code));
    this.flight = flightRecorder();
    this.flight.attach(worldRank, 'mpi');
  }

  /** A timed-out operation: report it, then end the job (its MPI call can never be cancelled). */
  timedOut(err: CollectiveError): void {
    if (this.aborting) return;
    this.aborting = true;
    process.stderr.write(`weft mpi: ${err.message}; aborting the job (MPI_Abort)\n`);
    setTimeout(() => this.binding.abort(1), this.abortGraceMs);
  }

  /**
   * Exit without MPI_Finalize: finalize a clean exit; otherwise say which rank is leaving. A
   * non-zero exit is left to mpirun, which ends the job and names the rank (aborting here would
   * cut off Node's own report of the error, which it prints after 'exit' for ES modules).
   */
  private onExit(code: number): void {
    if (this.state !== 'running') return;
    if (code === 0 && this.inflight === 0) {
      this.state = 'finalized';
      this.binding.finalize();
      return;
    }
    const why = this.inflight > 0 ? `with ${this.inflight} MPI operation(s) in flight` : 'before MPI_Finalize';
    process.stderr.write(`weft mpi: rank ${this.worldRank} exits with code ${code} ${why}; the job ends\n`);
    if (code === 0) this.binding.abort(1); // mpirun would not see a failure in a clean exit code
  }
}

const sameKind = (a: CommArray, b: CommArray): boolean => Object.getPrototypeOf(a) === Object.getPrototypeOf(b);
const dtypeName = (a: CommArray | null | undefined): string =>
  a instanceof Float32Array ? 'float32' : a instanceof Float64Array ? 'float64' : a instanceof Int32Array ? 'int32' : '';

/** What the flight recorder notes of an operation besides its label. */
interface OpInfo { count: number; dtype: string; peer: number; tag: number }
const NO_INFO: OpInfo = { count: 0, dtype: '', peer: -1, tag: -1 };
const overlaps = (a: CommArray, b: CommArray): boolean =>
  a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;

export class MpiProcessGroup implements ProcessGroup {
  readonly backend = 'mpi';
  /** Collectives issued on this group: equal on every rank, so labels match across ranks. */
  private seq = 0;
  private p2pSeq = 0;
  private readonly pending = new Set<Promise<unknown>>();
  private destroyed = false;

  /** Use initMpi() or split(). */
  constructor(
    private readonly rt: MpiRuntime,
    private readonly handle: number,
    readonly rank: number,
    readonly size: number,
    /** World rank of each member, by rank in this group. */
    readonly worldRanks: readonly number[],
    readonly timeoutMs: number,
    readonly validate: boolean,
    /** 'world', or the parent's name and the split that made it ("world/split#3:1"), for flight dumps. */
    readonly name = 'world',
  ) {}

  private get isWorld(): boolean { return this.handle === 0; }

  allReduce(buf: CommArray, op: ReduceOp = 'sum'): Work {
    return this.collective('allReduce', { a: buf, op });
  }

  broadcast(buf: CommArray, root: number): Work {
    this.checkRank('broadcast', 'root', root);
    return this.collective('broadcast', { a: buf, root });
  }

  reduce(buf: CommArray, root: number, op: ReduceOp = 'sum'): Work {
    this.checkRank('reduce', 'root', root);
    return this.collective('reduce', { a: buf, root, op });
  }

  allGather(input: CommArray, out: CommArray): Work {
    this.checkPair('allGather', input, out);
    this.expectLength('allGather', 'out', out, input.length * this.size, 'input.length x size');
    return this.collective('allGather', { a: input, b: out });
  }

  reduceScatter(input: CommArray, out: CommArray, op: ReduceOp = 'sum'): Work {
    this.checkPair('reduceScatter', input, out);
    this.expectLength('reduceScatter', 'input', input, out.length * this.size, 'out.length x size');
    return this.collective('reduceScatter', { a: input, b: out, op });
  }

  gather(input: CommArray, out: CommArray | null, root: number): Work {
    this.checkRank('gather', 'root', root);
    if (this.rank === root) {
      if (!out) throw new Error(`gather: the root (rank ${root}) needs an output array`);
      this.checkPair('gather', input, out);
      this.expectLength('gather', 'out', out, input.length * this.size, 'input.length x size');
    }
    return this.collective('gather', { a: input, b: this.rank === root ? out : null, root });
  }

  scatter(input: CommArray | null, out: CommArray, root: number): Work {
    this.checkRank('scatter', 'root', root);
    if (this.rank === root) {
      if (!input) throw new Error(`scatter: the root (rank ${root}) needs an input array`);
      this.checkPair('scatter', input, out);
      this.expectLength('scatter', 'input', input, out.length * this.size, 'out.length x size');
    }
    return this.collective('scatter', { a: this.rank === root ? input : null, b: out, root });
  }

  allToAll(input: CommArray, out: CommArray): Work {
    this.checkPair('allToAll', input, out);
    this.expectLength('allToAll', 'out', out, input.length, 'input.length');
    if (input.length % this.size !== 0) throw new Error(`allToAll: input has ${input.length} elements, not a multiple of the group size ${this.size}`);
    return this.collective('allToAll', { a: input, b: out });
  }

  allToAllV(input: CommArray, sendCounts: readonly number[], out: CommArray, recvCounts: readonly number[]): Work {
    this.checkPair('allToAllV', input, out);
    const counts = new Int32Array(2 * this.size);
    this.readCounts('sendCounts', sendCounts, counts, 0, input.length);
    this.readCounts('recvCounts', recvCounts, counts, this.size, out.length);
    return this.collective('allToAllV', { a: input, b: out, counts });
  }

  barrier(): Work {
    return this.collective('barrier', {});
  }

  send(buf: CommArray, dst: number, tag = 0): Work {
    this.checkRank('send', 'dst', dst);
    this.checkTag('send', tag);
    return this.pointToPoint('send', { a: buf, peer: dst, tag });
  }

  recv(buf: CommArray, src: number, tag = 0): Work {
    this.checkRank('recv', 'src', src);
    this.checkTag('recv', tag);
    return this.pointToPoint('recv', { a: buf, peer: src, tag });
  }

  async split(color: number, key: number = this.rank): Promise<ProcessGroup> {
    if (!Number.isInteger(color) || color < 0) throw new Error(`split: color must be an integer >= 0, got ${color}`);
    if (!Number.isInteger(key)) throw new Error(`split: key must be an integer, got ${key}`);
    const seq = this.seq++;
    const { label, promise } = this.track('split', seq, (s) => this.rt.binding.split(this.handle, s, this.validate, color, key));
    const r = await promise;
    return new MpiProcessGroup(this.rt, r.handle, r.rank, r.size, r.worldRanks, this.timeoutMs, this.validate, `${this.name}/${label}:${color}`);
  }

  /**
   * Waits for this group's operations to settle, then frees its communicator; destroying the
   * world group calls MPI_Finalize, which waits for every rank to finalize.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all(this.pending);
    if (this.rt.state !== 'running') return;
    if (this.isWorld) {
      this.rt.state = 'finalized';
      this.rt.binding.finalize();
    } else {
      // MPI_Comm_free is local in practice; not checked, so ranks may destroy groups in any order.
      await this.rt.binding.run({ kind: 'destroy', comm: this.handle, seq: this.seq, validate: false });
    }
  }

  private collective(kind: Exclude<MpiOp['kind'], 'send' | 'recv' | 'destroy'>, args: Partial<MpiOp>): Work {
    return this.work(kind, this.seq++, args);
  }

  private pointToPoint(kind: 'send' | 'recv', args: Partial<MpiOp>): Work {
    return this.work(kind, this.p2pSeq++, args);
  }

  private work(kind: MpiOp['kind'], seq: number, args: Partial<MpiOp>): Work {
    const a = kind === 'scatter' ? args.b : args.a ?? args.b;
    const info: OpInfo = { count: a?.length ?? 0, dtype: dtypeName(a), peer: args.peer ?? -1, tag: args.tag ?? -1 };
    const { label, promise } = this.track(kind, seq, (s) =>
      this.rt.binding.run({ ...args, kind, comm: this.handle, seq: s, validate: this.validate }), info);
    // Failures surface in wait(); an operation nobody waits for is not an unhandled rejection.
    const outcome = promise.then(() => null, (e: unknown) => e);
    return { label, wait: async () => { const e = await outcome; if (e) throw e; } };
  }

  /** What MPI lets us know of a timed-out operation's wait. */
  private waitOf(kind: string, label: string, info: OpInfo): FlightWait {
    const base = { group: this.name, label };
    if (info.peer < 0) {
      return { ...base, missing: [], missingWorld: [], detail: `MPI does not show which ranks of the group (world ranks ${this.worldRanks.join(',')}) joined ${label}: some rank never called it or is stuck in it; the other ranks' flight dumps show which of them reached it` };
    }
    const peer = { missing: [info.peer], missingWorld: [this.worldRanks[info.peer]!] };
    if (kind === 'recv') return { ...base, ...peer, detail: `no message from rank ${info.peer} with tag ${info.tag} arrived` };
    return { ...base, ...peer, detail: `rank ${info.peer} has not received it (MPI completes a send once its receive is matched, or for a small one once buffered)` };
  }

  /** Runs one operation under the group's timeout; errors name this rank and the operation. */
  private track<T>(kind: string, seq: number, run: (seq: number) => Promise<T>, info: OpInfo = NO_INFO): { label: string; promise: Promise<T> } {
    const label = `${kind}#${seq}`;
    const me = `rank ${this.worldRanks[this.rank]}`;
    const where = this.isWorld ? '' : ` (group of world ranks ${this.worldRanks.join(',')})`;
    if (this.destroyed || this.rt.state !== 'running') throw new CollectiveError(`${me}: ${label}${where}: the process group was destroyed`);
    const flight = this.rt.flight;
    const ticket = flight.issue(this.name, kind, seq, label, info.count, info.dtype, info.peer, info.tag);
    this.rt.inflight++;
    const promise = new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        return true;
      };
      const timer = setTimeout(() => {
        if (!finish()) return;
        const wait = this.waitOf(kind, label, info);
        // A collective's message stays as it was (MPI knows nothing more); point-to-point names the wait.
        const err = new CollectiveError(`${me}: ${label}${where} timed out after ${this.timeoutMs} ms${info.peer < 0 ? '' : `: ${wait.detail}`}`);
        flight.settle(ticket, err.message);
        flight.trigger(err.message, [wait]);
        this.rt.timedOut(err);
        reject(err);
      }, this.timeoutMs);
      run(seq).then(
        (v) => { if (finish()) { flight.settle(ticket, null); resolve(v); } },
        (e: unknown) => {
          if (!finish()) return;
          const err = new CollectiveError(`${me}: ${label}${where}: ${(e as Error).message}`);
          flight.settle(ticket, err.message);
          reject(err);
        },
      ).finally(() => { this.rt.inflight--; }).catch(() => undefined);
    });
    const settledPromise = promise.then(() => undefined, () => undefined);
    this.pending.add(settledPromise);
    void settledPromise.then(() => this.pending.delete(settledPromise));
    return { label, promise };
  }

  private readCounts(name: string, c: readonly number[], into: Int32Array, offset: number, available: number): void {
    if (c.length !== this.size) throw new Error(`allToAllV: ${name} has ${c.length} entries but the group has ${this.size} ranks`);
    let total = 0;
    c.forEach((n, j) => {
      if (!Number.isInteger(n) || n < 0) throw new Error(`allToAllV: ${name}[${j}] = ${n} is not a count`);
      into[offset + j] = n;
      total += n;
    });
    if (total > available) throw new Error(`allToAllV: ${name} add up to ${total} elements but the array has ${available}`);
  }

  private checkRank(op: string, what: string, r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.size) throw new Error(`${op}: ${what} must be a rank in [0, ${this.size}), got ${r}`);
  }

  private checkTag(op: string, tag: number): void {
    if (!Number.isInteger(tag) || tag < 0 || tag > 32767) throw new Error(`${op}: tag must be an integer in [0, 32767] (MPI's guaranteed range), got ${tag}`);
  }

  private checkPair(op: string, input: CommArray, out: CommArray): void {
    if (!sameKind(input, out)) throw new Error(`${op}: input is a ${input.constructor.name} but out is a ${out.constructor.name}`);
    if (overlaps(input, out)) throw new Error(`${op}: input and out share memory; MPI needs separate buffers`);
  }

  private expectLength(op: string, name: string, arr: CommArray, want: number, formula: string): void {
    if (arr.length !== want) throw new Error(`${op}: ${name} has ${arr.length} elements but needs ${formula} = ${want}`);
  }
}

let world: MpiProcessGroup | null = null;

/**
 * Initializes MPI (MPI_Init_thread requesting MPI_THREAD_MULTIPLE) and returns the world group.
 * Run under mpirun; it cross-checks OMPI_COMM_WORLD_RANK/SIZE and sets RANK, WORLD_SIZE,
 * LOCAL_RANK and LOCAL_WORLD_SIZE for libraries that read them. Calling it again returns the
 * same group.
 */
export function initMpi(opts: MpiOptions = {}): MpiProcessGroup {
  if (world) return world;
  const env = process.env;
  const binding = loadMpiBinding();
  const info = binding.init();
  const envRank = env['OMPI_COMM_WORLD_RANK'];
  const envSize = env['OMPI_COMM_WORLD_SIZE'];
  if ((envRank !== undefined && Number(envRank) !== info.rank) || (envSize !== undefined && Number(envSize) !== info.size)) {
    throw new Error(`initMpi: mpirun says rank ${envRank} of ${envSize} but MPI says rank ${info.rank} of ${info.size}`);
  }
  env['RANK'] = String(info.rank);
  env['WORLD_SIZE'] = String(info.size);
  env['LOCAL_RANK'] = env['OMPI_COMM_WORLD_LOCAL_RANK'] ?? '0';
  env['LOCAL_WORLD_SIZE'] = env['OMPI_COMM_WORLD_LOCAL_SIZE'] ?? '1';
  const timeoutMs = opts.timeoutMs ?? (Number(env['WEFT_DIST_TIMEOUT_MS']) || 30000);
  const validate = opts.validate ?? env['WEFT_MPI_VALIDATE'] !== '0';
  const rt = new MpiRuntime(binding, info.rank, opts.abortGraceMs ?? 200);
  const ranks = Array.from({ length: info.size }, (_, i) => i);
  world = new MpiProcessGroup(rt, info.world, info.rank, info.size, ranks, timeoutMs, validate);
  return world;
}
