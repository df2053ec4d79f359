/**
 * Quantization ops: ONNX's Round, Clip, QuantizeLinear and DequantizeLinear (opset 13 forms, per
 * tensor or per axis), and `weft.FakeQuantize`, a composite that quantizes and dequantizes in one
 * step for quantization-aware training (ir/qat.ts):
 *
 *   q = clamp(round(x / s) + zp, qmin, qmax)      (round half to even, as QuantizeLinear)
 *   y = (q - zp) * s                               (DequantizeLinear)
 *
 * Its gradient is PyTorch FakeQuantize's clipped straight-through estimator: dx = dy where the
 * unclamped round(x / s) + zp lies in [qmin, qmax] (x within the representable range
 * [(qmin - zp) s, (qmax - zp) s], give or take half a step at its ends), 0 elsewhere. Scale and
 * zero point carry no gradient: they come from observers (min/max of the batch, or frozen), not
 * learned (that would be LSQ, Esser et al. 2019).
 */
import * as b from '../build.js';
import type { DType } from '../dtype.js';
import { isFloat } from '../dtype.js';
import type { Value } from '../graph.js';
import { defineOp } from '../registry.js';
import type { InferCtx } from '../registry.js';
import { normAxis } from '../shape.js';
import { requireFloat, sameDtype, unaryFloat } from './common.js';

/** The integer types a fake quantizer rounds to, and their ranges. */
export type QuantDType = 'uint8' | 'int8' | 'int32';
export const QRANGE: Readonly<Record<QuantDType, readonly [number, number]>> = {
  uint8: [0, 255], int8: [-128, 127], int32: [-2147483648, 2147483647],
};

const quantDType = (c: InferCtx, d: string): QuantDType => {
  if (d !== 'uint8' && d !== 'int8' && d !== 'int32') c.fail(`attribute dtype must be 'uint8', 'int8' or 'int32', got '${d}'`);
  return d;
};

defineOp({ name: 'Round', inputs: ['X'], infer: unaryFloat, grad: () => [null] });

/** Clip(x, min, max); the gradient passes where min <= x <= max (torch.clamp's). */
defineOp({
  name: 'Clip', inputs: ['input', 'min?', 'max?'], nondiff: [1, 2],
  infer: (c) => {
    requireFloat(c, 0);
    sameDtype(c);
    for (const i of [1, 2]) if (c.inputs[i] && c.inputs[i]!.rank !== 0) c.fail(`${c.describe(i)} must be a scalar`);
    return [{ dtype: c.input(0).dtype, shape: c.input(0).shape }];
  },
  grad: (g) => {
    const [x, dy] = [g.input(0), g.dy[0]!];
    let keep: Value | null = null;
    const and = (m: Value): Value => (keep === null ? m : b.apply1('And', [keep, m]));
    if (g.inputs[1]) keep = and(b.apply1('GreaterOrEqual', [x, g.input(1)]));
    if (g.inputs[2]) keep = and(b.apply1('LessOrEqual', [x, g.input(2)]));
    return [keep === null ? dy : b.where(keep, dy, b.scalarLike(0, dy)), null, null];
  },
});

/** Scale and zero point of a (de)quantizer: a scalar, or a vector along `axis` of the data. */
function checkQParams(c: InferCtx, data: Value): void {
  const s = c.input(1);
  if (s.rank > 1) c.fail(`${c.describe(1)} must be a scalar or a vector`);
  if (s.rank === 1) {
    const axis = normAxis(c.attr<number>('axis'), data.rank, c.op);
    const n = data.shape[axis]!;
    if (typeof n === 'number' && typeof s.shape[0] === 'number' && s.shape[0] !== n) {
      c.fail(`${c.describe(1)} has ${s.shape[0]} scales for ${n} entries along axis ${axis} of ${c.describe(0)}`);
    }
  }
  const zp = c.inputs[2];
  if (zp && (zp.rank !== s.rank || zp.shape[0] !== s.shape[0])) c.fail(`${c.describe(2)} must have the scale's shape`);
}

/** y = saturate(round(x / y_scale) + y_zero_point), uint8 without a zero point. */
defineOp({
  name: 'QuantizeLinear', inputs: ['x', 'y_scale', 'y_zero_point?'], attrs: { axis: { kind: 'int', default: 1 } },
  infer: (c) => {
    const x = c.input(0);
    if (x.dtype !== 'float32') c.fail(`${c.describe(0)} must be float32, got ${x.dtype}`);
    if (c.input(1).dtype !== 'float32') c.fail(`${c.describe(1)} must be float32, got ${c.input(1).dtype}`);
    checkQParams(c, x);
    const out: DType = c.inputs[2]?.dtype ?? 'uint8';
    if (out !== 'uint8' && out !== 'int8') c.fail(`${c.describe(2)} must be uint8 or int8, got ${out}`);
    return [{ dtype: out, shape: x.shape }];
  },
});

/** y = (x - x_zero_point) * x_scale, as float32. */
defineOp({
  name: 'DequantizeLinear', inputs: ['x', 'x_scale', 'x_zero_point?'], attrs: { axis: { kind: 'int', default: 1 } },
  infer: (c) => {
    const x = c.input(0);
    if (x.dtype !== 'uint8' && x.dtype !== 'int8' && x.dtype !== 'int32') c.fail(`${c.describe(0)} must be uint8, int8 or int32, got ${x.dtype}`);
    if (c.input(1).dtype !== 'float32') c.fail(`${c.describe(1)} must be float32, got ${c.input(1).dtype}`);
    checkQParams(c, x);
    if (c.inputs[2] && c.inputs[2]!.dtype !== x.dtype) c.fail(`${c.describe(2)} must be ${x.dtype} like the data, got ${c.inputs[2]!.dtype}`);
    return [{ dtype: 'float32', shape: x.shape }];
  },
});

/** A per-axis vector shaped to broadcast along `axis` of a rank-r value; a scalar as it is. */
function alongAxis(v: Value, axis: number, rank: number): Value {
  if (v.rank === 0) return v;
  return b.reshape(v, Array.from({ length: rank }, (_, i) => (i === axis ? -1 : 1)));
}

/** round(x / s) + zp, before clamping, with s and zp broadcast along the quantized axis. */
function unclamped(x: Value, s: Value, zp: Value, axis: number): Value {
  const [sb, zb] = [alongAxis(s, axis, x.rank), alongAxis(zp, axis, x.rank)];
  return b.add(b.apply1('Round', [b.div(x, sb)]), zb);
}

/**
 * Fake quantization: y = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale,
 * [qmin, qmax] the range of `dtype`. `scale` and `zero_point` (float, integer-valued) are scalars
 * or vectors along `axis` (per channel); neither receives a gradient.
 *
 *   apply1('weft.FakeQuantize', [w, scale, zeros], { dtype: 'int8', axis: 0 })
 *
 * Lowering: float32 with a uint8 / int8 range becomes ONNX's QuantizeLinear -> DequantizeLinear
 * (the zero point cast to the integer type); other dtypes (float64 for gradient checks, the int32
 * bias range that QuantizeLinear cannot produce at opset 17) the same formula in Div, Round, Add,
 * Clip, Sub, Mul.
 */
defineOp({
  name: 'weft.FakeQuantize', inputs: ['x', 'scale', 'zero_point'], nondiff: [1, 2],
  attrs: { dtype: { kind: 'string' }, axis: { kind: 'int', default: 1 } },
  infer: (c) => {
    requireFloat(c, 0);
    quantDType(c, c.attr<string>('dtype'));
    const x = c.input(0);
    for (const i of [1, 2]) if (c.input(i).dtype !== x.dtype) c.fail(`${c.describe(i)} must be ${x.dtype} like the data, got ${c.input(i).dtype}`);
    checkQParams(c, x);
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  grad: (g) => {
    const [x, dy] = [g.input(0), g.dy[0]!];
    const [qmin, qmax] = QRANGE[quantDType(g, g.attr<string>('dtype'))];
    const axis = normAxis(g.attr<number>('axis'), x.rank, g.op);
    const q = unclamped(x, g.input(1), g.input(2), axis);
    const inside = b.apply1('And', [b.apply1('GreaterOrEqual', [q, b.scalarLike(qmin, q)]), b.apply1('LessOrEqual', [q, b.scalarLike(qmax, q)])]);
    return [b.where(inside, dy, b.scalarLike(0, dy)), null, null];
  },
  lower: (c) => {
    const [x, s, zp] = [c.input(0), c.input(1), c.input(2)];
    const dtype = quantDType(c, c.attr<string>('dtype'));
    const axis = normAxis(c.attr<number>('axis'), x.rank, c.op);
    if (x.dtype === 'float32' && dtype !== 'int32' && isFloat(s.dtype)) {
      const z = b.cast(zp, dtype);
      const attrs: Record<string, number> = s.rank === 1 ? { axis } : {};
      return [b.apply1('DequantizeLinear', [b.apply1('QuantizeLinear', [x, s, z], attrs), s, z], attrs)];
    }
    const [qmin, qmax] = QRANGE[dtype];
    const q = b.apply1('Clip', [unclamped(x, s, zp, axis), b.scalarLike(qmin, x), b.scalarLike(qmax, x)]);
    return [b.mul(b.sub(q, alongAxis(zp, axis, x.rank)), alongAxis(s, axis, x.rank))];
  },
});
