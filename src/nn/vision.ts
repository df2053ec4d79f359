/**
 * Vision layers (PyTorch's names and defaults) over the IR's Conv, BatchNormalization and pooling
 * ops, and `Sequential` to chain layers. Images are NCHW float32.
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import { Tensor } from '../tensor/tensor.js';
import { allReduce, copyTo } from '../ir/ops/collective.js';
import { Dropout, Linear } from './layers.js';
import { Module, init } from './module.js';
import type { Init, ModuleBuffer, Parameter } from './module.js';

/** A module with a one-tensor forward: what `Sequential` chains. */
export type Layer = Module & { forward(x: Tensor): Tensor };

type Pair = number | readonly [number, number];
const pair = (v: Pair, what: string): [number, number] => {
  const p: [number, number] = typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (!p.every((x) => Number.isInteger(x) && x >= 0)) throw new Error(`${what} must be a non-negative integer or a pair of them, got ${JSON.stringify(v)}`);
  return p;
};

/** U(-1/sqrt(fanIn), 1/sqrt(fanIn)), fanIn = the product of every dim but the first (PyTorch's Conv default). */
const uniformConv = (fanIn: number): Init => (v, rng) => {
  const a = 1 / Math.sqrt(fanIn);
  for (let i = 0; i < v.length; i++) v[i] = (rng.uniform() * 2 - 1) * a;
};

export interface Conv2dOptions {
  /** Default 1. */
  stride?: Pair;
  /** Zero padding on each side, or 'same' (stride 1: output size = input size) / 'valid' (none). Default 0. */
  padding?: Pair | 'same' | 'valid';
  dilation?: Pair;
  /** Channel groups (in and out channels both divisible); inChannels for depthwise. Default 1. */
  groups?: number;
  /** Default true. */
  bias?: boolean;
}

/**
 * 2-D convolution, Y = conv(X, W) + b with W [out, in / groups, kh, kw]: X [N, in, H, W] ->
 * [N, out, H', W'], H' = floor((H + 2 p - d (k - 1) - 1) / s) + 1. Weight and bias are
 * initialized U(+-1/sqrt(in / groups * kh * kw)) as PyTorch's Conv2d.
 *
 *   new Conv2d(1, 32, 3, { padding: 1 })
 */
export class Conv2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  private readonly opts: b.ConvOptions;

  constructor(readonly inChannels: number, readonly outChannels: number, kernel: Pair, o: Conv2dOptions = {}) {
    super();
    const groups = o.groups ?? 1;
    if (!(Number.isInteger(groups) && groups >= 1 && inChannels % groups === 0 && outChannels % groups === 0)) {
      throw new Error(`Conv2d: groups (${groups}) must divide inChannels (${inChannels}) and outChannels (${outChannels})`);
    }
    const [kh, kw] = pair(kernel, 'Conv2d: kernel');
    const fanIn = (inChannels / groups) * kh * kw;
    this.weight = this.param('w', [outChannels, inChannels / groups, kh, kw], uniformConv(fanIn));
    this.bias = o.bias === false ? null : this.param('b', [outChannels], uniformConv(fanIn));
    const [sh, sw] = pair(o.stride ?? 1, 'Conv2d: stride');
    const [dh, dw] = pair(o.dilation ?? 1, 'Conv2d: dilation');
    const pad = o.padding ?? 0;
    const base: b.ConvOptions = { strides: [sh, sw], dilations: [dh, dw], group: groups };
    if (pad === 'same') {
      if (sh !== 1 || sw !== 1) throw new Error(`Conv2d: padding 'same' needs stride 1, got [${sh}, ${sw}]`);
      this.opts = { ...base, autoPad: 'SAME_UPPER' };
    } else if (pad === 'valid') {
      this.opts = base;
    } else {
      const [ph, pw] = pair(pad, 'Conv2d: padding');
      this.opts = { ...base, pads: [ph, pw, ph, pw] };
    }
  }

  forward(x: Tensor): Tensor { return new Tensor(b.conv(x.value, this.weight.t.value, this.bias?.t.value ?? null, this.opts)); }
}

/**
 * Batch normalization over channels (axis 1) of [N, C, ...]: in training, each batch is
 * normalized with its own mean and biased variance, and the running statistics move by
 * `momentum` (PyTorch's convention: running = (1 - momentum) running + momentum batch, the
 * variance unbiased); in eval, the running statistics normalize. Scale 1, bias 0.
 */
export class BatchNorm2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  readonly runningMean: ModuleBuffer;
  readonly runningVar: ModuleBuffer;
  /**
   * Synchronized statistics (PyTorch's SyncBatchNorm): the batch's sums are all-reduced over this
   * mesh axis, so every rank normalizes with the statistics of the whole global batch. Set by a
   * data-parallel run before tracing; null: each rank's own batch.
   */
  sync: { readonly axis: string; readonly size: number } | null = null;

  constructor(readonly channels: number, readonly eps = 1e-5, readonly momentum = 0.1) {
    super();
    if (!(momentum >= 0 && momentum <= 1)) throw new Error(`BatchNorm2d: momentum must be in [0, 1], got ${momentum}`);
    this.weight = this.param('w', [channels], init.ones());
    this.bias = this.param('b', [channels], init.zeros());
    this.runningMean = this.buffer('running_mean', [channels], init.zeros());
    this.runningVar = this.buffer('running_var', [channels], init.ones());
  }

  forward(x: Tensor): Tensor {
    const [rm, rv] = [this.runningMean.t.value, this.runningVar.t.value];
    if (!this.training) return new Tensor(b.batchNorm(x.value, this.weight.t.value, this.bias.t.value, rm, rv, { epsilon: this.eps })[0]);
    if (this.sync) return this.synchronized(x, this.sync);
    // ONNX's momentum weighs the running value: ours (PyTorch's) weighs the batch.
    const [y, rm2, rv2] = b.batchNorm(x.value, this.weight.t.value, this.bias.t.value, rm, rv, { training: true, epsilon: this.eps, momentum: 1 - this.momentum });
    this.runningMean.update(new Tensor(rm2));
    this.runningVar.update(new Tensor(unbiasedRunningVar(x, rv, rv2, 1 - this.momentum)));
    return new Tensor(y);
  }

  /**
   * Training-mode normalization with statistics over every rank's batch: the per-channel sums of x
   * and x^2 are all-reduced (weft.Copy(weft.AllReduce(.)): forward a sum, backward a sum of the
   * ranks' gradients, as SyncBatchNorm's backward all-reduces sum(dy) and sum(dy xhat)), then
   * mean = S1 / n, var = S2 / n - mean^2 over the n = ranks * N * H * W values.
   */
  private synchronized(x: Tensor, sync: { axis: string; size: number }): Tensor {
    const axes = [0, ...x.shape.slice(2).map((_, i) => i + 2)];
    const local = (x.shape as number[]).reduce((p, d, i) => (i === 1 ? p : p * d), 1);
    const n = local * sync.size;
    const global = (t: Tensor): Tensor => (sync.size === 1 ? t : new Tensor(copyTo(allReduce(t.value, sync.axis, sync.size), sync.axis, sync.size)));
    const s1 = global(x.sum(axes, true));
    const s2 = global(x.mul(x).sum(axes, true));
    const mean = s1.mul(1 / n);
    const variance = s2.mul(1 / n).sub(mean.mul(mean));
    const shape = [1, this.channels, ...x.shape.slice(2).map(() => 1)];
    const y = x.sub(mean).div(variance.add(this.eps).sqrt()).mul(this.weight.t.reshape(shape)).add(this.bias.t.reshape(shape));
    const m = this.momentum;
    const flat = (t: Tensor): Tensor => t.reshape([this.channels]);
    this.runningMean.update(this.runningMean.t.mul(1 - m).add(flat(mean).mul(m)));
    this.runningVar.update(this.runningVar.t.mul(1 - m).add(flat(variance).mul((m * n) / Math.max(1, n - 1))));
    return y;
  }
}

/**
 * onnxruntime moves running_var by the biased batch variance v: rv2 = mom rv + (1 - mom) v.
 * PyTorch uses the unbiased n / (n - 1) v, n = N * H * W: that is rv2 + (rv2 - mom rv) / (n - 1).
 */
function unbiasedRunningVar(x: Tensor, rv: Value, rv2: Value, mom: number): Value {
  const n = (x.shape as number[]).reduce((p, d, i) => (i === 1 ? p : p * d), 1);
  if (n < 2) return rv2;
  // onnxruntime reads the momentum attribute as float32.
  const delta = b.sub(rv2, b.mul(rv, b.scalarLike(Math.fround(mom), rv)));
  return b.add(rv2, b.mul(delta, b.scalarLike(1 / (n - 1), rv)));
}

export interface PoolOptions {
  /** Default: the kernel size. */
  stride?: Pair;
  /** Default 0 (max pooling pads with -inf, average pooling excludes the padding). */
  padding?: Pair;
}

function poolOpts(kernel: [number, number], o: PoolOptions): b.WindowOptions {
  const [sh, sw] = pair(o.stride ?? kernel, 'pool: stride');
  const [ph, pw] = pair(o.padding ?? 0, 'pool: padding');
  return { strides: [sh, sw], pads: [ph, pw, ph, pw] };
}

/** A k x k pooling window and its strides and pads, shared by the pools. */
abstract class Pool2d extends Module {
  protected readonly kernel: [number, number];
  protected readonly opts: b.WindowOptions;
  constructor(name: string, kernel: Pair, o: PoolOptions) {
    super();
    this.kernel = pair(kernel, `${name}: kernel`);
    this.opts = poolOpts(this.kernel, o);
  }
  abstract forward(x: Tensor): Tensor;
}

/** Max over k x k windows. */
export class MaxPool2d extends Pool2d {
  constructor(kernel: Pair, o: PoolOptions = {}) { super('MaxPool2d', kernel, o); }
  forward(x: Tensor): Tensor { return new Tensor(b.maxPool(x.value, this.kernel, this.opts)[0]); }
}

/** Mean over k x k windows; padding counts in the divisor unless `countIncludePad` is false (PyTorch's default). */
export class AvgPool2d extends Pool2d {
  private readonly countIncludePad: boolean;
  constructor(kernel: Pair, o: PoolOptions & { countIncludePad?: boolean } = {}) {
    super('AvgPool2d', kernel, o);
    this.countIncludePad = o.countIncludePad ?? true;
  }
  forward(x: Tensor): Tensor { return new Tensor(b.averagePool(x.value, this.kernel, { ...this.opts, countIncludePad: this.countIncludePad })); }
}

/** Mean over the spatial dims, flattened: [N, C, H, W] -> [N, C]. */
export class GlobalAvgPool extends Module {
  forward(x: Tensor): Tensor { return new Tensor(b.flatten(b.globalAveragePool(x.value), 1)); }
}

/** [N, ...] -> [N, prod(...)]. */
export class Flatten extends Module {
  forward(x: Tensor): Tensor { return new Tensor(b.flatten(x.value, 1)); }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor { return x.relu(); }
}

/** Layers applied in order; children are named '0', '1', ... as PyTorch's nn.Sequential. */
export class Sequential extends Module {
  readonly layers: readonly Layer[];
  constructor(layers: readonly Layer[]) {
    super();
    this.layers = layers.map((l, i) => this.child(String(i), l));
  }
  forward(x: Tensor): Tensor { return this.layers.reduce((h, l) => l.forward(h), x); }
}

export interface ConvNetConfig {
  /** Input image [C, H, W]. */
  input: readonly [number, number, number];
  classes: number;
  /** Output channels of each stage: 3x3 conv (padding 1), [BatchNorm], ReLU, 2x2 max-pool. */
  channels: readonly number[];
  /** Hidden fully connected width (0: the flattened features go straight to the classifier). */
  hidden: number;
  batchNorm: boolean;
  /** Dropout before each fully connected layer. */
  dropout: number;
}

/** A small CNN classifier (the MNIST recipe's): conv stages, then one or two Linear layers. */
export function convNet(c: ConvNetConfig): Sequential {
  let [ch, h, w] = c.input;
  const layers: Layer[] = [];
  for (const out of c.channels) {
    if (h < 2 || w < 2) throw new Error(`convNet: ${c.channels.length} pooling stages shrink a ${c.input[1]}x${c.input[2]} image below 1x1`);
    layers.push(new Conv2d(ch, out, 3, { padding: 1, bias: !c.batchNorm }));
    if (c.batchNorm) layers.push(new BatchNorm2d(out));
    layers.push(new ReLU(), new MaxPool2d(2));
    [ch, h, w] = [out, Math.floor(h / 2), Math.floor(w / 2)];
  }
  layers.push(new Flatten());
  const drop = (): void => { if (c.dropout > 0) layers.push(new Dropout(c.dropout)); };
  let features = ch * h * w;
  if (c.hidden > 0) {
    drop();
    layers.push(new Linear(features, c.hidden), new ReLU());
    features = c.hidden;
  }
  drop();
  layers.push(new Linear(features, c.classes));
  return new Sequential(layers);
}
