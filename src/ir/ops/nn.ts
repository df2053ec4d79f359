import * as b from '../build.js';
import type { Value } from '../graph.js';
import { defineOp } from '../registry.js';
import { normAxis } from '../shape.js';
import { requireFloat, sameDtype } from './common.js';

/**
 * LayerNormalization over axes [axis, rank): y = (x - mean) * invstd * scale + bias.
 * Gradient (xhat = normalized x, g = dy * scale, means over the normalized axes):
 *   dx = invstd * (g - mean(g) - xhat * mean(g * xhat)),  dscale = sum(dy * xhat),  dbias = sum(dy).
 * Statistics come from the Mean/InvStdDev outputs for float32 (the builder requests them) and are
 * recomputed for other dtypes.
 */
defineOp({
  name: 'LayerNormalization', inputs: ['X', 'Scale', 'B?'],
  attrs: { axis: { kind: 'int', default: -1 }, epsilon: { kind: 'float', default: 1e-5 }, stash_type: { kind: 'int', default: 1 } },
  infer: (c) => {
    requireFloat(c, 0);
    const dtype = sameDtype(c);
    const x = c.input(0);
    const axis = normAxis(c.attr<number>('axis'), x.rank, c.op);
    const norm = x.shape.slice(axis);
    for (const i of [1, 2]) {
      const v = c.inputs[i];
      if (v && (v.rank > norm.length || v.shape.some((d, k) => d !== 1 && d !== norm[norm.length - v.rank + k]))) {
        c.fail(`${c.describe(i)} must broadcast to the normalized dims [${norm.join(', ')}] of ${c.describe(0)}`);
      }
    }
    const stat = x.shape.map((d, i) => (i < axis ? d : 1));
    const n = c.numOutputs ?? 1;
    return [{ dtype, shape: x.shape }, { dtype: 'float32' as const, shape: stat }, { dtype: 'float32' as const, shape: stat }].slice(0, n);
  },
  grad: (g) => {
    const [x, scale, dy] = [g.input(0), g.input(1), g.dy[0]!];
    const axis = normAxis(g.attr<number>('axis'), x.rank, g.op);
    const axes = Array.from({ length: x.rank - axis }, (_, i) => axis + i);
    // float32 reads the statistics the forward kernel saved; other dtypes recompute them, since
    // Mean/InvStdDev are stashed as float32 whatever the input dtype.
    const saved = x.dtype === 'float32' && g.outputs.length === 3 && g.attr<number>('stash_type') === 1;
    let mean: Value;
    let invstd: Value;
    if (saved) [mean, invstd] = [g.outputs[1]!, g.outputs[2]!];
    else {
      mean = b.reduceMean(x, axes);
      const xc0 = b.sub(x, mean);
      invstd = b.reciprocal(b.sqrt(b.add(b.reduceMean(b.mul(xc0, xc0), axes), b.scalarLike(g.attr<number>('epsilon'), x))));
    }
    const xhat = b.mul(b.sub(x, mean), invstd);
    let dx = null;
    if (g.needs[0]) {
      const gs = b.mul(dy, scale);
      const inner = b.sub(b.sub(gs, b.reduceMean(gs, axes)), b.mul(xhat, b.reduceMean(b.mul(gs, xhat), axes)));
      dx = b.mul(invstd, inner);
    }
    return [dx, g.needs[1] ? b.mul(dy, xhat) : null, g.inputs[2] && g.needs[2] ? dy : null];
  },
});

/**
 * Dropout. In training mode the kept elements are scaled by 1/(1 - ratio), and the gradient is
 * dy * mask / (1 - ratio) with the mask the forward pass drew.
 */
defineOp({
  name: 'Dropout', inputs: ['data', 'ratio?', 'training_mode?'], nondiff: [1, 2], attrs: { seed: { kind: 'int' } }, random: true,
  infer: (c) => {
    requireFloat(c, 0);
    const x = c.input(0);
    const n = c.numOutputs ?? 2;
    return [{ dtype: x.dtype, shape: x.shape }, { dtype: 'bool' as const, shape: x.shape }].slice(0, n);
  },
  grad: (g) => {
    const dy = g.dy[0]!;
    const training = g.inputs[2] ? g.ints(2) ?? g.fail('gradient needs a constant training_mode input') : [0];
    if (training[0] === 0) return [dy, null, null];
    const mask = g.outputs[1] ?? g.fail('gradient in training mode needs the mask output');
    const keep = b.sub(b.scalarLike(1, dy), g.inputs[1] ? g.input(1) : b.scalarLike(0.5, dy));
    return [b.div(b.mul(dy, b.cast(mask, dy.dtype)), keep), null, null];
  },
});

/**
 * Standard normal noise shaped like the input (ONNX RandomNormalLike; `mean`, `scale`, `seed`):
 * only the input's shape and dtype are read, so no gradient flows into it.
 */
defineOp({
  name: 'RandomNormalLike', inputs: ['input'], nondiff: [0], random: true,
  attrs: { mean: { kind: 'float', default: 0 }, scale: { kind: 'float', default: 1 }, seed: { kind: 'float' } },
  infer: (c) => {
    requireFloat(c, 0);
    const x = c.input(0);
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  grad: () => [null],
});
