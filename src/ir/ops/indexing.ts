import * as b from '../build.js';
import type { Value } from '../graph.js';
import { defineOp } from '../registry.js';
import type { GradCtx, InferCtx } from '../registry.js';
import { fmt, isStatic, normAxis } from '../shape.js';

function requireIndices(c: InferCtx, i: number): void {
  const d = c.input(i).dtype;
  if (d !== 'int64' && d !== 'int32') c.fail(`${c.describe(i)} must be int32 or int64, got ${d}`);
}

/**
 * Gather (embedding lookup): out = data[..., indices, ...] along `axis`.
 * Its gradient scatter-adds rows of dy into zeros with ScatterElements(reduction=add), which
 * onnxruntime runs serially: repeated token ids in a batch sum correctly (ScatterND races).
 */
defineOp({
  name: 'Gather', inputs: ['data', 'indices'], nondiff: [1], attrs: { axis: { kind: 'int', default: 0 } },
  infer: (c) => {
    requireIndices(c, 1);
    const [x, idx] = [c.input(0), c.input(1)];
    const axis = normAxis(c.attr<number>('axis'), x.rank, c.op);
    return [{ dtype: x.dtype, shape: [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)] }];
  },
  grad: (g) => [gatherGrad(g), null],
});

function gatherGrad(g: GradCtx): Value {
  const [x, idx] = [g.input(0), g.input(1)];
  const axis = normAxis(g.attr<number>('axis'), x.rank, g.op);
  let dy = g.dy[0]!;
  const q = idx.rank;
  // Bring the gathered axis (and dy's index dims) to the front, scatter there, move back.
  const moved = axis === 0 ? x.shape : [x.shape[axis]!, ...x.shape.slice(0, axis), ...x.shape.slice(axis + 1)];
  if (axis !== 0) {
    const perm = [...Array.from({ length: q }, (_, i) => axis + i), ...Array.from({ length: axis }, (_, i) => i),
      ...Array.from({ length: dy.rank - axis - q }, (_, i) => axis + q + i)];
    dy = b.transpose(dy, perm);
  }
  if (!isStatic(moved)) g.fail(`gradient needs a static data shape, got ${fmt(x.shape)}`);
  const rows = moved[0]!;
  const width = moved.slice(1).reduce((p, d) => p * d, 1);
  const flatDy = b.reshape(dy, [-1, width]);
  const flatIdx = b.expand(b.reshape(b.cast(idx, 'int64'), [-1, 1]), [1, width]);
  const zeros = b.zeros([rows, width], x.dtype);
  let dx = b.reshape(b.scatterAdd(zeros, flatIdx, flatDy, 0), moved);
  if (axis !== 0) {
    const inv = [...Array.from({ length: axis }, (_, i) => i + 1), 0, ...Array.from({ length: x.rank - axis - 1 }, (_, i) => axis + 1 + i)];
    dx = b.transpose(dx, inv);
  }
  return dx;
}

defineOp({
  name: 'GatherElements', inputs: ['data', 'indices'], nondiff: [1], attrs: { axis: { kind: 'int', default: 0 } },
  infer: (c) => {
    requireIndices(c, 1);
    const [x, idx] = [c.input(0), c.input(1)];
    normAxis(c.attr<number>('axis'), x.rank, c.op);
    if (idx.rank !== x.rank) c.fail(`${c.describe(1)} must have the rank of ${c.describe(0)}`);
    return [{ dtype: x.dtype, shape: idx.shape }];
  },
  grad: (g) => [b.scatterAdd(b.zerosLike(g.input(0)), g.input(1), g.dy[0]!, g.attr<number>('axis')), null],
});

defineOp({
  name: 'ScatterElements', inputs: ['data', 'indices', 'updates'], nondiff: [1],
  attrs: { axis: { kind: 'int', default: 0 }, reduction: { kind: 'string', default: 'none' } },
  infer: (c) => {
    requireIndices(c, 1);
    const [x, idx, upd] = [c.input(0), c.input(1), c.input(2)];
    normAxis(c.attr<number>('axis'), x.rank, c.op);
    if (upd.dtype !== x.dtype) c.fail(`${c.describe(2)} has dtype ${upd.dtype}, ${c.describe(0)} has ${x.dtype}`);
    if (idx.rank !== x.rank || upd.shape.some((d, i) => d !== idx.shape[i])) {
      c.fail(`${c.describe(1)} and ${c.describe(2)} must share one shape of the rank of ${c.describe(0)}`);
    }
    const red = c.attr<string>('reduction');
    if (!['none', 'add', 'mul', 'max', 'min'].includes(red)) c.fail(`unknown reduction '${red}'`);
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  grad: (g) => {
    const red = g.attr<string>('reduction');
    if (red !== 'none' && red !== 'add') g.fail(`gradient is defined for reduction none and add, not '${red}'`);
    const [idx, dy] = [g.input(1), g.dy[0]!];
    const axis = g.attr<number>('axis');
    const dData = !g.needs[0] ? null : red === 'add' ? dy
      : b.apply1('ScatterElements', [dy, idx, b.zerosLike(g.input(2))], { axis });
    return [dData, null, g.needs[2] ? b.gatherElements(dy, idx, axis) : null];
  },
});
