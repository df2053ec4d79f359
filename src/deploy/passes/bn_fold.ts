/**
 * BatchNormalization at inference folded into the Conv, Gemm or MatMul that feeds it. With
 * f = scale / sqrt(var + epsilon) per channel c (axis 1 of the product's result):
 *   W'[c, ...] = W[c, ...] * f[c]          (Conv: W is [M, C/group, k...]; Gemm/MatMul: column c of B)
 *   b'[c] = (b[c] - mean[c]) * f[c] + B[c]  (b: the Conv's bias or Gemm's beta * C, 0 when absent)
 * computed in float64 and stored in the weight's type, as new initializers (the old ones may have
 * other readers). A MatMul becomes a Gemm with C = b'.
 *
 * Refused: training mode (training_mode = 1, or the running statistics read back), non-constant
 * scale, B, mean, var or weights, a product whose result anything else reads (or a graph output),
 * a MatMul whose A is not known to be 2-D (its axis 1 would not be B's columns), channel counts
 * that disagree, and weights of types other than float32, float64 and float16.
 */
import { fromNumbers } from '../../ir/dtype.js';
import type { DType } from '../../ir/dtype.js';
import type { OnnxGraph } from '../../ir/onnx/model.js';
import { attrInt, attrFloat, attrs, tensorOf } from '../../ir/onnx/model.js';
import { namer } from '../graph.js';
import type { Numbers, PassContext } from './common.js';
import { eachNode, isOnnx, isRead, numbersOf, removeNode, typesOf, withAttr } from './common.js';

const FLOATS = new Set<DType>(['float32', 'float64', 'float16']);

export function foldBatchNorms(g: OnnxGraph, ctx: PassContext): number {
  const types = typesOf(g, ctx);
  const fresh = namer(g);
  return eachNode(g, (bn, idx) => {
    if (!isOnnx(bn, 'BatchNormalization') || attrInt(bn, 'training_mode', 0) !== 0) return false;
    if (bn.outputs.slice(1).some((o) => isRead(idx, o))) return false;
    const [x, ...rest] = bn.inputs;
    const stats = rest.map((name) => numbersOf(idx, name));
    if (x === undefined || stats.length !== 4 || stats.some((s) => s === null)) return false;
    const [scale, bias, mean, variance] = stats as [Numbers, Numbers, Numbers, Numbers];
    const eps = attrFloat(bn, 'epsilon', 1e-5);
    const f = scale.values.map((s, c) => s / Math.sqrt(variance.values[c]! + eps));
    const shift = (b: number, c: number): number => (b - mean.values[c]!) * f[c]! + bias.values[c]!;
    const p = idx.producer(x);
    if (p === undefined || !idx.onlyReadBy(x, bn) || f.some((v) => !Number.isFinite(v))) return false;
    const C = f.length;
    if ([bias, mean, variance].some((v) => v.values.length !== C)) return false;

    if (isOnnx(p, 'Conv')) {
      const w = numbersOf(idx, p.inputs[1] ?? '');
      const b = (p.inputs[2] ?? '') === '' ? null : numbersOf(idx, p.inputs[2]!);
      if (w === null || !FLOATS.has(w.dtype) || w.dims[0] !== C || ((p.inputs[2] ?? '') !== '' && (b === null || b.values.length !== C))) return false;
      const per = w.values.length / C;
      const w2 = w.values.map((v, i) => v * f[Math.floor(i / per)]!);
      const b2 = f.map((_, c) => shift(b?.values[c] ?? 0, c));
      p.inputs = [p.inputs[0]!, addInit(g, fresh, `${p.inputs[1]}_bn`, w.dtype, w.dims, w2), addInit(g, fresh, `${bn.outputs[0]}_bias`, w.dtype, [C], b2)];
    } else if (isOnnx(p, 'Gemm') || isOnnx(p, 'MatMul')) {
      const gemm = p.op === 'Gemm';
      if (!gemm && (types.get(p.inputs[0] ?? '')?.shape?.length ?? -1) !== 2) return false;
      const w = numbersOf(idx, p.inputs[1] ?? '');
      const transB = gemm && attrInt(p, 'transB', 0) === 1;
      if (w === null || !FLOATS.has(w.dtype) || w.dims.length !== 2 || w.dims[transB ? 0 : 1] !== C) return false;
      const w2 = w.values.map((v, i) => v * f[transB ? Math.floor(i / w.dims[1]!) : i % C]!);
      // beta * C, read as [rows, N] with broadcasting (rows 1 unless C is [M, N] or [M, 1]).
      const c = gemm && (p.inputs[2] ?? '') !== '' ? numbersOf(idx, p.inputs[2]!) : null;
      if (gemm && (p.inputs[2] ?? '') !== '' && c === null) return false;
      const beta = gemm ? attrFloat(p, 'beta', 1) : 1;
      let rows = 1;
      let at = (_r: number, _n: number): number => 0;
      if (c !== null) {
        const d = c.dims.length === 0 ? [1, 1] : c.dims.length === 1 ? [1, c.dims[0]!] : c.dims;
        if (d.length !== 2 || (d[1] !== 1 && d[1] !== C)) return false;
        rows = d[0]!;
        at = (r, n) => beta * c.values[r * d[1]! + (d[1] === 1 ? 0 : n)]!;
      }
      const c2 = Array.from({ length: rows * C }, (_, i) => shift(at(Math.floor(i / C), i % C), i % C));
      const dims = rows === 1 ? [C] : [rows, C];
      p.inputs = [p.inputs[0]!, addInit(g, fresh, `${p.inputs[1]}_bn`, w.dtype, w.dims, w2), addInit(g, fresh, `${bn.outputs[0]}_bias`, w.dtype, dims, c2)];
      if (gemm) p.attrs = withAttr(p, attrs.float('beta', 1));
      else { p.op = 'Gemm'; p.attrs = []; }
    } else return false;
    p.outputs = [bn.outputs[0]!];
    removeNode(g, bn);
    return true;
  });
}

function addInit(g: OnnxGraph, fresh: (base: string) => string, base: string, dtype: DType, dims: number[], values: number[]): string {
  const name = fresh(base);
  g.initializers.push(tensorOf(name, dtype, dims, fromNumbers(dtype, values)));
  return name;
}

