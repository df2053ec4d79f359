/**
 * Mixed precision: the autocast rewrite puts matrix products in half precision and norms, softmax
 * and the loss in float32; fp16 and bf16 gradients of the GPT stay within their formats' error of
 * float32 (and are not float32's: the math really rounds); 16-bit encodings round to nearest even;
 * the dynamic loss scaler follows GradScaler / DeepSpeed; an inf injected into one rank's gradients
 * skips the step on every rank, leaves parameters and moments untouched and halves the scale; the
 * scale grows after its window and a resume restores it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { autocast } from '../src/ir/autocast.js';
import * as b from '../src/ir/build.js';
import { addDecoded16, encode16, fromBfloat16, fromHalf, fromNumbers, toBfloat16, toHalf } from '../src/ir/dtype.js';
import { topoNodes, Value } from '../src/ir/graph.js';
import { defineOp } from '../src/ir/registry.js';
import { unaryFloat } from '../src/ir/ops/common.js';
import { bindParameters, GPT } from '../src/nn/index.js';
import { traceStepGraph } from '../src/nn/step_graph.js';
import { scopeModules } from '../src/nn/scope.js';
import { LossScaler } from '../src/optim/loss_scale.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { launchThreads } from '../src/comm/threads/launch.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { ConfigError, parseConfig } from '../src/train/config.js';
import { gradStep } from '../src/train/step.js';
import { Trainer } from '../src/train/trainer.js';
import { placeholder } from '../src/tensor/tensor.js';
import type { InjectArgs } from './loss_scale_rank.js';

const cfg = { vocab: 256, ctx: 32, d: 64, layers: 2, heads: 4 };
const [B, T] = [4, 32];
const ids = (seed: number): BigInt64Array => BigInt64Array.from({ length: B * T }, (_, i) => BigInt((i * 31 + seed * 7 + ((i * i) % 13)) % 256));
const feeds = [{ data: ids(1), shape: [B, T], dtype: 'int64' as const }, { data: ids(2), shape: [B, T], dtype: 'int64' as const }];

async function gradients(precision: 'fp32' | 'fp16' | 'bf16'): Promise<{ loss: number; g: Float32Array }> {
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 0 });
  const grads = FlatBuffer.zeros(params.flat.layout);
  const step = gradStep(params, grads, (i, t) => model.loss(i!, t!), 'fwd_bwd', { precision, lossScale: true });
  const S = 256;
  const loss = await step(feeds, { lossScale: S });
  return { loss, g: grads.data.map((x) => x / S) };
}

const relErr = (a: Float32Array, ref: Float32Array): number => {
  let n = 0, d = 0;
  for (let i = 0; i < a.length; i++) { n += (a[i]! - ref[i]!) ** 2; d += ref[i]! ** 2; }
  return Math.sqrt(n / d);
};

test('autocast: GPT matrix products run in the half dtype; LayerNorm, softmax and the loss in float32', () => {
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 0 });
  const [i, t] = [placeholder([B, T], 'int64'), placeholder([B, T], 'int64')];
  const g = traceStepGraph(params, (x, y) => model.loss(x!, y!), [i, t], { precision: 'bf16' });
  const dtypes = new Map<string, Set<string>>();
  for (const n of topoNodes(g.outputs)) {
    const s = dtypes.get(n.op) ?? new Set<string>();
    s.add(n.outputs[0]!.dtype);
    dtypes.set(n.op, s);
  }
  // Forward and backward products: all bfloat16 (the weight gradients too); statistics float32.
  assert.deepEqual([...dtypes.get('Gemm')!], ['bfloat16']);
  assert.deepEqual([...dtypes.get('MatMul')!], ['bfloat16']);
  for (const op of ['LayerNormalization', 'Softmax', 'LogSoftmax']) assert.deepEqual([...dtypes.get(op)!], ['float32'], op);
  assert.equal(g.outputs[0]!.dtype, 'float32', 'the loss');
  // Every parameter's gradient reaches the float32 master: one cast per half use, widened once.
  g.outputs.slice(1).forEach((v) => assert.equal(v.dtype, 'float32'));
});

test('fp16 and bf16 gradients of the GPT are within their formats\' error of float32, and differ from it', async () => {
  const ref = await gradients('fp32');
  const h = await gradients('fp16');
  const bf = await gradients('bf16');
  const [eh, eb] = [relErr(h.g, ref.g), relErr(bf.g, ref.g)];
  // fp16 keeps 11 significant bits, bf16 8: their relative rounding is 2^-11 and 2^-8.
  assert.ok(eh > 1e-6 && eh < 5e-3, `fp16 gradient error ${eh}`);
  assert.ok(eb > 1e-4 && eb < 3e-2, `bf16 gradient error ${eb}`);
  assert.ok(eb > eh, `bf16 (${eb}) rounds more than fp16 (${eh})`);
  assert.ok(Math.abs(h.loss - ref.loss) < 2e-3 && Math.abs(bf.loss - ref.loss) < 1e-2, `losses ${ref.loss}, ${h.loss}, ${bf.loss}`);
});

test('16-bit encodings round to nearest even and decode exactly', () => {
  assert.equal(toBfloat16(1), 0x3f80);
  assert.equal(toBfloat16(-2), 0xc000);
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even wins (1); just above the tie rounds up.
  assert.equal(toBfloat16(1 + 2 ** -8), 0x3f80);
  assert.equal(toBfloat16(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.equal(toBfloat16(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(fromBfloat16(0x3f81), 1 + 2 ** -7);
  assert.ok(Number.isNaN(fromBfloat16(toBfloat16(NaN))));
  assert.equal(fromBfloat16(toBfloat16(3.5e38)), Infinity, 'past bf16\'s largest finite value');
  assert.equal(toHalf(1 + 2 ** -11), 0x3c00);
  assert.equal(toHalf(65520), 0x7c00, 'the fp16 overflow threshold');
  assert.deepEqual(Array.from(fromNumbers('float16', [0.5, -1]) as Uint16Array), [0x3800, 0xbc00]);
  assert.deepEqual(Array.from(fromNumbers('bfloat16', [0.5, -1]) as Uint16Array), [0x3f00, 0xbf80]);
  assert.equal(fromHalf(0x3555), 0.333251953125);
  // The bulk forms (the gradient wire) agree with the scalar ones, specials included.
  const x = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i * 1.7) * 10 ** ((i % 17) - 10));
  x.set([Infinity, -Infinity, NaN, 0, -0, 2 ** -149, 65519, 65520, 3.4e38], 0);
  // And 2^16 random float32 bit patterns (every exponent, ties and carries included).
  const bits = new Uint32Array(65536);
  let seed = 12345;
  for (let i = 0; i < bits.length; i++) { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; bits[i] = (seed ^ (seed << 7)) >>> 0; }
  const random = new Float32Array(bits.buffer);
  for (const [dt, enc, dec] of [['float16', toHalf, fromHalf], ['bfloat16', toBfloat16, fromBfloat16]] as const) {
    const h = new Uint16Array(x.length);
    encode16(dt, x, h);
    assert.deepEqual(Array.from(h), Array.from(x, enc), `${dt} bulk encoding`);
    const hr = new Uint16Array(random.length);
    encode16(dt, random, hr);
    random.forEach((v, i) => { if (hr[i] !== enc(v) && !Number.isNaN(v)) assert.equal(hr[i], enc(v), `${dt} bulk encoding of bits 0x${bits[i]!.toString(16)}`); });
    const acc = Float32Array.from(x, (v) => (Number.isFinite(v) ? 1 : 0));
    addDecoded16(dt, h, acc);
    acc.forEach((v, i) => { if (Number.isFinite(x[i]!)) assert.equal(v, Math.fround(Math.fround(dec(h[i]!)) + 1), `${dt} decode ${i}`); });
  }
});

test('an op without a half-precision path is an error naming it and the setting', () => {
  defineOp({ name: 'test.NoHalf', inputs: ['X'], infer: unaryFloat });
  const x = new Value('float32', [2, 2]);
  x.name = 'x';
  const y = b.reduceSum(b.apply1('test.NoHalf', [b.matmul(x, x)]), [0, 1], false);
  assert.throws(() => autocast([y], { dtype: 'float16', params: new Set(), who: 'train.precision fp16' }),
    /train\.precision fp16: op test\.NoHalf has no half-precision path/);
});

test('config: an unknown precision is an error naming train.precision', () => {
  assert.throws(() => parseConfig({ train: { precision: 'fp8' } }, 'cfg.json'), (e: Error) => e instanceof ConfigError && /train\.precision/.test(e.message) && /fp8/.test(e.message));
});

test('loss scaler: backs off on overflow (after its hysteresis), grows after its window, never below its minimum', () => {
  const s = new LossScaler({ init: 1024, growthInterval: 3, hysteresis: 2, minScale: 256 });
  const trace: [boolean, number][] = [];
  for (const overflow of [false, false, true, true, false, false, false, true, true, true, true]) trace.push([s.update(overflow), s.scale]);
  assert.deepEqual(trace, [
    [false, 1024], [false, 1024],
    [true, 1024], // the first overflow is absorbed by the hysteresis (still skipped)
    [true, 512],
    [false, 512], [false, 512], [false, 1024], // three clean steps: x2, hysteresis restored
    [true, 1024], [true, 512], [true, 256], [true, 256], // never below minScale
  ]);
  assert.equal(s.skipped, 6);
  const r = new LossScaler({ init: 1024, growthInterval: 3, hysteresis: 2, minScale: 256 });
  r.loadState(s.state());
  assert.deepEqual(r.state(), s.state());
  assert.throws(() => r.loadState({ ...s.state(), scale: Number.NaN }), /'scale' must be a number/);
});

const metrics = (dir: string): Record<string, number>[] => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

test('an inf injected into one rank\'s gradients skips that step on every rank, leaves parameters and moments untouched, halves the scale', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-scale-'));
  try {
    const args: InjectArgs = { out: dir, victim: 1, step: 3, steps: 4 };
    const ranks = await launchThreads<{ t: number; scale: number; skipped: number; params: number[] }>({ nproc: 2, entry: new URL('./loss_scale_rank.js', import.meta.url), args, timeoutMs: 120_000 });
    for (const r of ranks) {
      assert.equal(r.t, 3, 'four steps, one skipped: the optimizer stepped three times');
      assert.equal(r.scale, 512);
      assert.equal(r.skipped, 1);
    }
    assert.deepEqual(ranks[1]!.params, ranks[0]!.params, 'the ranks still hold the same parameters');
    const m = metrics(dir);
    assert.deepEqual(m.map((x) => x['skipped']), [0, 0, 1, 0]);
    assert.deepEqual(m.map((x) => x['loss_scale']), [1024, 1024, 512, 512]);
    const [before, after] = [loadCheckpoint(join(dir, 'step-000002')), loadCheckpoint(join(dir, 'step-000003'))];
    for (const [name, t] of before.weights) assert.deepEqual(after.weights.get(name)!.data, t.data, `parameter ${name} after the skipped step`);
    for (const [name, t] of before.optimizer) assert.deepEqual(after.optimizer.get(name)!.data, t.data, `moment ${name} after the skipped step`);
    assert.equal((after.state as { optimizer: { t: number } }).optimizer.t, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the loss scale grows after its window, and a resumed run restores it and its losses', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-scale-resume-'));
  const config = (out: string) => parseConfig({
    out, model: { ctx: 16, d: 32, layers: 2, heads: 2 },
    train: { steps: 7, batch: 2, threads: 1, precision: 'fp16', lossScale: 1024, lossScaleWindow: 3, warmup: 0 },
    checkpoint: { every: 100 }, eval: { every: 1000, windows: 2 }, sample: { tokens: 0 },
  }, 'loss scale test');
  try {
    const whole = await new Trainer(config(join(dir, 'whole'))).run({ out: null });
    const m = metrics(join(dir, 'whole'));
    assert.deepEqual(m.map((x) => x['loss_scale']), [1024, 1024, 2048, 2048, 2048, 4096, 4096]);
    await new Trainer(config(join(dir, 'split'))).run({ out: null, stopAfter: 4 });
    const resumed = new Trainer(config(join(dir, 'split')));
    await resumed.run({ out: null, resume: true });
    assert.equal(resumed.scaler!.scale, 4096);
    const n = metrics(join(dir, 'split'));
    assert.deepEqual(n.map((x) => x['loss_scale']), m.map((x) => x['loss_scale']));
    assert.deepEqual(n.map((x) => x['loss']), whole.losses, 'the resumed run computes the same losses');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('mixed precision composes with activation checkpointing: bf16 gradients with full checkpointing equal bf16 without', async () => {
  const run = async (checkpointing: boolean): Promise<Float32Array> => {
    const model = new GPT(cfg);
    const params = bindParameters(model, { seed: 0 });
    if (checkpointing) scopeModules(model, ['h*']);
    const grads = FlatBuffer.zeros(params.flat.layout);
    const step = gradStep(params, grads, (i, t) => model.loss(i!, t!), 'fwd_bwd', { precision: 'bf16', ...(checkpointing ? { checkpointing: { mode: 'full' as const, units: ['h*'] } } : {}) });
    await step(feeds);
    if (checkpointing) assert.ok(step.checkpoint!.recomputed > 0, 'the autocast graph still knows its units');
    return grads.data;
  };
  const [plain, ck] = [await run(false), await run(true)];
  assert.ok(relErr(ck, plain) < 1e-6, `checkpointed bf16 gradients differ by ${relErr(ck, plain)}`);
});

test('bf16 under tensor parallelism (tp 2, selective checkpointing) trains like one bf16 process, to bf16 precision', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bf16-tp-'));
  try {
    const base = { model: { ctx: 32, d: 32, layers: 2, heads: 2 }, train: { steps: 4, batch: 4, lr: 3e-3, warmup: 2, threads: 1, clip: 1, precision: 'bf16' }, eval: { every: 4, windows: 4 }, checkpoint: { every: 4 }, sample: { tokens: 0 } };
    const cfgPath = join(dir, 'tiny.json');
    writeFileSync(cfgPath, JSON.stringify(base));
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const train = (...a: string[]): string => execFileSync(process.execPath, [cli, 'train', cfgPath, ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    train('--set', `out=${join(dir, 'one')}`);
    train('--set', `out=${join(dir, 'tp')}`, '--nproc', '2', '--set', 'parallel.tp=2', '--set', 'train.checkpointing=selective');
    const [one, tp] = [metrics(join(dir, 'one')), metrics(join(dir, 'tp'))];
    // Sharded products round in other places than whole ones: bf16's 2^-8, not float32's.
    one.forEach((m, i) => assert.ok(Math.abs(tp[i]!['loss']! - m['loss']!) < 2e-3, `step ${i + 1}: tp loss ${tp[i]!['loss']} vs ${m['loss']}`));
    assert.ok(tp.some((m, i) => m['loss'] !== one[i]!['loss']), 'the two layouts round differently (the test sees bf16, not float32)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
