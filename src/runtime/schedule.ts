/**
 * Schedules: one traced graph that holds host ops (ops that run outside onnxruntime, such as the
 * IR's collectives) compiled into a sequence of onnxruntime programs cut at each of them:
 *
 *   stage 0: program 0a -> issue host ops 0 -> program 0b (while they run) -> await them
 *   stage 1: program 1a -> issue host ops 1 -> program 1b -> await ...
 *
 * Every ordinary node goes to the earliest stage whose inputs are all available (as soon as
 * possible); a host node runs at the boundary after the last stage that produces one of its
 * inputs, and its outputs are available from the next stage on. Within a stage, program a computes
 * only what that boundary's host ops read, and program b everything else, so b (a tensor-parallel
 * backward's weight gradients, say) runs while the collectives are in flight on the communication
 * thread. Host ops at one boundary never depend on each other: they are issued together in graph
 * order (the same order on every rank, which collectives need) and awaited together. A value that
 * crosses a cut is an output of the program that makes it and a fed input of the programs that
 * read it.
 *
 * The host kernels are registered by the layer that owns them (comm/kernels.ts for collectives),
 * so this layer knows no process group: a run's `context` is handed to every kernel unread.
 */
import { BYTES } from '../ir/dtype.js';
import type { DType, TypedArray } from '../ir/dtype.js';
import * as b from '../ir/build.js';
import { numel } from '../ir/shape.js';
import { topoNodes, Value } from '../ir/graph.js';
import type { Node } from '../ir/graph.js';
import { apply, opDef } from '../ir/registry.js';
import { compileProgram, runProgram } from './executor.js';
import type { Program } from './executor.js';
import { profiler } from './profiler.js';
import { nativeGemmKernel, takeOutGrouped } from './native_products.js';

/** Runs one host node on its inputs' data; `context` is what the schedule's caller passed. */
export type HostKernel = (node: Node, inputs: readonly TypedArray[], context: unknown) => Promise<TypedArray[]>;

/** Bytes a host op moves per rank (a collective's ring cost), from its node and its input and output bytes. */
export type WireBytes = (node: Node, inputBytes: number, outputBytes: number) => number;

const KERNELS = new Map<string, HostKernel>();
const WIRE = new Map<string, WireBytes>();

/** Registers the kernel of a host op (once per op), and how many bytes it moves per rank. */
export function registerHostKernel(op: string, kernel: HostKernel, wireBytes?: WireBytes): void {
  if (!opDef(op).host) throw new Error(`registerHostKernel: ${op} is not a host op`);
  if (KERNELS.has(op)) throw new Error(`registerHostKernel: ${op} has a kernel already`);
  KERNELS.set(op, kernel);
  if (wireBytes) WIRE.set(op, wireBytes);
}

/**
 * The inputs a host op's kernel reads: all but its `after...` tail (ordering-only inputs, such as
 * ZeRO stage 3's chained gathers: the op waits for them and never reads them).
 */
export function dataInputs(n: Node): (Value | null)[] {
  const spec = opDef(n.op).inputs;
  return spec.at(-1) === 'after...' ? n.inputs.slice(0, spec.length - 1) : [...n.inputs];
}

/** Whether the graph computing `outputs` holds a host op. */
export const hasHostOps = (outputs: readonly Value[]): boolean => topoNodes(outputs).some((n) => opDef(n.op).host === true);

/** One program of a schedule, over the original graph's values. */
interface Program_ {
  program: Program;
  /** The values it reads from earlier cuts, in feed order (before the traced inputs). */
  reads: Value[];
  /** The values its outputs are, in order. */
  writes: Value[];
}

/**
 * A stage: what its host ops need, the host ops (issued in graph order), what runs while they fly.
 * Each part is one program per target group (in group order), for a schedule compiled with groups.
 */
interface Stage { before: (Program_ | null)[]; host: Node[]; during: (Program_ | null)[] }

export interface ScheduleStats {
  /** onnxruntime programs run per call. */
  programs: number;
  /** Programs that run while host ops are in flight (each stage's program b, where it has host ops). */
  overlapping: number;
  /** Host nodes run per call, by op. */
  hostOps: Record<string, number>;
  /** Bytes each call moves per rank, by op (ring costs: all-reduce 2 (P-1)/P of its tensor, all-gather and reduce-scatter (P-1)/P of the whole). */
  wireBytes: Record<string, number>;
  /** Last call: milliseconds in programs, and waiting for host ops once the program that overlaps them was done. */
  programMs: number;
  hostMs: number;
  /** Last call: bytes of values crossing cuts (out of one program, into a later one or a host op). */
  crossingBytes: number;
}

/** What a caller watches or steers in one run of a schedule. */
export interface RunHooks {
  /** Called as soon as target group k's targets are all computed (in group order, before the next program starts). */
  onGroup?: (k: number, values: TypedArray[]) => void;
  /**
   * Awaited before each program runs (k its target group): a pipeline's executor runs several
   * microbatches' schedules at once and lets their programs through in its table's order
   * (parallel/pipeline.ts).
   */
  gate?: (k: number) => Promise<void>;
  /** Called for each program (`host` false) and host op (true) with when it started and ended (performance.now()). */
  onSpan?: (name: string, host: boolean, start: number, end: number) => void;
}

export interface Schedule {
  readonly stats: ScheduleStats;
  /**
   * Runs the whole graph; `feeds` for the traced inputs, in order; `context` for host kernels;
   * `hooks` to watch groups complete, gate programs, or time spans. Resolves with the outputs.
   */
  run(feeds: readonly { data: TypedArray; shape?: readonly number[] }[], context: unknown, label?: string, hooks?: RunHooks): Promise<TypedArray[]>;
}

export interface ScheduleOptions {
  /**
   * Target groups: the outputs are `groups.flat()`, and each node goes to the program of the first
   * group that needs it, so group k is complete after its own program, while later groups' programs
   * still have to run (data parallelism cuts its backward by gradient bucket this way, to all-reduce
   * each bucket while the rest computes). Without groups, one group holds every output.
   */
  groups?: readonly (readonly Value[])[];
  /**
   * Groups are phases: every ordinary node of group k runs in a later stage than every ordinary
   * node of the groups before it, so a group's programs all come after the previous group's (a
   * pipeline stage's forward, then its backward: parallel/pipeline.ts gates each pass). Host nodes
   * stay where their inputs put them.
   */
  phases?: boolean;
  /** onnxruntime's CPU arena for the programs (runtime/ort.ts `SessionOptions.arena`); default on. */
  arena?: boolean;
}

/**
 * How a graph is cut (see compileSchedule), before anything is compiled: per stage, the nodes of
 * each program (program a, then b; one list per target group) and the host nodes at its boundary;
 * `crossing` the values that leave their program (read by another, by a host op, or an output).
 */
export interface Partition {
  readonly outputs: readonly Value[];
  readonly groups: readonly (readonly Value[])[];
  readonly order: readonly Node[];
  readonly stages: readonly { before: Node[][]; host: Node[]; during: Node[][] }[];
  readonly crossing: ReadonlySet<Value>;
}

/** Cuts the graph computing `outputs` into programs (compileSchedule's plan; memory estimates read it too). */
export function partition(outputs: readonly Value[], opts: ScheduleOptions = {}): Partition {
  const groups = opts.groups ?? [outputs];
  if (opts.groups) outputs = groups.flat();
  const order = topoNodes(outputs);
  const groupOf = new Map<Node, number>();
  groups.forEach((targets, k) => {
    for (const n of topoNodes(targets, (v) => v.node !== null && groupOf.has(v.node))) if (!groupOf.has(n)) groupOf.set(n, k);
  });
  const isHost = (n: Node): boolean => opDef(n.op).host === true;
  const avail = new Map<Value, number>();
  const at = (v: Value | null): number => (v === null || v.node === null ? 0 : avail.get(v)!);
  const stageOf = new Map<Node, number>();
  // Per stage, in graph order: its ordinary nodes and the host nodes at its boundary.
  const stageNodes: { nodes: Node[]; host: Node[] }[] = [];
  // Phases: the last stage of each group's ordinary nodes (every node of a group precedes the next
  // group's in `order`, which visits each group's ancestors in turn).
  const lastOf: number[] = groups.map(() => -1);
  for (const n of order) {
    const host = isHost(n);
    const g = groupOf.get(n) ?? 0;
    const floor = opts.phases && !host && g > 0 ? Math.max(...lastOf.slice(0, g)) + 1 : 0;
    const ready = Math.max(floor, ...n.inputs.map(at));
    if (opts.phases && !host) lastOf[g] = Math.max(lastOf[g]!, ready);
    if (host && !KERNELS.has(n.op)) throw new Error(`compileSchedule: host op ${n.op} has no kernel registered (import the layer that provides it, e.g. comm/kernels.js)`);
    stageOf.set(n, ready);
    for (const o of n.outputs) avail.set(o, host ? ready + 1 : ready);
    while (stageNodes.length <= ready) stageNodes.push({ nodes: [], host: [] });
    (host ? stageNodes[ready]!.host : stageNodes[ready]!.nodes).push(n);
  }
  // Each stage splits in two programs: A computes what the boundary's host ops read, B the rest,
  // run while those host ops are in flight (B reads nothing they produce). Where every host op of
  // the boundary is inline (it computes at once, as a native product does), nothing flies beside
  // it: B's nodes join the next stage's program A instead, so the cut costs one program, not two.
  const partOf = new Map<Node, 'a' | 'b'>();
  for (let k = 0; k < stageNodes.length; k++) {
    const { host, nodes } = stageNodes[k]!;
    const hostInputs = host.flatMap((n) => n.inputs.filter((v): v is Value => v !== null));
    const inStage = (v: Value): boolean => v.node !== null && !isHost(v.node) && stageOf.get(v.node) === k;
    for (const n of topoNodes(hostInputs, (v) => !inStage(v))) partOf.set(n, 'a');
    if (opts.phases || host.length === 0 || !host.every((n) => opDef(n.op).inline === true)) continue;
    const later = nodes.filter((n) => partOf.get(n) !== 'a');
    if (later.length === 0) continue;
    if (k + 1 === stageNodes.length) stageNodes.push({ nodes: [], host: [] });
    stageNodes[k] = { host, nodes: nodes.filter((n) => partOf.get(n) === 'a') };
    stageNodes[k + 1]!.nodes.unshift(...later);
    for (const n of later) { stageOf.set(n, k + 1); partOf.set(n, 'a'); }
  }
  const programOf = (n: Node): string => `${stageOf.get(n)}${partOf.get(n) ?? 'b'}${groupOf.get(n)}`;
  // Values consumed across a cut: by another program, by a host node, or as a final output.
  const crossing = new Set<Value>();
  for (const n of order) {
    for (const v of n.inputs) {
      if (v === null || v.node === null) continue;
      if (isHost(n) || isHost(v.node) || programOf(v.node) !== programOf(n)) crossing.add(v);
    }
  }
  for (const o of outputs) if (o.node !== null) crossing.add(o);
  const byGroup = (nodes: readonly Node[]): Node[][] => groups.map((_, g) => nodes.filter((n) => groupOf.get(n) === g));
  const stages = stageNodes.map(({ nodes, host }) => ({
    before: byGroup(nodes.filter((n) => partOf.get(n) === 'a')),
    host,
    during: byGroup(nodes.filter((n) => partOf.get(n) !== 'a')),
  }));
  return { outputs, groups, order, stages, crossing };
}

/**
 * A schedule's events in run order (each non-empty program, then each boundary's host ops as one
 * event: issued together), with the crossing values each makes and those whose last reader it is.
 * A run drops each value after its last reader (outputs are kept to the end), so a schedule holds
 * what a layer-by-layer run needs, not every value it ever made; memory estimates replay the same.
 */
export function lifetimes(plan: Partition): { makes: Value[]; drops: Value[] }[] {
  const events: { makes: Value[]; drops: Value[] }[] = [];
  const lastRead = new Map<Value, number>();
  const event = (nodes: readonly Node[]): void => {
    const inside = new Set(nodes);
    // Ordering-only inputs are not read: a value only waited for is dropped after its last real reader.
    for (const n of nodes) for (const v of dataInputs(n)) if (v !== null && v.node !== null && !inside.has(v.node)) lastRead.set(v, events.length);
    events.push({ makes: nodes.flatMap((n) => n.outputs.filter((o) => plan.crossing.has(o) || opDef(n.op).host === true)), drops: [] });
  };
  for (const st of plan.stages) {
    for (const nodes of st.before) if (nodes.length > 0) event(nodes);
    if (st.host.length > 0) event(st.host);
    for (const nodes of st.during) if (nodes.length > 0) event(nodes);
  }
  for (const o of plan.outputs) lastRead.delete(o);
  for (const [v, e] of lastRead) events[e]!.drops.push(v);
  return events;
}

/**
 * One program's own graph over `nodes` (graph order): every value made outside them and read
 * inside is a placeholder (`reads`, in feed order), and its outputs are the values of `nodes` in
 * `crossing` (`writes`).
 */
export function programGraph(nodes: readonly Node[], crossing: ReadonlySet<Value>): { outputs: Value[]; placeholders: Value[]; reads: Value[]; writes: Value[] } {
  const map = new Map<Value, Value>();
  const reads: Value[] = [];
  const placeholders: Value[] = [];
  // onnxruntime-node has no bfloat16 tensors: a bfloat16 value crosses a cut as float32 (exact).
  const wire = (v: Value): DType => (v.dtype === 'bfloat16' ? 'float32' : v.dtype);
  const get = (v: Value | null): Value | null => {
    if (v === null || v.node === null) return v;
    const m = map.get(v);
    if (m) return m;
    const p = new Value(wire(v), v.shape);
    p.name = `cut_${reads.length}`;
    const q = b.cast(p, v.dtype);
    map.set(v, q);
    reads.push(v);
    placeholders.push(p);
    return q;
  };
  for (const n of nodes) {
    const outs = apply(n.op, n.inputs.map(get), n.attrs, n.outputs.length);
    n.outputs.forEach((o, i) => map.set(o, outs[i]!));
  }
  const writes = nodes.flatMap((n) => n.outputs.filter((o) => crossing.has(o)));
  return { outputs: writes.map((w) => b.cast(map.get(w)!, wire(w))), placeholders, reads, writes };
}

/**
 * Compiles the graph computing `outputs` from the traced `inputs` into programs cut at its host
 * ops (and, given `opts.groups`, between target groups). This is weft's one way to cut a step.
 */
export async function compileSchedule(outputs: readonly Value[], inputs: readonly Value[], opts: ScheduleOptions = {}): Promise<Schedule> {
  // Products a native library runs faster become host ops first (runtime/native_products.ts).
  const taken = await takeOutGrouped(outputs, opts.groups);
  outputs = taken.outputs;
  if (taken.groups) opts = { ...opts, groups: taken.groups };
  const plan = partition(outputs, opts);
  const { groups, order, crossing } = plan;
  outputs = plan.outputs;
  const isHost = (n: Node): boolean => opDef(n.op).host === true;

  const build = async (nodes: readonly Node[]): Promise<Program_ | null> => {
    if (nodes.length === 0) return null;
    const g = programGraph(nodes, crossing);
    return { program: await compileProgram(g.outputs, [...g.placeholders, ...inputs], { arena: opts.arena ?? true }), reads: g.reads, writes: g.writes };
  };
  const stages: Stage[] = [];
  const each = async (parts: readonly Node[][]): Promise<(Program_ | null)[]> => {
    const out: (Program_ | null)[] = [];
    for (const nodes of parts) out.push(await build(nodes));
    return out;
  };
  for (const { before, host, during } of plan.stages) stages.push({ before: await each(before), host, during: await each(during) });

  const hostOps: Record<string, number> = {};
  const wireBytes: Record<string, number> = {};
  const bytesOf = (v: Value | null): number => (v === null ? 0 : numel(v.shape as number[]) * BYTES[v.dtype]);
  for (const n of order) {
    if (!isHost(n)) continue;
    hostOps[n.op] = (hostOps[n.op] ?? 0) + 1;
    const w = WIRE.get(n.op);
    if (w) wireBytes[n.op] = (wireBytes[n.op] ?? 0) + w(n, dataInputs(n).reduce((a, v) => a + bytesOf(v), 0), n.outputs.reduce((a, v) => a + bytesOf(v), 0));
  }
  const dropAt = lifetimes(plan).map((e) => e.drops);
  const count = (ps: readonly (Program_ | null)[]): number => ps.filter((p) => p !== null).length;
  const programs = stages.reduce((c, st) => c + count(st.before) + count(st.during), 0);
  const overlapping = stages.reduce((c, st) => c + (st.host.length > 0 ? count(st.during) : 0), 0);
  const stats: ScheduleStats = { programs, overlapping, hostOps, wireBytes, programMs: 0, hostMs: 0, crossingBytes: 0 };

  return {
    stats,
    async run(feeds, context, label = 'schedule', hooks = {}) {
      const { onGroup, gate, onSpan } = hooks;
      if (feeds.length !== inputs.length) throw new Error(`schedule: ${inputs.length} inputs traced, ${feeds.length} fed`);
      const env = new Map<Value, TypedArray>();
      inputs.forEach((v, i) => env.set(v, feeds[i]!.data));
      const dataOf = (v: Value): TypedArray => {
        const d = env.get(v) ?? v.data;
        if (d === null || d === undefined) throw new Error(`schedule: value v${v.id} ${v.toString()} has no data at its cut`);
        return d;
      };
      stats.programMs = 0; stats.hostMs = 0; stats.crossingBytes = 0;
      // Groups report in order, each as soon as its targets exist.
      let reported = 0;
      const report = (): void => {
        while (onGroup && reported < groups.length && groups[reported]!.every((t) => t.node === null || env.has(t))) {
          onGroup(reported, groups[reported]!.map(dataOf));
          reported++;
        }
      };
      let event = 0;
      const done = (): void => { for (const v of dropAt[event++]!) env.delete(v); };
      const runPart = async (ps: readonly (Program_ | null)[], tag: string): Promise<void> => {
        for (const [g, p] of ps.entries()) {
          if (p === null) continue;
          if (gate) await gate(g);
          const t0 = performance.now();
          const cut = p.reads.map((v) => ({ data: dataOf(v) }));
          for (const c of cut) stats.crossingBytes += c.data.byteLength;
          const name = `${label}${tag}${groups.length > 1 ? `g${g}` : ''}`;
          const out = await runProgram(p.program, name, [...cut, ...feeds]);
          p.writes.forEach((w, i) => env.set(w, out[i]!));
          const t1 = performance.now();
          stats.programMs += t1 - t0;
          onSpan?.(name, false, t0, t1);
          report();
          done();
        }
      };
      for (let k = 0; k < stages.length; k++) {
        const s = stages[k]!;
        await runPart(s.before, `${k}a`);
        // Issued in graph order (every rank the same); the stage's other program runs meanwhile.
        const pending = s.host.map((n) => {
          const ins = dataInputs(n).map((v) => dataOf(v!));
          for (const d of ins) stats.crossingBytes += d.byteLength;
          const t0 = performance.now();
          return KERNELS.get(n.op)!(n, ins, context).then((outs) => {
            onSpan?.(`${n.op}${n.attrs['tag'] !== undefined ? `#${String(n.attrs['tag'])}` : ''}`, true, t0, performance.now());
            return { n, outs };
          });
        });
        if (s.host.length > 0) done();
        await runPart(s.during, `${k}b`);
        if (pending.length === 0) continue;
        const t1 = performance.now();
        for (const { n, outs } of await Promise.all(pending)) n.outputs.forEach((o, i) => env.set(o, outs[i]!));
        report();
        // Time spent waiting for host ops once the overlapping program was done.
        const waited = performance.now() - t1;
        stats.hostMs += waited;
        profiler.record(`${label}_host${k}`, waited, 0, 0);
      }
      report();
      return outputs.map(dataOf);
    },
  };
}

registerHostKernel('weft.NativeGemm', nativeGemmKernel);
