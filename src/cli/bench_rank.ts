/** One rank of `weft bench --nproc N [--tp N | --zero S]`: the data-parallel (or tensor-parallel) training step, measured. */
import type { ProcessGroup } from '../comm/process_group.js';
import { measurePipeline, measureWeft } from './bench.js';
import type { BenchSettings, PipelineBench, Preset, WeftMeasurement } from './bench.js';

export default async function rank(pg: ProcessGroup, a: { preset: Preset; threads: number; steps: number; dp: BenchSettings; tp?: number; zero?: number; offload?: boolean; pipeline?: PipelineBench }): Promise<WeftMeasurement> {
  if (a.pipeline) return measurePipeline(a.preset, a.threads, a.steps, pg, a.pipeline);
  return measureWeft(a.preset, a.threads, a.steps, pg, a.dp, a.tp ?? 1, a.zero ?? 0, a.offload ?? false);
}
