/**
 * Sliding-window geometry shared by Conv, ConvTranspose and the pools: strides, dilations and
 * pads (explicit, or resolved from auto_pad) per spatial dim, and the output size, with trace-time
 * errors that name the op, the input and both shapes.
 */
import type { InferCtx } from '../registry.js';
import { fmt, isStatic } from '../shape.js';

export interface Window {
  /** Input spatial dims (after N and C). */
  readonly input: readonly number[];
  readonly kernel: readonly number[];
  readonly strides: readonly number[];
  readonly dilations: readonly number[];
  /** Explicit pads, ONNX order [begin_0, begin_1, ..., end_0, end_1, ...], resolved from auto_pad. */
  readonly pads: readonly number[];
  /** Output spatial dims. */
  readonly out: readonly number[];
}

/** The kernel's extent once dilated: d (k - 1) + 1 per spatial dim. */
export const dilatedKernel = (w: Pick<Window, 'kernel' | 'dilations'>): number[] =>
  w.kernel.map((k, i) => w.dilations[i]! * (k - 1) + 1);

/** Spatial dims of input `i` ([N, C, spatial...]); fails naming the input for low rank or symbolic dims. */
export function spatialDims(c: InferCtx, i: number): number[] {
  const x = c.input(i);
  if (x.rank < 3) c.fail(`${c.describe(i)} must have rank >= 3 ([N, C, spatial...]), got rank ${x.rank}`);
  const s = x.shape.slice(2);
  if (!isStatic(s)) c.fail(`${c.describe(i)} needs static spatial dims`);
  return [...s];
}

/** An ints attribute with one entry per spatial dim (or `per` entries), each >= `min`. */
export function perDim(c: InferCtx, name: string, n: number, dflt: number, min: number): number[] {
  const v = c.attrs[name] as number[] | undefined;
  if (v === undefined) return new Array<number>(n).fill(dflt);
  if (v.length !== n) c.fail(`${name} ${fmt(v)} must have ${n} entries for ${c.describe(0)}`);
  if (v.some((x) => x < min)) c.fail(`${name} ${fmt(v)} must be >= ${min}`);
  return [...v];
}

const AUTO_PADS = ['NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'];

/** auto_pad, validated; explicit pads may only come with NOTSET. */
export function autoPad(c: InferCtx): string {
  const a = (c.attrs['auto_pad'] as string | undefined) ?? 'NOTSET';
  if (!AUTO_PADS.includes(a)) c.fail(`auto_pad '${a}' is not one of ${AUTO_PADS.join(', ')}`);
  const pads = c.attrs['pads'] as number[] | undefined;
  if (a !== 'NOTSET' && pads !== undefined && pads.some((p) => p !== 0)) c.fail(`pads ${fmt(pads)} cannot be combined with auto_pad '${a}'`);
  return a;
}

/**
 * The window of a Conv or pool over input 0. Output size per dim, with P = begin + end pads and
 * K = the dilated kernel: floor((in + P - K) / s) + 1 (ceil with `ceil`). SAME_* pads so that
 * out = ceil(in / s): total = max(0, (out - 1) s + K - in), the odd pad at the end (UPPER) or the
 * beginning (LOWER). VALID pads nothing. With `ceil` a window starting in the end padding is dropped.
 */
export function convWindow(c: InferCtx, kernel: readonly number[], ceil = false): Window {
  const input = spatialDims(c, 0);
  const r = input.length;
  if (kernel.length !== r) c.fail(`kernel_shape ${fmt(kernel)} must have ${r} entries for ${c.describe(0)}`);
  if (kernel.some((k) => k < 1)) c.fail(`kernel_shape ${fmt(kernel)} must be positive`);
  const strides = perDim(c, 'strides', r, 1, 1);
  const dilations = perDim(c, 'dilations', r, 1, 1);
  const ek = dilatedKernel({ kernel, dilations });
  const mode = autoPad(c);
  let pads: number[];
  if (mode === 'NOTSET') pads = perDim(c, 'pads', 2 * r, 0, 0);
  else if (mode === 'VALID') pads = new Array<number>(2 * r).fill(0);
  else {
    pads = new Array<number>(2 * r).fill(0);
    input.forEach((n, i) => {
      const total = Math.max(0, (Math.ceil(n / strides[i]!) - 1) * strides[i]! + ek[i]! - n);
      const small = Math.floor(total / 2);
      pads[i] = mode === 'SAME_UPPER' ? small : total - small;
      pads[i + r] = total - pads[i]!;
    });
  }
  const padded = input.map((n, i) => n + pads[i]! + pads[i + r]!);
  if (ek.some((k, i) => k > padded[i]!)) {
    c.fail(`kernel ${fmt(kernel)} (dilated ${fmt(ek)}) is larger than ${c.describe(0)} padded to ${fmt(padded)}`);
  }
  const round = ceil ? Math.ceil : Math.floor;
  // With ceil_mode a last window that would start inside the end padding is dropped (onnxruntime
  // and PyTorch agree; measured: in 4, kernel 2, stride 2, pads [0, 1] gives 2 outputs, not 3).
  const out = padded.map((p, i) => {
    const o = round((p - ek[i]!) / strides[i]!) + 1;
    return ceil && (o - 1) * strides[i]! >= input[i]! + pads[i]! ? o - 1 : o;
  });
  return { input, kernel: [...kernel], strides, dilations, pads, out };
}

/**
 * The window of a ConvTranspose (the adjoint of a Conv with the same attributes). Output size per
 * dim: s (in - 1) + output_padding + K - P. With output_shape, or auto_pad SAME_* (out = in s),
 * the total pad is what makes that size, split as onnxruntime splits it (see the op's docs).
 */
export function convTransposeWindow(c: InferCtx, kernel: readonly number[]): Window & { outputPadding: readonly number[] } {
  const input = spatialDims(c, 0);
  const r = input.length;
  if (kernel.length !== r) c.fail(`kernel_shape ${fmt(kernel)} must have ${r} entries for ${c.describe(0)}`);
  const strides = perDim(c, 'strides', r, 1, 1);
  const dilations = perDim(c, 'dilations', r, 1, 1);
  const outputPadding = perDim(c, 'output_padding', r, 0, 0);
  // ONNX allows output_padding below the stride or the dilation; onnxruntime only below the stride.
  outputPadding.forEach((p, i) => {
    if (p >= strides[i]!) c.fail(`output_padding ${fmt(outputPadding)} must be smaller than strides ${fmt(strides)} in each dim`);
  });
  const ek = dilatedKernel({ kernel, dilations });
  const full = input.map((n, i) => strides[i]! * (n - 1) + outputPadding[i]! + ek[i]!);
  const mode = autoPad(c);
  const given = c.attrs['output_shape'] as number[] | undefined;
  let pads: number[];
  if (given !== undefined || mode === 'SAME_UPPER' || mode === 'SAME_LOWER') {
    const target = given ?? input.map((n, i) => n * strides[i]!);
    if (target.length !== r) c.fail(`output_shape ${fmt(target)} must have ${r} entries for ${c.describe(0)}`);
    pads = new Array<number>(2 * r).fill(0);
    target.forEach((t, i) => {
      const total = full[i]! - t;
      if (total < 0) c.fail(`output_shape ${fmt(target)} is larger than the full transposed output ${fmt(full)} of ${c.describe(0)}`);
      // onnxruntime puts the odd pad at the end for SAME_UPPER (as Conv does) and at the
      // beginning otherwise, output_shape with NOTSET included (measured; pinned by a test).
      const small = Math.floor(total / 2);
      pads[i] = mode === 'SAME_UPPER' ? small : total - small;
      pads[i + r] = total - pads[i]!;
    });
  } else if (mode === 'VALID') pads = new Array<number>(2 * r).fill(0);
  else pads = perDim(c, 'pads', 2 * r, 0, 0);
  const out = full.map((f, i) => f - pads[i]! - pads[i + r]!);
  if (out.some((o) => o < 1)) c.fail(`pads ${fmt(pads)} leave no output for ${c.describe(0)} (full transposed size ${fmt(full)})`);
  return { input, kernel: [...kernel], strides, dilations, pads, out, outputPadding };
}
