/**
 * Adafactor against a float64 reference written from torch.optim.Adafactor's algorithm (PyTorch
 * 2.5; the first moment as in the paper): factored second moments for a matrix and a 3-D tensor,
 * a full one for a vector, the relative step, weight decay and update clipping, with and without
 * a first moment; and its state is a small fraction of AdamW's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Adafactor } from '../src/optim/adafactor.js';
import { FlatBuffer, Layout } from '../src/runtime/flat.js';
import { setThreads } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';

setThreads(1);

const SHAPES: [string, number[]][] = [['w', [4, 6]], ['b', [6]], ['k', [2, 3, 4]]];

/** torch.optim.Adafactor's step on one tensor (plain float64 JavaScript). */
function reference(p: number[], g: number[], shape: number[], st: { row?: number[]; col?: number[]; v?: number[]; m?: number[] }, t: number,
  o: { lr: number; decay: number; eps1: number; eps2: number; d: number; wd: number; beta1: number }): void {
  const n = p.length;
  const b2 = t ** o.decay;
  const rho = Math.min(o.lr, 1 / Math.sqrt(t));
  const rmsP = Math.sqrt(p.reduce((a, x) => a + x * x, 0) / n);
  const alpha = Math.max(o.eps2, rmsP) * rho;
  for (let i = 0; i < n; i++) p[i]! *= 1 - o.lr * o.wd;
  const est = new Array<number>(n);
  if (shape.length >= 2) {
    const cols = shape.at(-1)!, inner = shape.at(-2)!, outer = n / (inner * cols);
    for (let a = 0; a < outer; a++) {
      for (let i = 0; i < inner; i++) {
        let s = 0; for (let j = 0; j < cols; j++) s += g[(a * inner + i) * cols + j]! ** 2;
        const k = a * inner + i; st.row![k] = st.row![k]! + (s / cols - st.row![k]!) * b2;
      }
      for (let j = 0; j < cols; j++) {
        let s = 0; for (let i = 0; i < inner; i++) s += g[(a * inner + i) * cols + j]! ** 2;
        const k = a * cols + j; st.col![k] = st.col![k]! + (s / inner - st.col![k]!) * b2;
      }
      let meanR = 0; for (let i = 0; i < inner; i++) meanR += st.row![a * inner + i]!; meanR = Math.max(meanR / inner, o.eps1);
      for (let i = 0; i < inner; i++) for (let j = 0; j < cols; j++) est[(a * inner + i) * cols + j] = (st.row![a * inner + i]! * st.col![a * cols + j]!) / meanR;
    }
  } else {
    for (let i = 0; i < n; i++) { st.v![i] = st.v![i]! + (g[i]! ** 2 - st.v![i]!) * b2; est[i] = st.v![i]!; }
  }
  let u = g.map((x, i) => x / Math.sqrt(Math.max(est[i]!, o.eps1 * o.eps1)));
  const rmsU = Math.sqrt(u.reduce((a, x) => a + x * x, 0) / n);
  u = u.map((x) => x / Math.max(1, rmsU / o.d));
  if (st.m) { for (let i = 0; i < n; i++) st.m[i] = o.beta1 * st.m[i]! + (1 - o.beta1) * u[i]!; u = st.m; }
  for (let i = 0; i < n; i++) p[i]! -= alpha * u[i]!;
}

for (const beta1 of [0, 0.9]) {
  test(`Adafactor${beta1 ? ' with a first moment' : ''}: 4 steps equal the float64 reference (factored matrix and 3-D tensor, vector, decay, clipping)`, async () => {
    const layout = new Layout(SHAPES.map(([name, shape]) => ({ name, shape })));
    const params = FlatBuffer.zeros64(layout);
    const grads = FlatBuffer.zeros64(layout);
    const rng = new Rng(3);
    for (const s of layout.slots) params.view(s.name).set(Float64Array.from({ length: s.size }, () => rng.normal() * 0.5));
    const o = { lr: 0.05, decay: -0.8, eps1: 2 ** -23, eps2: 1e-3, d: 0.5, wd: 0.1, beta1 };
    const opt = new Adafactor(params, { lr: o.lr, d: o.d, weightDecay: o.wd, beta1 });
    const ref = new Map(SHAPES.map(([name, shape]) => {
      const n = shape.reduce((a, e) => a * e, 1);
      const st = shape.length >= 2
        ? { row: new Array<number>(n / shape.at(-1)!).fill(0), col: new Array<number>(n / shape.at(-2)!).fill(0) }
        : { v: new Array<number>(n).fill(0) };
      return [name, { p: Array.from(params.view(name)), shape, st: beta1 ? { ...st, m: new Array<number>(n).fill(0) } : st }];
    }));
    for (let t = 1; t <= 4; t++) {
      for (const s of layout.slots) grads.view(s.name).set(Float64Array.from({ length: s.size }, () => rng.normal() * (s.name === 'b' ? 3 : 1)));
      await opt.step(grads);
      for (const [name, r] of ref) reference(r.p, Array.from(grads.view(name)), r.shape, r.st, t, o);
    }
    let worst = 0;
    for (const [name, r] of ref) {
      const got = params.view(name);
      r.p.forEach((x, i) => { worst = Math.max(worst, Math.abs(got[i]! - x)); });
      if ('row' in r.st) {
        const row = opt.namedTensors().get(`row.${name}`)!.data;
        r.st.row!.forEach((x, i) => assert.ok(Math.abs(row[i]! - x) <= 1e-12 * Math.abs(x), `row.${name}[${i}] ${row[i]} vs ${x}`));
      }
    }
    assert.ok(worst < 1e-12, `parameters differ from the reference by ${worst}`);
    assert.equal(opt.t, 4);
  });
}

test('Adafactor keeps n + m second-moment values per matrix (AdamW keeps 2 n m)', () => {
  const layout = new Layout([{ name: 'w', shape: [256, 1024] }, { name: 'b', shape: [1024] }]);
  const opt = new Adafactor(FlatBuffer.zeros(layout));
  assert.equal(opt.stateBytes, 4 * (256 + 1024 + 1024));
  const adamw = 2 * 4 * (256 * 1024 + 1024);
  assert.ok(opt.stateBytes / adamw < 0.01, `${opt.stateBytes} vs AdamW's ${adamw} bytes`);
  assert.throws(() => new Adafactor(FlatBuffer.zeros(layout), { decay: 0.5 }), /decay must be negative/);
});
