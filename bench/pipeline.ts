/**
 * The pipeline bubble measured against its formula, and the saved activations each schedule keeps
 * in flight (bench/results/pipeline.json). A GPT of 8 blocks d256 (its stages balanced: the blocks
 * are all but a few percent of each) on 2 thread ranks, one intra-op thread each, each schedule
 * for a few microbatch counts, the same number of rows per microbatch. Per configuration: the
 * bubble of each stage (its idle time over its step, median of the measured steps), the formula
 * ((p - 1) / (m + p - 1); interleaved (p - 1) / (v m + p - 1)), their ratio, and the peak bytes of
 * saved activations per stage with the microbatches in flight. Prints JSON.
 * Usage: node dist/bench/pipeline.js [steps]
 */
import { launchThreads } from '../src/comm/threads/launch.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import type { PipelineStepTrace } from '../src/parallel/pipeline.js';
import type { PipelineBenchArgs } from './pipeline_rank.js';

const steps = Number(process.argv[2] ?? 6);
const config = { vocab: 256, ctx: 64, d: 256, layers: 8, heads: 4 };
const ROWS_PER_MICROBATCH = 2;
const P = 2;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const runs: Record<string, unknown>[] = [];
for (const [kind, m, v] of [['gpipe', 2, 1], ['gpipe', 4, 1], ['gpipe', 8, 1], ['1f1b', 2, 1], ['1f1b', 4, 1], ['1f1b', 8, 1], ['interleaved', 2, 2], ['interleaved', 4, 2]] as const) {
  const args: PipelineBenchArgs = { kind, microbatches: m, chunks: v, steps: steps + 2, rows: m * ROWS_PER_MICROBATCH, config };
  const ranks = await launchThreads<PipelineStepTrace[]>({ nproc: P, entry: new URL('./pipeline_rank.js', import.meta.url), args, timeoutMs: 600_000 });
  const formula = (P - 1) / (v * m + P - 1);
  const bubbles = ranks.map((steps) => median(steps.map((s) => s.bubble)));
  const measured = bubbles.reduce((a, b) => a + b, 0) / bubbles.length;
  const row = {
    schedule: kind, stages: P, microbatches: m, chunks: v,
    bubble_formula: +formula.toFixed(4), bubble_measured: +measured.toFixed(4), bubble_by_stage: bubbles.map((b) => +b.toFixed(4)),
    measured_over_formula: +(measured / formula).toFixed(3),
    step_ms_by_stage: ranks.map((steps) => +median(steps.map((s) => s.ms)).toFixed(1)),
    peak_in_flight_by_stage: ranks.map((steps) => steps[0]!.peakInFlight),
    peak_saved_activation_mib_by_stage: ranks.map((steps) => +(steps[0]!.peakSavedBytes / 2 ** 20).toFixed(2)),
  };
  process.stderr.write(`${kind} m=${m} v=${v}: bubble ${row.bubble_measured} vs ${row.bubble_formula} (x${row.measured_over_formula}), in flight ${row.peak_in_flight_by_stage.join('/')}\n`);
  runs.push(row);
}
process.stdout.write(`${JSON.stringify({ cpu: cpuInfo().isa, model: `GPT d${config.d} x ${config.layers} blocks, ctx ${config.ctx}, vocab ${config.vocab}; ${ROWS_PER_MICROBATCH} rows per microbatch`, ranks: P, threads_per_rank: 1, steps_measured: steps, runs }, null, 1)}\n`);
