/**
 * DeepFM (Guo et al., IJCAI 2017) on hashed categorical features, shaped for a parameter server:
 * the embedding table lives on the servers, and the model holds only the rows one batch touches.
 *
 * Each of F fields has an id; its row of the table is [w, e_1..e_k] (a first-order weight and a
 * k-dim embedding). With x_f the rows of an example's ids:
 *   logit = b + sum_f w_f + FM + MLP(concat_f e_f),   FM = 1/2 sum_k ((sum_f e_fk)^2 - sum_f e_fk^2)
 * (the factorization machine's pairwise term sum_{f<g} <e_f, e_g>, in O(F k)).
 *
 * `rows` is a parameter of `capacity` rows (at least batch x F): the worker writes the rows it
 * pulled into its first U slots and feeds each id's slot (`local`); the gradient of `rows` is the
 * gradient of those rows, pushed back. It is registered last, so the dense parameters (bias, MLP)
 * are one prefix of the flat buffer.
 */
import { Tensor } from '../tensor/tensor.js';
import { Embedding, Linear } from './layers.js';
import { init, Module } from './module.js';
import type { Parameter } from './module.js';

export interface DeepFMConfig {
  /** Categorical fields per example. */
  fields: number;
  /** Embedding width k (a table row is 1 + k). */
  dim: number;
  /** Hidden widths of the deep part (ReLU between). */
  hidden: readonly number[];
  /** Row slots of the local rows (ids a batch touches, at most batch x fields). */
  capacity: number;
}

export class DeepFM extends Module {
  readonly bias: Parameter;
  readonly mlp: Linear[] = [];
  readonly rows: Embedding;

  constructor(readonly cfg: DeepFMConfig) {
    super();
    for (const [k, v] of Object.entries({ fields: cfg.fields, dim: cfg.dim, capacity: cfg.capacity })) {
      if (!(Number.isInteger(v) && v >= 1)) throw new Error(`DeepFM: ${k} must be a positive integer, got ${v}`);
    }
    this.bias = this.param('bias', [1], init.zeros());
    let width = cfg.fields * cfg.dim;
    [...cfg.hidden, 1].forEach((h, i) => {
      if (!(Number.isInteger(h) && h >= 1)) throw new Error(`DeepFM: hidden[${i}] must be a positive integer, got ${h}`);
      this.mlp.push(this.child(`mlp${i}`, new Linear(width, h)));
      width = h;
    });
    // Overwritten with pulled rows before every step; zeros until then.
    this.rows = this.child('rows', new Embedding(cfg.capacity, 1 + cfg.dim, init.zeros()));
  }

  /** Logits [B] of a batch whose ids' slots in `rows` are `local` [B, F] (int32). */
  forward(local: Tensor): Tensor {
    const { fields: F, dim: k } = this.cfg;
    const B = local.shape[0] as number;
    const x = this.rows.forward(local); // [B, F, 1 + k]
    const wide = x.slice([0], [1], [2]).reshape([B, F]).sum([1]);
    const e = x.slice([1], [1 + k], [2]); // [B, F, k]
    const s = e.sum([1]);
    const fm = s.mul(s).sub(e.mul(e).sum([1])).sum([1]).mul(0.5);
    let h = e.reshape([B, F * k]);
    this.mlp.forEach((l, i) => { h = l.forward(h); if (i < this.mlp.length - 1) h = h.relu(); });
    return h.reshape([B]).add(wide).add(fm).add(this.bias.t);
  }
}

/** Mean binary cross-entropy of logits against 0/1 labels: max(x, 0) - x y + log(1 + exp(-|x|)). */
export function bceWithLogits(logits: Tensor, labels: Tensor): Tensor {
  const abs = logits.relu().add(logits.neg().relu());
  return logits.relu().sub(logits.mul(labels)).add(abs.neg().exp().add(1).log()).mean();
}
