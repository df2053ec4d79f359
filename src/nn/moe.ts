/**
 * Mixture of experts (Shazeer et al. 2017; GShard; Switch Transformer): a layer that replaces a
 * block's MLP with E expert MLPs and a router sending each token to its top k.
 *
 * On S tokens x [S, d]:
 * - router logits x Wr [S, E] (with `noisy`, in training, plus a standard normal times
 *   softplus(x Wn): Shazeer's noisy gating), probabilities softmax(logits);
 * - top-k by repeated first-argmax (masks, no gradient); gates: the chosen probabilities (k > 1:
 *   divided by their sum, GShard), through which the gradient reaches the router;
 * - capacity C = ceil(capacityFactor k S / E) slots per expert (`dropTokens` false: S, nothing is
 *   dropped, DeepSpeed's drop_tokens); first choices take the slots in token order, then second choices after the first
 *   choices kept (GShard); a token past its expert's capacity is dropped there: that expert adds
 *   nothing for it, and the block's residual carries it through;
 * - dispatch by index: each slot's token gathered into the expert inputs [E, C, d] (a slot's token
 *   found by one ScatterElements of the tokens' slots; an empty slot reads a zero row), the E
 *   expert MLPs as one batched MatMul each way [E, C, d] x [E, d, h], and each token's output its
 *   slots' rows gathered back and weighted by its gates: O(S k d) moved, not GShard's one-hot
 *   einsums' O(S E C d);
 * - with expert parallelism (`expertParallel`) the experts are split over the `ep` axis: the
 *   expert inputs go to their experts' ranks by an all-to-all and come back by another (each the
 *   other's gradient), each rank computing its E / ep experts on every rank's tokens.
 *
 * Losses (added to the model's by its `loss`): the load balance E sum_i f_i P_i (f_i the
 * fraction of the S k assignments, every choice counted, routed to expert i before the capacity;
 * P_i the tokens' mean probability of it; 1 when uniform) weighted by `auxLoss`: Switch's loss for
 * top-1, and for top-k counting every choice as Mixtral's does, so the loss sees the imbalance of
 * the second choices too, and the router z-loss mean(logsumexp(logits)^2) weighted by `zLoss`.
 * Statistics (a buffer written by each training step): tokens routed to each expert and those
 * kept, the fraction of assignments dropped, the aux and z losses (unweighted).
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import { allToAll } from '../ir/ops/collective.js';
import { Tensor } from '../tensor/tensor.js';
import { Linear } from './layers.js';
import { init, Module } from './module.js';
import type { ModuleBuffer, Parameter } from './module.js';

export interface MoEConfig {
  /** Experts per MoE layer. */
  experts: number;
  /** Experts each token goes to: 1 (Switch), 2 (GShard). Default 2. */
  topK?: number;
  /** The MLP of every `every`-th block becomes an MoE layer (blocks every - 1, 2 every - 1, ...). Default 2. */
  every?: number;
  /** Slots per expert = ceil(capacityFactor x topK x tokens / experts). Default 1.25. */
  capacityFactor?: number;
  /** Tokens past an expert's capacity are dropped (true, default) or never (false: capacity = tokens, DeepSpeed's drop_tokens). */
  dropTokens?: boolean;
  /** Noisy top-k gating (Shazeer et al.): learned Gaussian noise on the router logits in training. Default false. */
  noisy?: boolean;
  /** Weight of the load-balancing loss. Default 0.01 (Switch). */
  auxLoss?: number;
  /** Weight of the router z-loss. Default 0.001 (ST-MoE). */
  zLoss?: number;
}

/** The config with its defaults, checked; each error names the field. */
export function moeDefaults(c: MoEConfig, where = 'model.moe'): Required<MoEConfig> {
  const o = { topK: 2, every: 2, capacityFactor: 1.25, dropTokens: true, noisy: false, auxLoss: 0.01, zLoss: 0.001, ...c };
  if (!Number.isInteger(o.experts) || o.experts < 1) throw new Error(`${where}.experts must be a positive integer, got ${String(o.experts)}`);
  if (!Number.isInteger(o.topK) || o.topK < 1) throw new Error(`${where}.topK must be a positive integer, got ${String(o.topK)}`);
  if (o.topK > o.experts) throw new Error(`${where}.topK (${o.topK}) must be at most ${where}.experts (${o.experts})`);
  if (!Number.isInteger(o.every) || o.every < 1) throw new Error(`${where}.every must be a positive integer, got ${String(o.every)}`);
  if (!(Number.isFinite(o.capacityFactor) && o.capacityFactor > 0)) throw new Error(`${where}.capacityFactor must be > 0, got ${String(o.capacityFactor)}`);
  for (const k of ['auxLoss', 'zLoss'] as const) if (!(Number.isFinite(o[k]) && o[k] >= 0)) throw new Error(`${where}.${k} must be a number >= 0, got ${String(o[k])}`);
  return o;
}

/** The expert axis a layer's experts are split over (null: every expert on this rank). */
export interface EpAxis { readonly axis: string; readonly size: number; readonly index: number }

/** Slots per expert for `tokens` tokens. */
export function capacity(c: Required<MoEConfig>, tokens: number): number {
  return c.dropTokens ? Math.min(tokens, Math.ceil((c.capacityFactor * c.topK * tokens) / c.experts)) : tokens;
}

const T = (v: Value): Tensor => new Tensor(v);

/** A constant of dtype `f` and `shape`, element i = `at(i)`. */
const floats = (f: 'float32' | 'float64', shape: readonly number[], at: (i: number) => number): Value => {
  const n = shape.reduce((a, e) => a * e, 1);
  return b.constant(f === 'float32' ? Float32Array.from({ length: n }, (_, i) => at(i)) : Float64Array.from({ length: n }, (_, i) => at(i)), f, shape);
};

export class MoE extends Module {
  readonly router: Linear;
  readonly noise: Linear | null;
  /** Expert MLPs, stacked on dim 0: fc1 [E, d, 4d] + [E, 1, 4d], fc2 [E, 4d, d] + [E, 1, d]. */
  readonly w1: Parameter;
  readonly b1: Parameter;
  readonly w2: Parameter;
  readonly b2: Parameter;
  /** The last training step's statistics: tokens routed to each expert [E], those kept [E], then the dropped fraction, aux loss, z-loss. */
  readonly stats: ModuleBuffer;
  readonly c: Required<MoEConfig>;
  /** Set by `expertParallel`. */
  ep: EpAxis | null = null;
  /** The weighted aux + z loss of the last traced forward (the model adds it to its loss), null before one. */
  auxTerm: Tensor | null = null;

  constructor(readonly d: number, config: MoEConfig, std: number, projStd: number) {
    super();
    this.c = moeDefaults(config);
    const E = this.c.experts;
    this.router = this.child('router', new Linear(d, E, { bias: false, init: init.normal(std) }));
    this.noise = this.c.noisy ? this.child('noise', new Linear(d, E, { bias: false, init: init.zeros() })) : null;
    this.w1 = this.param('w1', [E, d, 4 * d], init.normal(std));
    this.b1 = this.param('b1', [E, 1, 4 * d], init.zeros());
    this.w2 = this.param('w2', [E, 4 * d, d], init.normal(projStd));
    this.b2 = this.param('b2', [E, 1, d], init.zeros());
    this.stats = this.buffer('stats', [2 * E + 3], init.zeros());
  }

  /** x [S, d] -> [S, d] (dropped tokens give 0 for the expert that dropped them). */
  forward(x: Tensor): Tensor {
    const { experts: E, topK: k } = this.c;
    const S = x.shape[0] as number;
    const C = capacity(this.c, S);
    const f = x.dtype as 'float32' | 'float64';
    const one = (v: number): Value => b.scalar(v, f);
    const fl = (v: Value): Value => b.cast(v, f);
    let logits = this.router.forward(x).value;
    if (this.noise && this.training) {
      // softplus(z) = log(1 + exp(z)), z itself past 20 (exp's argument clamped there, so neither
      // branch of the Where overflows and its gradient is 1 / (1 + exp(-z)) everywhere: 1/2 at 0,
      // where the noise weights start).
      const z = this.noise.forward(x).value;
      const big = b.greater(z, one(20));
      const soft = b.where(big, z, b.log(b.add(one(1), b.exp(b.where(big, one(20), z)))));
      logits = b.add(logits, b.mul(b.apply1('RandomNormalLike', [logits], {}), soft));
    }
    const probs = b.softmax(logits, 1);

    // Top-k: the first maximum of what is left, k times (masks carry no gradient).
    const masks: Value[] = [];
    let left = probs;
    for (let j = 0; j < k; j++) {
      const eq = fl(b.equal(left, b.reduceMax(left, [1], true)));
      const first = b.mul(eq, fl(b.equal(b.cumSum(eq, 1), one(1))));
      masks.push(first);
      left = b.sub(left, b.mul(first, one(2)));
    }
    let gates = masks.map((m) => b.reduceSum(b.mul(probs, m), [1], true)); // [S, 1] each
    if (k > 1) {
      const denom = b.add(b.sum(gates), one(1e-9));
      gates = gates.map((g) => b.div(g, denom));
    }

    // Slots: first choices in token order, then later choices after the kept ones. Each (token,
    // choice) gets slot e C + its position in expert e, or none when past the capacity.
    const EC = E * C;
    const arangeE = floats(f, [1, E], (i) => i);
    const tokenIds = b.constant(BigInt64Array.from({ length: S }, (_, i) => BigInt(i)), 'int64', [S]);
    let taken: Value | null = null;
    let kept: Value | null = null;
    const slotOf: Value[] = [];   // [S] int64: the slot, or EC (a zero row) when dropped
    const scatterAt: Value[] = []; // [S] int64: the slot, or a spare index of its own when dropped
    for (let j = 0; j < k; j++) {
      const m = masks[j]!;
      let pos = b.cumSum(m, 0, { exclusive: true });
      if (taken) pos = b.add(pos, taken);
      const keep = b.mul(m, fl(b.apply1('Less', [pos, b.scalar(C, f)])));
      taken = taken ? b.add(taken, b.reduceSum(keep, [0], true)) : b.reduceSum(keep, [0], true);
      kept = kept ? b.add(kept, keep) : keep;
      const isKept = b.reduceSum(keep, [1], false); // [S]: 1 kept, 0 dropped
      const slot = b.reduceSum(b.mul(keep, b.add(b.mul(arangeE, one(C)), pos)), [1], false); // e C + pos where kept, else 0
      const spare = floats(f, [S], (i) => EC + j * S + i);
      const dropped = b.sub(one(1), isKept);
      slotOf.push(b.cast(b.add(slot, b.mul(dropped, one(EC))), 'int64'));
      scatterAt.push(b.cast(b.add(slot, b.mul(dropped, spare)), 'int64'));
    }

    // Dispatch: each slot's token (S, a zero row, for an empty slot), gathered: [E, C, d].
    const empty = b.constant(BigInt64Array.from({ length: EC + k * S }, () => BigInt(S)), 'int64', [EC + k * S]);
    const slotToken = b.apply1('ScatterElements', [empty, b.concat(scatterAt, 0), b.concat(new Array<Value>(k).fill(tokenIds), 0)], { axis: 0 });
    const zeroRow = floats(f, [1, this.d], () => 0);
    const xpad = b.concat([x.value, zeroRow], 0);
    let xe = b.reshape(b.gather(xpad, b.slice(slotToken, [0], [EC], [0])), [E, C, this.d]);
    if (this.ep) xe = allToAll(xe, this.ep.axis, this.ep.size, 0, 1); // [E / ep, ep C, d]
    const h = b.gelu(b.add(b.matmul(xe, this.w1.t.value), this.b1.t.value));
    let ye = b.add(b.matmul(h, this.w2.t.value), this.b2.t.value);
    if (this.ep) ye = allToAll(ye, this.ep.axis, this.ep.size, 1, 0); // [E, C, d]
    // Combine: each token's slots' outputs weighted by its gates (a dropped choice reads the zero row).
    const yepad = b.concat([b.reshape(ye, [EC, this.d]), zeroRow], 0);
    const y = b.sum(slotOf.map((sl, j) => b.mul(b.gather(yepad, sl), gates[j]!)));

    // Losses: the balance (every choice, before the capacity) and the z-loss.
    const routed = b.reduceSum(b.sum(masks), [0], false); // [E]: assignments before the capacity
    const frac = b.div(routed, one(S * k));
    const meanP = b.reduceMean(probs, [0], false);
    const aux = b.mul(b.reduceSum(b.mul(frac, meanP), [0], false), one(E));
    const mx = b.reduceMax(logits, [1], true);
    const lse = b.add(b.log(b.reduceSum(b.exp(b.sub(logits, mx)), [1], true)), mx);
    const zl = b.reduceMean(b.mul(lse, lse), [0, 1], false);
    this.auxTerm = T(b.add(b.mul(aux, one(this.c.auxLoss)), b.mul(zl, one(this.c.zLoss))));
    if (this.training) {
      const perExpert = b.reduceSum(kept!, [0], false); // [E]: those kept
      const dropped = b.sub(one(1), b.div(b.reduceSum(perExpert, [0], true), one(S * k))); // [1]
      const st = b.apply1('Concat', [routed, perExpert, dropped, b.reshape(aux, [1]), b.reshape(zl, [1])], { axis: 0 });
      this.stats.update(T(st));
    }
    return T(y);
  }
}

/** Splits every MoE layer's experts over `ep` (a plan beside the model, applied before binding). */
export function expertParallel(model: Module, ep: EpAxis): void {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof MoE)) continue;
    if (m.c.experts % ep.size !== 0) throw new Error(`expert parallel: ${ep.axis} = ${ep.size} must divide model.moe.experts (${m.c.experts})`);
    for (const p of [m.w1, m.b1, m.w2, m.b2]) p.placement = { ...ep, dim: 0 };
    m.ep = ep;
  }
}

/** The weighted aux + z losses of every MoE layer's last traced forward (null: none). */
export function moeAuxLoss(model: Module): Tensor | null {
  let total: Tensor | null = null;
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof MoE) || m.auxTerm === null) continue;
    total = total ? total.add(m.auxTerm) : m.auxTerm;
    m.auxTerm = null;
  }
  return total;
}
