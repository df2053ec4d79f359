/**
 * Quantization-aware training (ir/ops/quant.ts, ir/qat.ts, deploy/qat.ts): weft.FakeQuantize's
 * forward and straight-through gradient against a JS reference, the rewrite's sites on a CNN and
 * an MLP, QAT steps, and the QDQ export as onnxruntime runs it (the checker; equal to weft's eval
 * forward of the QAT graph when run unfused; int8 kernels and close results when fused).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdamW, bindParameters, convNet, FlatBuffer, grad, gradStep, init, Linear, Module, ops, placeholder, ReLU, realize, Rng, Sequential, setThreads, Tensor, tensor, toModelProto } from '../src/index.js';
import type { DType, Parameter, Value } from '../src/index.js';
import { topoNodes } from '../src/ir/graph.js';
import { qat, roundHalfEven } from '../src/ir/qat.js';
import { QRANGE } from '../src/ir/ops/quant.js';
import type { QuantDType } from '../src/ir/ops/quant.js';
import { calibrateRanges, exportQdq, qatForward } from '../src/deploy/qat.js';
import type { QatModel } from '../src/deploy/qat.js';
import { decodeModel } from '../src/ir/onnx/model.js';
import { createInferenceSession, optimizedModel } from '../src/runtime/ort.js';
import { checkModel, needsPython } from './helpers/onnx_check.js';
import { checkGrad, uniform } from './helpers/gradcheck.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

setThreads(1);

const T = (v: Value): Tensor => new Tensor(v);
const names = (m: Module): Map<Value, string> => new Map(m.namedParameters().map(([n, p]) => [p.t.value, n]));

/** The JS reference: q = clamp(round_half_even(x / s) + zp), y = (q - zp) s; the gradient passes where the unclamped q is in range. */
function reference(x: readonly number[], shape: readonly number[], s: readonly number[], zp: readonly number[], axis: number, dtype: QuantDType, f32: boolean): { y: number[]; pass: boolean[] } {
  const [qmin, qmax] = QRANGE[dtype];
  const r = f32 ? Math.fround : (v: number): number => v;
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const y: number[] = [];
  const pass: boolean[] = [];
  x.forEach((v, i) => {
    const c = s.length === 1 ? 0 : Math.floor(i / inner) % shape[axis]!;
    const [xv, sv] = [r(v), r(s[c]!)];
    const u = roundHalfEven(r(xv / sv)) + zp[c]!;
    y.push(r((Math.min(qmax, Math.max(qmin, u)) - zp[c]!) * sv));
    pass.push(u >= qmin && u <= qmax);
  });
  return { y, pass };
}

async function fakeQuantCase(x: number[], shape: number[], s: number[], zp: number[], axis: number, dtype: QuantDType, dt: DType): Promise<void> {
  const perAxis = s.length > 1;
  const xt = tensor(x, shape, dt);
  const [st, zt] = [tensor(s, perAxis ? [s.length] : [], dt), tensor(zp, perAxis ? [zp.length] : [], dt)];
  const y = T(ops.apply1('weft.FakeQuantize', [xt.value, st.value, zt.value], perAxis ? { dtype, axis } : { dtype }));
  const R = new Rng(5);
  const w = x.map(() => 1 + R.uniform());
  const [dx] = grad(y.mul(tensor(w, shape, dt)).sum(), [xt]);
  await realize(y, dx!);
  const ref = reference(x, shape, s, zp, axis, dtype, dt === 'float32');
  const [ys, dxs] = [Array.from(await y.data() as Float32Array), Array.from(await dx!.data() as Float32Array)];
  const what = `${dtype} ${dt}${perAxis ? ` axis ${axis}` : ''}`;
  ys.forEach((v, i) => assert.equal(v, ref.y[i], `${what}: y[${i}] for x = ${x[i]}`));
  dxs.forEach((v, i) => assert.equal(v, ref.pass[i] ? (dt === 'float32' ? Math.fround(w[i]!) : w[i]) : 0, `${what}: dx[${i}] for x = ${x[i]}`));
}

test('FakeQuantize: forward is clamp(round half to even (x / s) + zp), gradient passes dy exactly inside the range and 0 outside', async () => {
  // s = 0.25, zp = 3 (u8): x / s = -3.5 rounds to -4 (q = -1, outside), 2.5 to 2, 252.5 to 252,
  // 253.5 to 254 (q = 257, outside); the rest spread over both sides.
  const rng = new Rng(1);
  const x = [-1, -0.875, -0.75, -0.625, 0.3125, 0.375, 0.625, 63, 63.125, 63.375, 100, ...Array.from({ length: 29 }, () => rng.normal() * 20)];
  for (const dt of ['float32', 'float64'] as const) {
    await fakeQuantCase(x, [4, 10], [0.25], [3], 1, 'uint8', dt);
    await fakeQuantCase(x, [4, 10], [0.1], [-5], 1, 'int8', dt);
    await fakeQuantCase(x.slice(0, 24), [2, 3, 4], [0.5, 0.1, 2], [0, 0, 0], 1, 'int8', dt);
    await fakeQuantCase(x.slice(0, 24), [2, 3, 4], [0.5, 0.1, 2], [0, 0, 0], 1, 'int32', dt);
  }
  // The inside / outside split of the u8 case is both ways, not all of one kind.
  const pass = reference(x, [4, 10], [0.25], [3], 1, 'uint8', true).pass;
  assert.ok(pass.filter(Boolean).length >= 5 && pass.filter((p) => !p).length >= 5, `${pass.filter(Boolean).length} of ${pass.length} inside`);
});

test('gradient: Clip passes dy between its bounds (float64 finite differences)', async () => {
  // Bounds +-0.7 on uniform [-1.5, 1.5): about half the elements clipped, none within h of a bound.
  const clip = (x: Tensor): Tensor => T(ops.apply1('Clip', [x.value, ops.scalar(-0.7, 'float64'), ops.scalar(0.7, 'float64')]));
  await checkGrad('Clip [-0.7, 0.7]', [uniform([4, 6], -1.5, 1.5)], clip);
});

/** Counts in the QAT-rewritten forward: fake quantizers by dtype, and products reading a fake-quantized weight. */
function qatCounts(model: Module & { forward(x: Tensor): Tensor }, input: readonly (number | string)[]): { sites: number; fq: Record<string, number>; quantizedProducts: number; products: number } {
  const y = model.forward(placeholder(input, 'float32', 'x'));
  const r = qat([y.value], { params: names(model) });
  const nodes = topoNodes(r.outputs);
  const fq: Record<string, number> = {};
  for (const n of nodes) if (n.op === 'weft.FakeQuantize') fq[n.attrs['dtype'] as string] = (fq[n.attrs['dtype'] as string] ?? 0) + 1;
  const products = nodes.filter((n) => ['Conv', 'MatMul', 'Gemm'].includes(n.op));
  const fqIn = (v: Value | null | undefined): boolean => v?.node?.op === 'weft.FakeQuantize';
  return { sites: r.sites.length, fq, quantizedProducts: products.filter((n) => fqIn(n.inputs[0]) && fqIn(n.inputs[1])).length, products: products.length };
}

test('the QAT rewrite fake-quantizes exactly the parameter products of a CNN: weights s8, inputs u8, biases int32', () => {
  const cnn = convNet({ input: [1, 8, 8], classes: 3, channels: [4, 8], hidden: 16, batchNorm: false, dropout: 0 });
  bindParameters(cnn, { seed: 1 });
  assert.deepEqual(qatCounts(cnn, ['batch', 1, 8, 8]), { sites: 4, fq: { uint8: 4, int8: 4, int32: 4 }, quantizedProducts: 4, products: 4 });
  // With BatchNorm the convolutions have no bias: only the two Linear layers' are quantized.
  const bn = convNet({ input: [1, 8, 8], classes: 3, channels: [4, 8], hidden: 16, batchNorm: true, dropout: 0 });
  bindParameters(bn, { seed: 1 });
  bn.eval();
  assert.deepEqual(qatCounts(bn, [2, 1, 8, 8]), { sites: 4, fq: { uint8: 4, int8: 4, int32: 2 }, quantizedProducts: 4, products: 4 });
});

/** Linear -> ReLU -> MatMul by a parameter, then two products of activations alone (attention-like). */
class ProductMix extends Module {
  readonly l1 = this.child('l1', new Linear(6, 8));
  readonly w: Parameter = this.param('w', [8, 4], init.normal(0.3));
  forward(x: Tensor): Tensor {
    const z = this.l1.forward(x).relu().matmul(this.w.t);
    return z.matmul(z.transpose([1, 0])).matmul(z);
  }
}

test('the QAT rewrite leaves products of activations alone (an MLP with a parameter MatMul and two activation MatMuls)', () => {
  const m = new ProductMix();
  bindParameters(m, { seed: 2 });
  assert.deepEqual(qatCounts(m, [5, 6]), { sites: 2, fq: { uint8: 2, int8: 2, int32: 1 }, quantizedProducts: 2, products: 4 });
});

const mlp = (seed: number): Sequential => {
  const m = new Sequential([new Linear(16, 32), new ReLU(), new Linear(32, 4)]);
  bindParameters(m, { seed });
  return m;
};

/** 64 points in 16 dims, labelled by the argmax of a fixed random projection to 4 classes. */
function problem(seed: number): { x: Float32Array; y: BigInt64Array } {
  const rng = new Rng(seed);
  const x = Float32Array.from({ length: 64 * 16 }, () => rng.normal());
  const P = Array.from({ length: 16 * 4 }, () => rng.normal());
  const y = new BigInt64Array(64);
  for (let i = 0; i < 64; i++) {
    const s = [0, 1, 2, 3].map((k) => x.slice(i * 16, i * 16 + 16).reduce((a, v, j) => a + v * P[j * 4 + k]!, 0));
    y[i] = BigInt(s.indexOf(Math.max(...s)));
  }
  return { x, y };
}

test('QAT steps: the loss falls, and each weight gradient is the straight-through one (the gradient at the fake-quantized weight)', async () => {
  const { x, y } = problem(3);
  const m = mlp(4);
  const bound = bindParameters(m, { seed: 4 });
  const grads = FlatBuffer.zeros(bound.flat.layout, 'grads');
  const step = gradStep(bound, grads, (xs, ys) => m.forward(xs).crossEntropy(ys), 'qat_mlp', { qat: {} });
  const opt = new AdamW(bound.flat, { lr: 1e-2, weightDecay: 0 });
  const feeds = [{ data: x, shape: [64, 16], dtype: 'float32' as const }, { data: y, shape: [64], dtype: 'int64' as const }];
  const losses: number[] = [];
  for (let i = 0; i < 30; i++) { losses.push(await step(feeds)); await opt.step(grads); }
  assert.ok(losses.at(-1)! < 0.5 * losses[0]!, `loss ${losses[0]} -> ${losses.at(-1)}`);

  // Straight-through: with absmax scales every weight is representable, so dL/dw = dL/dw_hat.
  const xt = tensor(x, [64, 16]);
  const yt = tensor(y, [64], 'int64');
  const l = m.forward(xt).crossEntropy(yt);
  const r = qat([l.value], { params: names(m) });
  const ws = r.sites.map((s) => s.weight);
  const what = topoNodes(r.outputs).filter((n) => n.op === 'Gemm').map((n) => n.inputs[1]!);
  assert.equal(what.length, 2);
  const gs = grad(T(r.outputs[0]!), [...ws, ...what].map(T));
  const gFloat = grad(l, ws.map(T));
  await realize(...gs, ...gFloat);
  for (let k = 0; k < 2; k++) {
    const [gw, gh, gf] = [await gs[k]!.data(), await gs[k + 2]!.data(), await gFloat[k]!.data()] as Float32Array[];
    assert.deepEqual(Array.from(gw!), Array.from(gh!), `site ${r.sites[k]!.name}: dL/dw equals dL/dw_hat`);
    const diff = Math.max(...gw!.map((v, i) => Math.abs(v - gf![i]!)));
    assert.ok(diff > 1e-6, `site ${r.sites[k]!.name}: the QAT gradient differs from the float model's (max diff ${diff})`);
  }
});

test('QAT with half precision is refused, naming both', () => {
  const m = mlp(1);
  const bound = bindParameters(m, { seed: 1 });
  const step = gradStep(bound, FlatBuffer.zeros(bound.flat.layout, 'grads'), (xs, ys) => m.forward(xs).crossEntropy(ys), 'qat_bf16', { qat: {}, precision: 'bf16' });
  assert.throws(() => step.trace({ shape: [2, 16], dtype: 'float32' }, { shape: [2], dtype: 'int64' }), /qat with precision bf16/);
});

const randomFeeds = (n: number, shape: number[], seed: number): { data: Float32Array; shape: number[]; dtype: 'float32' }[] => {
  const rng = new Rng(seed);
  const size = shape.reduce((p, d) => p * d, 1);
  return Array.from({ length: n }, () => ({ data: Float32Array.from({ length: size }, () => rng.normal()), shape, dtype: 'float32' as const }));
};

async function ortRun(model: Uint8Array, feed: { data: Float32Array; shape: number[] }, optimization: 'disabled' | 'all'): Promise<Float32Array> {
  const s = await createInferenceSession(model, { threads: 1, optimization });
  const out = await s.run({ x: { dtype: 'float32', dims: feed.shape, data: feed.data } });
  await s.release();
  return out['y']!.data as Float32Array;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

test('QDQ export: passes the checker, equals weft\'s QAT eval forward unfused, differs from the float model, and onnxruntime fuses it to int8 kernels', needsPython, async () => {
  const cnn = convNet({ input: [1, 12, 12], classes: 5, channels: [4, 8], hidden: 16, batchNorm: false, dropout: 0 }) as unknown as QatModel;
  bindParameters(cnn, { seed: 3 });
  const shape = [16, 1, 12, 12];
  const ranges = await calibrateRanges(cnn, randomFeeds(3, shape, 7));
  assert.deepEqual(Object.keys(ranges), ['0.w', '3.w', '7.w', '9.w']);
  assert.throws(() => exportQdq(cnn, { input: ['batch', 1, 12, 12], ranges: { '0.w': [0, 1] } }), /no range for site\(s\) 3\.w, 7\.w, 9\.w/);
  const onnx = exportQdq(cnn, { input: ['batch', 1, 12, 12], ranges });
  checkModel(onnx, 'qat_cnn');

  const [feed] = randomFeeds(1, shape, 8);
  const [weft] = await qatForward(cnn, { ranges })(feed!) as Float32Array[];
  const unfused = await ortRun(onnx, feed!, 'disabled');
  const scale = Math.max(...weft!.map(Math.abs));
  assert.ok(maxDiff(unfused, weft!) <= 1e-5 * Math.max(1, scale), `unfused onnxruntime vs weft: max diff ${maxDiff(unfused, weft!)}`);

  const float = await ortRun(exportFloat(cnn, ['batch', 1, 12, 12]), feed!, 'all');
  assert.ok(maxDiff(float, weft!) > 1e-3 * scale, `the quantized model differs from the float one (max diff ${maxDiff(float, weft!)})`);

  // Really int8: s8 weights, at most 255 distinct values per output channel (symmetric: -128 unused).
  const g = decodeModel(onnx).graph;
  const int8 = g.initializers.filter((t) => t.elemType === 3 && t.dims.length >= 2);
  assert.equal(int8.length, 4);
  for (const t of int8) {
    const axis = t.dims.length === 4 ? 0 : 1;
    const C = t.dims[axis]!;
    const inner = t.dims.slice(axis + 1).reduce((p, d) => p * d, 1);
    const per = Array.from({ length: C }, () => new Set<number>());
    (t.data as Int8Array).forEach((v, i) => per[Math.floor(i / inner) % C]!.add(v));
    assert.ok(per.every((s) => s.size <= 255 && !s.has(-128)), `${t.name}: distinct values per channel ${per.map((s) => s.size).join(', ')}`);
  }

  // Fused, onnxruntime computes in integers from the first QuantizeLinear on: QLinearConv for the
  // convolutions, QGemm for the Linears, the pools on u8; nothing is dequantized.
  const fusedOps = decodeModel(await optimizedModel(onnx, { threads: 1, disabledOptimizers: [] })).graph.nodes.map((n) => n.op);
  assert.equal(fusedOps.filter((op) => op === 'QLinearConv').length, 2, fusedOps.join(' '));
  assert.equal(fusedOps.filter((op) => op === 'QGemm').length, 2, fusedOps.join(' '));
  assert.ok(!fusedOps.some((op) => ['Conv', 'Gemm', 'MatMul', 'MaxPool', 'DequantizeLinear'].includes(op)), fusedOps.join(' '));
  const fused = await ortRun(onnx, feed!, 'all');
  assert.ok(maxDiff(fused, weft!) <= 0.05 * scale, `fused onnxruntime vs weft: max diff ${maxDiff(fused, weft!)} (scale ${scale})`);
});

/** The float eval forward as ONNX, parameters as initializers. */
function exportFloat(model: QatModel, input: readonly (number | string)[]): Uint8Array {
  model.eval();
  const x = placeholder(input, 'float32', 'x');
  const y = model.forward(x);
  model.train();
  return toModelProto({ inputs: [x.value], outputs: [y.value], initializers: model.namedParameters().map(([, p]) => p.t.value), outputNames: ['y'] });
}

test('weft train with train.qat: the step computes on fake-quantized products (first loss within 2% of fp32, not equal), trains, and refuses half precision naming train.qat', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-qat-train-'));
  const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const config = (name: string, train: Record<string, unknown>): string => {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, JSON.stringify({
      out: join(dir, name), model: { kind: 'cnn', channels: [4, 8], hidden: 16, batchNorm: false, dropout: 0 },
      data: { images: 'mnist', cropPadding: 0 },
      train: { steps: 6, batch: 16, lr: 3e-3, warmup: 0, schedule: 'constant', weightDecay: 0, clip: 1, threads: 1, ...train },
      eval: { every: 6, batch: 500 }, checkpoint: { every: 6 },
    }));
    return path;
  };
  const losses = (name: string): number[] => readFileSync(join(dir, name, 'metrics.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as { loss?: number }).filter((r) => r.loss !== undefined).map((r) => r.loss!);
  try {
    execFileSync(process.execPath, [CLI, 'train', config('fp32', {})], { stdio: 'pipe' });
    execFileSync(process.execPath, [CLI, 'train', config('qat', { qat: true })], { stdio: 'pipe' });
    const [f, q] = [losses('fp32'), losses('qat')];
    assert.equal(q.length, f.length);
    assert.ok(q.every(Number.isFinite));
    assert.notEqual(q[0], f[0], 'the QAT step is not the float step');
    assert.ok(Math.abs(q[0]! - f[0]!) < 0.02 * f[0]!, `first loss ${q[0]} against fp32 ${f[0]}`);
    assert.ok(q.at(-1)! < q[0]!, `QAT trains: ${q.join(', ')}`);
    const bad = spawnSync(process.execPath, [CLI, 'train', config('half', { qat: true, precision: 'bf16' })], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /train\.qat/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
