/**
 * Memory of a traced graph, from liveness over a topological order: what onnxruntime has to hold
 * while it runs the graph, before anything is compiled.
 *
 * Each node's outputs are allocated when it runs, while its inputs are still alive, and a value is
 * freed after its last reader; the graph's outputs stay until the run returns. Fed leaves
 * (parameters, the batch) are the caller's memory and not counted; constants are counted apart
 * (session initializers). The peak of the live bytes over the order is what the run needs at once.
 *
 * With `forward` (the indices of outputs that the forward computes: the loss, buffer updates),
 * every node those outputs reach is forward and every other node backward; `savedBytes` is then
 * the bytes of forward values a backward node reads: the activations kept for the backward. The
 * rest of the peak is transient workspace. A rewrite that recomputes activations (checkpointing)
 * or computes them in another dtype (mixed precision) changes the traced graph, so it changes
 * these figures with no change here.
 *
 * The graph is analysed as the executor compiles it (composites lowered, kernel gaps filled);
 * onnxruntime's own fusions and in-place reuse are not modelled (train/memory.ts calibrates that).
 */
import { BYTES } from '../ir/dtype.js';
import { topoNodes } from '../ir/graph.js';
import type { Node, Value } from '../ir/graph.js';
import { isStatic, numel } from '../ir/shape.js';
import { lowerComposites } from '../ir/rewrite.js';
import { fillKernelGaps } from './kernel_gaps.js';
import { dataInputs, lifetimes, partition, programGraph } from './schedule.js';
import type { Partition } from './schedule.js';
import type { ScheduleOptions } from './schedule.js';
import { programModel, structureKey } from './executor.js';
import { optimizedModel } from './ort.js';
import { ortLiveness, readOrtGraph } from './ort_graph.js';
import type { TensorMeta } from './ort_graph.js';

export interface GraphMemory {
  /** Most bytes of node outputs alive at once (intermediates and outputs). */
  peakBytes: number;
  /** Bytes of forward values read by a backward node (0 without `forward`). */
  savedBytes: number;
  /** Bytes of the graph's outputs (copied out to JavaScript after the run). */
  outputBytes: number;
  /** Bytes of constants (initializers the session keeps). */
  constantBytes: number;
  nodes: number;
}

/** Bytes of a value with a static shape. */
export const bytesOf = (v: Value): number => numel(v.shape) * BYTES[v.dtype];

/**
 * Liveness over `nodes` (inputs before users). Values made outside `nodes` are fed and not
 * counted; `outputs` live to the end; `forward` marks the forward nodes.
 */
export function liveness(nodes: readonly Node[], outputs: readonly Value[], forward: ReadonlySet<Node> = new Set()): GraphMemory {
  const mine = new Set(nodes);
  const held = new Set(outputs);
  const last = new Map<Value, number>();
  const constants = new Set<Value>();
  let saved = 0;
  const savedSet = new Set<Value>();
  nodes.forEach((n, i) => {
    // A host op's ordering-only inputs (`after...`) are waited for, not read: they keep nothing alive.
    for (const v of dataInputs(n)) {
      if (v === null) continue;
      if (v.node === null) { if (v.constant) constants.add(v); continue; }
      last.set(v, i);
      if (forward.has(v.node) && !forward.has(n) && mine.has(v.node) && !savedSet.has(v)) { savedSet.add(v); saved += bytesOf(v); }
    }
  });
  let live = 0;
  let peak = 0;
  const dead: Value[][] = nodes.map(() => []);
  nodes.forEach((n, i) => {
    for (const o of n.outputs) {
      if (o.node !== n) continue;
      live += bytesOf(o);
      // A value nobody reads (an unused optional output) is freed as soon as its node is done.
      if (!held.has(o)) dead[last.get(o) ?? i]!.push(o);
    }
    peak = Math.max(peak, live);
    for (const v of dead[i]!) live -= bytesOf(v);
  });
  const outputBytes = [...held].reduce((s, v) => s + (v.node !== null && mine.has(v.node) ? bytesOf(v) : 0), 0);
  return { peakBytes: peak, savedBytes: saved, outputBytes, constantBytes: [...constants].reduce((s, v) => s + bytesOf(v), 0), nodes: nodes.length };
}

/** The graph as the executor hands it to onnxruntime: composites lowered, kernel gaps filled. */
const lowered = (outputs: readonly Value[]): Value[] => fillKernelGaps(lowerComposites(outputs));

/** Memory of one program computing `outputs`; `forward` indexes the outputs the forward computes. */
export function graphMemory(outputs: readonly Value[], forward: readonly number[] = []): GraphMemory {
  const outs = lowered(outputs);
  const fwd = new Set(topoNodes(forward.map((i) => outs[i]!)));
  return liveness(topoNodes(outs), outs, fwd);
}

export interface ScheduleMemory {
  /** Each program's own peak (its intermediates and outputs), in run order. */
  programs: GraphMemory[];
  /** Bytes of values crossing cuts (program outputs held by the schedule until the run returns). */
  crossingBytes: number;
}

/**
 * Memory of the graph as a schedule cuts it (runtime/schedule.ts): one onnxruntime session per
 * program, each analysed on its own with the values it reads from earlier cuts fed.
 */
export function scheduleMemory(outputs: readonly Value[], opts: ScheduleOptions = {}): ScheduleMemory {
  const plan = partition(outputs, opts);
  const programs: GraphMemory[] = [];
  for (const st of plan.stages) {
    for (const nodes of [...st.before, ...st.during]) {
      if (nodes.length === 0) continue;
      const g = programGraph(nodes, plan.crossing);
      const outs = lowered(g.outputs);
      programs.push(liveness(topoNodes(outs), outs));
    }
  }
  const crossingBytes = [...plan.crossing].reduce((s, v) => s + bytesOf(v), 0);
  return { programs, crossingBytes };
}

/** A program's memory in onnxruntime's own execution order (runtime/ort_graph.ts). */
export interface OrtProgramMemory extends GraphMemory {
  /** Liveness peak of the same program in weft's topological order, for comparison. */
  weftPeakBytes: number;
  /** Nodes onnxruntime runs after its fusions (`nodes` is weft's lowered count). */
  ortNodes: number;
  /** Outputs of optimizer-made nodes whose shape no rule gave (counted as their input's size). */
  guessed: number;
}

/**
 * Memory of one program as onnxruntime runs it: the program's model is optimized by onnxruntime
 * (one session created and released, nothing run; runtime/ort.ts) and the liveness is taken over
 * the saved graph's node order, with the shapes of weft's values (by the names the export gives
 * them). `savedBytes` still comes from weft's graph: which forward values the backward reads is a
 * property of the traced graph, not of the order.
 */
export async function ortGraphMemory(outputs: readonly Value[], forward: readonly number[] = []): Promise<OrtProgramMemory> {
  const mine = graphMemory(outputs, forward);
  const { leaves } = structureKey(outputs);
  const m = programModel(outputs, leaves);
  const known = new Map<string, TensorMeta>();
  const meta = (v: Value): TensorMeta | null => (isStatic(v.shape) ? { dtype: v.dtype, shape: v.shape as number[] } : null);
  for (const n of topoNodes(m.lowered)) {
    for (const o of n.outputs) { const t = meta(o); if (o.node === n && t) known.set(`v${o.id}`, t); }
  }
  m.lowered.forEach((v, i) => { const t = meta(v); if (t) known.set(`output_${i}`, t); });
  const g = readOrtGraph(await optimizedModel(m.model, m.options));
  const o = ortLiveness(g, known);
  return {
    peakBytes: o.peakBytes, savedBytes: mine.savedBytes, outputBytes: o.outputBytes, constantBytes: o.constantBytes,
    nodes: mine.nodes, weftPeakBytes: mine.peakBytes, ortNodes: o.nodes, guessed: o.guessed,
  };
}

/** `scheduleMemory` with each program analysed as onnxruntime runs it (`ortGraphMemory`). */
/**
 * The most bytes of crossing values a run of the schedule holds at once: each made by its program
 * (or host op) and dropped after its last reader, as `Schedule.run` does (runtime/schedule.ts).
 */
export function crossingPeakBytes(plan: Partition): number {
  let live = 0, peak = 0;
  for (const e of lifetimes(plan)) {
    live += e.makes.reduce((s, v) => s + bytesOf(v), 0);
    peak = Math.max(peak, live);
    live -= e.drops.reduce((s, v) => s + bytesOf(v), 0);
  }
  return peak;
}

export async function ortScheduleMemory(outputs: readonly Value[], opts: ScheduleOptions = {}): Promise<{ programs: OrtProgramMemory[]; crossingBytes: number; crossingPeakBytes: number }> {
  const plan = partition(outputs, opts);
  const programs: OrtProgramMemory[] = [];
  for (const st of plan.stages) {
    for (const nodes of [...st.before, ...st.during]) {
      if (nodes.length > 0) programs.push(await ortGraphMemory(programGraph(nodes, plan.crossing).outputs));
    }
  }
  return { programs, crossingBytes: [...plan.crossing].reduce((s, v) => s + bytesOf(v), 0), crossingPeakBytes: crossingPeakBytes(plan) };
}
