/**
 * Vision ops (src/ir/ops/vision.ts): gradients against float64 finite differences
 * (test/helpers/gradcheck.ts), the float64 im2col lowerings (runtime/kernel_gaps.ts) against
 * onnxruntime's own float32 kernels on random geometries, onnxruntime's conventions (MaxPool
 * Indices, BatchNormalization running statistics, ceil_mode, ConvTranspose SAME pads), trace-time
 * errors, and ONNX export (checker, round trip).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileProgram, fromModelProto, grad, ops, placeholder, realize, Rng, runProgram, setThreads, Tensor, tensor, toModelProto } from '../src/index.js';
import type { ConvOptions, ConvTransposeOptions, TypedArray, Value } from '../src/index.js';
import { checkGrad, distinct, fixedInput, normal, positive } from './helpers/gradcheck.js';

setThreads(1);

const T = (v: Value): Tensor => new Tensor(v);
const conv = (x: Tensor, w: Tensor, b: Tensor | null, o: ConvOptions = {}): Tensor => T(ops.conv(x.value, w.value, b?.value ?? null, o));
const convT = (x: Tensor, w: Tensor, b: Tensor | null, o: ConvTransposeOptions = {}): Tensor => T(ops.convTranspose(x.value, w.value, b?.value ?? null, o));

// ---- Conv ---------------------------------------------------------------------------------------

test('gradient: Conv 2-D, pads 1, with bias (X, W, B)', async () => {
  await checkGrad('Conv 3x3 pad 1', [[2, 3, 5, 5], [4, 3, 3, 3], [4]], (x, w, b) => x.conv2d(w, b, { pads: [1, 1, 1, 1] }));
});

test('gradient: Conv weight gradient as a MatMul over patches (stride 1, >= 100 output positions) and as a swapped Conv', async () => {
  // 10x11 outputs take the patch form of dW; 5x5 ones (above) the role-swapped Conv.
  await checkGrad('Conv patches dW, 10x11 out, pads [1,0,1,0]', [[2, 2, 10, 13], [3, 2, 3, 3], [3]], (x, w, b) => x.conv2d(w, b, { pads: [1, 0, 1, 0] }));
  await checkGrad('Conv patches dW, dilation 2', [[1, 2, 14, 14], [2, 2, 2, 2]], (x, w) => x.conv2d(w, null, { dilations: [2, 2] }));
});

test('gradient: Conv with stride 2 and asymmetric pads', async () => {
  await checkGrad('Conv stride 2 pads [0,1,2,0]', [[2, 2, 6, 7], [3, 2, 3, 2], [3]], (x, w, b) => x.conv2d(w, b, { strides: [2, 2], pads: [0, 1, 2, 0] }));
  await checkGrad('Conv strides [3,2], rows left unused', [[1, 2, 8, 7], [2, 2, 2, 3]], (x, w) => x.conv2d(w, null, { strides: [3, 2] }));
});

test('gradient: Conv with dilation, and dilation with stride', async () => {
  await checkGrad('Conv dilation 2', [[1, 2, 7, 6], [3, 2, 3, 2]], (x, w) => x.conv2d(w, null, { dilations: [2, 2], pads: [1, 0, 1, 1] }));
  await checkGrad('Conv dilation [1,2] stride [2,1]', [[2, 1, 7, 7], [2, 1, 2, 3], [2]], (x, w, b) => x.conv2d(w, b, { dilations: [1, 2], strides: [2, 1] }));
});

test('gradient: Conv with groups, and depthwise', async () => {
  await checkGrad('Conv group 2', [[2, 4, 5, 5], [6, 2, 3, 3], [6]], (x, w, b) => x.conv2d(w, b, { group: 2, pads: [1, 1, 1, 1], strides: [2, 1] }));
  await checkGrad('Conv depthwise x2 (group = C)', [[2, 3, 5, 4], [6, 1, 3, 3], [6]], (x, w, b) => x.conv2d(w, b, { group: 3, pads: [1, 1, 1, 1] }));
});

test('gradient: Conv with auto_pad SAME_UPPER, SAME_LOWER and VALID', async () => {
  await checkGrad('Conv SAME_UPPER stride 2', [[1, 2, 6, 5], [2, 2, 2, 3]], (x, w) => x.conv2d(w, null, { autoPad: 'SAME_UPPER', strides: [2, 2] }));
  await checkGrad('Conv SAME_LOWER even kernel', [[1, 2, 5, 5], [2, 2, 2, 2], [2]], (x, w, b) => x.conv2d(w, b, { autoPad: 'SAME_LOWER' }));
  await checkGrad('Conv VALID stride 2', [[2, 1, 7, 6], [2, 1, 3, 3]], (x, w) => x.conv2d(w, null, { autoPad: 'VALID', strides: [2, 2] }));
});

test('gradient: Conv 1-D and 3-D', async () => {
  await checkGrad('Conv 1-D stride 2 group 2', [[2, 4, 9], [4, 2, 3], [4]], (x, w, b) => conv(x, w, b, { strides: [2], pads: [1, 2], group: 2 }));
  await checkGrad('Conv 3-D', [[1, 2, 4, 4, 3], [2, 2, 2, 3, 2]], (x, w) => conv(x, w, null, { pads: [1, 0, 0, 0, 1, 1], strides: [1, 2, 1] }));
});

// ---- ConvTranspose ------------------------------------------------------------------------------

test('gradient: ConvTranspose with stride, pads, output_padding, bias', async () => {
  await checkGrad('ConvTranspose stride 2 output_padding 1', [[2, 3, 3, 4], [3, 2, 3, 3], [2]],
    (x, w, b) => x.convTranspose2d(w, b, { strides: [2, 2], pads: [1, 0, 0, 1], outputPadding: [1, 1] }));
  await checkGrad('ConvTranspose group 2 dilation 2', [[1, 4, 3, 3], [4, 1, 2, 2]], (x, w) => convT(x, w, null, { group: 2, dilations: [2, 2], strides: [1, 2] }));
});

test('gradient: ConvTranspose with auto_pad SAME_UPPER and output_shape', async () => {
  await checkGrad('ConvTranspose SAME_UPPER stride 2', [[1, 2, 3, 3], [2, 2, 2, 3]], (x, w) => convT(x, w, null, { autoPad: 'SAME_UPPER', strides: [2, 2] }));
  await checkGrad('ConvTranspose output_shape [7, 6]', [[1, 2, 3, 3], [2, 1, 3, 3]], (x, w) => convT(x, w, null, { strides: [2, 2], outputShape: [7, 6] }));
});

// ---- BatchNormalization ---------------------------------------------------------------------------

test('gradient: BatchNormalization in training mode (batch statistics) for X, scale, B', async () => {
  await checkGrad('BN train [3,2,3,2]', [[3, 2, 3, 2], [2], [2], fixedInput([2]), fixedInput(positive([2]))],
    (x, s, b, m, v) => x.batchNorm(s, b, m, v, { training: true }).y);
  await checkGrad('BN train [4,3] (no spatial dims)', [[4, 3], [3], [3], fixedInput([3]), fixedInput(positive([3]))],
    (x, s, b, m, v) => x.batchNorm(s, b, m, v, { training: true, epsilon: 1e-3 }).y);
});

test('gradient: BatchNormalization in eval mode, statistics included', async () => {
  await checkGrad('BN eval [2,3,4]', [[2, 3, 4], [3], [3], [3], positive([3])], (x, s, b, m, v) => x.batchNorm(s, b, m, v).y);
});

test('BatchNormalization: running_var uses the biased batch variance; running = momentum * input + (1 - momentum) * batch', async () => {
  // Channel 0 holds 1, 2, 10, 20: mean 8.25, biased variance 58.1875, unbiased 77.583.
  const x = tensor([1, 2, 3, 4, 10, 20, 30, 50], [2, 2, 2], 'float64');
  const { y, runningMean, runningVar } = x.batchNorm(tensor([1, 1], [2], 'float64'), tensor([0, 0], [2], 'float64'),
    tensor([1, -1], [2], 'float64'), tensor([2, 3], [2], 'float64'), { training: true, momentum: 0.8 });
  await realize(y, runningMean, runningVar);
  const [rm, rv] = [await runningMean.toArray(), await runningVar.toArray()];
  // ONNX float attributes are float32: momentum 0.8 arrives as fround(0.8), even in float64.
  const mo = Math.fround(0.8);
  assert.ok(Math.abs(rm[0]! - (mo * 1 + (1 - mo) * 8.25)) < 1e-12, `running_mean[0] = ${rm[0]}`);
  assert.ok(Math.abs(rv[0]! - (mo * 2 + (1 - mo) * 58.1875)) < 1e-12, `running_var[0] = ${rv[0]} (unbiased would give ${mo * 2 + (1 - mo) * 77.5833})`);
  // Channel 1 holds 3, 4, 30, 50: mean 21.75, biased variance 383.1875.
  assert.ok(Math.abs(rv[1]! - (mo * 3 + (1 - mo) * 383.1875)) < 1e-12, `running_var[1] = ${rv[1]}`);
  // Y is normalized with the biased variance too.
  const ys = await y.toArray();
  assert.ok(Math.abs(ys[0]! - (1 - 8.25) / Math.sqrt(58.1875 + Math.fround(1e-5))) < 1e-12, `y[0] = ${ys[0]}`);
});

// ---- pools ----------------------------------------------------------------------------------------

test('MaxPool: Indices count over the whole [N, C, H, W] tensor (N and C offsets included)', async () => {
  const x = tensor(Float32Array.from({ length: 16 }, (_, i) => i), [2, 2, 2, 2]);
  const [y, idx] = ops.maxPool(x.value, [2, 2]);
  await realize(T(y), T(idx));
  assert.deepEqual(await T(idx).toArray(), [3, 7, 11, 15]);
});

test('MaxPool ceil_mode: a last window starting in the end padding is dropped (shape as onnxruntime)', async () => {
  for (const [n, k, s, pads, want] of [[4, 2, 2, [0, 1], 2], [5, 2, 2, [0, 0], 3], [6, 3, 3, [0, 2], 2], [7, 3, 2, [1, 1], 4]] as const) {
    const x = tensor(Float32Array.from({ length: n }, (_, i) => i), [1, 1, n]);
    const [y] = ops.maxPool(x.value, [k], { strides: [s], pads: [...pads], ceilMode: true });
    assert.deepEqual(y.shape, [1, 1, want], `in ${n}, kernel ${k}, stride ${s}, pads ${pads}`);
    assert.equal((await T(y).data()).length, want, 'onnxruntime computes the same size');
  }
});

test('gradient: MaxPool scatters dY to the argmax (non-overlapping, overlapping, padded)', async () => {
  await checkGrad('MaxPool 2x2 stride 2', [distinct([2, 2, 4, 4])], (x) => x.maxPool2d([2, 2], { strides: [2, 2] }));
  await checkGrad('MaxPool 3x3 stride 2 pads 1 (shared maxima)', [distinct([1, 2, 5, 6])], (x) => x.maxPool2d([3, 3], { strides: [2, 2], pads: [1, 1, 1, 1] }));
  await checkGrad('MaxPool asymmetric pads, stride 1', [distinct([2, 1, 4, 3])], (x) => x.maxPool2d([2, 3], { pads: [0, 1, 1, 0] }));
});

test('gradient: MaxPool with dilation, ceil_mode, auto_pad, 1-D', async () => {
  await checkGrad('MaxPool dilation 2', [distinct([1, 2, 6, 6])], (x) => x.maxPool2d([2, 2], { dilations: [2, 2] }));
  await checkGrad('MaxPool ceil_mode', [distinct([1, 2, 5, 7])], (x) => x.maxPool2d([2, 3], { strides: [2, 2], ceilMode: true }));
  await checkGrad('MaxPool SAME_UPPER stride 2', [distinct([1, 2, 5, 5])], (x) => x.maxPool2d([2, 2], { strides: [2, 2], autoPad: 'SAME_UPPER' }));
  await checkGrad('MaxPool SAME_LOWER 3x3', [distinct([1, 1, 4, 5])], (x) => x.maxPool2d([3, 3], { autoPad: 'SAME_LOWER' }));
  await checkGrad('MaxPool 1-D', [distinct([2, 2, 7])], (x) => T(ops.maxPool(x.value, [3], { strides: [2] })[0]));
});

test('gradient: AveragePool with count_include_pad 0 and 1, strides, pads, auto_pad', async () => {
  await checkGrad('AveragePool 3x3 stride 2 pads 1, count_include_pad 0', [[2, 2, 5, 6]], (x) => x.avgPool2d([3, 3], { strides: [2, 2], pads: [1, 1, 1, 1] }));
  await checkGrad('AveragePool asymmetric pads, count_include_pad 1', [[1, 2, 5, 5]], (x) => x.avgPool2d([2, 3], { pads: [1, 0, 0, 2], countIncludePad: true }));
  await checkGrad('AveragePool SAME_LOWER stride 2', [[1, 3, 5, 4]], (x) => x.avgPool2d([2, 2], { strides: [2, 2], autoPad: 'SAME_LOWER' }));
  await checkGrad('AveragePool 2x2 stride 2, ceil_mode where it changes nothing', [[1, 1, 4, 6]], (x) => x.avgPool2d([2, 2], { strides: [2, 2], ceilMode: true }));
});

test('gradient: GlobalAveragePool and Flatten', async () => {
  await checkGrad('GlobalAveragePool', [[2, 3, 4, 5]], (x) => x.globalAvgPool());
  await checkGrad('Flatten axis 2', [[2, 3, 2, 2]], (x) => x.flatten(2));
  await checkGrad('Flatten axis 0', [[2, 3, 2]], (x) => x.flatten(0));
});

test('gradient: a small CNN (Conv, BatchNorm, Relu, MaxPool, Conv, GlobalAveragePool, Flatten, MatMul)', async () => {
  await checkGrad('small CNN', [[2, 1, 6, 6], normal([3, 1, 3, 3], 0.5), [3], [3], fixedInput([3]), fixedInput(positive([3])), normal([4, 3, 2, 2], 0.5), [4, 2]],
    (x, w1, s, b, m, v, w2, fc) => x.conv2d(w1, null, { pads: [1, 1, 1, 1] }).batchNorm(s, b, m, v, { training: true }).y
      .maxPool2d([2, 2], { strides: [2, 2] }).conv2d(w2).globalAvgPool().flatten().matmul(fc), { rtol: 1e-5, atol: 1e-6 });
});

test('gradient: BatchNormalization running statistics carry no gradient (a clear error)', () => {
  const x = tensor(new Float64Array(8), [2, 2, 2]);
  const c = tensor(new Float64Array(2), [2]);
  const { runningMean } = x.batchNorm(c, c, c, c, { training: true });
  assert.throws(() => grad(runningMean.sum(), [x]), /BatchNormalization propagates gradients from its first output only/);
});

// ---- float64 lowerings against onnxruntime's float32 kernels ------------------------------------

/** Runs `fn` on float32 copies (onnxruntime's kernels) and float64 copies (weft's lowering) of the same data. */
async function agree(name: string, shapes: readonly (readonly number[])[], fn: (...xs: Tensor[]) => Tensor, rng: Rng): Promise<void> {
  const data = shapes.map((s) => Array.from({ length: s.reduce((p, d) => p * d, 1) }, () => rng.normal()));
  const run = async (dtype: 'float32' | 'float64'): Promise<{ shape: readonly (number | string)[]; data: TypedArray }> => {
    const y = fn(...data.map((d, i) => tensor(d, shapes[i]!, dtype)));
    return { shape: y.shape, data: await y.data() };
  };
  const [a, b] = [await run('float32'), await run('float64')];
  const n = a.shape.reduce<number>((p, d) => p * (d as number), 1);
  assert.equal(a.data.length, n, `${name}: onnxruntime's float32 output has ${a.data.length} elements, weft inferred ${a.shape}`);
  assert.equal(b.data.length, n, `${name}: the float64 lowering has ${b.data.length} elements, weft inferred ${a.shape}`);
  for (let i = 0; i < n; i++) {
    const [p, q] = [Number(a.data[i]), Number(b.data[i])];
    if (!(Math.abs(p - q) <= 1e-4 + 1e-4 * Math.abs(q))) assert.fail(`${name}: element ${i}: float32 kernel ${p}, float64 lowering ${q}`);
  }
}

const PADS = ['NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'] as const;

/** A random window: rank 1-3, kernel, stride, dilation, auto_pad or asymmetric pads, and an input it fits. */
function randomWindow(rng: Rng, rank: number, dilate: boolean): { input: number[]; kernel: number[]; o: ConvOptions } {
  const kernel = Array.from({ length: rank }, () => 1 + rng.int(3));
  const strides = Array.from({ length: rank }, () => 1 + rng.int(3));
  const dilations = Array.from({ length: rank }, () => (dilate ? 1 + rng.int(2) : 1));
  let autoPad = PADS[rng.int(4)]!;
  // onnxruntime rejects SAME_* with dilations; pools reject SAME_* that would need a negative pad.
  if (autoPad.startsWith('SAME') && (dilations.some((d) => d > 1) || kernel.some((k, i) => k < strides[i]!))) autoPad = 'VALID';
  const pads = autoPad === 'NOTSET' ? Array.from({ length: 2 * rank }, () => rng.int(3)) : undefined;
  const input = kernel.map((k, i) => dilations[i]! * (k - 1) + 1 + rng.int(5));
  const o: ConvOptions = { strides, autoPad, ...(dilate ? { dilations } : {}), ...(pads ? { pads } : {}) };
  return { input, kernel, o };
}

test('float64 Conv lowering (im2col) agrees with onnxruntime float32 on 30 random geometries', async () => {
  const rng = new Rng(2024);
  for (let t = 0; t < 30; t++) {
    const rank = t < 20 ? 2 : 1 + 2 * (t % 2);
    const { input, kernel, o } = randomWindow(rng, rank, true);
    const group = [1, 2, 3][rng.int(3)]!;
    const depthwise = rng.int(4) === 0;
    const Cg = depthwise ? 1 : 1 + rng.int(2);
    const M = group * (1 + rng.int(2));
    const C = depthwise ? group : Cg * group;
    const shapes = [[1 + rng.int(2), C, ...input], [M, Cg, ...kernel], [M]];
    await agree(`Conv #${t} ${JSON.stringify({ shapes, group, ...o })}`, shapes, (x, w, b) => conv(x, w, b, { ...o, group }), rng);
  }
});

test('float64 ConvTranspose lowering agrees with onnxruntime float32 (pads, output_padding, output_shape, SAME_*)', async () => {
  const rng = new Rng(7);
  for (let t = 0; t < 24; t++) {
    const rank = t < 18 ? 2 : 1 + 2 * (t % 2);
    const { input, kernel, o } = randomWindow(rng, rank, true);
    const group = [1, 2][rng.int(2)]!;
    const [Cg, Mg] = [1 + rng.int(2), 1 + rng.int(2)];
    const spatial = input.map((n) => 1 + (n % 4));
    const strides = o.strides!;
    const extra: ConvTransposeOptions = {};
    if (o.autoPad === 'NOTSET' && rng.int(2) === 0) extra.outputPadding = strides.map((s) => rng.int(s));
    if (o.autoPad === 'VALID' && rng.int(2) === 0) {
      // output_shape: between the full size minus 2 and the full size.
      extra.outputShape = spatial.map((n, i) => strides[i]! * (n - 1) + o.dilations![i]! * (kernel[i]! - 1) + 1 - rng.int(3));
      delete o.autoPad;
    }
    // Pads below the dilated kernel leave every output row some input.
    if (o.pads) o.pads = o.pads.map((p, i) => Math.min(p, Math.floor((o.dilations![i % rank]! * (kernel[i % rank]! - 1)) / 2)));
    const shapes = [[1 + rng.int(2), Cg * group, ...spatial], [Cg * group, Mg, ...kernel], [Mg * group]];
    await agree(`ConvTranspose #${t} ${JSON.stringify({ shapes, group, ...o, ...extra })}`, shapes, (x, w, b) => convT(x, w, b, { ...o, ...extra, group }), rng);
  }
});

test('float64 AveragePool and GlobalAveragePool lowerings agree with onnxruntime float32', async () => {
  const rng = new Rng(99);
  for (let t = 0; t < 24; t++) {
    const rank = t < 18 ? 2 : 1 + 2 * (t % 2);
    const { input, kernel, o } = randomWindow(rng, rank, false);
    // ONNX and onnxruntime forbid pads as large as the kernel in pools.
    if (o.pads) o.pads = o.pads.map((p, i) => Math.min(p, kernel[i % rank]! - 1));
    const countIncludePad = rng.int(2) === 1;
    const shapes = [[1 + rng.int(2), 1 + rng.int(3), ...input]];
    await agree(`AveragePool #${t} ${JSON.stringify({ shapes, kernel, countIncludePad, ...o })}`, shapes,
      (x) => T(ops.averagePool(x.value, kernel, { ...o, countIncludePad })), rng);
  }
  await agree('GlobalAveragePool 3-D', [[2, 3, 2, 3, 4]], (x) => x.globalAvgPool(), rng);
});

// ---- trace-time errors ----------------------------------------------------------------------------

test('errors: a kernel larger than the padded input names both shapes', () => {
  const x = placeholder([1, 1, 3, 3], 'float32');
  assert.throws(() => x.conv2d(placeholder([1, 1, 5, 5], 'float32')),
    { message: 'Conv: kernel [5, 5] (dilated [5, 5]) is larger than input 0 (X) of shape [1, 1, 3, 3] padded to [3, 3]' });
  assert.throws(() => x.conv2d(placeholder([1, 1, 2, 2], 'float32'), null, { dilations: [3, 1] }), /kernel \[2, 2\] \(dilated \[4, 2\]\) is larger than input 0 \(X\) of shape \[1, 1, 3, 3\] padded to \[3, 3\]/);
  assert.throws(() => x.maxPool2d([4, 2], { pads: [0, 0, 0, 1] }), /MaxPool: kernel \[4, 2\] \(dilated \[4, 2\]\) is larger than input 0 \(X\) of shape \[1, 1, 3, 3\] padded to \[3, 4\]/);
});

test('errors: channel and group mismatches name both inputs', () => {
  const x = placeholder([1, 4, 5, 5], 'float32');
  assert.throws(() => x.conv2d(placeholder([8, 3, 3, 3], 'float32')),
    { message: 'Conv: input 0 (X) of shape [1, 4, 5, 5] has 4 channels but input 1 (W) of shape [8, 3, 3, 3] expects 3 per group x group 1 = 3' });
  assert.throws(() => x.conv2d(placeholder([3, 2, 3, 3], 'float32'), null, { group: 2 }), /Conv: input 1 \(W\) of shape \[3, 2, 3, 3\] has 3 output channels, not divisible by group 2/);
  assert.throws(() => x.conv2d(placeholder([4, 4, 3, 3], 'float32'), placeholder([3], 'float32')), /Conv: input 2 \(B\) of shape \[3\] must have shape \[4\]/);
  assert.throws(() => x.convTranspose2d(placeholder([3, 2, 3, 3], 'float32')), /ConvTranspose: input 0 \(X\) of shape \[1, 4, 5, 5\] has 4 channels but input 1 \(W\) of shape \[3, 2, 3, 3\] expects 3/);
  const s = placeholder([3], 'float32');
  assert.throws(() => x.batchNorm(s, s, s, s), /BatchNormalization: input 1 \(scale\) of shape \[3\] must have shape \[4\]/);
});

test('errors: wrong ranks and unsupported attributes name the input', () => {
  assert.throws(() => T(ops.conv(placeholder([4, 5], 'float32').value, placeholder([2, 4, 3], 'float32').value, null)), /Conv: input 0 \(X\) of shape \[4, 5\] must have rank >= 3/);
  assert.throws(() => T(ops.conv(placeholder([1, 4, 5], 'float32').value, placeholder([2, 4, 3, 3], 'float32').value, null)), /Conv: input 1 \(W\) of shape \[2, 4, 3, 3\] must have the rank of input 0 \(X\) of shape \[1, 4, 5\]/);
  assert.throws(() => placeholder([1, 4, 5], 'float32').conv2d(placeholder([2, 4, 3], 'float32')), /conv2d: expects a \[N, C, H, W\] input, got shape \[1, 4, 5\]/);
  const x = placeholder([1, 2, 5, 5], 'float32');
  assert.throws(() => x.conv2d(placeholder([2, 2, 3, 3], 'float32'), null, { strides: [1] }), /Conv: strides \[1\] must have 2 entries/);
  assert.throws(() => x.conv2d(placeholder([2, 2, 3, 3], 'float32'), null, { autoPad: 'SAME_UPPER', pads: [1, 1, 1, 1] }), /cannot be combined with auto_pad 'SAME_UPPER'/);
  assert.throws(() => x.avgPool2d([2, 2], { strides: [2, 2], ceilMode: true }), /AveragePool: ceil_mode=1 is not supported by weft where it changes the output \(\[3, 3\] instead of \[2, 2\]/);
  assert.throws(() => T(ops.apply1('MaxPool', [x.value], { kernel_shape: [2, 2], storage_order: 1 })), /storage_order=1/);
});

// ---- ONNX export ------------------------------------------------------------------------------------

const PY = '/usr/bin/python3';
const hasOnnx = ((): boolean => {
  try { execFileSync(PY, ['-c', 'import onnx'], { stdio: 'pipe' }); return true; } catch { return false; }
})();

test('export: a CNN with every vision op passes check_model(full_check=True) and round-trips through import', hasOnnx ? {} : { skip: 'no onnx module' }, async () => {
  const rng = new Rng(5);
  const w = (shape: number[], name: string): Tensor => {
    const t = tensor(Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => rng.normal() * 0.5), shape);
    t.value.name = name;
    return t;
  };
  const x = placeholder([2, 2, 8, 8], 'float32', 'x');
  const [w1, b1, s, bb, m, v, w2, wt] = [w([4, 2, 3, 3], 'w1'), w([4], 'b1'), w([4], 'bn_scale'), w([4], 'bn_bias'), w([4], 'bn_mean'),
    tensor(Float32Array.from([1, 2, 0.5, 1.5]), [4]), w([4, 2, 3, 3], 'w2'), w([4, 1, 2, 2], 'wt')];
  v.value.name = 'bn_var';
  const h = x.conv2d(w1, b1, { pads: [1, 1, 1, 1], strides: [2, 1] }).batchNorm(s, bb, m, v).y.relu();
  const [p, idx] = ops.maxPool(h.value, [2, 2], { strides: [2, 2], ceilMode: true });
  const g = T(p!).conv2d(w2, null, { group: 2, autoPad: 'SAME_UPPER' }).avgPool2d([2, 2], { pads: [1, 1, 0, 0] });
  const up = g.convTranspose2d(wt, null, { strides: [2, 2], group: 4 });
  const outs = [up.globalAvgPool().flatten(), T(idx!)];
  const weights = [w1, b1, s, bb, m, v, w2, wt];
  const bytes = toModelProto({ inputs: [x.value], outputs: outs.map((o) => o.value), initializers: weights.map((t) => t.value), outputNames: ['y', 'idx'] });
  const dir = mkdtempSync(join(tmpdir(), 'weft-vision-'));
  try {
    const path = join(dir, 'cnn.onnx');
    writeFileSync(path, bytes);
    execFileSync(PY, ['-c', 'import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)', path], { stdio: 'pipe' });
  } catch (e) {
    assert.fail(`onnx checker: ${(e as { stderr?: Buffer }).stderr?.toString() ?? String(e)}`);
  } finally { rmSync(dir, { recursive: true, force: true }); }

  const data = Float32Array.from({ length: 2 * 2 * 8 * 8 }, () => rng.normal());
  const direct = await runProgram(await compileProgram(outs.map((o) => o.value), [x.value]), 'test', [{ data }]);
  const m2 = fromModelProto(bytes, 'cnn');
  assert.deepEqual(m2.outputs.map((o) => o.shape), [[2, 4], outs[1]!.shape]);
  const again = await runProgram(await compileProgram(m2.outputs, m2.inputs), 'test', [{ data }]);
  const num = (a: TypedArray): number[] => Array.from(a as ArrayLike<number | bigint>, Number);
  assert.deepEqual(num(again[1]!), num(direct[1]!), 'MaxPool indices');
  direct[0]!.forEach((d, i) => assert.ok(Math.abs(Number(d) - Number(again[0]![i])) < 1e-6, `y[${i}]`));
  const ys = Array.from(direct[0]! as Float32Array);
  assert.ok(ys.some((y) => y !== 0), 'the CNN computes something');
});
