/**
 * Calibration for static int8 quantization: the float model runs in onnxruntime over sample
 * batches with every tensor static quantization will quantize (quantize.ts `calibrationTargets`)
 * exposed as an extra graph output, and each tensor's range is chosen from what it held:
 *
 * - `minmax`: [min, max] over every batch.
 * - `percentile`: the histogram of |x| over [0, max|x|] (`bins` bins); the range is [min, max]
 *   clipped to +-t, t the upper edge of the bin where the cumulative count reaches `percentile`%
 *   (default 99.999, onnxruntime's).
 * - `entropy`: TensorRT's KL-divergence search (Migacz, "8-bit Inference with TensorRT", 2017) as
 *   onnxruntime's calibrate.py lays it out: a histogram of x over [-M, M] (M = max|x|, `bins` =
 *   2048); for each symmetric window +-t of at least `quantizedBins` (128) bins, P is the window
 *   with the counts outside added to its end bins, Q the window merged into 128 groups, each
 *   spread evenly over P's non-empty bins (TensorRT's Q); t minimizes KL(P || Q), both smoothed
 *   as calibrate.py smooths (empty bins get 1e-4 counts, taken from the others). The range is
 *   [min, max] clipped to +-t. Point masses are capped first (`flattenSpikes`): see there.
 *
 * Histogram methods read the batches twice (ranges first, then histograms over fixed edges), so
 * the batches are kept; they are the model's inputs, small beside the activations.
 */
import { ONNX_CODE } from '../ir/dtype.js';
import type { TypedArray } from '../ir/dtype.js';
import type { OnnxModel, OnnxValueInfo } from '../ir/onnx/model.js';
import { encodeModel } from '../ir/onnx/model.js';
import type { Named } from '../runtime/ort.js';
import { createInferenceSession } from '../runtime/ort.js';
import { MNIST_SHAPE, mnist } from '../data/mnist.js';
import { brownSplit } from '../data/brown.js';
import { decodeSafetensors, weftDType } from '../train/safetensors.js';
import { calibrationTargets } from './quantize.js';

export type CalibrationMethod = 'minmax' | 'percentile' | 'entropy';
export const CALIBRATION_METHODS: readonly CalibrationMethod[] = ['minmax', 'percentile', 'entropy'];

/** One batch: a tensor per model input, by name. */
export type CalibrationBatch = Readonly<Record<string, Named>>;

export interface CalibrationOptions {
  /** Default 'minmax'. */
  method?: CalibrationMethod;
  /** `percentile`: the share of |x| kept inside the range, in percent. Default 99.999. */
  percentile?: number;
  /** Histogram bins (`percentile`, `entropy`). Default 2048. */
  bins?: number;
  /** `entropy`: the quantized bins of the KL search (128: int8's positive levels). */
  quantizedBins?: number;
  /** onnxruntime threads. Default 1. */
  threads?: number;
}

/** A tensor's measured extremes and the range chosen for it. */
export interface TensorRange { min: number; max: number; lo: number; hi: number }

export interface CalibrationResult {
  method: CalibrationMethod;
  batches: number;
  /** Rows of the batches' first input, summed. */
  samples: number;
  /** Range per tensor name. */
  tensors: Record<string, TensorRange>;
}

const fmtDims = (d: readonly (number | string | null)[]): string => `[${d.map((x) => (x === null ? '?' : String(x))).join(', ')}]`;

/** The model inputs a batch must feed: graph inputs that are not initializers. */
export function feedInputs(model: OnnxModel): OnnxValueInfo[] {
  const inits = new Set(model.graph.initializers.map((t) => t.name));
  return model.graph.inputs.filter((i) => !inits.has(i.name));
}

/** Checks a batch against the model's declared inputs: names, element types and dims (symbolic dims match any size). */
export function checkBatch(model: OnnxModel, batch: CalibrationBatch, k: number): void {
  const inputs = feedInputs(model);
  const names = inputs.map((i) => `'${i.name}'`).join(', ');
  const at = `calibration batch ${k}`;
  for (const key of Object.keys(batch)) {
    if (!model.graph.inputs.some((i) => i.name === key)) throw new Error(`${at}: '${key}' is not an input of the model (its inputs: ${names})`);
  }
  for (const i of inputs) {
    const x = batch[i.name];
    if (x === undefined) throw new Error(`${at} has no input '${i.name}' (the model's inputs: ${names}; the batch has: ${Object.keys(batch).map((s) => `'${s}'`).join(', ') || 'nothing'})`);
    if (i.elemType !== 0 && ONNX_CODE[x.dtype] !== i.elemType) throw new Error(`${at}: input '${i.name}' is ${x.dtype} (ONNX type ${ONNX_CODE[x.dtype]}); the model declares ONNX type ${i.elemType}`);
    const d = i.shape;
    if (d !== null && (d.length !== x.dims.length || d.some((v, j) => typeof v === 'number' && v !== x.dims[j]))) {
      throw new Error(`${at}: input '${i.name}' has dims ${fmtDims(x.dims)}; the model declares ${fmtDims(d)}`);
    }
    const n = x.dims.reduce((a, b) => a * b, 1);
    if (x.data.length !== n) throw new Error(`${at}: input '${i.name}' has ${x.data.length} values for dims ${fmtDims(x.dims)} (${n})`);
  }
}

/**
 * Measures the ranges static quantization of `model` needs, over `batches`.
 *
 * @example
 *   const cal = await calibrate(model, mnistCalibration('x', 500, 50), { method: 'entropy' });
 *   const { model: q } = quantize(model, { mode: 'static', calibration: cal });
 */
export async function calibrate(model: OnnxModel, batches: Iterable<CalibrationBatch> | AsyncIterable<CalibrationBatch>, o: CalibrationOptions = {}): Promise<CalibrationResult> {
  const method = o.method ?? 'minmax';
  if (!CALIBRATION_METHODS.includes(method)) throw new Error(`calibrate: method must be one of ${CALIBRATION_METHODS.join(', ')}, got ${JSON.stringify(method)}`);
  const percentile = o.percentile ?? 99.999;
  if (!(percentile > 0 && percentile <= 100)) throw new Error(`calibrate: percentile must be in (0, 100], got ${percentile}`);
  const bins = o.bins ?? 2048;
  const qbins = o.quantizedBins ?? 128;
  if (!(Number.isInteger(bins) && bins >= 2 && bins % 2 === 0)) throw new Error(`calibrate: bins must be an even integer >= 2, got ${bins}`);
  if (method === 'entropy' && !(Number.isInteger(qbins) && qbins >= 2 && qbins <= bins)) throw new Error(`calibrate: quantizedBins must be an integer in [2, bins = ${bins}], got ${qbins}`);

  const { tensors } = calibrationTargets(model);
  const inputNames = new Set(model.graph.inputs.map((i) => i.name));
  const outNames = new Set(model.graph.outputs.map((x) => x.name));
  const fetched = tensors.filter((t) => !inputNames.has(t));
  const exposed: OnnxModel = {
    ...model,
    graph: { ...model.graph, outputs: [...model.graph.outputs, ...fetched.filter((t) => !outNames.has(t)).map((name) => ({ name, elemType: 1, shape: null }))] },
  };
  const session = await createInferenceSession(encodeModel(exposed), { threads: o.threads ?? 1, optimization: 'basic' }, 'calibration model');
  const values = async (b: CalibrationBatch): Promise<Map<string, TypedArray>> => {
    const got = fetched.length > 0 ? await session.run(b, fetched) : {};
    return new Map(tensors.map((t) => [t, inputNames.has(t) ? b[t]!.data : got[t]!.data]));
  };

  const stats = new Map(tensors.map((t) => [t, { min: Infinity, max: -Infinity }]));
  const kept: CalibrationBatch[] = [];
  let [count, samples] = [0, 0];
  try {
    for await (const b of batches) {
      checkBatch(model, b, count);
      count++;
      samples += Object.values(b)[0]?.dims[0] ?? 0;
      if (method !== 'minmax') kept.push(b);
      for (const [t, v] of await values(b)) {
        const s = stats.get(t)!;
        for (let i = 0; i < v.length; i++) {
          const x = v[i] as number;
          if (x < s.min) s.min = x;
          if (x > s.max) s.max = x;
        }
      }
    }
    if (count === 0) throw new Error('calibrate: no calibration batches');
    const result: CalibrationResult = { method, batches: count, samples, tensors: {} };
    if (method === 'minmax') {
      for (const [t, s] of stats) result.tensors[t] = { ...s, lo: s.min, hi: s.max };
      return result;
    }
    const hists = new Map(tensors.map((t) => [t, new Float64Array(bins)]));
    for (const b of kept) {
      for (const [t, v] of await values(b)) {
        const s = stats.get(t)!;
        const M = Math.max(Math.abs(s.min), Math.abs(s.max));
        histogram(v as Float32Array, M, method === 'percentile', hists.get(t)!);
      }
    }
    for (const [t, s] of stats) {
      const M = Math.max(Math.abs(s.min), Math.abs(s.max));
      const h = hists.get(t)!;
      const th = M === 0 ? 0 : method === 'percentile' ? percentileThreshold(h, M, percentile) : entropyThreshold(h, M, qbins);
      result.tensors[t] = { ...s, lo: Math.max(s.min, -th), hi: Math.min(s.max, th) };
    }
    return result;
  } finally {
    await session.release();
  }
}

/** Adds v's counts to `h`: of |x| over [0, M] (`absolute`), or of x over [-M, M]. */
function histogram(v: Float32Array, M: number, absolute: boolean, h: Float64Array): void {
  const B = h.length;
  const [lo, k] = absolute ? [0, B / M] : [-M, B / (2 * M)];
  if (M === 0) { const z = absolute ? 0 : B / 2; h[z] = h[z]! + v.length; return; }
  for (let i = 0; i < v.length; i++) {
    const x = absolute ? Math.abs(v[i]!) : v[i]!;
    const j = Math.min(B - 1, Math.max(0, Math.floor((x - lo) * k)));
    h[j] = h[j]! + 1;
  }
}

/** The upper edge of the |x| histogram's bin where the cumulative share first reaches p%. */
export function percentileThreshold(h: Float64Array, M: number, p: number): number {
  const total = h.reduce((a, b) => a + b, 0);
  let cum = 0;
  for (let i = 0; i < h.length; i++) {
    cum += h[i]!;
    if (cum >= (p / 100) * total) return ((i + 1) * M) / h.length;
  }
  return M;
}

/**
 * The entropy threshold of `h`, the histogram of x over [-M, M] (onnxruntime's calibrate.py
 * get_entropy_threshold, with TensorRT's Q): the t = i M / (bins / 2) of the window of bins
 * [zero - i, zero + i), i >= quantizedBins / 2, minimizing KL(P || Q), P the window with the counts
 * outside added to its end bins, Q the window merged into `quantizedBins` groups, each group's
 * count spread evenly over its non-empty bins; point masses capped first (`flattenSpikes`).
 */
export function entropyThreshold(h: Float64Array, M: number, quantizedBins: number): number {
  const B = h.length;
  const zero = B / 2;
  const bins = flattenSpikes(h);
  const prefix = new Float64Array(B + 1);
  for (let i = 0; i < B; i++) prefix[i + 1] = prefix[i]! + bins[i]!;
  const [p, q] = [new Float64Array(B), new Float64Array(B)];
  const [sum, nonzero] = [new Float64Array(quantizedBins), new Float64Array(quantizedBins)];
  let [best, bestKl] = [zero, Infinity];
  for (let i = Math.ceil(quantizedBins / 2); i <= zero; i++) {
    const [start, n] = [zero - i, 2 * i];
    sum.fill(0);
    nonzero.fill(0);
    for (let k = 0; k < n; k++) {
      const g = Math.floor((k * quantizedBins) / n);
      const c = bins[start + k]!;
      p[k] = c;
      sum[g] = sum[g]! + c;
      if (c > 0) nonzero[g] = nonzero[g]! + 1;
    }
    for (let k = 0; k < n; k++) q[k] = p[k]! > 0 ? sum[Math.floor((k * quantizedBins) / n)]! / nonzero[Math.floor((k * quantizedBins) / n)]! : 0;
    p[0] = p[0]! + prefix[start]!;
    p[n - 1] = p[n - 1]! + prefix[B]! - prefix[start + n]!;
    const kl = smoothedKl(p, q, n);
    if (kl < bestKl) [best, bestKl] = [i, kl];
  }
  return (best * M) / zero;
}

/**
 * The histogram with point masses capped at 4x the median of the 16 bins around them (at least 1).
 * A point mass is a value many elements share exactly: a Relu's zeros (pytorch-quantization sets
 * its zero bin to its neighbour's count for this), or a convolution's response to a constant
 * background (every background pixel of an MNIST digit gives each channel one value). int8
 * rounding moves a point mass whole, but Q's even spread over a group charges it as lost
 * resolution, so on the raw histogram the search stops just past the last spike. Measured on the
 * mnist-cnn recipe (150 steps): conv1's Relu output, max 7.57, was clipped at 0.52 and test
 * accuracy fell to 17.0% (fp32 96.9%); with the cap, clipped at 4.78, 96.9%.
 */
export function flattenSpikes(h: Float64Array, radius = 8, factor = 4): Float64Array {
  const out = h.slice();
  const around: number[] = [];
  for (let j = 0; j < h.length; j++) {
    around.length = 0;
    for (let k = Math.max(0, j - radius); k <= Math.min(h.length - 1, j + radius); k++) if (k !== j) around.push(h[k]!);
    around.sort((a, b) => a - b);
    const cap = factor * Math.max(1, around[around.length >> 1] ?? 0);
    if (h[j]! > cap) out[j] = cap;
  }
  return out;
}

/**
 * KL(P || Q) over the first n bins, each smoothed as onnxruntime's smooth_distribution: empty bins
 * get eps counts, taken evenly from the others (Infinity when a distribution is all empty).
 */
function smoothedKl(p: Float64Array, q: Float64Array, n: number, eps = 1e-4): number {
  let [zp, zq, sp, sq] = [0, 0, 0, 0];
  for (let k = 0; k < n; k++) {
    if (p[k] === 0) zp++;
    if (q[k] === 0) zq++;
    sp += p[k]!;
    sq += q[k]!;
  }
  if (zp === n || zq === n) return Infinity;
  const [tp, tq] = [(eps * zp) / (n - zp), (eps * zq) / (n - zq)];
  let kl = 0;
  for (let k = 0; k < n; k++) {
    const a = (p[k] === 0 ? eps : Math.max(p[k]! - tp, 1e-12)) / sp;
    const b = (q[k] === 0 ? eps : Math.max(q[k]! - tq, 1e-12)) / sq;
    kl += a * Math.log(a / b);
  }
  return kl;
}

/** `n` evenly spaced indices of [0, size) (every class of a split ordered by class). */
const spread = (size: number, n: number): number[] => Array.from({ length: Math.min(n, size) }, (_, i) => Math.floor((i * size) / Math.min(n, size)));

/** Batches of MNIST training images (normalized as the CNN task normalizes them), `input` [b, 1, 28, 28], `n` images spread over every digit. */
export function* mnistCalibration(input: string, n: number, batch: number): Generator<CalibrationBatch> {
  const { train } = mnist();
  const idx = spread(train.size, n);
  const px = MNIST_SHAPE[0] * MNIST_SHAPE[1] * MNIST_SHAPE[2];
  for (let s = 0; s < idx.length; s += batch) {
    const part = idx.slice(s, s + batch);
    const data = new Float32Array(part.length * px);
    part.forEach((i, k) => data.set(train.record(i)[0] as Float32Array, k * px));
    yield { [input]: { dtype: 'float32', dims: [part.length, ...MNIST_SHAPE], data } };
  }
}

/** Batches of `n` byte-token windows of length `T` from the Brown corpus's training split, `input` int64 [b, T]. */
export function* brownCalibration(input: string, n: number, T: number, batch: number): Generator<CalibrationBatch> {
  const { train } = brownSplit();
  const starts = spread(train.length - T, n);
  for (let s = 0; s < starts.length; s += batch) {
    const part = starts.slice(s, s + batch);
    const data = new BigInt64Array(part.length * T);
    part.forEach((start, k) => { for (let j = 0; j < T; j++) data[k * T + j] = BigInt(train[start + j]!); });
    yield { [input]: { dtype: 'int64', dims: [part.length, T], data } };
  }
}

/** Batches from a safetensors file: one tensor per model input, by name, samples along dim 0. */
export function* safetensorsCalibration(bytes: Uint8Array, source: string, n: number, batch: number): Generator<CalibrationBatch> {
  const { tensors } = decodeSafetensors(bytes, source);
  if (tensors.size === 0) throw new Error(`${source}: holds no tensors`);
  const rows = Math.min(...[...tensors.values()].map((t) => t.shape[0] ?? 1));
  const total = Math.min(n, rows);
  for (let s = 0; s < total; s += batch) {
    const b = Math.min(batch, total - s);
    const out: Record<string, Named> = {};
    for (const [name, t] of tensors) {
      if (t.shape.length === 0) throw new Error(`${source}: tensor '${name}' is a scalar; calibration tensors hold samples along dim 0`);
      const row = t.data.length / t.shape[0]!;
      out[name] = { dtype: weftDType(t.dtype), dims: [b, ...t.shape.slice(1)], data: t.data.subarray(s * row, (s + b) * row) };
    }
    yield out;
  }
}
