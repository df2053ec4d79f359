/**
 * Int8 post-training quantization of any ONNX model (`weft quantize`): MatMul, Gemm and Conv with
 * constant float32 weights; every other node is copied as found.
 *
 * Weights are s8, symmetric, per output channel: scale_c = max|w_c| / 127, q = round(w / scale_c)
 * (half to even, as QuantizeLinear rounds) clamped to [-127, 127], zero point 0. The channel is a
 * column of MatMul's B [K, N] (a row of Gemm's B under transB) and dim 0 of Conv's W. Activations
 * are u8, asymmetric: on MLAS's x86 kernels only u8 activations x s8 weights reach the VNNI / AMX
 * int8 instructions (s8 x s8 is scalar code).
 *
 * - `dynamic` (default): activations are quantized at run time, per tensor, from their own range.
 *   `format: 'ort'` emits com.microsoft DynamicQuantizeMatMul (A, B s8 [K, N], b_scale [N], -,
 *   bias [N]); `format: 'onnx'` emits standard ops, DynamicQuantizeLinear -> MatMulInteger ->
 *   Cast -> Mul(a_scale * b_scale) [-> Add bias], which onnxruntime fuses back into the former.
 *   Conv stays float: onnxruntime's ConvInteger CPU kernel takes u8 weights only (no s8, no
 *   per-channel scale); quantize convolutions statically.
 * - `static`: activations get fixed ranges from `calibrate` (calibrate.ts) and the model holds QDQ
 *   pairs (QuantizeLinear -> DequantizeLinear) on every quantized activation, DequantizeLinear on
 *   every weight (per channel, `axis`) and on Conv/Gemm biases, which are int32 with scale
 *   a_scale * w_scale_c, zero point 0 (what onnxruntime's QDQ transformer folds into
 *   QLinearConv / QGemm). onnxruntime turns the pairs into QLinearConv, QLinearMatMul, QGemm and
 *   MatMulIntegerToFloat at session creation. A quantized input reached through MaxPool, Flatten,
 *   Reshape, Transpose, (Un)Squeeze or Identity is quantized where that chain starts, and every
 *   tensor of the chain shares its scale, so onnxruntime runs those ops on u8 (its DropQDQ rules);
 *   a Relu right after a Conv/Gemm gets the Q (its range starts at 0, zero point 0), which
 *   onnxruntime removes with the Relu. BatchNormalization after a Conv is folded into the Conv
 *   first, so the product quantized is the one that runs.
 *
 * MatMul/Gemm weights under `minWeights` elements stay float: quantizing A costs O(M K) a call
 * while int8 saves a fraction of O(M K N), and below 64 x 64 it saves nothing (bench/quantize.ts,
 * one [256, K] x [K, K] product, 1 thread, AVX512-VNNI: K = 32 1.03x, 64 1.00-1.25x, 128
 * 1.64-1.79x, 512 2.8-3.0x over fp32). So do products of two activations
 * (attention's Q K^T) and Gemm with transA. The report says, per node, what became of it and why.
 */
import { foldBatchNorms } from './passes/bn_fold.js';
import { activationQParams, roundHalfEven } from '../ir/qat.js';
import type { OnnxGraph, OnnxModel, OnnxNode, OnnxTensor, OnnxValueInfo } from '../ir/onnx/model.js';
import { attr, attrInt, attrs, subgraphs, tensorOf } from '../ir/onnx/model.js';
import type { CalibrationResult } from './calibrate.js';
import { GraphIndex, namer } from './graph.js';

export type QuantizeMode = 'dynamic' | 'static';
export type QuantizeFormat = 'ort' | 'onnx';

export interface QuantizeOptions {
  /** Default 'dynamic'. */
  mode?: QuantizeMode;
  /** Dynamic mode's ops: 'ort' (DynamicQuantizeMatMul, default) or 'onnx' (standard ops only). Static mode is QDQ, standard ONNX. */
  format?: QuantizeFormat;
  /** Static mode: the activation ranges `calibrate` measured on this model. */
  calibration?: CalibrationResult;
  /** MatMul/Gemm weights with fewer elements stay float. Default 4096 (64 x 64, where int8 stops losing; see above). */
  minWeights?: number;
  /**
   * 7-bit weights ([-63, 63], scale = max|w| / 63): for x86 CPUs without VNNI, whose u8 x s8 path
   * (vpmaddubsw) saturates pairs of products at 16 bits. Default false.
   */
  reduceRange?: boolean;
  /** Node names (or, for unnamed nodes, first output names) to leave float. */
  exclude?: readonly string[];
}

export interface QuantizedNode { node: string; op: string; as: string; weight: number[] }
export interface SkippedNode { node: string; op: string; reason: string }

export interface QuantizeReport {
  mode: QuantizeMode;
  /** 'qdq' for static mode. */
  format: QuantizeFormat | 'qdq';
  quantized: QuantizedNode[];
  /** MatMul, Gemm and Conv nodes left float, and why. */
  skipped: SkippedNode[];
  /** Static mode: activation tensors given a QuantizeLinear (chain sources). */
  activations: string[];
  /** Bytes of the float weights replaced, and of their int8 values. */
  weightBytes: { float32: number; int8: number };
}

export const DEFAULT_MIN_WEIGHTS = 4096;
const ELEM = { float: 1, uint8: 2, int8: 3, int32: 6 } as const;

/** QuantizeLinear's rounding, and the u8 parameters of a range: the same arithmetic as QAT's fake quantization (ir/qat.ts). */
export { roundHalfEven };

/**
 * Symmetric per-channel int8 weights: channel c is index c along `axis`; scale_c = max|w_c| / qmax
 * (1 for an all-zero channel), q = clamp(round(w / scale_c), -qmax, qmax).
 */
export function quantizePerChannel(w: Float32Array, dims: readonly number[], axis: number, qmax = 127): { q: Int8Array; scale: Float32Array } {
  const C = dims[axis]!;
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const maxAbs = new Float64Array(C);
  for (let i = 0; i < w.length; i++) {
    const c = Math.floor(i / inner) % C;
    const a = Math.abs(w[i]!);
    if (a > maxAbs[c]!) maxAbs[c] = a;
  }
  const scale = Float32Array.from(maxAbs, (m) => (m > 0 ? m / qmax : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const v = roundHalfEven(w[i]! / scale[Math.floor(i / inner) % C]!);
    q[i] = Math.max(-qmax, Math.min(qmax, v));
  }
  return { q, scale };
}

/** u8 scale and zero point of the range [lo, hi] widened to hold 0 (so 0 is exact): scale = (hi - lo) / 255, zp = round(-lo / scale). */
export function activationParams(lo: number, hi: number): { scale: number; zeroPoint: number } {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new Error(`quantize: activation range [${lo}, ${hi}] is not finite`);
  return activationQParams(Math.min(lo, hi), Math.max(lo, hi));
}

/** A MatMul/Gemm/Conv to quantize: its activation input, its weight as found and how to read it. */
interface Target {
  node: OnnxNode;
  a: string;
  w: OnnxTensor & { data: Float32Array };
  /** Gemm's transB: W is [N, K]. */
  transB: boolean;
  alpha: number;
  beta: number;
  /** A constant bias of N values (Conv's B, Gemm's C). */
  bias: Float32Array | null;
  /** Gemm's C when it is not a constant [N] (added after the product). */
  addend: string | null;
}

const label = (n: OnnxNode): string => n.name || n.outputs[0] || n.op;

/** Whether `n` is a candidate, and if so the target or the reason it stays float. */
function targetOf(n: OnnxNode, idx: GraphIndex, mode: QuantizeMode, minWeights: number, exclude: ReadonlySet<string>): Target | string | null {
  // onnxruntime's fused products (weft optimize's FusedConv / FusedGemm) hide the pattern int8 needs.
  if (n.domain === 'com.microsoft' && (n.op === 'FusedConv' || n.op === 'FusedGemm' || n.op === 'FusedMatMul')) {
    return `com.microsoft ${n.op} is onnxruntime's fused float kernel: quantize the model before fusing it (weft optimize --no-ort-fusions)`;
  }
  if (n.domain !== '' || !(n.op === 'MatMul' || n.op === 'Gemm' || n.op === 'Conv')) return null;
  if (exclude.has(label(n))) return 'excluded by the caller';
  const [a, wName] = [n.inputs[0] ?? '', n.inputs[1] ?? ''];
  const w = idx.constant(wName);
  const what = n.op === 'Conv' ? 'W' : 'B';
  if (w === undefined) return idx.constant(a) !== undefined ? `${what} is not a constant` : `${what} is an activation, not a constant weight (a product of two activations, such as attention's Q K^T)`;
  if (idx.constant(a) !== undefined) return 'both operands are constants (fold the product instead)';
  if (w.elemType !== ELEM.float || !(w.data instanceof Float32Array)) return `${what} is not float32 (element type ${w.elemType})`;
  const wf = w as Target['w'];
  if (n.op === 'Conv') {
    if (mode === 'dynamic') return "dynamic mode leaves Conv float: onnxruntime's ConvInteger kernel takes u8 weights only; use static mode";
    if (w.dims.length < 3) return `W has ${w.dims.length} dims, not [M, C/group, k...]`;
    const bias = n.inputs[2] ? idx.constant(n.inputs[2]) : undefined;
    if (n.inputs[2] && (bias === undefined || !(bias.data instanceof Float32Array))) return 'B (bias) is not a float32 constant';
    return { node: n, a, w: wf, transB: false, alpha: 1, beta: 1, bias: (bias?.data as Float32Array | undefined) ?? null, addend: null };
  }
  if (w.dims.length !== 2) return `${what} has ${w.dims.length} dims; per-column quantization needs a 2-D weight`;
  const numel = w.dims[0]! * w.dims[1]!;
  if (numel < minWeights) return `weight [${w.dims.join(', ')}] has ${numel} elements, under minWeights (${minWeights}): too small to gain from int8`;
  if (n.op === 'MatMul') return { node: n, a, w: wf, transB: false, alpha: 1, beta: 1, bias: null, addend: null };
  if (attrInt(n, 'transA', 0) !== 0) return 'Gemm with transA=1';
  const transB = attrInt(n, 'transB', 0) !== 0;
  const [alpha, beta] = [attr(n, 'alpha'), attr(n, 'beta')].map((v) => (typeof v === 'number' ? v : 1)) as [number, number];
  const N = transB ? w.dims[0]! : w.dims[1]!;
  const cName = n.inputs[2] ?? '';
  let bias: Float32Array | null = null;
  let addend: string | null = null;
  if (cName !== '') {
    const c = idx.constant(cName);
    if (c !== undefined && c.data instanceof Float32Array && c.data.length === N && c.dims[c.dims.length - 1] === N) bias = c.data;
    else addend = cName;
  }
  if (mode === 'static' && (alpha !== 1 || beta !== 1)) return `static mode takes Gemm with alpha = beta = 1 (this one: alpha ${alpha}, beta ${beta})`;
  if (addend !== null && beta !== 1) return `C is not a constant [${N}] and beta is ${beta}`;
  return { node: n, a, w: wf, transB, alpha, beta, bias, addend };
}

function plan(g: OnnxGraph, mode: QuantizeMode, o: QuantizeOptions): { targets: Target[]; skipped: SkippedNode[] } {
  const idx = new GraphIndex(g);
  const exclude = new Set(o.exclude ?? []);
  const targets: Target[] = [];
  const skipped: SkippedNode[] = [];
  for (const n of g.nodes) {
    const t = targetOf(n, idx, mode, o.minWeights ?? DEFAULT_MIN_WEIGHTS, exclude);
    if (typeof t === 'string') skipped.push({ node: label(n), op: n.op, reason: t });
    else if (t !== null) targets.push(t);
  }
  return { targets, skipped };
}

/** W as [K, N] (Gemm's transB weight transposed). */
function weightKN(t: Target): { data: Float32Array; K: number; N: number } {
  const [r, c] = t.w.dims as [number, number];
  if (!t.transB) return { data: t.w.data, K: r, N: c };
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = t.w.data[i * c + j]!;
  return { data: out, K: c, N: r };
}

const node = (op: string, inputs: string[], outputs: string[], domain = '', a: OnnxNode['attrs'] = [], name = ''): OnnxNode =>
  ({ name, op, domain, inputs, outputs, attrs: a, extra: [] });

/** Quantizes `model` (not modified); the result shares the tensors it did not change. */
export function quantize(model: OnnxModel, o: QuantizeOptions = {}): { model: OnnxModel; report: QuantizeReport } {
  const mode = o.mode ?? 'dynamic';
  if (mode !== 'dynamic' && mode !== 'static') throw new Error(`quantize: mode must be 'dynamic' or 'static', got ${JSON.stringify(mode)}`);
  const format = o.format ?? 'ort';
  if (format !== 'ort' && format !== 'onnx') throw new Error(`quantize: format must be 'ort' or 'onnx', got ${JSON.stringify(format)}`);
  const opset = model.opsets.find((s) => s.domain === '' || s.domain === 'ai.onnx')?.version ?? 0;
  const need = mode === 'static' ? 13 : format === 'onnx' ? 11 : 1;
  if (opset < need) {
    throw new Error(`quantize: ${mode === 'static' ? 'static mode (per-channel DequantizeLinear)' : "format 'onnx' (DynamicQuantizeLinear)"} needs ONNX opset ${need} or later; the model imports opset ${opset}`);
  }
  if (mode === 'static' && o.calibration === undefined) throw new Error('quantize: static mode needs `calibration` (the ranges calibrate() measured on this model)');
  const g = ownGraph(model);
  if (mode === 'static') prepareStatic(g, model);
  const { targets, skipped } = plan(g, mode, o);
  const qmax = o.reduceRange ? 63 : 127;
  const report: QuantizeReport = { mode, format: mode === 'static' ? 'qdq' : format, quantized: [], skipped, activations: [], weightBytes: { float32: 0, int8: 0 } };
  if (mode === 'dynamic') dynamicRewrite(g, targets, format, qmax, report);
  else staticRewrite(g, targets, o.calibration!, qmax, report);
  pruneInitializers(g);
  if (model.irVersion < 4) relistInitializers(g, model.graph.inputs);
  const opsets = [...model.opsets];
  if (mode === 'dynamic' && format === 'ort' && targets.length > 0 && !opsets.some((s) => s.domain === 'com.microsoft')) opsets.push({ domain: 'com.microsoft', version: 1 });
  return { model: { ...model, opsets, graph: g }, report };
}

function dynamicRewrite(g: OnnxGraph, targets: readonly Target[], format: QuantizeFormat, qmax: number, report: QuantizeReport): void {
  const fresh = namer(g);
  const byNode = new Map(targets.map((t) => [t.node, t]));
  const done = new Map<string, { q: string; scale: Float32Array }>();
  const out: OnnxNode[] = [];
  for (const n of g.nodes) {
    const t = byNode.get(n);
    if (t === undefined) { out.push(n); continue; }
    const { data, K, N } = weightKN(t);
    const key = `${n.inputs[1]}${t.transB ? '^T' : ''}`;
    let qw = done.get(key);
    if (qw === undefined) {
      const { q, scale } = quantizePerChannel(data, [K, N], 1, qmax);
      qw = { q: fresh(`${n.inputs[1]}_quantized`), scale };
      g.initializers.push(tensorOf(qw.q, 'int8', [K, N], q));
      done.set(key, qw);
      report.weightBytes.float32 += 4 * K * N;
      report.weightBytes.int8 += K * N;
    }
    const base = label(n);
    const scale = fresh(`${base}_b_scale`);
    g.initializers.push(tensorOf(scale, 'float32', [N], qw.scale.map((s) => s * t.alpha)));
    let bias = '';
    if (t.bias !== null) {
      bias = fresh(`${base}_bias`);
      g.initializers.push(tensorOf(bias, 'float32', [N], t.bias.map((b) => b * t.beta)));
    }
    const y = n.outputs[0]!;
    const prod = t.addend === null ? y : fresh(`${base}_product`);
    if (format === 'ort') {
      out.push(node('DynamicQuantizeMatMul', [t.a, qw.q, scale, '', ...(bias ? [bias] : [])], [prod], 'com.microsoft', [], n.name));
    } else {
      const [aq, as, az, yi, yf, s] = ['a_quantized', 'a_scale', 'a_zero_point', 'int32', 'float', 'scale'].map((x) => fresh(`${base}_${x}`)) as [string, string, string, string, string, string];
      const scaled = bias ? fresh(`${base}_scaled`) : prod;
      out.push(node('DynamicQuantizeLinear', [t.a], [aq, as, az]),
        node('MatMulInteger', [aq, qw.q, az], [yi], '', [], n.name),
        node('Cast', [yi], [yf], '', [attrs.int('to', ELEM.float)]),
        node('Mul', [as, scale], [s]),
        node('Mul', [yf, s], [scaled]));
      if (bias) out.push(node('Add', [scaled, bias], [prod]));
    }
    if (t.addend !== null) out.push(node('Add', [prod, t.addend], [y]));
    report.quantized.push({ node: base, op: n.op, as: format === 'ort' ? 'DynamicQuantizeMatMul' : 'MatMulInteger', weight: [K, N] });
  }
  g.nodes = out;
}

/** Ops that move or select values without computing new ones: a quantized tensor keeps its scale through them. */
function passThrough(n: OnnxNode | undefined): boolean {
  if (n === undefined || n.domain !== '') return false;
  if (n.op === 'MaxPool') return n.outputs.length === 1 || n.outputs[1] === '';
  return ['Flatten', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Identity'].includes(n.op);
}

/**
 * The tensors static mode quantizes: each target's activation input, followed back through
 * pass-through ops to where its chain starts. Returns chain member -> chain source.
 */
function activationSources(g: OnnxGraph, targets: readonly Target[]): Map<string, string> {
  const idx = new GraphIndex(g);
  const source = new Map<string, string>();
  for (const t of targets) {
    const chain = [t.a];
    for (let p = idx.producer(t.a); passThrough(p) && idx.constant(p!.inputs[0]!) === undefined; p = idx.producer(chain.at(-1)!)) chain.push(p!.inputs[0]!);
    for (const x of chain) source.set(x, chain.at(-1)!);
  }
  return source;
}

/**
 * The tensors `calibrate` measures for static quantization of `model` (after BatchNorm folding):
 * those of every product static mode could quantize, whatever `minWeights` and `exclude` later leave float.
 */
export function calibrationTargets(model: OnnxModel): { graph: OnnxGraph; tensors: string[] } {
  const g = ownGraph(model);
  prepareStatic(g, model);
  const { targets } = plan(g, 'static', { minWeights: 0 });
  return { graph: g, tensors: [...new Set(activationSources(g, targets).values())] };
}

function staticRewrite(g: OnnxGraph, targets: readonly Target[], cal: CalibrationResult, qmax: number, report: QuantizeReport): void {
  const fresh = namer(g);
  const source = activationSources(g, targets);
  const params = new Map<string, { scale: number; zeroPoint: number; names: [string, string] }>();
  for (const s of new Set(source.values())) {
    const r = cal.tensors[s];
    if (r === undefined) throw new Error(`quantize: the calibration has no range for tensor '${s}' (was it measured on another model? it holds ${Object.keys(cal.tensors).length} tensors)`);
    const p = activationParams(r.lo, r.hi);
    const names: [string, string] = [fresh(`${s}_scale`), fresh(`${s}_zero_point`)];
    g.initializers.push(tensorOf(names[0], 'float32', [], Float32Array.of(p.scale)), tensorOf(names[1], 'uint8', [], Uint8Array.of(p.zeroPoint)));
    params.set(s, { ...p, names });
    report.activations.push(s);
  }
  const quantizedName = new Map<string, string>();
  const out: OnnxNode[] = [];
  const emitQ = (x: string): void => {
    const p = params.get(source.get(x)!)!;
    const q = fresh(`${x}_quantized`);
    quantizedName.set(x, q);
    out.push(node('QuantizeLinear', [x, ...p.names], [q]));
  };
  const dq = (x: string): string => {
    const p = params.get(source.get(x)!)!;
    const d = fresh(`${x}_dequantized`);
    out.push(node('DequantizeLinear', [quantizedName.get(x)!, ...p.names], [d]));
    return d;
  };
  for (const i of g.inputs) if (source.has(i.name)) emitQ(i.name);
  const byNode = new Map(targets.map((t) => [t.node, t]));
  const weights = new Map<string, { q: string; scale: Float32Array; names: [string, string] }>();
  for (const n of g.nodes) {
    const inputs = n.inputs.map((x) => (x !== '' && source.has(x) ? dq(x) : x));
    const t = byNode.get(n);
    if (t !== undefined) {
      const axis = n.op === 'Conv' || t.transB ? 0 : 1;
      const key = `${n.inputs[1]}@${axis}`;
      let qw = weights.get(key);
      if (qw === undefined) {
        const { q, scale } = quantizePerChannel(t.w.data, t.w.dims, axis, qmax);
        const base = n.inputs[1]!;
        qw = { q: fresh(`${base}_quantized`), scale, names: [fresh(`${base}_scale`), fresh(`${base}_zero_point`)] };
        const C = t.w.dims[axis]!;
        g.initializers.push(tensorOf(qw.q, 'int8', t.w.dims, q), tensorOf(qw.names[0], 'float32', [C], scale), tensorOf(qw.names[1], 'int8', [C], new Int8Array(C)));
        weights.set(key, qw);
        report.weightBytes.float32 += 4 * q.length;
        report.weightBytes.int8 += q.length;
      }
      const wd = fresh(`${n.inputs[1]}_dequantized`);
      out.push(node('DequantizeLinear', [qw.q, ...qw.names], [wd], '', [attrs.int('axis', axis)]));
      inputs[1] = wd;
      if (t.bias !== null) inputs[2] = quantizedBias(t, qw.scale, params.get(source.get(t.a)!)!.scale, g, out, fresh);
      report.quantized.push({ node: label(n), op: n.op, as: 'QDQ', weight: [...t.w.dims] });
    }
    out.push(inputs.every((x, k) => x === n.inputs[k]) ? n : { ...n, inputs });
    for (const o of n.outputs) if (o !== '' && source.has(o)) emitQ(o);
  }
  g.nodes = out;
}

/** A bias as int32 with scale a_scale * w_scale_c, zero point 0, behind a DequantizeLinear (axis 0). */
function quantizedBias(t: Target, wScale: Float32Array, aScale: number, g: OnnxGraph, out: OnnxNode[], fresh: (b: string) => string): string {
  const b = t.bias!;
  const scale = Float32Array.from(wScale, (s) => Math.fround(aScale) * s);
  const q = Int32Array.from(b, (v, c) => Math.max(-2147483647, Math.min(2147483647, roundHalfEven(v / scale[c]!))));
  const base = t.node.inputs[2]!;
  const [qn, sn, dn] = [fresh(`${base}_quantized`), fresh(`${base}_scale`), fresh(`${base}_dequantized`)];
  g.initializers.push(tensorOf(qn, 'int32', [b.length], q), tensorOf(sn, 'float32', [b.length], scale));
  out.push(node('DequantizeLinear', [qn, sn], [dn], '', [attrs.int('axis', 0)]));
  return dn;
}

/**
 * What static mode rewrites before planning: BatchNorm folded into its Conv, and MaxPool's Indices
 * output dropped where nothing reads it (onnxruntime runs a one-output MaxPool on u8).
 */
function prepareStatic(g: OnnxGraph, model: OnnxModel): void {
  // weft optimize's pass edits the product it folds a BatchNorm into: those get copies first, so
  // the caller's model is left as it was.
  g.nodes = g.nodes.map((n) => (n.domain === '' && (n.op === 'Conv' || n.op === 'Gemm' || n.op === 'MatMul') ? { ...n, inputs: [...n.inputs], outputs: [...n.outputs] } : n));
  foldBatchNorms(g, { opsets: [...model.opsets], irVersion: model.irVersion, threads: 1, foldMaxBytes: 0 });
  const idx = new GraphIndex(g);
  g.nodes = g.nodes.map((n) => {
    const ind = n.outputs[1];
    if (n.op !== 'MaxPool' || n.domain !== '' || n.outputs.length !== 2 || ind === undefined || ind === '') return n;
    return idx.consumers(ind).length === 0 && !idx.isGraphOutput(ind) ? { ...n, outputs: [n.outputs[0]!] } : n;
  });
}


/**
 * The graph's lists copied (nodes and tensors shared). Below IR version 4 every initializer is
 * also listed as a graph input and is still a constant (onnxruntime overrides initializers from
 * IR 4 on): those inputs are set aside, and `relistInitializers` restores the rule at the end.
 */
function ownGraph(model: OnnxModel): OnnxGraph {
  const g: OnnxGraph = { ...model.graph, nodes: [...model.graph.nodes], initializers: [...model.graph.initializers] };
  if (model.irVersion < 4) {
    const inits = new Set(g.initializers.map((t) => t.name));
    g.inputs = g.inputs.filter((i) => !inits.has(i.name));
  }
  return g;
}

/** Every initializer listed as a graph input again (IR < 4): the old entries that remain, then the new tensors'. */
function relistInitializers(g: OnnxGraph, old: readonly OnnxValueInfo[]): void {
  const inits = new Set(g.initializers.map((t) => t.name));
  const kept = old.filter((i) => inits.has(i.name));
  const listed = new Set(kept.map((i) => i.name));
  g.inputs = [...g.inputs, ...kept, ...g.initializers.filter((t) => !listed.has(t.name)).map((t) => ({ name: t.name, elemType: t.elemType, shape: [...t.dims] }))];
}

/** Drops initializers nothing reads (a node, a subgraph, a graph output or input). */
function pruneInitializers(g: OnnxGraph): void {
  const read = new Set<string>([...g.outputs.map((o) => o.name), ...g.inputs.map((i) => i.name)]);
  const visit = (nodes: readonly OnnxNode[]): void => {
    for (const n of nodes) {
      for (const x of n.inputs) read.add(x);
      for (const a of n.attrs) if (a.raw !== undefined) for (const s of subgraphs(a.raw)) visit(s.nodes);
    }
  };
  visit(g.nodes);
  g.initializers = g.initializers.filter((t) => read.has(t.name));
}
