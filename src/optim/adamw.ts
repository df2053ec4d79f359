/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), step for step as
 * torch.optim.AdamW (amsgrad off, maximize off). At step t = 1, 2, ..., over the whole flat vector:
 *
 *   g <- g * min(1, clipNorm / (||g||_2 + 1e-6))          only when clipNorm is set
 *   p <- p * (1 - lr * wd)                                  0 decay where noDecay(name)
 *   m <- beta1 m + (1 - beta1) g
 *   v <- beta2 v + (1 - beta2) g^2
 *   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * The update is one graph over chunks of the flat parameter, gradient and moment vectors,
 * compiled once per chunk length (see FlatProgram); the gradient norm is one reduction before it.
 * Per-step scalars are computed on the host in float64, as torch computes them in Python, and fed
 * as graph inputs: (1 - lr wd), lr / (1 - beta1^t), sqrt(1 - beta2^t), the betas, eps and the clip
 * threshold. Nothing that changes between steps is a graph constant, so the session is reused for
 * every step, every learning-rate schedule and every AdamW over a layout of the same size.
 *
 * New p, m and v are copied back into their flat buffers with set(), so views and graph leaves
 * over them stay valid. The gradient buffer is read, never written (torch clips it in place).
 *
 * With `offload`, m and v live in files (offload.ts: read ahead and written behind, chunk by
 * chunk, in the same chunks, so the numbers are the same bit for bit); `stateVectors()` reads
 * them whole either way, and `step()` resolves before its last writes land (the next read waits).
 *
 * @example
 *   const opt = new AdamW(params, { lr: 3e-4, weightDecay: 0.1, clipNorm: 1, noDecay: (n) => n.endsWith('.bias') });
 *   const { gradNorm } = await opt.step(grads, schedule(step));
 */
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { FlatBuffer as Flat } from '../runtime/flat.js';
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import { beginStep } from './clip.js';
import type { StepScaling } from './clip.js';
import { decayMask, dtypeOf, FlatProgram, input, restore, updatePieces, zerosLike } from './common.js';
import type { ShardSpec } from './common.js';
import { checkOffloadedParams, OffloadedState } from './offload.js';
import type { OffloadConfig } from './offload.js';
import type { Layout } from '../runtime/flat.js';

export interface AdamWConfig {
  /** Learning rate; `step(grads, lr)` overrides it for one step (schedules). */
  lr: number;
  /** Decay of the first moment. Default 0.9. */
  beta1?: number;
  /** Decay of the second moment. Default 0.999. */
  beta2?: number;
  /** Added to the bias-corrected sqrt(v). Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay: p <- p (1 - lr wd) each step. Default 0.01 (torch's default). */
  weightDecay?: number;
  /** Clip the global gradient L2 norm to this before the update (clip_grad_norm_). Off if absent. */
  clipNorm?: number;
  /** Tensors that do not decay (biases, LayerNorm); decided once, by tensor name. */
  noDecay?: (name: string) => boolean;
  /**
   * The global gradient norm, when this rank's buffer is not the whole model (tensor-parallel
   * shards: their squares summed over the axis, replicated tensors counted once). Default: the
   * norm of the flat buffer.
   */
  gradNorm?: (grads: FloatArray) => Promise<number>;
  /** Gradients arrive multiplied by a loss scale, which `step(grads, lr, { lossScale })` divides out in the update. */
  lossScaled?: boolean;
  /**
   * ZeRO: update only these ranges of the parameters, with moments over the shard's layout. The
   * global norm must come with each step (`scaling.norm`): no rank holds every gradient.
   */
  shard?: ShardSpec;
  /**
   * Keep m and v on disk, `<dir>/adamw.m.f32` and `adamw.v.f32` (float32 only), streamed through
   * a few chunk buffers each step instead of held in memory (offload.ts); with `offload.params`
   * the parameters too (a detached `params` buffer: ZeRO stage 3's shard on disk).
   */
  offload?: OffloadConfig;
}

export interface StepInfo {
  /** Global L2 norm of the gradients before clipping (what clip_grad_norm_ returns). */
  gradNorm: number;
}

/** Everything needed to resume AdamW: the step count and both moments (copies). */
export interface AdamWState<A extends FloatArray = FloatArray> {
  t: number;
  m: A;
  v: A;
}

export class AdamW<A extends FloatArray = FloatArray> {
  /** The moments in memory; null when offloaded. */
  private readonly moments: { m: FlatBuffer<A>; v: FlatBuffer<A> } | null;
  /** The moments on disk (`offload`); null in memory. */
  readonly offloaded: OffloadedState | null;
  /** The moments' layout: the parameters', or the shard's. */
  private readonly stateLayout: Layout;
  readonly mask: FlatBuffer<A> | null;
  /** Completed steps; the next step uses t + 1 in the bias corrections. */
  t = 0;
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly clipNorm: number | null;
  private readonly gradNorm: ((g: FloatArray) => Promise<number>) | null;
  private readonly program: FlatProgram;
  /** The update graph multiplies the gradients by a fed scale (clipping, loss scaling). */
  private readonly scaled: boolean;
  /** ZeRO: the ranges this optimizer updates (null: all of `params`). */
  readonly shard: ShardSpec | null;

  constructor(readonly params: FlatBuffer<A>, cfg: AdamWConfig) {
    this.lr = cfg.lr;
    this.beta1 = cfg.beta1 ?? 0.9;
    this.beta2 = cfg.beta2 ?? 0.999;
    this.eps = cfg.eps ?? 1e-8;
    this.weightDecay = cfg.weightDecay ?? 0.01;
    this.clipNorm = cfg.clipNorm ?? null;
    this.gradNorm = cfg.gradNorm ?? null;
    checkConfig(cfg, this);
    const { data } = params;
    this.shard = cfg.shard ?? null;
    if (this.shard && cfg.noDecay) throw new Error('AdamW: noDecay with a ZeRO shard is not supported (the mask would be the full vector\'s)');
    const layout = this.stateLayout = this.shard?.layout ?? params.layout;
    if (cfg.offload && !(data instanceof Float32Array)) throw new Error('AdamW: offload keeps float32 moments; the parameters are float64');
    checkOffloadedParams('AdamW', params, cfg.offload, this.shard);
    this.offloaded = cfg.offload ? new OffloadedState('AdamW', cfg.offload, 'adamw', ['m', 'v'], layout.size) : null;
    this.moments = cfg.offload ? null : {
      m: new Flat(layout, zerosLike(data, layout.size), 'adamw.m'),
      v: new Flat(layout, zerosLike(data, layout.size), 'adamw.v'),
    };
    this.mask = cfg.noDecay ? decayMask(layout, data, cfg.noDecay, 'adamw.mask') : null;
    this.scaled = this.clipNorm !== null || cfg.lossScaled === true;
    this.program = new FlatProgram('adamw', (n) => adamwGraph(dtypeOf(data), n, this.scaled, this.mask !== null));
  }

  /** Times the update graph was traced and compiled by this optimizer (1 after any number of steps). */
  get compiles(): number { return this.program.compiles; }

  /**
   * One AdamW step from `grads` (same layout and dtype as the parameters); `lr` overrides cfg.lr;
   * `scaling.lossScale` is divided out of the gradients (needs `lossScaled`).
   */
  async step(grads: FlatBuffer<A>, lr = this.lr, scaling: StepScaling = {}): Promise<StepInfo> {
    if ((scaling.lossScale ?? 1) !== 1 && !this.scaled) throw new Error('AdamW.step: a lossScale needs the optimizer built with lossScaled: true');
    const { s, norm, gradMult } = await beginStep('AdamW', this.params, grads, lr, this.gradNorm, this.clipNorm, scaling, this.shard);
    const t = this.t + 1;
    const scalars = [
      s(1 - lr * this.weightDecay),
      s(this.beta1), s(1 - this.beta1), s(this.beta2), s(1 - this.beta2),
      s(lr / (1 - this.beta1 ** t)), s(Math.sqrt(1 - this.beta2 ** t)), s(this.eps),
    ];
    if (this.scaled) scalars.push(s(gradMult));
    const mask = this.mask ? [this.mask.data] : [];
    if (this.offloaded) {
      await this.offloaded.run(this.program, updatePieces('AdamW', this.params.data, grads, this.params.layout, mask, this.shard), scalars);
    } else {
      const state = [this.moments!.m.data, this.moments!.v.data, ...mask];
      for (const x of updatePieces('AdamW', this.params.data, grads, this.params.layout, state, this.shard)) {
        const [m, v, k] = x.state as [FloatArray, FloatArray, FloatArray | undefined];
        await this.program.run([x.p, x.g, m, v, ...(k ? [k] : [])], scalars, [x.p, m, v]);
      }
    }
    this.t = t;
    return { gradNorm: norm };
  }

  /**
   * The moments whole, over the parameters' layout (the shard's under ZeRO): in memory the
   * optimizer's own buffers (read them; loadState writes), offloaded fresh buffers read from the
   * files after every write issued before.
   */
  async stateVectors(): Promise<{ m: FlatBuffer<A>; v: FlatBuffer<A> }> {
    if (this.moments) return this.moments;
    const [m, v] = await this.offloaded!.read();
    return { m: new Flat(this.stateLayout, m as A), v: new Flat(this.stateLayout, v as A) };
  }

  /** A snapshot (copies) of the step count and moments, for checkpoints. */
  async state(): Promise<AdamWState<A>> {
    const t = this.t;
    const { m, v } = await this.stateVectors();
    return { t, m: m.data.slice() as A, v: v.data.slice() as A };
  }

  /**
   * Restores a snapshot from state(); float32 and float64 snapshots load into either dtype.
   * Offloaded, the moments are written behind: later steps and reads wait for the writes.
   */
  loadState(s: { t: number; m: ArrayLike<number>; v: ArrayLike<number> }): void {
    if (!Number.isInteger(s.t) || s.t < 0) throw new Error(`AdamW.loadState: t must be a non-negative integer, got ${s.t}`);
    if (this.offloaded) this.offloaded.load('AdamW', [{ name: 'm', data: s.m }, { name: 'v', data: s.v }]);
    else {
      restore('AdamW', 'm', this.moments!.m.data, s.m);
      restore('AdamW', 'v', this.moments!.v.data, s.v);
    }
    this.t = s.t;
  }

  /** Waits until every write of the offloaded moments has landed (nothing to wait for in memory). */
  async flush(): Promise<void> { await this.offloaded?.flush(); }

  /** Flushes and closes the offloaded moments' files (they stay on disk); the optimizer is done. */
  async close(): Promise<void> { await this.offloaded?.close(); }
}

function checkConfig(cfg: AdamWConfig, o: AdamW<FloatArray>): void {
  const bad = (k: string, v: unknown, want: string): never => { throw new Error(`AdamW: ${k} must be ${want}, got ${String(v)}`); };
  if (!(o.lr >= 0)) bad('lr', cfg.lr, 'a non-negative number');
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad('beta1', o.beta1, 'in [0, 1)');
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad('beta2', o.beta2, 'in [0, 1)');
  if (!(o.eps >= 0)) bad('eps', o.eps, 'a non-negative number');
  if (!(o.weightDecay >= 0)) bad('weightDecay', o.weightDecay, 'a non-negative number');
  if (o.clipNorm !== null && !(o.clipNorm > 0)) bad('clipNorm', o.clipNorm, 'a positive number');
}

/**
 * The AdamW update over flat vectors of length n (one chunk). Inputs, in feed order: p, g, m, v,
 * [mask], decay = 1 - lr wd, beta1, 1 - beta1, beta2, 1 - beta2, stepSize = lr / (1 - beta1^t),
 * bc2Sqrt = sqrt(1 - beta2^t), eps, [gradScale = the clip scale / the loss scale]. Outputs: new p, m, v.
 */
function adamwGraph(dtype: 'float32' | 'float64', n: number, scaled: boolean, masked: boolean): { inputs: Value[]; outputs: Value[] } {
  const vec = (name: string): Value => input(dtype, n, name);
  const sc = (name: string): Value => input(dtype, null, name);
  const [p, g, m, v] = [vec('p'), vec('g'), vec('m'), vec('v')];
  const mask = masked ? vec('mask') : null;
  const [decay, beta1, omb1, beta2, omb2, stepSize, bc2Sqrt, eps] =
    ['decay', 'beta1', 'one_minus_beta1', 'beta2', 'one_minus_beta2', 'step_size', 'bc2_sqrt', 'eps'].map(sc) as [Value, Value, Value, Value, Value, Value, Value, Value];
  const gradScale = scaled ? sc('grad_scale') : null;

  const grads = gradScale ? b.mul(g, gradScale) : g;
  // With a 0/1 mask, 1 + mask (decay - 1) is exactly decay or exactly 1 (decay - 1 is exact).
  const factor = mask === null ? decay : b.add(b.scalarLike(1, p), b.mul(mask, b.sub(decay, b.scalarLike(1, p))));
  const pDecayed = b.mul(p, factor);
  const m2 = b.add(b.mul(m, beta1), b.mul(grads, omb1));
  const v2 = b.add(b.mul(v, beta2), b.mul(b.mul(grads, grads), omb2));
  const denom = b.add(b.div(b.sqrt(v2), bc2Sqrt), eps);
  const p2 = b.sub(pDecayed, b.mul(stepSize, b.div(m2, denom)));

  const inputs = [p, g, m, v, ...(mask ? [mask] : []), decay, beta1, omb1, beta2, omb2, stepSize, bc2Sqrt, eps, ...(gradScale ? [gradScale] : [])];
  return { inputs, outputs: [p2, m2, v2] };
}
