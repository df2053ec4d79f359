/**
 * A backend-independent check of every ProcessGroup operation: each rank builds deterministic
 * inputs (integers, exactly representable in every dtype, so sums do not depend on the order of
 * reduction), runs the operation, and compares its output with a serial reference computed locally
 * from every rank's inputs. Throws on the first wrong element, naming the operation, its
 * arguments, the rank and the element.
 *
 *   export default async function (pg: ProcessGroup) { await runCollectiveSuite(pg); return 'ok'; }
 *
 * Semantics checked beyond the interface's comments: mean is sum / size rounded to the element
 * type (int32 truncates toward zero; float results may differ from that by one rounding);
 * reduce leaves non-root buffers unchecked.
 */
import type { CommArray, ProcessGroup, ReduceOp } from '../../src/comm/process_group.js';

export type SuiteDType = 'float32' | 'float64' | 'int32';
export const SUITE_DTYPES: readonly SuiteDType[] = ['float32', 'float64', 'int32'];
/** Small sizes cover empty, single, fewer than ranks, primes and non-multiples of the group size. */
export const SUITE_SIZES: readonly number[] = [0, 1, 2, 7, 13, 1000, 4099];
/** Large enough to stream through any backend's fixed windows many times; not a multiple of 2, 3 or 4. */
export const SUITE_LARGE = 1_499_999;
const OPS: readonly ReduceOp[] = ['sum', 'mean', 'max'];

export interface SuiteOptions {
  /** Default SUITE_SIZES. */
  sizes?: readonly number[];
  /** Elements of the large cases (0 skips them). Default SUITE_LARGE. */
  large?: number;
  /** Progress lines (e.g. console.log), one per section. */
  log?: (line: string) => void;
}

function alloc(dt: SuiteDType, n: number): CommArray {
  return dt === 'float32' ? new Float32Array(n) : dt === 'float64' ? new Float64Array(n) : new Int32Array(n);
}

/** Reduction inputs: small integers, so sums over any number of ranks stay exact. Period 201 in i. */
const PERIOD = 201;
const small = (rank: number, i: number): number => ((i * 37 + rank * 101) % PERIOD) - 100;
/** Data-movement inputs: identify the source rank and index (exact in float32 below 2^24). */
const ident = (rank: number, i: number): number => rank * 1_000_000 + (i % 1_000_000);

function filled(dt: SuiteDType, n: number, f: (i: number) => number): CommArray {
  const a = alloc(dt, n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return a;
}

/** The reference of op over ranks 0..size-1 of `small(rank, i)`, in the element type (tabulated over its period). */
function reduceRef(dt: SuiteDType, op: ReduceOp, size: number): (i: number) => number {
  const table = new Float64Array(PERIOD);
  for (let i = 0; i < PERIOD; i++) {
    let acc = small(0, i);
    for (let r = 1; r < size; r++) acc = op === 'max' ? Math.max(acc, small(r, i)) : acc + small(r, i);
    const q = acc / size;
    table[i] = op !== 'mean' ? acc : dt === 'int32' ? Math.trunc(q) : dt === 'float32' ? Math.fround(q) : q;
  }
  return (i) => table[i % PERIOD]!;
}

function check(what: string, got: CommArray, n: number, expected: (i: number) => number, dt: SuiteDType, tolerant = false): void {
  if (got.length < n) throw new Error(`${what}: output has ${got.length} elements, expected ${n}`);
  const round = dt === 'float32' ? Math.fround : (x: number): number => x;
  const tol = !tolerant || dt === 'int32' ? 0 : dt === 'float32' ? 2.4e-7 : 4.5e-16;
  for (let i = 0; i < n; i++) {
    const e = round(expected(i));
    const v = got[i]!;
    if (v !== e && !(Math.abs(v - e) <= tol * Math.max(1, Math.abs(e)))) {
      throw new Error(`${what}: element ${i} is ${v}, expected ${e}`);
    }
  }
}

const rootsOf = (size: number): number[] => (size === 1 ? [0] : [0, size - 1]);

/** Elements rank `src` sends rank `dst` in the allToAllV case for size m: uneven, with zeros. */
const vcount = (m: number, src: number, dst: number): number => ((src * 5 + dst * 3) % 4 === 0 ? 0 : (m + src + 2 * dst) % (m + 1));

export async function runCollectiveSuite(pg: ProcessGroup, opts: SuiteOptions = {}): Promise<void> {
  const sizes = opts.sizes ?? SUITE_SIZES;
  const large = opts.large ?? SUITE_LARGE;
  const log = opts.log ?? ((): void => undefined);
  const n = pg.size;

  for (const m of sizes) {
    log(`size ${m}`);
    for (const dt of SUITE_DTYPES) {
      for (const op of OPS) await allReduceCase(pg, dt, op, m);
      for (const root of rootsOf(n)) {
        await broadcastCase(pg, dt, root, m);
        for (const op of OPS) await reduceCase(pg, dt, op, root, m);
        await gatherCase(pg, dt, root, m);
        await scatterCase(pg, dt, root, m);
      }
      await allGatherCase(pg, dt, m);
      for (const op of OPS) await reduceScatterCase(pg, dt, op, m);
      await allToAllCase(pg, dt, m);
      await allToAllVCase(pg, dt, m);
    }
    await pg.barrier().wait();
    if (n > 1) await p2pRingCase(pg, 'float32', m);
  }

  if (large > 0) {
    log(`large ${large}`);
    const k = Math.ceil(large / n);
    await allReduceCase(pg, 'float32', 'sum', large);
    await allReduceCase(pg, 'float64', 'mean', large);
    await allReduceCase(pg, 'int32', 'max', large);
    await broadcastCase(pg, 'float32', n - 1, large);
    await reduceCase(pg, 'float32', 'sum', 0, large);
    await allGatherCase(pg, 'float32', k);
    await reduceScatterCase(pg, 'float32', 'sum', k);
    await gatherCase(pg, 'float64', n - 1, k);
    await scatterCase(pg, 'int32', 0, k);
    await allToAllCase(pg, 'float32', Math.ceil(large / (n * n)));
    await allToAllVCase(pg, 'float32', Math.ceil(large / (n * n)));
    if (n > 1) await p2pRingCase(pg, 'float32', large);
  }

  log('tags, concurrency, split');
  if (n > 1) await p2pTagsCase(pg);
  await concurrentCase(pg);
  await splitCase(pg);
}

async function allReduceCase(pg: ProcessGroup, dt: SuiteDType, op: ReduceOp, m: number): Promise<void> {
  const buf = filled(dt, m, (i) => small(pg.rank, i));
  const w = pg.allReduce(buf, op);
  if (typeof w.label !== 'string' || w.label === '') throw new Error('allReduce: Work.label is empty');
  await w.wait();
  check(`allReduce(${op}, ${dt}, ${m} elements) on rank ${pg.rank} of ${pg.size}`, buf, m, reduceRef(dt, op, pg.size), dt, op === 'mean');
}

async function broadcastCase(pg: ProcessGroup, dt: SuiteDType, root: number, m: number): Promise<void> {
  const buf = filled(dt, m, (i) => (pg.rank === root ? ident(root, i) : -1));
  await pg.broadcast(buf, root).wait();
  check(`broadcast(${dt}, ${m} elements, root ${root}) on rank ${pg.rank} of ${pg.size}`, buf, m, (i) => ident(root, i), dt);
}

async function reduceCase(pg: ProcessGroup, dt: SuiteDType, op: ReduceOp, root: number, m: number): Promise<void> {
  const buf = filled(dt, m, (i) => small(pg.rank, i));
  await pg.reduce(buf, root, op).wait();
  if (pg.rank === root) check(`reduce(${op}, ${dt}, ${m} elements, root ${root}) on rank ${pg.rank} of ${pg.size}`, buf, m, reduceRef(dt, op, pg.size), dt, op === 'mean');
}

async function allGatherCase(pg: ProcessGroup, dt: SuiteDType, k: number): Promise<void> {
  const input = filled(dt, k, (i) => ident(pg.rank, i));
  const out = filled(dt, k * pg.size, () => -1);
  await pg.allGather(input, out).wait();
  check(`allGather(${dt}, ${k} elements per rank) on rank ${pg.rank} of ${pg.size}`, out, k * pg.size, (i) => ident(Math.floor(i / k), i % k), dt);
}

async function reduceScatterCase(pg: ProcessGroup, dt: SuiteDType, op: ReduceOp, k: number): Promise<void> {
  const input = filled(dt, k * pg.size, (i) => small(pg.rank, i));
  const out = filled(dt, k, () => -1);
  await pg.reduceScatter(input, out, op).wait();
  const ref = reduceRef(dt, op, pg.size);
  check(`reduceScatter(${op}, ${dt}, ${k} elements per rank) on rank ${pg.rank} of ${pg.size}`, out, k, (i) => ref(pg.rank * k + i), dt, op === 'mean');
}

async function gatherCase(pg: ProcessGroup, dt: SuiteDType, root: number, k: number): Promise<void> {
  const input = filled(dt, k, (i) => ident(pg.rank, i));
  const out = pg.rank === root ? filled(dt, k * pg.size, () => -1) : null;
  await pg.gather(input, out, root).wait();
  if (out !== null) check(`gather(${dt}, ${k} elements per rank, root ${root}) on rank ${pg.rank} of ${pg.size}`, out, k * pg.size, (i) => ident(Math.floor(i / k), i % k), dt);
}

async function scatterCase(pg: ProcessGroup, dt: SuiteDType, root: number, k: number): Promise<void> {
  const input = pg.rank === root ? filled(dt, k * pg.size, (i) => ident(root, i)) : null;
  const out = filled(dt, k, () => -1);
  await pg.scatter(input, out, root).wait();
  check(`scatter(${dt}, ${k} elements per rank, root ${root}) on rank ${pg.rank} of ${pg.size}`, out, k, (i) => ident(root, pg.rank * k + i), dt);
}

async function allToAllCase(pg: ProcessGroup, dt: SuiteDType, k: number): Promise<void> {
  const n = pg.size;
  const input = filled(dt, k * n, (i) => ident(pg.rank, i));
  const out = filled(dt, k * n, () => -1);
  await pg.allToAll(input, out).wait();
  // Block j of out is block `rank` of rank j's input.
  check(`allToAll(${dt}, ${k} elements per pair) on rank ${pg.rank} of ${n}`, out, k * n, (i) => ident(Math.floor(i / k), pg.rank * k + (i % k)), dt);
}

async function allToAllVCase(pg: ProcessGroup, dt: SuiteDType, m: number): Promise<void> {
  const { rank: r, size: n } = pg;
  const sendCounts = Array.from({ length: n }, (_, j) => vcount(m, r, j));
  const recvCounts = Array.from({ length: n }, (_, j) => vcount(m, j, r));
  const offsetOf = (src: number, dst: number): number => { let o = 0; for (let j = 0; j < dst; j++) o += vcount(m, src, j); return o; };
  const ns = sendCounts.reduce((a, b) => a + b, 0);
  const nr = recvCounts.reduce((a, b) => a + b, 0);
  const input = filled(dt, ns, (i) => ident(r, i));
  const out = filled(dt, nr, () => -1);
  await pg.allToAllV(input, sendCounts, out, recvCounts).wait();
  const expected = new Float64Array(nr);
  let o = 0;
  for (let src = 0; src < n; src++) {
    const base = offsetOf(src, r);
    for (let t = 0; t < recvCounts[src]!; t++) expected[o++] = ident(src, base + t);
  }
  check(`allToAllV(${dt}, sendCounts [${sendCounts.join(', ')}], recvCounts [${recvCounts.join(', ')}]) on rank ${r} of ${n}`, out, nr, (i) => expected[i]!, dt);
}

/** Every rank sends to the next and receives from the previous, both posted before either is awaited. */
async function p2pRingCase(pg: ProcessGroup, dt: SuiteDType, m: number): Promise<void> {
  const { rank: r, size: n } = pg;
  const next = (r + 1) % n;
  const prev = (r + n - 1) % n;
  const input = filled(dt, m, (i) => ident(r, i));
  const out = filled(dt, m, () => -1);
  const s = pg.send(input, next, 7);
  const v = pg.recv(out, prev, 7);
  await Promise.all([s.wait(), v.wait()]);
  check(`send/recv ring (${dt}, ${m} elements, tag 7) on rank ${r} of ${n}, from rank ${prev}`, out, m, (i) => ident(prev, i), dt);
}

/** Messages are matched by tag, not arrival: rank 0 sends tags 1, 2, 3; rank 1 receives 3, 1, 2. */
async function p2pTagsCase(pg: ProcessGroup): Promise<void> {
  const lengths = [5, 0, 3000];
  if (pg.rank === 0) {
    const works = [1, 2, 3].map((tag) => pg.send(filled('int32', lengths[tag - 1]!, (i) => tag * 10_000 + i), 1, tag));
    await Promise.all(works.map((w) => w.wait()));
  } else if (pg.rank === 1) {
    const outs = [3, 1, 2].map((tag) => ({ tag, out: filled('int32', lengths[tag - 1]!, () => -1) }));
    const works = outs.map(({ tag, out }) => pg.recv(out, 0, tag));
    await Promise.all(works.map((w) => w.wait()));
    for (const { tag, out } of outs) check(`recv(tag ${tag}) out of send order on rank 1`, out, out.length, (i) => tag * 10_000 + i, 'int32');
  }
  await pg.barrier().wait();
}

/** Several collectives in flight at once complete in order with the right results. */
async function concurrentCase(pg: ProcessGroup): Promise<void> {
  const { rank: r, size: n } = pg;
  const a = filled('float32', 1000, (i) => small(r, i));
  const b = filled('int32', 17, (i) => (r === n - 1 ? ident(r, i) : 0));
  const c = filled('float64', 33, (i) => ident(r, i));
  const cOut = alloc('float64', 33 * n);
  const works = [pg.allReduce(a, 'sum'), pg.broadcast(b, n - 1), pg.allGather(c, cOut), pg.barrier()];
  await Promise.all(works.map((w) => w.wait()));
  const what = `concurrent collectives on rank ${r} of ${n}`;
  check(`${what}: allReduce`, a, 1000, reduceRef('float32', 'sum', n), 'float32');
  check(`${what}: broadcast`, b, 17, (i) => ident(n - 1, i), 'int32');
  check(`${what}: allGather`, cOut, 33 * n, (i) => ident(Math.floor(i / 33), i % 33), 'float64');
}

/** Even and odd ranks form two groups; an all-reduce inside each sums only its members. */
async function splitCase(pg: ProcessGroup): Promise<void> {
  const { rank: r, size: n } = pg;
  const sub = await pg.split(r % 2);
  const members = Array.from({ length: n }, (_, j) => j).filter((j) => j % 2 === r % 2);
  const what = `split(${r % 2}) on rank ${r} of ${n}`;
  if (sub.size !== members.length || sub.rank !== members.indexOf(r)) {
    throw new Error(`${what}: got rank ${sub.rank} of ${sub.size}, expected rank ${members.indexOf(r)} of ${members.length}`);
  }
  for (const m of [0, 13, 4099]) {
    const buf = filled('float64', m, (i) => small(r, i));
    await sub.allReduce(buf, 'sum').wait();
    check(`${what}: allReduce(sum, float64, ${m} elements)`, buf, m, (i) => members.reduce((acc, j) => acc + small(j, i), 0), 'float64');
  }
  // Keys order the new ranks: reversed keys reverse them.
  const rev = await pg.split(0, n - 1 - r);
  if (rev.rank !== n - 1 - r || rev.size !== n) throw new Error(`split(0, key ${n - 1 - r}) on rank ${r} of ${n}: got rank ${rev.rank} of ${rev.size}, expected rank ${n - 1 - r} of ${n}`);
  const buf = filled('int32', 9, (i) => (rev.rank === 0 ? ident(r, i) : -1));
  await rev.broadcast(buf, 0).wait();
  check(`split(0, key ${n - 1 - r}) on rank ${r} of ${n}: broadcast from new rank 0 (world rank ${n - 1})`, buf, 9, (i) => ident(n - 1, i), 'int32');
  await sub.destroy();
  await rev.destroy();
  // The parent group still works after its sub-groups are gone.
  await pg.barrier().wait();
}
