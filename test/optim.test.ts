/**
 * Optimizers over flat buffers against plain float64 JavaScript loops that follow torch's update
 * rules line by line (torch.optim.AdamW, torch.optim.SGD, clip_grad_norm_).
 *
 * Tolerances, per element, relative with a floor of 1 (|a - r| <= tol max(1, |r|)): float64
 * buffers 1e-14 (measured: <= 1.2e-16; only the norm's summation order differs); float32 buffers,
 * against the float64 reference started from the same float32 values and fed the same float32
 * gradients, 1e-6 (measured: <= 3.3e-7, a few float32 roundings of 6e-8 over six steps).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdamW, cacheSize, clipGradNorm, constantLr, FlatBuffer, Layout, Rng, setThreads, SGD, warmupConstant, warmupCosine, warmupFactor } from '../src/index.js';
import type { AdamWConfig, SGDConfig } from '../src/index.js';

setThreads(1);

type FA = Float32Array | Float64Array;

const layout = new Layout([
  { name: 'fc1.weight', shape: [6, 5] },
  { name: 'fc1.bias', shape: [5] },
  { name: 'ln.weight', shape: [5] },
  { name: 'fc2.weight', shape: [5, 3] },
  { name: 'fc2.bias', shape: [3] },
]);
const noDecay = (name: string): boolean => name.endsWith('.bias') || name.startsWith('ln.');

/** A buffer of `dtype` with N(0, std^2) values in every tensor (alignment padding stays zero). */
function randomBuffer(dtype: 'float32' | 'float64', rng: Rng, std: number, lay: Layout = layout): FlatBuffer<FA> {
  const buf: FlatBuffer<FA> = dtype === 'float64' ? FlatBuffer.zeros64(lay) : FlatBuffer.zeros(lay);
  for (const s of lay.slots) for (let i = 0; i < s.size; i++) buf.data[s.offset + i] = rng.normal() * std;
  return buf;
}

/** 1 where the tensor decays, 0 elsewhere (and over padding, where p = g = 0 anyway). */
function maskOf(pred: ((n: string) => boolean) | undefined, lay: Layout = layout): Float64Array {
  const m = new Float64Array(lay.size);
  for (const s of lay.slots) if (!pred?.(s.name)) m.fill(1, s.offset, s.offset + s.size);
  return m;
}

const norm2 = (g: ArrayLike<number>): number => { let s = 0; for (let i = 0; i < g.length; i++) s += g[i]! * g[i]!; return Math.sqrt(s); };

/** clip_grad_norm_: returns the clipped copy and the norm before clipping. */
function refClip(g: Float64Array, maxNorm: number | undefined): { g: Float64Array; norm: number } {
  const norm = norm2(g);
  if (maxNorm === undefined) return { g, norm };
  const scale = Math.min(1, maxNorm / (norm + 1e-6));
  return { g: g.map((x) => x * scale), norm };
}

/** torch.optim.AdamW's single-tensor step, in float64, in place on p, m, v. */
function refAdamW(p: Float64Array, m: Float64Array, v: Float64Array, g0: Float64Array, t: number, lr: number, cfg: AdamWConfig, lay: Layout = layout): number {
  const [b1, b2, eps, wd] = [cfg.beta1 ?? 0.9, cfg.beta2 ?? 0.999, cfg.eps ?? 1e-8, cfg.weightDecay ?? 0.01];
  const { g, norm } = refClip(g0, cfg.clipNorm);
  const mask = maskOf(cfg.noDecay, lay);
  const stepSize = lr / (1 - b1 ** t);
  const bc2Sqrt = Math.sqrt(1 - b2 ** t);
  for (let i = 0; i < p.length; i++) {
    if (mask[i]) p[i] = p[i]! * (1 - lr * wd);
    m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
    v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
    p[i] = p[i]! - stepSize * (m[i]! / (Math.sqrt(v[i]!) / bc2Sqrt + eps));
  }
  return norm;
}

/** torch.optim.SGD's single-tensor step, in float64, in place on p and buf (null until step 1). */
function refSGD(p: Float64Array, state: { buf: Float64Array | null }, g0: Float64Array, lr: number, cfg: SGDConfig): number {
  const [mu, damp, wd] = [cfg.momentum ?? 0, cfg.dampening ?? 0, cfg.weightDecay ?? 0];
  const { g, norm } = refClip(g0, cfg.clipNorm);
  const mask = maskOf(cfg.noDecay);
  const d = g.map((x, i) => (wd !== 0 ? x + wd * mask[i]! * p[i]! : x));
  if (mu !== 0) {
    if (state.buf === null) state.buf = d.slice();
    else for (let i = 0; i < d.length; i++) state.buf[i] = mu * state.buf[i]! + (1 - damp) * d[i]!;
    for (let i = 0; i < d.length; i++) d[i] = cfg.nesterov ? d[i]! + mu * state.buf[i]! : state.buf[i]!;
  }
  for (let i = 0; i < p.length; i++) p[i] = p[i]! - lr * d[i]!;
  return norm;
}

/** Largest |a - r| / max(1, |r|) over all elements. */
function maxErr(a: ArrayLike<number>, r: ArrayLike<number>): number {
  assert.equal(a.length, r.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i]! - r[i]!) / Math.max(1, Math.abs(r[i]!)));
  return e;
}

const TOL = { float64: 1e-14, float32: 1e-6 };
const STEPS = 6;
/** A varying lr, so a wrong per-step scalar would show. */
const lrAt = (base: number, step: number): number => base * (1 + 0.5 * Math.sin(step));

const adamCases: { name: string; cfg: AdamWConfig }[] = [
  { name: 'defaults (wd 0.01)', cfg: { lr: 1e-2 } },
  { name: 'no weight decay, betas (0.9, 0.95)', cfg: { lr: 3e-2, weightDecay: 0, beta2: 0.95 } },
  { name: 'wd 0.1 with noDecay and clipping at 1 (active)', cfg: { lr: 1e-2, weightDecay: 0.1, noDecay, clipNorm: 1 } },
  { name: 'clipping at 100 (inactive), eps 1e-6', cfg: { lr: 1e-2, clipNorm: 100, eps: 1e-6 } },
];

for (const dtype of ['float64', 'float32'] as const) {
  for (const { name, cfg } of adamCases) {
    test(`AdamW ${dtype}, ${name}: ${STEPS} steps match the float64 reference`, async () => {
      const rng = new Rng(7);
      const params = randomBuffer(dtype, rng, 1);
      const opt = new AdamW(params, cfg);
      const p = Float64Array.from(params.data);
      const [m, v] = [new Float64Array(layout.size), new Float64Array(layout.size)];
      const weightView = params.view('fc1.weight');
      for (let t = 1; t <= STEPS; t++) {
        const grads = randomBuffer(dtype, rng, t % 2 ? 1 : 0.01);
        const gBefore = grads.data.slice();
        const lr = lrAt(cfg.lr, t);
        const { gradNorm } = await opt.step(grads, lr);
        const refNorm = refAdamW(p, m, v, Float64Array.from(grads.data), t, lr, cfg);
        assert.ok(Math.abs(gradNorm - refNorm) <= TOL[dtype] * refNorm, `step ${t}: gradNorm ${gradNorm} vs ${refNorm}`);
        assert.deepEqual(grads.data, gBefore, 'the gradient buffer is not written');
      }
      assert.equal(opt.t, STEPS);
      const moments = await opt.stateVectors();
      for (const [what, got, want] of [['p', params.data, p], ['m', moments.m.data, m], ['v', moments.v.data, v]] as const) {
        const e = maxErr(got, want);
        assert.ok(e <= TOL[dtype], `${what}: max error ${e} > ${TOL[dtype]}`);
      }
      // The view taken before the first step sees the updated values (set() in place).
      assert.equal(weightView[3], params.data[params.layout.slot('fc1.weight').offset + 3]);
      assert.ok(maxErr(p, randomBuffer(dtype, new Rng(7), 1).data) > 1e-3, 'the parameters moved');
    });
  }
}

test('AdamW and SGD over several chunks (2 full chunks and a ragged tail) match the float64 reference', async () => {
  // CHUNK_PER_THREAD elements per chunk at one thread: 600,000 elements run as 262,144 x 2 + 75,712.
  const big = new Layout([{ name: 'w', shape: [600, 1000] }, { name: 'b', shape: [7] }]);
  for (const dtype of ['float64', 'float32'] as const) {
    const rng = new Rng(11);
    const params = randomBuffer(dtype, rng, 1, big);
    const sgdParams = new FlatBuffer(big, params.data.slice());
    const cfg: AdamWConfig = { lr: 1e-2, weightDecay: 0.1, clipNorm: 1 };
    const sgdCfg: SGDConfig = { lr: 1e-2, momentum: 0.9, clipNorm: 1 };
    const [opt, sgd] = [new AdamW(params, cfg), new SGD(sgdParams, sgdCfg)];
    const p = Float64Array.from(params.data);
    const ps = Float64Array.from(sgdParams.data);
    const [m, v] = [new Float64Array(big.size), new Float64Array(big.size)];
    const state = { buf: null as Float64Array | null };
    for (let t = 1; t <= 3; t++) {
      const grads = randomBuffer(dtype, rng, 1, big);
      await opt.step(grads);
      await sgd.step(grads);
      refAdamW(p, m, v, Float64Array.from(grads.data), t, cfg.lr, cfg, big);
      refSGD(ps, state, Float64Array.from(grads.data), sgdCfg.lr, sgdCfg);
    }
    assert.ok(maxErr(params.data, p) <= TOL[dtype], `AdamW ${dtype}: max error ${maxErr(params.data, p)}`);
    assert.ok(maxErr(sgdParams.data, ps) <= TOL[dtype], `SGD ${dtype}: max error ${maxErr(sgdParams.data, ps)}`);
    assert.equal(opt.compiles, 2, 'one graph for full chunks, one for the tail');
  }
});

test('AdamW noDecay: masked tensors see no decay, others decay by exactly (1 - lr wd)', async () => {
  const params = randomBuffer('float64', new Rng(1), 1);
  const before = params.data.slice();
  const opt = new AdamW(params, { lr: 0.5, weightDecay: 0.2, noDecay });
  // Zero gradients: m = v = 0, so the Adam term is 0 / (0 + eps) = 0 and only decay acts.
  await opt.step(FlatBuffer.zeros64(layout));
  for (const s of layout.slots) {
    const f = noDecay(s.name) ? 1 : 1 - 0.5 * 0.2;
    for (let i = s.offset; i < s.offset + s.size; i++) assert.equal(params.data[i], before[i]! * f, `${s.name}[${i - s.offset}]`);
  }
});

const sgdCases: { name: string; cfg: SGDConfig }[] = [
  { name: 'plain (no momentum)', cfg: { lr: 0.1 } },
  { name: 'momentum 0.9', cfg: { lr: 0.05, momentum: 0.9 } },
  { name: 'nesterov 0.9, wd 1e-2', cfg: { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-2 } },
  { name: 'momentum 0.8, dampening 0.3, wd 0.1 with noDecay, clipping at 1', cfg: { lr: 0.05, momentum: 0.8, dampening: 0.3, weightDecay: 0.1, noDecay, clipNorm: 1 } },
  { name: 'nesterov, clipping at 0.5', cfg: { lr: 0.05, momentum: 0.9, nesterov: true, clipNorm: 0.5 } },
];

for (const dtype of ['float64', 'float32'] as const) {
  for (const { name, cfg } of sgdCases) {
    test(`SGD ${dtype}, ${name}: ${STEPS} steps match the float64 reference`, async () => {
      const rng = new Rng(11);
      const params = randomBuffer(dtype, rng, 1);
      const opt = new SGD(params, cfg);
      const p = Float64Array.from(params.data);
      const state = { buf: null as Float64Array | null };
      for (let t = 1; t <= STEPS; t++) {
        const grads = randomBuffer(dtype, rng, 1);
        const lr = lrAt(cfg.lr, t);
        const { gradNorm } = await opt.step(grads, lr);
        const refNorm = refSGD(p, state, Float64Array.from(grads.data), lr, cfg);
        assert.ok(Math.abs(gradNorm - refNorm) <= TOL[dtype] * refNorm, `step ${t}: gradNorm ${gradNorm} vs ${refNorm}`);
      }
      const e = maxErr(params.data, p);
      assert.ok(e <= TOL[dtype], `p: max error ${e} > ${TOL[dtype]}`);
      const { momentum } = await opt.stateVectors();
      if (state.buf) {
        const eb = maxErr(momentum!.data, state.buf);
        assert.ok(eb <= TOL[dtype], `momentum buffer: max error ${eb}`);
      } else assert.equal(momentum, undefined);
    });
  }
}

test('SGD: nesterov without momentum is refused', () => {
  assert.throws(() => new SGD(FlatBuffer.zeros(layout), { lr: 0.1, nesterov: true }), /nesterov needs momentum > 0/);
});

for (const dtype of ['float64', 'float32'] as const) {
  test(`clipGradNorm ${dtype}: scales in place to maxNorm and returns the norm before clipping`, async () => {
    const grads = randomBuffer(dtype, new Rng(3), 1);
    const g = Float64Array.from(grads.data);
    const view = grads.view('fc2.weight');
    const norm = await clipGradNorm(grads, 2);
    const ref = refClip(g, 2);
    assert.ok(Math.abs(norm - ref.norm) <= TOL[dtype] * ref.norm, `norm ${norm} vs ${ref.norm}`);
    assert.ok(maxErr(grads.data, ref.g) <= TOL[dtype]);
    assert.ok(Math.abs(norm2(grads.data) - 2) < 1e-5, 'clipped to norm 2 (less 1e-6 relative)');
    assert.equal(view[0], grads.data[layout.slot('fc2.weight').offset], 'views stay valid');
    // Under the threshold: unchanged, bit for bit.
    const small = grads.data.slice();
    assert.ok(Math.abs((await clipGradNorm(grads, 10)) - norm2(small)) < 1e-5);
    assert.deepEqual(grads.data, small);
  });
}

test('AdamW compiles its update once: program cache and trace count stay flat over many steps', async () => {
  const rng = new Rng(5);
  const params = randomBuffer('float32', rng, 1);
  const opt = new AdamW(params, { lr: 1e-3, weightDecay: 0.1, noDecay, clipNorm: 1 });
  const grads = randomBuffer('float32', rng, 1);
  const schedule = warmupCosine({ lr: 1e-3, warmupSteps: 5, totalSteps: 30, warmup: 'step+1' });
  await opt.step(grads, schedule(0));
  const cached = cacheSize();
  for (let step = 1; step < 30; step++) {
    grads.data[0] = rng.normal();
    await opt.step(grads, schedule(step));
  }
  assert.equal(opt.compiles, 1);
  assert.equal(cacheSize(), cached, 'no new program after the first step');
  // Another AdamW of the same structure, other hyperparameters: the same session serves it.
  const other = new AdamW(randomBuffer('float32', rng, 1), { lr: 5e-2, beta1: 0.8, beta2: 0.9, eps: 1e-6, weightDecay: 0.3, noDecay: () => false, clipNorm: 3 });
  for (let i = 0; i < 3; i++) await other.step(grads);
  assert.equal(cacheSize(), cached, 'the session is shared across instances');
});

test('AdamW state()/loadState(): resuming from a snapshot reproduces the run bit for bit', async () => {
  const rng = new Rng(9);
  const gradsSeq = Array.from({ length: 5 }, () => randomBuffer('float32', rng, 1));
  const cfg: AdamWConfig = { lr: 1e-2, weightDecay: 0.1, clipNorm: 1, noDecay };
  const params = randomBuffer('float32', new Rng(1), 1);
  const opt = new AdamW(params, cfg);
  for (const g of gradsSeq.slice(0, 3)) await opt.step(g);
  const snapP = params.data.slice();
  const snap = await opt.state();
  assert.equal(snap.t, 3);
  assert.ok(snap.m !== (await opt.stateVectors()).m.data, 'state() copies');
  for (const g of gradsSeq.slice(3)) await opt.step(g);

  const params2 = new FlatBuffer(layout, snapP.slice());
  const opt2 = new AdamW(params2, cfg);
  opt2.loadState(snap);
  for (const g of gradsSeq.slice(3)) await opt2.step(g);
  assert.deepEqual(params2.data, params.data);
  assert.deepEqual(await opt2.state(), await opt.state());
  assert.throws(() => opt2.loadState({ t: 1, m: new Float32Array(3), v: new Float32Array(3) }), /'m' has 3 elements, expected 96/);
});

test('SGD state()/loadState(): resuming from a snapshot reproduces the run bit for bit', async () => {
  const rng = new Rng(10);
  const gradsSeq = Array.from({ length: 4 }, () => randomBuffer('float64', rng, 1));
  const cfg: SGDConfig = { lr: 0.05, momentum: 0.9, dampening: 0.1 };
  const params = randomBuffer('float64', new Rng(2), 1);
  const opt = new SGD(params, cfg);
  for (const g of gradsSeq.slice(0, 2)) await opt.step(g);
  const snapP = params.data.slice();
  const snap = await opt.state();
  for (const g of gradsSeq.slice(2)) await opt.step(g);
  const params2 = new FlatBuffer(layout, snapP.slice());
  const opt2 = new SGD(params2, cfg);
  opt2.loadState(snap);
  for (const g of gradsSeq.slice(2)) await opt2.step(g);
  assert.deepEqual(params2.data, params.data);
});

test('optimizers refuse gradients of another dtype or layout', async () => {
  const opt = new AdamW(FlatBuffer.zeros(layout), { lr: 1e-3 });
  await assert.rejects(opt.step(FlatBuffer.zeros64(layout) as unknown as FlatBuffer<Float32Array>), /gradients are float64 but parameters are float32/);
  const other = new Layout([{ name: 'fc1.weight', shape: [6, 5] }, { name: 'x', shape: [64] }]);
  await assert.rejects(opt.step(FlatBuffer.zeros(other)), /gradient layout has 2 tensors in 96 elements, parameters have 5 in 96/);
});

test('schedules: constant, warm-up conventions and cosine decay at known steps', () => {
  const close = (a: number, b: number): void => assert.ok(Math.abs(a - b) <= 1e-15 * Math.max(1, Math.abs(b)), `${a} vs ${b}`);
  assert.equal(constantLr(3e-4)(0), 3e-4);
  assert.equal(constantLr(3e-4)(12345), 3e-4);

  // torch_brown.py: lr * min(1, (step + 1) / 100).
  const brown = warmupConstant({ lr: 1e-3, warmupSteps: 100, warmup: 'step+1' });
  close(brown(0), 1e-5);
  close(brown(49), 5e-4);
  close(brown(98), 0.99e-3);
  assert.equal(brown(99), 1e-3);
  assert.equal(brown(5000), 1e-3);
  const hf = warmupConstant({ lr: 1e-3, warmupSteps: 100, warmup: 'step' });
  assert.equal(hf(0), 0);
  close(hf(50), 5e-4);
  assert.equal(hf(100), 1e-3);
  assert.equal(warmupFactor(7, 0, 'step'), 1);

  // Cosine from step 10 to step 110 down to 1e-4; both conventions agree after warm-up.
  for (const warmup of ['step', 'step+1'] as const) {
    const s = warmupCosine({ lr: 1e-3, minLr: 1e-4, warmupSteps: 10, totalSteps: 110, warmup });
    close(s(0), warmup === 'step' ? 0 : 1e-4);
    close(s(9), warmup === 'step' ? 9e-4 : 1e-3);
    assert.equal(s(10), 1e-3);
    close(s(35), 1e-4 + 9e-4 * 0.5 * (1 + Math.SQRT1_2)); // a quarter of the way: cos(pi/4)
    close(s(60), 5.5e-4); // half way
    close(s(85), 1e-4 + 9e-4 * 0.5 * (1 - Math.SQRT1_2));
    assert.equal(s(110), 1e-4);
    assert.equal(s(1000), 1e-4);
  }
  const toZero = warmupCosine({ lr: 1, warmupSteps: 0, totalSteps: 4, warmup: 'step' });
  assert.deepEqual([0, 1, 2, 3, 4].map(toZero).map((x) => Math.round(x * 1e12) / 1e12), [1, 0.853553390593, 0.5, 0.146446609407, 0]);
  assert.throws(() => warmupCosine({ lr: 1, warmupSteps: 10, totalSteps: 10, warmup: 'step' }), /totalSteps must be an integer > warmupSteps/);
});
