/**
 * Convolution and pooling as patch matrices (im2col) built from ONNX ops that onnxruntime runs in
 * every float dtype: Pad, strided Slice, Concat/Reshape, MatMul, ReduceSum. runtime/kernel_gaps.ts
 * lowers float64 Conv, ConvTranspose and AveragePool to these (onnxruntime's CPU provider has no
 * float64 kernels for them); bench/conv_grad.ts times the im2col form of the Conv gradients
 * against the ConvTranspose/Conv form the gradient rules use.
 */
import * as b from './build.js';
import type { Value } from './graph.js';
import type { Window } from './ops/window.js';
import { dilatedKernel } from './ops/window.js';

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);
const prod = (xs: readonly number[]): number => xs.reduce((p, x) => p * x, 1);

/** Every multi-index of `dims`, row-major. */
function multiIndex(dims: readonly number[]): number[][] {
  let out: number[][] = [[]];
  for (const d of dims) out = out.flatMap((prefix) => range(d).map((i) => [...prefix, i]));
  return out;
}

/** Pads the spatial dims of [N, C, S...] (skipped when there is nothing to pad). */
function padSpatial(x: Value, begin: readonly number[], end: readonly number[]): Value {
  if ([...begin, ...end].every((p) => p === 0)) return x;
  return b.pad(x, [0, 0, ...begin, 0, 0, ...end]);
}

/**
 * Patches of x [N, C, S...] under `win`: [N, C, prod(kernel), prod(out)], entry [n, c, k, o] =
 * Xpad[n, c, o s + k d] (zero padding). Built from whichever is fewer: one strided slice per
 * kernel tap (each [N, C, O...]) or one per output position (each [N, C, k...]).
 */
export function patches(x: Value, win: Window): Value {
  const r = win.input.length;
  const xp = padSpatial(x, win.pads.slice(0, r), win.pads.slice(r));
  const [KK, L] = [prod(win.kernel), prod(win.out)];
  const axes = range(r, 2);
  const parts: Value[] = [];
  if (KK <= L) {
    for (const k of multiIndex(win.kernel)) {
      const starts = k.map((ki, i) => ki * win.dilations[i]!);
      const ends = starts.map((s0, i) => s0 + win.strides[i]! * (win.out[i]! - 1) + 1);
      parts.push(b.reshape(b.slice(xp, starts, ends, axes, win.strides), [0, 0, 1, L]));
    }
    return parts.length === 1 ? parts[0]! : b.concat(parts, 2);
  }
  const ek = dilatedKernel(win);
  for (const o of multiIndex(win.out)) {
    const starts = o.map((oi, i) => oi * win.strides[i]!);
    const ends = starts.map((s0, i) => s0 + ek[i]!);
    parts.push(b.reshape(b.slice(xp, starts, ends, axes, win.dilations), [0, 0, KK, 1]));
  }
  return parts.length === 1 ? parts[0]! : b.concat(parts, 3);
}

/** [C] -> [1, C, 1, ...] for rank `rank`. */
const perChannel = (v: Value, rank: number): Value => b.reshape(v, [1, -1, ...new Array<number>(rank - 2).fill(1)]);

/**
 * Conv as one batched MatMul over patches: W [M, Cg, k...] as [group, M/group, Cg K] times the
 * patches as [N, group, Cg K, L], then [N, M, O...] (+ B).
 */
export function convIm2col(x: Value, w: Value, bias: Value | null, win: Window, group: number): Value {
  const [M, Cg] = w.shape as [number, number];
  const KK = prod(win.kernel);
  const p = b.reshape(patches(x, win), [0, group, Cg * KK, prod(win.out)]);
  const y = b.reshape(b.matmul(b.reshape(w, [group, M / group, Cg * KK]), p), [0, M, ...win.out]);
  return bias === null ? y : b.add(y, perChannel(bias, y.rank));
}

/**
 * Inserts s - 1 zeros between neighbours along each spatial dim of [N, C, S...]:
 * size n becomes s (n - 1) + 1. Interleaves a zero-padded size-s axis after each dim, then crops.
 */
export function insertZeros(x: Value, strides: readonly number[]): Value {
  if (strides.every((s) => s === 1)) return x;
  const sp = x.shape.slice(2) as number[];
  const r = sp.length;
  const inter = b.reshape(x, [0, 0, ...sp.flatMap((n) => [n, 1])]);
  const padded = b.pad(inter, [...new Array<number>(2 + 2 * r).fill(0), 0, 0, ...strides.flatMap((s) => [0, s - 1])]);
  const flat = b.reshape(padded, [0, 0, ...sp.map((n, i) => n * strides[i]!)]);
  return b.slice(flat, sp.map(() => 0), sp.map((n, i) => strides[i]! * (n - 1) + 1), range(r, 2));
}

/** Pads (positive entries) and crops (negative entries) the spatial dims. */
function padOrCrop(x: Value, begin: readonly number[], end: readonly number[]): Value {
  const sp = x.shape.slice(2) as number[];
  let v = x;
  if ([...begin, ...end].some((p) => p < 0)) {
    v = b.slice(v, begin.map((p) => Math.max(0, -p)), sp.map((n, i) => n - Math.max(0, -end[i]!)), range(sp.length, 2));
  }
  return padSpatial(v, begin.map((p) => Math.max(0, p)), end.map((p) => Math.max(0, p)));
}

/**
 * ConvTranspose as a stride-1 Conv: zeros inserted between X's elements (stride), padded by
 * K - 1 - pad_begin before and K - 1 - pad_end + output_padding after (negative: cropped), then
 * convolved with W flipped in space and regrouped from [C, M/g, k...] to [M, C/g, k...].
 */
export function convTransposeIm2col(x: Value, w: Value, bias: Value | null, win: Window & { outputPadding: readonly number[] }, group: number): Value {
  const r = win.input.length;
  const ek = dilatedKernel(win);
  const z = insertZeros(x, win.strides);
  const xp = padOrCrop(z, ek.map((k, i) => k - 1 - win.pads[i]!), ek.map((k, i) => k - 1 - win.pads[i + r]! + win.outputPadding[i]!));
  const [C, Mg] = w.shape as [number, number];
  const Cg = C / group;
  const regrouped = b.reshape(b.transpose(b.reshape(w, [group, Cg, Mg, ...win.kernel]), [0, 2, 1, ...range(r, 3)]), [group * Mg, Cg, ...win.kernel]);
  const flipped = b.slice(regrouped, win.kernel.map(() => -1), win.kernel.map(() => -(2 ** 31)), range(r, 2), win.kernel.map(() => -1));
  const conv: Window = {
    input: xp.shape.slice(2) as number[], kernel: win.kernel, strides: win.kernel.map(() => 1),
    dilations: win.dilations, pads: new Array<number>(2 * r).fill(0), out: win.out,
  };
  return convIm2col(xp, flipped, bias, conv, group);
}

/** AveragePool as a patch sum times the constant per-position 1 / count. */
export function averagePoolIm2col(x: Value, win: Window, inverseCounts: Value): Value {
  const s = b.reduceSum(patches(x, win), [2], false);
  return b.mul(b.reshape(s, [0, 0, ...win.out]), inverseCounts);
}

/**
 * Conv's dW through patches: dW[g, m, (c, k)] = sum_n dY[n, g, m, :] . P[n, g, (c, k), :], a
 * batched MatMul against the transposed patches, summed over N (or, `foldN`, N moved into the
 * columns first so each group is one large product).
 */
export function convDwIm2col(x: Value, dy: Value, win: Window, group: number, Cg: number, foldN = false): Value {
  const [N, M] = dy.shape as [number, number];
  const KK = prod(win.kernel);
  const L = prod(win.out);
  const p = b.reshape(patches(x, win), [N, group, Cg * KK, L]);
  const d = b.reshape(dy, [N, group, M / group, L]);
  if (foldN) {
    // One product per group over N L columns: [g, M/g, N L] . [g, N L, Cg K].
    const fold = (v: Value, rows: number): Value => b.reshape(b.transpose(v, [1, 2, 0, 3]), [group, rows, N * L]);
    return b.reshape(b.matmul(fold(d, M / group), b.transposeLast2(fold(p, Cg * KK))), [M, Cg, ...win.kernel]);
  }
  const dw = b.reduceSum(b.matmul(d, b.transposeLast2(p)), [0], false);
  return b.reshape(dw, [M, Cg, ...win.kernel]);
}

/**
 * Conv's dX through patches: dP = W^T dY per group ([N, C, K, L]), then col2im: each kernel tap's
 * [N, C, O...] slab gets the stride's zeros inserted, is padded to its place in Xpad, the slabs
 * are summed and the pads cropped.
 */
export function convDxCol2im(dy: Value, w: Value, win: Window, group: number): Value {
  const [M, Cg] = w.shape as [number, number];
  const N = dy.shape[0] as number;
  const r = win.input.length;
  const KK = prod(win.kernel);
  const L = prod(win.out);
  const wt = b.transposeLast2(b.reshape(w, [group, M / group, Cg * KK]));
  const dp = b.reshape(b.matmul(wt, b.reshape(dy, [N, group, M / group, L])), [N, Cg * group, KK, ...win.out]);
  const padded = win.input.map((n, i) => n + win.pads[i]! + win.pads[i + r]!);
  const slabs = multiIndex(win.kernel).map((k, j) => {
    const slab = b.reshape(b.slice(dp, [j], [j + 1], [2]), [N, Cg * group, ...win.out]);
    const begin = k.map((ki, i) => ki * win.dilations[i]!);
    const end = begin.map((s0, i) => padded[i]! - s0 - (win.strides[i]! * (win.out[i]! - 1) + 1));
    return padSpatial(insertZeros(slab, win.strides), begin, end);
  });
  const full = b.sum(slabs);
  return b.slice(full, win.pads.slice(0, r), win.input.map((n, i) => win.pads[i]! + n), range(r, 2));
}
