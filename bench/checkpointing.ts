/**
 * npm run bench:ckpt — activation checkpointing on the brown-small GPT (ctx 128, d 256, 4 layers, 4
 * heads, byte vocabulary), per mode ('none', 'full', 'selective') and batch: the static bytes of
 * forward activations the backward reads (the transform's `savedBytes`), the measured peak RSS
 * growth of the step, and the median step time with its ratio to 'none'. Prints JSON with the CPU.
 *
 * Each (mode, batch) runs in a fresh child process, so one mode's onnxruntime arena (which keeps
 * its high-water mark) cannot hide another's. The child first runs the step at batch 1 (loading
 * onnxruntime's code and kernels), then
 * compiles the measured batch's step, resets the kernel's peak RSS (`clear_refs` 5) and runs it:
 * peak VmHWM less VmRSS before the run is the step's memory. Flags: [--batch 16,64] [--steps 5].
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CheckpointMode, CheckpointStats } from '../src/autodiff/checkpoint.js';
import { checkpoint } from '../src/autodiff/checkpoint.js';
import { grad as gradValues } from '../src/autodiff/grad.js';
import { bindParameters, GPT, GPT_PRESETS, scopeModules } from '../src/nn/index.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { compileProgram, runProgram } from '../src/runtime/executor.js';
import type { Program } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';
import { placeholder } from '../src/tensor/tensor.js';

const MODES: readonly CheckpointMode[] = ['none', 'full', 'selective'];

interface Row { mode: CheckpointMode; batch: number; savedMB: number; peakMB: number; stepMs: number; stepsMs: number[]; recomputed: number; gates: number }

/** A field of /proc/self/status in MiB (VmRSS, VmHWM). */
function status(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  if (m === null) throw new Error(`bench: /proc/self/status has no ${field}`);
  return Number(m[1]) / 1024;
}

/**
 * One (mode, batch): the step traced and transformed as `gradStep` does, compiled, then run. The
 * peak is taken over the first run after compiling, so tracing and onnxruntime's graph
 * optimization (the same in every mode, but large and transient) are not in it.
 */
async function child(mode: CheckpointMode, batch: number, steps: number): Promise<Row> {
  const cfg = GPT_PRESETS.small;
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 0 });
  scopeModules(model, ['h*']);
  const wrt = params.flat.layout.slots.map((s) => params.tensors[s.name]!.value);
  const rng = new Rng(1);
  const build = async (B: number): Promise<{ program: Program; stats: CheckpointStats; feeds: { data: BigInt64Array; shape: number[] }[] }> => {
    const [x, y] = [placeholder([B, cfg.ctx], 'int64', 'x'), placeholder([B, cfg.ctx], 'int64', 'y')];
    const l = model.loss(x, y).value;
    const ck = checkpoint({ forward: [l], outputs: [l, ...gradValues(l, wrt)] }, { mode, units: ['h*'] });
    const program = await compileProgram(ck.outputs, [x.value, y.value]);
    const feeds = [0, 1].map(() => ({ data: BigInt64Array.from({ length: B * cfg.ctx }, () => BigInt(rng.int(cfg.vocab))), shape: [B, cfg.ctx] }));
    return { program, stats: ck.stats, feeds };
  };
  const warm = await build(1);
  await runProgram(warm.program, 'warm', warm.feeds);
  const { program, stats, feeds } = await build(batch);
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
  return { mode, batch, savedMB: stats.savedBytes / 2 ** 20, peakMB, stepMs: sorted[Math.floor(sorted.length / 2)]!, stepsMs, recomputed: stats.recomputed, gates: stats.gates };
}

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] ?? fallback : fallback;
}

const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

if (process.argv[2] === '--child') {
  const row = await child(process.argv[3] as CheckpointMode, Number(process.argv[4]), Number(process.argv[5]));
  process.stdout.write(`${JSON.stringify(row)}\n`);
} else {
  const batches = flag('batch', '16,64').split(',').map(Number);
  const steps = Number(flag('steps', '5'));
  const self = fileURLToPath(import.meta.url);
  const results: Record<string, unknown>[] = [];
  for (const batch of batches) {
    const rows = MODES.map((mode) => JSON.parse(execFileSync(process.execPath, [self, '--child', mode, String(batch), String(steps)], { encoding: 'utf8' })) as Row);
    const none = rows.find((r) => r.mode === 'none')!;
    for (const r of rows) {
      results.push({
        mode: r.mode, batch: r.batch, savedActivationMB: round(r.savedMB), peakRssDeltaMB: round(r.peakMB), stepMs: round(r.stepMs),
        timeVsNone: round(r.stepMs / none.stepMs, 3), peakVsNone: round(r.peakMB / none.peakMB, 3), recomputedNodes: r.recomputed, gates: r.gates,
      });
    }
  }
  process.stdout.write(`${JSON.stringify({ bench: 'checkpointing', model: 'brown-small GPT (ctx 128, d 256, 4 layers, 4 heads)', steps, cpu: cpuInfo(), results }, null, 2)}\n`);
}
