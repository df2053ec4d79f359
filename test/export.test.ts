/**
 * weft export (deploy/export.ts): a trained run's inference models as ONNX, in eval mode, with a
 * symbolic batch (and the GPT's a symbolic sequence length); run in a fresh onnxruntime session
 * they give the training graph's eval logits (weft compile) to 1e-5; the GPT's KV-cache step
 * model, a prefill and then one token at a time, gives the whole sequence's logits; the
 * Generator's KV-cache path gives the recompute loop's tokens, also past the context.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCommand } from '../src/cli/export_cmd.js';
import { exportGpt, exportRun } from '../src/deploy/export.js';
import type { ExportManifest } from '../src/deploy/export.js';
import { ByteTokenizer } from '../src/data/tokenizer.js';
import { decodeModel } from '../src/ir/onnx/model.js';
import * as b from '../src/ir/build.js';
import { MNIST_SHAPE } from '../src/data/mnist.js';
import { GPT } from '../src/nn/gpt.js';
import { bindParameters, loadStateDict } from '../src/nn/module.js';
import { convNet } from '../src/nn/vision.js';
import { setThreads } from '../src/runtime/executor.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import type { Named } from '../src/runtime/ort.js';
import { compile } from '../src/tensor/compile.js';
import { Rng } from '../src/tensor/random.js';
import { placeholder, Tensor } from '../src/tensor/tensor.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { parseConfig } from '../src/train/config.js';
import { Generator } from '../src/train/generate.js';
import { Trainer } from '../src/train/trainer.js';
import { checkModel, needsPython } from './helpers/onnx_check.js';

setThreads(1);
const tmp = (): string => mkdtempSync(join(tmpdir(), 'weft-export-'));
const checker = needsPython.skip === undefined;

/** Trains `config` for its few steps into `dir` (a run directory with a checkpoint). */
async function trainRun(dir: string, config: Record<string, unknown>): Promise<void> {
  await new Trainer(parseConfig({ ...config, out: dir }, 'test')).run({ out: null });
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>, what: string): number {
  assert.equal(a.length, b.length, `${what}: ${a.length} vs ${b.length} values`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

const ids = (n: number, rng: Rng, vocab: number): BigInt64Array => BigInt64Array.from({ length: n }, () => BigInt(rng.int(vocab)));
const i64 = (data: BigInt64Array, dims: number[]): Named => ({ dtype: 'int64', dims, data });

const GPT_RUN = {
  model: { ctx: 16, d: 32, layers: 2, heads: 2, dropout: 0.1 },
  train: { steps: 3, batch: 4, lr: 3e-3, warmup: 0, threads: 1 },
  eval: { every: 3, windows: 2 }, checkpoint: { every: 3, keep: 1 }, sample: { tokens: 0 },
};

test('GPT export: logits and step models pass the checker and give the eval logits at 2 batch sizes and 2 lengths; prefill + 3 steps give the sequence\'s logits', async () => {
  const dir = tmp();
  try {
    await trainRun(join(dir, 'run'), GPT_RUN);
    const out = join(dir, 'exported', 'model.onnx'); // a directory not there yet
    const { files } = exportRun(join(dir, 'run'), { out });
    assert.deepEqual(files, [out, join(dir, 'exported', 'model.step.onnx'), join(dir, 'exported', 'model.json')]);
    const manifest = JSON.parse(readFileSync(join(dir, 'exported', 'model.json'), 'utf8')) as ExportManifest;
    assert.equal(manifest.kind, 'gpt');
    assert.equal(manifest.gpt!.config.ctx, 16);
    assert.deepEqual(manifest.models['model.onnx']!.outputs, [{ name: 'logits', dtype: 'float32', shape: ['batch', 'seq', 256] }]);
    assert.deepEqual(manifest.models['model.step.onnx']!.inputs.slice(0, 3).map((x) => [x.name, x.shape]),
      [['idx', ['batch', 'new']], ['past_key_0', ['batch', 2, 'past', 16]], ['past_value_0', ['batch', 2, 'past', 16]]]);
    const [logitsBytes, stepBytes] = [readFileSync(out), readFileSync(join(dir, 'exported', 'model.step.onnx'))];
    if (checker) { checkModel(logitsBytes, 'gpt_logits'); checkModel(stepBytes, 'gpt_step'); }
    assert.ok(!decodeModel(logitsBytes).graph.nodes.some((n) => n.op === 'Dropout'), 'eval mode: no Dropout');

    // The training graph's eval logits: the run's model rebuilt, compiled in eval mode.
    const ck = loadCheckpoint(join(dir, 'run'));
    const model = new GPT({ vocab: 256, ...GPT_RUN.model, initStd: 0.02 });
    loadStateDict(bindParameters(model), ck.weights);
    model.eval();
    const reference = compile((idx) => [model.logits(idx!)], 'reference');
    const rng = new Rng(7);
    const session = await createInferenceSession(logitsBytes, { threads: 1 }, 'model.onnx');
    for (const [B, T] of [[1, 16], [3, 16], [2, 5], [3, 9]] as const) {
      const x = ids(B * T, rng, 256);
      const [want] = await reference({ data: x, shape: [B, T], dtype: 'int64' });
      const got = (await session.run({ idx: i64(x, [B, T]) }))['logits']!;
      assert.deepEqual(got.dims, [B, T, 256]);
      const d = maxDiff(got.data as Float32Array, want as Float32Array, `logits [${B}, ${T}]`);
      assert.ok(d <= 1e-5, `logits [${B}, ${T}]: max |onnx - weft| = ${d}`);
    }

    // Step model: prefill 4 tokens (past 0), then 3 single tokens, batch 2; then a prefill of 3 after a prefix of 4.
    const step = await createInferenceSession(stepBytes, { threads: 1 }, 'model.step.onnx');
    const [B, N] = [2, 7];
    const seq = ids(B * N, rng, 256);
    const [whole] = await reference({ data: seq, shape: [B, N], dtype: 'int64' }) as [Float32Array];
    const cols = (from: number, to: number): BigInt64Array => BigInt64Array.from({ length: B * (to - from) }, (_, i) => seq[Math.floor(i / (to - from)) * N + from + (i % (to - from))]!);
    const empty = (): Named => ({ dtype: 'float32', dims: [B, 2, 0, 16], data: new Float32Array(0) });
    let past: Record<string, Named> = { past_key_0: empty(), past_value_0: empty(), past_key_1: empty(), past_value_1: empty() };
    for (const [from, to] of [[0, 4], [4, 5], [5, 6], [6, 7]] as const) {
      const r = await step.run({ idx: i64(cols(from, to), [B, to - from]), ...past });
      const n = to - from;
      assert.deepEqual(r['logits']!.dims, [B, n, 256]);
      assert.deepEqual(r['present_key_1']!.dims, [B, 2, to, 16]);
      const want = Float32Array.from({ length: B * n * 256 }, (_, i) => whole[(Math.floor(i / (n * 256)) * N + from + Math.floor(i / 256) % n) * 256 + (i % 256)]!);
      const d = maxDiff(r['logits']!.data as Float32Array, want, `step ${from}..${to}`);
      assert.ok(d <= 1e-5, `positions ${from}..${to - 1}: max |step - whole| = ${d}`);
      past = Object.fromEntries([0, 1].flatMap((l) => [[`past_key_${l}`, r[`present_key_${l}`]!], [`past_value_${l}`, r[`present_value_${l}`]!]]));
    }
    // At the context limit: 16 cached positions and one more is out of the position table
    // (onnxruntime logs the failing Gather before it rejects).
    const full = await step.run({ idx: i64(ids(B * 16, rng, 256), [B, 16]), past_key_0: empty(), past_value_0: empty(), past_key_1: empty(), past_value_1: empty() });
    const cache = Object.fromEntries([0, 1].flatMap((l) => [[`past_key_${l}`, full[`present_key_${l}`]!], [`past_value_${l}`, full[`present_value_${l}`]!]]));
    await assert.rejects(step.run({ idx: i64(ids(B, rng, 256), [B, 1]), ...cache }), /indices|out of|bounds/i, 'position 16 of a 16-position context');
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('CNN export: the classifier with BatchNorm (running statistics) passes the checker and gives the eval logits at 2 batch sizes', async () => {
  const dir = tmp();
  const m = { kind: 'cnn', channels: [4, 6], hidden: 8, batchNorm: true, dropout: 0.25 };
  try {
    await trainRun(join(dir, 'run'), {
      model: m, data: { images: 'mnist', cropPadding: 0 },
      train: { steps: 3, batch: 16, lr: 3e-3, warmup: 0, threads: 1 }, eval: { every: 3, batch: 1000 }, checkpoint: { every: 3, keep: 1 },
    });
    const out = join(dir, 'cnn.onnx');
    await exportCommand([join(dir, 'run'), out, '--kind', 'logits']);
    const bytes = readFileSync(out);
    if (checker) checkModel(bytes, 'cnn');
    const g = decodeModel(bytes).graph;
    assert.equal(g.nodes.filter((n) => n.op === 'BatchNormalization').length, 2, 'BatchNorm stays BatchNormalization (an optimizer can fold it)');
    assert.ok(!g.nodes.some((n) => n.op === 'Dropout'), 'eval mode: no Dropout');
    assert.deepEqual(g.inputs.map((v) => [v.name, v.shape]), [['images', ['batch', 1, 28, 28]]]);
    assert.deepEqual(g.outputs.map((v) => [v.name, v.shape]), [['logits', ['batch', 10]]]);

    const ck = loadCheckpoint(join(dir, 'run'));
    const rm = ck.weights.get('1.running_mean')!.data;
    assert.ok(Array.from(rm).some((x) => Math.abs(x) > 1e-4), 'the running means moved in training');
    const model = convNet({ input: [...MNIST_SHAPE], classes: 10, channels: m.channels, hidden: m.hidden, batchNorm: true, dropout: m.dropout });
    loadStateDict(bindParameters(model), ck.weights);
    model.eval();
    const reference = compile((x) => [model.forward(x!)], 'reference');
    const session = await createInferenceSession(bytes, { threads: 1 }, 'cnn.onnx');
    const rng = new Rng(3);
    for (const B of [1, 5]) {
      const x = Float32Array.from({ length: B * 784 }, () => rng.uniform());
      const [want] = await reference({ data: x, shape: [B, 1, 28, 28], dtype: 'float32' });
      const got = (await session.run({ images: { dtype: 'float32', dims: [B, 1, 28, 28], data: x } }))['logits']!;
      assert.deepEqual(got.dims, [B, 10]);
      const d = maxDiff(got.data as Float32Array, want as Float32Array, `batch ${B}`);
      assert.ok(d <= 1e-5, `batch ${B}: max |onnx - weft| = ${d}`);
    }
    await assert.rejects(exportCommand([join(dir, 'run'), out, '--kind', 'step']), /GPT model; .* is a CNN run/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('Generator: the KV cache gives the recompute loop\'s tokens, greedy past the context and sampled, tracing its step once', async () => {
  const model = new GPT({ vocab: 256, ctx: 64, d: 32, layers: 2, heads: 2, initStd: 0.2 });
  bindParameters(model, { seed: 1 });
  const gen = new Generator(model, new ByteTokenizer());
  assert.ok(gen.cached);
  const prompt = [72, 101, 108];
  // 256 greedy tokens: the first 62 from the cache, the rest past the context of 64.
  for (const o of [{ tokens: 256, temperature: 0, topK: 0 }, { tokens: 80, temperature: 0.9, topK: 8, seed: 5 }]) {
    const recompute = await gen.generateIds(prompt, { ...o, cache: false });
    const cached = await gen.generateIds(prompt, o);
    assert.equal(recompute.length, prompt.length + o.tokens);
    assert.ok(new Set(recompute.slice(prompt.length, 64)).size >= 8, 'not one repeated token: the comparison means something');
    assert.deepEqual(cached, recompute, `temperature ${o.temperature}`);
  }
  assert.deepEqual(gen.traces, { recompute: 1, cached: 1 }, 'one trace of the step serves every prompt length and past');
  // A prompt longer than the context starts in the sliding window.
  const long = Array.from({ length: 70 }, (_, i) => (i * 37) % 256);
  assert.deepEqual(await gen.generateIds(long, { tokens: 5, temperature: 0, topK: 0 }), await gen.generateIds(long, { tokens: 5, temperature: 0, topK: 0, cache: false }));
  assert.equal(model.training, true, 'the mode is restored');
});

test('symbolic reshape: a symbolic dim in a target is read at run time from the graph input that has it', async () => {
  const x = placeholder(['n', 6], 'float32', 'x');
  const y = x.mul(2).reshape(['n', 2, -1]);
  assert.deepEqual(y.shape, ['n', 2, 3]);
  const back = y.reshape([-1, 6]);
  assert.deepEqual(back.shape, ['n', 6]);
  const r = new Tensor(b.arange('n', x.value));
  assert.deepEqual(r.shape, ['n']);
  assert.throws(() => x.reshape(['m', 6]), /no value in the graph .* has the symbolic dim 'm'/);
  const f = compile((t) => [t!.mul(2).reshape(['n', 2, -1]), new Tensor(b.arange('n', t!.value))], 'sym', { symbolic: [['n', null]] });
  for (const n of [1, 3]) {
    const [a, i] = await f({ data: Float32Array.from({ length: 6 * n }, (_, k) => k), shape: [n, 6], dtype: 'float32' });
    assert.deepEqual(Array.from(a as Float32Array), Array.from({ length: 6 * n }, (_, k) => 2 * k));
    assert.deepEqual(Array.from(i as BigInt64Array, Number), Array.from({ length: n }, (_, k) => k));
  }
  assert.equal(f.traces, 1, 'one trace serves every n');
});

test('weft export errors name the path: missing, not a run, a run without a config', async () => {
  const dir = tmp();
  try {
    assert.throws(() => exportRun(join(dir, 'nope'), { out: join(dir, 'm.onnx') }), new RegExp(`${join(dir, 'nope')} does not exist`));
    assert.throws(() => exportRun(dir, { out: join(dir, 'm.onnx') }), new RegExp(`${dir} is not a run or checkpoint directory`));
    await assert.rejects(exportCommand([dir]), /takes a run \(or checkpoint\) directory and the ONNX file/);
    await assert.rejects(exportCommand([dir, join(dir, 'm.onnx'), '--kind', 'int8']), /--kind must be logits, step, both/);
    const moe = new GPT({ vocab: 16, ctx: 8, d: 16, layers: 2, heads: 2, moe: { experts: 2 } });
    bindParameters(moe);
    assert.throws(() => exportGpt(moe, { kind: 'logits' }), /mixture-of-experts GPT cannot be exported/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
