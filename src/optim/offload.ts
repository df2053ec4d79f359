/**
 * Optimizer state on disk, ZeRO-Infinity style (Rajbhandari et al., "ZeRO-Infinity: Breaking the
 * GPU Memory Wall for Extreme Scale Deep Learning"): each state vector (AdamW's m and v, SGD's
 * momentum) lives in a file, and an update streams it through a few chunk buffers.
 *
 * `FileVector` is a float32 vector in one file, read and written by element range. Its I/O is
 * node's FileHandle read/write at byte offsets, which run on libuv's threadpool: they overlap the
 * onnxruntime graphs the main thread runs. Operations on overlapping ranges run in the order they
 * were issued (a read waits for the writes before it, a write for the reads and writes before it),
 * so a caller may issue a write and go on: any later read of that range sees it. A write that
 * fails is kept and thrown by every later operation, so a lost write never reads back as data.
 *
 * `OffloadedState` runs one optimizer's update over its pieces (the whole vectors, or a ZeRO
 * shard's ranges) in the same chunks as the in-memory update (`FlatProgram.run`), so the results
 * are bit-identical. The parameters may be in a file too (`OffloadConfig.params`: ZeRO stage 3's
 * shard, whose step reads it through `weft.Load`, the host kernel at the end of this file); they are
 * then streamed like one more state vector. Per chunk j: its state was read ahead (issued before chunk j - 1's graph
 * ran), the graph runs, the new state is copied into the buffer it was read into and written
 * behind (issued, not awaited). Each vector has a ring of RING chunk buffers, chunk j taking slot
 * j % RING; before a slot is read into again, its last write must have landed. So per vector at
 * most two chunks are read or computed on and two are being written, and the buffers are
 * allocated once (held under '<label>.offload'). `run` resolves before the last writes land; the
 * next read of their ranges (the next step, `vectors()`, a checkpoint) or `flush()` waits for them.
 *
 * @example
 *   const opt = new AdamW(params, { lr: 3e-4, offload: { dir: '/scratch/run1' } });  // adamw.m.f32, adamw.v.f32
 *   await opt.step(grads);
 *   const { m, v } = await opt.stateVectors();   // read back whole, for a checkpoint
 *   await opt.close();
 */
import { closeSync, ftruncateSync, mkdirSync, openSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { profiler } from '../runtime/profiler.js';
import { registerHostKernel } from '../runtime/schedule.js';
import { chunkLength } from './common.js';
import type { FlatProgram, UpdatePiece } from './common.js';
import type { FloatArray } from '../runtime/flat.js';

/** Where an optimizer keeps its state vectors: one file per vector, named by its label. */
export interface OffloadConfig {
  /** A directory (created if missing); one optimizer per directory (ranks: one each). */
  dir: string;
  /**
   * The parameters themselves are in this file, not in memory (ZeRO stage 3's shard on disk,
   * parallel/zero3.ts, which owns the file): the update reads and writes them chunk by chunk as it
   * does the state, and the optimizer's parameter buffer is a detached one (no data).
   */
  params?: FileVector;
}

/** Bytes and time of a vector's I/O; time is summed per operation (overlapping ones each count). */
export interface IoStats { reads: number; writes: number; readBytes: number; writeBytes: number; readMs: number; writeMs: number }

interface Pending { lo: number; hi: number; write: boolean; done: Promise<void> }

export class FileVector {
  readonly stats: IoStats = { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, readMs: 0, writeMs: 0 };
  private handle: Promise<FileHandle> | null = null;
  private readonly pending = new Set<Pending>();
  private failure: Error | null = null;

  /** Creates (or truncates) `path` as `length` float32 zeros. */
  constructor(readonly path: string, readonly length: number) {
    try {
      const fd = openSync(path, 'w');
      try { ftruncateSync(fd, length * 4); } finally { closeSync(fd); }
    } catch (e) {
      throw new Error(`FileVector: cannot create '${path}' (${length * 4} bytes): ${(e as Error).message}`);
    }
  }

  /** Reads elements [lo, lo + out.length) into `out`, after the writes issued before it to that range. */
  read(lo: number, out: Float32Array): Promise<void> { return this.issue(lo, out, false); }

  /**
   * Writes `src` at element `lo`, after the reads and writes issued before it to that range. The
   * write is tracked: a caller need not await it, but must not change `src` until it resolves.
   */
  write(lo: number, src: Float32Array): Promise<void> { return this.issue(lo, src, true); }

  /** Waits for every operation issued so far; throws a failed write's error. */
  async flush(): Promise<void> {
    for (const p of [...this.pending]) await p.done.catch(() => undefined);
    this.check();
  }

  /** Flushes and closes the file (it stays on disk). */
  async close(): Promise<void> {
    await this.flush();
    const h = this.handle;
    this.handle = null;
    if (h) await (await h).close();
  }

  private check(): void {
    if (this.failure) throw new Error(`${this.path}: an earlier write failed, the file no longer holds the vector: ${this.failure.message}`);
  }

  private issue(lo: number, a: Float32Array, write: boolean): Promise<void> {
    this.check();
    const hi = lo + a.length;
    if (!(Number.isInteger(lo) && lo >= 0 && hi <= this.length)) {
      throw new Error(`${this.path}: ${write ? 'write' : 'read'} of elements [${lo}, ${hi}) is outside the vector's ${this.length}`);
    }
    const before = [...this.pending].filter((p) => p.lo < hi && lo < p.hi && (write || p.write)).map((p) => p.done);
    const p: Pending = { lo, hi, write, done: this.io(before, lo, a, write) };
    this.pending.add(p);
    p.done.then(() => this.pending.delete(p), (e: Error) => {
      this.pending.delete(p);
      if (write) this.failure ??= e;
    });
    return p.done;
  }

  private async io(before: readonly Promise<void>[], lo: number, a: Float32Array, write: boolean): Promise<void> {
    // Only the order matters here: a failed write before this one is thrown by check().
    for (const b of before) await b.catch(() => undefined);
    this.check();
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const t0 = performance.now();
    try {
      this.handle ??= open(this.path, 'r+');
      const h = await this.handle;
      for (let done = 0; done < bytes.length;) {
        const n = write
          ? (await h.write(bytes, done, bytes.length - done, lo * 4 + done)).bytesWritten
          : (await h.read(bytes, done, bytes.length - done, lo * 4 + done)).bytesRead;
        if (n === 0) throw new Error(`the file ended at byte ${lo * 4 + done}`);
        done += n;
      }
    } catch (e) {
      throw new Error(`${this.path}: ${write ? 'write' : 'read'} of elements [${lo}, ${lo + a.length}): ${(e as Error).message}`);
    }
    const ms = performance.now() - t0;
    const s = this.stats;
    if (write) { s.writes++; s.writeBytes += bytes.length; s.writeMs += ms; } else { s.reads++; s.readBytes += bytes.length; s.readMs += ms; }
  }
}

/** Makes `dir` (and its parents) for offloaded files; `who` names the owner in the error. */
export function offloadDir(who: string, dir: string): void {
  try { mkdirSync(dir, { recursive: true }); } catch (e) {
    throw new Error(`${who}: offload.dir '${dir}' cannot be made a directory: ${(e as Error).message}`);
  }
}

/**
 * Checks an optimizer's parameters against its offload config: a detached parameter buffer (no
 * data) exactly when the parameters are in a file (`offload.params`), over the whole buffer.
 */
export function checkOffloadedParams(who: string, params: { detached: boolean; layout: { size: number } }, cfg: OffloadConfig | undefined, shard: unknown): void {
  const inFile = cfg?.params !== undefined;
  if (params.detached && !inFile) throw new Error(`${who}: the parameter buffer is detached (no data); its values must come from a file, offload.params`);
  if (inFile && !params.detached) throw new Error(`${who}: offload.params '${cfg!.params!.path}' holds the parameters, but the parameter buffer holds data too; pass a detached buffer (FlatBuffer.detached)`);
  if (inFile && shard) throw new Error(`${who}: offload.params with a ZeRO shard spec: a file holds the whole vector the optimizer updates (ZeRO stage 3's shard), not ranges of it`);
}

/** Chunk buffers per state vector: two being read or computed on, two being written. */
export const RING = 4;

interface Slot { data: Float32Array; written: Promise<void> }

export class OffloadedState {
  /** The state vectors' files, in the update graph's order. */
  readonly files: readonly FileVector[];
  /** The parameters' file (`OffloadConfig.params`, not this object's to close), or null: they are in memory. */
  readonly params: FileVector | null;
  /** Time an update waited on the disk: a read ahead not landed, or a slot's last write. */
  waitMs = 0;
  /** Every vector streamed by an update: the parameters' file (when there is one), then the state's. */
  private readonly streamed: readonly FileVector[];
  private rings: Slot[][] = [];

  /** Files `<dir>/<label>.<name>.f32` of `length` zeros, one per name. `who` names the optimizer in errors. */
  constructor(who: string, cfg: OffloadConfig, readonly label: string, readonly names: readonly string[], length: number) {
    offloadDir(who, cfg.dir);
    this.params = cfg.params ?? null;
    if (this.params && this.params.length !== length) throw new Error(`${who}: offload.params '${this.params.path}' holds ${this.params.length} elements, the parameters ${length}`);
    this.files = names.map((n) => new FileVector(join(cfg.dir, `${label}.${n}.f32`), length));
    this.streamed = this.params ? [this.params, ...this.files] : this.files;
  }

  /**
   * One update: for each piece and chunk, the graph on [p, g, ...state chunks, ...the piece's
   * in-memory vectors] and `scalars`; output 0 is written into p (in memory, or into the
   * parameters' file, read and written like the state), outputs 1.. into the files.
   */
  async run(program: FlatProgram, pieces: readonly UpdatePiece[], scalars: readonly FloatArray[]): Promise<void> {
    const chunk = chunkLength();
    // A piece's length is its gradient's: with the parameters in a file, p is an empty view.
    const jobs = pieces.flatMap((x) => {
      const out: { x: UpdatePiece; lo: number; hi: number }[] = [];
      for (let lo = 0; lo < x.g.length; lo += chunk) out.push({ x, lo, hi: Math.min(lo + chunk, x.g.length) });
      return out;
    });
    this.ensureRings(Math.max(0, ...jobs.map((c) => c.hi - c.lo)));
    const fetch = (j: number): Promise<Float32Array[]> | null => {
      const c = jobs[j];
      return c ? this.fetch(j, c.x.at + c.lo, c.hi - c.lo) : null;
    };
    let next = fetch(0);
    try {
      for (let j = 0; j < jobs.length; j++) {
        const { x, lo, hi } = jobs[j]!;
        const t0 = performance.now();
        const got = await next!;
        this.waitMs += performance.now() - t0;
        next = fetch(j + 1);
        // Awaited at the next chunk; a read failing while this graph runs is not unhandled.
        next?.catch(() => undefined);
        const p = this.params ? got[0]! : x.p.subarray(lo, hi);
        const state = this.params ? got.slice(1) : got;
        const out = await program.runOnce([p, x.g.subarray(lo, hi), ...state, ...x.state.map((a) => a.subarray(lo, hi))], scalars);
        if (!this.params) x.p.set(out[0]!, lo);
        // Each streamed vector's new chunk into the slot it was read into, written behind.
        got.forEach((buf, v) => {
          buf.set(out[this.params ? v : v + 1]!);
          this.rings[v]![j % RING]!.written = this.streamed[v]!.write(x.at + lo, buf);
        });
      }
    } finally {
      // A read still landing in a slot must not outlive a failed update into the next one.
      await next?.catch(() => undefined);
    }
  }

  /** Each vector read whole (after the writes issued before), as fresh arrays. */
  async read(): Promise<Float32Array[]> {
    return Promise.all(this.files.map(async (f) => {
      const a = new Float32Array(f.length);
      await f.read(0, a);
      return a;
    }));
  }

  /**
   * Replaces the vectors' contents (loadState), named for errors: each copied to float32 and
   * written behind. Every later operation on the files (a step, `read()`, `flush()`) comes after
   * these writes and throws if one failed. All lengths are checked before anything is written.
   */
  load(who: string, vectors: readonly { name: string; data: ArrayLike<number> }[]): void {
    vectors.forEach(({ name, data }, k) => {
      const n = this.files[k]!.length;
      if (data.length !== n) throw new Error(`${who}.loadState: '${name}' has ${data.length} elements, expected ${n}`);
    });
    vectors.forEach(({ data }, k) => { void this.files[k]!.write(0, Float32Array.from(data)); });
  }

  /** Waits for every write issued so far, the parameters' too (throws a failed one's error). */
  async flush(): Promise<void> { for (const f of this.streamed) await f.flush(); }

  /** Flushes every vector and closes the state's files (the parameters' file is its owner's to close). */
  async close(): Promise<void> {
    await this.params?.flush();
    for (const f of this.files) await f.close();
  }

  /** Read and write totals over the streamed files (the parameters' file counts every read of it, loads included), and the update's wait. */
  stats(): IoStats & { waitMs: number } {
    const t: IoStats & { waitMs: number } = { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, readMs: 0, writeMs: 0, waitMs: this.waitMs };
    for (const f of this.streamed) for (const k of Object.keys(f.stats) as (keyof IoStats)[]) t[k] += f.stats[k];
    return t;
  }

  /** Reads each streamed vector's elements [at, at + n) into chunk j's slots, once their last writes landed. */
  private async fetch(j: number, at: number, n: number): Promise<Float32Array[]> {
    return Promise.all(this.streamed.map(async (f, v) => {
      const slot = this.rings[v]![j % RING]!;
      await slot.written;
      const data = slot.data.subarray(0, n);
      await f.read(at, data);
      return data;
    }));
  }

  /**
   * RING buffers per streamed vector of `n` elements, the longest chunk (again when the thread count
   * changed the chunk length): held under '<label>.offload', the only state memory offloading keeps.
   */
  private ensureRings(n: number): void {
    if (this.rings.length > 0 && this.rings[0]![0]!.data.length === n) return;
    // Old slots' writes stay ordered by the files; only their buffers are replaced.
    this.rings = this.streamed.map(() => Array.from({ length: RING }, () => ({ data: new Float32Array(n), written: Promise.resolve() })));
    profiler.hold(`${this.label}.offload`, this.streamed.length * RING * n * 4);
  }
}

/**
 * The kernel of `weft.Load` (ir/ops/storage.ts): its elements read from the store the run's context
 * names (`context.stores[store]`, a FileVector or anything with its `read`), after the writes
 * issued to that range before it.
 */
registerHostKernel('weft.Load', async (n, _inputs, context) => {
  const name = n.attrs['store'] as string;
  const stores = (context as { stores?: Readonly<Record<string, Pick<FileVector, 'read'>>> } | null)?.stores;
  const store = stores?.[name];
  if (store === undefined) throw new Error(`weft.Load: no store '${name}' in the run's context (it was given ${stores ? Object.keys(stores).map((k) => `'${k}'`).join(', ') || 'none' : 'no stores'})`);
  const out = new Float32Array(n.attrs['length'] as number);
  await store.read(n.attrs['offset'] as number, out);
  return [out];
});
