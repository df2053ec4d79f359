/**
 * The pipeline bubble measured against its formula, and the saved activations each schedule keeps
 * in flight (bench/results/pipeline.json). A GPT of 8 blocks d256 (its stages balanced: the blocks
 * are all but a few percent of each) on 2 thread ranks, one intra-op thread each, each schedule
 * for a few microbatch counts, the same number of rows per microbatch.
 *
 * Each configuration runs twice. First with `wholeBackward` (a backward sends its input's gradient
 * after its weight gradients: one indivisible action), the executor as the formula models it:
 * (p - 1) / (m + p - 1), interleaved (p - 1) / (v m + p - 1). Then as weft runs by default, the
 * input's gradient sent as soon as it exists, which shortens the bubble below the formula.
 * Per run: the bubble of each stage (its time not computing over the step, median of the measured
 * steps), the ratio to the formula, each stage's compute per forward and backward (balanced
 * stages cost the same), and the peak bytes of saved activations with the microbatches in flight.
 * Prints JSON. Usage: node dist/bench/pipeline.js [steps]
 */
import { launchThreads } from '../src/comm/threads/launch.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import type { PipelineStepTrace } from '../src/parallel/pipeline.js';
import { pipelineTable, simulate } from '../src/parallel/pipeline_schedule.js';
import type { PipelineBenchArgs } from './pipeline_rank.js';

const steps = Number(process.argv[2] ?? 6);
const config = { vocab: 256, ctx: 64, d: 256, layers: 8, heads: 4 };
const ROWS_PER_MICROBATCH = 2;
const P = 2;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, k: number): number => +x.toFixed(k);
/** A step's mean compute per action of kind `op`. */
const computeOf = (s: PipelineStepTrace, op: 'forward' | 'backward'): number => {
  const as = s.actions.filter((a) => a.op === op);
  return as.reduce((t, a) => t + a.compute.reduce((u, [b, e]) => u + e - b, 0), 0) / as.length;
};

async function measure(kind: PipelineBenchArgs['kind'], m: number, v: number, wholeBackward: boolean): Promise<Record<string, unknown>> {
  const args: PipelineBenchArgs = { kind, microbatches: m, chunks: v, steps: steps + 2, rows: m * ROWS_PER_MICROBATCH, config, wholeBackward };
  const ranks = await launchThreads<PipelineStepTrace[]>({ nproc: P, entry: new URL('./pipeline_rank.js', import.meta.url), args, timeoutMs: 600_000 });
  const bubbles = ranks.map((steps) => median(steps.map((s) => s.bubble)));
  const measured = bubbles.reduce((a, b) => a + b, 0) / bubbles.length;
  // The same table replayed with each step's measured compute durations and free transfers: the
  // bubble a perfect executor would have with this machine's uneven actions (a backward counted
  // whole). Measured over replayed is what the executor adds; replayed over the formula, what the
  // actions' spread does.
  const table = pipelineTable(kind, P, m, v);
  const replayed = median(ranks[0]!.map((_, i) => {
    const cost = new Map(ranks.flatMap((steps, r) => steps[i]!.actions.map((a) => [`${r}:${a.op}:${a.mb}:${a.chunk}`, a.compute.reduce((u, [b, e]) => u + e - b, 0)] as const)));
    return simulate(table, { of: (r, op, mb, chunk) => cost.get(`${r}:${op}:${mb}:${chunk}`)! }).bubble;
  }));
  return {
    bubble: round(measured, 4),
    bubble_replayed: round(replayed, 4),
    bubble_by_stage: bubbles.map((b) => round(b, 4)),
    step_ms: ranks.map((steps) => round(median(steps.map((s) => s.ms)), 1)),
    forward_ms_by_stage: ranks.map((steps) => round(median(steps.map((s) => computeOf(s, 'forward'))), 2)),
    backward_ms_by_stage: ranks.map((steps) => round(median(steps.map((s) => computeOf(s, 'backward'))), 2)),
    peak_in_flight_by_stage: ranks.map((steps) => steps[0]!.peakInFlight),
    peak_saved_activation_mib_by_stage: ranks.map((steps) => round(steps[0]!.peakSavedBytes / 2 ** 20, 2)),
  };
}

const runs: Record<string, unknown>[] = [];
for (const [kind, m, v] of [['gpipe', 2, 1], ['gpipe', 4, 1], ['gpipe', 8, 1], ['1f1b', 2, 1], ['1f1b', 4, 1], ['1f1b', 8, 1], ['interleaved', 2, 2], ['interleaved', 4, 2]] as const) {
  const formula = (P - 1) / (v * m + P - 1);
  const whole = await measure(kind, m, v, true);
  const early = await measure(kind, m, v, false);
  const ratio = (r: Record<string, unknown>): number => round((r['bubble'] as number) / formula, 3);
  const row = {
    schedule: kind, stages: P, microbatches: m, chunks: v, bubble_formula: round(formula, 4),
    whole_backward: { ...whole, measured_over_formula: ratio(whole) },
    early_input_gradient: { ...early, measured_over_formula: ratio(early) },
  };
  process.stderr.write(`${kind} m=${m} v=${v}: formula ${row.bubble_formula}; whole backward ${whole['bubble']} (x${ratio(whole)}, replayed ${whole['bubble_replayed']}, by stage ${(whole['bubble_by_stage'] as number[]).join('/')}, F ${(whole['forward_ms_by_stage'] as number[]).join('/')} B ${(whole['backward_ms_by_stage'] as number[]).join('/')} ms); early dx ${early['bubble']} (x${ratio(early)}), step ${(whole['step_ms'] as number[])[0]} / ${(early['step_ms'] as number[])[0]} ms; in flight ${(whole['peak_in_flight_by_stage'] as number[]).join('/')}\n`);
  runs.push(row);
}
process.stdout.write(`${JSON.stringify({ cpu: cpuInfo().isa, model: `GPT d${config.d} x ${config.layers} blocks, ctx ${config.ctx}, vocab ${config.vocab}; ${ROWS_PER_MICROBATCH} rows per microbatch`, ranks: P, threads_per_rank: 1, steps_measured: steps, runs }, null, 1)}\n`);
