/**
 * Unstructured magnitude pruning (train/prune.ts, `train.prune`): Zhu & Gupta's schedule against
 * its formula; the masks against a sort (the exact count per tensor for 'layer', the globally
 * smallest magnitudes for 'global', ties by position, monotone); through the Trainer: pruned
 * weights exactly zero and held there through fine-tuning (they regrow once the mask is off),
 * nothing else zeroed, exact resume with the masks from the checkpoint, data parallelism (ZeRO 0,
 * 1, 2 on 2 thread ranks: the same masks on every rank, one process's with the combined batch);
 * config errors naming the field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchThreads } from '../src/comm/threads/launch.js';
import { GPT } from '../src/nn/gpt.js';
import { convNet } from '../src/nn/vision.js';
import { Layout } from '../src/runtime/flat.js';
import { Rng } from '../src/tensor/random.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { parseConfig } from '../src/train/config.js';
import type { RunConfig } from '../src/train/config.js';
import { isMaskUpdate, prunableNames, Pruner, pruneSchedule, targetSparsity } from '../src/train/prune.js';
import type { PruneSchedule } from '../src/train/prune.js';
import { Trainer } from '../src/train/trainer.js';
import { trainPruned } from './prune_rank.js';
import type { PruneRankArgs, PruneRankResult } from './prune_rank.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'weft-prune-'));

test('schedule: s_t = s_f + (s_i - s_f)(1 - (t - t0) / (t1 - t0))^3 on the ramp, 0 before it, s_f after; updates every dt and at t1', () => {
  const s: PruneSchedule = { sparsity: 0.9, initial: 0.1, start: 10, end: 50, every: 10 };
  // By hand: (1 - 10/40)^3 = 0.421875, (1/2)^3 = 0.125, (1/4)^3 = 1/64.
  const want: [number, number][] = [[0, 0], [9, 0], [10, 0.1], [20, 0.9 - 0.8 * 0.421875], [30, 0.9 - 0.8 * 0.125], [40, 0.9 - 0.8 / 64], [50, 0.9], [51, 0.9], [500, 0.9]];
  for (const [t, v] of want) assert.ok(Math.abs(targetSparsity(s, t) - v) < 1e-12, `s_${t} = ${targetSparsity(s, t)}, want ${v}`);
  assert.deepEqual(Array.from({ length: 80 }, (_, t) => t).filter((t) => isMaskUpdate(s, t)), [10, 20, 30, 40, 50]);
  // An end off the dt grid is still an update (the ramp reaches s_f there).
  assert.deepEqual(Array.from({ length: 80 }, (_, t) => t).filter((t) => isMaskUpdate({ ...s, end: 45 }, t)), [10, 20, 30, 40, 45]);
  // One-shot pruning: start = end.
  assert.equal(targetSparsity({ ...s, start: 5, end: 5 }, 5), 0.9);
  const dflt = parseConfig({ train: { steps: 300, prune: { sparsity: 0.5 } } }).train.prune;
  assert.deepEqual(pruneSchedule(dflt, 300), { sparsity: 0.5, initial: 0, start: 0, end: 225, every: 10 }, 'end -1: round(0.75 x 300)');
});

test('prunable: every Linear and Conv2d weight; not embeddings, the tied head, norms or biases', () => {
  const gpt = new GPT({ vocab: 64, ctx: 8, d: 16, layers: 2, heads: 2 });
  assert.deepEqual(prunableNames(gpt), ['h0.attn.qkv.w', 'h0.attn.proj.w', 'h0.mlp.fc1.w', 'h0.mlp.fc2.w', 'h1.attn.qkv.w', 'h1.attn.proj.w', 'h1.mlp.fc1.w', 'h1.mlp.fc2.w']);
  const cnn = convNet({ input: [1, 28, 28], channels: [4, 8], hidden: 16, classes: 10, batchNorm: true, dropout: 0 });
  assert.deepEqual(prunableNames(cnn), ['0.w', '4.w', '9.w', '11.w'], 'two conv kernels and two Linear weights; BatchNorm and biases kept');
});

/** Three tensors of random values (with repeats: ties at the threshold), laid out with padding between them. */
function fixture(seed: number): { layout: Layout; data: Float32Array; names: string[] } {
  const names = ['a', 'b', 'c'];
  const layout = new Layout([{ name: 'a', shape: [7, 9] }, { name: 'skip', shape: [5] }, { name: 'b', shape: [40] }, { name: 'c', shape: [3, 2, 5] }]);
  const data = new Float32Array(layout.size);
  const rng = new Rng(seed);
  // Quantized to 1/16: many equal magnitudes, so ties are broken by position, of both signs.
  for (let i = 0; i < data.length; i++) data[i] = Math.round((rng.uniform() * 2 - 1) * 16) / 16 * (i % 3 === 0 ? 3 : 1);
  return { layout, data, names };
}

/** The k smallest |w| of `idx` (flat indices in order), ties by position: the reference by sort. */
function smallestBySort(data: Float32Array, idx: number[], k: number): Set<number> {
  return new Set([...idx].sort((i, j) => Math.abs(data[i]!) - Math.abs(data[j]!) || i - j).slice(0, k));
}

/** The flat indices the masks prune, ascending. */
const prunedIndices = (p: Pruner, layout: Layout): number[] => [...p.masks()].flatMap(([name, m]) => [...m].flatMap((v, j) => (v === 0 ? [layout.slot(name).offset + j] : [])));
const indicesOf = (layout: Layout, name: string): number[] => { const s = layout.slot(name); return Array.from({ length: s.size }, (_, i) => s.offset + i); };
const sched = (sparsity: number): PruneSchedule => ({ sparsity, initial: 0, start: 0, end: 0, every: 1 });

test("scope 'layer': exactly round(s n) pruned in each tensor, the smallest |w| by a sort (ties by position); other tensors untouched", () => {
  const { layout, data, names } = fixture(1);
  const before = data.slice();
  const p = new Pruner(layout, names, 'layer', sched(0.7));
  p.step(0, data);
  for (const name of names) {
    const idx = indicesOf(layout, name);
    const want = smallestBySort(before, idx, Math.round(0.7 * idx.length));
    const mask = p.masks().get(name)!;
    idx.forEach((i, j) => {
      assert.equal(mask[j], want.has(i) ? 0 : 1, `${name}[${j}] (|w| ${Math.abs(before[i]!)})`);
      assert.equal(data[i], want.has(i) ? 0 : before[i], `${name}[${j}] after apply`);
    });
    assert.equal(mask.filter((m) => m === 0).length, Math.round(0.7 * idx.length), `${name}: round(0.7 x ${idx.length})`);
  }
  assert.deepEqual(data.subarray(layout.slot('skip').offset, layout.slot('skip').offset + 5), before.subarray(layout.slot('skip').offset, layout.slot('skip').offset + 5));
});

test("scope 'global': the round(s N) globally smallest |w| (a sort over every prunable weight), then monotone: later updates add only to the pruned set", () => {
  const { layout, data, names } = fixture(2);
  const all = names.flatMap((n) => indicesOf(layout, n));
  const p = new Pruner(layout, names, 'global', sched(0.5));
  const first = data.slice();
  p.update(0.5, data);
  p.apply(data);
  const want = smallestBySort(first, all, Math.round(0.5 * all.length));
  assert.deepEqual(prunedIndices(p, layout), [...want].sort((x, y) => x - y));
  for (const i of all) assert.equal(data[i], want.has(i) ? 0 : first[i], `index ${i} after apply`);
  assert.equal(p.pruned, Math.round(0.5 * all.length));
  // The layers end up with different sparsities (one threshold, not one share each).
  const shares = names.map((n) => p.masks().get(n)!.filter((m) => m === 0).length / layout.slot(n).size);
  assert.ok(Math.max(...shares) - Math.min(...shares) > 0.05, `per-tensor shares ${shares.join(', ')}`);
  // Training moves the survivors: the next update prunes the smallest survivors, keeps every earlier prune.
  const rng = new Rng(9);
  for (const i of all) if (!want.has(i)) data[i] = (rng.uniform() * 2 - 1) / 4;
  const second = data.slice();
  p.update(0.8, data);
  p.apply(data);
  const survivors = all.filter((i) => !want.has(i));
  const more = smallestBySort(second, survivors, Math.round(0.8 * all.length) - want.size);
  assert.deepEqual(prunedIndices(p, layout), [...want, ...more].sort((x, y) => x - y));
  for (const i of all) assert.equal(data[i], want.has(i) || more.has(i) ? 0 : second[i], `index ${i}`);
  assert.equal(p.sparsity(data), Math.round(0.8 * all.length) / all.length);
});

test('masks from a checkpoint: restored with their counts; a missing, resized or non-0/1 mask is an error naming the file and the tensor; none at all leaves every weight alive', () => {
  const { layout, data, names } = fixture(3);
  const saved = new Pruner(layout, names, 'layer', sched(0.5));
  saved.step(0, data);
  const tensors = new Map([...saved.masks()].map(([n, m]) => [`mask.${n}`, { data: m.slice() }]));
  const p = new Pruner(layout, names, 'layer', sched(0.5));
  p.load(tensors, 'ck/optimizer.safetensors');
  assert.deepEqual(p.masks(), saved.masks());
  assert.equal(p.pruned, saved.pruned);
  const fresh = (): Pruner => new Pruner(layout, names, 'layer', sched(0.5));
  const without = new Map(tensors);
  without.delete('mask.b');
  assert.throws(() => fresh().load(without, 'ck/optimizer.safetensors'), /ck\/optimizer\.safetensors: missing tensor 'mask\.b'/);
  assert.throws(() => fresh().load(new Map([...tensors, ['mask.c', { data: new Uint8Array(3) }]]), 'ck/o'), /ck\/o: tensor 'mask\.c' has 3 elements, the model's 'c' has 30/);
  const two = Uint8Array.from(tensors.get('mask.a')!.data);
  two[5] = 2;
  assert.throws(() => fresh().load(new Map([...tensors, ['mask.a', { data: two }]]), 'ck/o'), /ck\/o: tensor 'mask\.a' holds 2 at 5; a mask holds 0 \(pruned\) or 1 \(kept\)/);
  const none = fresh();
  none.load(new Map(), 'ck/o');
  assert.equal(none.pruned, 0);
});

const tiny = (out: string, prune: Record<string, unknown>, extra: Record<string, unknown> = {}): RunConfig => parseConfig({
  out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
  train: { steps: 12, batch: 4, lr: 3e-3, warmup: 2, threads: 1, prune: { sparsity: 0.8, start: 0, end: 6, every: 2, ...prune }, ...extra },
  eval: { every: 6, windows: 4 }, checkpoint: { every: 6, keep: 3 }, log: { every: 3 }, sample: { tokens: 0 },
}, 'prune test');

const step = (run: string, s: number): string => join(run, `step-${String(s).padStart(6, '0')}`);
const zerosOf = (d: ArrayLike<number>): number => { let z = 0; for (let i = 0; i < d.length; i++) if (d[i] === 0) z++; return z; };

test('training: pruned weights are exactly 0 at every logged step and stay 0 through fine-tuning (regrowing without the mask); no other tensor gains a zero', async () => {
  const [a, b] = [tmp(), tmp()];
  try {
    const t = new Trainer(tiny(a, { scope: 'layer' }));
    await t.run({ out: null });
    const names = new Set(prunableNames(t.task.model));
    const [c6, c12] = [loadCheckpoint(step(a, 6)), loadCheckpoint(step(a, 12))];
    for (const name of names) {
      const [m6, m12, w12] = [c6.optimizer.get(`mask.${name}`)!, c12.optimizer.get(`mask.${name}`)!, c12.weights.get(name)!];
      assert.equal(m12.dtype, 'U8');
      assert.deepEqual(m12.shape, w12.shape);
      assert.deepEqual(m12.data, m6.data, `${name}: the masks are fixed after the ramp (step 6)`);
      assert.equal(zerosOf(m12.data), Math.round(0.8 * m12.data.length), `${name}: round(0.8 n) pruned ('layer')`);
      m12.data.forEach((m, i) => { if (m === 0) assert.equal(w12.data[i], 0, `${name}[${i}] pruned and zero`); else assert.notEqual(w12.data[i], 0, `${name}[${i}] kept`); });
    }
    for (const [name, w] of c12.weights) if (!names.has(name)) assert.equal(zerosOf(w.data), 0, `${name} is not prunable: no zeros`);
    // The metric: the share of zero prunable weights at each logged step (3, 6, 9, 12): below s_f on the ramp, exactly s_f after it.
    const lines = readFileSync(join(a, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; sparsity?: number });
    const logged = lines.filter((l) => l.sparsity !== undefined);
    assert.deepEqual(logged.map((l) => l.step), [3, 6, 9, 12]);
    const n = t.pruner!.size;
    // Step 3 carries step 2's masks: s_2 = 0.8 (1 - (2/3)^3) in each tensor, rounded per tensor.
    const s2 = [...t.pruner!.masks().values()].reduce((acc, m) => acc + Math.round(targetSparsity(t.pruner!.schedule, 2) * m.length), 0) / n;
    assert.equal(logged[0]!.sparsity, s2);
    for (const l of logged.slice(1)) assert.equal(l.sparsity, t.pruner!.pruned / n);
    // Without the mask the gradients move them off zero at once: fine-tune step 6's checkpoint with pruning off.
    const dense = new Trainer(tiny(b, { sparsity: 0 }, { steps: 2, init: step(a, 6) }));
    await dense.run({ out: null });
    const after = loadCheckpoint(step(b, 2));
    for (const name of names) {
      const m = c6.optimizer.get(`mask.${name}`)!.data;
      const w = after.weights.get(name)!.data;
      let regrown = 0;
      for (let i = 0; i < m.length; i++) if (m[i] === 0 && w[i] !== 0) regrown++;
      assert.ok(regrown > 0.9 * zerosOf(m), `${name}: ${regrown} of ${zerosOf(m)} pruned weights regrow without the mask`);
    }
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test("the CNN: one-shot 'layer' pruning (start = end = 0) leaves exactly round(0.5 n) zeros in each conv kernel and Linear weight after training steps", async () => {
  const dir = tmp();
  try {
    const t = new Trainer(parseConfig({
      out: dir, model: { kind: 'cnn', channels: [4, 8], hidden: 16, batchNorm: true, dropout: 0 }, data: { images: 'mnist' },
      train: { steps: 3, batch: 8, lr: 3e-3, warmup: 0, threads: 1, prune: { sparsity: 0.5, scope: 'layer', start: 0, end: 0 } },
      eval: { every: 3, batch: 1000 }, checkpoint: { every: 3 },
    }, 'prune cnn test'));
    await t.run({ out: null });
    const ck = loadCheckpoint(step(dir, 3));
    for (const name of ['0.w', '4.w', '9.w', '11.w']) {
      const w = ck.weights.get(name)!.data;
      assert.equal(zerosOf(w), Math.round(0.5 * w.length), `${name}: ${w.length} weights`);
    }
    // BatchNorm's scales start at 1 and are not prunable. (The Linear biases start at 0, and one of a ReLU unit dead on every batch stays 0: no test of the masks.)
    for (const name of ['1.w', '5.w']) assert.equal(zerosOf(ck.weights.get(name)!.data), 0, `${name} is not prunable`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resume: a pruning run stopped at step 5 (mid-ramp) continues with exactly the losses and masks of an uninterrupted one', async () => {
  const [a, b] = [tmp(), tmp()];
  try {
    const full = new Trainer(tiny(a, {}));
    const whole = await full.run({ out: null });
    const first = await new Trainer(tiny(b, {})).run({ out: null, stopAfter: 5 });
    assert.deepEqual(first.losses, whole.losses.slice(0, 5));
    const again = new Trainer(tiny(b, {}));
    const rest = await again.run({ out: null, resume: true });
    assert.deepEqual(rest.losses, whole.losses.slice(5), 'losses 6..12 equal the uninterrupted run exactly');
    assert.deepEqual(rest.valLosses.at(-1), whole.valLosses.at(-1));
    assert.deepEqual(again.pruner!.masks(), full.pruner!.masks());
    assert.deepEqual(again.params.flat.data, full.params.flat.data);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('data parallel: 2 thread ranks at ZeRO 0, 1 and 2 hold the same masks, those of one process with the combined batch', async () => {
  const dir = tmp();
  try {
    const one = await trainPruned(undefined, { out: join(dir, 'one'), zero: 0, batch: 4 });
    const entry = new URL('./prune_rank.js', import.meta.url);
    for (const zero of [0, 1, 2]) {
      const ranks = await launchThreads<PruneRankResult>({ nproc: 2, entry, args: { out: join(dir, `z${zero}`), zero, batch: 2 } satisfies PruneRankArgs, timeoutMs: 60_000 });
      assert.deepEqual(ranks[1]!.masks, ranks[0]!.masks, `ZeRO ${zero}: rank 1's masks are rank 0's`);
      assert.equal(ranks[0]!.sparsity, zerosOf(ranks[0]!.masks) / ranks[0]!.masks.length, `ZeRO ${zero}: zeros where the masks are`);
      // Float32 rounding of the reduction may move a weight across the threshold; none did here (measured), a few would be tolerable.
      const differ = ranks[0]!.masks.reduce((acc, m, i) => acc + (m !== one.masks[i] ? 1 : 0), 0);
      assert.ok(differ <= 2, `ZeRO ${zero}: ${differ} mask entries differ from one process's`);
      ranks[0]!.losses.forEach((l, i) => assert.ok(Math.abs(l - one.losses[i]!) <= 1e-5 * one.losses[i]!, `ZeRO ${zero}: step ${i + 1} loss ${l} vs ${one.losses[i]}`));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('config errors name the field: sparsity outside [0, 1), an unknown scope, a ramp past train.steps, parallel modes that shard parameters', () => {
  const bad = (prune: Record<string, unknown>, parallel: Record<string, unknown> = {}): () => RunConfig => () => parseConfig({ train: { steps: 100, prune }, parallel }, 'p.json');
  assert.throws(bad({ sparsity: 1 }), /p\.json: 'train\.prune\.sparsity' must be < 1 .*got 1/);
  assert.throws(bad({ sparsity: 1.5 }), /'train\.prune\.sparsity' must be < 1/);
  assert.throws(bad({ sparsity: -0.1 }), /p\.json: 'train\.prune\.sparsity' must be >= 0, got -0\.1/);
  assert.throws(bad({ sparsity: 0.5, scope: 'channel' }), /'train\.prune\.scope' must be one of 'global', 'layer', got "channel"/);
  assert.throws(bad({ sparsity: 0.5, initial: 0.6 }), /'train\.prune\.initial' \(0\.6\) must be at most 'train\.prune\.sparsity' \(0\.5\)/);
  assert.throws(bad({ sparsity: 0.5, end: 101 }), /'train\.prune\.end' \(101\) must be <= 'train\.steps' \(100\)/);
  assert.throws(bad({ sparsity: 0.5, start: 80 }), /'train\.prune\.end' \(75 = round\(0\.75 x train\.steps\)\) must be >= 'train\.prune\.start' \(80\)/);
  assert.throws(bad({ sparsity: 0.5, every: 0 }), /'train\.prune\.every' must be >= 1, got 0/);
  assert.throws(bad({ sparsity: 0.5 }, { tp: 2 }), /p\.json: 'train\.prune' needs every rank to hold the whole parameters \(parallel\.tp 2,/);
  assert.throws(bad({ sparsity: 0.5 }, { pp: 2 }), /'train\.prune' needs .*parallel\.pp 2/);
  assert.throws(bad({ sparsity: 0.5 }, { zero: 3 }), /'train\.prune' needs .*parallel\.zero 3/);
  // ZeRO 1 and 2 keep whole parameters on every rank; pruning off ignores the other fields.
  assert.equal(parseConfig({ train: { prune: { sparsity: 0.5 } }, parallel: { zero: 2 } }).parallel.zero, 2);
  assert.equal(parseConfig({ train: { steps: 10, prune: { start: 80 } }, parallel: { tp: 2 } }).train.prune.sparsity, 0);
});
