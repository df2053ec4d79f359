/**
 * train/auc.ts: AUC equals the brute-force pair count with ties at half (to 1e-12), hits its
 * known extremes and a known population value at 10^6 scores; log loss equals the direct formula
 * and stays finite at |x| = 1000; bad arguments are named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auc, logLossFromLogits } from '../src/train/auc.js';
import { Rng } from '../src/tensor/random.js';

/** Σ over (positive, negative) pairs of [s_p > s_n] + 0.5 [s_p = s_n], over P · N: O(n^2). */
function bruteAuc(s: ArrayLike<number>, y: ArrayLike<number>): number {
  let u = 0;
  let pairs = 0;
  for (let i = 0; i < s.length; i++) {
    if (y[i] !== 1) continue;
    for (let j = 0; j < s.length; j++) {
      if (y[j] !== 0) continue;
      pairs++;
      if (s[i]! > s[j]!) u += 1;
      else if (s[i] === s[j]) u += 0.5;
    }
  }
  return u / pairs;
}

test('auc equals the brute-force pair count, ties counting half, on random inputs', () => {
  for (let seed = 0; seed < 8; seed++) {
    const rng = new Rng(seed);
    const n = 20 + rng.int(200);
    // Even seeds: scores from 7 levels (many ties); odd seeds: continuous scores with some repeats.
    const s = Float64Array.from({ length: n }, () => (seed % 2 === 0 ? rng.int(7) - 3 : rng.uniform() < 0.2 ? 0.5 : rng.normal()));
    const y = Float32Array.from({ length: n }, (_, i) => (i < 2 ? i : rng.uniform() < 0.3 ? 1 : 0));
    const want = bruteAuc(s, y);
    assert.ok(Math.abs(auc(s, y) - want) < 1e-12, `seed ${seed}: auc ${auc(s, y)} vs brute force ${want}`);
  }
});

test('auc: perfect ranking is 1, reversed is 0, all tied is 0.5, and -0 ties +0', () => {
  const y = [0, 0, 1, 0, 1, 1];
  const perfect = y.map((l, i) => l * 10 + i);
  assert.equal(auc(perfect, y), 1);
  assert.equal(auc(perfect.map((x) => -x), y), 0);
  assert.equal(auc(new Array<number>(6).fill(3), y), 0.5);
  assert.equal(auc([-0, 0], [1, 0]), 0.5);
  assert.equal(auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75);
});

test('auc of 10^6 scores: x ~ U(0, 1), y ~ Bernoulli(x) gives the population value 5/6, in well under a second', () => {
  // P(x_pos > x_neg) with densities 2x and 2(1 - x): 4 ∫ a ∫_0^a (1 - b) db da = 5/6.
  const rng = new Rng(3);
  const n = 1_000_000;
  const s = new Float64Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s[i] = rng.uniform();
    y[i] = rng.uniform() < s[i]! ? 1 : 0;
  }
  const t0 = performance.now();
  const a = auc(s, y);
  const ms = performance.now() - t0;
  assert.ok(Math.abs(a - 5 / 6) < 0.003, `auc ${a}, expected 5/6 within 0.003 (about 6 standard errors)`);
  assert.ok(ms < 1000, `auc of 10^6 took ${ms.toFixed(0)} ms`);
});

test('auc errors name the argument', () => {
  assert.throws(() => auc([1, 2, 3], [0, 1]), /scores has 3 entries but labels has 2/);
  assert.throws(() => auc([1, 2, NaN], [0, 1, 1]), /scores\[2\] is NaN/);
  assert.throws(() => auc([1, 2, 3], [0, 0.5, 1]), /labels\[1\] must be 0 or 1, got 0.5/);
  assert.throws(() => auc([1, 2], [0, 0]), /0 positives and 2 negatives/);
  assert.throws(() => auc([1, 2], [1, 1]), /2 positives and 0 negatives/);
});

test('logLossFromLogits equals -y log σ(x) - (1 - y) log(1 - σ(x)) on moderate logits (the direct form loses digits in 1 - σ(x) beyond), soft labels included', () => {
  const rng = new Rng(11);
  const x = Float64Array.from({ length: 500 }, () => 3 * rng.normal());
  const y = Float64Array.from({ length: 500 }, (_, i) => (i % 5 === 0 ? rng.uniform() : rng.int(2)));
  let direct = 0;
  for (let i = 0; i < x.length; i++) {
    const p = 1 / (1 + Math.exp(-x[i]!));
    direct -= y[i]! * Math.log(p) + (1 - y[i]!) * Math.log(1 - p);
  }
  direct /= x.length;
  const got = logLossFromLogits(x, y);
  assert.ok(Math.abs(got - direct) < 1e-9 * direct, `${got} vs direct ${direct}`);
  assert.equal(logLossFromLogits([0], [0.5]), Math.LN2);
});

test('logLossFromLogits is finite at |x| = 1000: the wrong side costs |x|, the right side 0', () => {
  assert.equal(logLossFromLogits([1000], [0]), 1000);
  assert.equal(logLossFromLogits([-1000], [1]), 1000);
  assert.equal(logLossFromLogits([1000, -1000], [1, 0]), 0);
});

test('logLossFromLogits errors name the argument', () => {
  assert.throws(() => logLossFromLogits([1, 2], [1]), /logits has 2 entries but labels has 1/);
  assert.throws(() => logLossFromLogits([], []), /logits is empty/);
  assert.throws(() => logLossFromLogits([0, NaN], [0, 1]), /logits\[1\] is NaN/);
  assert.throws(() => logLossFromLogits([0, 1], [0, 2]), /labels\[1\] must be in \[0, 1\], got 2/);
});
