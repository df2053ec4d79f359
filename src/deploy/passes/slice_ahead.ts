/**
 * Slice moved ahead of an elementwise op, so the op runs on the slice only: Slice(f(x)) -> f(Slice(x)).
 * f is a unary elementwise op (Relu, Sigmoid, Tanh, Exp, Neg, Abs, Cast, Erf, Sqrt, Gelu, ...; Clip
 * with its scalar bounds), or a binary one with a constant operand that has size 1 (or no dim) on
 * every axis the Slice cuts and a non-constant operand of the result's rank, so the constant
 * broadcasts the same way before and after. Refused when anything but the Slice reads f's result,
 * and, for a binary f, unless the Slice's starts, ends, axes and steps are constants.
 * A chain (Slice(Relu(Add(x, b)))) moves one op per round, so the optimizer's rounds carry it up.
 */
import type { OnnxGraph } from '../../ir/onnx/model.js';
import { namer } from '../graph.js';
import type { PassContext } from './common.js';
import { eachNode, isOnnx, numbersOf, opsetOf, typesOf } from './common.js';
import { sliceParams } from './shapes.js';

const UNARY = new Set([
  'Abs', 'Acos', 'Asin', 'Atan', 'Cast', 'Ceil', 'Celu', 'Clip', 'Cos', 'Cosh', 'Elu', 'Erf', 'Exp', 'Floor', 'Gelu', 'HardSigmoid',
  'HardSwish', 'IsInf', 'IsNaN', 'LeakyRelu', 'Log', 'Mish', 'Neg', 'Not', 'Reciprocal', 'Relu', 'Round', 'Selu', 'Sigmoid', 'Sign',
  'Sin', 'Sinh', 'Softplus', 'Softsign', 'Sqrt', 'Tan', 'Tanh', 'ThresholdedRelu',
]);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'PRelu']);

export function moveSlicesAhead(g: OnnxGraph, ctx: PassContext): number {
  const types = typesOf(g, ctx);
  const opset = opsetOf(ctx, '');
  const fresh = namer(g);
  return eachNode(g, (s, idx) => {
    if (!isOnnx(s, 'Slice') || (s.outputs[0] ?? '') === '') return false;
    const t = s.inputs[0] ?? '';
    const f = idx.producer(t);
    if (f === undefined || !isOnnx(f) || f.outputs.length !== 1 || !idx.onlyReadBy(t, s)) return false;
    let k = 0; // which of f's inputs the Slice moves onto
    if (BINARY.has(f.op)) {
      if (f.inputs.length !== 2) return false;
      const consts = f.inputs.map((i) => numbersOf(idx, i));
      if ((consts[0] === null) === (consts[1] === null)) return false;
      k = consts[0] === null ? 0 : 1;
      const c = consts[1 - k]!;
      const rank = types.get(t)?.shape?.length ?? null;
      if (rank === null || types.get(f.inputs[k]!)?.shape?.length !== rank || c.dims.length > rank) return false;
      const p = sliceParams(s, (name) => (name === undefined ? null : numbersOf(idx, name)?.values ?? null), opset, rank);
      if (p === null || p.axes.some((a) => (c.dims[a - (rank - c.dims.length)] ?? 1) !== 1)) return false;
    } else if (!UNARY.has(f.op)) return false;
    const x = f.inputs[k]!;
    if (x === '') return false;
    const y = s.outputs[0]!;
    const u = fresh(`${x}_sliced`);
    s.inputs = [x, ...s.inputs.slice(1)];
    s.outputs = [u, ...s.outputs.slice(1)];
    f.inputs = f.inputs.map((i, j) => (j === k ? u : i));
    f.outputs = [y];
    return true;
  });
}
