/**
 * One rank of test/collective_ops.test.ts: each case runs a float64 SPMD function holding the IR's
 * collectives through `compileSpmd` on this rank's shards, and the same function serially on the
 * whole tensors in this rank alone; it returns the largest differences of the loss and of every
 * gradient (the serial gradient restricted to this rank's shard). Every rank draws the same
 * global data from the same seed.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { allGather, allReduce, allToAll, broadcastFrom, copyTo, reduceScatter, splitTo } from '../src/ir/ops/collective.js';
import { compileSpmd } from '../src/parallel/spmd.js';
import { setThreads } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';
import { grad, realize, Tensor, tensor } from '../src/tensor/tensor.js';

const T = (v: Tensor['value']): Tensor => new Tensor(v);
const f64 = (n: number, rng: Rng): Float64Array => Float64Array.from({ length: n }, () => rng.normal());

/** Rows [r0, r1) of a row-major [rows, cols] matrix. */
const rows = (a: Float64Array, cols: number, r0: number, r1: number): Float64Array => a.slice(r0 * cols, r1 * cols);
/** Columns [c0, c1) of a row-major [rows, cols] matrix. */
function colsOf(a: Float64Array, cols: number, c0: number, c1: number): Float64Array {
  const n = a.length / cols;
  const out = new Float64Array(n * (c1 - c0));
  for (let i = 0; i < n; i++) out.set(a.subarray(i * cols + c0, i * cols + c1), i * (c1 - c0));
  return out;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/** The serial loss and gradients of `f` over whole tensors. */
async function serial(f: (...xs: Tensor[]) => Tensor, data: { data: Float64Array; shape: number[] }[]): Promise<{ loss: number; grads: Float64Array[] }> {
  const xs = data.map((d) => tensor(d.data, d.shape));
  const l = f(...xs);
  const g = grad(l, xs);
  await realize(l, ...g);
  return { loss: Number((await l.data())[0]), grads: await Promise.all(g.map(async (t) => (await t.data()) as Float64Array)) };
}

interface Result { name: string; loss: number; grads: number[]; hostOps: Record<string, number>; programs: number }

/** Runs `dist` on the local feeds; returns loss and gradient differences to the expected ones. */
async function check(pg: ProcessGroup, name: string, dist: (...xs: Tensor[]) => Tensor, local: { data: Float64Array; shape: number[] }[],
  expected: { loss: number; grads: Float64Array[] }): Promise<Result> {
  const step = compileSpmd((...xs) => { const l = dist(...xs); return [l, ...grad(l, xs)]; }, { tp: pg }, name);
  const out = await step(...local.map((d) => ({ data: d.data, shape: d.shape, dtype: 'float64' as const })));
  return {
    name, loss: Math.abs(Number(out[0]![0]) - expected.loss),
    grads: expected.grads.map((e, i) => maxDiff(out[i + 1] as Float64Array, e)),
    hostOps: step.schedule!.hostOps, programs: step.schedule!.programs,
  };
}

export default async function rank(pg: ProcessGroup): Promise<Result[]> {
  setThreads(1);
  const P = pg.size;
  const r = pg.rank;
  const rng = new Rng(42 + P);
  const out: Result[] = [];

  // 1. Tensor-parallel MLP (Megatron f / g): y = tanh(X W1) W2 with W1 split by columns, W2 by rows.
  {
    const [n, d, h, o] = [4, 6, 3, 5];
    const X = f64(n * d, rng), W1 = f64(d * h * P, rng), W2 = f64(h * P * o, rng), R = f64(n * o, rng);
    const Rt = tensor(R, [n, o]);
    const s = await serial((x, w1, w2) => x!.matmul(w1!).tanh().matmul(w2!).mul(Rt).sum(),
      [{ data: X, shape: [n, d] }, { data: W1, shape: [d, h * P] }, { data: W2, shape: [h * P, o] }]);
    const dist = (x: Tensor | undefined, w1: Tensor | undefined, w2: Tensor | undefined): Tensor =>
      T(allReduce(T(copyTo(x!.value, 'tp', P)).matmul(w1!).tanh().matmul(w2!).value, 'tp', P)).mul(Rt).sum();
    out.push(await check(pg, 'copy/all-reduce: tensor-parallel MLP', dist,
      [{ data: X, shape: [n, d] }, { data: colsOf(W1, h * P, r * h, (r + 1) * h), shape: [d, h] }, { data: rows(W2, o, r * h, (r + 1) * h), shape: [h, o] }],
      { loss: s.loss, grads: [s.grads[0]!, colsOf(s.grads[1]!, h * P, r * h, (r + 1) * h), rows(s.grads[2]!, o, r * h, (r + 1) * h)] }));
  }

  // 2. Sequence parallel: rows of X sharded; all-gather in, reduce-scatter out, gathered for the loss.
  {
    const [m, d, h, o] = [2, 4, 3, 2];
    const X = f64(m * P * d, rng), W1 = f64(d * h * P, rng), W2 = f64(h * P * o, rng), R = f64(m * P * o, rng);
    const Rt = tensor(R, [m * P, o]);
    const s = await serial((x, w1, w2) => x!.matmul(w1!).tanh().matmul(w2!).mul(Rt).sum(),
      [{ data: X, shape: [m * P, d] }, { data: W1, shape: [d, h * P] }, { data: W2, shape: [h * P, o] }]);
    const dist = (x: Tensor | undefined, w1: Tensor | undefined, w2: Tensor | undefined): Tensor => {
      const full = T(allGather(x!.value, 'tp', P, 0));
      const partial = full.matmul(w1!).tanh().matmul(w2!);
      const mine = T(reduceScatter(partial.value, 'tp', P, 0));
      return T(allGather(mine.value, 'tp', P, 0, 'split')).mul(Rt).sum();
    };
    out.push(await check(pg, 'all-gather/reduce-scatter: sequence parallel', dist,
      [{ data: rows(X, d, r * m, (r + 1) * m), shape: [m, d] }, { data: colsOf(W1, h * P, r * h, (r + 1) * h), shape: [d, h] }, { data: rows(W2, o, r * h, (r + 1) * h), shape: [h, o] }],
      { loss: s.loss, grads: [rows(s.grads[0]!, d, r * m, (r + 1) * m), colsOf(s.grads[1]!, h * P, r * h, (r + 1) * h), rows(s.grads[2]!, o, r * h, (r + 1) * h)] }));
  }

  // 3. Split of a replicated value along dim 1, then all-gather (backward split) along dim 1.
  {
    const [a, c] = [3, 2];
    const X = f64(a * c * P, rng), W = f64(a * c * P, rng), R = f64(a * c * P, rng);
    const [Wt, Rt] = [tensor(W, [a, c * P]), tensor(R, [a, c * P])];
    const s = await serial((x) => { const z = x!.mul(Wt); return z.mul(z).mul(Rt).sum(); }, [{ data: X, shape: [a, c * P] }]);
    const Wr = tensor(colsOf(W, c * P, r * c, (r + 1) * c), [a, c]);
    const dist = (x: Tensor | undefined): Tensor => {
      const z = T(splitTo(x!.value, 'tp', P, 1)).mul(Wr);
      const q = T(allGather(z.mul(z).value, 'tp', P, 1, 'split'));
      return q.mul(Rt).sum();
    };
    out.push(await check(pg, 'split/all-gather along dim 1', dist, [{ data: X, shape: [a, c * P] }], { loss: s.loss, grads: [s.grads[0]!] }));
  }

  // 4. All-to-all there and back (expert parallel's dispatch and combine), with rank-local weights.
  {
    const [k, c] = [2, 3];
    const X = f64(k * P * P * c, rng), W = f64(P * k * c * P, rng), R = f64(k * P * P * c, rng);
    // Rank q's weight W_q [k, c P]; after dispatch and combine, rank r's row 2q + i, col j meets W_q[i, c r + j].
    const Wq = (q: number): Float64Array => W.subarray(q * k * c * P, (q + 1) * k * c * P);
    const Wp = new Float64Array(k * P * P * c);
    for (let rr = 0; rr < P; rr++) for (let q = 0; q < P; q++) for (let i = 0; i < k; i++) for (let j = 0; j < c; j++) {
      Wp[((rr * k * P) + q * k + i) * c + j] = Wq(q)[i * c * P + c * rr + j]!;
    }
    const [Wpt, Rt] = [tensor(Wp, [k * P * P, c]), tensor(R, [k * P * P, c])];
    const s = await serial((x) => x!.tanh().mul(Wpt).mul(Rt).sum(), [{ data: X, shape: [k * P * P, c] }]);
    const Wr = tensor(Wq(r).slice(), [k, c * P]);
    const dist = (x: Tensor | undefined): Tensor => {
      const y = T(allToAll(x!.value, 'tp', P, 0, 1)).tanh().mul(Wr); // [k, c P]
      const back = T(allToAll(y.value, 'tp', P, 1, 0)); // [k P, c]
      return T(allGather(back.value, 'tp', P, 0, 'split')).mul(Rt).sum();
    };
    out.push(await check(pg, 'all-to-all there and back', dist, [{ data: rows(X, c, r * k * P, (r + 1) * k * P), shape: [k * P, c] }],
      { loss: s.loss, grads: [rows(s.grads[0]!, c, r * k * P, (r + 1) * k * P)] }));
  }

  // 5. Broadcast of a rank-local value from the last rank: only the root's copy gets a gradient.
  {
    const n = 6;
    const Xs = Array.from({ length: P }, () => f64(n, rng));
    const R = f64(n, rng);
    const Rt = tensor(R, [n]);
    const root = P - 1;
    const s = await serial((x) => x!.tanh().mul(Rt).sum(), [{ data: Xs[root]!, shape: [n] }]);
    const dist = (x: Tensor | undefined): Tensor => T(broadcastFrom(x!.value, 'tp', P, root)).tanh().mul(Rt).sum();
    out.push(await check(pg, 'broadcast from the last rank', dist, [{ data: Xs[r]!, shape: [n] }],
      { loss: s.loss, grads: [r === root ? s.grads[0]! : new Float64Array(n)] }));
  }
  return out;
}
