/**
 * The parameter server's in-memory shard store (Li et al., OSDI 2014; ps-lite's KVServer): the
 * rows of parameter tables this server owns, with optimizer state, updated server-side.
 *
 * A table (id, name, row width `dim`) holds rows addressed by integer keys in [0, 2^31): an
 * embedding table is one table, a dense vector is a table of fixed-size chunks (key = chunk
 * index). Rows materialize lazily on first touch, from the table's init. Every row carries a
 * version (the number of optimizer steps applied to it), which the consistency layer compares
 * against clocks.
 *
 * Optimizers (per row, per element, in float64, stored as float32; g = scale x grad):
 *   sgd:      w -= lr g
 *   adagrad:  a += g^2;  w -= lr g / (sqrt(a) + eps),  a starting at initialAccumulator
 *             (Duchi et al. 2011, in PyTorch's and TensorFlow's form)
 *   adam:     t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *             w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *             lazy (sparse) Adam: t is the row's own step count, so a row touched on its k-th
 *             update gets the bias correction of step k, and rows not in a push are not touched
 *             at all (m, v, t and w unchanged), unlike dense Adam which would decay their m, v.
 *
 * Two ways to update: `apply` steps the rows of one push at once (asynchronous modes), while
 * `accumulate` sums pushes into a float64 pending gradient per row and `applyPending` steps each
 * pending row once with the sum (synchronous aggregation: BSP sums every worker's push of a clock).
 *
 * Within one call keys must be distinct (the worker client deduplicates): duplicates in `pull`
 * are harmless, in `apply` they step the row twice, in `accumulate` they add twice. Duplicates are
 * not checked, to keep the hot paths one pass.
 *
 * Storage per table: an open-addressing key -> slot index and arenas by slot (values, versions,
 * keys, optimizer state, pending gradients), grown by doubling; removal moves the last slot into
 * the hole. No per-row objects are allocated. Gathers and updates run in tiles of 256 rows, each
 * tile's rows touched first by a tight loop (`warm`), which measured 1.7x faster pulls of random rows.
 *
 * @example
 *   const store = new ShardStore([{ id: 0, name: 'emb', dim: 9, init: { kind: 'normal', std: 0.01, seed: 1 } }],
 *     { kind: 'adagrad', lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, initialAccumulator: 0.1 });
 *   const keys = Int32Array.of(3, 70001);
 *   const rows = new Float32Array(2 * 9), versions = new Int32Array(2);
 *   store.pull(0, keys, rows, versions);          // creates both rows, versions [0, 0]
 *   store.apply(0, keys, grads, 1 / batchSize);   // versions [1, 1]
 */
import { fmix32 } from '../../tensor/random.js';
import { KeyIndex } from './key_index.js';

export type PsOptimizerKind = 'sgd' | 'adagrad' | 'adam';

/** The server-side optimizer, one for every table of a store. */
export interface PsOptimizerConfig {
  kind: PsOptimizerKind;
  /** Learning rate, >= 0. */
  lr: number;
  /** Adam's first-moment decay, in [0, 1). */
  beta1: number;
  /** Adam's second-moment decay, in [0, 1). */
  beta2: number;
  /** Added to the denominator (adagrad, adam), >= 0. */
  eps: number;
  /** Adagrad's initial accumulator (TF default 0.1), >= 0. */
  initialAccumulator: number;
}

/**
 * How a row is created on first touch: 'normal' draws N(0, std^2) per element deterministically
 * from (seed, table id, key, element index), so a row is the same whichever server creates it and
 * whenever; 'given': rows must be set() before they are pulled (pulling a missing one is an error).
 */
export type RowInit = { kind: 'normal'; std: number; seed: number } | { kind: 'zeros' } | { kind: 'given' };

export interface TableSpec { id: number; name: string; dim: number; init: RowInit }

/** Rows of one table as plain arrays, keys ascending: a checkpoint's or a migration's unit. */
export interface RowsBlob {
  table: number;
  dim: number;
  optimizer: PsOptimizerKind;
  keys: Int32Array;
  values: Float32Array;
  versions: Int32Array;
  /** optimizer state per row: sgd none; adagrad accum (n x dim); adam m, v (n x dim) and steps (n) */
  state: Record<string, Float32Array | Int32Array>;
}

/** The names of each optimizer's state arrays: per element (n x dim, Float32Array) and per row (n, Int32Array). */
export const PS_STATE: Record<PsOptimizerKind, { perElement: readonly string[]; perRow: readonly string[] }> = {
  sgd: { perElement: [], perRow: [] },
  adagrad: { perElement: ['accum'], perRow: [] },
  adam: { perElement: ['m', 'v'], perRow: ['steps'] },
};

const KINDS: readonly PsOptimizerKind[] = ['sgd', 'adagrad', 'adam'];

const EMPTY_F32 = new Float32Array(0);
const EMPTY_I32 = new Int32Array(0);

/** One table's rows: arenas by slot, slots 0..n-1 in use. */
class Table {
  readonly index = new KeyIndex();
  n = 0;
  cap = 0;
  keys = EMPTY_I32;
  values = EMPTY_F32;
  versions = EMPTY_I32;
  accum = EMPTY_F32;
  m = EMPTY_F32;
  v = EMPTY_F32;
  steps = EMPTY_I32;
  /** Pending gradient sums by slot (cap x dim), allocated on the first accumulate; zero outside pending rows. */
  pending: Float64Array | null = null;
  /** Each slot's position in `pendingList`, or -1. */
  pendingPos = EMPTY_I32;
  pendingList = EMPTY_I32;
  pendingN = 0;

  constructor(readonly spec: TableSpec, readonly kind: PsOptimizerKind) {}

  get dim(): number { return this.spec.dim; }

  /** Room for `need` slots, doubling. */
  reserve(need: number): void {
    if (need <= this.cap) return;
    let cap = Math.max(this.cap, 64);
    while (cap < need) cap *= 2;
    const d = this.dim;
    const f32 = (a: Float32Array, per: number): Float32Array => { const b = new Float32Array(cap * per); b.set(a); return b; };
    const i32 = (a: Int32Array): Int32Array => { const b = new Int32Array(cap); b.set(a); return b; };
    this.keys = i32(this.keys);
    this.values = f32(this.values, d);
    this.versions = i32(this.versions);
    if (this.kind === 'adagrad') this.accum = f32(this.accum, d);
    if (this.kind === 'adam') { this.m = f32(this.m, d); this.v = f32(this.v, d); this.steps = i32(this.steps); }
    if (this.pending !== null) this.growPending(cap);
    this.cap = cap;
  }

  ensurePending(): void { if (this.pending === null) this.growPending(this.cap); }

  private growPending(cap: number): void {
    const p = new Float64Array(cap * this.dim);
    if (this.pending !== null) p.set(this.pending);
    this.pending = p;
    const pos = new Int32Array(cap).fill(-1);
    pos.set(this.pendingPos);
    this.pendingPos = pos;
    const list = new Int32Array(cap);
    list.set(this.pendingList.subarray(0, this.pendingN));
    this.pendingList = list;
  }

  /** A new slot for `key` (absent), its contents not yet set. */
  alloc(key: number): number {
    this.reserve(this.n + 1);
    const s = this.n++;
    this.keys[s] = key;
    this.index.add(key, s);
    return s;
  }

  /** Version 0 and fresh optimizer state at slot `s`. */
  fresh(s: number, initialAccumulator: number): void {
    const d = this.dim;
    this.versions[s] = 0;
    if (this.kind === 'adagrad') this.accum.fill(initialAccumulator, s * d, s * d + d);
    if (this.kind === 'adam') { this.m.fill(0, s * d, s * d + d); this.v.fill(0, s * d, s * d + d); this.steps[s] = 0; }
  }

  /** Forgets slot `s`'s pending gradient (its row zeroed, removed from the list). */
  dropPending(s: number): void {
    const at = this.pendingPos[s] ?? -1;
    if (at < 0) return;
    const d = this.dim;
    this.pending!.fill(0, s * d, s * d + d);
    const last = this.pendingList[--this.pendingN]!;
    this.pendingList[at] = last;
    this.pendingPos[last] = at;
    this.pendingPos[s] = -1;
  }

  /** Removes slot `s` (no pending gradient) by moving the last slot into it. */
  remove(s: number): void {
    const d = this.dim;
    const last = --this.n;
    this.index.delete(this.keys[s]!);
    if (s !== last) {
      const key = this.keys[last]!;
      this.keys[s] = key;
      this.index.move(key, s);
      this.values.copyWithin(s * d, last * d, last * d + d);
      this.versions[s] = this.versions[last]!;
      if (this.kind === 'adagrad') this.accum.copyWithin(s * d, last * d, last * d + d);
      if (this.kind === 'adam') {
        this.m.copyWithin(s * d, last * d, last * d + d);
        this.v.copyWithin(s * d, last * d, last * d + d);
        this.steps[s] = this.steps[last]!;
      }
      const at = this.pendingPos[last] ?? -1;
      if (at >= 0) {
        this.pending!.copyWithin(s * d, last * d, last * d + d);
        this.pending!.fill(0, last * d, last * d + d);
        this.pendingList[at] = s;
        this.pendingPos[s] = at;
        this.pendingPos[last] = -1;
      }
    }
  }

  describe(): string { return `table ${this.spec.id} '${this.spec.name}'`; }
}

const TWO_PI = 2 * Math.PI;

/**
 * Writes row `key` of `table`'s N(0, std^2) init into out[o .. o + dim): counter-based, a pure
 * function of (seed, table, key, element). Two independent 32-bit hash chains of (seed, table,
 * key, pair p) give the uniforms u1 in (0, 1], u2 in [0, 1) of element pair (2p, 2p + 1), and
 * Box-Muller turns them into two normals: r = std sqrt(-2 ln u1), (r cos 2 pi u2, r sin 2 pi u2).
 */
export function normalRow(seed: number, table: number, key: number, std: number, out: Float32Array, o: number, dim: number): void {
  const a = fmix32(fmix32(fmix32(seed ^ 0x243f6a88) ^ table) ^ key);
  const b = fmix32(fmix32(fmix32(seed ^ 0x85a308d3) ^ table) ^ key);
  for (let p = 0; 2 * p < dim; p++) {
    const c = fmix32(p + 0x13198a2e);
    const u1 = (fmix32(a ^ c) + 1) * 2 ** -32;
    const u2 = fmix32(b ^ c) * 2 ** -32;
    const r = std * Math.sqrt(-2 * Math.log(u1));
    out[o + 2 * p] = r * Math.cos(TWO_PI * u2);
    if (2 * p + 1 < dim) out[o + 2 * p + 1] = r * Math.sin(TWO_PI * u2);
  }
}

function checkConfig(opt: PsOptimizerConfig): void {
  const bad = (field: string, want: string, got: unknown): never => { throw new Error(`ShardStore: optimizer.${field} must be ${want}, got ${String(got)}`); };
  if (!KINDS.includes(opt.kind)) bad('kind', `one of ${KINDS.join(', ')}`, `'${opt.kind}'`);
  if (!(Number.isFinite(opt.lr) && opt.lr >= 0)) bad('lr', 'a finite number >= 0', opt.lr);
  for (const f of ['beta1', 'beta2'] as const) if (!(opt[f] >= 0 && opt[f] < 1)) bad(f, 'in [0, 1)', opt[f]);
  if (!(Number.isFinite(opt.eps) && opt.eps >= 0)) bad('eps', 'a finite number >= 0', opt.eps);
  if (!(Number.isFinite(opt.initialAccumulator) && opt.initialAccumulator >= 0)) bad('initialAccumulator', 'a finite number >= 0', opt.initialAccumulator);
}

function checkSpec(t: TableSpec, i: number): void {
  const at = `ShardStore: tables[${i}]`;
  if (!Number.isInteger(t.id) || t.id < 0 || t.id >= 2 ** 21) throw new Error(`${at}.id must be an integer in [0, 2^21), got ${t.id}`);
  if (!Number.isInteger(t.dim) || t.dim < 1) throw new Error(`${at} (table ${t.id} '${t.name}').dim must be a positive integer, got ${t.dim}`);
  const init = t.init;
  if (init.kind === 'normal') {
    if (!(Number.isFinite(init.std) && init.std >= 0)) throw new Error(`${at} (table ${t.id} '${t.name}').init.std must be a finite number >= 0, got ${init.std}`);
    if (!Number.isInteger(init.seed) || init.seed < 0 || init.seed >= 2 ** 32) throw new Error(`${at} (table ${t.id} '${t.name}').init.seed must be an integer in [0, 2^32), got ${init.seed}`);
  } else if (init.kind !== 'zeros' && init.kind !== 'given') {
    throw new Error(`${at} (table ${t.id} '${t.name}').init.kind must be 'normal', 'zeros' or 'given', got '${(init as { kind: string }).kind}'`);
  }
}

export class ShardStore {
  private readonly tables = new Map<number, Table>();
  private readonly opt: PsOptimizerConfig;
  /** Slots of the current call's keys (reused across calls). */
  private scratch = new Int32Array(1024);

  constructor(tables: readonly TableSpec[], opt: PsOptimizerConfig) {
    checkConfig(opt);
    this.opt = { ...opt };
    tables.forEach((spec, i) => {
      checkSpec(spec, i);
      const had = this.tables.get(spec.id);
      if (had !== undefined) throw new Error(`ShardStore: tables[${i}] '${spec.name}' reuses id ${spec.id} of '${had.spec.name}'`);
      this.tables.set(spec.id, new Table(Object.freeze({ ...spec, init: { ...spec.init } }), opt.kind));
    });
  }

  /** The optimizer every table of this store is updated by. */
  get optimizer(): PsOptimizerKind { return this.opt.kind; }

  /** The spec of table `id` (an error naming the id if unknown). */
  table(id: number): TableSpec { return this.get(id, 'ShardStore.table').spec; }

  /**
   * Copies rows `keys` into `out` (keys.length x dim, row-major) and their versions into
   * `versions`; missing rows are created by the table's init ('given' tables: an error).
   */
  pull(table: number, keys: Int32Array, out: Float32Array, versions: Int32Array): void {
    const t = this.get(table, 'ShardStore.pull');
    const n = keys.length;
    const d = t.dim;
    checkLength('ShardStore.pull', t, 'out', out.length, n * d, `keys.length x dim = ${n} x ${d}`);
    checkLength('ShardStore.pull', t, 'versions', versions.length, n, 'keys.length');
    const s = this.slots(t, keys, 'ShardStore.pull');
    const vals = t.values;
    const ver = t.versions;
    for (let i0 = 0; i0 < n; i0 += TILE) {
      const i1 = Math.min(n, i0 + TILE);
      warm(s, i0, i1, vals, d);
      warm(s, i0, i1, ver, 1);
      for (let i = i0; i < i1; i++) {
        const si = s[i]!;
        const o = si * d;
        const q = i * d;
        for (let j = 0; j < d; j++) out[q + j] = vals[o + j]!;
        versions[i] = ver[si]!;
      }
    }
  }

  /**
   * Sets rows to `values` (keys.length x dim) with version 0 and fresh optimizer state (for
   * 'given' tables: the initial dense values). Rows already present are left alone unless
   * `overwrite` (which also drops their pending gradient). Returns how many rows were set.
   */
  set(table: number, keys: Int32Array, values: Float32Array, overwrite = false): number {
    const t = this.get(table, 'ShardStore.set');
    const d = t.dim;
    checkLength('ShardStore.set', t, 'values', values.length, keys.length * d, `keys.length x dim = ${keys.length} x ${d}`);
    checkKeys('ShardStore.set', t, keys);
    let count = 0;
    for (let i = 0; i < keys.length; i++) {
      let s = t.index.get(keys[i]!);
      if (s >= 0 && !overwrite) continue;
      if (s < 0) s = t.alloc(keys[i]!);
      else t.dropPending(s);
      t.values.set(values.subarray(i * d, i * d + d), s * d);
      t.fresh(s, this.opt.initialAccumulator);
      count++;
    }
    return count;
  }

  /** Adds scale x grads (keys.length x dim) into each row's pending float64 sum; `applyPending` steps them. */
  accumulate(table: number, keys: Int32Array, grads: Float32Array, scale: number): void {
    const t = this.get(table, 'ShardStore.accumulate');
    const n = keys.length;
    const d = t.dim;
    checkLength('ShardStore.accumulate', t, 'grads', grads.length, n * d, `keys.length x dim = ${n} x ${d}`);
    checkScale('ShardStore.accumulate', t, scale);
    const s = this.slots(t, keys, 'ShardStore.accumulate');
    t.ensurePending();
    const p = t.pending!;
    const pos = t.pendingPos;
    const list = t.pendingList;
    for (let i0 = 0; i0 < n; i0 += TILE) {
      const i1 = Math.min(n, i0 + TILE);
      warm(s, i0, i1, p, d);
      warm(s, i0, i1, pos, 1);
      for (let i = i0; i < i1; i++) {
        const si = s[i]!;
        if (pos[si] === -1) { pos[si] = t.pendingN; list[t.pendingN++] = si; }
        const o = si * d;
        const q = i * d;
        for (let j = 0; j < d; j++) p[o + j]! += scale * grads[q + j]!;
      }
    }
  }

  /** One optimizer step for every row with a pending gradient, using its sum; clears the pending set. Returns rows updated (each version += 1). */
  applyPending(): number {
    let total = 0;
    for (const t of this.tables.values()) {
      const n = t.pendingN;
      if (n === 0) continue;
      this.step(t, t.pendingList, n, t.pending!, true, 1); // clears each pending row after its step
      t.pendingN = 0;
      total += n;
    }
    return total;
  }

  /** One optimizer step on rows `keys` with scale x grads (keys.length x dim), each push as it arrives. Each version += 1. */
  apply(table: number, keys: Int32Array, grads: Float32Array, scale: number): void {
    const t = this.get(table, 'ShardStore.apply');
    const n = keys.length;
    checkLength('ShardStore.apply', t, 'grads', grads.length, n * t.dim, `keys.length x dim = ${n} x ${t.dim}`);
    checkScale('ShardStore.apply', t, scale);
    const s = this.slots(t, keys, 'ShardStore.apply');
    this.step(t, s, n, grads, false, scale);
  }

  /** Rows present in `table`. */
  size(table: number): number { return this.get(table, 'ShardStore.size').n; }

  /** Row `key`'s version (optimizer steps applied), -1 when absent. */
  version(table: number, key: number): number {
    const t = this.get(table, 'ShardStore.version');
    const s = t.index.get(key);
    return s < 0 ? -1 : t.versions[s]!;
  }

  /**
   * Rows of `table` (values, versions, optimizer state) whose key passes `keep` (all when
   * omitted), keys ascending: for checkpoints and for moving rows to another server. Pending
   * gradients are not part of a row: export between clocks, after `applyPending`.
   */
  exportRows(table: number, keep?: (key: number) => boolean): RowsBlob {
    const t = this.get(table, 'ShardStore.exportRows');
    const d = t.dim;
    let keys = new Int32Array(t.n);
    let n = 0;
    for (let s = 0; s < t.n; s++) if (keep === undefined || keep(t.keys[s]!)) keys[n++] = t.keys[s]!;
    keys = keys.slice(0, n).sort();
    const values = new Float32Array(n * d);
    const versions = new Int32Array(n);
    const state: Record<string, Float32Array | Int32Array> = {};
    const elems = PS_STATE[t.kind].perElement.map((name) => (state[name] = new Float32Array(n * d)));
    const rows = PS_STATE[t.kind].perRow.map((name) => (state[name] = new Int32Array(n)));
    const srcElems = this.elementState(t);
    const srcRows = this.rowState(t);
    for (let i = 0; i < n; i++) {
      const s = t.index.get(keys[i]!);
      values.set(t.values.subarray(s * d, s * d + d), i * d);
      versions[i] = t.versions[s]!;
      elems.forEach((a, k) => a.set(srcElems[k]!.subarray(s * d, s * d + d), i * d));
      rows.forEach((a, k) => { a[i] = srcRows[k]![s]!; });
    }
    return { table, dim: d, optimizer: t.kind, keys, values, versions, state };
  }

  /**
   * Inserts (or overwrites) the rows of `blob` whose key passes `keep` (all when omitted):
   * values, versions and optimizer state exactly as exported. An error naming the table if its
   * dim or optimizer kind differs from this store's, or an array has the wrong length. Returns
   * how many rows were imported.
   */
  importRows(blob: RowsBlob, keep?: (key: number) => boolean): number {
    const t = this.get(blob.table, 'ShardStore.importRows');
    const where = 'ShardStore.importRows';
    if (blob.dim !== t.dim) throw new Error(`${where}: ${t.describe()} has dim ${t.dim}, the blob has dim ${blob.dim}`);
    if (blob.optimizer !== t.kind) throw new Error(`${where}: ${t.describe()} is optimized by ${t.kind}, the blob carries ${blob.optimizer} state`);
    const n = blob.keys.length;
    const d = t.dim;
    checkLength(where, t, 'blob.values', blob.values.length, n * d, `keys.length x dim = ${n} x ${d}`);
    checkLength(where, t, 'blob.versions', blob.versions.length, n, 'keys.length');
    checkKeys(where, t, blob.keys);
    const elems = PS_STATE[t.kind].perElement.map((name) => blobState(blob, t, name, Float32Array, n * d, `keys.length x dim = ${n} x ${d}`) as Float32Array);
    const rows = PS_STATE[t.kind].perRow.map((name) => blobState(blob, t, name, Int32Array, n, 'keys.length') as Int32Array);
    let count = 0;
    for (let i = 0; i < n; i++) {
      const key = blob.keys[i]!;
      if (keep !== undefined && !keep(key)) continue;
      let s = t.index.get(key);
      if (s < 0) s = t.alloc(key);
      else t.dropPending(s);
      t.values.set(blob.values.subarray(i * d, i * d + d), s * d);
      t.versions[s] = blob.versions[i]!;
      const dstElems = this.elementState(t);
      const dstRows = this.rowState(t);
      elems.forEach((a, k) => dstElems[k]!.set(a.subarray(i * d, i * d + d), s * d));
      rows.forEach((a, k) => { dstRows[k]![s] = a[i]!; });
      count++;
    }
    return count;
  }

  /** Removes rows `keys` (after they moved to another server); absent keys are skipped. A row with a pending gradient is an error (apply it first). */
  removeRows(table: number, keys: Int32Array): void {
    const t = this.get(table, 'ShardStore.removeRows');
    for (let i = 0; i < keys.length; i++) {
      const s = t.index.get(keys[i]!);
      if (s >= 0 && (t.pendingPos[s] ?? -1) >= 0) throw new Error(`ShardStore.removeRows: ${t.describe()} row ${keys[i]} has a pending gradient; applyPending() before moving rows`);
    }
    for (let i = 0; i < keys.length; i++) {
      const s = t.index.get(keys[i]!);
      if (s >= 0) t.remove(s);
    }
  }

  private get(id: number, where: string): Table {
    const t = this.tables.get(id);
    if (t === undefined) {
      const known = [...this.tables.values()].map((x) => `${x.spec.id} '${x.spec.name}'`).join(', ');
      throw new Error(`${where}: no table ${id} (tables: ${known || 'none'})`);
    }
    return t;
  }

  private elementState(t: Table): Float32Array[] { return t.kind === 'adagrad' ? [t.accum] : t.kind === 'adam' ? [t.m, t.v] : []; }
  private rowState(t: Table): Int32Array[] { return t.kind === 'adam' ? [t.steps] : []; }

  /** The slots of `keys` in this.scratch, creating missing rows by the table's init. */
  private slots(t: Table, keys: Int32Array, where: string): Int32Array {
    const n = keys.length;
    if (this.scratch.length < n) this.scratch = new Int32Array(Math.max(n, 2 * this.scratch.length));
    const out = this.scratch;
    const index = t.index;
    for (let i = 0; i < n; i++) {
      const key = keys[i]!;
      let s = index.get(key);
      if (s < 0) s = this.create(t, key, i, where);
      out[i] = s;
    }
    return out;
  }

  /** A new row for `key` (keys[i] of a call), by the table's init. */
  private create(t: Table, key: number, i: number, where: string): number {
    if (key < 0) throw new Error(`${where}: ${t.describe()}: keys[${i}] = ${key} is outside [0, 2^31)`);
    const init = t.spec.init;
    if (init.kind === 'given') throw new Error(`${where}: ${t.describe()} has no row ${key} (keys[${i}]); its init is 'given', so rows must be set() before they are used`);
    const s = t.alloc(key);
    const d = t.dim;
    if (init.kind === 'normal') normalRow(init.seed, t.spec.id, key, init.std, t.values, s * d, d);
    else t.values.fill(0, s * d, s * d + d);
    t.fresh(s, this.opt.initialAccumulator);
    return s;
  }

  /**
   * One optimizer step on slots s[0..n): row i's gradient is scale x g at g[s[i] x dim] when
   * `bySlot` (the pending sums, each cleared after its step), else at g[i x dim] (a push). Tile by
   * tile, each tile's rows warmed first.
   */
  private step(t: Table, s: Int32Array, n: number, g: Float32Array | Float64Array, bySlot: boolean, scale: number): void {
    const d = t.dim;
    const arenas: [Arena, number][] = [[t.values, d], [t.versions, 1]];
    if (t.kind === 'adagrad') arenas.push([t.accum, d]);
    if (t.kind === 'adam') arenas.push([t.m, d], [t.v, d], [t.steps, 1]);
    if (bySlot) arenas.push([g, d]);
    for (let i0 = 0; i0 < n; i0 += TILE) {
      const i1 = Math.min(n, i0 + TILE);
      for (const [a, width] of arenas) warm(s, i0, i1, a, width);
      if (t.kind === 'sgd') sgdRows(t, this.opt, s, i0, i1, g, bySlot, scale);
      else if (t.kind === 'adagrad') adagradRows(t, this.opt, s, i0, i1, g, bySlot, scale);
      else adamRows(t, this.opt, s, i0, i1, g, bySlot, scale);
      if (bySlot) clearPending(t, s, i0, i1);
    }
  }
}

type Arena = Float32Array | Float64Array | Int32Array;

/** Rows per tile of a gather or update: a tile's rows (up to 7 cache lines each, for adam) stay within L2. */
const TILE = 256;
let sink = 0;

/**
 * Touches the first and last element of rows s[i0..i1) of arena `a` (rows `width` wide). Gathering
 * random rows is bound by memory latency, and a loop whose body copies or updates a whole row is
 * long enough that the CPU's reorder buffer holds the misses of about one row at a time; this
 * tight loop of independent loads keeps many in flight, and the loop after it finds the rows in
 * cache. Measured on 1M rows of dim 9, gathering 50k random rows: 9.9 ms plain, 3.0 ms warmed in
 * tiles of 128 to 1024 rows (and 8.5 ms warming all 50k first: they no longer fit in L2).
 */
function warm(s: Int32Array, i0: number, i1: number, a: Arena, width: number): void {
  if (a instanceof Float32Array) warmF32(s, i0, i1, a, width);
  else if (a instanceof Int32Array) warmI32(s, i0, i1, a, width);
  else warmF64(s, i0, i1, a, width);
}

// One loop per array type, so each stays monomorphic.
function warmF32(s: Int32Array, i0: number, i1: number, a: Float32Array, width: number): void {
  let z = 0;
  for (let i = i0; i < i1; i++) { const o = s[i]! * width; z += a[o]! + a[o + width - 1]!; }
  sink += z; // used, so the loads are not optimized away
}
function warmI32(s: Int32Array, i0: number, i1: number, a: Int32Array, width: number): void {
  let z = 0;
  for (let i = i0; i < i1; i++) { const o = s[i]! * width; z += a[o]! + a[o + width - 1]!; }
  sink += z;
}
function warmF64(s: Int32Array, i0: number, i1: number, a: Float64Array, width: number): void {
  let z = 0;
  for (let i = i0; i < i1; i++) { const o = s[i]! * width; z += a[o]! + a[o + width - 1]!; }
  sink += z;
}

/** Zeroes the pending sums of slots s[i0..i1) and takes them out of the pending set (the caller resets its length). */
function clearPending(t: Table, s: Int32Array, i0: number, i1: number): void {
  const d = t.dim;
  const p = t.pending!;
  const pos = t.pendingPos;
  for (let i = i0; i < i1; i++) {
    const si = s[i]!;
    const o = si * d;
    for (let j = 0; j < d; j++) p[o + j] = 0;
    pos[si] = -1;
  }
}

function sgdRows(t: Table, opt: PsOptimizerConfig, s: Int32Array, i0: number, i1: number, g: Float32Array | Float64Array, bySlot: boolean, scale: number): void {
  const d = t.dim;
  const w = t.values;
  const ver = t.versions;
  const lr = opt.lr;
  for (let i = i0; i < i1; i++) {
    const si = s[i]!;
    const o = si * d;
    const q = bySlot ? o : i * d;
    for (let j = 0; j < d; j++) w[o + j] = w[o + j]! - lr * (scale * g[q + j]!);
    ver[si]!++;
  }
}

function adagradRows(t: Table, opt: PsOptimizerConfig, s: Int32Array, i0: number, i1: number, g: Float32Array | Float64Array, bySlot: boolean, scale: number): void {
  const d = t.dim;
  const w = t.values;
  const ver = t.versions;
  const acc = t.accum;
  const { lr, eps } = opt;
  for (let i = i0; i < i1; i++) {
    const si = s[i]!;
    const o = si * d;
    const q = bySlot ? o : i * d;
    for (let j = 0; j < d; j++) {
      const gj = scale * g[q + j]!;
      const a = acc[o + j]! + gj * gj;
      acc[o + j] = a;
      w[o + j] = w[o + j]! - (lr * gj) / (Math.sqrt(a) + eps);
    }
    ver[si]!++;
  }
}

function adamRows(t: Table, opt: PsOptimizerConfig, s: Int32Array, i0: number, i1: number, g: Float32Array | Float64Array, bySlot: boolean, scale: number): void {
  const d = t.dim;
  const w = t.values;
  const ver = t.versions;
  const { m, v, steps } = t;
  const { lr, eps, beta1: b1, beta2: b2 } = opt;
  for (let i = i0; i < i1; i++) {
    const si = s[i]!;
    const o = si * d;
    const q = bySlot ? o : i * d;
    const k = ++steps[si]!;
    const c1 = 1 - b1 ** k;
    const c2 = 1 - b2 ** k;
    for (let j = 0; j < d; j++) {
      const gj = scale * g[q + j]!;
      const mj = b1 * m[o + j]! + (1 - b1) * gj;
      const vj = b2 * v[o + j]! + (1 - b2) * gj * gj;
      m[o + j] = mj;
      v[o + j] = vj;
      w[o + j] = w[o + j]! - (lr * (mj / c1)) / (Math.sqrt(vj / c2) + eps);
    }
    ver[si]!++;
  }
}

function checkLength(where: string, t: Table, arg: string, got: number, want: number, what: string): void {
  if (got !== want) throw new Error(`${where}: ${t.describe()} (dim ${t.dim}): ${arg} must have ${what} = ${want} elements, got ${got}`);
}

function checkScale(where: string, t: Table, scale: number): void {
  if (!Number.isFinite(scale)) throw new Error(`${where}: ${t.describe()}: scale must be a finite number, got ${scale}`);
}

function checkKeys(where: string, t: Table, keys: Int32Array): void {
  for (let i = 0; i < keys.length; i++) if (keys[i]! < 0) throw new Error(`${where}: ${t.describe()}: keys[${i}] = ${keys[i]} is outside [0, 2^31)`);
}

function blobState(blob: RowsBlob, t: Table, name: string, type: typeof Float32Array | typeof Int32Array, want: number, what: string): Float32Array | Int32Array {
  const a = blob.state[name];
  const where = 'ShardStore.importRows';
  if (a === undefined) throw new Error(`${where}: ${t.describe()}: the blob has no ${t.kind} state '${name}' (state: ${Object.keys(blob.state).join(', ') || 'none'})`);
  if (!(a instanceof type)) throw new Error(`${where}: ${t.describe()}: state '${name}' must be a ${type.name}, got a ${(a as object).constructor.name}`);
  checkLength(where, t, `blob.state.${name}`, a.length, want, what);
  return a;
}
