/**
 * The functional op vocabulary over IR values. Gradient rules, lowerings and the Tensor API all
 * build graphs through these; each is a thin, checked wrapper over `apply`.
 */
import type { DType, TypedArray } from './dtype.js';
import { fromNumbers, ONNX_CODE } from './dtype.js';
import { topoNodes, Value } from './graph.js';
import { apply, apply1 } from './registry.js';
export { apply, apply1 };
import type { Dim } from './shape.js';
import { isStatic } from './shape.js';

/** A constant folded into the graph. Keep these small: their contents key the compile cache. */
export function constant(data: TypedArray, dtype: DType, shape: readonly number[]): Value {
  const v = new Value(dtype, shape, null, 0, data);
  v.constant = true;
  return v;
}

export const scalar = (x: number, dtype: DType = 'float32'): Value => constant(fromNumbers(dtype, [x]), dtype, []);
export const ints = (xs: readonly number[]): Value => constant(fromNumbers('int64', xs), 'int64', [xs.length]);

/** A scalar constant of `like`'s dtype. */
export const scalarLike = (x: number, like: Value): Value => scalar(x, like.dtype);

export const add = (a: Value, b: Value): Value => apply1('Add', [a, b]);
export const sub = (a: Value, b: Value): Value => apply1('Sub', [a, b]);
export const mul = (a: Value, b: Value): Value => apply1('Mul', [a, b]);
export const div = (a: Value, b: Value): Value => apply1('Div', [a, b]);
export const pow = (a: Value, b: Value): Value => apply1('Pow', [a, b]);
export const neg = (a: Value): Value => apply1('Neg', [a]);
export const sqrt = (a: Value): Value => apply1('Sqrt', [a]);
export const exp = (a: Value): Value => apply1('Exp', [a]);
export const log = (a: Value): Value => apply1('Log', [a]);
export const tanh = (a: Value): Value => apply1('Tanh', [a]);
export const erf = (a: Value): Value => apply1('Erf', [a]);
export const relu = (a: Value): Value => apply1('Relu', [a]);
export const gelu = (a: Value): Value => apply1('Gelu', [a]);
export const sigmoid = (a: Value): Value => apply1('Sigmoid', [a]);
export const sign = (a: Value): Value => apply1('Sign', [a]);
export const reciprocal = (a: Value): Value => apply1('Reciprocal', [a]);
export const matmul = (a: Value, b: Value): Value => apply1('MatMul', [a, b]);
export const equal = (a: Value, b: Value): Value => apply1('Equal', [a, b]);
export const greater = (a: Value, b: Value): Value => apply1('Greater', [a, b]);
export const where = (c: Value, a: Value, b: Value): Value => apply1('Where', [c, a, b]);
export const cast = (a: Value, to: DType): Value => (a.dtype === to ? a : apply1('Cast', [a], { to: codeOf(to) }));
export const softmax = (a: Value, axis = -1): Value => apply1('Softmax', [a], { axis });
export const logSoftmax = (a: Value, axis = -1): Value => apply1('LogSoftmax', [a], { axis });
export const identity = (a: Value): Value => apply1('Identity', [a]);
export const shapeOf = (a: Value): Value => apply1('Shape', [a]);
export const sum = (xs: readonly Value[]): Value => (xs.length === 1 ? xs[0]! : apply1('Sum', xs));

export function gemm(a: Value, b: Value, c: Value | null, o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): Value {
  const attrs: Record<string, number> = {};
  if (o.transA) attrs['transA'] = 1;
  if (o.transB) attrs['transB'] = 1;
  if (o.alpha !== undefined && o.alpha !== 1) attrs['alpha'] = o.alpha;
  if (o.beta !== undefined && o.beta !== 1) attrs['beta'] = o.beta;
  return apply1('Gemm', c === null ? [a, b] : [a, b, c], attrs);
}

export const reduceSum = (a: Value, axes: readonly number[], keepdims = true): Value =>
  apply1('ReduceSum', [a, ints(axes)], { keepdims: keepdims ? 1 : 0 });
export const reduceMean = (a: Value, axes: readonly number[], keepdims = true): Value =>
  apply1('ReduceMean', [a], { axes: [...axes], keepdims: keepdims ? 1 : 0 });
export const reduceMax = (a: Value, axes: readonly number[], keepdims = true): Value =>
  apply1('ReduceMax', [a], { axes: [...axes], keepdims: keepdims ? 1 : 0 });
/** Running sum along `axis` (`exclusive`: each position's sum leaves itself out; `reverse`: from the end). */
export const cumSum = (a: Value, axis: number, o: { exclusive?: boolean; reverse?: boolean } = {}): Value =>
  apply1('CumSum', [a, constant(fromNumbers('int64', [axis]), 'int64', [])], { exclusive: o.exclusive ? 1 : 0, reverse: o.reverse ? 1 : 0 });
export const reduceSumSquare = (a: Value, axes: readonly number[], keepdims = true): Value =>
  apply1('ReduceSumSquare', [a], { axes: [...axes], keepdims: keepdims ? 1 : 0 });

/**
 * Reshape to `shape` (ONNX semantics: 0 copies, -1 infers). A symbolic dim in `shape` is read at
 * run time from the value of `a`'s graph that carries it (`shapeDims`):
 *
 *   b.reshape(x, ['batch', 'seq', 3, -1, 64])   // x [batch*seq, 3 d] -> [batch, seq, 3, heads, 64]
 */
export const reshape = (a: Value, shape: readonly Dim[]): Value =>
  apply1('Reshape', [a, isStatic(shape) ? ints(shape) : shapeDims(a, shape)]);

/**
 * `dims` as an int64 [rank] vector: a constant when every dim is a number; otherwise a Concat of
 * constants and, for each symbolic dim, a Slice of the Shape of a value in `from`'s graph (`from`
 * or an ancestor: in practice the graph input) that has the dim. Shape inference reads the dims
 * back (ops/shape.ts `runtimeDims`), so a Reshape, Expand or ConstantOfShape of it keeps them.
 */
export function shapeDims(from: Value, dims: readonly Dim[]): Value {
  if (isStatic(dims)) return ints(dims);
  const pending = new Set(dims.filter((d): d is string => typeof d === 'string'));
  const found = new Map<string, Value>();
  const look = (v: Value | null): void => {
    if (v === null) return;
    v.shape.forEach((d, k) => {
      if (typeof d === 'string' && pending.has(d)) { pending.delete(d); found.set(d, slice(shapeOf(v), [k], [k + 1], [0])); }
    });
  };
  look(from);
  for (const n of pending.size ? topoNodes([from]).reverse() : []) {
    for (const v of n.inputs) look(v);
    if (pending.size === 0) break;
  }
  if (pending.size) throw new Error(`shapeDims: no value in the graph of ${from.toString()} has the symbolic dim '${[...pending][0]}'`);
  const parts: Value[] = [];
  let run: number[] = [];
  for (const d of dims) {
    if (typeof d === 'number') { run.push(d); continue; }
    if (run.length) parts.push(ints(run));
    run = [];
    parts.push(found.get(d)!);
  }
  if (run.length) parts.push(ints(run));
  return parts.length === 1 ? parts[0]! : concat(parts, 0);
}

/** 0, 1, ..., n - 1 as int64 [n]; a symbolic n is read at run time from `from`'s graph (an exclusive CumSum of ones). */
export function arange(n: Dim, from: Value): Value {
  if (typeof n === 'number') return ints(Array.from({ length: n }, (_, i) => i));
  const ones = apply1('ConstantOfShape', [shapeDims(from, [n])], { value: { dtype: 'int64', shape: [1], data: fromNumbers('int64', [1]) } });
  return cumSum(ones, 0, { exclusive: true });
}

/** Reshape to another value's shape, through a Shape node when that shape is symbolic. */
export function reshapeLike(a: Value, like: { shape: readonly Dim[] } & Partial<Value>): Value {
  if (isStatic(like.shape)) return reshape(a, like.shape);
  if (!(like instanceof Value)) throw new Error('reshapeLike: symbolic target shape needs a value');
  return apply1('Reshape', [a, shapeOf(like)]);
}

export const transpose = (a: Value, perm: readonly number[]): Value => apply1('Transpose', [a], { perm: [...perm] });

/** Swaps the last two dims. */
export function transposeLast2(a: Value): Value {
  const perm = a.shape.map((_, i) => i);
  const r = perm.length;
  [perm[r - 1], perm[r - 2]] = [perm[r - 2]!, perm[r - 1]!];
  return transpose(a, perm);
}

export const unsqueeze = (a: Value, axes: readonly number[]): Value => apply1('Unsqueeze', [a, ints(axes)]);
export const squeeze = (a: Value, axes: readonly number[]): Value => apply1('Squeeze', [a, ints(axes)]);
export const expand = (a: Value, shape: readonly number[]): Value => apply1('Expand', [a, ints(shape)]);
export const concat = (xs: readonly Value[], axis: number): Value => apply1('Concat', xs, { axis });
export const split = (a: Value, sizes: readonly number[], axis: number): Value[] =>
  apply('Split', [a, ints(sizes)], { axis });
export function slice(a: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): Value {
  const ins = [a, ints(starts), ints(ends), ints(axes)];
  if (steps !== undefined) ins.push(ints(steps));
  return apply1('Slice', ins);
}
export const gather = (data: Value, indices: Value, axis = 0): Value => apply1('Gather', [data, indices], { axis });
export const gatherElements = (data: Value, indices: Value, axis: number): Value =>
  apply1('GatherElements', [data, indices], { axis });
export const scatterAdd = (data: Value, indices: Value, updates: Value, axis: number): Value =>
  apply1('ScatterElements', [data, indices, updates], { axis, reduction: 'add' });
export const pad = (a: Value, pads: readonly number[]): Value => apply1('Pad', [a, ints(pads)]);

export function layerNorm(x: Value, scale: Value, bias: Value | null, axis = -1, epsilon = 1e-5): Value {
  // All three outputs: the gradient reads the saved Mean/InvStdDev instead of recomputing them.
  return apply('LayerNormalization', bias === null ? [x, scale] : [x, scale, bias], { axis, epsilon }, 3)[0]!;
}

/** Padding mode of a window (ONNX auto_pad). SAME_* pad so that out = ceil(in / stride). */
export type AutoPad = 'NOTSET' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';

/** Window attributes shared by Conv, ConvTranspose and the pools; one entry per spatial dim. */
export interface WindowOptions {
  /** Step between windows; default 1. */
  strides?: readonly number[];
  /** Explicit pads [begin_0, begin_1, ..., end_0, end_1, ...]; default 0. Only with autoPad NOTSET. */
  pads?: readonly number[];
  /** Resolves the pads from the input size instead; default NOTSET (use `pads`). */
  autoPad?: AutoPad;
}

export interface ConvOptions extends WindowOptions {
  /** Spacing between kernel taps; default 1. */
  dilations?: readonly number[];
  /** Channel groups: C and M split into `group` independent convolutions (C for depthwise); default 1. */
  group?: number;
}

export interface ConvTransposeOptions extends ConvOptions {
  /** Extra output rows at the end, each < stride; default 0. */
  outputPadding?: readonly number[];
  /** The output's spatial size; the pads are derived from it. */
  outputShape?: readonly number[];
}

export interface MaxPoolOptions extends WindowOptions {
  dilations?: readonly number[];
  /** Round the output size up (a last, partial window); default false. */
  ceilMode?: boolean;
}

export interface AveragePoolOptions extends WindowOptions {
  /** Divide by the kernel size (true) or by the window's elements inside the input (false, default). */
  countIncludePad?: boolean;
  /** Accepted only where it does not change the output size. */
  ceilMode?: boolean;
}

export interface BatchNormOptions {
  /** Normalize with the batch's statistics and return updated running ones; default false. */
  training?: boolean;
  /** Added to the variance; default 1e-5. */
  epsilon?: number;
  /** running = momentum * running + (1 - momentum) * batch; default 0.9. */
  momentum?: number;
}

/** ONNX attributes of window options, defaults left out so exported nodes stay minimal. */
function windowAttrs(o: WindowOptions & { dilations?: readonly number[]; group?: number; ceilMode?: boolean }): Record<string, number | string | number[]> {
  const a: Record<string, number | string | number[]> = {};
  if (o.strides !== undefined) a['strides'] = [...o.strides];
  if (o.pads !== undefined) a['pads'] = [...o.pads];
  if (o.dilations !== undefined) a['dilations'] = [...o.dilations];
  if (o.autoPad !== undefined && o.autoPad !== 'NOTSET') a['auto_pad'] = o.autoPad;
  if (o.group !== undefined && o.group !== 1) a['group'] = o.group;
  if (o.ceilMode) a['ceil_mode'] = 1;
  return a;
}

/**
 * Convolution: Y[n, m, o] = B[m] + sum_{c in group(m), k} W[m, c, k] Xpad[n, c, o s + k d].
 * X [N, C, S...], W [M, C / group, k...], B [M] or null. 1-, 2- and 3-D.
 *
 *   conv(x, w, bias, { strides: [2, 2], pads: [1, 1, 1, 1] })
 */
export const conv = (x: Value, w: Value, bias: Value | null, o: ConvOptions = {}): Value =>
  apply1('Conv', bias === null ? [x, w] : [x, w, bias], windowAttrs(o));

/** Transposed convolution (the adjoint of `conv` in X). X [N, C, S...], W [C, M / group, k...], B [M] or null. */
export function convTranspose(x: Value, w: Value, bias: Value | null, o: ConvTransposeOptions = {}): Value {
  const a = windowAttrs(o);
  if (o.outputPadding !== undefined) a['output_padding'] = [...o.outputPadding];
  if (o.outputShape !== undefined) a['output_shape'] = [...o.outputShape];
  return apply1('ConvTranspose', bias === null ? [x, w] : [x, w, bias], a);
}

/**
 * Batch normalization per channel (axis 1) over N and the spatial dims:
 * Y = (X - mean) / sqrt(var + epsilon) * scale + bias. In training the batch's mean and biased
 * variance are used; returns [Y, running_mean, running_var] (in eval, the given statistics).
 */
export function batchNorm(x: Value, scale: Value, bias: Value, mean: Value, variance: Value, o: BatchNormOptions = {}): [Value, Value, Value] {
  const a: Record<string, number> = {};
  if (o.epsilon !== undefined) a['epsilon'] = o.epsilon;
  if (o.momentum !== undefined) a['momentum'] = o.momentum;
  if (o.training) a['training_mode'] = 1;
  const outs = apply('BatchNormalization', [x, scale, bias, mean, variance], a, o.training ? 3 : 1);
  return o.training ? [outs[0]!, outs[1]!, outs[2]!] : [outs[0]!, mean, variance];
}

/** Max pooling; returns [Y, Indices] (int64 positions in X flattened over [N, C, S...]). */
export function maxPool(x: Value, kernel: readonly number[], o: MaxPoolOptions = {}): [Value, Value] {
  const [y, idx] = apply('MaxPool', [x], { kernel_shape: [...kernel], ...windowAttrs(o) }, 2);
  return [y!, idx!];
}

/** Average pooling: the window's sum over the kernel size or over its elements inside X (`countIncludePad`). */
export function averagePool(x: Value, kernel: readonly number[], o: AveragePoolOptions = {}): Value {
  const a: Record<string, number | string | number[]> = { kernel_shape: [...kernel], ...windowAttrs(o) };
  if (o.countIncludePad) a['count_include_pad'] = 1;
  return apply1('AveragePool', [x], a);
}

/** Mean over the spatial dims: [N, C, S...] -> [N, C, 1, ...]. */
export const globalAveragePool = (x: Value): Value => apply1('GlobalAveragePool', [x]);

/** Collapses dims [0, axis) and [axis, rank) into a 2-D [outer, inner]. */
export const flatten = (x: Value, axis = 1): Value => apply1('Flatten', [x], { axis });

/** Dropout in training mode; returns [output, mask]. */
export function dropout(x: Value, ratio: number, seed?: number): [Value, Value] {
  const attrs: Record<string, number> = seed === undefined ? {} : { seed };
  const [y, mask] = apply('Dropout', [x, scalarLike(ratio, x), constant(new Uint8Array([1]), 'bool', [])], attrs);
  return [y!, mask!];
}

/** Broadcasts `a` to `like`'s shape (through a Shape node when that shape is symbolic). */
export function expandLike(a: Value, like: Value): Value {
  if (a.shape.length === like.shape.length && a.shape.every((d, i) => d === like.shape[i])) return a;
  return apply1('Expand', [a, isStatic(like.shape) ? ints(like.shape) : shapeOf(like)]);
}

/** Zeros of a static shape. */
export function zeros(shape: readonly number[], dtype: DType): Value {
  return apply1('ConstantOfShape', [ints(shape)], { value: { dtype, shape: [1], data: fromNumbers(dtype, [0]) } });
}

/** Zeros shaped like `a` (static shapes fold to one constant-of-shape node). */
export function zerosLike(a: Value): Value {
  const shape = isStatic(a.shape) ? ints(a.shape) : shapeOf(a);
  const value = { dtype: a.dtype, shape: [1], data: fromNumbers(a.dtype, [0]) };
  return apply1('ConstantOfShape', [shape], { value });
}

/** Mean cross-entropy of `logits` [..., V] against integer `targets` [...], from LogSoftmax + GatherElements. */
export function crossEntropy(logits: Value, targets: Value): Value {
  const lp = logSoftmax(logits, -1);
  const picked = gatherElements(lp, unsqueeze(cast(targets, 'int64'), [-1]), logits.rank - 1);
  const axes = picked.shape.map((_, i) => i);
  return neg(reduceMean(picked, axes, false));
}

/** Sums `g` down to `shape` (the one place broadcast gradients are reduced). */
export function unbroadcast(g: Value, shape: readonly Dim[]): Value {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) axes.push(i);
  }
  let r = axes.length > 0 ? reduceSum(g, axes, true) : g;
  if (lead > 0) r = squeeze(r, Array.from({ length: lead }, (_, i) => i));
  return r;
}


const codeOf = (d: DType): number => ONNX_CODE[d];

// Every graph is built through this module, so loading it registers every op. The op modules
// import this one back; they only call builders inside rules, never while loading, so the cycle
// is safe.
import './ops/index.js';
