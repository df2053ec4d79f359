/**
 * Quantization-aware training as a rewrite of a traced forward graph (as autocast is; applied in
 * nn/step_graph.ts). Every Conv, MatMul and Gemm whose weight is a parameter (a "site", named by
 * that parameter) computes on fake-quantized operands (`weft.FakeQuantize`, ir/ops/quant.ts), in
 * the int8 scheme onnxruntime's fast CPU kernels run (u8 activations x s8 weights):
 *
 * - weight: s8 symmetric per output channel (Conv W [O, I, kh, kw] axis 0, MatMul B [K, N] and
 *   Gemm B axis 1, Gemm B with transB axis 0), scale_c = max(max|w_c| / 127, eps), computed in the
 *   graph from the current weight every step (no gradient through it);
 * - activation input: u8 asymmetric per tensor over [min(lo, 0), max(hi, 0)],
 *   scale = max((hi - lo) / 255, eps), zero point round(-lo / scale). [lo, hi] is the batch's own
 *   min/max (each step quantizes with the range it sees, no state), or a frozen range per site
 *   (`ranges`, from calibration: deploy/qat.ts), which is what the exported model uses;
 * - bias (a parameter, Conv's or Gemm's C): int32 with scale s_x * s_w,c, zero point 0, as
 *   onnxruntime's QLinearConv / QGemm take it, so an exported model computes what training saw.
 *
 * Gradients are straight-through where the value is representable (ir/ops/quant.ts). The ranges
 * are not module buffers: a frozen range is a constant of the traced graph, so freezing means
 * re-tracing. eps is float32's machine epsilon (PyTorch's observers' floor on the scale).
 */
import * as b from './build.js';
import { topoNodes } from './graph.js';
import type { Node, Value } from './graph.js';
import { apply } from './registry.js';
import { rewrite } from './rewrite.js';
import { normAxis } from './shape.js';

export type QatProduct = 'Conv' | 'MatMul' | 'Gemm';
export const QAT_PRODUCTS: readonly QatProduct[] = ['Conv', 'MatMul', 'Gemm'];

/** float32's machine epsilon: the smallest scale (an all-zero weight channel or a constant activation). */
export const SCALE_EPS = 2 ** -23;

/** Activation ranges [lo, hi] by site name (the weight parameter's name). */
export type QatRanges = Readonly<Record<string, readonly [number, number]>>;

/** A product QAT quantizes: its node, activation input index, weight and channel axis, bias. */
export interface QatSite {
  readonly name: string;
  readonly node: Node;
  readonly act: number;
  readonly weight: Value;
  /** The weight's output-channel axis. */
  readonly axis: number;
  /** A parameter bias the int32 scheme covers (Conv B, Gemm C [N] with alpha = beta = 1), or null. */
  readonly bias: Value | null;
}

export interface QatOptions {
  /** Parameter leaves and their names (the flat layout's slot names). */
  params: ReadonlyMap<Value, string>;
  /** Which products to quantize; default all three. */
  ops?: readonly QatProduct[];
  /** Frozen activation ranges by site; absent, each batch's own min/max. */
  ranges?: QatRanges;
  /** Fake-quantize parameter biases to int32 (default true). */
  bias?: boolean;
  /** Also return each site's observed activation [lo, hi] (a float32 [2]), for calibration. */
  observe?: boolean;
  /** false: leave the graph in float and only observe (post-training calibration). Default true. */
  quantize?: boolean;
}

export interface QatResult {
  outputs: Value[];
  sites: QatSite[];
  /** With `observe`: per site (in `sites` order) the activation's [min, max] as the product reads it. */
  observed: Value[];
}

/** Round half to even, as QuantizeLinear (and `Round`) do. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/** u8 scale and zero point of the range [lo, hi], in float32 steps as the traced graph computes them. */
export function activationQParams(lo: number, hi: number): { scale: number; zeroPoint: number } {
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo <= hi)) throw new Error(`activation range must be finite with lo <= hi, got [${lo}, ${hi}]`);
  const f = Math.fround;
  const [mn, mx] = [Math.min(f(lo), 0), Math.max(f(hi), 0)];
  const scale = Math.max(f(f(mx - mn) / 255), SCALE_EPS);
  return { scale, zeroPoint: Math.min(255, Math.max(0, roundHalfEven(f(-mn / scale)))) };
}

/** Per-channel s8 scales max(max|w_c| / 127, eps) of a weight laid out [outer, C, inner]. */
export function weightScales(w: ArrayLike<number>, shape: readonly number[], axis: number): Float32Array {
  const [outer, C, inner] = splitAt(shape, axis);
  const amax = new Float32Array(C);
  for (let o = 0; o < outer; o++) for (let c = 0; c < C; c++) {
    const base = (o * C + c) * inner;
    for (let i = 0; i < inner; i++) amax[c] = Math.max(amax[c]!, Math.abs(w[base + i]!));
  }
  return amax.map((a) => Math.max(Math.fround(a / 127), SCALE_EPS));
}

/** The s8 values of a weight under per-channel `scales` (clamp(round(w / s_c), -128, 127)). */
export function quantizeWeight(w: ArrayLike<number>, shape: readonly number[], axis: number, scales: Float32Array): Int8Array {
  const [outer, C, inner] = splitAt(shape, axis);
  const q = new Int8Array(w.length);
  for (let o = 0; o < outer; o++) for (let c = 0; c < C; c++) {
    const base = (o * C + c) * inner;
    for (let i = 0; i < inner; i++) q[base + i] = Math.min(127, Math.max(-128, roundHalfEven(Math.fround(w[base + i]! / scales[c]!))));
  }
  return q;
}

function splitAt(shape: readonly number[], axis: number): [number, number, number] {
  const prod = (xs: readonly number[]): number => xs.reduce((p, d) => p * d, 1);
  return [prod(shape.slice(0, axis)), shape[axis]!, prod(shape.slice(axis + 1))];
}

/** The products under `outputs` that QAT quantizes, in graph order. */
export function qatSites(outputs: readonly Value[], params: ReadonlyMap<Value, string>, ops: readonly QatProduct[] = QAT_PRODUCTS): QatSite[] {
  for (const op of ops) if (!QAT_PRODUCTS.includes(op)) throw new Error(`qat: ops must be among ${QAT_PRODUCTS.join(', ')}, got '${op}'`);
  const sites: QatSite[] = [];
  const seen = new Map<string, number>();
  for (const n of topoNodes(outputs)) {
    if (!(ops as readonly string[]).includes(n.op)) continue;
    const [x, w] = [n.inputs[0] ?? null, n.inputs[1] ?? null];
    if (w === null || !params.has(w) || x === null || x.constant || params.has(x) || x.dtype !== 'float32' || w.dtype !== 'float32') continue;
    let axis: number;
    let bias: Value | null = null;
    const c = n.inputs[2] ?? null;
    const paramBias = c !== null && params.has(c) && c.rank === 1 ? c : null;
    if (n.op === 'Conv') {
      axis = 0;
      bias = paramBias;
    } else if (n.op === 'Gemm') {
      if ((n.attrs['transA'] ?? 0) !== 0) continue;
      axis = (n.attrs['transB'] ?? 0) === 1 ? 0 : 1;
      bias = (n.attrs['alpha'] ?? 1) === 1 && (n.attrs['beta'] ?? 1) === 1 ? paramBias : null;
    } else {
      if (w.rank < 2) continue;
      axis = w.rank - 1;
    }
    const base = params.get(w)!;
    const k = seen.get(base) ?? 0;
    seen.set(base, k + 1);
    sites.push({ name: k === 0 ? base : `${base}#${k}`, node: n, act: 0, weight: w, axis, bias });
  }
  return sites;
}

const fq = (x: Value, scale: Value, zp: Value, dtype: string, axis = 1): Value =>
  b.apply1('weft.FakeQuantize', [x, scale, zp], scale.rank === 1 ? { dtype, axis } : { dtype });
const clipLo = (x: Value, lo: number): Value => b.apply1('Clip', [x, b.scalarLike(lo, x)]);
const zeros = (n: number): Value => b.constant(new Float32Array(n), 'float32', [n]);

/** The batch's [min, max] of x, as two scalars. */
function batchRange(x: Value): [Value, Value] {
  const all = x.shape.map((_, i) => i);
  return [b.neg(b.reduceMax(b.neg(x), all, false)), b.reduceMax(x, all, false)];
}

/** In-graph u8 qparams of the batch range (the formula of `activationQParams`). */
function batchQParams(lo: Value, hi: Value): { scale: Value; zp: Value } {
  const mn = b.neg(clipLo(b.neg(lo), 0));
  const mx = clipLo(hi, 0);
  const scale = clipLo(b.div(b.sub(mx, mn), b.scalarLike(255, mx)), SCALE_EPS);
  const zp = b.apply1('Clip', [b.apply1('Round', [b.div(b.neg(mn), scale)]), b.scalarLike(0, mn), b.scalarLike(255, mn)]);
  return { scale, zp };
}

/** In-graph per-channel s8 scales of a weight: max(max|w_c| / 127, eps) along `axis`. */
export function weightScaleValue(w: Value, axis: number): Value {
  const others = w.shape.map((_, i) => i).filter((i) => i !== normAxis(axis, w.rank, 'qat'));
  return clipLo(b.div(b.reduceMax(b.apply1('Abs', [w]), others, false), b.scalarLike(127, w)), SCALE_EPS);
}

/**
 * Rewrites the forward under `outputs` for QAT (see the file's comment). Returns the rewritten
 * outputs, the sites, and with `observe` each site's observed range.
 *
 *   const { outputs: [loss] } = qat([loss0], { params: names });
 */
export function qat(outputs: readonly Value[], o: QatOptions): QatResult {
  const sites = qatSites(outputs, o.params, o.ops);
  const byNode = new Map(sites.map((s) => [s.node, s]));
  if (o.ranges !== undefined) {
    const missing = sites.filter((s) => o.ranges![s.name] === undefined).map((s) => s.name);
    if (missing.length > 0) throw new Error(`qat: no frozen range for site(s) ${missing.join(', ')} (ranges has ${Object.keys(o.ranges).join(', ') || 'none'})`);
  }
  const quantize = o.quantize ?? true;
  const observed: Value[] = [];
  const out = rewrite(outputs, (n, inputs) => {
    const s = byNode.get(n);
    if (s === undefined) return null;
    const x = inputs[s.act]!;
    const r = o.ranges?.[s.name];
    const range = o.observe || r === undefined ? batchRange(x) : null;
    if (o.observe) observed.push(b.concat([b.reshape(range![0], [1]), b.reshape(range![1], [1])], 0));
    if (!quantize) return null;
    let sx: Value;
    let zx: Value;
    if (r !== undefined) {
      const q = activationQParams(r[0], r[1]);
      [sx, zx] = [b.scalar(q.scale), b.scalar(q.zeroPoint)];
    } else ({ scale: sx, zp: zx } = batchQParams(range![0], range![1]));
    const C = s.weight.shape[s.axis] as number;
    const sw = weightScaleValue(s.weight, s.axis);
    const ins = [...inputs];
    ins[s.act] = fq(x, sx, zx, 'uint8');
    ins[1] = fq(s.weight, sw, zeros(C), 'int8', s.axis);
    if (s.bias !== null && (o.bias ?? true)) ins[2] = fq(s.bias, b.mul(sx, sw), zeros(C), 'int32', 0);
    return apply(n.op, ins, n.attrs, n.outputs.length);
  });
  return { outputs: out, sites, observed };
}
