/**
 * End to end: an MLP whose parameters live in one FlatBuffer, forward + backward traced once by
 * compile(), gradients copied into a gradient FlatBuffer, and AdamW updating the flat vectors.
 *
 * Task: regression of y = sin(2 x0) + x1 x2 - 0.5 x3^2 from x ~ N(0, I_4), 256 samples (full batch),
 * MLP 4 -> 32 -> 32 -> 1 with tanh, mean squared error.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdamW, compile, FlatBuffer, grad, Layout, Rng, setThreads, Tensor } from '../src/index.js';
import type { AdamWConfig, TypedArray } from '../src/index.js';

setThreads(1);

type FA = Float32Array | Float64Array;
const [N, D, H] = [256, 4, 32];

const layout = new Layout([
  { name: 'fc1.weight', shape: [D, H] }, { name: 'fc1.bias', shape: [H] },
  { name: 'fc2.weight', shape: [H, H] }, { name: 'fc2.bias', shape: [H] },
  { name: 'fc3.weight', shape: [H, 1] }, { name: 'fc3.bias', shape: [1] },
]);
const noDecay = (name: string): boolean => name.endsWith('.bias');

/** float32-representable data and initial parameters, so the float32 and float64 runs start equal. */
function makeProblem(seed: number): { x: Float32Array; y: Float32Array; init: Float32Array } {
  const rng = new Rng(seed);
  const x = Float32Array.from({ length: N * D }, () => rng.normal());
  const y = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const [a, b, c, d] = [x[i * D]!, x[i * D + 1]!, x[i * D + 2]!, x[i * D + 3]!];
    y[i] = Math.sin(2 * a) + b * c - 0.5 * d * d;
  }
  // Weights N(0, 1/fan_in) (LeCun, suits tanh), biases zero.
  const init = new Float32Array(layout.size);
  for (const s of layout.slots) {
    if (s.name.endsWith('.bias')) continue;
    const std = 1 / Math.sqrt(s.shape[0]!);
    for (let i = 0; i < s.size; i++) init[s.offset + i] = rng.normal() * std;
  }
  return { x, y, init };
}

interface Model {
  params: FlatBuffer<FA>;
  grads: FlatBuffer<FA>;
  /** One forward + backward: returns the loss and fills `grads`. */
  step(): Promise<number>;
  readonly traces: number;
}

function makeModel(dtype: 'float32' | 'float64', problem: ReturnType<typeof makeProblem>): Model {
  const params: FlatBuffer<FA> = dtype === 'float64' ? FlatBuffer.zeros64(layout, 'train.params64') : FlatBuffer.zeros(layout, 'train.params32');
  const grads: FlatBuffer<FA> = dtype === 'float64' ? FlatBuffer.zeros64(layout) : FlatBuffer.zeros(layout);
  params.data.set(problem.init);
  // The parameters are fed as inputs (zero-copy views of the flat buffer), not closed over: the
  // executor caches programs by structure, and a cached Program keeps the leaves of the graph that
  // compiled it first, so an unfed leaf reads that graph's data. Closed over, two models of the
  // same shape in one process would both run on the first model's parameters.
  const fwdBwd = compile((x: Tensor, y: Tensor, ...ws: Tensor[]) => {
    const [w1, b1, w2, b2, w3, b3] = ws as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    const h1 = x.matmul(w1).add(b1).tanh();
    const h2 = h1.matmul(w2).add(b2).tanh();
    const err = h2.matmul(w3).add(b3).sub(y);
    const loss = err.mul(err).mean();
    return [loss, ...grad(loss, ws)];
  }, `mlp.${dtype}`);
  const cast = (a: Float32Array): TypedArray => (dtype === 'float64' ? Float64Array.from(a) : a);
  const x = { data: cast(problem.x), shape: [N, D], dtype };
  const y = { data: cast(problem.y), shape: [N, 1], dtype };
  const ps = layout.slots.map((s) => ({ data: params.view(s.name), shape: s.shape, dtype }));
  return {
    params, grads,
    async step() {
      const [loss, ...gs] = await fwdBwd(x, y, ...ps);
      layout.slots.forEach((s, i) => grads.view(s.name).set(gs[i] as FA));
      return Number(loss![0]);
    },
    get traces() { return fwdBwd.traces; },
  };
}

async function train(model: Model, cfg: AdamWConfig, steps: number): Promise<{ losses: number[]; norms: number[] }> {
  const opt = new AdamW(model.params, cfg);
  const losses: number[] = [];
  const norms: number[] = [];
  for (let i = 0; i < steps; i++) {
    losses.push(await model.step());
    norms.push((await opt.step(model.grads)).gradNorm);
  }
  losses.push(await model.step());
  assert.equal(opt.compiles, 1);
  return { losses, norms };
}

test('MLP on flat buffers: 50 AdamW steps cut the regression loss substantially', async () => {
  const model = makeModel('float32', makeProblem(1));
  const { losses } = await train(model, { lr: 1e-2, weightDecay: 0.01, noDecay, clipNorm: 1 }, 50);
  const [first, last] = [losses[0]!, losses[losses.length - 1]!];
  console.log(`50 steps: loss ${first.toFixed(4)} -> ${last.toFixed(4)}`);
  assert.ok(last < 0.25 * first, `loss ${first} -> ${last}: expected a fall below a quarter`);
  assert.ok(losses.every(Number.isFinite));
  assert.equal(model.traces, 1, 'forward + backward traced once');
});

/**
 * float64 replay: the same model, data and 3 AdamW steps with float32 buffers (float32 graphs) and
 * with float64 buffers (every graph in float64). Metric: norm-relative,
 *   ||p32 - p64||_2 / ||p64||_2 <= 1e-5,
 * with lr 1e-2 so the steps move the parameters by ~1e3 times the tolerance (checked below), and
 * clipping and decay on so every part of the update is in play.
 */
test('float64 replay: float32 parameters after 3 AdamW steps match float64 to 1e-5 (norm-relative)', async () => {
  const problem = makeProblem(2);
  const cfg: AdamWConfig = { lr: 1e-2, beta1: 0.9, beta2: 0.95, weightDecay: 0.1, noDecay, clipNorm: 1 };
  const m32 = makeModel('float32', problem);
  const m64 = makeModel('float64', problem);
  assert.ok(m64.params.data instanceof Float64Array);
  const r32 = await train(m32, cfg, 3);
  const r64 = await train(m64, cfg, 3);

  const diff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
    return Math.sqrt(s);
  };
  const norm = (a: ArrayLike<number>): number => diff(a, new Float64Array(a.length));
  const rel = diff(m32.params.data, m64.params.data) / norm(m64.params.data);
  const moved = diff(m64.params.data, problem.init) / norm(m64.params.data);
  // Per element, with a floor of 1e-2 on |p64|, for the record.
  let perElem = 0;
  for (let i = 0; i < layout.size; i++) {
    const [a, b] = [m32.params.data[i]!, m64.params.data[i]!];
    perElem = Math.max(perElem, Math.abs(a - b) / Math.max(1e-2, Math.abs(b)));
  }
  console.log(`replay: norm-relative ${rel.toExponential(2)}, per-element (floor 1e-2) ${perElem.toExponential(2)}, moved ${moved.toExponential(2)}; losses32 ${r32.losses.map((l) => l.toFixed(6))}, losses64 ${r64.losses.map((l) => l.toFixed(6))}`);
  assert.ok(rel <= 1e-5, `||p32 - p64|| / ||p64|| = ${rel}`);
  assert.ok(moved >= 1e-2, `the 3 steps moved the parameters by only ${moved} (relative)`);
  r32.losses.forEach((l, i) => assert.ok(Math.abs(l - r64.losses[i]!) <= 1e-5 * r64.losses[i]!, `loss ${i}: ${l} vs ${r64.losses[i]}`));
  r32.norms.forEach((g, i) => assert.ok(Math.abs(g - r64.norms[i]!) <= 1e-5 * r64.norms[i]!, `grad norm ${i}: ${g} vs ${r64.norms[i]}`));
});
