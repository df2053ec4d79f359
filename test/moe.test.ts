/**
 * Mixture of experts (nn/moe.ts): the layer's gradients (router, gates, dispatch, combine, experts,
 * the aux and z losses) against float64 finite differences, with tokens dropped at capacity; the
 * capacity counted exactly on a router forced to one expert; expert parallelism on 2 and 4 thread
 * ranks and 2 under mpirun against every expert on every rank (ep 1) after 5 AdamW steps; and the
 * bad settings refused, naming the field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchThreads } from '../src/comm/threads/launch.js';
import { GPT } from '../src/nn/gpt.js';
import { bindParameters } from '../src/nn/module.js';
import { capacity, expertParallel, MoE, moeDefaults } from '../src/nn/moe.js';
import type { MoEConfig } from '../src/nn/moe.js';
import { setThreads } from '../src/runtime/executor.js';
import { grad, realize, Tensor } from '../src/tensor/tensor.js';
import * as b from '../src/ir/build.js';
import { checkGrad, normal } from './helpers/gradcheck.js';
import { mpirunRanks, skipMpi } from './helpers/mpi.js';
import type { MoeRankArgs, MoeRankResult } from './moe_rank.js';

setThreads(1);

const [S, d, E] = [8, 4, 4];

/** The layer as a function of (x, router, w1, b1, w2, b2): y plus its weighted aux + z losses on every element. */
function layer(c: MoEConfig): (...t: Tensor[]) => Tensor {
  const moe = new MoE(d, { auxLoss: 1, zLoss: 1, ...c }, 0.5, 0.5);
  return (x, wr, w1, b1, w2, b2) => {
    moe.router.weight.bind(wr!);
    moe.w1.bind(w1!); moe.b1.bind(b1!); moe.w2.bind(w2!); moe.b2.bind(b2!);
    const y = moe.forward(x!);
    return y.add(moe.auxTerm!);
  };
}

const inputs = [normal([S, d]), normal([d, E], 1.5), normal([E, d, 4 * d], 0.5), normal([E, 1, 4 * d], 0.2), normal([E, 4 * d, d], 0.5), normal([E, 1, d], 0.2)];

test('gradient: top-2 MoE with tokens dropped at capacity (factor 0.5: 2 slots per expert for 16 assignments), w.r.t. x, the router and every expert weight', async () => {
  assert.equal(capacity(moeDefaults({ experts: E, topK: 2, capacityFactor: 0.5 }), S), 2);
  await checkGrad('moe top-2, capacity 2', inputs, layer({ experts: E, topK: 2, capacityFactor: 0.5 }));
});

test('gradient: top-1 (Switch) MoE without dropping (dropTokens false), w.r.t. x, the router and every expert weight', async () => {
  assert.equal(capacity(moeDefaults({ experts: E, topK: 1, dropTokens: false }), S), S);
  await checkGrad('moe top-1, no drop', inputs, layer({ experts: E, topK: 1, dropTokens: false }));
});

test('capacity: a router that prefers expert 0 for every token keeps exactly its capacity and drops the rest, which pass through as 0', async () => {
  const tokens = 16;
  const moe = new MoE(d, { experts: E, topK: 2, capacityFactor: 1 }, 0.5, 0.5);
  const bound = bindParameters(moe, { seed: 3 });
  // Every token's logits: expert 0 highest, 1 next, 2 and 3 equal below.
  const w = bound.flat.view('router.w');
  w.fill(0);
  for (let i = 0; i < d; i++) { w[i * E + 0] = 2; w[i * E + 1] = 1; }
  const x = new Tensor(b.constant(Float32Array.from({ length: tokens * d }, (_, i) => 0.5 + (i % 3) * 0.25), 'float32', [tokens, d]));
  const y = moe.forward(x);
  const stats = moe.stats.pending!;
  await realize(y, stats);
  // C = ceil(1.0 x 2 x 16 / 4) = 8: expert 0 keeps the first 8 first choices, expert 1 the first 8 second choices.
  const C = capacity(moe.c, tokens);
  assert.equal(C, 8);
  const st = [...(stats.value.data as Float32Array)];
  assert.deepEqual(st.slice(0, E), [16, 16, 0, 0], 'tokens routed to each expert');
  assert.deepEqual(st.slice(E, 2 * E), [8, 8, 0, 0], 'tokens kept by each expert');
  assert.equal(st[2 * E], 0.5, 'dropped fraction: 16 of 32 assignments');
  // The losses from their formulas: logits (2 s, s, 0, 0) with s a token's sum of x; every choice
  // counted, f = (1/2, 1/2, 0, 0), so aux = E (P_0 + P_1) / 2; z = mean(logsumexp^2).
  const xs = x.value.data as Float32Array;
  let [p01, z] = [0, 0];
  for (let t = 0; t < tokens; t++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += xs[t * d + i]!;
    const l = [2 * s, s, 0, 0];
    const lse = Math.log(l.reduce((a, v) => a + Math.exp(v), 0));
    p01 += (Math.exp(l[0]! - lse) + Math.exp(l[1]! - lse)) / tokens;
    z += (lse * lse) / tokens;
  }
  assert.ok(Math.abs(st[2 * E + 1]! - (E * p01) / 2) < 1e-5, `aux ${st[2 * E + 1]} vs ${(E * p01) / 2}`);
  assert.ok(Math.abs(st[2 * E + 2]! - z) < 1e-4 * z, `z-loss ${st[2 * E + 2]} vs ${z}`);
  const out = y.value.data as Float32Array;
  for (let t = 0; t < tokens; t++) {
    const row = out.subarray(t * d, (t + 1) * d);
    const zero = row.every((v) => v === 0);
    assert.equal(zero, t >= C, `token ${t}: ${t >= C ? 'dropped by both experts: 0' : 'kept by both experts'}`);
  }
});

test('noisy gating: in training the router logits get learned Gaussian noise (outputs vary run to run, the noise weights get a gradient); in evaluation none', async () => {
  const moe = new MoE(d, { experts: E, topK: 2, noisy: true, dropTokens: false }, 0.5, 0.5);
  bindParameters(moe, { seed: 5 });
  const x = new Tensor(b.constant(Float32Array.from({ length: S * d }, (_, i) => Math.sin(i)), 'float32', [S, d]));
  const run = async (): Promise<Float32Array> => { const y = moe.forward(x); await realize(y); return Float32Array.from(y.value.data as Float32Array); };
  const [a, c] = [await run(), await run()];
  assert.ok(a.some((v, i) => v !== c[i]), 'two training forwards route with different noise');
  const y = moe.forward(x);
  const [gn] = grad(y.mul(y).sum(), [moe.noise!.weight.t]);
  await realize(gn!);
  assert.ok((gn!.value.data as Float32Array).some((v) => v !== 0), 'the noise weights learn');
  moe.eval();
  const clean = new MoE(d, { experts: E, topK: 2, dropTokens: false }, 0.5, 0.5);
  bindParameters(clean, { seed: 5 });
  const [e1, e2] = [moe.forward(x), clean.forward(x)];
  await realize(e1, e2);
  assert.deepEqual([...(e1.value.data as Float32Array)], [...(e2.value.data as Float32Array)], 'evaluation: no noise (the same as a router without it)');
});

test('bad settings name the field: topK > experts, experts not divisible by ep, capacity factor <= 0, every', () => {
  assert.throws(() => new GPT({ vocab: 16, ctx: 4, d: 8, layers: 2, heads: 2, moe: { experts: 2, topK: 3 } }), /model\.moe\.topK \(3\) must be at most model\.moe\.experts \(2\)/);
  assert.throws(() => moeDefaults({ experts: 4, capacityFactor: -1 }), /model\.moe\.capacityFactor must be > 0, got -1/);
  assert.throws(() => moeDefaults({ experts: 4, capacityFactor: 0 }), /model\.moe\.capacityFactor must be > 0, got 0/);
  assert.throws(() => moeDefaults({ experts: 0 }), /model\.moe\.experts must be a positive integer, got 0/);
  assert.throws(() => moeDefaults({ experts: 4, every: 0 }), /model\.moe\.every must be a positive integer, got 0/);
  const gpt = new GPT({ vocab: 16, ctx: 4, d: 8, layers: 2, heads: 2, moe: { experts: 6 } });
  assert.throws(() => expertParallel(gpt, { axis: 'ep', size: 4, index: 0 }), /expert parallel: ep = 4 must divide model\.moe\.experts \(6\)/);
});

const entry = new URL('./moe_rank.js', import.meta.url);
const STEPS = 5;
const run = (nproc: number, a: Omit<MoeRankArgs, 'steps'>): Promise<MoeRankResult[]> =>
  launchThreads<MoeRankResult>({ nproc, entry, args: { ...a, steps: STEPS } satisfies MoeRankArgs, timeoutMs: 120_000 });

/** Every rank's losses and parameters equal the reference's (rank 0 of ep 1) to `tol` relative. */
function assertSame(ranks: readonly MoeRankResult[], ref: MoeRankResult, what: string, tol = 1e-5): void {
  const max = Math.max(...Object.values(ref.params).flat().map(Math.abs));
  for (const [r, x] of ranks.entries()) {
    x.losses.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]!) <= tol * ref.losses[i]!, `${what} rank ${r}: step ${i + 1} loss ${l} vs ${ref.losses[i]}`));
    assert.deepEqual(Object.keys(x.params).sort(), Object.keys(ref.params).sort());
    for (const [k, v] of Object.entries(x.params)) {
      const err = Math.max(...v.map((p, i) => Math.abs(p - ref.params[k]![i]!)));
      assert.ok(err / max < tol, `${what} rank ${r}: '${k}' differs by ${err / max} (relative)`);
    }
    x.perExpert.forEach((p, i) => assert.deepEqual(p, ref.perExpert[i], `${what} rank ${r}: step ${i + 1} tokens per expert`));
    // The first step's gradients (AdamW would hide a gradient off by a constant factor).
    for (const [k, g] of Object.entries(x.firstGrads)) {
      const want = ref.firstGrads[k]!;
      const scale = Math.max(...want.map(Math.abs)) || 1;
      const err = Math.max(...g.map((v, i) => Math.abs(v - want[i]!)));
      assert.ok(err / scale < tol, `${what} rank ${r}: step 1 gradient of '${k}' differs by ${err / scale} (relative to its largest)`);
    }
  }
}

const refs = new Map<number, Promise<MoeRankResult>>();
const reference = (nproc: number): Promise<MoeRankResult> => {
  if (!refs.has(nproc)) refs.set(nproc, run(nproc, { ep: 1, topK: 2, capacityFactor: 1 }).then((r) => r[0]!));
  return refs.get(nproc)!;
};

for (const [nproc, ep] of [[2, 2], [4, 4], [4, 2]] as const) {
  test(`threads: ep ${ep} on ${nproc} ranks equals every expert on every rank (losses, parameters, tokens per expert over 5 AdamW steps; tokens dropped)`, async () => {
    const ref = await reference(nproc);
    assert.ok(ref.dropped.every((f) => f > 0), `capacity drops tokens in every step (dropped ${ref.dropped.join(', ')})`);
    assertSame(await run(nproc, { ep, topK: 2, capacityFactor: 1 }), ref, `ep ${ep} of ${nproc}`);
  });
}

test('mpi: ep 2 on 2 ranks equals every expert on every rank', { skip: skipMpi }, async () => {
  const args: MoeRankArgs = { ep: 2, topK: 2, capacityFactor: 1, steps: STEPS };
  const ranks = mpirunRanks<MoeRankResult>(2, new URL('./moe_mpi.js', import.meta.url), args);
  assertSame(ranks, await reference(2), 'mpi ep 2');
});
