/**
 * deploy/quantize.ts and calibrate.ts: int8 post-training quantization of ONNX files. Weights are
 * checked against their formula, outputs against fp32 within the error int8 rounding allows (and
 * never equal to it), the emitted ops and element types by name, onnxruntime runs every result
 * and onnx's checker accepts the standard-ONNX ones.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as w from '../src/index.js';
import { decodeModel, encodeModel } from '../src/ir/onnx/model.js';
import type { OnnxModel, OnnxNode, OnnxTensor } from '../src/ir/onnx/model.js';
import { createInferenceSession, optimizedModel } from '../src/runtime/ort.js';
import type { Named } from '../src/runtime/ort.js';
import { activationParams, quantize, quantizePerChannel } from '../src/deploy/quantize.js';
import { calibrate, entropyThreshold, mnistCalibration } from '../src/deploy/calibrate.js';
import { optimize } from '../src/deploy/optimize.js';
import type { CalibrationBatch } from '../src/deploy/calibrate.js';
import { cnnOnnx, gptOnnx, mlpOnnx, tinyCnn, tinyGpt, uniform } from './helpers/deploy_models.js';
import { CLI } from './helpers/cli.js';
import { checkModel, needsPython } from './helpers/onnx_check.js';

const init = (m: OnnxModel, name: string): OnnxTensor => m.graph.initializers.find((t) => t.name === name) ?? assert.fail(`no initializer '${name}'`);
const opsOf = (m: OnnxModel): string[] => m.graph.nodes.map((n) => n.op);
const count = (ops: readonly string[], op: string): number => ops.filter((o) => o === op).length;

async function run(bytes: Uint8Array, feeds: Readonly<Record<string, Named>>): Promise<Float32Array> {
  const s = await createInferenceSession(bytes, { threads: 1 });
  try {
    const out = await s.run(feeds);
    return out[s.outputNames[0]!]!.data as Float32Array;
  } finally { await s.release(); }
}

/** The test's own rounding (ties to even), independent of the module's. */
const rint = (x: number): number => { const f = Math.floor(x); const d = x - f; return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f; };

/** A one-Linear model (one Gemm with a bias) [batch, K] -> [batch, N], the bias non-zero. */
function linear(K: number, N: number, seed = 2): { bytes: Uint8Array; W: Float32Array; b: Float32Array } {
  const m = new w.Sequential([new w.Linear(K, N)]);
  w.bindParameters(m, { seed });
  const [[, wp], [, bp]] = m.namedParameters() as [[string, w.Parameter], [string, w.Parameter]];
  const b = bp.t.value.data as Float32Array;
  b.set(uniform(N, seed + 7).map((x) => x * 0.1));
  return { bytes: mlpOnnx(m, K), W: wp.t.value.data as Float32Array, b };
}

const feed = (name: string, dims: number[], data: Float32Array): Record<string, Named> => ({ [name]: { dtype: 'float32', dims, data } });

test('per-channel weights: s8, scale = max|column| / 127, q = round(w / scale) ties to even, clamped to +-127', () => {
  const { q, scale } = quantizePerChannel(Float32Array.of(127, 1, 0.5, -2, 1.5, 0, 2.5, 0, -0.5, 0), [5, 2], 1);
  // Column 0 holds 127 (scale 1): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0; column 1's max is 2.
  assert.deepEqual([...scale], [1, Math.fround(2 / 127)]);
  assert.deepEqual([...q], [127, 64, 0, -127, 2, 0, 2, 0, 0, 0]);

  const K = 96, N = 80;
  const { bytes, W } = linear(K, N);
  const { model, report } = quantize(decodeModel(bytes));
  const dq = model.graph.nodes.find((n) => n.op === 'DynamicQuantizeMatMul')!;
  assert.equal(dq.domain, 'com.microsoft');
  const [B, s] = [init(model, dq.inputs[1]!), init(model, dq.inputs[2]!)];
  assert.deepEqual([B.elemType, B.dims, s.elemType, s.dims], [3, [K, N], 1, [N]], 'B s8 [K, N], b_scale float [N]');
  assert.equal(dq.inputs[3], '', 'no b_zero_point: symmetric weights');
  for (let j = 0; j < N; j++) {
    let max = 0;
    for (let k = 0; k < K; k++) max = Math.max(max, Math.abs(W[k * N + j]!));
    const sj = Math.fround(max / 127);
    assert.equal((s.data as Float32Array)[j], sj, `scale of column ${j}`);
    for (let k = 0; k < K; k++) assert.equal((B.data as Int8Array)[k * N + j], Math.max(-127, Math.min(127, rint(W[k * N + j]! / sj))), `q[${k}, ${j}]`);
  }
  assert.deepEqual(report.weightBytes, { float32: 4 * K * N, int8: K * N });
  const reduced = quantize(decodeModel(bytes), { reduceRange: true }).model;
  const Br = init(reduced, reduced.graph.nodes.find((n) => n.op === 'DynamicQuantizeMatMul')!.inputs[1]!).data as Int8Array;
  assert.equal(Math.max(...Br.map(Math.abs)), 63, 'reduceRange: 7-bit weights, max|col| / 63');

  // The GPT's tied head is a Gemm with transB: B is transposed to [d, vocab], one scale per vocabulary column.
  const gpt = decodeModel(gptOnnx(tinyGpt(), 1, 8));
  const head = quantize(gpt).model.graph.nodes.find((n) => n.outputs[0] === 'logits')!;
  const tok = init(gpt, 'tok.w');
  const Bh = init(quantize(gpt).model, head.inputs[1]!);
  assert.deepEqual(Bh.dims, [64, 256]);
  const col = Float32Array.from({ length: 64 }, (_, k) => (tok.data as Float32Array)[7 * 64 + k]!);
  const s7 = Math.fround(col.reduce((a, x) => Math.max(a, Math.abs(x)), 0) / 127);
  assert.deepEqual(Array.from({ length: 64 }, (_, k) => (Bh.data as Int8Array)[k * 256 + 7]), [...col].map((x) => rint(x / s7)));
});

test('dynamic: a Gemm stays within the int8 rounding bound of fp32 everywhere, and is not fp32', async () => {
  // |a'w' - aw| <= |a| s_w / 2 + |w| s_a / 2 + s_a s_w / 4 per term: a and w are each rounded to
  // half a step (activations per tensor over [min(0, min), max(0, max)] / 255, weights max|col| / 127).
  const [M, K, N] = [16, 96, 80];
  const { bytes, W, b } = linear(K, N);
  const x = uniform(M * K, 5).map((v, i) => v * (1 + (i % 7)));
  const ref = await run(bytes, feed('x', [M, K], x));
  for (const format of ['ort', 'onnx'] as const) {
    const q = quantize(decodeModel(bytes), { format }).model;
    const got = await run(encodeModel(q), feed('x', [M, K], x));
    const { scale: sa } = activationParams(Math.min(...x), Math.max(...x));
    const { scale: sw } = quantizePerChannel(W, [K, N], 1);
    let [worst, differ] = [0, 0];
    for (let m = 0; m < M; m++) {
      for (let j = 0; j < N; j++) {
        let [bound, mag] = [0, Math.abs(b[j]!)];
        for (let k = 0; k < K; k++) {
          const [a, wt] = [Math.abs(x[m * K + k]!), Math.abs(W[k * N + j]!)];
          bound += (a * sw[j]!) / 2 + (wt * sa) / 2 + (sa * sw[j]!) / 4;
          mag += a * wt;
        }
        const err = Math.abs(got[m * N + j]! - ref[m * N + j]!);
        assert.ok(err <= bound + 1e-5 * mag, `${format} y[${m}, ${j}]: |error| ${err} exceeds the bound ${bound}`);
        worst = Math.max(worst, err / bound);
        if (got[m * N + j] !== ref[m * N + j]) differ++;
      }
    }
    assert.ok(differ > (M * N) / 2, `${format}: only ${differ} of ${M * N} outputs differ from fp32: not quantized?`);
    assert.ok(worst > 0.01, `${format}: the largest error is ${worst} of the bound: not quantized?`);
  }
});

test('dynamic: a tiny GPT quantizes its 9 weight products; attention products, Conv and small weights stay float with the reason', async () => {
  const bytes = gptOnnx(tinyGpt(), 2, 16);
  const gpt = decodeModel(bytes);
  const ids: Record<string, Named> = { idx: { dtype: 'int64', dims: [2, 16], data: BigInt64Array.from({ length: 32 }, (_, i) => BigInt((i * 37 + 11) % 256)) } };
  const ref = await run(bytes, ids);
  const ort = quantize(gpt);
  const onnx = quantize(gpt, { format: 'onnx' });
  assert.equal(ort.report.quantized.length, 9, 'qkv, proj, fc1, fc2 per block and the head');
  assert.equal(count(opsOf(ort.model), 'DynamicQuantizeMatMul'), 9);
  assert.equal(count(opsOf(ort.model), 'Gemm'), 0);
  assert.deepEqual(['DynamicQuantizeLinear', 'MatMulInteger', 'Cast'].map((op) => count(opsOf(onnx.model), op)), [9, 9, 9]);
  assert.deepEqual(ort.model.opsets.map((o) => o.domain), ['', 'com.microsoft']);
  assert.deepEqual(onnx.model.opsets.map((o) => o.domain), ['']);
  assert.equal(ort.report.skipped.length, 4, 'Q K^T and att V of both blocks');
  for (const s of ort.report.skipped) assert.match(s.reason, /B is an activation/);

  // Per product, rounding noise is about a step / sqrt(12) over a range of ~4 std (max|w| / 127 for
  // weights): ~1% of the product's scale; compounded over 2 blocks' 9 products, a few percent.
  let [se, sr] = [0, 0];
  for (const [format, r] of [['ort', ort], ['onnx', onnx]] as const) {
    const got = await run(encodeModel(r.model), ids);
    [se, sr] = [0, 0];
    for (let i = 0; i < ref.length; i++) { se += (got[i]! - ref[i]!) ** 2; sr += ref[i]! ** 2; }
    const rel = Math.sqrt(se / sr);
    assert.ok(rel < 0.05 && rel > 1e-4, `${format}: relative RMS error of the logits ${rel}`);
  }

  const small = quantize(gpt, { minWeights: 64 * 192 + 1 });
  assert.equal(small.report.quantized.length, 5, 'only fc1, fc2 and the head hold more than 12,288 weights');
  assert.ok(small.report.skipped.some((s) => /under minWeights/.test(s.reason)));
  const cnn = quantize(decodeModel(cnnOnnx(tinyCnn())));
  assert.deepEqual(cnn.report.skipped.map((s) => [s.op, /static mode/.test(s.reason)]), [['Conv', true], ['Conv', true], ['Gemm', false]]);
});

test('format onnx and static QDQ outputs pass onnx.checker', needsPython, async () => {
  checkModel(encodeModel(quantize(decodeModel(gptOnnx(tinyGpt(), 1, 8)), { format: 'onnx' }).model), 'gpt-dynamic-onnx');
  const cnn = decodeModel(cnnOnnx(tinyCnn()));
  const cal = await calibrate(cnn, [feed('x', [4, 1, 28, 28], uniform(4 * 784, 9))]);
  checkModel(encodeModel(quantize(cnn, { mode: 'static', calibration: cal, minWeights: 0 }).model), 'cnn-static-qdq');
});

test('static QDQ: u8 activations, s8 per-channel weights, int32 biases; onnxruntime runs the CNN as QLinearConv and QGemm', async () => {
  const cnn = decodeModel(cnnOnnx(tinyCnn()));
  const cal = await calibrate(cnn, [feed('x', [4, 1, 28, 28], uniform(4 * 784, 9))]);
  const { model, report } = quantize(cnn, { mode: 'static', calibration: cal, minWeights: 0 });
  const ops = opsOf(model);
  assert.equal(count(ops, 'BatchNormalization'), 0, 'folded into the convolutions');
  // x, and the Relu output of each stage and of the hidden Linear: every MaxPool/Flatten between shares its scale.
  assert.equal(report.activations.length, 4);
  assert.equal(count(ops, 'QuantizeLinear'), 4 + 3, '3 more after MaxPool, MaxPool, Flatten, with the same scales');
  const byOutput = new Map(model.graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as [string, OnnxNode])));
  for (const n of model.graph.nodes.filter((x) => x.op === 'Conv' || x.op === 'Gemm')) {
    const [a, wt, b] = n.inputs.map((i) => byOutput.get(i)!);
    assert.ok([a, wt, b].every((d) => d?.op === 'DequantizeLinear'), `${n.op} ${n.outputs[0]} reads three DequantizeLinear`);
    const zp = (d: OnnxNode, k: number): OnnxTensor => init(model, d.inputs[k]!);
    assert.deepEqual([zp(a!, 2).elemType, zp(a!, 2).dims], [2, []], 'activation: u8 zero point, per tensor');
    const axis = wt!.attrs.find((x) => x.name === 'axis')?.value;
    const W = init(model, wt!.inputs[0]!);
    assert.deepEqual([W.elemType, zp(wt!, 2).elemType, zp(wt!, 2).dims, axis], [3, 3, [W.dims[n.op === 'Conv' ? 0 : 1]!], n.op === 'Conv' ? 0 : 1]);
    assert.deepEqual(zp(wt!, 2).data, new Int8Array(zp(wt!, 2).dims[0]!), 'symmetric: zero points 0');
    assert.equal(init(model, b!.inputs[0]!).elemType, 6, 'bias int32');
  }
  const optimized = opsOf(decodeModel(await optimizedModel(encodeModel(model), { threads: 1, disabledOptimizers: [] })));
  assert.equal(count(optimized, 'QLinearConv'), 2, optimized.join(' '));
  assert.equal(count(optimized, 'QGemm'), 2, optimized.join(' '));
  assert.equal(count(optimized, 'Conv') + count(optimized, 'Gemm') + count(optimized, 'Relu'), 0, 'no float product or Relu left');
});

test('static QDQ: MatMul -> Relu -> MatMul runs as QLinearMatMul (the Relu folded into its Q) and MatMulIntegerToFloat', async () => {
  const x = w.placeholder(['batch', 64], 'float32', 'x');
  const [W1, W2] = [w.tensor(uniform(64 * 96, 3), [64, 96]), w.tensor(uniform(96 * 32, 4), [96, 32])];
  const bytes = w.toModelProto({ inputs: [x.value], outputs: [x.matmul(W1).relu().matmul(W2).value], outputNames: ['y'], initializers: [W1.value, W2.value] });
  const model = decodeModel(bytes);
  const batch = feed('x', [8, 64], uniform(512, 5));
  const { model: q, report } = quantize(model, { mode: 'static', calibration: await calibrate(model, [batch]), minWeights: 0 });
  assert.deepEqual(report.quantized.map((r) => r.weight), [[64, 96], [96, 32]]);
  const optimized = opsOf(decodeModel(await optimizedModel(encodeModel(q), { threads: 1, disabledOptimizers: [] })));
  assert.deepEqual(optimized, ['QuantizeLinear', 'QLinearMatMul', 'MatMulIntegerToFloat']);
  const [ref, got] = [await run(bytes, batch), await run(encodeModel(q), batch)];
  const scale = ref.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
  assert.ok(got.every((v, i) => Math.abs(v - ref[i]!) < 0.02 * scale) && got.some((v, i) => v !== ref[i]));
});

test('calibration: with an outlier, minmax spans it, percentile and entropy clip it; point masses do not pull the entropy threshold', async () => {
  const { bytes } = linear(64, 64);
  const model = decodeModel(bytes);
  const batches: CalibrationBatch[] = Array.from({ length: 8 }, (_, k) => feed('x', [32, 64], uniform(32 * 64, 20 + k)));
  (batches[3]!['x']!.data as Float32Array)[100] = 50;
  const r = Object.fromEntries(await Promise.all((['minmax', 'percentile', 'entropy'] as const).map(async (method) =>
    [method, (await calibrate(model, batches, { method, percentile: 99.99 })).tensors['x']!] as const)));
  assert.equal(r.minmax!.hi, 50);
  assert.equal(r.minmax!.lo, r.minmax!.min);
  assert.ok(r.percentile!.hi < 1.1 && r.percentile!.hi > 0.9, `percentile hi ${r.percentile!.hi}: the uniform data's edge`);
  assert.ok(r.minmax!.hi - r.minmax!.lo > r.percentile!.hi - r.percentile!.lo);
  // The smallest window entropy tries is 128 bins of 2048 over [-50, 50]: +-3.1.
  assert.ok(r.entropy!.hi <= r.entropy!.max && r.entropy!.hi >= 1 && r.entropy!.hi < 5, `entropy hi ${r.entropy!.hi}`);
  for (const m of Object.values(r)) assert.ok(m.lo >= m.min && m.hi <= m.max && m.lo < 0 && m.hi > 0);

  // A Relu output of a constant background: zeros and three point masses (7% each) below 0.4,
  // then a tail to 3. int8 rounding moves a point mass whole; the search must not stop at the last one.
  const [B, M] = [2048, 3];
  const h = new Float64Array(B);
  const put = (x: number, c: number): void => { const j = Math.min(B - 1, Math.floor(((x + M) / (2 * M)) * B)); h[j] = h[j]! + c; };
  put(0, 5000); put(0.1, 700); put(0.25, 700); put(0.36, 700);
  for (let i = 0; i < 3000; i++) put(-Math.log(1 - (i + 0.5) / 3000) * 0.6, 1);
  assert.ok(entropyThreshold(h, M, 128) > 2.5, `entropy threshold ${entropyThreshold(h, M, 128)}`);
});

test('static int8 CNN agrees with fp32 on the argmax of >= 95% of 300 MNIST test images', async () => {
  const bytes = cnnOnnx(tinyCnn(3));
  const model = decodeModel(bytes);
  const { test: split } = w.mnist();
  const n = 300;
  const x = new Float32Array(n * 784);
  for (let i = 0; i < n; i++) x.set(split.record(Math.floor((i * split.size) / n))[0] as Float32Array, i * 784);
  const ref = await run(bytes, feed('x', [n, 1, 28, 28], x));
  const argmax = (a: Float32Array, i: number): number => { let b = 0; for (let k = 1; k < 10; k++) if (a[i * 10 + k]! > a[i * 10 + b]!) b = k; return b; };
  for (const method of ['minmax', 'percentile', 'entropy'] as const) {
    const cal = await calibrate(model, mnistCalibration('x', 100, 50), { method });
    assert.deepEqual([cal.batches, cal.samples], [2, 100]);
    const q = quantize(model, { mode: 'static', calibration: cal });
    const got = await run(encodeModel(q.model), feed('x', [n, 1, 28, 28], x));
    let agree = 0;
    for (let i = 0; i < n; i++) if (argmax(got, i) === argmax(ref, i)) agree++;
    assert.ok(agree >= 0.95 * n, `${method}: ${agree} of ${n} agree`);
    assert.notDeepEqual(got, ref);
  }
});

test('calibration data of the wrong shape names the input and both shapes; a missing input names it', async () => {
  const model = decodeModel(cnnOnnx(tinyCnn()));
  await assert.rejects(calibrate(model, [feed('x', [8, 784], new Float32Array(8 * 784))]), /calibration batch 0: input 'x' has dims \[8, 784\]; the model declares \[batch, 1, 28, 28\]/);
  await assert.rejects(calibrate(model, [feed('x', [2, 1, 28, 28], new Float32Array(2 * 784)), feed('x', [2, 1, 32, 32], new Float32Array(2 * 1024))]), /batch 1: input 'x' has dims \[2, 1, 32, 32\]; the model declares \[batch, 1, 28, 28\]/);
  await assert.rejects(calibrate(model, [{}]), /calibration batch 0 has no input 'x' \(the model's inputs: 'x'; the batch has: nothing\)/);
  await assert.rejects(calibrate(model, [feed('image', [2, 1, 28, 28], new Float32Array(2 * 784))]), /'image' is not an input of the model \(its inputs: 'x'\)/);
  await assert.rejects(calibrate(model, [{ x: { dtype: 'int64', dims: [1, 1, 28, 28], data: new BigInt64Array(784) } }]), /input 'x' is int64 .*declares ONNX type 1/);
  await assert.rejects(calibrate(model, []), /no calibration batches/);
  assert.throws(() => quantize(model, { mode: 'static' }), /needs `calibration`/);
  assert.throws(() => quantize(model, { mode: 'static', calibration: { method: 'minmax', batches: 1, samples: 1, tensors: {} } }), /no range for tensor 'x'/);
});

test('unknown ops, other domains and ops not quantized pass through untouched', () => {
  const mlp = new w.Sequential([new w.Linear(64, 96), new w.ReLU(), new w.Linear(96, 64)]);
  w.bindParameters(mlp, { seed: 4 });
  const model = decodeModel(mlpOnnx(mlp, 64));
  const y = model.graph.outputs[0]!.name;
  const custom: OnnxNode = { name: 'frob', op: 'Frobnicate', domain: 'com.example', inputs: [y], outputs: ['z'], attrs: [{ name: 'level', type: 2, value: 3 }], extra: [] };
  model.graph.nodes.push(custom);
  model.graph.outputs = [{ name: 'z', elemType: 1, shape: null }];
  model.opsets.push({ domain: 'com.example', version: 1 });
  const { model: q, report } = quantize(model);
  assert.equal(q.graph.nodes.at(-1), custom, 'the same node object');
  const relu = model.graph.nodes.find((n) => n.op === 'Relu')!;
  assert.ok(q.graph.nodes.includes(relu));
  assert.equal(report.quantized.length, 2);
  assert.deepEqual(q.opsets.map((o) => o.domain), ['', 'com.example', 'com.microsoft']);
  assert.deepEqual(decodeModel(encodeModel(q)).graph.nodes.at(-1), custom);
  assert.equal(model.graph.nodes.filter((n) => n.op === 'Gemm').length, 2, 'the input model is not modified');
});

test('below IR version 4, initializers listed as graph inputs are still weights, and every new one is listed too', () => {
  const { bytes } = linear(64, 64);
  const m = decodeModel(bytes);
  const old: OnnxModel = { ...m, irVersion: 3, graph: { ...m.graph, inputs: [...m.graph.inputs, ...m.graph.initializers.map((t) => ({ name: t.name, elemType: t.elemType, shape: [...t.dims] }))] } };
  const { model, report } = quantize(old);
  assert.equal(report.quantized.length, 1);
  assert.deepEqual(model.graph.inputs.map((i) => i.name).sort(), ['x', ...model.graph.initializers.map((t) => t.name)].sort());
  assert.ok(model.graph.initializers.some((t) => t.elemType === 3));
});

test('weft quantize: dynamic by default, static from --calibrate mnist; usage errors name the flag', { timeout: 30_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-quantize-'));
  try {
    const q = (...args: string[]): ReturnType<typeof spawnSync> => spawnSync(process.execPath, [CLI, 'quantize', ...args], { encoding: 'utf8' });
    writeFileSync(join(dir, 'cnn.onnx'), cnnOnnx(tinyCnn()));
    writeFileSync(join(dir, 'gpt.onnx'), gptOnnx(tinyGpt(), 1, 8));
    const dyn = q(join(dir, 'gpt.onnx'), join(dir, 'gpt.int8.onnx'), '--json');
    assert.equal(dyn.status, 0, String(dyn.stderr));
    const r = JSON.parse(String(dyn.stdout)) as { mode: string; format: string; quantized: unknown[]; skipped: { reason: string }[] };
    assert.deepEqual([r.mode, r.format, r.quantized.length, r.skipped.length], ['dynamic', 'ort', 9, 4]);
    assert.equal(count(opsOf(decodeModel(new Uint8Array(readFileSync(join(dir, 'gpt.int8.onnx'))))), 'DynamicQuantizeMatMul'), 9);
    const st = q(join(dir, 'cnn.onnx'), join(dir, 'cnn.int8.onnx'), '--mode', 'static', '--calibrate', 'mnist', '--samples', '40', '--method', 'percentile', '--min-weights', '0', '--threads', '1');
    assert.equal(st.status, 0, String(st.stderr));
    assert.match(String(st.stdout), /static int8 \(qdq\), 4 product\(s\) quantized, 0 left float/);
    assert.match(String(st.stdout), /calibration: percentile over 40 samples/);
    assert.match(String(q(join(dir, 'cnn.onnx'), join(dir, 'x.onnx'), '--mode', 'static').stderr), /--mode static needs calibration data/);
    assert.match(String(q(join(dir, 'cnn.onnx'), join(dir, 'x.onnx'), '--mode', 'static', '--calibrate', 'brown').stderr), /calibration batch 0: input 'x' is int64 \(ONNX type 7\); the model declares ONNX type 1/);
    assert.match(String(q(join(dir, 'cnn.onnx'), join(dir, 'x.onnx'), '--method', 'entropy').stderr), /apply to --mode static/);
    const usage = q(join(dir, 'cnn.onnx'));
    assert.equal(usage.status, 1);
    assert.match(String(usage.stderr), /weft: weft quantize takes an input and an output ONNX file, got 1 argument\(s\)\n[^]*weft quantize <in.onnx> <out.onnx>/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test("onnxruntime's fused products (weft optimize's FusedConv / FusedGemm) stay float, and the reason says to quantize before fusing", async () => {
  const mlp = new w.Sequential([new w.Linear(64, 96), new w.ReLU(), new w.Linear(96, 64)]);
  w.bindParameters(mlp, { seed: 4 });
  const { model: fused } = await optimize(decodeModel(mlpOnnx(mlp, 64)), { ortFusions: true });
  assert.ok(fused.graph.nodes.some((n) => n.op === 'FusedGemm'), 'the optimizer fused Gemm + Relu');
  const { report } = quantize(fused);
  const r = report.skipped.find((s) => s.op === 'FusedGemm');
  assert.match(r?.reason ?? '', /quantize the model before fusing it \(weft optimize --no-ort-fusions\)/);
  assert.equal(report.quantized.length, 1, 'the unfused second Gemm is still quantized');
});
