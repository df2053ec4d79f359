/**
 * Element types and shapes of a decoded graph's names, as far as they follow from the graph
 * inputs, initializers, value_info and the rules below for common ONNX ops. A dim is a number, a
 * symbol (dim_param: two equal symbols are the same size) or null (unknown); an unknown op, or a
 * rule whose inputs are unknown, gives elemType 0 and shape null, and value_info fills in what a
 * rule cannot say. Passes only ever ask "is this known and equal", so unknown is always safe.
 */
import { toNumbers } from '../../ir/dtype.js';
import type { OnnxGraph, OnnxNode, OnnxTensor } from '../../ir/onnx/model.js';
import { attr, attrInt, attrInts, attrString, tensorDtype } from '../../ir/onnx/model.js';
import { GraphIndex } from '../graph.js';

export type Dim = number | string | null;
export interface ValueType { elemType: number; shape: Dim[] | null }

const INT64 = 7;
const BOOL = 9;
const FLOAT = 1;

/** Ops whose output 0 has input 0's type and shape. */
const SAME = new Set([
  'Abs', 'Acos', 'Acosh', 'Asin', 'Asinh', 'Atan', 'Atanh', 'Ceil', 'Celu', 'Clip', 'Cos', 'Cosh', 'CumSum', 'Elu', 'Erf', 'Exp',
  'Floor', 'Gelu', 'HardSigmoid', 'HardSwish', 'Hardmax', 'Identity', 'InstanceNormalization', 'LeakyRelu', 'Log', 'LogSoftmax',
  'LpNormalization', 'LRN', 'MeanVarianceNormalization', 'Mish', 'Neg', 'Reciprocal', 'Relu', 'Round', 'Selu', 'Shrink', 'Sigmoid',
  'Sign', 'Sin', 'Sinh', 'Softmax', 'Softplus', 'Softsign', 'Sqrt', 'Tan', 'Tanh', 'ThresholdedRelu', 'BatchNormalization',
  'LayerNormalization', 'GroupNormalization', 'Dropout', 'Trilu', 'ReverseSequence',
]);
const BOOL_SAME = new Set(['Not', 'IsNaN', 'IsInf']);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Mod', 'Sum', 'Mean', 'PRelu', 'BitShift', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor']);
const BOOL_BROADCAST = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor']);
const REDUCE = new Set(['ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);
const POOL = new Set(['MaxPool', 'AveragePool', 'LpPool']);

/** Every op some rule here knows (the report's "passed through" lists the others). */
export const KNOWN_OPS: ReadonlySet<string> = new Set([
  ...SAME, ...BOOL_SAME, ...BROADCAST, ...BOOL_BROADCAST, ...REDUCE, ...POOL, 'Where', 'Cast', 'CastLike', 'MatMul', 'Gemm', 'Conv',
  'GlobalAveragePool', 'GlobalMaxPool', 'Flatten', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Concat', 'Slice', 'Gather', 'Shape',
  'Size', 'Constant', 'ConstantOfShape', 'Expand', 'Pad', 'Tile', 'ArgMax', 'ArgMin', 'QuantizeLinear', 'DequantizeLinear',
]);

export const dimsEqual = (a: Dim, b: Dim): boolean => a !== null && a === b;
export const shapesEqual = (a: Dim[] | null, b: Dim[] | null): boolean => a !== null && b !== null && a.length === b.length && a.every((d, i) => dimsEqual(d, b[i]!));
export const isStatic = (s: Dim[] | null): s is number[] => s !== null && s.every((d) => typeof d === 'number');

/** Numpy broadcasting of known ranks; a dim no rule settles is null. */
export function broadcast(shapes: (Dim[] | null)[]): Dim[] | null {
  if (shapes.some((s) => s === null)) return null;
  const ss = shapes as Dim[][];
  const r = Math.max(0, ...ss.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < r; i++) {
    // A missing leading dim broadcasts as 1; an unknown one (null) stays unknown.
    const ds = ss.map((s) => (s.length - r + i < 0 ? 1 : s[s.length - r + i]!)).filter((d) => d !== 1);
    const n = ds.find((d) => typeof d === 'number');
    const syms = ds.filter((d): d is string => typeof d === 'string');
    if (ds.length === 0) out.push(1);
    else if (n !== undefined) out.push(n);
    else if (syms.length > 0 && syms.every((d) => d === syms[0])) out.push(syms[0]!);
    else out.push(null);
  }
  return out;
}

const prod = (ds: Dim[]): number | null => ds.reduce<number | null>((p, d) => (p !== null && typeof d === 'number' ? p * d : null), 1);
const norm = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

export function inferTypes(g: OnnxGraph, opset: number): Map<string, ValueType> {
  const idx = new GraphIndex(g);
  const types = new Map<string, ValueType>();
  const hints = new Map<string, ValueType>();
  for (const v of [...g.valueInfo, ...g.outputs, ...g.inputs]) if (v.raw === undefined) hints.set(v.name, { elemType: v.elemType, shape: v.shape });
  for (const v of g.inputs) if (v.raw === undefined) types.set(v.name, { elemType: v.elemType, shape: v.shape });
  for (const t of g.initializers) if (!types.has(t.name)) types.set(t.name, { elemType: t.elemType, shape: [...t.dims] });
  const ints = (name: string | undefined): number[] | null => {
    if (name === undefined || name === '') return null;
    const t = idx.constant(name);
    return t === undefined || t.data === null ? null : toNumbers(t.data, tensorDtype(t)!);
  };
  const get = (name: string | undefined): ValueType => (name === undefined || name === '' ? UNKNOWN : types.get(name) ?? UNKNOWN);
  for (const n of g.nodes) {
    let outs: ValueType[] = [];
    try { outs = rule(n, get, ints, opset); } catch { outs = []; }
    n.outputs.forEach((o, k) => {
      if (o === '') return;
      types.set(o, merge(outs[k] ?? UNKNOWN, hints.get(o)));
    });
  }
  return types;
}

const UNKNOWN: ValueType = { elemType: 0, shape: null };

function merge(a: ValueType, hint: ValueType | undefined): ValueType {
  if (hint === undefined) return a;
  const elemType = a.elemType || hint.elemType;
  if (a.shape === null || hint.shape === null || a.shape.length !== hint.shape.length) return { elemType, shape: a.shape ?? hint.shape };
  return { elemType, shape: a.shape.map((d, i) => (typeof d === 'number' ? d : hint.shape![i] ?? d)) };
}

type Get = (name: string | undefined) => ValueType;
type Ints = (name: string | undefined) => number[] | null;

function rule(n: OnnxNode, get: Get, ints: Ints, opset: number): ValueType[] {
  if (n.domain !== '' && n.domain !== 'ai.onnx') return [];
  const x = get(n.inputs[0]);
  const s = x.shape;
  const t = (shape: Dim[] | null, elemType = x.elemType): ValueType => ({ elemType, shape });
  const op = n.op;
  if (SAME.has(op)) return op === 'Dropout' ? [t(s), t(s, BOOL)] : [t(s)];
  if (BOOL_SAME.has(op)) return [t(s, BOOL)];
  if (BROADCAST.has(op)) return [t(broadcast(n.inputs.map((i) => get(i).shape)))];
  if (BOOL_BROADCAST.has(op)) return [t(broadcast(n.inputs.map((i) => get(i).shape)), BOOL)];
  switch (op) {
    case 'Where': return [t(broadcast(n.inputs.map((i) => get(i).shape)), get(n.inputs[1]).elemType)];
    case 'Cast': return [t(s, attrInt(n, 'to', 0))];
    case 'CastLike': return [t(s, get(n.inputs[1]).elemType)];
    case 'MatMul': return [t(matmul(s, get(n.inputs[1]).shape))];
    case 'Gemm': {
      const b = get(n.inputs[1]).shape;
      if (s === null || b === null || s.length !== 2 || b.length !== 2) return [t(null)];
      return [t([s[attrInt(n, 'transA', 0) ? 1 : 0]!, b[attrInt(n, 'transB', 0) ? 0 : 1]!])];
    }
    case 'Conv': {
      const w = get(n.inputs[1]).shape;
      if (s === null || w === null) return [t(null)];
      const k = attrInts(n, 'kernel_shape') ?? w.slice(2);
      return [t([s[0]!, w[0]!, ...spatial(n, s.slice(2), k)])];
    }
    case 'GlobalAveragePool': case 'GlobalMaxPool': return [t(s === null ? null : [s[0]!, s[1]!, ...s.slice(2).map(() => 1)])];
    case 'Flatten': {
      if (s === null) return [t(null)];
      const a = norm(attrInt(n, 'axis', 1), s.length);
      return [t([prod(s.slice(0, a)), prod(s.slice(a))])];
    }
    case 'Reshape': return [t(reshape(s, ints(n.inputs[1]), attrInt(n, 'allowzero', 0) === 1))];
    case 'Transpose': {
      if (s === null) return [t(null)];
      const p = attrInts(n, 'perm') ?? s.map((_, i) => s.length - 1 - i);
      return [t(p.map((i) => s[i]!))];
    }
    case 'Squeeze': {
      const axes = opset >= 13 ? ints(n.inputs[1]) : attrInts(n, 'axes') ?? null;
      if (s === null) return [t(null)];
      if (axes === null) return [t(n.inputs.length > 1 && opset >= 13 ? null : s.every((d) => typeof d === 'number') ? s.filter((d) => d !== 1) : null)];
      const drop = new Set(axes.map((a) => norm(a, s.length)));
      return [t(s.filter((_, i) => !drop.has(i)))];
    }
    case 'Unsqueeze': {
      const axes = opset >= 13 ? ints(n.inputs[1]) : attrInts(n, 'axes') ?? null;
      if (s === null || axes === null) return [t(null)];
      const r = s.length + axes.length;
      const add = new Set(axes.map((a) => norm(a, r)));
      const out: Dim[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) out.push(add.has(i) ? 1 : s[j++]!);
      return [t(out)];
    }
    case 'Concat': {
      const ss = n.inputs.map((i) => get(i).shape);
      if (ss.some((q) => q === null) || ss.length === 0) return [t(null)];
      const r = ss[0]!.length;
      const a = norm(attrInt(n, 'axis', 0), r);
      const along = ss.map((q) => q![a]);
      const sum = along.every((d) => typeof d === 'number') ? (along as number[]).reduce((p, q) => p + q, 0) : null;
      return [t(ss[0]!.map((d, i) => (i === a ? sum : ss.map((q) => q![i]!).find((e) => typeof e === 'number') ?? d)))];
    }
    case 'Slice': return [t(slice(n, s, ints, opset))];
    case 'Gather': {
      const i = get(n.inputs[1]).shape;
      if (s === null || i === null) return [t(null)];
      const a = norm(attrInt(n, 'axis', 0), s.length);
      return [t([...s.slice(0, a), ...i, ...s.slice(a + 1)])];
    }
    case 'Shape': {
      if (s === null) return [t([null], INT64)];
      const r = s.length;
      const clamp = (v: number): number => Math.min(r, Math.max(0, norm(v, r)));
      return [t([Math.max(0, clamp(attrInt(n, 'end', r)) - clamp(attrInt(n, 'start', 0)))], INT64)];
    }
    case 'Size': return [t([], INT64)];
    case 'Constant': return [constantType(n)];
    case 'ConstantOfShape': {
      const v = attr(n, 'value') as OnnxTensor | undefined;
      const d = ints(n.inputs[0]);
      return [t(d, v?.elemType ?? FLOAT)];
    }
    case 'Expand': {
      const d = ints(n.inputs[1]);
      return [t(d === null ? null : broadcast([s, d]))];
    }
    case 'Pad': {
      const pads = opset >= 11 ? ints(n.inputs[1]) : attrInts(n, 'pads') ?? null;
      if (s === null || pads === null || (n.inputs[3] ?? '') !== '' || pads.length !== 2 * s.length) return [t(null)];
      return [t(s.map((d, i) => (typeof d === 'number' ? d + pads[i]! + pads[i + s.length]! : pads[i] === 0 && pads[i + s.length] === 0 ? d : null)))];
    }
    case 'Tile': {
      const r = ints(n.inputs[1]);
      if (s === null || r === null) return [t(null)];
      return [t(s.map((d, i) => (typeof d === 'number' ? d * r[i]! : r[i] === 1 ? d : null)))];
    }
    case 'ArgMax': case 'ArgMin': {
      if (s === null) return [t(null, INT64)];
      const a = norm(attrInt(n, 'axis', 0), s.length);
      return [t(attrInt(n, 'keepdims', 1) ? s.map((d, i) => (i === a ? 1 : d)) : s.filter((_, i) => i !== a), INT64)];
    }
    case 'QuantizeLinear': return [t(s, attrInt(n, 'output_dtype', 0) || get(n.inputs[2]).elemType || 2)];
    case 'DequantizeLinear': return [t(s, attrInt(n, 'output_dtype', 0) || get(n.inputs[1]).elemType)];
    default: break;
  }
  if (REDUCE.has(op)) {
    const axesFromInput = opset >= 18 || (op === 'ReduceSum' && opset >= 13);
    const axes = axesFromInput ? (n.inputs.length > 1 && n.inputs[1] !== '' ? ints(n.inputs[1]) : []) : attrInts(n, 'axes') ?? [];
    if (s === null || axes === null) return [t(null)];
    if (axes.length === 0 && attrInt(n, 'noop_with_empty_axes', 0)) return [t(s)];
    const red = new Set(axes.length === 0 ? s.map((_, i) => i) : axes.map((a) => norm(a, s.length)));
    return [t(attrInt(n, 'keepdims', 1) ? s.map((d, i) => (red.has(i) ? 1 : d)) : s.filter((_, i) => !red.has(i)))];
  }
  if (POOL.has(op)) {
    if (s === null || attrInt(n, 'ceil_mode', 0) !== 0) return [t(null)];
    const out = t([s[0]!, s[1]!, ...spatial(n, s.slice(2), attrInts(n, 'kernel_shape') ?? [])]);
    return [out, t(out.shape, INT64)];
  }
  return [];
}

function constantType(n: OnnxNode): ValueType {
  const a = n.attrs[0];
  if (a === undefined) return UNKNOWN;
  if (a.name === 'value' && a.type === 4) { const v = a.value as OnnxTensor; return { elemType: v.elemType, shape: [...v.dims] }; }
  if (a.name === 'value_float') return { elemType: FLOAT, shape: [] };
  if (a.name === 'value_int') return { elemType: INT64, shape: [] };
  if (a.name === 'value_floats') return { elemType: FLOAT, shape: [(a.value as number[]).length] };
  if (a.name === 'value_ints') return { elemType: INT64, shape: [(a.value as number[]).length] };
  return UNKNOWN;
}

function matmul(a: Dim[] | null, b: Dim[] | null): Dim[] | null {
  if (a === null || b === null || a.length === 0 || b.length === 0) return null;
  const a2 = a.length === 1 ? [1, a[0]!] : a;
  const b2 = b.length === 1 ? [b[0]!, 1] : b;
  const batch = broadcast([a2.slice(0, -2), b2.slice(0, -2)]);
  if (batch === null) return null;
  return [...batch, ...(a.length === 1 ? [] : [a2[a2.length - 2]!]), ...(b.length === 1 ? [] : [b2[b2.length - 1]!])];
}

/** Spatial output dims of a convolution or pooling window (ceil_mode 0). */
function spatial(n: OnnxNode, input: Dim[], kernel: Dim[]): Dim[] {
  const r = input.length;
  const strides = attrInts(n, 'strides') ?? input.map(() => 1);
  const dil = attrInts(n, 'dilations') ?? input.map(() => 1);
  const pads = attrInts(n, 'pads') ?? input.map(() => 0).concat(input.map(() => 0));
  const auto = attrString(n, 'auto_pad') ?? 'NOTSET';
  return input.map((d, i) => {
    const k = kernel[i];
    if (typeof d !== 'number' || typeof k !== 'number') return null;
    const span = dil[i]! * (k - 1) + 1;
    if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') return Math.ceil(d / strides[i]!);
    const p = auto === 'VALID' ? 0 : pads[i]! + pads[i + r]!;
    return Math.floor((d + p - span) / strides[i]!) + 1;
  });
}

function reshape(s: Dim[] | null, target: number[] | null, allowzero: boolean): Dim[] | null {
  if (target === null) return null;
  const out: Dim[] = target.map((v, i) => (v === 0 && !allowzero ? s?.[i] ?? null : v === -1 ? -1 : v));
  const k = out.indexOf(-1);
  if (k < 0) return out;
  out[k] = null;
  if (s === null) return out;
  // -1 is the input's size over the others': symbols cancel when both sides hold the same ones.
  const syms = (ds: Dim[]): string[] => ds.filter((d): d is string => typeof d === 'string').sort();
  const others = out.filter((_, i) => i !== k);
  if (s.some((d) => d === null) || others.some((d) => d === null)) return out;
  const a = syms(s);
  const b = syms(others);
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) return out;
  const num = (ds: Dim[]): number => ds.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
  const den = num(others);
  if (den !== 0 && num(s) % den === 0) out[k] = num(s) / den;
  return out;
}

const INT_MAX = 2 ** 31 - 1;

/** Slice parameters as numbers, normalized to one entry per sliced axis (null when not constant). */
export function sliceParams(n: OnnxNode, ints: Ints, opset: number, rank: number | null): { axes: number[]; starts: number[]; ends: number[]; steps: number[] } | null {
  const starts = opset >= 10 ? ints(n.inputs[1]) : attrInts(n, 'starts') ?? null;
  const ends = opset >= 10 ? ints(n.inputs[2]) : attrInts(n, 'ends') ?? null;
  if (starts === null || ends === null || starts.length !== ends.length) return null;
  const axesIn = opset >= 10 ? (n.inputs[3] ?? '') === '' ? null : ints(n.inputs[3]) : attrInts(n, 'axes') ?? null;
  if (opset >= 10 && (n.inputs[3] ?? '') !== '' && axesIn === null) return null;
  const stepsIn = opset >= 10 && (n.inputs[4] ?? '') !== '' ? ints(n.inputs[4]) : null;
  if (opset >= 10 && (n.inputs[4] ?? '') !== '' && stepsIn === null) return null;
  let axes = axesIn ?? starts.map((_, i) => i);
  if (axes.some((a) => a < 0)) {
    if (rank === null) return null;
    axes = axes.map((a) => norm(a, rank));
  }
  return { axes, starts, ends, steps: stepsIn ?? starts.map(() => 1) };
}

function slice(n: OnnxNode, s: Dim[] | null, ints: Ints, opset: number): Dim[] | null {
  if (s === null) return null;
  const p = sliceParams(n, ints, opset, s.length);
  if (p === null) return null;
  const out = [...s];
  p.axes.forEach((a, j) => {
    const d = s[a];
    const [st, en, step] = [p.starts[j]!, p.ends[j]!, p.steps[j]!];
    if (typeof d !== 'number') { out[a] = st === 0 && step === 1 && en >= INT_MAX ? d ?? null : null; return; }
    out[a] = sliceLength(d, st, en, step);
  });
  return out;
}

/** The number of elements Slice takes from a dim of size d (ONNX's clamping rules). */
export function sliceLength(d: number, start: number, end: number, step: number): number {
  const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));
  let st = start < 0 ? start + d : start;
  let en = end < 0 ? end + d : end;
  if (step > 0) { st = clamp(st, 0, d); en = clamp(en, 0, d); } else { st = clamp(st, 0, d - 1); en = clamp(en, -1, d - 1); }
  return Math.max(0, Math.ceil((en - st) / step));
}
