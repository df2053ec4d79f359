/**
 * data/ctr.ts, the planted CTR data: deterministic in the seed, the test split independent of the
 * train size, labels calibrated to the planted logits, Zipf frequencies as the formula says, the
 * standardized planted variance exact, the oracle AUC in range, hashing uniform, errors named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_CTR, checkCtrSpec, hashCollisions, hashFeature, plantedCtr } from '../src/data/ctr.js';
import type { CtrSpec, CtrSplit } from '../src/data/ctr.js';
import { auc } from '../src/train/auc.js';

const SMALL: Partial<CtrSpec> = { train: 2000, test: 1000, seed: 5 };
const sameSplit = (a: CtrSplit, b: CtrSplit): void => {
  assert.deepEqual(a.ids, b.ids);
  assert.deepEqual(a.labels, b.labels);
  assert.deepEqual(a.logits, b.logits);
};
const mean = (xs: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
};
/** P(rank r) of Zipf(vocab, s), straight from the formula (r + 1)^-s / Σ_q (q + 1)^-s. */
const zipfP = (vocab: number, s: number, r: number): number => {
  let h = 0;
  for (let q = 0; q < vocab; q++) h += (q + 1) ** -s;
  return (r + 1) ** -s / h;
};

test('plantedCtr is deterministic in the seed: the same seed gives the same bytes, another seed others', () => {
  const a = plantedCtr(SMALL);
  const b = plantedCtr(SMALL);
  sameSplit(a.train, b.train);
  sameSplit(a.test, b.test);
  const c = plantedCtr({ ...SMALL, seed: 6 });
  assert.notDeepEqual(c.train.ids, a.train.ids);
  assert.notDeepEqual(c.test.logits, a.test.logits);
  assert.equal(a.train.n, 2000);
  assert.equal(a.train.fields, DEFAULT_CTR.fields.length);
  assert.equal(a.train.ids.length, 2000 * 8);
  assert.deepEqual(a.spec, { ...DEFAULT_CTR, ...SMALL });
});

test('the test split does not change with the train size, and the train split is a prefix of a longer one', () => {
  const a = plantedCtr({ ...SMALL, train: 1000 });
  const b = plantedCtr({ ...SMALL, train: 3000 });
  sameSplit(a.test, b.test);
  assert.deepEqual(a.train.ids, b.train.ids.subarray(0, 1000 * 8));
  assert.deepEqual(a.train.logits, b.train.logits.subarray(0, 1000));
});

test('ids lie in [0, rows) for a table size that is not a power of two, and equal hashFeature of some value', () => {
  const rows = 1009;
  const { train } = plantedCtr({ ...SMALL, rows, fields: [3, 50000] });
  let hi = 0;
  for (const r of train.ids) {
    assert.ok(Number.isInteger(r) && r >= 0 && r < rows, `id ${r}`);
    hi = Math.max(hi, r);
  }
  assert.ok(hi > rows - 20, `largest id ${hi} of ${rows}: the upper rows are reached`);
  const field0 = new Set([0, 1, 2].map((v) => hashFeature(0, v, rows)));
  for (let i = 0; i < train.n; i++) assert.ok(field0.has(train.ids[i * 2]!));
  assert.ok(plantedCtr({ ...SMALL, rows: 1 }).train.ids.every((r) => r === 0));
});

test('labels are Bernoulli(σ(logit)): the click rate equals the mean of σ(logits) within 4 standard errors, near the 24% aimed at', () => {
  const { test: t } = plantedCtr({ train: 0, test: 100_000 });
  let sumP = 0;
  let varSum = 0;
  for (const x of t.logits) {
    const p = 1 / (1 + Math.exp(-x));
    sumP += p;
    varSum += p * (1 - p);
  }
  const clicks = t.labels.reduce((a, y) => a + y, 0);
  assert.ok(Math.abs(clicks - sumP) < 4 * Math.sqrt(varSum), `clicks ${clicks}, Σσ ${sumP.toFixed(0)}, sd ${Math.sqrt(varSum).toFixed(0)}`);
  const rate = clicks / t.n;
  assert.ok(rate > 0.2 && rate < 0.3, `click rate ${rate}`);
});

test('value frequencies follow Zipf: every rank of a 10-value field and rank 0 of the 100,000-value field, within 4 standard errors', () => {
  const n = 50_000;
  const { spec, test: t } = plantedCtr({ train: 0, test: n, seed: 2 });
  const F = spec.fields.length;
  const check = (f: number, r: number): void => {
    const row = hashFeature(f, r, spec.rows);
    for (let v = 0; v < spec.fields[f]!; v++) if (v !== r) assert.notEqual(hashFeature(f, v, spec.rows), row, `field ${f}: value ${v} shares rank ${r}'s row`);
    let count = 0;
    for (let i = 0; i < n; i++) if (t.ids[i * F + f] === row) count++;
    const p = zipfP(spec.fields[f]!, spec.zipf, r);
    const se = Math.sqrt((p * (1 - p)) / n);
    assert.ok(Math.abs(count / n - p) < 4 * se, `field ${f} rank ${r}: frequency ${count / n}, Zipf ${p.toFixed(5)} ± ${se.toFixed(5)}`);
  };
  for (let r = 0; r < 10; r++) check(0, r);
  check(6, 0); // P = 1 / H(100000, 1.1) ≈ 0.135
  check(6, 1);
});

test('the planted logits are standardized: mean = bias, and with no interactions Var = weightStd^2 Σ_f Σ_r P(r) (1 + r)^-2·tailDecay', () => {
  const spec: Partial<CtrSpec> = { fields: [10, 200, 5000], latentStd: 0, weightStd: 0.7, bias: -1, train: 0, test: 200_000, seed: 9 };
  const { spec: full, test: t } = plantedCtr(spec);
  let want = 0;
  for (const vocab of full.fields) for (let r = 0; r < vocab; r++) want += full.weightStd ** 2 * zipfP(vocab, full.zipf, r) * (1 + r) ** (-2 * full.tailDecay);
  const m = mean(t.logits);
  let v = 0;
  for (const x of t.logits) v += (x - m) ** 2;
  v /= t.n;
  assert.ok(Math.abs(m - full.bias) < 4 * Math.sqrt(want / t.n), `mean logit ${m}, bias ${full.bias}`);
  assert.ok(Math.abs(v / want - 1) < 0.02, `logit variance ${v}, planted ${want}`);
});

test('the oracle AUC (planted logits on the test set) at the defaults is in [0.7, 0.9]', () => {
  const { test: t } = plantedCtr({ train: 0 });
  const a = auc(t.logits, t.labels);
  assert.ok(a >= 0.7 && a <= 0.9, `oracle AUC ${a}`);
  assert.equal(t.n, DEFAULT_CTR.test);
});

test('hashFeature is uniform: 10^5 values over 1000 rows stay within 5 sd of the mean; collisions at the defaults match the birthday count', () => {
  const count = new Array<number>(1000).fill(0);
  for (let v = 0; v < 100_000; v++) count[hashFeature(3, v, 1000)]!++;
  for (const c of count) assert.ok(Math.abs(c - 100) < 5 * 10, `a row holds ${c} of 10^5 values, expected 100 ± 10`);
  assert.notEqual(hashFeature(0, 7, 2 ** 20), hashFeature(1, 7, 2 ** 20));
  assert.equal(hashFeature(2, 12345, 2 ** 20), hashFeature(2, 12345, 2 ** 20));
  const { pairs, rowsUsed, colliding } = hashCollisions();
  assert.equal(pairs, 129_260);
  const expected = pairs * (1 - (1 - 2 ** -20) ** (pairs - 1));
  assert.ok(Math.abs(colliding / expected - 1) < 0.05, `${colliding} colliding pairs, uniform hashing expects ${expected.toFixed(0)}`);
  assert.ok(rowsUsed < pairs && rowsUsed > pairs - colliding);
});

test('checkCtrSpec and plantedCtr name the bad field and its value', () => {
  const bad = (patch: Record<string, unknown>, re: RegExp): void => {
    assert.throws(() => checkCtrSpec({ ...DEFAULT_CTR, ...patch } as CtrSpec), re);
  };
  bad({ rows: 0 }, /CtrSpec.rows must be an integer in \[1, 2\^31 - 1\], got 0/);
  bad({ fields: [] }, /CtrSpec.fields must be a non-empty array/);
  bad({ fields: [10, 0] }, /CtrSpec.fields\[1\] must be an integer vocabulary size .*got 0/);
  bad({ fields: [10, 2.5] }, /CtrSpec.fields\[1\].*got 2.5/);
  bad({ zipf: 0 }, /CtrSpec.zipf must be a finite number > 0, got 0/);
  bad({ latent: 1.5 }, /CtrSpec.latent must be an integer >= 0, got 1.5/);
  bad({ weightStd: -1 }, /CtrSpec.weightStd must be a finite number >= 0, got -1/);
  bad({ tailDecay: NaN }, /CtrSpec.tailDecay/);
  bad({ bias: Infinity }, /CtrSpec.bias must be a finite number/);
  bad({ seed: 0.5 }, /CtrSpec.seed must be an integer/);
  bad({ train: -1 }, /CtrSpec.train must be an integer >= 0/);
  bad({ test: '10' }, /CtrSpec.test .*got "10"/);
  bad({ fields: [2 ** 26, 1] }, /CtrSpec.fields must be vocabulary sizes summing to at most 2\^26/);
  assert.throws(() => plantedCtr({ rowz: 10 } as Partial<CtrSpec>), /CtrSpec: unknown key 'rowz'/);
  assert.throws(() => hashFeature(0, -1, 10), /hashFeature: value must be an integer in \[0, 2\^32\), got -1/);
  assert.throws(() => hashFeature(0, 1, 0), /hashFeature: rows must be .*got 0/);
  assert.doesNotThrow(() => checkCtrSpec(DEFAULT_CTR));
});
