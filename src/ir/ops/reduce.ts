import * as b from '../build.js';
import type { Value } from '../graph.js';
import { defineOp } from '../registry.js';
import type { InferCtx, OutputType } from '../registry.js';
import { normAxis } from '../shape.js';
import { requireFloat, unaryFloat } from './common.js';

/** The reduced axes (all when none are given), positive and sorted. */
function reducedAxes(c: InferCtx): number[] {
  const x = c.input(0);
  const given = c.op === 'ReduceSum' ? (c.inputs[1] ? c.ints(1) : []) : (c.attrs['axes'] as number[] | undefined) ?? [];
  if (given === null) c.fail(`${c.describe(1)} must be a constant`);
  if (given.length === 0) return c.attr<number>('noop_with_empty_axes') ? [] : x.shape.map((_, i) => i);
  return [...new Set(given.map((a) => normAxis(a, x.rank, c.op)))].sort((p, q) => p - q);
}

function reduceInfer(c: InferCtx): OutputType[] {
  requireFloat(c, 0);
  const x = c.input(0);
  const axes = reducedAxes(c);
  const keep = c.attr<number>('keepdims') === 1;
  const shape = x.shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d]));
  return [{ dtype: x.dtype, shape }];
}

/** dy with the reduced axes restored as size-1 dims, broadcast back to x's shape. */
function spread(c: InferCtx, dy: Value, x: Value): Value {
  const axes = reducedAxes(c);
  const kept = c.attr<number>('keepdims') === 1 || axes.length === 0 ? dy : b.unsqueeze(dy, axes);
  return b.expandLike(kept, x);
}

const reduceAttrs = {
  keepdims: { kind: 'int', default: 1 },
  noop_with_empty_axes: { kind: 'int', default: 0 },
} as const;
const axesAttr = { axes: { kind: 'ints' } } as const;

defineOp({
  name: 'ReduceSum', inputs: ['data', 'axes?'], attrs: reduceAttrs, nondiff: [1], infer: reduceInfer,
  grad: (g) => [spread(g, g.dy[0]!, g.input(0)), null],
});

defineOp({
  name: 'ReduceMean', inputs: ['data'], attrs: { ...reduceAttrs, ...axesAttr }, infer: reduceInfer,
  grad: (g) => {
    const x = g.input(0);
    let n = 1;
    for (const a of reducedAxes(g)) {
      const d = x.shape[a]!;
      n *= typeof d === 'number' ? d : g.fail(`gradient needs a static size for reduced axis ${a}, got '${d}'`);
    }
    return [spread(g, b.mul(g.dy[0]!, b.scalarLike(1 / n, x)), x)];
  },
});

defineOp({
  name: 'ReduceMax', inputs: ['data'], attrs: { ...reduceAttrs, ...axesAttr }, infer: reduceInfer,
  // Ties share the gradient equally, as PyTorch's amax does.
  grad: (g) => {
    const x = g.input(0);
    const axes = reducedAxes(g);
    const yk = b.reduceMax(x, axes, true);
    const mask = b.cast(b.equal(x, yk), x.dtype);
    const count = b.reduceSum(mask, axes, true);
    return [b.div(b.mul(mask, spread(g, g.dy[0]!, x)), count)];
  },
});

defineOp({
  name: 'ReduceSumSquare', inputs: ['data'], attrs: { ...reduceAttrs, ...axesAttr }, infer: reduceInfer,
  grad: (g) => {
    const x = g.input(0);
    return [b.mul(spread(g, g.dy[0]!, x), b.mul(x, b.scalarLike(2, x)))];
  },
});

const softmaxInfer = (c: InferCtx): OutputType[] => {
  normAxis(c.attr<number>('axis'), c.input(0).rank, c.op);
  return unaryFloat(c);
};

/** y = softmax(x); dx = y (dy - sum(dy y)). */
defineOp({
  name: 'Softmax', inputs: ['input'], attrs: { axis: { kind: 'int', default: -1 } }, infer: softmaxInfer,
  grad: (g) => {
    const [y, dy] = [g.outputs[0]!, g.dy[0]!];
    const axis = g.attr<number>('axis');
    return [b.mul(y, b.sub(dy, b.reduceSum(b.mul(dy, y), [axis], true)))];
  },
});

/** y = log softmax(x); dx = dy - exp(y) sum(dy). */
defineOp({
  name: 'LogSoftmax', inputs: ['input'], attrs: { axis: { kind: 'int', default: -1 } }, infer: softmaxInfer,
  grad: (g) => {
    const [y, dy] = [g.outputs[0]!, g.dy[0]!];
    return [b.sub(dy, b.mul(b.exp(y), b.reduceSum(dy, [g.attr<number>('axis')], true)))];
  },
});

/**
 * y = running sum of x along `axis` (ONNX CumSum; the axis a constant int64 input): inclusive or
 * `exclusive`, from the start or in `reverse`. Its adjoint is the running sum of dy the other way.
 */
defineOp({
  name: 'CumSum', inputs: ['x', 'axis'], attrs: { exclusive: { kind: 'int', default: 0 }, reverse: { kind: 'int', default: 0 } }, nondiff: [1],
  infer: (c) => {
    const x = c.input(0);
    const axis = c.ints(1);
    if (axis === null || axis.length !== 1) c.fail(`${c.describe(1)} must be a constant scalar axis`);
    normAxis(axis![0]!, x.rank, c.op);
    if (!['float32', 'float64', 'int32', 'int64'].includes(x.dtype)) c.fail(`${c.describe(0)} must be float32, float64, int32 or int64, got ${x.dtype}`);
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  grad: (g) => [b.apply1('CumSum', [g.dy[0]!, g.inputs[1]!], { exclusive: g.attr<number>('exclusive'), reverse: 1 - g.attr<number>('reverse') }), null],
});
