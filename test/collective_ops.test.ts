/**
 * Collectives as IR ops: every collective's gradient (Megatron's conjugate pairs) on 2, 3 and 4
 * ranks (threads, float64) equals the serial computation's gradient on each rank's shard, through
 * a schedule of onnxruntime programs cut at each collective. Also: exporting a graph that holds a
 * collective is an error, a schedule's cuts are counted, and a missing or mis-sized group is named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchThreads } from '../src/comm/threads/launch.js';
import { LocalProcessGroup } from '../src/comm/local.js';
import { allReduce, copyTo, allGather } from '../src/ir/ops/collective.js';
import { toModelProto } from '../src/ir/onnx/export.js';
import { compileSpmd } from '../src/parallel/spmd.js';
import { placeholder, tensor, Tensor } from '../src/tensor/tensor.js';

interface Result { name: string; loss: number; grads: number[]; hostOps: Record<string, number>; programs: number }

for (const nproc of [2, 3, 4]) {
  test(`collective gradients on ${nproc} ranks (float64) equal the serial gradients on each shard`, async () => {
    const results = await launchThreads({ nproc, entry: new URL('./collective_ops_rank.js', import.meta.url), timeoutMs: 60_000 }) as Result[][];
    results.forEach((cases, rank) => cases.forEach((c) => {
      assert.ok(c.loss < 1e-12, `rank ${rank} ${c.name}: loss differs by ${c.loss}`);
      c.grads.forEach((e, i) => assert.ok(e < 1e-12, `rank ${rank} ${c.name}: gradient ${i} differs by ${e}`));
    }));
    // The tensor-parallel MLP: one copy and one all-reduce forward, the copy's all-reduce backward.
    const mlp = results[0]!.find((c) => c.name.startsWith('copy/all-reduce'))!;
    assert.deepEqual(mlp.hostOps, { 'weft.AllReduce': 2 });
    const sp = results[0]!.find((c) => c.name.startsWith('all-gather/reduce-scatter'))!;
    // Forward: gather, reduce-scatter, gather; backward: split, all-gather, reduce-scatter.
    assert.deepEqual(sp.hostOps, { 'weft.AllGather': 3, 'weft.ReduceScatter': 2, 'weft.Split': 1 });
  });
}

test('a graph holding a collective is refused by ONNX export, naming the op and its axis', () => {
  const x = placeholder([2, 3], 'float32', 'x');
  const y = allReduce(x.value, 'tp', 2);
  assert.throws(() => toModelProto({ inputs: [x.value], outputs: [y] }), /export: node weft\.AllReduce \(axis 'tp'\) runs outside onnxruntime/);
});

test('a schedule cuts at each collective, and names a missing or mis-sized group', async () => {
  const w = tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]);
  const fn = (x: Tensor | undefined): Tensor[] => {
    const h = new Tensor(copyTo(x!.value, 'tp', 1)).matmul(w).tanh();
    return [new Tensor(allGather(new Tensor(allReduce(h.value, 'tp', 1)).mul(2).value, 'tp', 1, 0, 'split'))];
  };
  const feed = { data: Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), shape: [2, 3], dtype: 'float32' as const };
  const step = compileSpmd(fn, { tp: new LocalProcessGroup() });
  const [y] = await step(feed);
  const want = [0, 1].map((i) => [0, 1].map((j) => 2 * Math.tanh([0, 1, 2].reduce((s, k) => s + feed.data[i * 3 + k]! * (k * 2 + j + 1), 0)))).flat();
  Array.from(y as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-6, `${v} vs ${want[i]}`));
  // copy (an identity in the program), matmul, tanh | all-reduce | mul | all-gather: two programs.
  assert.equal(step.schedule!.programs, 2);
  assert.deepEqual(step.schedule!.hostOps, { 'weft.AllReduce': 1, 'weft.AllGather': 1 });
  await assert.rejects(compileSpmd(fn, {})(feed), /weft\.AllReduce: no process group for axis 'tp' \(the schedule was given none\)/);
  const two = { ...new LocalProcessGroup(), size: 2 } as unknown as LocalProcessGroup;
  await assert.rejects(compileSpmd(fn, { tp: two })(feed), /traced for a 'tp' group of 1 ranks, run on one of 2/);
});
