/**
 * npm run bench:distill — do distilled students beat the same students trained alone for the same
 * steps? Two experiments, each: a teacher trained from its recipe, then a smaller student trained
 * alone and distilled from it (train.distill), same steps, seeds and batches; the final evaluation
 * (the student's own val_loss, and accuracy for MNIST) of each.
 *
 * - mnist: teacher recipes/mnist-cnn.json (CNN [32, 64, 128], fc 128); student CNN [8, 16, 32], fc 32,
 *   no dropout (the rest of the recipe as is).
 * - brown: teacher the GPT medium shape (d 512, 8 layers, 8 heads) at ctx 128; student
 *   recipes/brown-small.json (d 256, 4 layers, 4 heads); byte tokens.
 *
 * Every run uses one thread (train.threads 1) and writes under --out (default a fresh /tmp dir).
 * Prints JSON: the CPU and ISA (runtime/cpu.ts), every config used, the losses and wall times.
 *
 *   node dist/bench/distill.js mnist --steps 1000 --alpha 0.5 --temperature 4
 *   node dist/bench/distill.js brown --teacher-steps 200 --steps 150 --batch 8
 *   node dist/bench/distill.js brown --teacher /tmp/x/brown/teacher --steps 150   (reuse a teacher)
 *   node dist/bench/distill.js mnist --teacher /tmp/x/mnist/teacher --set model.dropout=0.25   (students' overrides)
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuInfo } from '../src/runtime/cpu.js';
import { loadConfig } from '../src/train/config.js';
import type { RunConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: 'string' }, 'teacher-steps': { type: 'string' }, batch: { type: 'string' },
    alpha: { type: 'string' }, temperature: { type: 'string' }, teacher: { type: 'string' }, out: { type: 'string' },
    // Overrides of both students' configs (weft train's --set), e.g. --set model.dropout=0.
    set: { type: 'string', multiple: true },
  },
});
const which = positionals[0] ?? 'mnist';
if (which !== 'mnist' && which !== 'brown') throw new Error(`bench:distill: the experiment is 'mnist' or 'brown', got '${which}'`);
const num = (flag: keyof typeof o, dflt: number): number => {
  const v = o[flag];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`bench:distill: --${flag} must be a positive number, got '${v}'`);
  return n;
};
const out = o.out ?? mkdtempSync(join(tmpdir(), 'weft-bench-distill-'));

interface Run { config: RunConfig; final: Record<string, number>; wall_s: number; ms_per_step: number }

/** Trains `cfg` from scratch (silent) and returns its final evaluation and wall time. */
async function train(cfg: RunConfig): Promise<Run> {
  const t0 = performance.now();
  const r = await new Trainer(cfg).run({ out: null });
  const wall = (performance.now() - t0) / 1000;
  return { config: cfg, final: r.evals.at(-1)!.metrics, wall_s: Number(wall.toFixed(1)), ms_per_step: Number((wall / r.steps * 1000).toFixed(1)) };
}

/** A recipe with the bench's overrides (`key=value`, as weft train --set). */
const recipe = (name: string, sets: readonly string[]): RunConfig => loadConfig(join(root, 'recipes', name), ['train.threads=1', 'sample.tokens=0', ...sets]);

async function experiment(): Promise<Record<string, unknown>> {
  const mnist = which === 'mnist';
  const steps = num('steps', mnist ? 1000 : 150);
  const teacherSteps = num('teacher-steps', mnist ? steps : 200);
  const alpha = num('alpha', 0.5);
  const temperature = num('temperature', mnist ? 4 : 2);
  const file = mnist ? 'mnist-cnn.json' : 'brown-small.json';
  const dir = join(out, which);
  // Evaluate and checkpoint only at the end (eval.every = steps): the runs are timed.
  const common = (n: number): string[] => [`train.steps=${n}`, `eval.every=${n}`, `checkpoint.every=${n}`, 'checkpoint.keep=1',
    ...(mnist ? [] : [`train.batch=${num('batch', 8)}`])];
  const teacherShape = mnist ? [] : ['model.d=512', 'model.layers=8', 'model.heads=8'];
  // The MNIST student without the recipe's dropout: with 0.25 before its 32-unit layer, the soft
  // targets lost to the plain student (measured, docs/distill.md); the regularizer is the teacher.
  const studentShape = [...(mnist ? ['model.channels=[8,16,32]', 'model.hidden=32', 'model.dropout=0'] : []), ...(o.set ?? [])];
  let teacher: Run | { dir: string } = { dir: o.teacher ?? join(dir, 'teacher') };
  if (o.teacher === undefined) teacher = await train(recipe(file, [`out=${join(dir, 'teacher')}`, ...common(teacherSteps), ...teacherShape]));
  const alone = await train(recipe(file, [`out=${join(dir, 'alone')}`, ...common(steps), ...studentShape]));
  const distilled = await train(recipe(file, [`out=${join(dir, 'distilled')}`, ...common(steps), ...studentShape,
    `train.distill.teacher=${o.teacher ?? join(dir, 'teacher')}`, `train.distill.alpha=${alpha}`, `train.distill.temperature=${temperature}`]));
  const v = (r: Run): number => r.final['val_loss']!;
  return {
    experiment: which, steps, student_overrides: o.set ?? [], teacher_steps: o.teacher === undefined ? teacherSteps : `reused ${o.teacher}`, alpha, temperature,
    val_loss: { ...('final' in teacher ? { teacher: v(teacher) } : {}), alone: v(alone), distilled: v(distilled) },
    ...(mnist ? { accuracy: { ...('final' in teacher ? { teacher: teacher.final['accuracy'] } : {}), alone: alone.final['accuracy'], distilled: distilled.final['accuracy'] } } : {}),
    distilled_beats_alone: v(distilled) < v(alone),
    runs: { teacher, alone, distilled },
  };
}

const cpu = cpuInfo();
const result = { bench: 'distill', machine: { model: cpu.model, isa: cpu.isa }, threads: 1, out, ...(await experiment()) };
process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
