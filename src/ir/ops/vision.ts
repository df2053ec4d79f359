/**
 * Vision ops: Conv, ConvTranspose, BatchNormalization, MaxPool, AveragePool, GlobalAveragePool,
 * Flatten. Gradients are built from forward ONNX ops (onnxruntime has no training kernels):
 * a Conv's dX is a ConvTranspose; its dW a MatMul over im2col patches for ungrouped stride-1
 * convs with >= 100 output positions and otherwise a Conv with the batch and channel roles swapped, the faster formulation in
 * each case as measured by bench/conv_grad.ts (numbers in docs/architecture.md).
 */
import * as b from '../build.js';
import type { Value } from '../graph.js';
import { convDwIm2col } from '../im2col.js';
import { defineOp } from '../registry.js';
import type { GradCtx, InferCtx } from '../registry.js';
import { fmt, isStatic } from '../shape.js';
import { requireFloat, sameDtype } from './common.js';
import { autoPad as autoPadOf, convTransposeWindow, convWindow, dilatedKernel, spatialDims } from './window.js';
import type { Window } from './window.js';

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);

/** A static dim of input `i`, or a failure naming it. */
function staticDim(c: InferCtx, i: number, axis: number): number {
  const d = c.input(i).shape[axis]!;
  return typeof d === 'number' ? d : c.fail(`${c.describe(i)} needs a static dim ${axis}`);
}

const windowAttrs = {
  auto_pad: { kind: 'string', default: 'NOTSET' },
  kernel_shape: { kind: 'ints' },
  pads: { kind: 'ints' },
  strides: { kind: 'ints' },
} as const;

/** The kernel of a Conv/ConvTranspose: W's spatial dims, which kernel_shape (if given) must match. */
function weightKernel(c: InferCtx): number[] {
  const [x, w] = [c.input(0), c.input(1)];
  spatialDims(c, 0);
  if (w.rank !== x.rank) c.fail(`${c.describe(1)} must have the rank of ${c.describe(0)}`);
  const k = spatialDims(c, 1);
  const given = c.attrs['kernel_shape'] as number[] | undefined;
  if (given !== undefined && fmt(given) !== fmt(k)) c.fail(`kernel_shape ${fmt(given)} does not match ${c.describe(1)}`);
  return k;
}

function checkBias(c: InferCtx, channels: number): void {
  const bias = c.inputs[2];
  if (bias && (bias.rank !== 1 || bias.shape[0] !== channels)) c.fail(`${c.describe(2)} must have shape [${channels}] (one per output channel)`);
}

/** The explicit attributes of a window (auto_pad resolved), for the ops a gradient builds. */
const explicit = (w: Window, group: number): Record<string, number[] | number> =>
  ({ strides: [...w.strides], pads: [...w.pads], dilations: [...w.dilations], group });

/** Geometry of a Conv node, channels and groups checked. */
export function convGeometry(c: InferCtx): Window & { group: number } {
  const group = c.attr<number>('group');
  if (group < 1) c.fail(`group must be >= 1, got ${group}`);
  const kernel = weightKernel(c);
  const C = staticDim(c, 0, 1);
  const [M, Cg] = [staticDim(c, 1, 0), staticDim(c, 1, 1)];
  if (C !== Cg * group) {
    c.fail(`${c.describe(0)} has ${C} channels but ${c.describe(1)} expects ${Cg} per group x group ${group} = ${Cg * group}`);
  }
  if (M % group !== 0) c.fail(`${c.describe(1)} has ${M} output channels, not divisible by group ${group}`);
  checkBias(c, M);
  const win = convWindow(c, kernel);
  if (autoPadOf(c).startsWith('SAME') && win.dilations.some((d) => d > 1)) {
    c.fail(`auto_pad '${autoPadOf(c)}' with dilations ${fmt(win.dilations)} is not supported by onnxruntime; give explicit pads`);
  }
  return { ...win, group };
}

/** Geometry of a ConvTranspose node: W is [C, M / group, k...]. */
export function convTransposeGeometry(c: InferCtx): ReturnType<typeof convTransposeWindow> & { group: number } {
  const group = c.attr<number>('group');
  if (group < 1) c.fail(`group must be >= 1, got ${group}`);
  const kernel = weightKernel(c);
  const C = staticDim(c, 0, 1);
  if (staticDim(c, 1, 0) !== C) c.fail(`${c.describe(0)} has ${C} channels but ${c.describe(1)} expects ${c.input(1).shape[0]} (W is [C, M / group, k...])`);
  if (C % group !== 0) c.fail(`${c.describe(0)} has ${C} channels, not divisible by group ${group}`);
  checkBias(c, staticDim(c, 1, 1) * group);
  return { ...convTransposeWindow(c, kernel), group };
}

/**
 * dX of Y = Conv(X, W): the adjoint, ConvTranspose(dY, W) with the same strides, pads, dilations
 * and group; output_padding restores the rows the forward's stride skipped at the end,
 * in + P - K - s (out - 1), which is in [0, s).
 */
export function convDx(dy: Value, w: Value, win: Window, group: number): Value {
  const ek = dilatedKernel(win);
  const r = win.input.length;
  const op = win.input.map((n, i) => n + win.pads[i]! + win.pads[i + r]! - ek[i]! - win.strides[i]! * (win.out[i]! - 1));
  const attrs: Record<string, number[] | number> = explicit(win, group);
  if (op.some((p) => p > 0)) attrs['output_padding'] = op;
  return b.apply1('ConvTranspose', [dy, w], attrs);
}

/**
 * dW of Y = Conv(X, W), W [M, Cg, k...]: dW[m, c, k] = sum_{n, o} dY[n, m, o] Xpad[n, c, o s + k d],
 * itself a Conv with roles swapped: X as [Cg, group * N, S...] (batch = the channel in a group),
 * dY as the weights [M, N, O...], group kept, strides and dilations exchanged, pads kept; its
 * output [Cg, M, k'...] has k' >= k (trailing padded rows no window used), sliced to k and
 * transposed to [M, Cg, k...].
 */
export function convDw(x: Value, dy: Value, win: Window, group: number, fail: (m: string) => never): Value {
  const [N, C] = [x.shape[0]!, x.shape[1]!];
  if (typeof N !== 'number' || typeof C !== 'number') fail(`the weight gradient needs static N and C, got ${fmt(x.shape)}`);
  const r = win.input.length;
  const Cg = C / group;
  const xs = b.reshape(b.transpose(b.reshape(x, [N, group, Cg, ...win.input]), [2, 1, 0, ...range(r, 3)]), [Cg, group * N, ...win.input]);
  const dys = b.transpose(dy, [1, 0, ...range(r, 2)]);
  const attrs = { strides: [...win.dilations], dilations: [...win.strides], pads: [...win.pads], group };
  let dw = b.apply1('Conv', [xs, dys], attrs);
  if (dw.shape.slice(2).some((k, i) => k !== win.kernel[i])) dw = b.slice(dw, range(r, 0).map(() => 0), [...win.kernel], range(r, 2));
  return b.transpose(dw, [1, 0, ...range(r, 2)]);
}

/** Sum over every axis but the channel axis 1, as a [C] vector. */
const perChannelSum = (v: Value): Value => b.reduceSum(v, [0, ...range(v.rank - 2, 2)], false);

/** Output positions from which the weight gradient is a MatMul over patches (measured crossover, see Conv). */
const IM2COL_MIN_POSITIONS = 100;

/**
 * Conv (opset 11): Y[n, m, o] = B[m] + sum_{c in group(m), k} W[m, c, k] Xpad[n, c, o s + k d].
 * X [N, C, S...], W [M, C / group, k...], B [M]. Any number of spatial dims; onnxruntime's CPU
 * kernel runs float32, and float64 is lowered to im2col by runtime/kernel_gaps.ts.
 * Gradients: dX = ConvTranspose(dY, W), dW = patches(X) . dY (ungrouped, stride 1, >= 100 output positions) or a
 * role-swapped Conv of X and dY, dB = sum dY.
 */
defineOp({
  name: 'Conv', inputs: ['X', 'W', 'B?'],
  attrs: { ...windowAttrs, dilations: { kind: 'ints' }, group: { kind: 'int', default: 1 } },
  infer: (c) => {
    requireFloat(c, 0);
    const dtype = sameDtype(c);
    const win = convGeometry(c);
    return [{ dtype, shape: [c.input(0).shape[0]!, c.input(1).shape[0]!, ...win.out] }];
  },
  grad: (g) => {
    const win = convGeometry(g);
    const [x, dy] = [g.input(0), g.dy[0]!];
    // bench/conv_grad.ts, float32, one thread, N=64, AMX Xeon: patches beat the swapped Conv for
    // ungrouped stride-1 convs over >= 14x14 outputs (0.69 vs 1.02 ms at 28x28 1->16; 3.82 vs 4.14
    // and 10.26 vs 11.47 ms at 14x14) and lose on small outputs (11.01 vs 9.12 ms at 7x7 64->128:
    // 9 slices of a small image cost more than they save), strided (1.89 vs 1.37) or grouped
    // (8.13 vs 7.06).
    const positions = win.out.reduce((p, d) => p * d, 1);
    const im2colDw = win.group === 1 && win.strides.every((s) => s === 1) && positions >= IM2COL_MIN_POSITIONS && isStatic(x.shape.slice(0, 2));
    return [
      g.needs[0] ? convDx(dy, g.input(1), win, win.group) : null,
      !g.needs[1] ? null : im2colDw ? convDwIm2col(x, dy, win, 1, x.shape[1] as number) : convDw(x, dy, win, win.group, g.fail),
      g.inputs[2] && g.needs[2] ? perChannelSum(dy) : null,
    ];
  },
});

/**
 * ConvTranspose (opset 11), the adjoint of Conv in X: Y[n, m, o] = B[m] + sum over (i, k) with
 * i s + k d - pad_begin = o of X[n, c, i] W[c, m', k] (c in m's group). X [N, C, S...],
 * W [C, M / group, k...]. Output size s (in - 1) + output_padding + d (k - 1) + 1 - pads.
 * output_shape and auto_pad SAME_* are accepted: the total pad is what gives that size, the odd
 * pad at the end for SAME_UPPER and at the beginning otherwise (onnxruntime's convention).
 * Gradients: dX = Conv(dY, W) (same attributes), dW = the Conv weight gradient with dY as the
 * input and X as the output gradient, dB = sum dY.
 */
defineOp({
  name: 'ConvTranspose', inputs: ['X', 'W', 'B?'],
  attrs: {
    ...windowAttrs, dilations: { kind: 'ints' }, group: { kind: 'int', default: 1 },
    output_padding: { kind: 'ints' }, output_shape: { kind: 'ints' },
  },
  infer: (c) => {
    requireFloat(c, 0);
    const dtype = sameDtype(c);
    const win = convTransposeGeometry(c);
    return [{ dtype, shape: [c.input(0).shape[0]!, staticDim(c, 1, 1) * win.group, ...win.out] }];
  },
  grad: (g) => {
    const win = convTransposeGeometry(g);
    const dy = g.dy[0]!;
    // The Conv this op is the adjoint of maps Y's geometry (input) to X's (output).
    const conv: Window = { ...win, input: win.out, out: win.input };
    return [
      g.needs[0] ? b.apply1('Conv', [dy, g.input(1)], explicit(win, win.group)) : null,
      g.needs[1] ? convDw(dy, g.input(0), conv, win.group, g.fail) : null,
      g.inputs[2] && g.needs[2] ? perChannelSum(dy) : null,
    ];
  },
});

// ---- BatchNormalization ------------------------------------------------------------------------

/** [C] -> [1, C, 1, ...] against an input of `rank`. */
const perChannel = (v: Value, rank: number): Value => b.reshape(v, [1, -1, ...new Array<number>(rank - 2).fill(1)]);

/**
 * BatchNormalization (opset 15). Per channel c, over N and the spatial dims:
 *   eval (training_mode=0):  Y = (X - mean) / sqrt(var + eps) * scale + B, with the given statistics;
 *   training (training_mode=1): Y uses the batch mean and the biased batch variance, and
 *     running_mean = momentum * input_mean + (1 - momentum) * batch_mean,
 *     running_var  = momentum * input_var  + (1 - momentum) * batch_var
 *   (onnxruntime's conventions, pinned by test/vision_ops.test.ts: see docs/architecture.md).
 * Gradient, xhat the normalized X, g = dY scale, means per channel:
 *   training: dX = invstd (g - mean(g) - xhat mean(g xhat)) (the LayerNorm rule over N, S...);
 *   eval:     dX = g invstd, d mean = -sum(g) invstd, d var = -sum(g xhat) invstd^2 / 2;
 *   both: dscale = sum(dY xhat), dB = sum(dY). running_mean / running_var carry no gradient.
 */
defineOp({
  name: 'BatchNormalization', inputs: ['X', 'scale', 'B', 'input_mean', 'input_var'],
  attrs: { epsilon: { kind: 'float', default: 1e-5 }, momentum: { kind: 'float', default: 0.9 }, training_mode: { kind: 'int', default: 0 } },
  infer: (c) => {
    requireFloat(c, 0);
    const dtype = sameDtype(c);
    const x = c.input(0);
    if (x.rank < 2) c.fail(`${c.describe(0)} must have rank >= 2 ([N, C, ...]), got rank ${x.rank}`);
    const C = x.shape[1]!;
    for (const i of [1, 2, 3, 4]) {
      const v = c.input(i);
      if (v.rank !== 1 || v.shape[0] !== C) c.fail(`${c.describe(i)} must have shape [${C}] (the channels of ${c.describe(0)})`);
    }
    const training = c.attr<number>('training_mode');
    if (training !== 0 && training !== 1) c.fail(`training_mode must be 0 or 1, got ${training}`);
    const n = c.numOutputs ?? (training ? 3 : 1);
    if (!training && n > 1) c.fail('running_mean and running_var are outputs in training mode only (training_mode=1)');
    return [{ dtype, shape: x.shape }, { dtype, shape: [C] }, { dtype, shape: [C] }].slice(0, n);
  },
  grad: (g) => batchNormGrad(g),
});

function batchNormGrad(g: GradCtx): (Value | null)[] {
  const [x, scale, dy] = [g.input(0), g.input(1), g.dy[0]!];
  const training = g.attr<number>('training_mode') === 1;
  const axes = [0, ...range(x.rank - 2, 2)];
  const eps = b.scalarLike(g.attr<number>('epsilon'), x);
  const mean = training ? b.reduceMean(x, axes) : perChannel(g.input(3), x.rank);
  const xc = b.sub(x, mean);
  const variance = training ? b.reduceMean(b.mul(xc, xc), axes) : perChannel(g.input(4), x.rank);
  const invstd = b.reciprocal(b.sqrt(b.add(variance, eps)));
  const xhat = b.mul(xc, invstd);
  const gs = b.mul(dy, perChannel(scale, x.rank));
  let dx: Value | null = null;
  if (g.needs[0]) {
    dx = training
      ? b.mul(invstd, b.sub(b.sub(gs, b.reduceMean(gs, axes)), b.mul(xhat, b.reduceMean(b.mul(gs, xhat), axes))))
      : b.mul(gs, invstd);
  }
  // Eval only: in training mode the given statistics feed running_mean/var, not Y.
  const dmean = !training && g.needs[3] ? b.neg(perChannelSum(b.mul(gs, invstd))) : null;
  const dvar = !training && g.needs[4]
    ? b.mul(perChannelSum(b.mul(b.mul(gs, xhat), b.mul(invstd, invstd))), b.scalarLike(-0.5, x)) : null;
  return [
    dx,
    g.needs[1] ? perChannelSum(b.mul(dy, xhat)) : null,
    g.needs[2] ? perChannelSum(dy) : null,
    dmean, dvar,
  ];
}

// ---- pools -------------------------------------------------------------------------------------

/** kernel_shape, required for the windowed pools. */
function poolKernel(c: InferCtx): number[] {
  const k = c.attrs['kernel_shape'] as number[] | undefined;
  if (k === undefined) c.fail('attribute kernel_shape is required');
  return [...k];
}

/** Geometry of a MaxPool / AveragePool node. */
export function poolGeometry(c: InferCtx): Window {
  const ceil = c.attr<number>('ceil_mode');
  if (ceil !== 0 && ceil !== 1) c.fail(`ceil_mode must be 0 or 1, got ${ceil}`);
  const win = convWindow(c, poolKernel(c), ceil === 1);
  if (ceil === 1 && c.op === 'AveragePool' && fmt(win.out) !== fmt(convWindow(c, win.kernel, false).out)) {
    // The last window would hang past the padded input; onnxruntime then divides by a clipped
    // count whose rule differs between count_include_pad modes. weft supports ceil_mode=1 only
    // where it changes nothing.
    c.fail(`ceil_mode=1 is not supported by weft where it changes the output (${fmt(win.out)} instead of ${fmt(convWindow(c, win.kernel, false).out)} for ${c.describe(0)}); pad explicitly instead`);
  }
  return win;
}

const poolInfer = (c: InferCtx): { dtype: Value['dtype']; shape: Value['shape'] } => {
  requireFloat(c, 0);
  const x = c.input(0);
  const win = poolGeometry(c);
  return { dtype: x.dtype, shape: [x.shape[0]!, x.shape[1]!, ...win.out] };
};

/**
 * MaxPool (opset 12): Y[n, c, o] = max over k of Xpad[n, c, o s + k d] (pads are -inf); Indices
 * (int64) are the argmax positions in X flattened over all of [N, C, S...] (onnxruntime includes
 * the N and C offsets: pinned by a test). storage_order must be 0 (row-major indices).
 * Gradient: dX = ScatterElements(zeros, Indices, dY, reduction=add) over the flattened X, which
 * sums windows that share a maximum (ScatterND would race on repeated indices).
 */
defineOp({
  name: 'MaxPool', inputs: ['X'],
  attrs: { ...windowAttrs, ceil_mode: { kind: 'int', default: 0 }, dilations: { kind: 'ints' }, storage_order: { kind: 'int', default: 0 } },
  infer: (c) => {
    if (c.attr<number>('storage_order') !== 0) c.fail('storage_order=1 (column-major indices) is not supported by weft');
    const y = poolInfer(c);
    return [y, { dtype: 'int64' as const, shape: y.shape }].slice(0, c.numOutputs ?? 2);
  },
  grad: (g) => {
    const x = g.input(0);
    const shape = x.shape;
    if (!isStatic(shape)) return g.fail(`gradient needs a static shape for ${g.describe(0)}`);
    // A node asked for Y alone (an imported model) recomputes the Indices.
    const idx = g.outputs[1] ?? b.apply('MaxPool', [x], g.attrs, 2)[1]!;
    const total = shape.reduce((p, d) => p * d, 1);
    const dx = b.scatterAdd(b.zeros([1, total], x.dtype), b.reshape(idx, [1, -1]), b.reshape(g.dy[0]!, [1, -1]), 1);
    return [b.reshape(dx, shape)];
  },
});

/**
 * Per-position divisor of an AveragePool: the kernel size (count_include_pad=1) or, with
 * count_include_pad=0, the window elements inside X: a product over dims of the per-dim counts,
 * as a constant [1, 1, O...] (1 / count, multiplied in).
 */
export function poolInverseCounts(win: Window, includePad: boolean, dtype: Value['dtype']): Value {
  const r = win.input.length;
  const perDimCounts = win.out.map((o, i) => Array.from({ length: o }, (_, j) => {
    const start = j * win.strides[i]! - win.pads[i]!;
    if (includePad) return win.kernel[i]!;
    return Math.min(start + win.kernel[i]!, win.input[i]!) - Math.max(start, 0);
  }));
  const n = win.out.reduce((p, o) => p * o, 1);
  const data = new Array<number>(n);
  for (let j = 0; j < n; j++) {
    let rest = j;
    let count = 1;
    for (let i = r - 1; i >= 0; i--) { count *= perDimCounts[i]![rest % win.out[i]!]!; rest = Math.floor(rest / win.out[i]!); }
    data[j] = 1 / count;
  }
  return b.constant(dtype === 'float64' ? Float64Array.from(data) : Float32Array.from(data), dtype, [1, 1, ...win.out]);
}

/**
 * AveragePool (opset 11): Y[n, c, o] = sum over k of Xpad[n, c, o s + k] / count, count = the
 * kernel size (count_include_pad=1) or the window's elements inside X (0). ceil_mode=1 is
 * accepted only where it does not change the output. Gradient: dX = ConvTranspose(dY / count,
 * ones [C, 1, k...], group C), every window spreading its share back.
 */
defineOp({
  name: 'AveragePool', inputs: ['X'],
  attrs: { ...windowAttrs, ceil_mode: { kind: 'int', default: 0 }, count_include_pad: { kind: 'int', default: 0 } },
  infer: (c) => [poolInfer(c)],
  grad: (g) => {
    const x = g.input(0);
    const win = poolGeometry(g);
    const C = staticDim(g, 0, 1);
    const scaled = b.mul(g.dy[0]!, poolInverseCounts(win, g.attr<number>('count_include_pad') === 1, x.dtype));
    const ones = b.expand(b.scalarLike(1, x), [C, 1, ...win.kernel]);
    return [convDx(scaled, ones, { ...win, dilations: win.kernel.map(() => 1) }, C)];
  },
});

/** GlobalAveragePool: Y[n, c, 1...] = mean of X[n, c] over the spatial dims; dX = dY / |S| spread. */
defineOp({
  name: 'GlobalAveragePool', inputs: ['X'],
  infer: (c) => {
    requireFloat(c, 0);
    const x = c.input(0);
    spatialDims(c, 0);
    return [{ dtype: x.dtype, shape: [x.shape[0]!, x.shape[1]!, ...new Array<number>(x.rank - 2).fill(1)] }];
  },
  grad: (g) => {
    const x = g.input(0);
    const n = (x.shape.slice(2) as number[]).reduce((p, d) => p * d, 1);
    return [b.expandLike(b.mul(g.dy[0]!, b.scalarLike(1 / n, x)), x)];
  },
});

/** Flatten: [d_0 ... d_{axis-1}] and [d_axis ...] collapse into a 2-D [outer, inner]; dX reshapes back. */
defineOp({
  name: 'Flatten', inputs: ['input'], attrs: { axis: { kind: 'int', default: 1 } },
  infer: (c) => {
    const x = c.input(0);
    const a = c.attr<number>('axis');
    const axis = a < 0 ? a + x.rank : a;
    if (axis < 0 || axis > x.rank) c.fail(`axis ${a} is out of range for ${c.describe(0)} (allowed [-${x.rank}, ${x.rank}])`);
    if (!isStatic(x.shape.slice(1))) c.fail(`${c.describe(0)} needs static dims after the first`);
    const prod = (ds: readonly (number | string)[]): number | string =>
      ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((p, d) => p * d, 1) : ds.join('*');
    return [{ dtype: x.dtype, shape: [prod(x.shape.slice(0, axis)), prod(x.shape.slice(axis))] }];
  },
  grad: (g) => [b.reshapeLike(g.dy[0]!, g.input(0))],
});
