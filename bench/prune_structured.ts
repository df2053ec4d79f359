/**
 * Structured pruning end to end (docs/prune.md), every step a `weft` command run as a child
 * process, so the commands printed are the ones a person reruns:
 *   1. weft train recipes/mnist-cnn.json (the unpruned CNN, [32, 64, 128], fc 128);
 *   2. weft prune <base> --out <p> --channels 0.5 (half of every stage's channels, by BatchNorm |gamma|);
 *   3. weft train <p>/config.json --set train.steps=N ... (fine-tuning from the pruned weights);
 *   4. weft export of the base, of the pruned model before fine-tuning and after;
 *   5. weft quantize --mode static --calibrate mnist of the fine-tuned pruned model (Deep
 *      Compression's prune -> fine-tune -> quantize);
 *   6. test accuracy of each ONNX file in onnxruntime (the whole test split, 2,004 images) and
 *      weft bench-infer of the base, the pruned and the pruned int8 model side by side.
 * Prints one JSON object (with the CPU and its ISA) and writes bench/results/prune_structured.json.
 *
 * With --model gpt, the GPT of recipes/brown-small.json (d 256, 4 layers of 4 heads, MLP 1024;
 * 300 steps) with --heads 1 and --neurons 0.25 removed from every layer: validation loss of the
 * base, of the pruned model before fine-tuning (a 1-step run at lr 0 evaluates it) and after
 * --finetune steps, beside the unpruned model trained the same extra steps (a control); exported
 * sizes and bench-infer of the whole-sequence models (seq 128).
 * Writes bench/results/prune_structured_gpt.json.
 *
 *   npm run build && node dist/bench/prune_structured.js [--steps 1000] [--finetune 300] [--channels 0.5] [--threads 1] [--runs 50] [--dir DIR]
 *   npm run build && node dist/bench/prune_structured.js --model gpt [--steps 300] [--finetune 100] [--heads 1] [--neurons 0.25]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mnist } from '../src/data/mnist.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { evaluateClassifier } from './mnist_onnx.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const recipe = (name: string): string => fileURLToPath(new URL(`../../recipes/${name}`, import.meta.url));

function flag(name: string, d: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? d : process.argv[i + 1] ?? d;
}
const gpt = flag('model', 'cnn') === 'gpt';
const steps = Number(flag('steps', gpt ? '300' : '1000'));
const finetune = Number(flag('finetune', gpt ? '100' : '300'));
const channels = flag('channels', '0.5');
const threads = flag('threads', '1');
const runs = flag('runs', '50');
const dir = process.argv.includes('--dir') ? flag('dir', '') : mkdtempSync(join(tmpdir(), 'weft-bench-prune-'));
mkdirSync(dir, { recursive: true });

const commands: string[] = [];
/** Runs `weft <args>` (its progress on stderr), returns its stdout; a failure stops the bench. */
function weft(...args: string[]): string {
  commands.push(`weft ${args.join(' ')}`);
  process.stderr.write(`$ weft ${args.join(' ')}\n`);
  // Training 1000 steps takes about 2 minutes on one loaded core: 30 minutes is a hang.
  return execFileSync(process.execPath, [CLI, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000, maxBuffer: 64 << 20 });
}

/** The last evaluation a run's metrics.jsonl records (accuracy: the CNN's). */
function lastEval(run: string): { step: number; accuracy?: number; val_loss: number } {
  const rows = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; accuracy?: number; val_loss?: number });
  const e = rows.filter((r) => r.val_loss !== undefined).at(-1)!;
  return { step: e.step, ...(e.accuracy !== undefined ? { accuracy: e.accuracy } : {}), val_loss: e.val_loss! };
}

/** Writes the result to stdout and bench/results/<name>.json. */
function emit(name: string, result: unknown): void {
  const text = JSON.stringify(result, null, 1);
  process.stdout.write(`${text}\n`);
  const results = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(results, { recursive: true });
  writeFileSync(join(results, `${name}.json`), `${text}\n`);
}

async function gptMain(): Promise<void> {
  const [base, pruned, probe, control] = [join(dir, 'gpt-base'), join(dir, 'gpt-pruned'), join(dir, 'gpt-pruned-eval'), join(dir, 'gpt-control')];
  const [heads, neurons] = [flag('heads', '1'), flag('neurons', '0.25')];
  const common = ['--set', `train.threads=${threads}`, '--set', 'sample.tokens=0', '--set', 'log.every=50'];
  const t0 = performance.now();
  weft('train', recipe('brown-small.json'), '--set', `out=${base}`, '--set', `train.steps=${steps}`, '--set', `eval.every=${steps}`, '--set', `checkpoint.every=${steps}`, ...common);
  const trainS = (performance.now() - t0) / 1000;
  const report = JSON.parse(weft('prune', base, '--out', pruned, '--heads', heads, '--neurons', neurons)) as { criterion: string; params: unknown; units: { layer: string; unit: string; before: number; after: number }[] };
  // One step at lr 0 without weight decay changes no weight (test/prune_structured.test.ts): its
  // evaluation is the pruned model's validation loss before fine-tuning.
  weft('train', join(pruned, 'config.json'), '--set', `out=${probe}`, '--set', 'train.steps=1', '--set', 'train.lr=0', '--set', 'train.minLr=0', '--set', 'train.weightDecay=0', '--set', 'eval.every=1', '--set', 'checkpoint.every=1', ...common);
  const t1 = performance.now();
  weft('train', join(pruned, 'config.json'), '--set', `train.steps=${finetune}`, '--set', `train.warmup=${Math.round(finetune / 10)}`, '--set', `eval.every=${finetune}`, '--set', `checkpoint.every=${finetune}`, ...common);
  const finetuneS = (performance.now() - t1) / 1000;
  // The control: the unpruned model trained the same extra steps (300 steps leave it far from
  // converged, so the fine-tuned pruned model is compared with this, not only with the base).
  weft('train', recipe('brown-small.json'), '--set', `out=${control}`, '--set', `train.init=${base}`, '--set', `train.steps=${finetune}`, '--set', `train.warmup=${Math.round(finetune / 10)}`,
    '--set', `eval.every=${finetune}`, '--set', `checkpoint.every=${finetune}`, ...common);
  const onnx = { base: join(dir, 'gpt-base.onnx'), pruned: join(dir, 'gpt-pruned.onnx') };
  weft('export', base, onnx.base, '--kind', 'logits');
  weft('export', pruned, onnx.pruned, '--kind', 'logits');
  const infer = JSON.parse(weft('bench-infer', onnx.base, onnx.pruned, '--batch', '1,8', '--threads', '1', '--dim', 'seq=128', '--runs', runs)) as { results: unknown[] };
  emit('prune_structured_gpt', {
    bench: 'prune_structured_gpt', cpu: cpuInfo(), loadavg_1m: loadavg()[0], dir,
    train: { steps, seconds: +trainS.toFixed(1), eval: lastEval(base) },
    prune: { heads: Number(heads), neurons: Number(neurons), criterion: report.criterion, params: report.params, units: report.units.map((u) => ({ layer: u.layer, unit: u.unit, before: u.before, after: u.after })) },
    pruned_before_finetune: lastEval(probe),
    finetune: { steps: finetune, seconds: +finetuneS.toFixed(1), eval: lastEval(pruned) },
    control_unpruned_same_steps: lastEval(control),
    bytes: { base: statSync(onnx.base).size, pruned: statSync(onnx.pruned).size },
    bench_infer: infer.results,
    commands,
  });
}

async function main(): Promise<void> {
  const [base, pruned] = [join(dir, 'base'), join(dir, 'pruned')];
  const t0 = performance.now();
  weft('train', recipe('mnist-cnn.json'), '--set', `out=${base}`, '--set', `train.steps=${steps}`, '--set', `train.threads=${threads}`, '--set', `eval.every=${steps}`, '--set', `checkpoint.every=${steps}`, '--set', 'log.every=100');
  const trainS = (performance.now() - t0) / 1000;
  const report = JSON.parse(weft('prune', base, '--out', pruned, '--channels', channels)) as { criterion: string; params: unknown; units: { layer: string; before: number; after: number }[] };
  const t1 = performance.now();
  weft('train', join(pruned, 'config.json'), '--set', `train.steps=${finetune}`, '--set', `train.warmup=${Math.round(finetune / 10)}`, '--set', 'train.lr=1e-3',
    '--set', `train.threads=${threads}`, '--set', `eval.every=${finetune}`, '--set', `checkpoint.every=${finetune}`, '--set', 'log.every=100');
  const finetuneS = (performance.now() - t1) / 1000;
  const onnx = { base: join(dir, 'base.onnx'), pruned_no_finetune: join(dir, 'pruned0.onnx'), pruned: join(dir, 'pruned.onnx'), pruned_int8: join(dir, 'pruned.int8.onnx') };
  weft('export', base, onnx.base);
  weft('export', join(pruned, 'pruned'), onnx.pruned_no_finetune);
  weft('export', pruned, onnx.pruned);
  weft('quantize', onnx.pruned, onnx.pruned_int8, '--mode', 'static', '--calibrate', 'mnist', '--json');
  const { test } = mnist();
  const accuracy: Record<string, { accuracy: number; nll: number; bytes: number }> = {};
  // weft export's classifier signature; quantization keeps the graph's inputs and outputs.
  for (const [k, f] of Object.entries(onnx)) accuracy[k] = { ...(await evaluateClassifier(readFileSync(f), test, { input: 'images', output: 'logits' })), bytes: statSync(f).size };
  const infer = JSON.parse(weft('bench-infer', onnx.base, onnx.pruned, onnx.pruned_int8, '--batch', '1,64', '--threads', '1', '--runs', runs)) as { machine: unknown; results: unknown[] };
  const result = {
    bench: 'prune_structured', cpu: cpuInfo(), loadavg_1m: loadavg()[0], dir,
    train: { steps, seconds: +trainS.toFixed(1), eval: lastEval(base) },
    prune: { channels: Number(channels), criterion: report.criterion, params: report.params, units: report.units.map((u) => ({ layer: u.layer, before: u.before, after: u.after })) },
    finetune: { steps: finetune, seconds: +finetuneS.toFixed(1), eval: lastEval(pruned) },
    onnx: accuracy,
    accuracy_drop_points: +((accuracy['base']!.accuracy - accuracy['pruned']!.accuracy) * 100).toFixed(2),
    size_ratio: +(accuracy['pruned']!.bytes / accuracy['base']!.bytes).toFixed(4),
    bench_infer: infer.results,
    commands,
  };
  emit('prune_structured', result);
}

await (gpt ? gptMain() : main());
