/**
 * The general trainer: any model, dataset and loss through `fit` and the config CLI. The GPT's
 * per-step losses are those of weft before the general trainer (a golden curve); a CNN with
 * BatchNorm resumes exactly (weights, running statistics, optimizer, sampler and augmentation);
 * callbacks see every step and evaluation and can stop a run; BatchNorm's running statistics
 * follow PyTorch's convention (momentum 0.1, unbiased variance).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bindParameters, BatchNorm2d, Conv2d, earlyStopping, fit, Flatten, gradStep, ImageDataset, Linear, loadCheckpoint, MaxPool2d,
  parseConfig, ReLU, Rng, Sequential, setThreads, tensor, Trainer, FlatBuffer, accuracy, topK,
} from '../src/index.js';
import type { Tensor } from '../src/index.js';

setThreads(1);
const tmp = (): string => mkdtempSync(join(tmpdir(), 'weft-general-'));

test('golden: the tiny GPT trains with the per-step losses of weft before the general trainer', async () => {
  const golden = JSON.parse(readFileSync(new URL('../../test/golden/lm_tiny.json', import.meta.url), 'utf8')) as {
    config: Record<string, unknown>; losses: number[]; valLosses: { step: number; val_loss: number }[];
  };
  const dir = tmp();
  try {
    const r = await new Trainer(parseConfig({ ...golden.config, out: dir }, 'golden')).run({ out: null });
    assert.equal(r.losses.length, golden.losses.length);
    // Same kernels on the same CPU give the same bits; other CPUs round MLAS's sums differently.
    r.losses.forEach((l, i) => assert.ok(Math.abs(l - golden.losses[i]!) <= 1e-5 * golden.losses[i]!, `step ${i + 1}: ${l} vs golden ${golden.losses[i]}`));
    r.valLosses.forEach((v, i) => assert.ok(Math.abs(v.val_loss - golden.valLosses[i]!.val_loss) <= 1e-5 * v.val_loss, `val at ${v.step}: ${v.val_loss} vs ${golden.valLosses[i]!.val_loss}`));
    assert.ok(Math.abs(r.evals.at(-1)!.metrics['perplexity']! - Math.exp(r.valLosses.at(-1)!.val_loss)) < 1e-9, 'perplexity = exp(val_loss)');
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

/** 8x8 one-channel images whose label says which half (left or right) is brighter, with a margin. */
function halves(n: number, seed: number): ImageDataset {
  const rng = new Rng(seed);
  const pixels = new Uint8Array(n * 64);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const y = rng.int(2);
    labels[i] = y;
    for (let r = 0; r < 8; r++) for (let c = 0; c < 8; c++) {
      const bright = (c < 4) === (y === 0);
      pixels[i * 64 + r * 8 + c] = Math.min(255, rng.int(120) + (bright ? 90 : 0));
    }
  }
  return new ImageDataset({ pixels, labels, shape: [1, 8, 8], name: `halves${seed}` });
}

const smallCnn = (): Sequential => new Sequential([
  new Conv2d(1, 4, 3, { padding: 1, bias: false }), new BatchNorm2d(4), new ReLU(), new MaxPool2d(2), new Flatten(), new Linear(4 * 4 * 4, 2),
]);

test('fit: a CNN with BatchNorm learns, reports accuracy, and resumes exactly (weights, running stats, augmentation)', async () => {
  const [a, b] = [tmp(), tmp()];
  const train = halves(96, 1).withTransform({ randomCrop: { padding: 1 } });
  const test_ = halves(40, 2);
  const opts = (out: string): Parameters<typeof fit>[1] => ({ train, eval: test_, batch: 8, steps: 10, lr: 1e-2, metrics: ['accuracy'], out, evalEvery: 5, checkpointEvery: 5, log: null });
  try {
    const full = await fit(smallCnn(), opts(a));
    const stopAt5 = await fit(smallCnn(), { ...opts(b), steps: 5 });
    assert.deepEqual(stopAt5.losses, full.losses.slice(0, 5));
    const rest = await fit(smallCnn(), { ...opts(b), resume: true });
    assert.deepEqual(rest.losses, full.losses.slice(5), 'steps 6..10 after a resume equal the uninterrupted run');
    assert.deepEqual(rest.evals.at(-1), full.evals.at(-1));
    const acc = full.evals.at(-1)!.metrics['accuracy']!;
    assert.ok(acc >= 0.9, `accuracy ${acc} on an easy task`);
    assert.ok(full.losses[9]! < full.losses[0]!, 'the loss falls');
    const ck = loadCheckpoint(a);
    const rm = ck.weights.get('1.running_mean')!;
    assert.ok(rm && rm.data.some((x) => x !== 0), 'BatchNorm running means are checkpointed and moved');
    assert.deepEqual([...loadCheckpoint(b).weights.get('1.running_var')!.data], [...ck.weights.get('1.running_var')!.data]);
    const line = JSON.parse(readFileSync(join(a, 'metrics.jsonl'), 'utf8').trim().split('\n')[4]!) as Record<string, number>;
    assert.ok(line['accuracy'] !== undefined && line['val_loss'] !== undefined && line['examples_per_s']! > 0, JSON.stringify(line));
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('callbacks: every step and evaluation is seen, and earlyStopping ends the run with a checkpoint', async () => {
  const dir = tmp();
  try {
    const seen: number[] = [];
    const evals: number[] = [];
    let ended = -1;
    // No BatchNorm: with lr 0 nothing changes, so no evaluation improves on the first.
    const r = await fit(new Sequential([new Flatten(), new Linear(64, 2)]), {
      train: halves(64, 3), eval: halves(16, 4), batch: 8, steps: 40, lr: 0, metrics: ['accuracy'], out: dir, evalEvery: 2, log: null,
      callbacks: [
        { onStepEnd: (m) => { seen.push(m.step); }, onEvalEnd: (_m, c) => { evals.push(c.step); }, onTrainEnd: (res) => { ended = res.steps; } },
        earlyStopping({ monitor: 'val_loss', patience: 2 }),
      ],
    });
    // lr 0: the loss never improves, so the run stops after the first evaluation plus 2 more.
    assert.deepEqual(evals, [2, 4, 6]);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
    assert.equal(r.steps, 6);
    assert.equal(ended, 6);
    assert.equal(loadCheckpoint(dir).step, 6, 'the stopped run checkpointed its last step');
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('BatchNorm2d: running statistics follow PyTorch (momentum 0.1, unbiased variance); eval normalizes with them', async () => {
  const bn = new BatchNorm2d(3);
  const model = new Sequential([bn]);
  const params = bindParameters(model);
  const grads = FlatBuffer.zeros(params.flat.layout);
  const rng = new Rng(5);
  const [N, C, H, W] = [4, 3, 2, 5];
  const x = Float32Array.from({ length: N * C * H * W }, () => rng.normal() * 2 + 1);
  const step = gradStep(params, grads, (t: Tensor | undefined) => model.forward(t!).mul(t!).mean());
  const feed = { data: x, shape: [N, C, H, W], dtype: 'float32' as const };
  await step([feed]);
  await step([feed]);
  const n = N * H * W;
  const [rm, rv] = [bn.runningMean.t.value.data as Float32Array, bn.runningVar.t.value.data as Float32Array];
  for (let c = 0; c < C; c++) {
    let s = 0, ss = 0;
    for (let i = 0; i < N; i++) for (let j = 0; j < H * W; j++) { const v = x[(i * C + c) * H * W + j]!; s += v; ss += v * v; }
    const mean = s / n;
    const unbiased = (ss - n * mean * mean) / (n - 1);
    const m2 = 0.9 * (0.9 * 0 + 0.1 * mean) + 0.1 * mean;
    const v2 = 0.9 * (0.9 * 1 + 0.1 * unbiased) + 0.1 * unbiased;
    assert.ok(Math.abs(rm[c]! - m2) < 1e-5, `running_mean[${c}] ${rm[c]} vs ${m2}`);
    assert.ok(Math.abs(rv[c]! - v2) < 1e-4 * v2, `running_var[${c}] ${rv[c]} vs ${v2}`);
  }
  model.eval();
  const y = await model.forward(tensor(x, [N, C, H, W])).data() as Float32Array;
  const k = (1 * C + 2) * H * W + 3; // n=1, c=2
  const want = (x[k]! - rm[2]!) / Math.sqrt(rv[2]! + 1e-5);
  assert.ok(Math.abs(y[k]! - want) < 1e-5, `eval output ${y[k]} vs ${want}`);
});

test('metrics: accuracy and top-k count the rank of the label\'s score', async () => {
  const rng = new Rng(9);
  const [N, C] = [50, 7];
  const scores = Float32Array.from({ length: N * C }, () => rng.normal());
  const labels = BigInt64Array.from({ length: N }, () => BigInt(rng.int(C)));
  const s = tensor(scores, [N, C]);
  const l = tensor(labels, [N], 'int64');
  const rankOf = (i: number): number => { const t = scores[i * C + Number(labels[i])]!; let r = 0; for (let c = 0; c < C; c++) if (scores[i * C + c]! > t) r++; return r; };
  for (const k of [1, 3]) {
    let hits = 0;
    for (let i = 0; i < N; i++) if (rankOf(i) < k) hits++;
    const got = await (k === 1 ? accuracy() : topK(k))(s, l).item();
    assert.ok(Math.abs(got - hits / N) < 1e-6, `top${k}: ${got} vs ${hits / N}`);
  }
  assert.throws(() => topK(8)(s, l), /k \(8\) exceeds the 7 classes/);
});

test('accumulation: 2 micro-batches of 4 take the step of one batch of 8 (a CNN without BatchNorm)', async () => {
  const [a, b] = [tmp(), tmp()];
  const net = (): Sequential => new Sequential([new Conv2d(1, 3, 3, { padding: 1 }), new ReLU(), new MaxPool2d(2), new Flatten(), new Linear(3 * 4 * 4, 2)]);
  try {
    const common = { train: halves(32, 7), steps: 2, lr: 1e-2, log: null } as const;
    const one = await fit(net(), { ...common, batch: 8, out: a });
    const two = await fit(net(), { ...common, batch: 4, accumulate: 2, out: b });
    one.losses.forEach((l, i) => assert.ok(Math.abs(l - two.losses[i]!) < 1e-6, `step ${i + 1}: ${two.losses[i]} vs ${l}`));
    const [wa, wb] = [loadCheckpoint(a).weights.get('4.w')!.data, loadCheckpoint(b).weights.get('4.w')!.data];
    let d = 0;
    wa.forEach((v, i) => { d = Math.max(d, Math.abs(v - wb[i]!)); });
    assert.ok(d < 1e-6, `weights differ by ${d}`);
    assert.ok(one.losses[1] !== one.losses[0], 'the step moved the model');
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('Adafactor as train.optimizer: the tiny GPT learns and resumes exactly (factored moments checkpointed)', async () => {
  const [a, b] = [tmp(), tmp()];
  const cfg = (out: string, steps = 8): ReturnType<typeof parseConfig> => parseConfig({
    out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
    train: { steps, batch: 4, optimizer: 'adafactor', lr: 5e-2, warmup: 2, schedule: 'constant', weightDecay: 0, adafactorBeta1: 0.9, threads: 1 },
    eval: { every: 4, windows: 4 }, checkpoint: { every: 4, keep: 2 }, sample: { tokens: 0 },
  }, 'adafactor test');
  try {
    const full = await new Trainer(cfg(a)).run({ out: null });
    await new Trainer(cfg(b)).run({ out: null, stopAfter: 5 });
    const rest = await new Trainer(cfg(b)).run({ out: null, resume: true });
    assert.deepEqual(rest.losses, full.losses.slice(5), 'steps 6..8 after a resume equal the uninterrupted run');
    // A relative step: updates scale with the weights' RMS (0.02 at init), so 8 steps move it slowly.
    assert.ok(full.losses[7]! < full.losses[0]! - 0.1, `the loss falls: ${full.losses[0]} -> ${full.losses[7]}`);
    const opt = loadCheckpoint(a).optimizer;
    assert.ok(opt.has('row.h0.attn.qkv.w') && opt.has('col.h0.attn.qkv.w') && opt.has('v.lnf.w') && opt.has('m.lnf.w'), [...opt.keys()].slice(0, 6).join(', '));
    assert.equal(opt.get('row.h0.attn.qkv.w')!.data.length, 32, 'a [32, 96] weight keeps 32 row statistics');
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});
