import * as b from '../build.js';
import type { DType } from '../dtype.js';
import { constInts, defineOp } from '../registry.js';
import type { Value } from '../graph.js';
import type { GradCtx, InferCtx } from '../registry.js';
import type { Dim } from '../shape.js';
import { broadcastShapes, fmt, isStatic, normAxis, reshapeTarget } from '../shape.js';
import { needInts } from './common.js';

/** Reshape-like ops: the gradient is dy reshaped back to the input. */
const back = { grad: (g: GradCtx) => [b.reshapeLike(g.dy[0]!, g.input(0)), null] };

defineOp({
  name: 'Reshape', inputs: ['data', 'shape'], nondiff: [1], attrs: { allowzero: { kind: 'int', default: 0 } },
  infer: (c) => {
    const x = c.input(0);
    // A run-time target: the Shape of another value (gradients of symbolic graphs), or the
    // Concat of constants and slices of Shapes that `b.shapeDims` builds for symbolic dims.
    const known = c.ints(1);
    const target = known ?? shapeFromShapeNode(c, 1);
    if (known === null && !target.some((d) => d === 0 || d === -1)) return [{ dtype: x.dtype, shape: target }];
    try { return [{ dtype: x.dtype, shape: reshapeTarget(x.shape, target, c.op) }]; } catch (e) {
      return c.fail(`${c.describe(0)} cannot take shape ${fmt(target)}: ${(e as Error).message.replace(/^Reshape: /, '')}`);
    }
  },
  ...back,
});

defineOp({
  name: 'Transpose', inputs: ['data'], attrs: { perm: { kind: 'ints' } },
  infer: (c) => {
    const x = c.input(0);
    const perm = (c.attrs['perm'] as number[] | undefined) ?? x.shape.map((_, i) => x.rank - 1 - i);
    if (perm.length !== x.rank || [...perm].sort((p, q) => p - q).some((p, i) => p !== i)) {
      c.fail(`perm ${fmt(perm)} is not a permutation of ${c.describe(0)}'s axes`);
    }
    return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) }];
  },
  grad: (g) => {
    const x = g.input(0);
    const perm = (g.attrs['perm'] as number[] | undefined) ?? x.shape.map((_, i) => x.rank - 1 - i);
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => { inv[p] = i; });
    return [b.transpose(g.dy[0]!, inv)];
  },
});

defineOp({
  name: 'Squeeze', inputs: ['data', 'axes?'], nondiff: [1],
  infer: (c) => {
    const x = c.input(0);
    const given = c.inputs[1] ? needInts(c, 1) : null;
    const axes = given === null ? x.shape.flatMap((d, i) => (d === 1 ? [i] : [])) : given.map((a) => normAxis(a, x.rank, c.op));
    for (const a of axes) if (x.shape[a] !== 1) c.fail(`cannot squeeze axis ${a} of ${c.describe(0)}: its size is ${x.shape[a]}`);
    return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.includes(i)) }];
  },
  ...back,
});

defineOp({
  name: 'Unsqueeze', inputs: ['data', 'axes'], nondiff: [1],
  infer: (c) => {
    const x = c.input(0);
    const rank = x.rank + needInts(c, 1).length;
    const axes = needInts(c, 1).map((a) => normAxis(a, rank, c.op));
    if (new Set(axes).size !== axes.length) c.fail(`axes ${fmt(axes)} repeat an axis`);
    const out: Dim[] = [];
    let k = 0;
    for (let i = 0; i < rank; i++) out.push(axes.includes(i) ? 1 : x.shape[k++]!);
    return [{ dtype: x.dtype, shape: out }];
  },
  ...back,
});

defineOp({
  name: 'Expand', inputs: ['input', 'shape'], nondiff: [1],
  infer: (c) => {
    const x = c.input(0);
    const shape = c.ints(1) ?? shapeFromShapeNode(c, 1);
    return [{ dtype: x.dtype, shape: broadcastShapes([x.shape, shape], (i) => (i === 0 ? c.describe(0) : `target shape ${fmt(shape)}`)) }];
  },
  grad: (g) => [g.dy[0]!, null],
});

defineOp({
  name: 'Concat', inputs: ['inputs...'], attrs: { axis: { kind: 'int' } },
  infer: (c) => {
    const first = c.input(0);
    const axis = normAxis(c.attr<number>('axis'), first.rank, c.op);
    let total: Dim = 0;
    c.inputs.forEach((v, i) => {
      if (v!.dtype !== first.dtype) c.fail(`${c.describe(i)} has dtype ${v!.dtype}, ${c.describe(0)} has ${first.dtype}`);
      if (v!.rank !== first.rank || v!.shape.some((d, k) => k !== axis && d !== first.shape[k])) {
        c.fail(`${c.describe(i)} does not match ${c.describe(0)} outside axis ${axis}`);
      }
      const d = v!.shape[axis]!;
      total = typeof total === 'number' && typeof d === 'number' ? total + d : total === 0 ? d : `${total}+${d}`;
    });
    return [{ dtype: first.dtype, shape: first.shape.map((d, k) => (k === axis ? total : d)) }];
  },
  grad: (g) => {
    const axis = normAxis(g.attr<number>('axis'), g.input(0).rank, g.op);
    const sizes = g.inputs.map((v, i) => {
      const d = v!.shape[axis]!;
      return typeof d === 'number' ? d : g.fail(`gradient needs static sizes along axis ${axis}; ${g.describe(i)}`);
    });
    return b.split(g.dy[0]!, sizes, axis);
  },
});

defineOp({
  name: 'Split', inputs: ['input', 'split?'], nondiff: [1], gradAllOutputs: true, attrs: { axis: { kind: 'int', default: 0 } },
  infer: (c) => {
    const x = c.input(0);
    const axis = normAxis(c.attr<number>('axis'), x.rank, c.op);
    const d = x.shape[axis]!;
    let sizes = c.inputs[1] ? needInts(c, 1) : null;
    if (sizes === null) {
      const n = c.numOutputs ?? c.fail('without a split input the number of outputs must be given');
      if (typeof d !== 'number' || d % n !== 0) return c.fail(`${c.describe(0)} axis ${axis} does not split evenly into ${n}`);
      sizes = new Array<number>(n).fill(d / n);
    }
    const total = sizes.reduce((p, q) => p + q, 0);
    if (typeof d === 'number' && total !== d) c.fail(`split sizes ${fmt(sizes)} sum to ${total}, but ${c.describe(0)} has ${d} along axis ${axis}`);
    return sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((e, k) => (k === axis ? s : e)) }));
  },
  grad: (g) => {
    const axis = g.attr<number>('axis');
    return [b.concat(g.dy.map((dy, i) => dy ?? b.zerosLike(g.outputs[i]!)), axis), null];
  },
});

/** Effective (start, step, count) per axis for ONNX Slice, clamped as the spec says. */
function sliceSpec(c: InferCtx): { axis: number; start: number; step: number; count: number }[] {
  const x = c.input(0);
  const starts = needInts(c, 1);
  const ends = needInts(c, 2);
  const axes = c.inputs[3] ? needInts(c, 3) : starts.map((_, i) => i);
  const steps = c.inputs[4] ? needInts(c, 4) : starts.map(() => 1);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) {
    c.fail(`starts, ends, axes and steps must have one entry each (got ${starts.length}, ${ends.length}, ${axes.length}, ${steps.length})`);
  }
  return starts.map((s0, i) => {
    const axis = normAxis(axes[i]!, x.rank, c.op);
    const step = steps[i]!;
    if (step === 0) c.fail('a step of 0 is not allowed');
    const d = x.shape[axis]!;
    if (typeof d !== 'number') {
      if (s0 === 0 && ends[i]! >= 2 ** 31 - 1 && step === 1) return { axis, start: 0, step: 1, count: -1 };
      return c.fail(`cannot slice symbolic axis ${axis} ('${d}') of ${c.describe(0)} except whole`);
    }
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
    let s = s0 < 0 ? s0 + d : s0;
    let e = ends[i]! < 0 ? ends[i]! + d : ends[i]!;
    if (step > 0) { s = clamp(s, 0, d); e = clamp(e, 0, d); } else { s = clamp(s, 0, d - 1); e = clamp(e, -1, d - 1); }
    const count = Math.max(0, Math.ceil((e - s) / step));
    return { axis, start: s, step, count };
  });
}

defineOp({
  name: 'Slice', inputs: ['data', 'starts', 'ends', 'axes?', 'steps?'], nondiff: [1, 2, 3, 4],
  infer: (c) => {
    const x = c.input(0);
    const shape = [...x.shape];
    for (const s of sliceSpec(c)) if (s.count >= 0) shape[s.axis] = s.count;
    return [{ dtype: x.dtype, shape }];
  },
  grad: (g) => {
    const x = g.input(0);
    const specs = sliceSpec(g).filter((s) => s.count >= 0);
    let dy = g.dy[0]!;
    if (specs.every((s) => s.step === 1)) {
      const pads = new Array<number>(2 * x.rank).fill(0);
      for (const s of specs) {
        pads[s.axis] = s.start;
        pads[x.rank + s.axis] = (x.shape[s.axis] as number) - s.start - s.count;
      }
      return [b.pad(dy, pads)];
    }
    // Strided slices: scatter each axis's picked positions back into zeros, one axis at a time.
    for (const s of specs) {
      if (!isStatic(dy.shape)) return g.fail('strided slice gradients need static shapes');
      const idxShape = dy.shape.map((d, k) => (k === s.axis ? s.count : 1));
      const idx = b.constant(BigInt64Array.from({ length: s.count }, (_, k) => BigInt(s.start + k * s.step)), 'int64', idxShape);
      const full = dy.shape.map((d, k) => (k === s.axis ? (x.shape[s.axis] as number) : d));
      const zeros = b.expand(b.scalarLike(0, dy), full);
      dy = b.apply1('ScatterElements', [zeros, b.expand(idx, dy.shape as number[]), dy], { axis: s.axis });
    }
    return [dy];
  },
});

defineOp({
  name: 'Pad', inputs: ['data', 'pads', 'constant_value?'], nondiff: [1, 2],
  attrs: { mode: { kind: 'string', default: 'constant' } },
  infer: (c) => {
    const x = c.input(0);
    const pads = needInts(c, 1);
    if (pads.length !== 2 * x.rank) c.fail(`pads must have ${2 * x.rank} entries for ${c.describe(0)}, got ${pads.length}`);
    const shape = x.shape.map((d, i) => (pads[i] === 0 && pads[i + x.rank] === 0 ? d
      : typeof d === 'number' ? d + pads[i]! + pads[i + x.rank]! : c.fail(`cannot pad symbolic axis ${i}`)));
    return [{ dtype: x.dtype, shape }];
  },
  grad: (g) => {
    const x = g.input(0);
    if (g.attr<string>('mode') !== 'constant') g.fail('gradient is defined for constant mode only');
    const pads = needInts(g, 1);
    if (pads.some((p) => p < 0)) g.fail('gradient is defined for non-negative pads only');
    const axes = x.shape.map((_, i) => i);
    const out = g.outputs[0]!.shape;
    const ends = axes.map((i) => (typeof out[i] === 'number' ? (out[i] as number) - pads[i + x.rank]! : 2 ** 31 - 1));
    return [b.slice(g.dy[0]!, pads.slice(0, x.rank), ends, axes), null, null];
  },
});

defineOp({
  name: 'Shape', inputs: ['data'], attrs: {}, nondiff: [0],
  infer: (c) => [{ dtype: 'int64', shape: [c.input(0).rank] }],
});

/** The dims a shape input computed at run time holds (`runtimeDims`), or a failure naming the input. */
function shapeFromShapeNode(c: InferCtx, i: number): readonly Dim[] {
  return runtimeDims(c.input(i)) ?? c.fail(`${c.describe(i)} must be a constant, the Shape of a value, a constant Slice of one, or a Concat of these`);
}

/**
 * The dims an int64 shape vector computed in the graph holds: a constant, the Shape of a value, a
 * step-1 Slice of one along axis 0 with constant bounds, or a Concat of these (what
 * `b.shapeDims` builds for targets with symbolic dims). Null when `v` is none of them.
 */
export function runtimeDims(v: Value): Dim[] | null {
  const k = constInts(v);
  if (k !== null) return k;
  const n = v.node;
  if (n === null) return null;
  if (n.op === 'Shape') return n.inputs[0] ? [...n.inputs[0].shape] : null;
  if (n.op === 'Concat' && n.attrs['axis'] === 0) {
    const parts = n.inputs.map((x) => (x === null ? null : runtimeDims(x)));
    return parts.every((p) => p !== null) ? (parts as Dim[][]).flat() : null;
  }
  if (n.op === 'Slice' && n.inputs[0]) {
    const [src, starts, ends, axes, steps] = [runtimeDims(n.inputs[0]), constInts(n.inputs[1] ?? null), constInts(n.inputs[2] ?? null), n.inputs[3] ? constInts(n.inputs[3]) : [0], n.inputs[4] ? constInts(n.inputs[4]) : [1]];
    if (src === null || starts?.length !== 1 || ends?.length !== 1 || axes?.[0] !== 0 || steps?.[0] !== 1) return null;
    const at = (e: number): number => Math.min(Math.max(e < 0 ? e + src.length : e, 0), src.length);
    return src.slice(at(starts[0]!), at(ends[0]!));
  }
  return null;
}

defineOp({
  name: 'ConstantOfShape', inputs: ['input'], nondiff: [0], attrs: { value: { kind: 'tensor' } },
  infer: (c) => {
    const value = c.attrs['value'] as { dtype: DType } | undefined;
    return [{ dtype: value?.dtype ?? 'float32', shape: c.ints(0) ?? shapeFromShapeNode(c, 0) }];
  },
});
