/**
 * Tensor: the API users write ordinary code with. Every op only records a node in the graph
 * (MLX / tinygrad style); nothing runs until a value is forced. What forces computation:
 *   - `await t.data()`, `await t.item()`, `await t.toArray()`;
 *   - `await realize(...tensors)` (evaluates several in one compiled program);
 *   - calling a function made by `compile()` (it runs its cached program).
 * Forcing evaluates only what the forced tensors need, stores their data, and detaches them from
 * the graph: build gradients (`grad`) before forcing the loss, as MLX requires.
 */
import * as b from '../ir/build.js';
import type { AveragePoolOptions, BatchNormOptions, ConvOptions, ConvTransposeOptions, MaxPoolOptions } from '../ir/build.js';
import type { DType, TypedArray } from '../ir/dtype.js';
import { fromNumbers, toNumbers } from '../ir/dtype.js';
import { Value } from '../ir/graph.js';
import type { Dim } from '../ir/shape.js';
import { fmt, numel } from '../ir/shape.js';
import { grad as gradValues } from '../autodiff/grad.js';
import { realize as realizeValues } from '../runtime/executor.js';
import { Rng } from './random.js';

type Operand = Tensor | number;

export class Tensor {
  constructor(readonly value: Value) {}

  get shape(): readonly Dim[] { return this.value.shape; }
  get dtype(): DType { return this.value.dtype; }
  get rank(): number { return this.value.rank; }

  private lift(o: Operand): Value { return typeof o === 'number' ? b.scalarLike(o, this.value) : o.value; }
  private static w(v: Value): Tensor { return new Tensor(v); }

  add(o: Operand): Tensor { return Tensor.w(b.add(this.value, this.lift(o))); }
  sub(o: Operand): Tensor { return Tensor.w(b.sub(this.value, this.lift(o))); }
  mul(o: Operand): Tensor { return Tensor.w(b.mul(this.value, this.lift(o))); }
  div(o: Operand): Tensor { return Tensor.w(b.div(this.value, this.lift(o))); }
  pow(o: Operand): Tensor { return Tensor.w(b.pow(this.value, this.lift(o))); }
  matmul(o: Tensor): Tensor { return Tensor.w(b.matmul(this.value, o.value)); }
  neg(): Tensor { return Tensor.w(b.neg(this.value)); }
  sqrt(): Tensor { return Tensor.w(b.sqrt(this.value)); }
  exp(): Tensor { return Tensor.w(b.exp(this.value)); }
  log(): Tensor { return Tensor.w(b.log(this.value)); }
  tanh(): Tensor { return Tensor.w(b.tanh(this.value)); }
  erf(): Tensor { return Tensor.w(b.erf(this.value)); }
  relu(): Tensor { return Tensor.w(b.relu(this.value)); }
  gelu(): Tensor { return Tensor.w(b.gelu(this.value)); }
  sigmoid(): Tensor { return Tensor.w(b.sigmoid(this.value)); }
  softmax(axis = -1): Tensor { return Tensor.w(b.softmax(this.value, axis)); }
  logSoftmax(axis = -1): Tensor { return Tensor.w(b.logSoftmax(this.value, axis)); }
  sum(axes?: readonly number[], keepdims = false): Tensor { return Tensor.w(b.reduceSum(this.value, axes ?? allAxes(this), keepdims)); }
  mean(axes?: readonly number[], keepdims = false): Tensor { return Tensor.w(b.reduceMean(this.value, axes ?? allAxes(this), keepdims)); }
  max(axes?: readonly number[], keepdims = false): Tensor { return Tensor.w(b.reduceMax(this.value, axes ?? allAxes(this), keepdims)); }
  reshape(shape: readonly Dim[]): Tensor { return Tensor.w(b.reshape(this.value, shape)); }
  transpose(perm?: readonly number[]): Tensor { return Tensor.w(b.transpose(this.value, perm ?? allAxes(this).reverse())); }
  /** Swaps the last two dims. */
  get T(): Tensor { return Tensor.w(b.transposeLast2(this.value)); }
  slice(starts: readonly number[], ends: readonly number[], axes?: readonly number[], steps?: readonly number[]): Tensor {
    return Tensor.w(b.slice(this.value, starts, ends, axes ?? starts.map((_, i) => i), steps));
  }
  split(sizes: readonly number[], axis = 0): Tensor[] { return b.split(this.value, sizes, axis).map(Tensor.w); }
  expand(shape: readonly number[]): Tensor { return Tensor.w(b.expand(this.value, shape)); }
  squeeze(axes: readonly number[]): Tensor { return Tensor.w(b.squeeze(this.value, axes)); }
  unsqueeze(axes: readonly number[]): Tensor { return Tensor.w(b.unsqueeze(this.value, axes)); }
  gather(indices: Tensor, axis = 0): Tensor { return Tensor.w(b.gather(this.value, indices.value, axis)); }
  gatherElements(indices: Tensor, axis: number): Tensor { return Tensor.w(b.gatherElements(this.value, indices.value, axis)); }
  cast(to: DType): Tensor { return Tensor.w(b.cast(this.value, to)); }
  where(cond: Tensor, other: Operand): Tensor { return Tensor.w(b.where(cond.value, this.value, this.lift(other))); }
  layerNorm(scale: Tensor, bias: Tensor | null, epsilon = 1e-5): Tensor {
    return Tensor.w(b.layerNorm(this.value, scale.value, bias?.value ?? null, -1, epsilon));
  }
  /** Training-mode dropout; returns the output (the mask stays in the graph for the gradient). */
  dropout(ratio: number, seed?: number): Tensor { return Tensor.w(b.dropout(this.value, ratio, seed)[0]); }
  /** Mean cross-entropy of these logits [..., V] against integer targets [...]. */
  crossEntropy(targets: Tensor): Tensor { return Tensor.w(b.crossEntropy(this.value, targets.value)); }

  /**
   * 2-D convolution of this [N, C, H, W] with w [M, C / group, kH, kW] and optional bias [M]:
   * y[n, m, i, j] = bias[m] + sum_{c in group(m), p, q} w[m, c, p, q] xpad[n, c, i sH + p dH, j sW + q dW].
   *
   *   x.conv2d(w, b, { strides: [2, 2], pads: [1, 1, 1, 1] })   // [N, M, ceil(H/2), ceil(W/2)] for 3x3
   *   x.conv2d(w, null, { group: C })                           // depthwise: w is [C * k, 1, kH, kW]
   */
  conv2d(w: Tensor, bias: Tensor | null = null, o: ConvOptions = {}): Tensor {
    this.need4('conv2d');
    return Tensor.w(b.conv(this.value, w.value, bias?.value ?? null, o));
  }
  /** 2-D transposed convolution (the adjoint of conv2d in its input); w is [C, M / group, kH, kW]. */
  convTranspose2d(w: Tensor, bias: Tensor | null = null, o: ConvTransposeOptions = {}): Tensor {
    this.need4('convTranspose2d');
    return Tensor.w(b.convTranspose(this.value, w.value, bias?.value ?? null, o));
  }
  /** 2-D max pooling over kernel [kH, kW]: y[n, c, i, j] = max over the window (pads never win). */
  maxPool2d(kernel: readonly [number, number], o: MaxPoolOptions = {}): Tensor {
    this.need4('maxPool2d');
    return Tensor.w(b.maxPool(this.value, kernel, o)[0]);
  }
  /** 2-D average pooling: the window's sum over kH kW (countIncludePad) or over its elements inside x. */
  avgPool2d(kernel: readonly [number, number], o: AveragePoolOptions = {}): Tensor {
    this.need4('avgPool2d');
    return Tensor.w(b.averagePool(this.value, kernel, o));
  }
  /** Mean over the spatial dims: [N, C, S...] -> [N, C, 1, ...]. */
  globalAvgPool(): Tensor { return Tensor.w(b.globalAveragePool(this.value)); }
  /** Collapses dims [0, axis) and [axis, rank) into [outer, inner]; flatten(1) turns [N, C, H, W] into [N, C H W]. */
  flatten(axis = 1): Tensor { return Tensor.w(b.flatten(this.value, axis)); }
  /**
   * Batch normalization over channel axis 1: y = (x - mean) / sqrt(var + epsilon) * scale + bias.
   * Eval (default) uses the given statistics; `training: true` uses the batch's mean and biased
   * variance and returns running = momentum * running + (1 - momentum) * batch (onnxruntime's
   * convention; in eval the given statistics come back unchanged).
   */
  batchNorm(scale: Tensor, bias: Tensor, mean: Tensor, variance: Tensor, o: BatchNormOptions = {}): { y: Tensor; runningMean: Tensor; runningVar: Tensor } {
    const [y, rm, rv] = b.batchNorm(this.value, scale.value, bias.value, mean.value, variance.value, o);
    return { y: Tensor.w(y), runningMean: Tensor.w(rm), runningVar: Tensor.w(rv) };
  }
  private need4(what: string): void {
    if (this.rank !== 4) throw new Error(`${what}: expects a [N, C, H, W] input, got shape ${fmt(this.shape)}`);
  }

  /** Forces computation; returns the data (shared with the tensor: copy before mutating). */
  async data(): Promise<TypedArray> {
    await realizeValues([this.value]);
    return this.value.data!;
  }
  async toArray(): Promise<number[]> { return toNumbers(await this.data()); }
  async item(): Promise<number> {
    const d = await this.data();
    if (d.length !== 1) throw new Error(`item: tensor of shape ${fmt(this.shape)} has ${d.length} elements`);
    return Number(d[0]!);
  }

  toString(): string { return `Tensor(${this.value.toString()})`; }
}

const allAxes = (t: Tensor): number[] => t.shape.map((_, i) => i);

/** Forces several tensors in one compiled program. */
export async function realize(...ts: Tensor[]): Promise<void> { await realizeValues(ts.map((t) => t.value)); }

/** A tensor over existing data (not copied). */
export function tensor(data: TypedArray | readonly number[], shape?: readonly number[], dtype: DType = 'float32'): Tensor {
  const arr = ArrayBuffer.isView(data) ? (data as TypedArray) : fromNumbers(dtype, data as number[]);
  const dt: DType = ArrayBuffer.isView(data) ? dtypeOfArray(arr, dtype) : dtype;
  const s = shape ?? [arr.length];
  if (numel(s) !== arr.length) throw new Error(`tensor: ${arr.length} elements do not fill shape ${fmt(s)}`);
  return new Tensor(new Value(dt, s, null, 0, arr));
}

function dtypeOfArray(a: TypedArray, hint: DType): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Int32Array) return 'int32';
  return hint;
}

export const zeros = (shape: readonly number[], dtype: DType = 'float32'): Tensor => tensor(fromNumbers(dtype, new Array<number>(numel(shape)).fill(0)), shape, dtype);
export const ones = (shape: readonly number[], dtype: DType = 'float32'): Tensor => tensor(fromNumbers(dtype, new Array<number>(numel(shape)).fill(1)), shape, dtype);

/** Normal(0, std) samples from a seeded generator. */
export function randn(shape: readonly number[], rng: Rng, std = 1, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  const n = numel(shape);
  const a = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * std;
  return tensor(a, shape);
}

/** A graph input with no data yet (for compile / export); dims may be symbolic. */
export function placeholder(shape: readonly Dim[], dtype: DType = 'float32', name?: string): Tensor {
  const v = new Value(dtype, shape);
  v.name = name;
  return new Tensor(v);
}

/** Gradients of a scalar `loss` with respect to `wrt`, as lazy tensors. */
export function grad(loss: Tensor, wrt: readonly Tensor[]): Tensor[] {
  return gradValues(loss.value, wrt.map((t) => t.value)).map((v) => new Tensor(v));
}
