import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cacheSize, compile, FlatBuffer, Layout, ops, profiler, realize, Rng, setThreads, tensor, Tensor } from '../src/index.js';

setThreads(1);

test('graphs of the same structure share a session but read their own leaves', async () => {
  const before = cacheSize();
  const a = await tensor([1, 2]).add(tensor([3, 4])).toArray();
  const b = await tensor([5, 6]).add(tensor([7, 8])).toArray();
  assert.deepEqual(a, [4, 6]);
  assert.deepEqual(b, [12, 14]);
  assert.equal(cacheSize() - before, 1);
});

test('compiled functions closing over different tensors of one shape stay separate', async () => {
  const w1 = tensor([1, 2, 3]);
  const w2 = tensor([10, 20, 30]);
  const f1 = compile((x) => [x.mul(w1)]);
  const f2 = compile((x) => [x.mul(w2)]);
  const x = { data: Float32Array.of(1, 1, 1), shape: [3], dtype: 'float32' as const };
  assert.deepEqual(Array.from((await f1(x))[0] as Float32Array), [1, 2, 3]);
  assert.deepEqual(Array.from((await f2(x))[0] as Float32Array), [10, 20, 30]);
  assert.equal(f1.traces, 1);
});

test('a compiled function reads parameters from their flat buffer at every call', async () => {
  const layout = new Layout([{ name: 'w', shape: [2] }]);
  const params = FlatBuffer.zeros(layout);
  params.view('w').set([2, 3]);
  const w = new Tensor(params.leaf('w'));
  const f = compile((x) => [x.mul(w).sum()]);
  const x = { data: Float32Array.of(1, 1), shape: [2], dtype: 'float32' as const };
  assert.equal((await f(x))[0]![0], 5);
  params.data.set([4, 5]);
  assert.equal((await f(x))[0]![0], 9);
  assert.equal(f.traces, 1);
});

test('realize evaluates several tensors in one program and detaches them', async () => {
  const x = tensor([1, 2, 3]);
  const y = x.mul(2);
  const z = y.sum();
  await realize(y, z);
  assert.equal(y.value.node, null);
  assert.deepEqual(await y.toArray(), [2, 4, 6]);
  assert.equal(await z.item(), 12);
});

test('the profiler reports time per segment and bytes held', async () => {
  profiler.reset();
  const layout = new Layout([{ name: 'a', shape: [1000] }]);
  FlatBuffer.zeros(layout, 'test.buffer');
  await tensor([1, 2]).add(1).toArray();
  const r = profiler.report();
  assert.equal(r.segments['eager']!.runs, 1);
  assert.ok(r.segments['eager']!.totalMs > 0);
  assert.equal(r.heldBytes['test.buffer'], 1008 * 4); // 1000 floats padded to a 16-element boundary
});

test('Gemm with transA (rewritten to Transpose + Gemm for MLAS) matches a float64 reference in every form', async () => {
  const rng = new Rng(3);
  const rand = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
  // [K, M, N]: M*K <= N*K + M*N transposes A; M*K larger takes the product transposed.
  for (const [K, M, N] of [[7, 5, 3], [6, 40, 2]] as const) {
    for (const transB of [false, true]) {
      for (const withC of [false, true]) {
        const a = rand(K * M), bb = rand(K * N), c = rand(N);
        const alpha = 0.5, beta = 2;
        const f = compile((x, y, z) => [new Tensor(ops.gemm(x.value, y.value, withC ? z.value : null, { transA: true, transB, alpha, beta }))]);
        const [res] = await f(
          { data: a, shape: [K, M], dtype: 'float32' },
          { data: bb, shape: transB ? [N, K] : [K, N], dtype: 'float32' },
          { data: c, shape: [N], dtype: 'float32' },
        );
        const out = res as Float32Array;
        for (let i = 0; i < M; i++) {
          for (let j = 0; j < N; j++) {
            let s = 0;
            for (let k = 0; k < K; k++) s += a[k * M + i]! * (transB ? bb[j * K + k]! : bb[k * N + j]!);
            const want = alpha * s + (withC ? beta * c[j]! : 0);
            assert.ok(Math.abs(out[i * N + j]! - want) < 1e-5 * (1 + Math.abs(want)), `K${K} M${M} N${N} transB=${transB} C=${withC} [${i},${j}]: ${out[i * N + j]} vs ${want}`);
          }
        }
      }
    }
  }
});

test('a multi-output node: outputs realized one at a time, and a realized one read beside its sibling', async () => {
  const a = tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [6]);
  const [s1, s2] = a.split([3, 3]) as [Tensor, Tensor];
  assert.deepEqual(await s1.toArray(), [1, 2, 3]);
  // s1 is now data, detached from the Split node that still produces s2.
  assert.deepEqual(await s2.toArray(), [4, 5, 6]);
  const [t1, t2] = a.split([2, 4]) as [Tensor, Tensor];
  assert.deepEqual(await t1.toArray(), [1, 2]);
  assert.deepEqual(await t2.sum().add(t1.sum()).toArray(), [21]);
});
