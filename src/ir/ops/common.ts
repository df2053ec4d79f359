import type { DType } from '../dtype.js';
import { isFloat } from '../dtype.js';
import type { InferCtx, OutputType } from '../registry.js';
import { broadcastShapes } from '../shape.js';

/** All present inputs share one dtype; the message names both inputs when they do not. */
export function sameDtype(c: InferCtx, indices?: number[]): DType {
  const idx = indices ?? c.inputs.map((_, i) => i);
  const first = c.input(idx[0]!);
  for (const i of idx.slice(1)) {
    const v = c.inputs[i];
    if (v && v.dtype !== first.dtype) {
      c.fail(`${c.describe(i)} has dtype ${v.dtype} but ${c.describe(idx[0]!)} has dtype ${first.dtype}`);
    }
  }
  return first.dtype;
}

export function requireFloat(c: InferCtx, i: number): void {
  const v = c.input(i);
  if (!isFloat(v.dtype)) c.fail(`${c.describe(i)} must be a float type, got ${v.dtype}`);
}

/** Multidirectional broadcast of all inputs, one dtype. */
export function broadcastInfer(c: InferCtx, outDtype?: DType): OutputType[] {
  const dtype = sameDtype(c);
  const shape = broadcastShapes(c.inputs.map((v) => v!.shape), (i) => `input ${i}`);
  return [{ dtype: outDtype ?? dtype, shape }];
}

/** Unary float op: output like the input. */
export function unaryFloat(c: InferCtx): OutputType[] {
  requireFloat(c, 0);
  const x = c.input(0);
  return [{ dtype: x.dtype, shape: x.shape }];
}

/** Reads a constant int input or fails naming it. */
export function needInts(c: InferCtx, i: number): number[] {
  const v = c.ints(i);
  if (v === null) c.fail(`${c.describe(i)} must be a constant (weft resolves it at trace time)`);
  return v;
}
