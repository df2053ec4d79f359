import * as b from '../build.js';
import { dtypeFromOnnx, isFloat } from '../dtype.js';
import { defineOp } from '../registry.js';
import type { GradCtx, InferCtx } from '../registry.js';
import { broadcastShapes } from '../shape.js';
import type { Value } from '../graph.js';
import { broadcastInfer, requireFloat, sameDtype, unaryFloat } from './common.js';

const binary = { inputs: ['A', 'B'], infer: broadcastInfer } as const;

defineOp({ name: 'Add', ...binary, grad: (g) => [g.dy[0]!, g.dy[0]!] });
defineOp({ name: 'Sub', ...binary, grad: (g) => [g.dy[0]!, g.needs[1] ? b.neg(g.dy[0]!) : null] });
defineOp({
  name: 'Mul', ...binary,
  grad: (g) => [g.needs[0] ? b.mul(g.dy[0]!, g.input(1)) : null, g.needs[1] ? b.mul(g.dy[0]!, g.input(0)) : null],
});
defineOp({
  name: 'Div', ...binary,
  // d(a/b)/db = -a/b^2 = -y/b
  grad: (g) => [
    g.needs[0] ? b.div(g.dy[0]!, g.input(1)) : null,
    g.needs[1] ? b.neg(b.div(b.mul(g.dy[0]!, g.outputs[0]!), g.input(1))) : null,
  ],
});
defineOp({
  name: 'Pow', inputs: ['X', 'Y'],
  infer: (c) => { requireFloat(c, 0); return broadcastInfer(c); },
  grad: (g) => {
    const [x, y] = [g.input(0), g.input(1)];
    const dy = g.dy[0]!;
    return [
      g.needs[0] ? b.mul(dy, b.mul(y, b.pow(x, b.sub(y, b.scalarLike(1, y))))) : null,
      g.needs[1] ? b.mul(dy, b.mul(g.outputs[0]!, b.log(x))) : null,
    ];
  },
});

/** A unary float op whose rule maps (x, y, dy) to dx. */
const unary = (name: string, grad: (g: GradCtx, x: Value, y: Value, dy: Value) => Value): void =>
  defineOp({ name, inputs: ['X'], infer: unaryFloat, grad: (g) => [grad(g, g.input(0), g.outputs[0]!, g.dy[0]!)] });

unary('Neg', (_g, _x, _y, dy) => b.neg(dy));
unary('Sqrt', (_g, _x, y, dy) => b.div(b.mul(dy, b.scalarLike(0.5, y)), y));
unary('Exp', (_g, _x, y, dy) => b.mul(dy, y));
unary('Log', (_g, x, _y, dy) => b.div(dy, x));
unary('Reciprocal', (_g, _x, y, dy) => b.neg(b.mul(dy, b.mul(y, y))));
unary('Tanh', (_g, _x, y, dy) => b.mul(dy, b.sub(b.scalarLike(1, y), b.mul(y, y))));
unary('Sigmoid', (_g, _x, y, dy) => b.mul(dy, b.mul(y, b.sub(b.scalarLike(1, y), y))));
unary('Relu', (_g, x, _y, dy) => b.where(b.greater(x, b.scalarLike(0, x)), dy, b.scalarLike(0, dy)));
// d erf(x)/dx = 2/sqrt(pi) exp(-x^2)
unary('Erf', (_g, x, _y, dy) => b.mul(dy, b.mul(b.scalarLike(2 / Math.sqrt(Math.PI), x), b.exp(b.neg(b.mul(x, x))))));
unary('Abs', (_g, x, _y, dy) => b.mul(dy, b.sign(x)));
defineOp({ name: 'Sign', inputs: ['X'], infer: unaryFloat, grad: () => [null] });

/**
 * Gelu (exact, erf form): y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). Not an ONNX op before
 * opset 20, so it lowers to Erf; onnxruntime's GeluFusion turns that pattern back into one kernel.
 * dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).
 */
defineOp({
  name: 'Gelu', inputs: ['X'], infer: unaryFloat,
  lower: (c) => {
    const x = c.input(0);
    const half = b.mul(x, b.scalarLike(0.5, x));
    return [b.mul(half, b.add(b.scalarLike(1, x), b.erf(b.div(x, b.scalarLike(Math.SQRT2, x)))))];
  },
  // Phi is recomputed with Erf: reading it off the output as y / x (with Phi(0) = 1/2 through
  // Where) measured no faster on onnxruntime's CPU kernels, and the erf form needs no special case.
  grad: (g) => {
    const x = g.input(0);
    const cdf = b.mul(b.scalarLike(0.5, x), b.add(b.scalarLike(1, x), b.erf(b.mul(x, b.scalarLike(Math.SQRT1_2, x)))));
    const pdf = b.mul(b.scalarLike(1 / Math.sqrt(2 * Math.PI), x), b.exp(b.mul(b.mul(x, x), b.scalarLike(-0.5, x))));
    return [b.mul(g.dy[0]!, b.add(cdf, b.mul(x, pdf)))];
  },
});

defineOp({ name: 'Identity', inputs: ['input'], infer: (c) => [c.input(0)], grad: (g) => [g.dy[0]!] });

defineOp({
  name: 'Sum', inputs: ['data_0...'], infer: broadcastInfer,
  grad: (g) => g.inputs.map(() => g.dy[0]!),
});

const compare = { inputs: ['A', 'B'], infer: (c: InferCtx) => broadcastInfer(c, 'bool'), nondiff: [0, 1] } as const;
defineOp({ name: 'Equal', ...compare });
defineOp({ name: 'Greater', ...compare });
defineOp({ name: 'Less', ...compare });
defineOp({ name: 'GreaterOrEqual', ...compare });
defineOp({ name: 'LessOrEqual', ...compare });

/** Boolean logic (masks): inputs and output bool, broadcast. */
const logic = {
  inputs: ['A', 'B'], nondiff: [0, 1],
  infer: (c: InferCtx) => {
    for (const i of [0, 1]) if (c.input(i).dtype !== 'bool') c.fail(`${c.describe(i)} must be bool, got ${c.input(i).dtype}`);
    return broadcastInfer(c, 'bool');
  },
} as const;
defineOp({ name: 'And', ...logic });
defineOp({ name: 'Or', ...logic });
defineOp({
  name: 'Not', inputs: ['X'], nondiff: [0],
  infer: (c) => {
    if (c.input(0).dtype !== 'bool') c.fail(`${c.describe(0)} must be bool, got ${c.input(0).dtype}`);
    return [{ dtype: 'bool', shape: c.input(0).shape }];
  },
});

defineOp({
  name: 'Where', inputs: ['condition', 'X', 'Y'], nondiff: [0],
  infer: (c) => {
    if (c.input(0).dtype !== 'bool') c.fail(`${c.describe(0)} must be bool, got ${c.input(0).dtype}`);
    const dtype = sameDtype(c, [1, 2]);
    return [{ dtype, shape: broadcastShapes(c.inputs.map((v) => v!.shape), (i) => c.describe(i)) }];
  },
  grad: (g) => {
    const [cond, dy] = [g.input(0), g.dy[0]!];
    const zero = b.scalarLike(0, dy);
    return [null, g.needs[1] ? b.where(cond, dy, zero) : null, g.needs[2] ? b.where(cond, zero, dy) : null];
  },
});

defineOp({
  name: 'Cast', inputs: ['input'], attrs: { to: { kind: 'int' }, saturate: { kind: 'int', default: 1 } },
  infer: (c) => [{ dtype: dtypeOfCode(c.attr<number>('to'), c), shape: c.input(0).shape }],
  grad: (g) => [isFloat(g.input(0).dtype) && isFloat(g.outputs[0]!.dtype) ? b.cast(g.dy[0]!, g.input(0).dtype) : null],
});

function dtypeOfCode(code: number, c: InferCtx): ReturnType<typeof dtypeFromOnnx> {
  try { return dtypeFromOnnx(code, c.op); } catch (e) { return c.fail((e as Error).message); }
}
