/**
 * Gradient checking: analytic gradients from weft's autodiff against central finite differences,
 * both evaluated by onnxruntime in float64.
 *
 *   await checkGrad('Softmax over axis 1', [[2, 3, 4]], (x) => x.softmax(1));
 *
 * A non-scalar output is reduced to the scalar L = sum(out * R) with a fixed random float64 R, so
 * every output element carries a distinct weight and a transposed or misplaced gradient shows.
 * The analytic gradients come from one realize of the forward+backward graph. The numeric ones come
 * from the forward graph compiled once (`compile`) and re-run with each input element perturbed by
 * +-h; with h = 1e-6 the truncation error is O(h^2 f''') ~ 1e-12 and the rounding error
 * O(eps |L| / h) ~ 1e-9, well inside the default tolerance atol 1e-7 + rtol 1e-6 |numeric|.
 */
import assert from 'node:assert/strict';
import { compile, grad, realize, Rng, Tensor, tensor } from '../../src/index.js';
import type { DType, TypedArray } from '../../src/index.js';

/** One input of a checked function: its shape, its dtype, how its data is drawn, whether it is differentiated. */
export interface InputSpec {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Differentiated (and perturbed) by the check; index, mask and other non-float inputs are not. */
  readonly diff: boolean;
  readonly make: (rng: Rng, n: number) => TypedArray;
}

/** A plain shape means `normal(shape)`. */
export type Input = readonly number[] | InputSpec;

const numel = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);
const floats = (n: number, f: () => number): Float64Array => Float64Array.from({ length: n }, f);

/** float64 N(0, std^2) samples. */
export const normal = (shape: readonly number[], std = 1): InputSpec =>
  ({ shape, dtype: 'float64', diff: true, make: (rng, n) => floats(n, () => rng.normal() * std) });

/** float64 uniform samples in [lo, hi). */
export const uniform = (shape: readonly number[], lo: number, hi: number): InputSpec =>
  ({ shape, dtype: 'float64', diff: true, make: (rng, n) => floats(n, () => lo + (hi - lo) * rng.uniform()) });

/** float64 samples in [0.5, 2): for Log, Sqrt, Pow bases, denominators. */
export const positive = (shape: readonly number[]): InputSpec => uniform(shape, 0.5, 2);

/** float64 normal samples pushed at least `margin` away from 0: for kinks at 0 (Relu, Abs). */
export const awayFromZero = (shape: readonly number[], margin = 0.2): InputSpec => ({
  shape, dtype: 'float64', diff: true,
  make: (rng, n) => floats(n, () => { const z = rng.normal(); return Math.sign(z || 1) * (margin + Math.abs(z)); }),
});

/** float64 values at least `gap` apart (a shuffled grid): no ties for ReduceMax, no order change under +-h. */
export const distinct = (shape: readonly number[], gap = 0.1): InputSpec => ({
  shape, dtype: 'float64', diff: true,
  make: (rng, n) => {
    const a = floats(n, () => 0);
    for (let i = 0; i < n; i++) a[i] = (i - n / 2) * gap + rng.uniform() * gap * 0.1;
    return rng.shuffle(a);
  },
});

/** int64 indices uniform in [0, n); not differentiated. */
export const indices = (shape: readonly number[], n: number): InputSpec => ({
  shape, dtype: 'int64', diff: false,
  make: (rng, k) => BigInt64Array.from({ length: k }, () => BigInt(rng.int(n))),
});

/** A bool mask, true with probability p; not differentiated. */
export const mask = (shape: readonly number[], p = 0.5): InputSpec => ({
  shape, dtype: 'bool', diff: false,
  make: (rng, k) => Uint8Array.from({ length: k }, () => (rng.uniform() < p ? 1 : 0)),
});

/** Given contents: int64 (not differentiated) for integer dtypes, float64 (differentiated) otherwise. */
export function given(data: readonly number[], shape: readonly number[], dtype: 'int64' | 'float64' | 'bool' = 'int64'): InputSpec {
  if (data.length !== numel(shape)) throw new Error(`given: ${data.length} values do not fill shape [${shape.join(', ')}]`);
  const make = (): TypedArray => (dtype === 'int64' ? BigInt64Array.from(data, (x) => BigInt(x))
    : dtype === 'bool' ? Uint8Array.from(data) : Float64Array.from(data));
  return { shape, dtype, diff: dtype === 'float64', make };
}

/** The same input, excluded from differentiation (its data is still drawn). */
export const fixedInput = (s: Input): InputSpec => ({ ...spec(s), diff: false });

export interface CheckOptions {
  /** Finite-difference step. Default 1e-6. */
  h?: number;
  /** Tolerance: |analytic - numeric| <= atol + rtol |numeric|. Defaults 1e-7 and 1e-6. */
  atol?: number;
  rtol?: number;
  /** Seed of the inputs and the output weighting; default derived from the name. */
  seed?: number;
}

export interface CheckResult {
  /** Largest |analytic - numeric| over every checked element. */
  maxAbsErr: number;
  /** Elements checked, and forward evaluations run for them. */
  elements: number;
  evaluations: number;
}

const spec = (s: Input): InputSpec => ('make' in s ? s : normal(s as readonly number[]));

function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** `[1, 0, 2]` for flat element `j` of `shape`. */
function unravel(j: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length).fill(0);
  for (let k = shape.length - 1; k >= 0; k--) { out[k] = j % shape[k]!; j = Math.floor(j / shape[k]!); }
  return out;
}

const fmtShape = (s: readonly unknown[]): string => `[${s.join(', ')}]`;

/**
 * Checks the gradient of `fn` with respect to every differentiated input. `fn` returns one tensor
 * or several (each reduced with its own weights and summed): outputs left out get no gradient, as
 * when only some outputs of a Split are used.
 */
export async function checkGrad(
  name: string,
  inputs: readonly Input[],
  fn: (...xs: Tensor[]) => Tensor | Tensor[],
  opts: CheckOptions = {},
): Promise<CheckResult> {
  const { h = 1e-6, atol = 1e-7, rtol = 1e-6 } = opts;
  const rng = new Rng(opts.seed ?? seedOf(name));
  const specs = inputs.map(spec);
  const datas = specs.map((s) => s.make(rng, numel(s.shape)));
  const leaves = specs.map((s, i) => tensor(datas[i]!, s.shape, s.dtype));
  const diff = specs.flatMap((s, i) => (s.diff ? [i] : []));
  if (diff.length === 0) throw new Error(`${name}: no input is differentiated`);
  for (const i of diff) if (specs[i]!.dtype !== 'float64') throw new Error(`${name}: differentiated input ${i} must be float64, got ${specs[i]!.dtype}`);

  const outs = [fn(...leaves)].flat();
  // One weighting per output, drawn after the inputs; leaves, so the compiled forward feeds them too.
  const weights = outs.map((o, k) => {
    if (o.dtype !== 'float64') throw new Error(`${name}: output ${k} is ${o.dtype}; check gradients on float64 outputs`);
    if (o.rank === 0) return null;
    const shape = o.shape as number[];
    return tensor(floats(numel(shape), () => rng.normal()), shape);
  });
  const lossOf = (ys: readonly Tensor[]): Tensor => {
    if (ys.length !== weights.length) throw new Error(`${name}: fn returned ${ys.length} outputs, then ${weights.length}`);
    const terms = ys.map((y, k) => (weights[k] ? y.mul(weights[k]).sum() : y));
    return terms.reduce((p, q) => p.add(q));
  };

  // Analytic: forward and backward in one program.
  const loss = lossOf(outs);
  const grads = grad(loss, diff.map((i) => leaves[i]!));
  await realize(loss, ...grads);
  const lossValue = await loss.item();

  // Numeric: the forward compiled once, re-run on perturbed copies of the inputs.
  const forward = compile((...xs) => [lossOf([fn(...xs)].flat())], `gradcheck ${name}`);
  const feeds = specs.map((s, i) => ({ data: datas[i]!, shape: s.shape, dtype: s.dtype }));
  const f = async (): Promise<number> => Number((await forward(...feeds))[0]![0]!);
  const f0 = await f();
  // The two programs may be optimized differently by onnxruntime; they must still agree closely.
  assert.ok(Math.abs(f0 - lossValue) <= 1e-10 * (1 + Math.abs(lossValue)),
    `${name}: the compiled forward gives ${f0}, the realized loss ${lossValue}`);

  let maxAbsErr = 0;
  let elements = 0;
  let evaluations = 1;
  for (const [k, i] of diff.entries()) {
    const x = datas[i] as Float64Array;
    const shape = specs[i]!.shape;
    const g = grads[k]!;
    assert.deepEqual(g.shape, shape, `${name}: gradient of input ${i} has shape ${fmtShape(g.shape)}, the input ${fmtShape(shape)}`);
    const analytic = (await g.data()) as Float64Array;
    const bad: { j: number; a: number; n: number; excess: number }[] = [];
    let anyNonzero = false;
    for (let j = 0; j < x.length; j++) {
      const x0 = x[j]!;
      x[j] = x0 + h; const fp = await f(); const up = x[j]!;
      x[j] = x0 - h; const fm = await f(); const down = x[j]!;
      x[j] = x0;
      evaluations += 2;
      elements++;
      const n = (fp - fm) / (up - down);
      const a = analytic[j]!;
      if (n !== 0 || a !== 0) anyNonzero = true;
      const err = Math.abs(a - n);
      if (!(err <= maxAbsErr)) maxAbsErr = Number.isNaN(err) ? Infinity : err;
      const bound = atol + rtol * Math.abs(n);
      if (!(err <= bound)) bad.push({ j, a, n, excess: err / bound });
    }
    if (bad.length > 0) {
      const w = bad.reduce((p, q) => (q.excess > p.excess || Number.isNaN(q.excess) ? q : p));
      assert.fail(`${name}: gradient of input ${i} (shape ${fmtShape(shape)}) at element ${fmtShape(unravel(w.j, shape))}: ` +
        `analytic ${w.a}, numeric ${w.n}, |diff| ${Math.abs(w.a - w.n).toExponential(3)} > ` +
        `${(atol + rtol * Math.abs(w.n)).toExponential(3)} (atol ${atol} + rtol ${rtol} |numeric|); ` +
        `${bad.length} of ${x.length} elements fail`);
    }
    assert.ok(anyNonzero, `${name}: the gradient of input ${i} is zero everywhere, so the check proves nothing`);
  }
  return { maxAbsErr, elements, evaluations };
}
