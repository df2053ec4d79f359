/**
 * npm run bench:memory-modes — the training step of the brown-small GPT (ctx 128, d 256, 4 layers,
 * 4 heads, byte vocabulary) per precision ('fp32', 'fp16', 'bf16') x activation checkpointing
 * ('none', 'full', 'selective') and batch: the static bytes of forward activations the backward
 * reads (liveness of the traced step), the measured peak RSS growth of the step, and the median
 * step time, with ratios to fp32 / none of the same batch. Prints JSON with the CPU's ISA.
 *
 * The step is traced exactly as training traces it (`traceStepGraph`: autocast, backward,
 * checkpointing), then compiled. Each row runs in a fresh child process, so one row's onnxruntime
 * arena (which keeps its high-water mark) cannot hide another's. The child first runs the step at
 * batch 1 (loading onnxruntime's code and kernels), then compiles the measured batch's step,
 * resets the kernel's peak RSS (`clear_refs` 5) and runs it: peak VmHWM less VmRSS before the run
 * is the step's memory. Flags: [--batch 16,64] [--steps 5] [--precision fp32,fp16,bf16]
 * [--checkpointing none,full,selective].
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CheckpointMode } from '../src/autodiff/checkpoint.js';
import { bindParameters, GPT, GPT_PRESETS, scopeModules } from '../src/nn/index.js';
import { traceStepGraph } from '../src/nn/step_graph.js';
import type { Precision } from '../src/nn/step_graph.js';
import '../src/ir/ops/index.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { compileProgram, runProgram } from '../src/runtime/executor.js';
import type { Program } from '../src/runtime/executor.js';
import { graphMemory } from '../src/runtime/memory.js';
import { Rng } from '../src/tensor/random.js';
import { placeholder } from '../src/tensor/tensor.js';

interface Row { precision: Precision; mode: CheckpointMode; batch: number; savedMB: number; peakMB: number; stepMs: number; stepsMs: number[]; recomputed: number }

/** A field of /proc/self/status in MiB (VmRSS, VmHWM). */
function status(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  if (m === null) throw new Error(`bench: /proc/self/status has no ${field}`);
  return Number(m[1]) / 1024;
}

/**
 * One row: the step traced as training traces it, compiled, then run. The peak is taken over the
 * first run after compiling, so tracing and onnxruntime's graph optimization (large and transient)
 * are not in it.
 */
async function child(precision: Precision, mode: CheckpointMode, batch: number, steps: number): Promise<Row> {
  const cfg = GPT_PRESETS.small;
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 0 });
  scopeModules(model, ['h*']);
  const rng = new Rng(1);
  const build = async (B: number): Promise<{ program: Program; saved: number; recomputed: number; feeds: { data: BigInt64Array; shape: number[] }[] }> => {
    const [x, y] = [placeholder([B, cfg.ctx], 'int64', 'x'), placeholder([B, cfg.ctx], 'int64', 'y')];
    const g = traceStepGraph(params, (a, b) => model.loss(a!, b!), [x, y], { precision, ...(mode === 'none' ? {} : { checkpointing: { mode, units: ['h*'] } }) });
    const program = await compileProgram(g.outputs, [x.value, y.value]);
    const feeds = [0, 1].map(() => ({ data: BigInt64Array.from({ length: B * cfg.ctx }, () => BigInt(rng.int(cfg.vocab))), shape: [B, cfg.ctx] }));
    const forward = [0, ...g.outputs.slice(1 + params.flat.layout.slots.length).map((_, i) => 1 + params.flat.layout.slots.length + i)];
    return { program, saved: graphMemory(g.outputs, forward).savedBytes, recomputed: g.checkpoint?.recomputed ?? 0, feeds };
  };
  const warm = await build(1);
  await runProgram(warm.program, 'warm', warm.feeds);
  const { program, saved, recomputed, feeds } = await build(batch);
  writeFileSync('/proc/self/clear_refs', '5');
  const rss0 = status('VmRSS');
  await runProgram(program, 'step', feeds);
  const peakMB = status('VmHWM') - rss0;
  const stepsMs: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await runProgram(program, 'step', feeds);
    stepsMs.push(performance.now() - t0);
  }
  const sorted = [...stepsMs].sort((a, b) => a - b);
  return { precision, mode, batch, savedMB: saved / 2 ** 20, peakMB, stepMs: sorted[Math.floor(sorted.length / 2)]!, stepsMs, recomputed };
}

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] ?? fallback : fallback;
}

const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

if (process.argv[2] === '--child') {
  const row = await child(process.argv[3] as Precision, process.argv[4] as CheckpointMode, Number(process.argv[5]), Number(process.argv[6]));
  process.stdout.write(`${JSON.stringify(row)}\n`);
} else {
  const batches = flag('batch', '16,64').split(',').map(Number);
  const steps = Number(flag('steps', '5'));
  const precisions = flag('precision', 'fp32,fp16,bf16').split(',') as Precision[];
  const modes = flag('checkpointing', 'none,full,selective').split(',') as CheckpointMode[];
  const self = fileURLToPath(import.meta.url);
  const results: Record<string, unknown>[] = [];
  for (const batch of batches) {
    const rows: Row[] = [];
    for (const p of precisions) for (const m of modes) rows.push(JSON.parse(execFileSync(process.execPath, [self, '--child', p, m, String(batch), String(steps)], { encoding: 'utf8' })) as Row);
    const base = rows[0]!;
    for (const r of rows) {
      results.push({
        precision: r.precision, checkpointing: r.mode, batch: r.batch, savedActivationMB: round(r.savedMB), peakRssDeltaMB: round(r.peakMB), stepMs: round(r.stepMs),
        [`timeVs_${base.precision}_${base.mode}`]: round(r.stepMs / base.stepMs, 3), [`peakVs_${base.precision}_${base.mode}`]: round(r.peakMB / base.peakMB, 3), recomputedNodes: r.recomputed,
      });
    }
  }
  process.stdout.write(`${JSON.stringify({ bench: 'step memory', model: 'brown-small GPT (ctx 128, d 256, 4 layers, 4 heads)', steps, cpu: cpuInfo(), results }, null, 2)}\n`);
}
