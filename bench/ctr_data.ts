/**
 * The planted CTR data (data/ctr.ts) measured: generation time, click rate, distinct rows touched,
 * hash collisions, the oracle AUC (the planted logits on the test set), and the test AUC of two
 * plain-JS fits on the hashed ids, one pass of per-example Adagrad each:
 *   - a factorization machine with the planted latent size (the planted model's class; DeepFM
 *     contains it), the evidence that ~10^6 examples can come within 0.01 of the oracle;
 *   - logistic regression (the same with k = 0), showing how much of the AUC the interactions hold.
 *
 *   node dist/bench/ctr_data.js ['{"zipf": 1.2}' ['{"lr": 0.05, "epochs": 2}']]
 * (JSON objects of CtrSpec overrides and of fit options).
 */
import { plantedCtr, hashCollisions, hashFeature } from '../src/data/ctr.js';
import type { CtrSpec, CtrSplit } from '../src/data/ctr.js';
import { auc, logLossFromLogits } from '../src/train/auc.js';
import { Rng } from '../src/tensor/random.js';

interface FitOptions {
  /** Passes over the train split (the test AUC is reported after each). */
  epochs: number;
  /** Adagrad step: lr · g / sqrt(0.1 + Σ g^2), per coordinate. */
  lr: number;
  /** L2 added to each touched row's gradient, per example (so frequent rows are pulled more often). */
  l2: number;
  /** Std of the initial latent entries (0 is a saddle point of the pairwise term). */
  init: number;
}
const FIT: FitOptions = { epochs: 1, lr: 0.05, l2: 0.003, init: 0.02 };

/** A factorization machine over hashed rows: logit = b + Σ_f w[id_f] + Σ_{f<g} <V[id_f], V[id_g]>. */
class Fm {
  readonly w: Float32Array;
  readonly V: Float32Array;
  private readonly gw: Float32Array;
  private readonly gV: Float32Array;
  private b = 0;
  private gb = 0.1;
  private readonly sum: Float64Array;

  constructor(rows: number, readonly k: number, readonly opt: FitOptions) {
    const rng = new Rng(7);
    this.w = new Float32Array(rows);
    this.V = Float32Array.from({ length: rows * k }, () => opt.init * rng.normal());
    this.gw = new Float32Array(rows).fill(0.1);
    this.gV = new Float32Array(rows * k).fill(0.1);
    this.sum = new Float64Array(k);
  }

  /** The logit of the example at ids[o..o+F); leaves Σ_f V[id_f] in this.sum. */
  logit(ids: Int32Array, o: number, F: number): number {
    const { k, V, sum } = this;
    sum.fill(0);
    let x = this.b;
    let sq = 0;
    for (let f = 0; f < F; f++) {
      const r = ids[o + f]!;
      x += this.w[r]!;
      for (let j = 0; j < k; j++) {
        const e = V[r * k + j]!;
        sum[j]! += e;
        sq += e * e;
      }
    }
    let s2 = 0;
    for (let j = 0; j < k; j++) s2 += sum[j]! * sum[j]!;
    return x + (s2 - sq) / 2;
  }

  /** One Adagrad step on one example; ∂logit/∂V[id_f] = Σ_g V[id_g] - V[id_f]. */
  step(ids: Int32Array, o: number, F: number, y: number): void {
    const g = 1 / (1 + Math.exp(-this.logit(ids, o, F))) - y;
    const { k, V, sum } = this;
    const { lr, l2 } = this.opt;
    this.gb += g * g;
    this.b -= (lr * g) / Math.sqrt(this.gb);
    for (let f = 0; f < F; f++) {
      const r = ids[o + f]!;
      const dw = g + l2 * this.w[r]!;
      this.gw[r]! += dw * dw;
      this.w[r]! -= (lr * dw) / Math.sqrt(this.gw[r]!);
      for (let j = 0; j < k; j++) {
        const i = r * k + j;
        const d = g * (sum[j]! - V[i]!) + l2 * V[i]!;
        this.gV[i]! += d * d;
        V[i]! -= (lr * d) / Math.sqrt(this.gV[i]!);
      }
    }
  }

  scores(s: CtrSplit): Float64Array {
    const out = new Float64Array(s.n);
    for (let i = 0; i < s.n; i++) out[i] = this.logit(s.ids, i * s.fields, s.fields);
    return out;
  }
}

function fit(train: CtrSplit, test: CtrSplit, rows: number, k: number, opt: FitOptions): { k: number; test_auc: number[]; test_logloss: number[]; fit_ms: number } {
  const fm = new Fm(rows, k, opt);
  const t0 = performance.now();
  const aucs: number[] = [];
  const losses: number[] = [];
  for (let e = 0; e < opt.epochs; e++) {
    for (let i = 0; i < train.n; i++) fm.step(train.ids, i * train.fields, train.fields, train.labels[i]!);
    const s = fm.scores(test);
    aucs.push(+auc(s, test.labels).toFixed(4));
    losses.push(+logLossFromLogits(s, test.labels).toFixed(4));
  }
  return { k, test_auc: aucs, test_logloss: losses, fit_ms: Math.round(performance.now() - t0) };
}

const overrides = JSON.parse(process.argv[2] ?? '{}') as Partial<CtrSpec>;
const opt: FitOptions = { ...FIT, ...(JSON.parse(process.argv[3] ?? '{}') as Partial<FitOptions>) };

const t0 = performance.now();
const { spec, train, test } = plantedCtr(overrides);
const generateMs = performance.now() - t0;

const touched = new Uint8Array(spec.rows);
for (const r of train.ids) touched[r] = 1;
// The share of train features whose row also holds another (field, value): collisions weighted by use.
const pairsOnRow = new Uint8Array(spec.rows);
spec.fields.forEach((vocab, f) => {
  for (let v = 0; v < vocab; v++) {
    const r = hashFeature(f, v, spec.rows);
    pairsOnRow[r] = Math.min(2, pairsOnRow[r]! + 1);
  }
});
let shared = 0;
for (const r of train.ids) if (pairsOnRow[r] === 2) shared++;
const positiveRate = (s: CtrSplit): number => +(s.labels.reduce((a, y) => a + y, 0) / s.n).toFixed(4);
const t1 = performance.now();
const oracle = auc(test.logits, test.labels);
const aucMs = performance.now() - t1;
const fm = fit(train, test, spec.rows, spec.latent, opt);
const linear = fit(train, test, spec.rows, 0, opt);

process.stdout.write(`${JSON.stringify({
  bench: 'ctr-data',
  spec,
  fit_options: opt,
  generate_ms: Math.round(generateMs),
  auc_ms_per_test_split: Math.round(aucMs),
  train_positive_rate: positiveRate(train),
  test_positive_rate: positiveRate(test),
  rows_touched_by_train: touched.reduce((a, t) => a + t, 0),
  hash: { ...hashCollisions(spec), train_features_on_shared_rows: +(shared / train.ids.length).toFixed(4) },
  oracle_test_auc: +oracle.toFixed(4),
  oracle_test_logloss: +logLossFromLogits(test.logits, test.labels).toFixed(4),
  fm,
  linear,
  fm_gap: +(oracle - Math.max(...fm.test_auc)).toFixed(4),
  linear_gap: +(oracle - Math.max(...linear.test_auc)).toFixed(4),
}, null, 1)}\n`);
