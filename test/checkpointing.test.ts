/**
 * Activation checkpointing (autodiff/checkpoint.ts) as a transform of the traced step: gradients
 * with 'full' and 'selective' equal 'none' (float64, 1e-9) on the tiny GPT and a CNN with
 * BatchNorm; float32 AdamW losses agree to 1e-6; the saved activation bytes follow the analytic
 * per-block counts (full keeps one [tokens, d] per block, selective nine); random ops are never
 * recomputed; DDP on 2 thread ranks and tensor parallelism on 2 ranks give the single-process
 * gradients; a step or task without units is refused, naming what is missing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CheckpointMode, CheckpointStats } from '../src/autodiff/checkpoint.js';
import { launchThreads } from '../src/comm/threads/launch.js';
import { TokenDataset } from '../src/data/dataset.js';
import { bindParameters, BatchNorm2d, Conv2d, Flatten, GPT, Linear, MaxPool2d, ReLU, scopeModules, Sequential } from '../src/nn/index.js';
import { AdamW } from '../src/optim/adamw.js';
import { opDef } from '../src/ir/registry.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { setThreads } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';
import { gradStep } from '../src/train/step.js';
import { taskCheckpointing } from '../src/train/task.js';
import { SupervisedTask } from '../src/train/tasks/supervised.js';
import { CFG, tokens } from './checkpointing_data.js';
import type { RankArgs, RankResult } from './checkpointing_rank.js';

setThreads(1);
const MODES: readonly CheckpointMode[] = ['none', 'full', 'selective'];
const UNITS = ['h*'];
const feedsOf = (x: BigInt64Array, y: BigInt64Array, B: number): { data: BigInt64Array; shape: number[]; dtype: 'int64' }[] =>
  [{ data: x, shape: [B, CFG.ctx], dtype: 'int64' }, { data: y, shape: [B, CFG.ctx], dtype: 'int64' }];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** float64 gradients and stats of the tiny GPT (`layers` blocks, optional dropout) per mode. */
async function gptGrads(layers: number, B = 2, dropout = 0): Promise<Record<CheckpointMode, { grads: Float64Array; stats: CheckpointStats }>> {
  const model = new GPT({ ...CFG, layers, dropout });
  const params = bindParameters(model, { seed: 1, dtype: 'float64' });
  scopeModules(model, UNITS);
  const { x, y } = tokens(3, B);
  const out = {} as Record<CheckpointMode, { grads: Float64Array; stats: CheckpointStats }>;
  for (const mode of MODES) {
    const g = FlatBuffer.zeros64(params.flat.layout);
    const step = gradStep(params, g, (a, b) => model.loss(a!, b!), 'fwd_bwd', { checkpointing: { mode, units: UNITS } });
    await step(feedsOf(x, y, B));
    out[mode] = { grads: g.data.slice(), stats: step.checkpoint! };
  }
  return out;
}

test('GPT float64: full and selective checkpointing give the gradients of none (1e-9), saving fewer bytes', async () => {
  const r = await gptGrads(2);
  for (const mode of ['full', 'selective'] as const) {
    const d = maxAbsDiff(r[mode].grads, r.none.grads);
    assert.ok(d <= 1e-9, `${mode}: gradients differ by ${d}`);
    assert.equal(r[mode].stats.units, 2);
    assert.ok(r[mode].stats.recomputed > 0 && r[mode].stats.gates > 0, `${mode}: ${JSON.stringify(r[mode].stats)}`);
  }
  assert.equal(r.none.stats.recomputed, 0);
  const [n, s, f] = [r.none.stats.savedBytes, r.selective.stats.savedBytes, r.full.stats.savedBytes];
  assert.ok(f < s && s < n, `saved bytes full ${f} < selective ${s} < none ${n}`);
  // Full recomputes the projections, selective keeps them (and recomputes no Gemm).
  assert.equal(r.full.stats.recomputedOps['Gemm'], 2 * 3);
  assert.equal(r.selective.stats.recomputedOps['Gemm'], undefined);
  // Both recompute attention's softmax in each block.
  assert.equal(r.full.stats.recomputedOps['Softmax'], 2);
  assert.equal(r.selective.stats.recomputedOps['Softmax'], 2);
});

test('saved activation bytes per block: full keeps one [tokens, d], selective nine (x, qkv 3d, proj d, fc1 4d)', async () => {
  const B = 2;
  const [two, three] = [await gptGrads(2, B), await gptGrads(3, B)];
  const row = B * CFG.ctx * CFG.d * 8; // one float64 [tokens, d]
  assert.equal(three.full.stats.savedBytes - two.full.stats.savedBytes, row);
  assert.equal(three.selective.stats.savedBytes - two.selective.stats.savedBytes, 9 * row);
  // Without checkpointing a block holds far more: LayerNorm inputs and outputs, q, k, v, scores...
  assert.ok(three.none.stats.savedBytes - two.none.stats.savedBytes > 15 * row);
});

test('dropout outputs are kept, never recomputed (a second draw would give another mask)', async () => {
  const model = new GPT({ ...CFG, dropout: 0.3 });
  const params = bindParameters(model, { seed: 1, dtype: 'float64' });
  scopeModules(model, UNITS);
  const { x, y } = tokens(3, 2);
  const g = FlatBuffer.zeros64(params.flat.layout);
  const step = gradStep(params, g, (a, b) => model.loss(a!, b!), 'fwd_bwd', { checkpointing: { mode: 'full', units: UNITS } });
  await step(feedsOf(x, y, 2));
  const st = step.checkpoint!;
  assert.equal(st.recomputedOps['Dropout'], undefined, JSON.stringify(st.recomputedOps));
  assert.ok(st.recomputed > 0);
});

test('CNN with BatchNorm float64: checkpointing two conv stages gives the gradients and running statistics of none', async () => {
  const stage = (i: number, o: number): Sequential => new Sequential([new Conv2d(i, o, 3, { padding: 1, bias: false }), new BatchNorm2d(o), new ReLU(), new MaxPool2d(2)]);
  const model = new Sequential([stage(1, 2), stage(2, 3), new Flatten(), new Linear(3 * 2 * 2, 4)]);
  const params = bindParameters(model, { seed: 2, dtype: 'float64' });
  scopeModules(model, ['0', '1']);
  const rng = new Rng(5);
  const x = Float64Array.from({ length: 3 * 8 * 8 }, () => rng.normal());
  const labels = BigInt64Array.from({ length: 3 }, () => BigInt(rng.int(4)));
  const startBuffers = params.buffers.data.slice();
  const run = async (mode: CheckpointMode): Promise<{ grads: Float64Array; buffers: Float64Array; stats: CheckpointStats }> => {
    params.buffers.data.set(startBuffers);
    const g = FlatBuffer.zeros64(params.flat.layout);
    const step = gradStep(params, g, (a, t) => model.forward(a!).crossEntropy(t!), 'fwd_bwd', { checkpointing: { mode, units: ['0', '1'] } });
    await step([{ data: x, shape: [3, 1, 8, 8], dtype: 'float64' }, { data: labels, shape: [3], dtype: 'int64' }]);
    return { grads: g.data.slice(), buffers: params.buffers.data.slice(), stats: step.checkpoint! };
  };
  const none = await run('none');
  for (const mode of ['full', 'selective'] as const) {
    const r = await run(mode);
    assert.ok(maxAbsDiff(r.grads, none.grads) <= 1e-9, `${mode}: gradients differ by ${maxAbsDiff(r.grads, none.grads)}`);
    assert.ok(maxAbsDiff(r.buffers, none.buffers) <= 1e-12, `${mode}: running statistics differ`);
    assert.ok(r.stats.recomputed > 0 && r.stats.savedBytes < none.stats.savedBytes, JSON.stringify(r.stats));
  }
  assert.ok(maxAbsDiff(none.buffers, startBuffers) > 0, 'the step updated the running statistics');
});

test('GPT float32: losses over 4 AdamW steps with full and selective equal none to 1e-6', async () => {
  const curves: Record<string, number[]> = {};
  for (const mode of MODES) {
    const model = new GPT(CFG);
    const params = bindParameters(model, { seed: 1 });
    scopeModules(model, UNITS);
    const grads = FlatBuffer.zeros(params.flat.layout);
    const step = gradStep(params, grads, (a, b) => model.loss(a!, b!), 'fwd_bwd', mode === 'none' ? {} : { checkpointing: { mode, units: UNITS } });
    const opt = new AdamW(params.flat, { lr: 1e-2, weightDecay: 0.1 });
    curves[mode] = [];
    for (let s = 0; s < 4; s++) {
      const { x, y } = tokens(10, 4);
      curves[mode]!.push(await step(feedsOf(x, y, 4)));
      await opt.step(grads);
    }
  }
  assert.ok(curves['none']![3]! < curves['none']![0]!, `the loss falls: ${curves['none']!.join(', ')}`);
  for (const mode of ['full', 'selective']) {
    curves[mode]!.forEach((l, i) => assert.ok(Math.abs(l - curves['none']![i]!) <= 1e-6, `${mode} step ${i}: ${l} vs ${curves['none']![i]}`));
  }
});

test('DDP, 2 thread ranks: checkpointed gradients equal one process\'s over the whole batch', async () => {
  const B = 4;
  const model = new GPT(CFG);
  const params = bindParameters(model, { seed: 1 });
  const whole = FlatBuffer.zeros(params.flat.layout);
  const { x, y } = tokens(7, B);
  await gradStep(params, whole, (a, b) => model.loss(a!, b!))(feedsOf(x, y, B));
  const scale = whole.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (const mode of ['full', 'selective'] as const) {
    const args: RankArgs = { scenario: 'ddp', mode, batch: B };
    const res = await launchThreads({ nproc: 2, entry: new URL('./checkpointing_rank.js', import.meta.url), args, timeoutMs: 60_000 }) as RankResult[];
    for (const [r, out] of res.entries()) {
      assert.ok(out.stats !== null && out.stats.recomputed > 0, `rank ${r} ${mode}: the step was transformed`);
      const d = maxAbsDiff(out.grads, whole.data);
      assert.ok(d <= 1e-6 * scale, `rank ${r} ${mode}: gradients differ by ${d} (max |g| ${scale})`);
    }
  }
});

test('tensor parallel, 2 ranks: checkpointing keeps collective outputs (no host op cloned) and the gradients', async () => {
  for (const mode of ['full', 'selective'] as const) {
    const args: RankArgs = { scenario: 'tp', mode, batch: 2 };
    const res = await launchThreads({ nproc: 2, entry: new URL('./checkpointing_rank.js', import.meta.url), args, timeoutMs: 60_000 }) as RankResult[];
    for (const [r, out] of res.entries()) {
      const ops = Object.keys(out.stats!.recomputedOps);
      // weft.Copy is an identity forward (only its backward all-reduce is a host op): cloning it is free.
      assert.ok(out.stats!.recomputed > 0, `rank ${r} ${mode}: nothing recomputed`);
      assert.deepEqual(ops.filter((o) => opDef(o).host === true), [], `rank ${r} ${mode}: cloned host ops`);
      assert.ok(out.maxDiff <= 1e-6, `rank ${r} ${mode}: gradients differ by ${out.maxDiff}`);
    }
  }
});

test('checkpointing without scoped units, or on a task without checkpoint units, is an error naming what is missing', () => {
  const model = new GPT(CFG);
  const params = bindParameters(model, { seed: 1 });
  const g = FlatBuffer.zeros(params.flat.layout);
  const { x, y } = tokens(3, 1);
  const step = gradStep(params, g, (a, b) => model.loss(a!, b!), 'fwd_bwd', { checkpointing: { mode: 'full', units: UNITS } });
  return assert.rejects(step(feedsOf(x, y, 1)), /checkpointing 'full': no traced node lies in a unit \[h\*\]; scope the units' modules/).then(() => {
    const task = new SupervisedTask({ model: new Sequential([new Linear(4, 2)]), train: new TokenDataset(new Uint16Array(16), 4) });
    assert.throws(() => taskCheckpointing(task, 'selective'), /train\.checkpointing: 'selective' needs the task's checkpoint units \(Task\.checkpointUnits\), and SupervisedTask \(Sequential\) declares none/);
    assert.equal(taskCheckpointing(task, 'none'), undefined);
    assert.throws(() => taskCheckpointing(task, 'some' as CheckpointMode), /train\.checkpointing: expected one of none, full, selective, got "some"/);
    assert.throws(() => scopeModules(model, ['blocks.*']), /scopeModules: 'blocks\.\*' matches no module of GPT/);
  });
});
