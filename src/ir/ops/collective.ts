/**
 * Collectives as ops of the IR (weft's domain, not ONNX): each names the mesh axis whose group it
 * runs on and that group's size (shapes depend on it), and runs outside onnxruntime (`host`): a
 * step holding one is cut there (runtime/schedule.ts) and its kernel is the process group's
 * collective (comm/kernels.ts). `weft.Copy`, whose forward moves nothing, is the exception: it is
 * an identity inside its program, and only its backward all-reduce is a cut.
 *
 * Gradients are Megatron's conjugate pairs, whose meaning rests on one convention: a value is
 * either *replicated* over the axis (the same on every rank; its gradient is the gradient, counted
 * once) or *rank-local* (a shard or a partial sum; its gradient is that rank's share):
 *
 *   op                 forward                         backward
 *   weft.Copy          identity (replicated in,        all-reduce sum (each rank's consumer
 *                      rank-local consumers)           contributes a part of the gradient)
 *   weft.AllReduce     all-reduce sum (partial sums    identity (the replicated result's gradient
 *                      in, replicated out); or max     is every partial's); none for max
 *   weft.AllGather     concat shards along `dim`       reduce-scatter (rank-local consumers, e.g.
 *                                                      sequence parallel into a column-parallel
 *                                                      Linear) or split (`backward: 'split'`:
 *                                                      a replicated consumer)
 *   weft.ReduceScatter sum, keep this rank's chunk     all-gather
 *   weft.Split         keep this rank's chunk of a     all-gather
 *                      replicated value
 *   weft.AllToAll      chunk j of `split_dim` to       all-to-all with the dims exchanged
 *                      rank j, concat on `concat_dim`
 *   weft.Broadcast     root's value to every rank      the gradient on root, zeros elsewhere
 *                      (replicated out)                (weft.RootOnly, its own adjoint)
 *
 * Everything else in a traced step is ordinary single-device code on local shapes.
 *
 * All-gather and reduce-scatter take optional `after` inputs past X: values they only wait for
 * (the schedule issues the collective no earlier than the boundary where those exist; the kernel
 * never reads them, and no gradient flows into them). ZeRO stage 3 (parallel/zero3.ts) chains its
 * parameter gathers with them, so each is issued one layer ahead of its use, not all at once.
 */
import * as b from '../build.js';
import type { Value } from '../graph.js';
import { defineOp } from '../registry.js';
import type { GradCtx, InferCtx, OutputType } from '../registry.js';
import { fmt, normAxis } from '../shape.js';

const axisAttrs = { axis: { kind: 'string' }, size: { kind: 'int' } } as const;

/** The group size attribute, checked. */
function groupSize(c: InferCtx): number {
  const n = c.attr<number>('size');
  if (!(Number.isInteger(n) && n >= 1)) c.fail(`size (the '${c.attr<string>('axis')}' group's rank count) must be a positive integer, got ${n}`);
  return n;
}

const same = (c: InferCtx): OutputType[] => {
  groupSize(c);
  const x = c.input(0);
  if (x.dtype !== 'float32' && x.dtype !== 'float64') c.fail(`${c.describe(0)} must be float32 or float64, got ${x.dtype}`);
  return [{ dtype: x.dtype, shape: x.shape }];
};

/** x's shape with `dim` multiplied (gather) or divided (scatter) by the group size. */
function resized(c: InferCtx, dimAttr: string, grow: boolean): OutputType[] {
  same(c);
  const n = groupSize(c);
  const x = c.input(0);
  const dim = normAxis(c.attr<number>(dimAttr), x.rank, c.op);
  const d = x.shape[dim]!;
  if (typeof d !== 'number') c.fail(`${c.describe(0)}: dim ${dim} must be static, got '${d}'`);
  if (!grow && d % n !== 0) c.fail(`${c.describe(0)}: dim ${dim} (${d}) must divide by the '${c.attr<string>('axis')}' group size ${n}`);
  const shape = x.shape.map((e, i) => (i === dim ? (grow ? d * n : d / n) : e));
  return [{ dtype: x.dtype, shape }];
}

/** No gradient flows into a collective's `after` inputs (ordering only). */
const afterNone = (g: GradCtx): null[] => g.inputs.slice(1).map(() => null);

const attrsOf = (g: GradCtx): { axis: string; size: number } => ({ axis: g.attr<string>('axis'), size: g.attr<number>('size') });

/** Builders: one per op (also what gradient rules use). */
export const copyTo = (x: Value, axis: string, size: number): Value => b.apply1('weft.Copy', [x], { axis, size });
export const allReduce = (x: Value, axis: string, size: number, op: 'sum' | 'max' = 'sum'): Value =>
  b.apply1('weft.AllReduce', [x], { axis, size, ...(op === 'max' ? { op } : {}) });
export const allGather = (x: Value, axis: string, size: number, dim: number, backward: 'reduce_scatter' | 'split' = 'reduce_scatter', after: readonly Value[] = []): Value =>
  b.apply1('weft.AllGather', [x, ...after], { axis, size, dim, ...(backward === 'split' ? { backward } : {}) });
export const reduceScatter = (x: Value, axis: string, size: number, dim: number, after: readonly Value[] = []): Value =>
  b.apply1('weft.ReduceScatter', [x, ...after], { axis, size, dim });
export const splitTo = (x: Value, axis: string, size: number, dim: number): Value => b.apply1('weft.Split', [x], { axis, size, dim });
export const allToAll = (x: Value, axis: string, size: number, splitDim: number, concatDim: number): Value =>
  b.apply1('weft.AllToAll', [x], { axis, size, split_dim: splitDim, concat_dim: concatDim });

export const broadcastFrom = (x: Value, axis: string, size: number, root: number): Value => b.apply1('weft.Broadcast', [x], { axis, size, root });
export const rootOnly = (x: Value, axis: string, size: number, root: number): Value => b.apply1('weft.RootOnly', [x], { axis, size, root });

const rootAttrs = { ...axisAttrs, root: { kind: 'int', default: 0 } } as const;
const rootInfer = (c: InferCtx): OutputType[] => {
  const n = groupSize(c);
  const root = c.attr<number>('root');
  if (!(Number.isInteger(root) && root >= 0 && root < n)) c.fail(`root must be a rank of the '${c.attr<string>('axis')}' group [0, ${n}), got ${root}`);
  return same(c);
};

defineOp({
  name: 'weft.Broadcast', inputs: ['X'], attrs: rootAttrs, host: true, infer: rootInfer,
  grad: (g) => { const a = attrsOf(g); return [rootOnly(g.dy[0]!, a.axis, a.size, g.attr<number>('root'))]; },
});

/** x on the root rank, zeros elsewhere (the adjoint of a broadcast; a projection, its own adjoint). */
defineOp({
  name: 'weft.RootOnly', inputs: ['X'], attrs: rootAttrs, host: true, infer: rootInfer,
  grad: (g) => { const a = attrsOf(g); return [rootOnly(g.dy[0]!, a.axis, a.size, g.attr<number>('root'))]; },
});

/**
 * Copy moves nothing forward, so it is no cut: it lowers to Identity inside its program, and only
 * its gradient (an all-reduce) runs outside onnxruntime. A tensor-parallel block is then cut twice
 * forward (after proj and fc2) rather than four times.
 */
defineOp({
  name: 'weft.Copy', inputs: ['X'], attrs: axisAttrs, infer: same,
  lower: (c) => [b.identity(c.input(0))],
  grad: (g) => { const a = attrsOf(g); return [allReduce(g.dy[0]!, a.axis, a.size)]; },
});

/**
 * op 'max' has no gradient: it serves as a constant shift (the vocab-parallel softmax's max), and
 * autodiff treats its result as a constant.
 */
defineOp({
  name: 'weft.AllReduce', inputs: ['X'], attrs: { ...axisAttrs, op: { kind: 'string', default: 'sum' } }, host: true,
  infer: (c) => {
    const op = c.attr<string>('op');
    if (op !== 'sum' && op !== 'max') c.fail(`op must be 'sum' or 'max', got '${op}'`);
    return same(c);
  },
  grad: (g) => [g.attr<string>('op') === 'max' ? null : g.dy[0]!],
});

defineOp({
  name: 'weft.AllGather', inputs: ['X', 'after...'], host: true,
  attrs: { ...axisAttrs, dim: { kind: 'int', default: 0 }, backward: { kind: 'string', default: 'reduce_scatter' } },
  infer: (c) => {
    const back = c.attr<string>('backward');
    if (back !== 'reduce_scatter' && back !== 'split') c.fail(`backward must be 'reduce_scatter' or 'split', got '${back}'`);
    return resized(c, 'dim', true);
  },
  grad: (g) => {
    const a = attrsOf(g);
    const dim = g.attr<number>('dim');
    return [g.attr<string>('backward') === 'split' ? splitTo(g.dy[0]!, a.axis, a.size, dim) : reduceScatter(g.dy[0]!, a.axis, a.size, dim), ...afterNone(g)];
  },
});

defineOp({
  name: 'weft.ReduceScatter', inputs: ['X', 'after...'], host: true, attrs: { ...axisAttrs, dim: { kind: 'int', default: 0 } },
  infer: (c) => resized(c, 'dim', false),
  grad: (g) => { const a = attrsOf(g); return [allGather(g.dy[0]!, a.axis, a.size, g.attr<number>('dim')), ...afterNone(g)]; },
});

defineOp({
  name: 'weft.Split', inputs: ['X'], host: true, attrs: { ...axisAttrs, dim: { kind: 'int', default: 0 } },
  infer: (c) => resized(c, 'dim', false),
  grad: (g) => { const a = attrsOf(g); return [allGather(g.dy[0]!, a.axis, a.size, g.attr<number>('dim'), 'split')]; },
});

defineOp({
  name: 'weft.AllToAll', inputs: ['X'], host: true,
  attrs: { ...axisAttrs, split_dim: { kind: 'int', default: 0 }, concat_dim: { kind: 'int', default: 0 } },
  infer: (c) => {
    same(c);
    const n = groupSize(c);
    const x = c.input(0);
    const [sd, cd] = [normAxis(c.attr<number>('split_dim'), x.rank, c.op), normAxis(c.attr<number>('concat_dim'), x.rank, c.op)];
    const s = x.shape[sd]!;
    if (typeof s !== 'number' || s % n !== 0) c.fail(`${c.describe(0)}: split_dim ${sd} (${String(s)}) must be static and divide by the '${c.attr<string>('axis')}' group size ${n}`);
    const chunk = (s as number) / n;
    if (typeof x.shape[cd] !== 'number') c.fail(`${c.describe(0)}: concat_dim ${cd} must be static, got ${fmt(x.shape)}`);
    const shape = x.shape.map((d, i) => (i === sd && i === cd ? d : i === sd ? chunk : i === cd ? (d as number) * n : d));
    return [{ dtype: x.dtype, shape }];
  },
  grad: (g) => {
    const a = attrsOf(g);
    return [allToAll(g.dy[0]!, a.axis, a.size, g.attr<number>('concat_dim'), g.attr<number>('split_dim'))];
  },
});

/**
 * Point-to-point transfers between the ranks of an axis (pipeline parallelism: activations forward,
 * their gradients back, parallel/pipeline.ts). `weft.Send` sends X to rank `peer` of the axis and
 * yields a float32 scalar token (an output to keep the send in the graph); `weft.Recv` receives a
 * `dtype` tensor of `shape` from rank `peer`. `tag` names the transfer; the kernel adds the run's
 * microbatch (`context.microbatch`), so one traced step serves every microbatch. Both take `after`
 * inputs (ordering only): a receive is issued no earlier than the values it waits for exist.
 * They have no gradient rule: a pipeline stage builds its backward explicitly (the gradient of its
 * output is a receive, the gradient of its input a send).
 */
const p2pAttrs = { ...axisAttrs, peer: { kind: 'int' }, tag: { kind: 'int' } } as const;

function p2pCheck(c: InferCtx): void {
  const n = groupSize(c);
  const peer = c.attr<number>('peer');
  if (!(Number.isInteger(peer) && peer >= 0 && peer < n)) c.fail(`peer must be a rank of the '${c.attr<string>('axis')}' group [0, ${n}), got ${peer}`);
  const tag = c.attr<number>('tag');
  // 6 bits: the kernel adds the microbatch below them (comm/kernels.ts), within MPI's 15-bit tags.
  if (!(Number.isInteger(tag) && tag >= 0 && tag < 64)) c.fail(`tag must be an integer in [0, 64), got ${tag}`);
}

defineOp({
  name: 'weft.Send', inputs: ['X', 'after...'], host: true, attrs: p2pAttrs,
  infer: (c) => {
    p2pCheck(c);
    const x = c.input(0);
    if (x.dtype !== 'float32' && x.dtype !== 'float64') c.fail(`${c.describe(0)} must be float32 or float64, got ${x.dtype}`);
    return [{ dtype: 'float32', shape: [] }];
  },
});

defineOp({
  name: 'weft.Recv', inputs: ['after...'], host: true, attrs: { ...p2pAttrs, dtype: { kind: 'string', default: 'float32' }, shape: { kind: 'ints' } },
  infer: (c) => {
    p2pCheck(c);
    const dtype = c.attr<string>('dtype');
    if (dtype !== 'float32' && dtype !== 'float64') c.fail(`dtype must be float32 or float64, got '${dtype}'`);
    const shape = c.attr<number[]>('shape');
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) c.fail(`shape must be non-negative integers, got [${shape.join(', ')}]`);
    return [{ dtype: dtype as 'float32' | 'float64', shape }];
  },
});

export const sendTo = (x: Value, axis: string, size: number, peer: number, tag: number, after: readonly Value[] = []): Value =>
  b.apply1('weft.Send', [x, ...after], { axis, size, peer, tag });
export const recvFrom = (axis: string, size: number, peer: number, tag: number, like: { dtype: 'float32' | 'float64'; shape: readonly number[] }, after: readonly Value[] = []): Value =>
  b.apply1('weft.Recv', [...after], { axis, size, peer, tag, dtype: like.dtype, shape: [...like.shape] });
