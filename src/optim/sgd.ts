/**
 * SGD with momentum, step for step as torch.optim.SGD (maximize off). At step t = 1, 2, ...:
 *
 *   g <- g * min(1, clipNorm / (||g||_2 + 1e-6))      only when clipNorm is set
 *   d <- g + wd p                                       coupled (L2) decay; 0 where noDecay(name)
 *   buf <- d                                            at t = 1 (torch clones d into the buffer)
 *   buf <- mu buf + (1 - dampening) d                   at t > 1
 *   d <- d + mu buf  (nesterov)   or   d <- buf         when mu > 0
 *   p <- p - lr d
 *
 * Like AdamW, the update is one graph over the flat vectors, compiled once, with lr, wd, mu and the
 * step's damping factor (1 at t = 1, 1 - dampening after: buf starts at zero, so mu 0 + 1 d = d
 * exactly) fed as scalar inputs. Momentum on or off, decay on or off, nesterov, a mask and
 * clipping are structural: they decide which nodes the graph has.
 *
 * With `offload` the momentum buffer lives in a file (offload.ts), as AdamW's moments do.
 *
 * @example
 *   const opt = new SGD(params, { lr: 0.1, momentum: 0.9, nesterov: true });
 *   await opt.step(grads);
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { FlatBuffer as Flat } from '../runtime/flat.js';
import { beginStep } from './clip.js';
import type { StepScaling } from './clip.js';
import type { StepInfo } from './adamw.js';
import { decayMask, dtypeOf, FlatProgram, input, restore, zerosLike } from './common.js';
import { updatePieces } from './common.js';
import type { ShardSpec } from './common.js';
import { checkOffloadedParams, OffloadedState } from './offload.js';
import type { OffloadConfig } from './offload.js';
import type { Layout } from '../runtime/flat.js';

export interface SGDConfig {
  /** Learning rate; `step(grads, lr)` overrides it for one step (schedules). */
  lr: number;
  /** Momentum factor mu. Default 0 (plain SGD, no buffer). */
  momentum?: number;
  /** Dampening of the gradient added to the momentum buffer. Default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient: d = g + wd p. Default 0. */
  weightDecay?: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0, as torch requires). Default false. */
  nesterov?: boolean;
  /** Clip the global gradient L2 norm to this before the update. Off if absent. */
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
  /** ZeRO: update only these ranges, the momentum over the shard's layout (see AdamWConfig.shard). */
  shard?: ShardSpec;
  /** Keep the momentum buffer on disk, `<dir>/sgd.momentum.f32` (float32 only; see AdamWConfig.offload). */
  offload?: OffloadConfig;
}

/** Everything needed to resume SGD: the step count and the momentum buffer (a copy; null without momentum). */
export interface SGDState<A extends FloatArray = FloatArray> {
  t: number;
  momentum: A | null;
}

export class SGD<A extends FloatArray = FloatArray> {
  /** The momentum buffer in memory, when momentum > 0 and not offloaded. */
  private readonly buf: FlatBuffer<A> | null;
  /** The momentum buffer on disk (`offload`, momentum > 0); null otherwise. */
  readonly offloaded: OffloadedState | null;
  /** The buffer's layout: the parameters', or the shard's. */
  private readonly stateLayout: Layout;
  readonly mask: FlatBuffer<A> | null;
  t = 0;
  lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  readonly clipNorm: number | null;
  /** The update graph multiplies the gradients by a fed scale (clipping, loss scaling). */
  private readonly scaled: boolean;
  /** ZeRO: the ranges this optimizer updates (null: all of `params`). */
  readonly shard: ShardSpec | null;
  private readonly gradNorm: ((g: FloatArray) => Promise<number>) | null;
  private readonly program: FlatProgram;

  constructor(readonly params: FlatBuffer<A>, cfg: SGDConfig) {
    this.lr = cfg.lr;
    this.momentum = cfg.momentum ?? 0;
    this.dampening = cfg.dampening ?? 0;
    this.weightDecay = cfg.weightDecay ?? 0;
    this.nesterov = cfg.nesterov ?? false;
    this.clipNorm = cfg.clipNorm ?? null;
    this.gradNorm = cfg.gradNorm ?? null;
    const bad = (k: string, v: unknown, want: string): never => { throw new Error(`SGD: ${k} must be ${want}, got ${String(v)}`); };
    if (!(this.lr >= 0)) bad('lr', cfg.lr, 'a non-negative number');
    if (!(this.momentum >= 0)) bad('momentum', this.momentum, 'a non-negative number');
    if (!(this.weightDecay >= 0)) bad('weightDecay', this.weightDecay, 'a non-negative number');
    if (this.clipNorm !== null && !(this.clipNorm > 0)) bad('clipNorm', this.clipNorm, 'a positive number');
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new Error(`SGD: nesterov needs momentum > 0 and dampening 0, got momentum ${this.momentum}, dampening ${this.dampening}`);
    }
    const { data } = params;
    this.shard = cfg.shard ?? null;
    if (this.shard && cfg.noDecay) throw new Error('SGD: noDecay with a ZeRO shard is not supported (the mask would be the full vector\'s)');
    const layout = this.stateLayout = this.shard?.layout ?? params.layout;
    if (cfg.offload && !(data instanceof Float32Array)) throw new Error('SGD: offload keeps a float32 momentum buffer; the parameters are float64');
    checkOffloadedParams('SGD', params, cfg.offload, this.shard);
    // Offloaded parameters are streamed by the update even without a momentum buffer.
    const disk = cfg.offload && (this.momentum > 0 || cfg.offload.params) ? cfg.offload : null;
    this.offloaded = disk ? new OffloadedState('SGD', disk, 'sgd', this.momentum > 0 ? ['momentum'] : [], layout.size) : null;
    this.buf = this.momentum > 0 && !disk ? new Flat(layout, zerosLike(data, layout.size), 'sgd.momentum') : null;
    this.mask = cfg.noDecay ? decayMask(layout, data, cfg.noDecay, 'sgd.mask') : null;
    this.scaled = this.clipNorm !== null || cfg.lossScaled === true;
    const shape: SGDShape = {
      dtype: dtypeOf(data), n: layout.size, momentum: this.momentum > 0, nesterov: this.nesterov,
      decay: this.weightDecay !== 0 || this.mask !== null, masked: this.mask !== null, clip: this.scaled,
    };
    this.program = new FlatProgram('sgd', (n) => sgdGraph({ ...shape, n }));
  }

  /** Times the update graph was traced and compiled by this optimizer. */
  get compiles(): number { return this.program.compiles; }

  /** One SGD step from `grads` (same layout and dtype as the parameters); `lr` overrides cfg.lr. */
  async step(grads: FlatBuffer<A>, lr = this.lr, scaling: StepScaling = {}): Promise<StepInfo> {
    if ((scaling.lossScale ?? 1) !== 1 && !this.scaled) throw new Error('SGD.step: a lossScale needs the optimizer built with lossScaled: true');
    const { s, norm, gradMult } = await beginStep('SGD', this.params, grads, lr, this.gradNorm, this.clipNorm, scaling, this.shard);
    const t = this.t + 1;
    const scalars = [s(lr)];
    if (this.weightDecay !== 0 || this.mask) scalars.push(s(this.weightDecay));
    if (this.momentum > 0) scalars.push(s(this.momentum), s(t === 1 ? 1 : 1 - this.dampening));
    if (this.scaled) scalars.push(s(gradMult));
    const mask = this.mask ? [this.mask.data] : [];
    if (this.offloaded) {
      await this.offloaded.run(this.program, updatePieces('SGD', this.params.data, grads, this.params.layout, mask, this.shard), scalars);
    } else {
      for (const x of updatePieces('SGD', this.params.data, grads, this.params.layout, [...(this.buf ? [this.buf.data] : []), ...mask], this.shard)) {
        const buf = this.buf ? x.state[0]! : null;
        const k = this.mask ? x.state[this.buf ? 1 : 0]! : null;
        await this.program.run([x.p, x.g, ...(buf ? [buf] : []), ...(k ? [k] : [])], scalars, buf ? [x.p, buf] : [x.p]);
      }
    }
    this.t = t;
    return { gradNorm: norm };
  }

  /**
   * The momentum buffer whole (none without momentum), over the parameters' layout (the shard's
   * under ZeRO): in memory the optimizer's own buffer (read it; loadState writes), offloaded a
   * fresh buffer read from the file after every write issued before.
   */
  async stateVectors(): Promise<{ momentum?: FlatBuffer<A> }> {
    if (this.buf) return { momentum: this.buf };
    if (!this.offloaded || this.momentum === 0) return {};
    const [momentum] = await this.offloaded.read();
    return { momentum: new Flat(this.stateLayout, momentum as A) };
  }

  /** A snapshot (copy) of the step count and momentum buffer, for checkpoints. */
  async state(): Promise<SGDState<A>> {
    const t = this.t;
    const { momentum } = await this.stateVectors();
    return { t, momentum: momentum ? (momentum.data.slice() as A) : null };
  }

  /** Restores a snapshot from state(); offloaded, the buffer is written behind (later reads wait). */
  loadState(s: { t: number; momentum: ArrayLike<number> | null }): void {
    if (!Number.isInteger(s.t) || s.t < 0) throw new Error(`SGD.loadState: t must be a non-negative integer, got ${s.t}`);
    const has = this.momentum > 0;
    if ((s.momentum === null) === has) {
      throw new Error(`SGD.loadState: the snapshot ${s.momentum ? 'has' : 'has no'} momentum buffer, this optimizer ${has ? 'has' : 'has none'}`);
    }
    if (s.momentum && this.offloaded) this.offloaded.load('SGD', [{ name: 'momentum', data: s.momentum }]);
    else if (s.momentum) restore('SGD', 'momentum', this.buf!.data, s.momentum);
    this.t = s.t;
  }

  /** Waits until every write of the offloaded buffer has landed (nothing to wait for in memory). */
  async flush(): Promise<void> { await this.offloaded?.flush(); }

  /** Flushes and closes the offloaded buffer's file (it stays on disk); the optimizer is done. */
  async close(): Promise<void> { await this.offloaded?.close(); }
}

interface SGDShape { dtype: 'float32' | 'float64'; n: number; momentum: boolean; nesterov: boolean; decay: boolean; masked: boolean; clip: boolean }

/**
 * The SGD update over flat vectors of length n (one chunk). Inputs, in feed order: p, g, [buf],
 * [mask], lr, [wd], [mu, damp], [gradScale = the clip scale]. Outputs: new p, [new buf].
 */
function sgdGraph(o: SGDShape): { inputs: Value[]; outputs: Value[] } {
  const vec = (name: string): Value => input(o.dtype, o.n, name);
  const sc = (name: string): Value => input(o.dtype, null, name);
  const p = vec('p');
  const g = vec('g');
  const buf = o.momentum ? vec('buf') : null;
  const mask = o.masked ? vec('mask') : null;
  const lr = sc('lr');
  const wd = o.decay ? sc('weight_decay') : null;
  const mu = o.momentum ? sc('momentum') : null;
  const damp = o.momentum ? sc('damp') : null;
  const gradScale = o.clip ? sc('grad_scale') : null;

  let d = gradScale ? b.mul(g, gradScale) : g;
  if (wd) d = b.add(d, b.mul(mask ? b.mul(p, mask) : p, wd));
  let buf2: Value | null = null;
  if (buf && mu && damp) {
    buf2 = b.add(b.mul(buf, mu), b.mul(d, damp));
    d = o.nesterov ? b.add(d, b.mul(buf2, mu)) : buf2;
  }
  const p2 = b.sub(p, b.mul(d, lr));

  const inputs = [p, g, buf, mask, lr, wd, mu, damp, gradScale].filter((v): v is Value => v !== null);
  return { inputs, outputs: buf2 ? [p2, buf2] : [p2] };
}
