/**
 * The small benchmark GPT (architecture of ../shared/anchors/README.md) trains with AdamW, and a
 * float32 run matches a float64 replay of the same steps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW, brownText, FlatBuffer, Rng } from '../src/index.js';
import type { FloatArray } from '../src/runtime/flat.js';
import { bindParameters, GPT, GPT_PRESETS, loadStateDict, stateDict } from '../src/nn/index.js';
import type { BoundParameters } from '../src/nn/index.js';
import { gradStep } from '../src/train/step.js';

const cfg = GPT_PRESETS.small;
// A smaller batch than the benchmark's 16 keeps the test quick; the model is the small preset.
const B = 4;
const T = cfg.ctx;
// English that does not change with the repository (this test once read docs/architecture.md,
// and its threshold moved whenever the docs did).
const text = brownText().subarray(0, 100_000);

function batches(n: number, seed: number): { idx: BigInt64Array; tgt: BigInt64Array }[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const idx = new BigInt64Array(B * T);
    const tgt = new BigInt64Array(B * T);
    for (let r = 0; r < B; r++) {
      const at = rng.int(text.length - T - 1);
      for (let j = 0; j < T; j++) { idx[r * T + j] = BigInt(text[at + j]!); tgt[r * T + j] = BigInt(text[at + j + 1]!); }
    }
    return { idx, tgt };
  });
}

async function train<A extends FloatArray>(model: GPT, params: BoundParameters<A>, data: ReturnType<typeof batches>, lr: number): Promise<number[]> {
  const grads = new FlatBuffer(params.flat.layout, params.flat.data.slice().fill(0) as A);
  const opt = new AdamW(params.flat, { lr, beta2: 0.95, weightDecay: 0.1, clipNorm: 1 });
  const step = gradStep(params, grads, (idx, tgt) => model.loss(idx!, tgt!));
  const losses: number[] = [];
  for (const { idx, tgt } of data) {
    losses.push(await step([{ data: idx, shape: [B, T], dtype: 'int64' }, { data: tgt, shape: [B, T], dtype: 'int64' }]));
    await opt.step(grads);
  }
  assert.equal(step.traces, 1, 'the step is traced once');
  return losses;
}

test('the small GPT trains for 50 AdamW steps and its loss falls', async () => {
  const model = new GPT(cfg);
  const losses = await train(model, bindParameters(model, { seed: 0 }), batches(50, 1), 1e-3);
  const first = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
  const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
  assert.ok(Math.abs(losses[0]! - Math.log(256)) < 0.1, `initial loss ${losses[0]} should be near ln 256`);
  // Uniform guessing is ln 256 = 5.55 nats; byte statistics of English alone reach ~3.3.
  assert.ok(last < 3.3 && last < first - 1, `loss should fall below 3.3 nats: first 5 mean ${first}, last 5 mean ${last}`);
});

test('float32 parameters after 3 steps match a float64 replay to 1e-5 (norm-relative)', async () => {
  const [m32, m64] = [new GPT(cfg), new GPT(cfg)];
  const b32 = bindParameters(m32, { seed: 0 });
  const b64 = bindParameters(m64, { dtype: 'float64' });
  loadStateDict(b64, stateDict(b32));
  const [p32, p64] = [b32.flat, b64.flat];
  const start = Float64Array.from(p64.data);
  const data = batches(3, 2);
  const l32 = await train(m32, b32, data, 1e-3);
  const l64 = await train(m64, b64, data, 1e-3);
  let diff = 0;
  let norm = 0;
  let moved = 0;
  for (let i = 0; i < p64.data.length; i++) {
    diff += (p32.data[i]! - p64.data[i]!) ** 2;
    norm += p64.data[i]! ** 2;
    moved += (p64.data[i]! - start[i]!) ** 2;
  }
  const rel = Math.sqrt(diff / norm);
  // The steps must move the parameters far more than the tolerance, or the check proves nothing.
  assert.ok(Math.sqrt(moved / norm) > 1e-2, `parameters moved only ${Math.sqrt(moved / norm)}`);
  assert.ok(rel < 1e-5, `||p32 - p64|| / ||p64|| = ${rel}`);
  console.log(`# float64 replay: ||p32 - p64|| / ||p64|| = ${rel.toExponential(2)}, moved ${Math.sqrt(moved / norm).toExponential(2)}`);
  l32.forEach((l, i) => assert.ok(Math.abs(l - l64[i]!) < 1e-4, `loss ${i}: ${l} (float32) vs ${l64[i]} (float64)`));
});
