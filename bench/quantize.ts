/**
 * int8 post-training quantization measured (`weft quantize`, docs/deploy-quantize.md):
 *   (a) static int8 CNN accuracy against fp32 on the MNIST test split: the mnist-cnn recipe trained
 *       for 300 steps, calibrated on 500 training images with each method;
 *   (b) dynamic int8 GPT validation loss against fp32 (and static QDQ, percentile, beside it): the
 *       brown-small recipe (300 steps), 64 fixed validation windows of 128 tokens;
 *   (c) inference throughput of the medium preset GPT (ctx 256), fp32 against dynamic int8, batch 1
 *       and 8, 1 and 2 threads (deploy/bench_infer.ts: alternating blocks);
 *   (d) where int8 starts to pay: one [256, K] x [K, K] product, fp32 against DynamicQuantizeMatMul.
 * Prints one JSON object with the CPU's ISA and writes it to bench/results/quantize.json.
 *
 *   npm run build && node dist/bench/quantize.js [--only cnn_static,gpt_dynamic,throughput,small_products]
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as w from '../src/index.js';
import { decodeModel, encodeModel } from '../src/ir/onnx/model.js';
import type { OnnxModel } from '../src/ir/onnx/model.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import type { Named } from '../src/runtime/ort.js';
import { benchInfer } from '../src/deploy/bench_infer.js';
import { brownCalibration, calibrate, CALIBRATION_METHODS, mnistCalibration } from '../src/deploy/calibrate.js';
import { quantize } from '../src/deploy/quantize.js';
import { cnnOnnx, gptOnnx } from '../test/helpers/deploy_models.js';

const recipe = (name: string): string => fileURLToPath(new URL(`../../recipes/${name}`, import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'weft-bench-quantize-'));
const THREADS = 2;

async function train(file: string, sets: string[]): Promise<{ task: w.Task; seconds: number; evals: w.TrainResult['evals'] }> {
  const cfg = w.loadConfig(recipe(file), [`out=${join(dir, file)}`, ...sets]);
  const task = w.taskFromConfig(cfg);
  const t0 = performance.now();
  const r = await new w.Trainer(cfg, { task }).run({ out: process.stderr });
  return { task, seconds: (performance.now() - t0) / 1000, evals: r.evals };
}

async function outputsOf(bytes: Uint8Array, batches: readonly Record<string, Named>[]): Promise<Float32Array[]> {
  const s = await createInferenceSession(bytes, { threads: THREADS });
  try {
    const out: Float32Array[] = [];
    for (const b of batches) out.push((await s.run(b))[s.outputNames[0]!]!.data as Float32Array);
    return out;
  } finally { await s.release(); }
}

async function cnnAccuracy(): Promise<Record<string, unknown>> {
  const { task, seconds } = await train('mnist-cnn.json', ['train.steps=300', 'train.warmup=30', 'eval.every=300', 'checkpoint.every=300', 'log.every=100', `train.threads=${THREADS}`]);
  const fp32 = decodeModel(cnnOnnx(task.model as w.Sequential));
  const { test } = w.mnist();
  const batches: Record<string, Named>[] = [];
  const labels: number[] = [];
  for (let s = 0; s < test.size; s += 500) {
    const n = Math.min(500, test.size - s);
    const x = new Float32Array(n * 784);
    for (let i = 0; i < n; i++) { const [img, y] = test.record(s + i); x.set(img as Float32Array, i * 784); labels.push((y as Int32Array)[0]!); }
    batches.push({ x: { dtype: 'float32', dims: [n, 1, 28, 28], data: x } });
  }
  const accuracy = async (m: OnnxModel): Promise<number> => {
    const outs = await outputsOf(encodeModel(m), batches);
    let [right, k] = [0, 0];
    for (const o of outs) {
      for (let i = 0; i < o.length / 10; i++, k++) {
        let b = 0;
        for (let c = 1; c < 10; c++) if (o[i * 10 + c]! > o[i * 10 + b]!) b = c;
        if (b === labels[k]) right++;
      }
    }
    return right / labels.length;
  };
  const base = await accuracy(fp32);
  const methods: Record<string, unknown> = {};
  for (const method of CALIBRATION_METHODS) {
    const t0 = performance.now();
    const cal = await calibrate(fp32, mnistCalibration('x', 500, 50), { method, threads: THREADS });
    const calS = (performance.now() - t0) / 1000;
    const { model, report } = quantize(fp32, { mode: 'static', calibration: cal });
    const acc = await accuracy(model);
    const ranges = Object.fromEntries(Object.entries(cal.tensors).map(([k, r]) => [k, `[${r.min.toFixed(3)}, ${r.max.toFixed(3)}] -> [${r.lo.toFixed(3)}, ${r.hi.toFixed(3)}]`]));
    methods[method] = { accuracy: acc, delta_points: +((acc - base) * 100).toFixed(2), calibration_s: +calS.toFixed(2), ranges, quantized: report.quantized.map((q) => `${q.op} [${q.weight.join('x')}]`), float: report.skipped.map((s) => `${s.op}: ${s.reason}`) };
  }
  return { train_steps: 300, train_s: +seconds.toFixed(1), test_images: labels.length, calibration_images: 500, fp32_accuracy: base, int8_static: methods };
}

/** Mean cross-entropy of next-token logits [B*T, V] against targets. */
function crossEntropy(logits: Float32Array, targets: ArrayLike<number>, V: number): number {
  let sum = 0;
  for (let r = 0; r < targets.length; r++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[r * V + v]!);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[r * V + v]! - max);
    sum += Math.log(z) + max - logits[r * V + targets[r]!]!;
  }
  return sum / targets.length;
}

async function gptLoss(): Promise<Record<string, unknown>> {
  const steps = 300;
  const { task, seconds, evals } = await train('brown-small.json', [`train.steps=${steps}`, `eval.every=${steps}`, `checkpoint.every=${steps}`, 'sample.tokens=0', `train.threads=${THREADS}`]);
  const [B, T] = [8, 128];
  const fp32 = decodeModel(gptOnnx(task.model as w.GPT, B, T));
  const val = task.eval!.data;
  const windows = w.evalWindows(val, 64);
  const batches: Record<string, Named>[] = [];
  const targets: number[][] = [];
  for (let s = 0; s < windows.length; s += B) {
    const ids = new BigInt64Array(B * T);
    const tg: number[] = [];
    windows.slice(s, s + B).forEach((i, k) => {
      const [x, y] = val.record(i);
      for (let j = 0; j < T; j++) { ids[k * T + j] = BigInt(x![j]!); tg.push(y![j]!); }
    });
    batches.push({ idx: { dtype: 'int64', dims: [B, T], data: ids } });
    targets.push(tg);
  }
  const loss = async (m: OnnxModel): Promise<number> => {
    const outs = await outputsOf(encodeModel(m), batches);
    return outs.reduce((a, o, i) => a + crossEntropy(o, targets[i]!, 256), 0) / outs.length;
  };
  const base = await loss(fp32);
  const rows: Record<string, unknown> = {};
  for (const format of ['ort', 'onnx'] as const) {
    const { model, report } = quantize(fp32, { format });
    const l = await loss(model);
    rows[`dynamic_${format}`] = { val_loss: +l.toFixed(5), relative: +((l - base) / base).toFixed(5), quantized: report.quantized.length, float: report.skipped.length };
  }
  // Static QDQ beside it, calibrated on 64 training windows.
  const cal = await calibrate(fp32, brownCalibration('idx', 64, T, B), { method: 'percentile', threads: THREADS });
  const st = quantize(fp32, { mode: 'static', calibration: cal });
  const ls = await loss(st.model);
  rows['static_percentile'] = { val_loss: +ls.toFixed(5), relative: +((ls - base) / base).toFixed(5), quantized: st.report.quantized.length, float: st.report.skipped.length };
  return { train_steps: steps, train_s: +seconds.toFixed(1), trainer_val_loss: evals.at(-1)?.metrics['val_loss'], windows: windows.length, tokens: windows.length * T, fp32_val_loss: +base.toFixed(5), int8: rows };
}

async function throughput(): Promise<Record<string, unknown>> {
  const gpt = new w.GPT(w.GPT_PRESETS.medium);
  w.bindParameters(gpt, { seed: 1 });
  const out: Record<string, unknown>[] = [];
  for (const B of [1, 8]) {
    const fp32 = gptOnnx(gpt, B, 256);
    const paths = { fp32: join(dir, `medium_b${B}.onnx`), int8: join(dir, `medium_b${B}.int8.onnx`) };
    writeFileSync(paths.fp32, fp32);
    writeFileSync(paths.int8, encodeModel(quantize(decodeModel(fp32)).model));
    const r = await benchInfer({ models: paths, batches: [B], threads: [1, 2], runs: B === 1 ? 10 : 4, blocks: 3, warmup: 2 });
    for (const f of r.results) out.push({ batch: B, model: f.model, threads: f.threads, p50_ms: f.p50_ms, tokens_per_s: Math.round((B * 256 * 1000) / f.p50_ms), speedup: f.speedup });
  }
  return { preset: 'medium', ctx: 256, results: out };
}

async function crossover(): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const K of [32, 64, 128, 256, 512]) {
    const x = w.placeholder([256, K], 'float32', 'x');
    const wt = w.randn([K, K], new w.Rng(K), 0.05);
    const bytes = w.toModelProto({ inputs: [x.value], outputs: [x.matmul(wt).value], outputNames: ['y'], initializers: [wt.value] });
    const paths = { fp32: join(dir, `mm${K}.onnx`), int8: join(dir, `mm${K}.int8.onnx`) };
    writeFileSync(paths.fp32, bytes);
    writeFileSync(paths.int8, encodeModel(quantize(decodeModel(bytes), { minWeights: 0 }).model));
    const r = await benchInfer({ models: paths, batches: [256], threads: [1], runs: 200, blocks: 3, warmup: 20 });
    rows.push({ M: 256, K, N: K, fp32_us: +(r.results[0]!.p50_ms * 1000).toFixed(1), int8_us: +(r.results[1]!.p50_ms * 1000).toFixed(1), speedup: r.results[1]!.speedup });
  }
  return rows;
}

const SECTIONS = { cnn_static: cnnAccuracy, gpt_dynamic: gptLoss, throughput, small_products: crossover } as const;

async function main(): Promise<void> {
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1]!.split(',') : Object.keys(SECTIONS);
  for (const k of only) if (!(k in SECTIONS)) throw new Error(`--only: unknown section '${k}' (sections: ${Object.keys(SECTIONS).join(', ')})`);
  const cpu = cpuInfo();
  const file = fileURLToPath(new URL('../../bench/results/quantize.json', import.meta.url));
  // Sections run separately merge into the results file; each records the load it ran under (a shared machine).
  const result: Record<string, unknown> = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown> : {};
  Object.assign(result, { bench: 'quantize', machine: { model: cpu.model, isa: cpu.isa, cores: cpu.cores, flags: cpu.flags }, onnxruntime: '1.30.0', threads: THREADS });
  try {
    for (const k of only) {
      const t0 = performance.now();
      const load = loadavg()[0]!;
      const r = await SECTIONS[k as keyof typeof SECTIONS]();
      result[k] = { ...(Array.isArray(r) ? { rows: r } : r), seconds: +((performance.now() - t0) / 1000).toFixed(1), loadavg_1min_before: +load.toFixed(2), measured: new Date().toISOString() };
      process.stderr.write(`${k}: ${JSON.stringify(result[k])}\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const json = JSON.stringify(result, null, 1);
  writeFileSync(file, `${json}\n`);
  process.stdout.write(`${json}\n`);
}

await main();
