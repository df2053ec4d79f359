/**
 * npm run bench:prune — unstructured magnitude pruning on the small GPT (recipes/brown-small.json,
 * docs/prune.md), then Deep Compression's pipeline:
 *   1. dense: the recipe as it is (300 steps), or an existing run (--dense DIR);
 *   2. pruned: `train.init` from the dense run, `train.prune.sparsity` 0.9 on Zhu & Gupta's cubic
 *      ramp over the first `--ramp` fine-tuning steps, masks fixed for the rest;
 *   3. control: the same fine-tuning without pruning (what the extra steps alone give);
 *   4. the masks' cost per step on the small GPT's 3.1M prunable weights: applying them (after
 *      every step) and recomputing them (every `every` steps), beside the step's time;
 *   5. `weft export` (logits) of dense and pruned, `weft quantize --mode dynamic` of both: file
 *      bytes, gzip bytes (zeros compress; a dense ONNX file does not shrink from them), the
 *      validation loss of each ONNX file in onnxruntime, and `bench-infer` latency (unstructured
 *      zeros do not make dense kernels faster).
 * Every run is single-threaded (train.threads=1) and its output goes under --out. Prints one JSON
 * object (the CPU's model and ISA, the configs as `weft train` overrides, the figures) and writes
 * bench/results/prune.json (prune-<steps>.json for other --steps or --ramp).
 *
 *   npm run bench:prune -- [--dense DIR] [--out DIR] [--steps 300] [--ramp 200] [--sparsity 0.9] [--lr 1e-3] [--windows 256] [--no-control]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { evalWindows } from '../src/data/dataset.js';
import { benchInfer } from '../src/deploy/bench_infer.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import { compile } from '../src/tensor/compile.js';
import { latestCheckpoint } from '../src/train/checkpoint.js';
import { loadConfig } from '../src/train/config.js';
import { Pruner, prunableNames } from '../src/train/prune.js';
import { Trainer } from '../src/train/trainer.js';
import type { TrainResult } from '../src/train/trainer.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const RECIPE = join(root, 'recipes/brown-small.json');
const CLI = join(root, 'dist/src/cli/main.js');
const argv = process.argv.slice(2);
const arg = (name: string, d: string): string => { const i = argv.indexOf(name); return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : d; };
const out = arg('--out', mkdtempSync(join(tmpdir(), 'weft-bench-prune-')));
const [steps, ramp, sparsity, lr, windows] = [Number(arg('--steps', '300')), Number(arg('--ramp', '200')), Number(arg('--sparsity', '0.9')), Number(arg('--lr', '1e-3')), Number(arg('--windows', '256'))];
const control = !argv.includes('--no-control');

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };
const round = (x: number, d = 4): number => +x.toFixed(d);

/** A run of the recipe with `--set` overrides; returns its trainer, result, seconds and the overrides. */
async function train(name: string, sets: string[]): Promise<{ trainer: Trainer; result: TrainResult; seconds: number; sets: string[] }> {
  const all = [`out=${join(out, name)}`, 'train.threads=1', 'sample.tokens=0', ...sets];
  const trainer = new Trainer(loadConfig(RECIPE, all));
  const t0 = performance.now();
  const result = await trainer.run({ out: process.stderr });
  return { trainer, result, seconds: (performance.now() - t0) / 1000, sets: all };
}

/** The trainer's validation loss (its eval.windows windows) of a run's last evaluation. */
const valLoss = (r: TrainResult): number => r.evals.at(-1)!.metrics['val_loss']!;

/**
 * Mean next-byte cross-entropy (nats per byte) of an exported logits model over `n` validation
 * windows spread over the held-out text, in onnxruntime, batches of 16; the loss is weft's own
 * crossEntropy op on the logits that come back.
 */
async function onnxValLoss(file: string, trainer: Trainer, n: number): Promise<number> {
  const val = trainer.task.eval!.data;
  const ids = evalWindows(val, n);
  const session = await createInferenceSession(readFileSync(file), { threads: 1 });
  const ce = compile((logits, y) => [logits.reshape([-1, logits.shape[2] as number]).crossEntropy(y.reshape([-1]))], 'bench_prune_ce');
  let sum = 0;
  try {
    for (let s = 0; s < ids.length; s += 16) {
      const rows = ids.slice(s, s + 16).map((i) => val.record(i));
      const T = rows[0]![0]!.length;
      const x = new BigInt64Array(rows.length * T);
      const y = new BigInt64Array(rows.length * T);
      rows.forEach(([a, b], k) => { for (let j = 0; j < T; j++) { x[k * T + j] = BigInt(Number(a![j])); y[k * T + j] = BigInt(Number(b![j])); } });
      const logits = (await session.run({ idx: { dtype: 'int64', dims: [rows.length, T], data: x } }))['logits']!;
      const [l] = await ce({ data: logits.data as Float32Array, shape: logits.dims, dtype: 'float32' }, { data: y, shape: [rows.length, T], dtype: 'int64' });
      sum += Number(l![0]) * rows.length;
    }
  } finally {
    await session.release();
  }
  return sum / ids.length;
}

/** The masks' cost on the pruned trainer's parameters: apply (median of 50) and a full recompute to `sparsity` from dense masks (median of 5), ms. */
function maskCost(trainer: Trainer): { prunable: number; apply_ms: number; update_ms: number } {
  const data = trainer.params.flat.data;
  const p = trainer.pruner!;
  const apply = Array.from({ length: 50 }, () => { const t0 = performance.now(); p.apply(data); return performance.now() - t0; });
  const copy = data.slice();
  const update = Array.from({ length: 5 }, () => {
    const fresh = new Pruner(trainer.params.flat.layout, prunableNames(trainer.task.model), 'global', p.schedule);
    const t0 = performance.now();
    fresh.update(sparsity, copy);
    return performance.now() - t0;
  });
  return { prunable: p.size, apply_ms: round(median(apply), 3), update_ms: round(median(update), 2) };
}

/** The last val_loss in a run directory's metrics.jsonl (a dense run given with --dense). */
function lastValLoss(dir: string): number | null {
  const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { val_loss?: number });
  return lines.filter((l) => l.val_loss !== undefined).at(-1)?.val_loss ?? null;
}

const weft = (...args: string[]): string => execFileSync(process.execPath, [CLI, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

async function main(): Promise<void> {
  mkdirSync(out, { recursive: true });
  const cpu = cpuInfo();
  const load = loadavg()[0]!;
  const given = arg('--dense', '');
  // The dense run: given, or the recipe trained here. Its trainer (for the task's validation data) is rebuilt either way.
  const dense = given !== '' && latestCheckpoint(given) !== null
    ? { dir: given, seconds: null as number | null, sets: [`out=${given}`, 'train.threads=1'], val: lastValLoss(given) as number | null }
    : await train('dense', []).then((r) => ({ dir: join(out, 'dense'), seconds: r.seconds, sets: r.sets, val: valLoss(r.result) as number | null }));
  const fine = [`train.init=${dense.dir}`, `train.steps=${steps}`, `train.lr=${lr}`, 'train.warmup=20', `eval.every=${Math.max(1, Math.round(steps / 3))}`, `checkpoint.every=${steps}`];
  const pruned = await train('pruned', [...fine, `train.prune.sparsity=${sparsity}`, `train.prune.end=${ramp}`, 'train.prune.every=10']);
  const ctl = control ? await train('control', fine) : null;
  const prunedSparsity = pruned.trainer.pruner!.sparsity(pruned.trainer.params.flat.data);
  const stepMs = (1000 * pruned.seconds) / steps;
  const cost = maskCost(pruned.trainer);

  // Deep Compression's last stages with the existing commands: export, dynamic int8.
  const files: Record<string, string> = {};
  for (const [name, dir] of [['dense', dense.dir], ['pruned', join(out, 'pruned')]] as const) {
    files[`${name}_fp32`] = join(out, `${name}.onnx`);
    weft('export', dir, files[`${name}_fp32`]!, '--kind', 'logits');
    files[`${name}_int8`] = join(out, `${name}.int8.onnx`);
    weft('quantize', files[`${name}_fp32`]!, files[`${name}_int8`]!, '--mode', 'dynamic');
  }
  const onnx: Record<string, { bytes: number; gzip_bytes: number; val_loss: number }> = {};
  for (const [k, f] of Object.entries(files)) {
    const bytes = readFileSync(f);
    onnx[k] = { bytes: bytes.length, gzip_bytes: gzipSync(bytes, { level: 9 }).length, val_loss: round(await onnxValLoss(f, pruned.trainer, windows), 6) };
  }
  // The exported dense model on the trainer's own 20 windows: equal to its val_loss (the export and this evaluation check each other).
  const check = round(await onnxValLoss(files['dense_fp32']!, pruned.trainer, 20), 5);
  const infer = await benchInfer({ models: { dense_fp32: files['dense_fp32']!, pruned_fp32: files['pruned_fp32']!, pruned_int8: files['pruned_int8']! }, batches: [1], threads: [1], dims: { seq: 128 }, runs: 10, blocks: 3, warmup: 3 });

  const denseVal = dense.val ?? null;
  const report = {
    bench: 'prune', machine: { model: cpu.model, isa: cpu.isa, cores: cpu.cores }, loadavg_1min_before: round(load, 2), measured: new Date().toISOString(),
    recipe: 'recipes/brown-small.json (GPT d 256, 4 layers, ctx 128, byte vocab; 300 steps, batch 16)',
    commands: {
      dense: `weft train recipes/brown-small.json ${dense.sets.map((s) => `--set ${s}`).join(' ')}`,
      pruned: `weft train recipes/brown-small.json ${pruned.sets.map((s) => `--set ${s}`).join(' ')}`,
      ...(ctl ? { control: `weft train recipes/brown-small.json ${ctl.sets.map((s) => `--set ${s}`).join(' ')}` } : {}),
      export: 'weft export <run> <run>.onnx --kind logits; weft quantize <run>.onnx <run>.int8.onnx --mode dynamic',
    },
    val_loss_note: 'nats per byte; trainer: its eval.windows (20) validation windows; onnx: --windows windows, the same model in onnxruntime',
    dense: { val_loss: denseVal, train_s: dense.seconds === null ? null : round(dense.seconds, 1) },
    pruned: {
      val_loss: round(valLoss(pruned.result)), minus_dense: denseVal === null ? null : round(valLoss(pruned.result) - denseVal), sparsity: round(prunedSparsity, 6),
      prunable_weights: cost.prunable, ramp: `0 -> ${sparsity} over steps 0..${ramp} (every 10), fixed to step ${steps}`, train_s: round(pruned.seconds, 1),
      val_curve: pruned.result.evals.map((e) => [e.step, round(e.metrics['val_loss']!)]),
    },
    control: ctl ? { val_loss: round(valLoss(ctl.result)), train_s: round(ctl.seconds, 1), note: 'the same fine-tuning steps without pruning' } : null,
    mask_cost: { ...cost, step_ms: round(stepMs, 1), per_step_ms: round(cost.apply_ms + cost.update_ms / 10, 3), per_step_fraction: round((cost.apply_ms + cost.update_ms / 10) / stepMs, 5) },
    onnx, onnx_check: { windows: 20, dense_fp32_onnx_val_loss: check, dense_trainer_val_loss: denseVal },
    infer: infer.results.map((r) => ({ model: r.model, p50_ms: r.p50_ms, speedup: r.speedup })),
  };
  const text = JSON.stringify(report, null, 1);
  process.stdout.write(`${text}\n`);
  // Another fine-tuning length is another experiment: its own file beside the default's.
  const file = join(root, `bench/results/prune${steps === 300 && ramp === 200 ? '' : `-${steps}`}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${text}\n`);
}

await main();
