/**
 * parallel/ps/store.ts, the parameter server's shard store: sgd, adagrad and lazy Adam against
 * float64 references written here (rows touched on different steps, untouched rows bit-unchanged),
 * synchronous accumulation equal to one step on the summed gradient, the counter-based normal init
 * (order- and server-independent, N(0, std^2) by its moments), export/import and removal keeping
 * rows bit-identical, the shard file round trip and a 3 -> 2 server reshard, and errors that name
 * the table and the argument.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HashRing, rowKey } from '../src/parallel/hash_ring.js';
import { normalRow, ShardStore } from '../src/parallel/ps/store.js';
import type { PsOptimizerConfig, PsOptimizerKind, RowsBlob, TableSpec } from '../src/parallel/ps/store.js';
import { decodeShard, encodeShard } from '../src/train/ps_shard_file.js';
import { CheckpointError, encodeSafetensors } from '../src/train/safetensors.js';
import type { TensorIn } from '../src/train/safetensors.js';

const opt = (kind: PsOptimizerKind, over: Partial<PsOptimizerConfig> = {}): PsOptimizerConfig =>
  ({ kind, lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, initialAccumulator: 0.1, ...over });
const given = (id: number, dim: number, name = `t${id}`): TableSpec => ({ id, name, dim, init: { kind: 'given' } });
const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** A deterministic gradient element of varied sign and magnitude. */
const gradAt = (step: number, key: number, j: number): number => Math.sin(step * 12.9898 + (key % 9973) * 0.37 + j * 78.233) * (0.5 + j);
const grads = (step: number, keys: Int32Array, dim: number): Float32Array =>
  Float32Array.from({ length: keys.length * dim }, (_, e) => gradAt(step, keys[Math.floor(e / dim)]!, e % dim));
const initialRow = (key: number, dim: number): number[] => Array.from({ length: dim }, (_, j) => 1 + 0.1 * j + (key % 7) * 0.05);

/** The float64 reference of one row: weights and optimizer state, and its own step count. */
interface RefRow { w: number[]; a: number[]; m: number[]; v: number[]; t: number }

function refStep(o: PsOptimizerConfig, r: RefRow, g: readonly number[], globalStep?: number): void {
  r.t++;
  const t = globalStep ?? r.t; // dense Adam would use the global step: only for the control below
  for (let j = 0; j < g.length; j++) {
    const gj = g[j]!;
    if (o.kind === 'sgd') r.w[j]! -= o.lr * gj;
    else if (o.kind === 'adagrad') { r.a[j]! += gj * gj; r.w[j]! -= (o.lr * gj) / (Math.sqrt(r.a[j]!) + o.eps); }
    else {
      r.m[j] = o.beta1 * r.m[j]! + (1 - o.beta1) * gj;
      r.v[j] = o.beta2 * r.v[j]! + (1 - o.beta2) * gj * gj;
      r.w[j]! -= (o.lr * (r.m[j]! / (1 - o.beta1 ** t))) / (Math.sqrt(r.v[j]! / (1 - o.beta2 ** t)) + o.eps);
    }
  }
}

function assertRel(got: ArrayLike<number>, want: readonly number[], tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let j = 0; j < want.length; j++) {
    const err = Math.abs(got[j]! - want[j]!) / Math.max(Math.abs(want[j]!), 1e-30);
    assert.ok(err <= tol, `${what}[${j}]: got ${got[j]}, want ${want[j]} (relative error ${err.toExponential(2)})`);
  }
}

const KEYS = [3, 17, 1_000_000, 2 ** 31 - 1];
const UNTOUCHED = 1_000_000;
// Rows touched on different steps: 2^31 - 1 first on step 2, so its Adam bias correction is step 1's then.
const SCHEDULE = [[3, 17], [17, 2 ** 31 - 1], [3, 17, 2 ** 31 - 1], [17]];

for (const kind of ['sgd', 'adagrad', 'adam'] as const) {
  test(`${kind}: four steps on rows touched at different steps match the float64 reference to 1e-6; the untouched row is bit-unchanged`, () => {
    const o = opt(kind);
    const dim = 5;
    const store = new ShardStore([given(0, dim, 'emb')], o);
    const keys = Int32Array.from(KEYS);
    store.set(0, keys, Float32Array.from(KEYS.flatMap((k) => initialRow(k, dim))));
    const ref = new Map(KEYS.map((k) => [k, { w: initialRow(k, dim).map(Math.fround), a: Array(dim).fill(o.initialAccumulator), m: Array(dim).fill(0), v: Array(dim).fill(0), t: 0 }]));
    const dense = new Map(KEYS.map((k) => [k, structuredClone(ref.get(k)!)]));
    const before = store.exportRows(0, (k) => k === UNTOUCHED);
    const scale = 0.5;
    SCHEDULE.forEach((ks, step) => {
      const sk = Int32Array.from(ks);
      const g = grads(step, sk, dim);
      store.apply(0, sk, g, scale);
      ks.forEach((k, i) => {
        const gi = Array.from(g.subarray(i * dim, i * dim + dim), (x) => scale * x);
        refStep(o, ref.get(k)!, gi);
        refStep(o, dense.get(k)!, gi, step + 1);
      });
    });
    const out = store.exportRows(0);
    assert.deepEqual([...out.keys], [...KEYS].sort((a, b) => a - b));
    out.keys.forEach((k, i) => {
      const r = ref.get(k)!;
      assertRel(out.values.subarray(i * dim, i * dim + dim), r.w, 1e-6, `${kind} row ${k} values`);
      assert.equal(out.versions[i], r.t, `row ${k} version`);
      assert.equal(store.version(0, k), r.t);
      if (kind === 'adagrad') assertRel(out.state['accum']!.subarray(i * dim, i * dim + dim), r.a, 1e-6, `row ${k} accum`);
      if (kind === 'adam') {
        assertRel(out.state['m']!.subarray(i * dim, i * dim + dim), r.m, 1e-6, `row ${k} m`);
        assertRel(out.state['v']!.subarray(i * dim, i * dim + dim), r.v, 1e-6, `row ${k} v`);
        assert.equal(out.state['steps']![i], r.t, `row ${k} steps`);
      }
    });
    assert.deepEqual(out.versions.slice(), Int32Array.of(2, 4, 0, 2)); // keys ascending: 3, 17, 10^6, 2^31 - 1
    // The untouched row: values, state and version bit for bit as before.
    const after = store.exportRows(0, (k) => k === UNTOUCHED);
    assert.deepEqual(bits(after.values), bits(before.values));
    assert.deepEqual(after.versions, before.versions);
    for (const [name, a] of Object.entries(before.state)) {
      const b = after.state[name]!;
      if (a instanceof Float32Array) assert.deepEqual(bits(b as Float32Array), bits(a), `state ${name}`);
      else assert.deepEqual(b, a, `state ${name}`);
    }
    if (kind === 'adam') {
      // Control: dense Adam's global step count gives a different row 2^31 - 1 (first touched at step 2), so the test can tell.
      const i = out.keys.indexOf(2 ** 31 - 1);
      const diff = Math.abs(out.values[i * dim]! - dense.get(2 ** 31 - 1)!.w[0]!);
      assert.ok(diff > 1e-3, `lazy and dense Adam differ by only ${diff}`);
    }
  });
}

for (const kind of ['sgd', 'adagrad', 'adam'] as const) {
  test(`${kind}: accumulate from 4 workers then applyPending equals apply of the summed gradient (1e-7); versions +1 once per clock`, () => {
    const o = opt(kind);
    const dim = 3;
    const keys = [0, 5, 9, 12, 40, 41];
    const mk = (): ShardStore => {
      const s = new ShardStore([given(7, dim)], o);
      s.set(7, Int32Array.from(keys), Float32Array.from(keys.flatMap((k) => initialRow(k, dim))));
      return s;
    };
    const sync = mk();
    const async = mk();
    for (let clock = 0; clock < 2; clock++) {
      // Worker w pushes an overlapping subset; row 41 is never pushed.
      const pushes = [[0, 5, 9], [5, 9, 12], [9, 12, 40, 0], [40, 5]].map((ks, w) => ({ keys: Int32Array.from(ks), g: grads(10 * clock + w, Int32Array.from(ks), dim) }));
      const sum = new Map<number, number[]>();
      for (const p of pushes) {
        sync.accumulate(7, p.keys, p.g, 0.25);
        p.keys.forEach((k, i) => {
          const acc = sum.get(k) ?? Array(dim).fill(0);
          for (let j = 0; j < dim; j++) acc[j] += 0.25 * p.g[i * dim + j]!;
          sum.set(k, acc);
        });
      }
      assert.equal(sync.version(7, 0), clock, 'accumulate alone does not step');
      assert.equal(sync.applyPending(), 5);
      assert.equal(sync.applyPending(), 0, 'the pending set is cleared');
      const sk = Int32Array.from(sum.keys());
      async.apply(7, sk, Float32Array.from([...sum.values()].flat()), 1);
      const a = sync.exportRows(7);
      const b = async.exportRows(7);
      assertRel(a.values, [...b.values], 1e-7, `clock ${clock} values`);
      assert.deepEqual(a.versions, Int32Array.of(clock + 1, clock + 1, clock + 1, clock + 1, clock + 1, 0));
      assert.deepEqual(a.versions, b.versions);
    }
  });
}

test('normal init: a row is the same whatever order, call or store touches it, and differs by table and seed', () => {
  const spec = (id: number, seed: number): TableSpec => ({ id, name: `e${id}`, dim: 9, init: { kind: 'normal', std: 0.02, seed } });
  const pull = (s: ShardStore, table: number, ks: number[]): Float32Array => {
    const out = new Float32Array(ks.length * 9);
    s.pull(table, Int32Array.from(ks), out, new Int32Array(ks.length));
    return out;
  };
  const a = new ShardStore([spec(1, 42)], opt('adam'));
  const b = new ShardStore([spec(0, 42), spec(1, 42), spec(2, 7)], opt('sgd'));
  const first = pull(a, 1, [5, 9, 123456]);
  pull(b, 1, [77]);
  pull(b, 1, [123456]);
  const again = pull(b, 1, [9, 5, 77]);
  assert.deepEqual(bits(again.subarray(0, 9)), bits(first.subarray(9, 18)), 'key 9');
  assert.deepEqual(bits(again.subarray(9, 18)), bits(first.subarray(0, 9)), 'key 5');
  assert.deepEqual(bits(pull(b, 1, [123456])), bits(first.subarray(18, 27)), 'key 123456');
  assert.notDeepEqual(bits(pull(b, 0, [5])), bits(first.subarray(0, 9)), 'another table id');
  const direct = new Float32Array(9);
  normalRow(42, 1, 9, 0.02, direct, 0, 9);
  assert.deepEqual(bits(direct), bits(first.subarray(9, 18)), 'normalRow is the init');
  const other = new ShardStore([spec(1, 43)], opt('sgd'));
  assert.notDeepEqual(bits(pull(other, 1, [5])), bits(first.subarray(0, 9)), 'another seed');
});

test('normal init: 20,000 rows x 9 have mean ~0, std 0.02 per element (within 3%), 68.3% within one std, uncorrelated pairs and neighbours', () => {
  const n = 20_000;
  const dim = 9;
  const std = 0.02;
  const s = new ShardStore([{ id: 3, name: 'emb', dim, init: { kind: 'normal', std, seed: 1 } }], opt('sgd'));
  const out = new Float32Array(n * dim);
  s.pull(3, Int32Array.from({ length: n }, (_, i) => i), out, new Int32Array(n));
  let sum = 0;
  let sq = 0;
  let within = 0;
  for (const x of out) { sum += x; sq += x * x; if (Math.abs(x) < std) within++; }
  const N = n * dim;
  assert.ok(Math.abs(sum / N) < (4 * std) / Math.sqrt(N), `mean ${sum / N}`);
  assert.ok(Math.abs(Math.sqrt(sq / N) / std - 1) < 0.01, `std ${Math.sqrt(sq / N)}`);
  assert.ok(Math.abs(within / N - 0.6827) < 0.005, `within one std: ${within / N}`);
  const col = (j: number, shift = 0): number[] => Array.from({ length: n - shift }, (_, i) => out[(i + shift) * dim + j]!);
  for (let j = 0; j < dim; j++) {
    const c = col(j);
    const sd = Math.sqrt(c.reduce((t, x) => t + x * x, 0) / n);
    assert.ok(Math.abs(sd / std - 1) < 0.03, `element ${j}: std ${sd}`);
  }
  const corr = (x: number[], y: number[]): number => {
    let xy = 0, xx = 0, yy = 0;
    for (let i = 0; i < x.length; i++) { xy += x[i]! * y[i]!; xx += x[i]! ** 2; yy += y[i]! ** 2; }
    return xy / Math.sqrt(xx * yy);
  };
  assert.ok(Math.abs(corr(col(0), col(1))) < 0.03, 'one Box-Muller pair');
  assert.ok(Math.abs(corr(col(0).slice(0, n - 1), col(0, 1))) < 0.03, 'rows k and k + 1');
});

test("zeros init pulls zero rows at version 0; a 'given' table refuses a row never set, naming the table and the key", () => {
  const s = new ShardStore([{ id: 0, name: 'bias', dim: 4, init: { kind: 'zeros' } }, given(1, 2, 'dense')], opt('adagrad'));
  const out = new Float32Array(8).fill(7);
  const ver = new Int32Array(2).fill(9);
  s.pull(0, Int32Array.of(11, 2), out, ver);
  assert.deepEqual(out, new Float32Array(8));
  assert.deepEqual(ver, Int32Array.of(0, 0));
  s.set(1, Int32Array.of(0), Float32Array.of(1, 2));
  assert.throws(() => s.pull(1, Int32Array.of(0, 1), new Float32Array(4), new Int32Array(2)), /ShardStore\.pull: table 1 'dense' has no row 1 \(keys\[1\]\); its init is 'given'/);
  assert.throws(() => s.apply(1, Int32Array.of(5), new Float32Array(2), 1), /ShardStore\.apply: table 1 'dense' has no row 5/);
  assert.equal(s.set(1, Int32Array.of(0, 1), Float32Array.of(9, 9, 3, 4)), 1, 'present rows are left alone');
  s.pull(1, Int32Array.of(0, 1), out.subarray(0, 4), ver);
  assert.deepEqual([...out.subarray(0, 4)], [1, 2, 3, 4]);
  assert.equal(s.set(1, Int32Array.of(0), Float32Array.of(9, 9), true), 1, 'overwrite');
  assert.equal(s.size(1), 2);
});

/** A store of two tables with rows stepped a few times, so versions and state are not trivial. */
function trainedStore(kind: PsOptimizerKind, keys: number[]): ShardStore {
  const s = new ShardStore([{ id: 0, name: 'emb', dim: 9, init: { kind: 'normal', std: 0.1, seed: 5 } }, { id: 4, name: 'dense', dim: 16, init: { kind: 'zeros' } }], opt(kind));
  for (let step = 0; step < 3; step++) {
    const ks = Int32Array.from(keys.filter((_, i) => (i + step) % 3 !== 0));
    s.apply(0, ks, grads(step, ks, 9), 0.1);
    const dk = Int32Array.of(0, 1, 2, 3).subarray(0, step + 2);
    s.apply(4, dk, grads(step, dk, 16), 1);
  }
  return s;
}

function assertBlobsIdentical(a: RowsBlob, b: RowsBlob, what: string): void {
  assert.equal(a.table, b.table);
  assert.equal(a.dim, b.dim);
  assert.equal(a.optimizer, b.optimizer);
  assert.deepEqual(a.keys, b.keys, `${what}: keys`);
  assert.deepEqual(bits(a.values), bits(b.values), `${what}: values`);
  assert.deepEqual(a.versions, b.versions, `${what}: versions`);
  assert.deepEqual(Object.keys(a.state).sort(), Object.keys(b.state).sort());
  for (const [name, x] of Object.entries(a.state)) {
    const y = b.state[name]!;
    if (x instanceof Float32Array) assert.deepEqual(bits(y as Float32Array), bits(x), `${what}: state ${name}`);
    else assert.deepEqual(y, x, `${what}: state ${name}`);
  }
}

test('export/import: rows come back bit-identical (values, versions, adam m, v, steps), keys ascending, keep filters', () => {
  const keys = Array.from({ length: 300 }, (_, i) => (i * 7_368_787) % 2 ** 31);
  const a = trainedStore('adam', keys);
  const blob = a.exportRows(0);
  assert.equal(blob.keys.length, 300);
  for (let i = 1; i < blob.keys.length; i++) assert.ok(blob.keys[i - 1]! < blob.keys[i]!, 'ascending');
  assert.deepEqual(Object.keys(blob.state), ['m', 'v', 'steps']);
  const b = trainedStore('adam', []);
  assert.equal(b.importRows(blob), 300);
  assertBlobsIdentical(b.exportRows(0), blob, 'round trip');
  const even = a.exportRows(0, (k) => k % 2 === 0);
  assert.deepEqual(even.keys, blob.keys.filter((k) => k % 2 === 0));
  const c = new ShardStore([b.table(0)], opt('adam'));
  assert.equal(c.importRows(blob, (k) => k % 2 === 0), even.keys.length);
  assertBlobsIdentical(c.exportRows(0), even, 'keep');
  // Importing over present rows overwrites them exactly.
  const d = trainedStore('adam', keys.slice(0, 50).map((k) => k + 1).concat(keys.slice(0, 50)));
  d.importRows(blob);
  assertBlobsIdentical(d.exportRows(0, (k) => blob.keys.includes(k)), blob, 'overwrite');
});

test('removeRows: 3,000 of 6,000 rows removed in batches leave the rest exactly as set; removed rows read -1 and re-create from init', () => {
  const dim = 3;
  const s = new ShardStore([{ id: 2, name: 'emb', dim, init: { kind: 'zeros' } }], opt('adagrad'));
  const all = Int32Array.from({ length: 6000 }, (_, i) => (i * 2_654_435_761) % 2 ** 31);
  const rowOf = (k: number): number[] => [k % 1000, (k >>> 10) % 1000, 1];
  s.set(2, all, Float32Array.from([...all].flatMap(rowOf)));
  s.apply(2, all.subarray(0, 100), new Float32Array(300).fill(1), 0); // versions 1, values unchanged (g = 0)
  const gone = new Set<number>();
  for (let b = 0; b < 6; b++) {
    const batch = all.filter((_, i) => (i * 31 + b) % 12 === 0 || (i * 17 + b) % 12 === 5).filter((k) => !gone.has(k));
    s.removeRows(2, batch);
    batch.forEach((k) => gone.add(k));
  }
  s.removeRows(2, Int32Array.of(12345678)); // absent: skipped
  assert.equal(s.size(2), 6000 - gone.size);
  assert.ok(gone.size > 2500 && gone.size < 3500, `removed ${gone.size}`);
  const keep = all.filter((k) => !gone.has(k));
  const out = new Float32Array(keep.length * dim);
  const ver = new Int32Array(keep.length);
  s.pull(2, keep, out, ver);
  assert.deepEqual([...out], [...keep].flatMap(rowOf));
  keep.forEach((k, i) => assert.equal(ver[i], all.indexOf(k) < 100 ? 1 : 0));
  for (const k of gone) assert.equal(s.version(2, k), -1);
  const back = new Float32Array(dim);
  s.pull(2, Int32Array.of([...gone][0]!), back, new Int32Array(1));
  assert.deepEqual(back, new Float32Array(dim));
  assert.equal(s.size(2), 6000 - gone.size + 1);
});

test('removeRows refuses a row with a pending gradient; moving the last slot carries its pending gradient along', () => {
  const s = new ShardStore([given(0, 2)], opt('sgd', { lr: 1 }));
  s.set(0, Int32Array.of(1, 2, 3), Float32Array.of(10, 10, 20, 20, 30, 30));
  s.accumulate(0, Int32Array.of(3, 1), Float32Array.of(1, 2, 3, 4), 1);
  assert.throws(() => s.removeRows(0, Int32Array.of(2, 1)), /table 0 't0' row 1 has a pending gradient/);
  assert.equal(s.size(0), 3, 'nothing removed');
  s.removeRows(0, Int32Array.of(2)); // row 3 (the last slot) moves into row 2's slot
  assert.equal(s.applyPending(), 2);
  const out = new Float32Array(4);
  s.pull(0, Int32Array.of(1, 3), out, new Int32Array(2));
  assert.deepEqual([...out], [7, 6, 29, 28]);
});

test('shard file: encode/decode round trip is bit-identical for sgd, adagrad and adam, and keeps the metadata', () => {
  for (const kind of ['sgd', 'adagrad', 'adam'] as const) {
    const s = trainedStore(kind, [1, 2, 3, 500, 2 ** 31 - 1]);
    const blobs = [s.exportRows(0), s.exportRows(4)];
    const bytes = encodeShard(blobs, { step: '12', server: 'ps1' });
    const back = decodeShard(bytes, 'ps1.safetensors');
    assert.deepEqual(back.meta, { step: '12', server: 'ps1' });
    assert.equal(back.blobs.length, 2);
    back.blobs.forEach((b, i) => assertBlobsIdentical(b, blobs[i]!, `${kind} table ${blobs[i]!.table}`));
  }
  const empty = new ShardStore([given(9, 4)], opt('adam')).exportRows(9);
  const [b] = decodeShard(encodeShard([empty], {}), 'empty').blobs;
  assertBlobsIdentical(b!, empty, 'no rows');
});

test('reshard: 3 servers -> 3 files -> 2 new servers keep the union of rows, none lost or duplicated, bit-identical', () => {
  const old = new HashRing(['ps0', 'ps1', 'ps2']);
  const keys = Array.from({ length: 3000 }, (_, i) => (i * 40_503 + 11) % 2 ** 31);
  const dense = [0, 1, 2, 3];
  const stores = old.servers.map((_, me) => trainedStore('adagrad', keys.filter((k) => old.owner(rowKey(0, k)) === me)));
  // Dense chunks were created by every store in trainedStore: keep each only on its owner.
  stores.forEach((s, me) => s.removeRows(4, Int32Array.from(dense.filter((k) => old.owner(rowKey(4, k)) !== me))));
  const files = stores.map((s, me) => encodeShard([s.exportRows(0), s.exportRows(4)], { server: `ps${me}` }));
  const ring = new HashRing(['ps0', 'ps1']);
  const fresh = ring.servers.map(() => new ShardStore([stores[0]!.table(0), stores[0]!.table(4)], opt('adagrad')));
  fresh.forEach((s, me) => {
    files.forEach((f, i) => {
      for (const blob of decodeShard(f, `ps${i}.safetensors`).blobs) s.importRows(blob, (k) => ring.owner(rowKey(blob.table, k)) === me);
    });
  });
  for (const [table, want] of [[0, keys.length], [4, dense.length]] as const) {
    assert.equal(fresh[0]!.size(table) + fresh[1]!.size(table), want, `table ${table}: rows kept`);
    const merged = (ss: ShardStore[]): Map<number, string> => {
      const m = new Map<number, string>();
      for (const s of ss) {
        const b = s.exportRows(table);
        b.keys.forEach((k, i) => {
          assert.ok(!m.has(k), `table ${table} key ${k} on two servers`);
          const slice = (a: Float32Array | Int32Array, w: number): string => [...new Uint32Array(a.buffer, a.byteOffset + 4 * i * w, w)].join(',');
          m.set(k, `${slice(b.values, b.dim)}|${b.versions[i]}|${slice(b.state['accum']!, b.dim)}`);
        });
      }
      return m;
    };
    const before = merged(stores);
    const after = merged(fresh);
    assert.equal(after.size, before.size);
    for (const [k, v] of before) assert.equal(after.get(k), v, `table ${table} key ${k}`);
    // Each new server holds exactly the keys the new ring gives it.
    fresh.forEach((s, me) => s.exportRows(table).keys.forEach((k) => assert.equal(ring.owner(rowKey(table, k)), me)));
  }
});

test('bad input: errors name the table, the argument and both lengths, the key, the optimizer field', () => {
  const s = new ShardStore([given(0, 3, 'emb')], opt('adam'));
  assert.throws(() => s.pull(5, Int32Array.of(1), new Float32Array(3), new Int32Array(1)), /ShardStore\.pull: no table 5 \(tables: 0 'emb'\)/);
  assert.throws(() => s.table(8), /no table 8/);
  assert.throws(() => s.pull(0, Int32Array.of(1, 2), new Float32Array(5), new Int32Array(2)), /ShardStore\.pull: table 0 'emb' \(dim 3\): out must have keys\.length x dim = 2 x 3 = 6 elements, got 5/);
  assert.throws(() => s.pull(0, Int32Array.of(1, 2), new Float32Array(6), new Int32Array(1)), /versions must have keys\.length = 2 elements, got 1/);
  assert.throws(() => s.apply(0, Int32Array.of(1), new Float32Array(4), 1), /ShardStore\.apply: table 0 'emb' \(dim 3\): grads must have keys\.length x dim = 1 x 3 = 3 elements, got 4/);
  assert.throws(() => s.accumulate(0, Int32Array.of(1), new Float32Array(2), 1), /ShardStore\.accumulate: table 0 'emb' \(dim 3\): grads must have/);
  assert.throws(() => s.set(0, Int32Array.of(4, -2), new Float32Array(6)), /ShardStore\.set: table 0 'emb': keys\[1\] = -2 is outside \[0, 2\^31\)/);
  const z = new ShardStore([{ id: 1, name: 'z', dim: 1, init: { kind: 'zeros' } }], opt('sgd'));
  assert.throws(() => z.pull(1, Int32Array.of(0, -1), new Float32Array(2), new Int32Array(2)), /ShardStore\.pull: table 1 'z': keys\[1\] = -1 is outside \[0, 2\^31\)/);
  assert.throws(() => z.apply(1, Int32Array.of(0), new Float32Array(1), NaN), /scale must be a finite number, got NaN/);
  assert.throws(() => new ShardStore([], opt('sgd', { lr: -0.1 })), /optimizer\.lr must be a finite number >= 0, got -0\.1/);
  assert.throws(() => new ShardStore([], opt('adam', { beta1: 1 })), /optimizer\.beta1 must be in \[0, 1\), got 1/);
  assert.throws(() => new ShardStore([], opt('adam', { beta2: -0.5 })), /optimizer\.beta2 must be in \[0, 1\), got -0\.5/);
  assert.throws(() => new ShardStore([], opt('lamb' as PsOptimizerKind)), /optimizer\.kind must be one of sgd, adagrad, adam, got 'lamb'/);
  assert.throws(() => new ShardStore([given(0, 3, 'a'), given(0, 2, 'b')], opt('sgd')), /tables\[1\] 'b' reuses id 0 of 'a'/);
  assert.throws(() => new ShardStore([given(1, 0, 'a')], opt('sgd')), /tables\[0\] \(table 1 'a'\)\.dim must be a positive integer, got 0/);
  const blob = s.exportRows(0);
  const wide = new ShardStore([given(0, 4, 'emb')], opt('adam'));
  assert.throws(() => wide.importRows(blob), /ShardStore\.importRows: table 0 'emb' has dim 4, the blob has dim 3/);
  const other = new ShardStore([given(0, 3, 'emb')], opt('adagrad'));
  assert.throws(() => other.importRows(blob), /table 0 'emb' is optimized by adagrad, the blob carries adam state/);
  s.set(0, Int32Array.of(1), Float32Array.of(1, 2, 3));
  const one = s.exportRows(0);
  assert.throws(() => s.importRows({ ...one, state: { m: one.state['m']!, v: one.state['v']! } }), /the blob has no adam state 'steps' \(state: m, v\)/);
  assert.throws(() => s.importRows({ ...one, versions: new Int32Array(2) }), /blob\.versions must have keys\.length = 1 elements, got 2/);
});

test('shard file: a malformed file is an error naming the source and the tensor', () => {
  const s = trainedStore('adam', [1, 2, 3]);
  const blob = s.exportRows(0);
  const src = 'ckpt/ps2.safetensors';
  const bad = (tensors: Record<string, TensorIn>, re: RegExp): void => {
    assert.throws(() => decodeShard(encodeSafetensors(tensors), src), (e: unknown) => {
      assert.ok(e instanceof CheckpointError, String(e));
      assert.match(e.message, new RegExp(`^ckpt/ps2\\.safetensors: .*${re.source}`));
      return true;
    });
  };
  const good: Record<string, TensorIn> = {
    '0.keys': { shape: [3], data: blob.keys }, '0.values': { shape: [3, 9], data: blob.values }, '0.versions': { shape: [3], data: blob.versions },
    '0.state.m': { shape: [3, 9], data: blob.state['m']! }, '0.state.v': { shape: [3, 9], data: blob.state['v']! }, '0.state.steps': { shape: [3], data: blob.state['steps']! },
  };
  assert.equal(decodeShard(encodeSafetensors(good), src).blobs[0]!.optimizer, 'adam');
  const { '0.versions': _v, ...noVersions } = good;
  bad(noVersions, /table 0 has no tensor '0\.versions'/);
  const { '0.state.steps': _s, ...noSteps } = good;
  bad(noSteps, /table 0 carries state m, v, which is no optimizer's/);
  bad({ ...good, '0.versions': { shape: [3], data: new Float32Array(3) } }, /tensor '0\.versions' must be I32 of rank 1, got F32 \[3\]/);
  bad({ ...good, '0.state.v': { shape: [2, 9], data: new Float32Array(18) } }, /tensor '0\.state\.v' has shape \[2, 9\], expected \[3, 9\]/);
  bad({ ...good, 'emb.weight': { shape: [1], data: new Float32Array(1) } }, /tensor 'emb\.weight' is not a shard tensor/);
  bad({ ...good, '0.keys': { shape: [3], data: Int32Array.of(1, -4, 9) } }, /tensor '0\.keys' has keys\[1\] = -4/);
  assert.throws(() => encodeShard([blob, blob], {}), /encodeShard: table 0 is given twice/);
  assert.throws(() => encodeShard([{ ...blob, state: {} }], {}), /encodeShard: table 0 \(adam\) must carry state m, v, steps, got none/);
});
