/**
 * Structured pruning (train/prune_structured.ts, weft prune): the pruned model computes exactly
 * what the original computes with the removed units zeroed, the kept units are the most important
 * by the criterion, the parameter counts follow the formula, and weft prune writes a run that
 * weft train fine-tunes and weft export exports, refusing bad input with nothing written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bindParameters, loadStateDict, stateDict } from '../src/nn/module.js';
import type { Module } from '../src/nn/module.js';
import { GPT } from '../src/nn/gpt.js';
import type { GPTConfig } from '../src/nn/gpt.js';
import { convNet } from '../src/nn/vision.js';
import type { ConvNetConfig } from '../src/nn/vision.js';
import { compile } from '../src/tensor/compile.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/random.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { loadConfig, parseConfig } from '../src/train/config.js';
import { pruneConvNet, pruneGpt, PruneError, pruneRun } from '../src/train/prune_structured.js';
import type { UnitsKept } from '../src/train/prune_structured.js';
import { Trainer } from '../src/train/trainer.js';
import { MNIST_SHAPE } from '../src/data/mnist.js';
import { CLI } from './helpers/cli.js';

type Weights = Map<string, { shape: readonly number[]; data: Float32Array }>;

/** A model's tensors after a seeded init, with BatchNorm's scale, shift and running statistics random too (so that channels differ). */
function randomWeights(model: Module, seed: number): Weights {
  const bound = bindParameters(model, { seed });
  const rng = new Rng(seed + 100);
  const w: Weights = new Map([...stateDict(bound)].map(([k, t]) => [k, { shape: [...t.shape], data: Float32Array.from(t.data) }]));
  for (const [k, t] of w) {
    // Linear biases start at zero: random ones test that a removed unit's bias goes with it.
    if (/running_var$/.test(k)) t.data.forEach((_, i) => { t.data[i] = 0.5 + rng.uniform(); });
    else if (/(running_mean|\.b)$/.test(k) || (/\.w$/.test(k) && t.shape.length === 1)) t.data.forEach((_, i) => { t.data[i] = rng.uniform() * 2 - 1; });
  }
  return w;
}

const clone = (w: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>): Weights =>
  new Map([...w].map(([k, t]) => [k, { shape: [...t.shape], data: Float32Array.from(t.data) }]));

const removed = (u: UnitsKept): number[] => Array.from({ length: u.before }, (_, i) => i).filter((i) => !u.kept.includes(i));

/** Zeroes position `p` along `axis` of `t`. */
function zeroAt(t: { shape: readonly number[]; data: Float32Array }, axis: number, p: number): void {
  const inner = t.shape.slice(axis + 1).reduce((a, e) => a * e, 1);
  const n = t.shape[axis]!;
  for (let i = 0; i < t.data.length; i++) if (Math.floor(i / inner) % n === p) t.data[i] = 0;
}

async function run(model: Module & { forward(x: Tensor): Tensor }, w: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, x: Float32Array, shape: number[]): Promise<Float32Array> {
  loadStateDict(bindParameters(model), w);
  model.eval();
  const f = compile((t) => [model.forward(t!)], 'prune-test');
  return (await f({ data: x, shape, dtype: 'float32' }))[0] as Float32Array;
}

function assertClose(a: Float32Array, b: Float32Array, tol: number, what: string): void {
  assert.equal(a.length, b.length);
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i]! - b[i]!));
  assert.ok(err <= tol, `${what}: max |diff| ${err} > ${tol}`);
}

const images = (n: number, c: ConvNetConfig, seed: number): Float32Array => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * c.input.reduce((a, e) => a * e, 1) }, () => rng.uniform());
};

/** L1 or L2 norm over the given values. */
const norm = (xs: number[], crit: 'l1' | 'l2'): number => (crit === 'l1' ? xs.reduce((a, v) => a + Math.abs(v), 0) : Math.sqrt(xs.reduce((a, v) => a + v * v, 0)));
/** The `k` largest by score, ascending by index. */
const topBySort = (score: number[], k: number): number[] => score.map((s, i) => [s, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map(([, i]) => i).sort((a, b) => a - b);

const cnnParams = (c: ConvNetConfig): number => {
  let [ch, h] = [c.input[0], c.input[1]];
  let n = 0;
  for (const out of c.channels) { n += 9 * ch * out + (c.batchNorm ? 2 * out : out); ch = out; h = Math.floor(h / 2); }
  const feat = ch * h * h;
  return c.hidden > 0 ? n + feat * c.hidden + c.hidden + c.hidden * c.classes + c.classes : n + feat * c.classes + c.classes;
};

for (const [bn, criterion] of [[true, 'l1'], [false, 'l2']] as const) {
  test(`CNN ${bn ? 'with' : 'without'} BatchNorm, ${criterion}: the pruned model's logits equal the original's with the removed channels and neurons zeroed; kept = the top filters by ${criterion}${bn ? ' (by |gamma| by default)' : ''}; params by formula`, async () => {
    const c: ConvNetConfig = { input: [1, 8, 8], classes: 3, channels: [6, 8], hidden: 10, batchNorm: bn, dropout: 0.25 };
    const w = randomWeights(convNet(c), 3);
    const r = pruneConvNet(c, w, { channels: 0.5, hidden: 0.3, criterion });
    assert.deepEqual(r.config.channels, [3, 4]);
    assert.equal(r.config.hidden, 7);
    assert.equal(r.report.params.before, cnnParams(c));
    assert.equal(r.report.params.after, cnnParams(r.config));
    // The reference: the original with every removed unit zeroed (a channel: its filter, its bias or
    // BatchNorm's gamma and beta; a neuron: its column and bias of the first Linear).
    const masked = clone(w);
    const stride = bn ? 4 : 3; // conv, [bn], relu, pool per stage
    r.report.units.forEach((u, s) => {
      if (u.unit === 'channels') {
        assert.equal(u.layer, String(s * stride));
        const filters = w.get(`${u.layer}.w`)!;
        const per = filters.data.length / u.before;
        const score = Array.from({ length: u.before }, (_, ch) => norm([...filters.data.subarray(ch * per, (ch + 1) * per)], criterion));
        assert.deepEqual(u.kept, topBySort(score, u.after), `stage ${s}: the kept channels are the top ${u.after} by ${criterion}`);
        for (const ch of removed(u)) {
          zeroAt(masked.get(`${u.layer}.w`)!, 0, ch);
          const bnPath = String(Number(u.layer) + 1);
          for (const k of bn ? [`${bnPath}.w`, `${bnPath}.b`] : [`${u.layer}.b`]) masked.get(k)!.data[ch] = 0;
        }
      } else {
        for (const j of removed(u)) { zeroAt(masked.get(`${u.layer}.w`)!, 1, j); masked.get(`${u.layer}.b`)!.data[j] = 0; }
      }
    });
    assert.equal(r.report.units.length, 3);
    if (bn) {
      // The default with BatchNorm: channels by |gamma| (Network Slimming).
      const d = pruneConvNet(c, w, { channels: 0.5 });
      assert.equal(d.report.criterion, 'gamma');
      d.report.units.forEach((u) => {
        const gamma = w.get(`${Number(u.layer) + 1}.w`)!.data;
        assert.deepEqual(u.kept, topBySort([...gamma].map(Math.abs), u.after), `stage ${u.layer}: the kept channels are the top ${u.after} by |gamma|`);
      });
    } else assert.equal(pruneConvNet(c, w, { channels: 0.5 }).report.criterion, 'l1', 'the default without BatchNorm');
    const x = images(5, c, 9);
    const want = await run(convNet(c), masked, x, [5, ...c.input]);
    const got = await run(convNet(r.config), r.weights, x, [5, ...c.input]);
    assertClose(got, want, 1e-5, 'pruned vs masked logits');
    // The zeroing matters: the unmasked original computes something else.
    const orig = await run(convNet(c), w, x, [5, ...c.input]);
    assert.ok(orig.some((v, i) => Math.abs(v - want[i]!) > 1e-3), 'masking changed the logits');
  });
}

const gptParams = (c: GPTConfig): number => {
  const hd = c.headDim ?? c.d / c.heads;
  const inner = c.heads * hd;
  const M = c.mlpHidden ?? (c.mlpRatio ?? 4) * c.d;
  const block = 4 * c.d + (c.d * 3 * inner + 3 * inner) + (inner * c.d + c.d) + (c.d * M + M) + (M * c.d + c.d);
  return c.vocab * c.d + c.ctx * c.d + c.layers * block + 2 * c.d;
};

async function gptLogits(c: GPTConfig, w: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, idx: BigInt64Array, B: number, T: number): Promise<Float32Array> {
  const m = new GPT(c);
  loadStateDict(bindParameters(m), w);
  m.eval();
  const f = compile((t) => [m.logits(t!)], 'prune-gpt');
  return (await f({ data: idx, shape: [B, T], dtype: 'int64' }))[0] as Float32Array;
}

for (const criterion of ['l1', 'l2'] as const) {
  test(`GPT, ${criterion}: with 1 of 4 heads and 25% of the MLP neurons removed per layer, the logits equal the original's with those heads and neurons zeroed; kept = the top by ${criterion}; params by formula`, async () => {
    const c: GPTConfig = { vocab: 32, ctx: 8, d: 16, layers: 2, heads: 4 };
    const w = randomWeights(new GPT(c), 5);
    const r = pruneGpt(c, w, { heads: 1, neurons: 0.25, criterion });
    assert.deepEqual({ heads: r.config.heads, headDim: r.config.headDim, mlpHidden: r.config.mlpHidden }, { heads: 3, headDim: 4, mlpHidden: 48 });
    assert.equal(r.report.params.before, gptParams(c));
    assert.equal(r.report.params.after, gptParams(r.config));
    const [H, hd, d] = [4, 4, 16];
    const masked = clone(w);
    for (const u of r.report.units) {
      const qkv = w.get(`${u.layer}.attn.qkv.w`)!;
      const proj = w.get(`${u.layer}.attn.proj.w`)!;
      const fc1 = w.get(`${u.layer}.mlp.fc1.w`)!;
      const fc2 = w.get(`${u.layer}.mlp.fc2.w`)!;
      if (u.unit === 'heads') {
        // Head h: q, k, v columns s H hd + h hd + j of qkv [d, 3 H hd]; rows h hd + j of proj [H hd, d].
        const cols = (h: number): number[] => [0, 1, 2].flatMap((s) => Array.from({ length: hd }, (_, j) => s * H * hd + h * hd + j));
        const score = Array.from({ length: H }, (_, h) => norm([
          ...cols(h).flatMap((col) => Array.from({ length: d }, (_, i) => qkv.data[i * 3 * H * hd + col]!)),
          ...Array.from({ length: hd * d }, (_, k) => proj.data[h * hd * d + k]!),
        ], criterion));
        assert.deepEqual(u.kept, topBySort(score, 3), `${u.layer}: the kept heads`);
        for (const h of removed(u)) {
          for (const col of cols(h)) { zeroAt(masked.get(`${u.layer}.attn.qkv.w`)!, 1, col); masked.get(`${u.layer}.attn.qkv.b`)!.data[col] = 0; }
          for (let j = 0; j < hd; j++) zeroAt(masked.get(`${u.layer}.attn.proj.w`)!, 0, h * hd + j);
        }
      } else {
        const M = 64;
        const score = Array.from({ length: M }, (_, j) => norm([...Array.from({ length: d }, (_, i) => fc1.data[i * M + j]!), ...fc2.data.subarray(j * d, (j + 1) * d)], criterion));
        assert.deepEqual(u.kept, topBySort(score, 48), `${u.layer}: the kept neurons`);
        for (const j of removed(u)) { zeroAt(masked.get(`${u.layer}.mlp.fc1.w`)!, 1, j); masked.get(`${u.layer}.mlp.fc1.b`)!.data[j] = 0; }
      }
    }
    assert.equal(r.report.units.length, 4);
    const rng = new Rng(2);
    const idx = BigInt64Array.from({ length: 2 * 8 }, () => BigInt(rng.int(32)));
    const want = await gptLogits(c, masked, idx, 2, 8);
    const got = await gptLogits(r.config, r.weights, idx, 2, 8);
    assertClose(got, want, 1e-5, 'pruned vs masked logits');
    const orig = await gptLogits(c, w, idx, 2, 8);
    assert.ok(orig.some((v, i) => Math.abs(v - want[i]!) > 1e-4), 'masking changed the logits');
  });
}

test('GPT: headDim and mlpHidden given at their defaults build the same model: bit-identical logits and loss', async () => {
  const c: GPTConfig = { vocab: 32, ctx: 8, d: 16, layers: 2, heads: 4 };
  const explicit: GPTConfig = { ...c, headDim: 4, mlpHidden: 64 };
  const a = new GPT(c);
  const b = new GPT(explicit);
  const [pa, pb] = [bindParameters(a, { seed: 7 }), bindParameters(b, { seed: 7 })];
  assert.deepEqual(pb.flat.data, pa.flat.data, 'the same parameters from the same seed');
  const rng = new Rng(4);
  const idx = BigInt64Array.from({ length: 16 }, () => BigInt(rng.int(32)));
  const tgt = BigInt64Array.from({ length: 16 }, () => BigInt(rng.int(32)));
  const loss = (m: GPT) => compile((i, t) => [m.loss(i!, t!)], 'loss');
  const feeds = [{ data: idx, shape: [2, 8], dtype: 'int64' as const }, { data: tgt, shape: [2, 8], dtype: 'int64' as const }];
  const [la, lb] = [(await loss(a)(...feeds))[0]!, (await loss(b)(...feeds))[0]!];
  assert.equal(lb[0], la[0]);
  // A run config's 0 means the default: gptConfig leaves the fields out, as before they existed.
  const cfg = parseConfig({ model: { d: 16, heads: 4, layers: 2, ctx: 8 } }, 'test');
  const { gptConfig } = await import('../src/train/tasks/lm.js');
  assert.ok(!('headDim' in gptConfig(cfg, 32)) && !('mlpHidden' in gptConfig(cfg, 32)));
  assert.throws(() => new GPT({ ...c, headDim: 2.5 }), /GPTConfig\.headDim must be a positive integer/);
});

test('refused: fractions outside (0, 1), removing every head, a GPT flag on a CNN and a CNN flag on a GPT, a mixture-of-experts GPT, nothing to prune', () => {
  const c: ConvNetConfig = { input: [1, 8, 8], classes: 3, channels: [4], hidden: 0, batchNorm: true, dropout: 0 };
  const w = randomWeights(convNet(c), 1);
  for (const v of [0, 1, 1.5, -0.2, Number.NaN]) assert.throws(() => pruneConvNet(c, w, { channels: v }), new RegExp(`--channels must be a fraction of units to remove, in \\(0, 1\\), got ${v}`));
  assert.throws(() => pruneConvNet(c, w, { hidden: 0.5 }), /--hidden: this CNN has no hidden/);
  assert.throws(() => pruneConvNet(c, w, { heads: 1 }), /--heads prunes a GPT; this is a CNN/);
  assert.throws(() => pruneConvNet(c, w, {}), /nothing to prune: give --channels/);
  assert.throws(() => pruneConvNet({ ...c, batchNorm: false }, randomWeights(convNet({ ...c, batchNorm: false }), 1), { channels: 0.5, criterion: 'gamma' }), /--criterion gamma .*this CNN has no BatchNorm/);
  const g: GPTConfig = { vocab: 16, ctx: 4, d: 8, layers: 1, heads: 2 };
  const gw = randomWeights(new GPT(g), 1);
  assert.throws(() => pruneGpt(g, gw, { heads: 2 }), /--heads 2 would remove every head: the model has 2 per layer/);
  assert.throws(() => pruneGpt(g, gw, { heads: 0.5 }), /--heads must be a positive integer/);
  assert.throws(() => pruneGpt(g, gw, { neurons: 1 }), /--neurons must be a fraction/);
  assert.throws(() => pruneGpt(g, gw, { channels: 0.5 }), /--channels prunes a CNN; this is a GPT/);
  assert.throws(() => pruneGpt(g, gw, { heads: 1, criterion: 'gamma' }), /--criterion gamma .*a GPT has none/);
  assert.throws(() => pruneGpt({ ...g, moe: { experts: 2 } }, gw, { heads: 1 }), (e: unknown) => e instanceof PruneError && /mixture-of-experts/.test((e as Error).message));
  // A checkpoint of another model: loadStateDict's error names the tensor.
  assert.throws(() => pruneConvNet({ ...c, channels: [5] }, w, { channels: 0.5 }), /tensor '0\.w' has shape/);
});

/** `weft prune` and friends as a child process. */
const weft = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('weft prune writes a run: weft train <out>/config.json fine-tunes the pruned weights (train.init) and weft export exports them; bad input is refused naming the flag or file, nothing written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-prune-'));
  try {
    const base = join(dir, 'base');
    const cfg = parseConfig({
      out: base, model: { kind: 'cnn', channels: [4, 6], hidden: 12, dropout: 0 }, data: { images: 'mnist' },
      train: { steps: 3, batch: 8, lr: 2e-3, warmup: 1, threads: 1 }, eval: { every: 3, batch: 500 }, checkpoint: { every: 3 }, log: { every: 1 },
    }, 'test config');
    await new Trainer(cfg).run({ out: null });
    const out = join(dir, 'pruned-run');
    const p = weft('prune', base, '--out', out, '--channels', '0.5', '--hidden', '0.25');
    assert.equal(p.status, 0, p.stderr);
    const report = JSON.parse(p.stdout) as { params: { before: number; after: number }; units: UnitsKept[]; criterion: string };
    assert.equal(report.criterion, 'gamma', 'the default for a CNN with BatchNorm');
    assert.deepEqual(report.units.map((u) => [u.layer, u.unit, u.after]), [['0', 'channels', 2], ['4', 'channels', 3], ['9', 'neurons', 9]]);
    const c2 = loadConfig(join(out, 'config.json'));
    assert.deepEqual([c2.out, c2.train.init, c2.model.channels, c2.model.hidden], [out, join(out, 'pruned'), [2, 3], 9]);
    assert.equal(report.params.after, cnnParams({ input: [...MNIST_SHAPE], classes: 10, channels: [2, 3], hidden: 9, batchNorm: true, dropout: 0 }));
    // The checkpoint holds what pruneRun computes from the source checkpoint.
    const ck = loadCheckpoint(join(out, 'pruned'));
    const again = pruneRun(cfg, loadCheckpoint(base).weights, null, { channels: 0.5, hidden: 0.25, criterion: 'gamma' });
    for (const [k, t] of again.weights) assert.deepEqual(ck.weights.get(k)!.data, t.data, k);

    // Fine-tuning at lr 0 leaves the parameters exactly the pruned ones: train.init loaded them.
    const ft = weft('train', join(out, 'config.json'), '--set', 'train.steps=1', '--set', 'train.lr=0', '--set', 'train.weightDecay=0', '--set', 'eval.every=1', '--set', 'checkpoint.every=1');
    assert.equal(ft.status, 0, ft.stderr);
    assert.match(ft.stdout + ft.stderr, /weights from .*pruned.*\(train\.init\)/);
    const tuned = loadCheckpoint(out);
    assert.equal(tuned.step, 1);
    for (const [k, t] of ck.weights) if (!/running_/.test(k)) assert.deepEqual(tuned.weights.get(k)!.data, t.data, k);

    // The exported pruned classifier computes the pruned model.
    const onnx = join(dir, 'pruned.onnx');
    const e = weft('export', join(out, 'pruned'), onnx);
    assert.equal(e.status, 0, e.stderr);
    const full: ConvNetConfig = { input: [...MNIST_SHAPE], classes: 10, channels: [2, 3], hidden: 9, batchNorm: true, dropout: 0 };
    const x = images(3, full, 1);
    const want = await run(convNet(full), ck.weights, x, [3, ...full.input]);
    const s = await createInferenceSession(readFileSync(onnx), { threads: 1 });
    try {
      const got = (await s.run({ [s.inputNames[0]!]: { dtype: 'float32', dims: [3, 1, 28, 28], data: x } }))[s.outputNames[0]!]!.data as Float32Array;
      assertClose(got, want, 1e-5, 'exported vs in-process');
    } finally { await s.release(); }

    // Errors: each names the flag or file, and nothing is written.
    const bad = (args: string[], pattern: RegExp): void => {
      const target = join(dir, 'never');
      const r = weft('prune', ...args.map((a) => (a === 'OUT' ? target : a)));
      assert.notEqual(r.status, 0, args.join(' '));
      assert.match(r.stderr, pattern);
      assert.ok(!existsSync(target), `${args.join(' ')}: nothing written`);
    };
    bad([base, '--out', 'OUT', '--channels', '1'], /--channels must be a fraction/);
    bad([base, '--out', 'OUT', '--channels', 'half'], /--channels must be a number, got 'half'/);
    bad([base, '--out', 'OUT', '--heads', '1'], /--heads prunes a GPT/);
    bad([base, '--out', 'OUT', '--channels', '0.5', '--criterion', 'l3'], /--criterion must be l1, l2, gamma, got 'l3'/);
    bad([join(dir, 'missing'), '--out', 'OUT', '--channels', '0.5'], /missing does not exist/);
    bad([base, '--channels', '0.5'], /needs --out/);
    const before = readdirSync(out).sort();
    const r = weft('prune', base, '--out', out, '--channels', '0.5');
    assert.match(r.stderr, /--out .*pruned-run already exists/);
    assert.deepEqual(readdirSync(out).sort(), before, 'the existing --out untouched');
    const noConfig = join(dir, 'no-config');
    saveCheckpoint(noConfig, 1, { weights: new Map(), optimizer: new Map(), state: {} });
    bad([noConfig, '--out', 'OUT', '--channels', '0.5'], /no-config.*state\.json has no run config/);
    assert.deepEqual(readdirSync(dir).filter((n) => n.includes('.tmp-')), [], 'no temporary directory left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weft prune on a GPT run: --heads and --neurons give a run whose exported KV-cache step model agrees with its whole-sequence model; a CNN flag is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-prune-gpt-'));
  try {
    const base = join(dir, 'base');
    const cfg = parseConfig({
      out: base, model: { ctx: 16, d: 16, layers: 2, heads: 4 },
      train: { steps: 2, batch: 2, threads: 1 }, eval: { every: 2, windows: 2 }, checkpoint: { every: 2 }, sample: { tokens: 0 },
    }, 'test config');
    await new Trainer(cfg).run({ out: null });
    const out = join(dir, 'p');
    const bad = weft('prune', base, '--out', out, '--channels', '0.5');
    assert.match(bad.stderr, /--channels prunes a CNN; this is a GPT/);
    assert.ok(!existsSync(out));
    const p = weft('prune', base, '--out', out, '--heads', '1', '--neurons', '0.5', '--criterion', 'l2');
    assert.equal(p.status, 0, p.stderr);
    const c2 = loadConfig(join(out, 'config.json'));
    assert.deepEqual([c2.model.heads, c2.model.headDim, c2.model.mlpHidden], [3, 4, 32]);
    const onnx = join(dir, 'g.onnx');
    const e = weft('export', join(out, 'pruned'), onnx);
    assert.equal(e.status, 0, e.stderr);
    // Whole sequence of 5 tokens vs a prefill of 4 and a step of 1 over the cache [1, 3, 4, 4].
    const ids = [3, 1, 4, 1, 5].map(BigInt);
    const whole = await createInferenceSession(readFileSync(onnx), { threads: 1 });
    const step = await createInferenceSession(readFileSync(join(dir, 'g.step.onnx')), { threads: 1 });
    try {
      const all = (await whole.run({ idx: { dtype: 'int64', dims: [1, 5], data: BigInt64Array.from(ids) } }))['logits']!.data as Float32Array;
      const empty = (): { dtype: 'float32'; dims: number[]; data: Float32Array } => ({ dtype: 'float32', dims: [1, 3, 0, 4], data: new Float32Array(0) });
      const pre = await step.run({ idx: { dtype: 'int64', dims: [1, 4], data: BigInt64Array.from(ids.slice(0, 4)) }, past_key_0: empty(), past_value_0: empty(), past_key_1: empty(), past_value_1: empty() });
      const past = (n: string): { dtype: 'float32'; dims: number[]; data: Float32Array } => ({ dtype: 'float32', dims: [1, 3, 4, 4], data: pre[n]!.data as Float32Array });
      const last = await step.run({ idx: { dtype: 'int64', dims: [1, 1], data: BigInt64Array.from(ids.slice(4)) }, past_key_0: past('present_key_0'), past_value_0: past('present_value_0'), past_key_1: past('present_key_1'), past_value_1: past('present_value_1') });
      const V = 256;
      assertClose(last['logits']!.data as Float32Array, all.subarray(4 * V, 5 * V), 1e-4, 'cached step vs whole sequence');
    } finally { await whole.release(); await step.release(); }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});


test('a GPT with headDim and mlpHidden off their defaults (a pruned shape) trains at tp=2 with the single-process losses', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-prune-tp-'));
  try {
    const cfg = join(dir, 'c.json');
    writeFileSync(cfg, JSON.stringify({
      out: join(dir, 'one'), model: { ctx: 16, d: 32, layers: 2, heads: 2, headDim: 8, mlpHidden: 48 },
      train: { steps: 3, batch: 2, lr: 3e-3, warmup: 1, schedule: 'constant', threads: 1 }, eval: { every: 100, windows: 2 }, checkpoint: { every: 100 }, sample: { tokens: 0 },
    }));
    const one = weft('train', cfg);
    assert.equal(one.status, 0, one.stderr);
    const two = weft('train', cfg, '--set', `out=${join(dir, 'tp2')}`, '--nproc', '2', '--set', 'parallel.tp=2');
    assert.equal(two.status, 0, two.stderr);
    const curve = (run: string): number[] => readFileSync(join(dir, run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
    const [a, b] = [curve('one'), curve('tp2')];
    assert.equal(a.length, 3);
    a.forEach((l, i) => assert.ok(Math.abs(l - b[i]!) <= 1e-5 * l, `step ${i + 1}: loss ${b[i]} at tp=2 vs ${l}`));
    // 2 heads of 8 on d 32: a model d / heads would not build.
    assert.equal(loadCheckpoint(join(dir, 'one')).weights.get('h0.attn.qkv.w')!.shape.join('x'), '32x48');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
