/**
 * A synthetic click-through-rate dataset with a planted ground truth: hashed categorical features
 * whose labels come from a known factorization machine, so a model's test AUC can be held against
 * the best any model can reach, the AUC of the planted logits (the oracle).
 *
 * Each example draws one value per field f, independently, by Zipf rank: P(v_f = r) ∝ (r + 1)^-s
 * over [0, fields[f]). The planted model (a factorization machine, which DeepFM represents
 * exactly) is
 *
 *   logit = bias + Σ_f w_f[v_f] + Σ_{f<g} <V_f[v_f], V_g[v_g]>,   label ~ Bernoulli(σ(logit)),
 *
 * with w_f[r] ~ N(0, 1) · (1 + r)^-tailDecay and V_f[r] ∈ R^k likewise, then standardized per
 * field (see standardize) so that E[logit] = bias and
 *
 *   Var(logit) = Σ_f weightStd^2 c_f + Σ_{f<g} tr(C_f C_g),   c_f = Σ_r P(r) (1 + r)^-2·tailDecay,
 *
 * where C_f is the second moment of V_f (trace k · latentStd^2 · c_f). A model sees only
 * ids = hashFeature(f, v_f, rows): rows of one shared table, colliding as real hashed features do.
 *
 * Three seeded streams: the planted parameters (shared by both splits), the train draws and the
 * test draws, so the test set does not change with `train`.
 *
 *   const { train, test } = plantedCtr({ train: 100_000 });
 *   auc(test.logits, test.labels);   // the oracle AUC, about 0.79 at the defaults
 */
import { fmix32, Rng } from '../tensor/random.js';

export interface CtrSpec {
  /** Vocabulary size of each categorical field: field f takes values in [0, fields[f]). */
  fields: number[];
  /** Hashed table size: every (field, value) maps to a row in [0, rows) (collisions allowed). */
  rows: number;
  /** Zipf exponent s of the value frequencies within a field: P(rank r) ∝ (r + 1)^-s. */
  zipf: number;
  /** Dimension k of the planted latent vectors (the pairwise interactions). */
  latent: number;
  /** Std of the planted linear weight of value rank 0; rank r has weightStd · (1 + r)^-tailDecay. */
  weightStd: number;
  /** Std of each latent entry of value rank 0; rank r has latentStd · (1 + r)^-tailDecay. */
  latentStd: number;
  /**
   * How fast the planted stds fall along the Zipf ranks: value rank r draws its weight and latent
   * entries with std · (1 + r)^-tailDecay. 0 gives every value the same std; above 0 the signal
   * sits on the frequent values that a finite sample can learn (see DEFAULT_CTR).
   */
  tailDecay: number;
  /** Planted global bias (sets the click rate). */
  bias: number;
  /** Seeds the planted parameters, the train draws and the test draws (three separate streams). */
  seed: number;
  /** Training examples. */
  train: number;
  /** Test examples: independent draws from the same distribution, unchanged by `train`. */
  test: number;
}

/**
 * Defaults measured by bench/ctr_data.ts (seed 0, 10^6 train, 2·10^5 test): click rate 0.241,
 * oracle test AUC 0.791 (0.786-0.798 over seeds 0-3). One pass of per-example Adagrad on a k = 4
 * factorization machine over the hashed ids reaches 0.786 (gap 0.005-0.006 over seeds 0-3); a
 * logistic regression 0.757 (gap 0.034-0.036, so the interactions matter). 89,547 of the 2^20
 * rows are touched; 14,939 of the 129,260 (field, value) pairs share a row (uniform hashing
 * expects 14,991), and 11.7% of the train features land on a shared row.
 *
 * tailDecay 0.75 is what brings the fit within 0.01: with equal stds (tailDecay 0, weightStd =
 * latentStd = 0.3, the same oracle AUC 0.791) 9% of the linear variance sits on values seen under
 * 100 times in 10^6 examples (27% in the 100,000-value field), and the same fit stays 0.040 below
 * the oracle.
 */
export const DEFAULT_CTR: CtrSpec = {
  fields: [10, 50, 200, 1000, 5000, 20000, 100000, 3000],
  rows: 2 ** 20,
  zipf: 1.1,
  latent: 4,
  weightStd: 0.8,
  latentStd: 0.45,
  tailDecay: 0.75,
  bias: -1.5,
  seed: 0,
  train: 1_000_000,
  test: 200_000,
};

/** One split: n examples of F hashed ids, their 0/1 labels and the planted model's logits. */
export interface CtrSplit {
  /** n x F row-major hashed row ids, each in [0, rows). */
  ids: Int32Array;
  /** 0/1 click labels, drawn as Bernoulli(σ(logit)). */
  labels: Float32Array;
  /** The planted model's logit of each example (the oracle's score). */
  logits: Float64Array;
  n: number;
  fields: number;
}


/**
 * The hashed row of value `value` of field `field`: a 53-bit hash of (field, value), mod rows.
 * Two differently seeded 32-bit hashes of the pair give the 53 bits (32 + 21), so the mod is
 * uniform to within rows / 2^53 for any table size, not only powers of two.
 */
export function hashFeature(field: number, value: number, rows: number): number {
  if (!Number.isInteger(field) || field < 0 || field >= 2 ** 32) throw new Error(`hashFeature: field must be an integer in [0, 2^32), got ${field}`);
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** 32) throw new Error(`hashFeature: value must be an integer in [0, 2^32), got ${value}`);
  if (!Number.isInteger(rows) || rows < 1 || rows > 2 ** 31 - 1) throw new Error(`hashFeature: rows must be an integer in [1, 2^31 - 1], got ${rows}`);
  const h1 = fmix32((fmix32((value ^ 0x9e3779b9) >>> 0) ^ field) >>> 0);
  const h2 = fmix32((fmix32((field ^ 0x7f4a7c15) >>> 0) + value) >>> 0);
  return (h1 * 2 ** 21 + (h2 >>> 11)) % rows;
}

const SPEC_KEYS = Object.keys(DEFAULT_CTR) as (keyof CtrSpec)[];

const isCount = (x: unknown, min: number): x is number => typeof x === 'number' && Number.isInteger(x) && x >= min;

/** Throws, naming the field and the value, unless `spec` describes a dataset plantedCtr can draw. */
export function checkCtrSpec(spec: CtrSpec): void {
  const bad = (key: string, want: string, got: unknown): never => {
    throw new Error(`CtrSpec.${key} must be ${want}, got ${JSON.stringify(got)}`);
  };
  for (const key of Object.keys(spec)) if (!SPEC_KEYS.includes(key as keyof CtrSpec)) throw new Error(`CtrSpec: unknown key '${key}' (known: ${SPEC_KEYS.join(', ')})`);
  if (!Array.isArray(spec.fields) || spec.fields.length === 0) bad('fields', 'a non-empty array of vocabulary sizes', spec.fields);
  for (let f = 0; f < spec.fields.length; f++) {
    const v = spec.fields[f];
    if (!isCount(v, 1) || v > 2 ** 31 - 1) bad(`fields[${f}]`, 'an integer vocabulary size in [1, 2^31 - 1]', v);
  }
  const values = spec.fields.reduce((a, v) => a + v, 0);
  if (values > 2 ** 26) bad('fields', `vocabulary sizes summing to at most 2^26 (the planted parameters take (1 + latent) doubles per value), summing to ${values}`, spec.fields);
  if (!isCount(spec.rows, 1) || spec.rows > 2 ** 31 - 1) bad('rows', 'an integer in [1, 2^31 - 1]', spec.rows);
  if (!(typeof spec.zipf === 'number' && spec.zipf > 0 && Number.isFinite(spec.zipf))) bad('zipf', 'a finite number > 0', spec.zipf);
  if (!isCount(spec.latent, 0)) bad('latent', 'an integer >= 0', spec.latent);
  for (const key of ['weightStd', 'latentStd', 'tailDecay'] as const) {
    const v = spec[key];
    if (!(typeof v === 'number' && v >= 0 && Number.isFinite(v))) bad(key, 'a finite number >= 0', v);
  }
  if (!(typeof spec.bias === 'number' && Number.isFinite(spec.bias))) bad('bias', 'a finite number', spec.bias);
  if (!(typeof spec.seed === 'number' && Number.isInteger(spec.seed) && Math.abs(spec.seed) < 2 ** 50)) bad('seed', 'an integer with |seed| < 2^50', spec.seed);
  for (const key of ['train', 'test'] as const) {
    const v = spec[key];
    if (!isCount(v, 0) || v * spec.fields.length > 2 ** 32 - 1) bad(key, `an integer >= 0 with ${key} x fields <= 2^32 - 1`, v);
  }
}

/** The planted factorization machine: per field, a linear weight and a latent vector per value. */
interface Planted {
  w: Float64Array[];
  V: Float64Array[];
  /** Per field, the Zipf CDF over value ranks (last entry exactly 1). */
  cdf: Float64Array[];
  /** Per field, the guide table of its CDF (see guideTable). */
  guide: Int32Array[];
  /** Per field, the hashed row of each value. */
  row: Int32Array[];
}

/** Stream k of seed s: distinct for every (s, k) with k < 4, so the three streams never overlap. */
const stream = (seed: number, k: number): Rng => new Rng(seed * 4 + k);

/** P(rank r) = (r + 1)^-s / H(vocab, s): the Zipf CDF, normalized so its last entry is exactly 1. */
function zipfCdf(vocab: number, s: number): Float64Array {
  const cdf = new Float64Array(vocab);
  let acc = 0;
  for (let r = 0; r < vocab; r++) cdf[r] = acc += (r + 1) ** -s;
  for (let r = 0; r < vocab; r++) cdf[r]! /= acc;
  cdf[vocab - 1] = 1;
  return cdf;
}

function plant(spec: CtrSpec): Planted {
  const rng = stream(spec.seed, 0);
  const k = spec.latent;
  const decay = (vocab: number): Float64Array => Float64Array.from({ length: vocab }, (_, r) => (1 + r) ** -spec.tailDecay);
  const scale = spec.fields.map(decay);
  // All linear weights first, then all latent vectors: changing `latent` leaves the weights alone.
  const w = scale.map((d) => {
    const out = new Float64Array(d.length);
    for (let r = 0; r < d.length; r++) out[r] = d[r]! * rng.normal();
    return out;
  });
  const V = scale.map((d) => {
    const out = new Float64Array(d.length * k);
    for (let r = 0; r < d.length; r++) for (let j = 0; j < k; j++) out[r * k + j] = d[r]! * rng.normal();
    return out;
  });
  const cdf = spec.fields.map((vocab) => zipfCdf(vocab, spec.zipf));
  spec.fields.forEach((_, f) => standardize(w[f]!, V[f]!, cdf[f]!, scale[f]!, spec));
  const row = spec.fields.map((vocab, f) => Int32Array.from({ length: vocab }, (_, v) => hashFeature(f, v, spec.rows)));
  return { w, V, cdf, guide: cdf.map(guideTable), row };
}

/**
 * Standardizes one field's draws under its Zipf probabilities p_r: subtracts the means, then
 * scales w so that Σ_r p_r w_r^2 = weightStd^2 · Σ_r p_r (1 + r)^-2d, and V so that
 * Σ_r p_r |V_r|^2 = k · latentStd^2 · Σ_r p_r (1 + r)^-2d: the values the draws have in
 * expectation, made exact. Fields are independent, so E[w_f] = 0 and E[<V_f, V_g>] = 0 make the
 * mean logit exactly `bias`; the exact second moments keep the click rate and the oracle AUC from
 * swinging with the draw of the few head values that carry most of the probability.
 */
function standardize(w: Float64Array, V: Float64Array, cdf: Float64Array, decay: Float64Array, spec: CtrSpec): void {
  const k = spec.latent;
  const p = cdf.map((c, r) => c - (r > 0 ? cdf[r - 1]! : 0));
  const mean = new Float64Array(k + 1);
  let target = 0;
  for (let r = 0; r < w.length; r++) {
    mean[k]! += p[r]! * w[r]!;
    for (let j = 0; j < k; j++) mean[j]! += p[r]! * V[r * k + j]!;
    target += p[r]! * decay[r]! ** 2;
  }
  let sw = 0;
  let sv = 0;
  for (let r = 0; r < w.length; r++) {
    w[r]! -= mean[k]!;
    sw += p[r]! * w[r]! ** 2;
    for (let j = 0; j < k; j++) {
      V[r * k + j]! -= mean[j]!;
      sv += p[r]! * V[r * k + j]! ** 2;
    }
  }
  // A field with one value has nothing left after centering: it stays 0 (a constant is the bias).
  const gw = sw > 0 ? spec.weightStd * Math.sqrt(target / sw) : 0;
  const gv = sv > 0 ? spec.latentStd * Math.sqrt((k * target) / sv) : 0;
  for (let r = 0; r < w.length; r++) w[r]! *= gw;
  for (let i = 0; i < V.length; i++) V[i]! *= gv;
}

/** Guide-table buckets: a power of two (so u · m is exact), at most 2^16 (256 KiB per field). */
const guideSize = (vocab: number): number => Math.min(2 ** 16, 2 ** Math.ceil(Math.log2(vocab)));

/**
 * The guide table of a CDF (Chen and Asau 1974): g[j] is the rank drawn for u = j / m, so a u in
 * [j / m, (j + 1) / m) draws a rank in [g[j], g[j + 1]], and the binary search runs over that
 * bucket only (about one step in the Zipf head, a few in the tail) instead of the whole vocabulary.
 */
function guideTable(cdf: Float64Array): Int32Array {
  const m = guideSize(cdf.length);
  const g = new Int32Array(m + 1);
  for (let j = 0, r = 0; j < m; j++) {
    while (cdf[r]! <= j / m) r++;
    g[j] = r;
  }
  g[m] = cdf.length - 1;
  return g;
}

/** The smallest rank r with u < cdf[r] (u in [0, 1); cdf ends at exactly 1), searched within u's guide bucket. */
function sampleRank(cdf: Float64Array, guide: Int32Array, u: number): number {
  const j = Math.floor(u * (guide.length - 1));
  let lo = guide[j]!;
  let hi = guide[j + 1]!;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (u < cdf[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * n examples from `rng`: per example F uniforms (the values, by inverse CDF) then one (the label).
 * The pairwise term uses Σ_{f<g} <V_f, V_g> = (|Σ_f V_f|^2 - Σ_f |V_f|^2) / 2, O(F k) per example.
 */
function drawSplit(p: Planted, spec: CtrSpec, n: number, rng: Rng): CtrSplit {
  const F = spec.fields.length;
  const k = spec.latent;
  const ids = new Int32Array(n * F);
  const labels = new Float32Array(n);
  const logits = new Float64Array(n);
  const sum = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    sum.fill(0);
    let x = spec.bias;
    let sq = 0;
    for (let f = 0; f < F; f++) {
      const v = sampleRank(p.cdf[f]!, p.guide[f]!, rng.uniform());
      ids[i * F + f] = p.row[f]![v]!;
      x += p.w[f]![v]!;
      const Vf = p.V[f]!;
      for (let j = 0, o = v * k; j < k; j++) {
        const e = Vf[o + j]!;
        sum[j]! += e;
        sq += e * e;
      }
    }
    let s2 = 0;
    for (let j = 0; j < k; j++) s2 += sum[j]! * sum[j]!;
    x += (s2 - sq) / 2;
    logits[i] = x;
    labels[i] = rng.uniform() < 1 / (1 + Math.exp(-x)) ? 1 : 0;
  }
  return { ids, labels, logits, n, fields: F };
}

/**
 * Draws the planted model from `spec` (DEFAULT_CTR for missing keys) and its train and test
 * splits. Deterministic in `seed`; the test split does not depend on `train`.
 */
export function plantedCtr(spec: Partial<CtrSpec> = {}): { spec: CtrSpec; train: CtrSplit; test: CtrSplit } {
  const full: CtrSpec = { ...DEFAULT_CTR, ...spec, fields: [...(spec.fields ?? DEFAULT_CTR.fields)] };
  checkCtrSpec(full);
  const p = plant(full);
  return { spec: full, train: drawSplit(p, full, full.train, stream(full.seed, 1)), test: drawSplit(p, full, full.test, stream(full.seed, 2)) };
}

/**
 * How the (field, value) pairs of `spec` share hashed rows: `pairs` = Σ fields, `rowsUsed` the
 * distinct rows they land on, `colliding` the pairs whose row also holds another pair. Uniform
 * hashing expects colliding ≈ pairs · (1 - (1 - 1/rows)^(pairs - 1)).
 */
export function hashCollisions(spec: Partial<CtrSpec> = {}): { pairs: number; rowsUsed: number; colliding: number } {
  const full: CtrSpec = { ...DEFAULT_CTR, ...spec, fields: [...(spec.fields ?? DEFAULT_CTR.fields)] };
  checkCtrSpec(full);
  const count = new Uint32Array(full.rows);
  let pairs = 0;
  full.fields.forEach((vocab, f) => {
    for (let v = 0; v < vocab; v++) count[hashFeature(f, v, full.rows)]!++;
    pairs += vocab;
  });
  let rowsUsed = 0;
  let colliding = 0;
  for (const c of count) {
    if (c > 0) rowsUsed++;
    if (c > 1) colliding += c;
  }
  return { pairs, rowsUsed, colliding };
}
