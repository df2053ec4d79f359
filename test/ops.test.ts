/**
 * One gradient check per op gradient rule (src/ir/ops/*.ts), over random float64 inputs whose
 * shapes include broadcasting, against central finite differences (test/helpers/gradcheck.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineOp, grad, ops, realize, Rng, setThreads, Tensor, tensor } from '../src/index.js';
import type { Value } from '../src/index.js';
import { awayFromZero, checkGrad, distinct, fixedInput, given, indices, mask, normal, positive, uniform } from './helpers/gradcheck.js';

// Tiny graphs: one ORT thread per session beats two, and leaves a core to a parallel test file.
setThreads(1);

const T = (v: Value): Tensor => new Tensor(v);

// ---- elementwise arithmetic, with broadcasting --------------------------------------------------

test('gradient: broadcast Add reduces to each input shape', async () => {
  await checkGrad('Add [2,3,4] + [3,1]', [[2, 3, 4], [3, 1]], (a, b) => a.add(b));
  await checkGrad('Add [4] + [2,1,4] (both broadcast)', [[4], [2, 1, 4]], (a, b) => a.add(b));
});

test('gradient: broadcast Sub negates and reduces the subtrahend', async () => {
  await checkGrad('Sub [2,1,4] - [3,1]', [[2, 1, 4], [3, 1]], (a, b) => a.sub(b));
  await checkGrad('Sub [] - [2,3]', [[], [2, 3]], (a, b) => a.sub(b));
});

test('gradient: broadcast Mul gives each side the other factor, reduced', async () => {
  await checkGrad('Mul [2,3,4] * [4]', [[2, 3, 4], [4]], (a, b) => a.mul(b));
  await checkGrad('Mul [2,1,4] * [3,1]', [[2, 1, 4], [3, 1]], (a, b) => a.mul(b));
});

test('gradient: broadcast Div, numerator and denominator', async () => {
  await checkGrad('Div [2,3,4] / [3,1]', [[2, 3, 4], awayFromZero([3, 1], 0.5)], (a, b) => a.div(b));
  await checkGrad('Div [4] / [2,3,4]', [[4], awayFromZero([2, 3, 4], 0.5)], (a, b) => a.div(b));
});

test('gradient: Neg', async () => {
  await checkGrad('Neg', [[3, 4]], (x) => x.neg());
});

test('gradient: Pow with respect to base and exponent, broadcast', async () => {
  await checkGrad('Pow [2,3] ^ [3]', [positive([2, 3]), [3]], (x, y) => x.pow(y));
  await checkGrad('Pow [3] ^ [2,3]', [positive([3]), normal([2, 3], 0.5)], (x, y) => x.pow(y));
});

test('gradient: Pow with a constant integer exponent accepts negative bases', async () => {
  await checkGrad('Pow x^3', [[3, 4]], (x) => x.pow(3));
});

test('gradient: Pow with a fixed exponent input skips the exponent (negative bases, no NaN)', async () => {
  await checkGrad('Pow x^[2,3,1,2]', [[3, 4], fixedInput(given([2, 3, 1, 2], [4], 'float64'))], (x, y) => x.pow(y));
});

test('gradient: Reciprocal', async () => {
  await checkGrad('Reciprocal', [awayFromZero([3, 4], 0.5)], (x) => T(ops.reciprocal(x.value)));
});

test('gradient: Sum of three broadcast inputs', async () => {
  await checkGrad('Sum [2,3] [3] [2,1]', [[2, 3], [3], [2, 1]], (a, b, c) => T(ops.sum([a.value, b.value, c.value])));
});

test('gradient: Identity passes the gradient through', async () => {
  await checkGrad('Identity', [[3, 4]], (x) => T(ops.identity(x.value)));
});

// ---- unary math ---------------------------------------------------------------------------------

test('gradient: Sqrt on positive inputs', async () => {
  await checkGrad('Sqrt', [positive([3, 4])], (x) => x.sqrt());
});

test('gradient: Exp', async () => {
  await checkGrad('Exp', [[3, 4]], (x) => x.exp());
});

test('gradient: Log on positive inputs', async () => {
  await checkGrad('Log', [positive([3, 4])], (x) => x.log());
});

test('gradient: Tanh', async () => {
  await checkGrad('Tanh', [normal([3, 4], 1.5)], (x) => x.tanh());
});

test('gradient: Erf on [-3, 3] (float64 Erf runs as a series)', async () => {
  await checkGrad('Erf', [uniform([4, 6], -3, 3)], (x) => x.erf());
});

test('gradient: Relu away from its kink', async () => {
  await checkGrad('Relu', [awayFromZero([3, 5])], (x) => x.relu());
});

test('gradient: Abs away from its kink', async () => {
  await checkGrad('Abs', [awayFromZero([3, 5])], (x) => T(ops.apply1('Abs', [x.value])));
});

test('gradient: Gelu (erf form)', async () => {
  await checkGrad('Gelu', [uniform([4, 6], -4, 4)], (x) => x.gelu());
});

test('gradient: Gelu at exactly 0 and 1 (Phi(0) = 1/2, Gelu\'(1) = Phi(1) + phi(1))', async () => {
  for (const dtype of ['float32', 'float64'] as const) {
    const x = tensor([0, -0, 1], [3], dtype);
    const [dx] = grad(x.gelu().sum(), [x]);
    const g = await dx!.toArray();
    assert.equal(g[0], 0.5);
    assert.equal(g[1], 0.5);
    assert.ok(Math.abs(g[2]! - 1.0833154705876864) < 1e-6, `Gelu'(1) = ${g[2]}`);
  }
});

test('gradient: Sigmoid', async () => {
  await checkGrad('Sigmoid', [normal([3, 4], 2)], (x) => x.sigmoid());
});

// ---- softmax family -----------------------------------------------------------------------------

test('gradient: Softmax over a middle axis and the last axis', async () => {
  await checkGrad('Softmax over axis 1', [[2, 3, 4]], (x) => x.softmax(1));
  await checkGrad('Softmax over axis -1', [[2, 3, 4]], (x) => x.softmax(-1));
});

test('gradient: LogSoftmax over the first axis and the last axis', async () => {
  await checkGrad('LogSoftmax over axis 0', [[3, 4]], (x) => x.logSoftmax(0));
  await checkGrad('LogSoftmax over axis -1', [[2, 3, 4]], (x) => x.logSoftmax(-1));
});

test('gradient: cross-entropy from LogSoftmax + GatherElements, targets not differentiated', async () => {
  await checkGrad('crossEntropy [2,3,5]', [[2, 3, 5], indices([2, 3], 5)], (logits, t) => logits.crossEntropy(t));
});

// ---- reductions ---------------------------------------------------------------------------------

test('gradient: ReduceSum spreads dy over the reduced axes', async () => {
  await checkGrad('ReduceSum axis 1 keepdims', [[2, 3, 4]], (x) => x.sum([1], true));
  await checkGrad('ReduceSum axes [0, -1]', [[2, 3, 4]], (x) => x.sum([0, -1]));
  await checkGrad('ReduceSum all', [[2, 3]], (x) => x.sum());
});

test('gradient: ReduceMean spreads dy / n over the reduced axes', async () => {
  await checkGrad('ReduceMean axis -1 keepdims', [[2, 3, 4]], (x) => x.mean([-1], true));
  await checkGrad('ReduceMean axes [0, 2]', [[2, 3, 4]], (x) => x.mean([0, 2]));
});

test('CumSum: inclusive, exclusive and reversed running sums, and their gradients (the running sum of dy the other way)', async () => {
  const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const run = async (axis: number, o: { exclusive?: boolean; reverse?: boolean }): Promise<number[]> => [...(await new Tensor(ops.cumSum(x.value, axis, o)).data())].map(Number);
  assert.deepEqual(await run(1, {}), [1, 3, 6, 4, 9, 15]);
  assert.deepEqual(await run(1, { exclusive: true }), [0, 1, 3, 0, 4, 9]);
  assert.deepEqual(await run(1, { reverse: true }), [6, 5, 3, 15, 11, 6]);
  assert.deepEqual(await run(0, { exclusive: true, reverse: true }), [4, 5, 6, 0, 0, 0]);
  for (const o of [{}, { exclusive: true }, { reverse: true }, { exclusive: true, reverse: true }]) {
    await checkGrad(`CumSum axis 1 ${JSON.stringify(o)}`, [[2, 5]], (t) => new Tensor(ops.cumSum(t.value, 1, o)));
    await checkGrad(`CumSum axis 0 ${JSON.stringify(o)}`, [[4, 3]], (t) => new Tensor(ops.cumSum(t.value, 0, o)));
  }
});

test('gradient: ReduceMax routes dy to the maximum (distinct values)', async () => {
  await checkGrad('ReduceMax axis 1', [distinct([2, 3, 4])], (x) => x.max([1]));
  await checkGrad('ReduceMax all, keepdims', [distinct([3, 4])], (x) => x.max(undefined, true));
});

test('gradient: ReduceMax splits dy equally between tied maxima', async () => {
  const x = tensor([1, 3, 3, 2, 5, 5, 5, 0], [2, 4], 'float64');
  const [dx] = grad(x.max([1]).mul(tensor([2, 6], [2], 'float64')).sum(), [x]);
  assert.deepEqual(Array.from((await dx!.data()) as Float64Array), [0, 1, 1, 0, 2, 2, 2, 0]);
});

test('gradient: ReduceSumSquare', async () => {
  await checkGrad('ReduceSumSquare axis 1', [[2, 3, 4]], (x) => T(ops.reduceSumSquare(x.value, [1], false)));
});

// ---- linear algebra -----------------------------------------------------------------------------

test('gradient: 2-D MatMul', async () => {
  await checkGrad('MatMul [3,4] x [4,5]', [[3, 4], [4, 5]], (a, b) => a.matmul(b));
});

test('gradient: batched MatMul', async () => {
  await checkGrad('MatMul [2,3,4] x [2,4,5]', [[2, 3, 4], [2, 4, 5]], (a, b) => a.matmul(b));
});

test('gradient: MatMul with broadcast batch dims reduces to each operand', async () => {
  await checkGrad('MatMul [2,1,3,4] x [3,4,5]', [[2, 1, 3, 4], [3, 4, 5]], (a, b) => a.matmul(b));
  await checkGrad('MatMul [3,4] x [2,4,5]', [[3, 4], [2, 4, 5]], (a, b) => a.matmul(b));
});

test('gradient: MatMul with 1-D operands', async () => {
  await checkGrad('MatMul [4] x [4,5]', [[4], [4, 5]], (a, b) => a.matmul(b));
  await checkGrad('MatMul [2,3,4] x [4]', [[2, 3, 4], [4]], (a, b) => a.matmul(b));
  await checkGrad('MatMul [4] x [2,4,5]', [[4], [2, 4, 5]], (a, b) => a.matmul(b));
  await checkGrad('MatMul [4] x [4] (dot)', [[4], [4]], (a, b) => a.matmul(b));
});

// alpha and beta are exact in float32: ONNX float attributes are float32, rules compute in float64.
const gemm = (o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number }) =>
  (a: Tensor, b: Tensor, c: Tensor): Tensor => T(ops.gemm(a.value, b.value, c.value, o));

test('gradient: Gemm, no transposes, alpha and beta, C broadcast from [5]', async () => {
  await checkGrad('Gemm', [[3, 4], [4, 5], [5]], gemm({ alpha: 0.75, beta: -1.5 }));
});

test('gradient: Gemm with transA, C broadcast from [3,1]', async () => {
  await checkGrad('Gemm transA', [[4, 3], [4, 5], [3, 1]], gemm({ transA: true, alpha: 1.25, beta: 0.5 }));
});

test('gradient: Gemm with transB, scalar C', async () => {
  await checkGrad('Gemm transB', [[3, 4], [5, 4], []], gemm({ transB: true, alpha: -0.5, beta: 2 }));
});

test('gradient: Gemm with transA and transB, C of [1,5]', async () => {
  await checkGrad('Gemm transA transB', [[4, 3], [5, 4], [1, 5]], gemm({ transA: true, transB: true, alpha: 2, beta: 0.25 }));
});

test('gradient: Gemm without C', async () => {
  await checkGrad('Gemm no C', [[3, 4], [5, 4]], (a, b) => T(ops.gemm(a.value, b.value, null, { transB: true })));
});

// ---- shape ops ----------------------------------------------------------------------------------

test('gradient: Reshape back to the input shape', async () => {
  await checkGrad('Reshape [2,3,4] -> [0,-1]', [[2, 3, 4]], (x) => x.reshape([0, -1]));
  await checkGrad('Reshape [6,4] -> [2,3,4]', [[6, 4]], (x) => x.reshape([2, 3, 4]));
});

test('gradient: Transpose by the inverse permutation', async () => {
  await checkGrad('Transpose [2,0,1]', [[2, 3, 4]], (x) => x.transpose([2, 0, 1]));
  await checkGrad('Transpose reversed', [[2, 3, 4]], (x) => x.transpose());
});

test('gradient: Slice with negative starts and ends (pads back)', async () => {
  await checkGrad('Slice [1:3, -4:-1]', [[4, 6]], (x) => x.slice([1, -4], [3, -1]));
});

test('gradient: Slice with a step of 2', async () => {
  await checkGrad('Slice [:, 0::2]', [[4, 6]], (x) => x.slice([0], [6], [1], [2]));
  await checkGrad('Slice [1:4, 1::2]', [[4, 6]], (x) => x.slice([1, 1], [4, 1000], [0, 1], [1, 2]));
});

test('gradient: Slice with a step of -1 (reversal) and -2', async () => {
  await checkGrad('Slice [:, ::-1]', [[3, 5]], (x) => x.slice([-1], [-1000], [1], [-1]));
  await checkGrad('Slice [3:0:-2, :]', [[5, 3]], (x) => x.slice([3], [0], [0], [-2]));
});

test('gradient: Concat splits dy back to the inputs', async () => {
  await checkGrad('Concat axis 1', [[2, 3], [2, 1], [2, 4]], (a, b, c) => T(ops.concat([a.value, b.value, c.value], 1)));
  await checkGrad('Concat axis -3', [[1, 2, 3], [2, 2, 3]], (a, b) => T(ops.concat([a.value, b.value], -3)));
});

test('gradient: Split with every output used', async () => {
  await checkGrad('Split [1,2,3] axis 1', [[2, 6]], (x) => x.split([1, 2, 3], 1));
});

test('gradient: Split with only some outputs used fills zeros for the others', async () => {
  await checkGrad('Split, outputs 0 and 2', [[2, 6, 2]], (x) => { const [a, , c] = x.split([2, 1, 3], 1); return [a!, c!]; });
  await checkGrad('Split, output 1 only, combined', [[6, 3]], (x) => { const [, b] = x.split([2, 4], 0); return b!.mul(b!); });
});

test('gradient: Expand sums dy over the expanded dims', async () => {
  await checkGrad('Expand [3,1] -> [2,3,4]', [[3, 1]], (x) => x.expand([2, 3, 4]));
  await checkGrad('Expand [4] -> [3,4]', [[4]], (x) => x.expand([3, 4]));
});

test('gradient: Squeeze', async () => {
  await checkGrad('Squeeze [1,-1]', [[3, 1, 4, 1]], (x) => x.squeeze([1, -1]));
});

test('gradient: Unsqueeze', async () => {
  await checkGrad('Unsqueeze [0,-1]', [[3, 4]], (x) => x.unsqueeze([0, -1]));
});

test('gradient: Pad slices dy back', async () => {
  await checkGrad('Pad', [[2, 3]], (x) => T(ops.pad(x.value, [1, 0, 0, 2])));
});

// ---- indexing -----------------------------------------------------------------------------------

test('gradient: Gather as an embedding lookup sums repeated indices', async () => {
  const ids = given([1, 3, 1, 0, 3, 3, 4, 1], [2, 4]);
  await checkGrad('Gather rows of [5,3]', [[5, 3], ids], (w, i) => w.gather(i));
});

test('gradient: Gather along axis 1 with repeated indices', async () => {
  const ids = given([4, 0, 4, 2, 4, 0], [2, 3]);
  await checkGrad('Gather axis 1 of [3,5,2]', [[3, 5, 2], ids], (x, i) => x.gather(i, 1));
  await checkGrad('Gather axis -1 of [3,4]', [[3, 4], given([3, 3, 1], [3])], (x, i) => x.gather(i, -1));
});

test('gradient: GatherElements scatter-adds into the data (repeated indices)', async () => {
  await checkGrad('GatherElements axis 1', [[3, 4], indices([3, 6], 4)], (x, i) => x.gatherElements(i, 1));
  await checkGrad('GatherElements axis 0', [[3, 4], indices([5, 4], 3)], (x, i) => x.gatherElements(i, 0));
});

test('gradient: ScatterElements to data and updates, reductions none and add', async () => {
  // Each row's indices are distinct: with reduction none, duplicates would leave the result undefined.
  const idx = given([0, 2, 3, 1, 0, 2], [2, 3]);
  const scatter = (reduction: string) => (d: Tensor, i: Tensor, u: Tensor): Tensor =>
    T(ops.apply1('ScatterElements', [d.value, i.value, u.value], { axis: 1, reduction }));
  await checkGrad('ScatterElements none', [[2, 4], idx, [2, 3]], scatter('none'));
  await checkGrad('ScatterElements add', [[2, 4], given([0, 2, 0, 1, 1, 1], [2, 3]), [2, 3]], scatter('add'));
});

test('gradient: Where routes dy by the condition and reduces broadcast branches', async () => {
  await checkGrad('Where cond [3,1], X [2,3,4], Y [4]', [mask([3, 1]), [2, 3, 4], [4]], (c, x, y) => x.where(c, y));
  await checkGrad('Where cond [2,3,4], X [3,1], Y []', [mask([2, 3, 4]), [3, 1], []], (c, x, y) => x.where(c, y));
});

// ---- casts and normalization --------------------------------------------------------------------

test('gradient: Cast float64 -> float32 -> float64 round trip', async () => {
  // The finite differences see float32 rounding (~6e-8 relative, over 2h), hence the large step
  // and the loose tolerance.
  await checkGrad('Cast round trip', [[3, 4]], (x) => x.cast('float32').cast('float64').mul(x.exp()),
    { h: 1e-3, rtol: 1e-3, atol: 1e-4 });
});

test('gradient: Cast float64 -> float64', async () => {
  await checkGrad('Cast to float64', [[3, 4]], (x) => T(ops.apply1('Cast', [x.value], { to: 11 })).mul(x));
});

test('gradient: LayerNormalization with scale and bias over the last axis', async () => {
  await checkGrad('LayerNorm [2,3,6]', [[2, 3, 6], [6], [6]], (x, s, b) => x.layerNorm(s, b));
});

test('gradient: LayerNormalization over the last two axes, broadcast bias', async () => {
  await checkGrad('LayerNorm axis 1', [[2, 3, 4], [3, 4], [4]], (x, s, b) => T(ops.layerNorm(x.value, s.value, b.value, 1)));
});

test('gradient: LayerNormalization without bias', async () => {
  await checkGrad('LayerNorm no bias', [[3, 5], [5]], (x, s) => x.layerNorm(s, null));
});

test('gradient: float32 LayerNormalization (saved statistics) agrees with the checked float64 one', async () => {
  const rng = new Rng(11);
  const draw = (n: number): number[] => Array.from({ length: n }, () => rng.normal());
  const [x, s, bias, w] = [draw(36), draw(6), draw(6), draw(36)];
  const grads = async (dtype: 'float32' | 'float64'): Promise<number[][]> => {
    const t = (a: number[], shape: number[]): Tensor => tensor(a, shape, dtype);
    const [xt, st, bt] = [t(x, [2, 3, 6]), t(s, [6]), t(bias, [6])];
    const gs = grad(xt.layerNorm(st, bt).mul(t(w, [2, 3, 6])).sum(), [xt, st, bt]);
    await realize(...gs);
    return Promise.all(gs.map(async (g) => Array.from((await g.data()) as Float32Array | Float64Array)));
  };
  const [g32, g64] = [await grads('float32'), await grads('float64')];
  g64.forEach((ref, i) => ref.forEach((r, j) => {
    const a = g32[i]![j]!;
    assert.ok(Math.abs(a - r) <= 1e-5 + 1e-4 * Math.abs(r), `input ${i} element ${j}: float32 ${a}, float64 ${r}`);
  }));
});

// ---- the engine ---------------------------------------------------------------------------------

test('gradient: fan-out sums the contributions of one input used twice', async () => {
  await checkGrad('x * x + exp(x)', [[3, 4]], (x) => x.mul(x).add(x.exp()));
  await checkGrad('x used by a broadcast Mul and a ReduceSum', [[2, 3], [3]], (x, y) => x.mul(y).add(x.sum([1], true)).matmul(y));
});

// ---- dropout ------------------------------------------------------------------------------------

test('gradient: Dropout scales dy by the same mask as the forward', async () => {
  // 1 - r is a power of two, so x * mask / (1 - r) is exact in both ORT and the check.
  for (const r of [0.5, 0.75]) {
    const rng = new Rng(7);
    const n = 2000;
    const x = tensor(Float64Array.from({ length: n }, () => rng.normal()), [40, 50]);
    const R = Float64Array.from({ length: n }, () => rng.normal());
    const [yv, maskv] = ops.dropout(x.value, r);
    const y = T(yv);
    const m = T(maskv);
    const [dx] = grad(y.mul(tensor(R, [40, 50])).sum(), [x]);
    await realize(y, m, dx!);
    const [xs, ys, ms, dxs] = [await x.data(), await y.data(), await m.data(), await dx!.data()];
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const keep = ms[i] ? 1 : 0;
      kept += keep;
      assert.equal(ys[i], (xs[i] as number) * keep / (1 - r), `y[${i}] with mask ${keep}`);
      assert.equal(dxs[i], R[i]! * keep / (1 - r), `dx[${i}] with mask ${keep}`);
    }
    // The mask is random: about (1 - r) n elements kept (6 sigma).
    const sd = Math.sqrt(n * r * (1 - r));
    assert.ok(Math.abs(kept - (1 - r) * n) < 6 * sd, `ratio ${r}: ${kept} of ${n} kept`);
  }
});

// ---- the checker itself -------------------------------------------------------------------------

// x^2 with a rule that forgets the factor 2: the check must reject it.
defineOp({
  name: 'TestWrongSquare', inputs: ['X'],
  infer: (c) => [{ dtype: c.input(0).dtype, shape: c.input(0).shape }],
  lower: (c) => [ops.mul(c.input(0), c.input(0))],
  grad: (g) => [ops.mul(g.dy[0]!, g.input(0))],
});

test('gradcheck: a wrong rule fails, naming the input, the element and both values', async () => {
  await assert.rejects(
    checkGrad('wrong square', [[3], [2, 3]], (y, x) => y.add(T(ops.apply1('TestWrongSquare', [x.value])))),
    /wrong square: gradient of input 1 \(shape \[2, 3\]\) at element \[\d, \d\]: analytic -?[\d.e-]+, numeric -?[\d.e-]+, .* 6 of 6 elements fail/);
});
