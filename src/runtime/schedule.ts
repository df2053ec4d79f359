/**
 * Schedules: one traced graph that holds host ops (ops that run outside onnxruntime, such as the
 * IR's collectives) compiled into a sequence of onnxruntime programs cut at each of them:
 *
 *   program 0 -> host ops at boundary 0 -> program 1 -> host ops at boundary 1 -> ...
 *
 * Every ordinary node goes to the earliest program whose inputs are all available (as soon as
 * possible); a host node runs at the boundary after the last program that produces one of its
 * inputs, and its outputs are available from the next program on. Host ops at one boundary never
 * depend on each other, so they are issued together in graph order (the same order on every rank,
 * which collectives need) and awaited together. A value that crosses a cut is an output of the
 * program that makes it and a fed input of the programs that read it.
 *
 * The host kernels are registered by the layer that owns them (comm/kernels.ts for collectives),
 * so this layer knows no process group: a run's `context` is handed to every kernel unread.
 */
import type { TypedArray } from '../ir/dtype.js';
import { topoNodes, Value } from '../ir/graph.js';
import type { Node } from '../ir/graph.js';
import { apply, opDef } from '../ir/registry.js';
import { compileProgram, runProgram } from './executor.js';
import type { Program } from './executor.js';
import { profiler } from './profiler.js';

/** Runs one host node on its inputs' data; `context` is what the schedule's caller passed. */
export type HostKernel = (node: Node, inputs: readonly TypedArray[], context: unknown) => Promise<TypedArray[]>;

const KERNELS = new Map<string, HostKernel>();

/** Registers the kernel of a host op (once per op). */
export function registerHostKernel(op: string, kernel: HostKernel): void {
  if (!opDef(op).host) throw new Error(`registerHostKernel: ${op} is not a host op`);
  if (KERNELS.has(op)) throw new Error(`registerHostKernel: ${op} has a kernel already`);
  KERNELS.set(op, kernel);
}

/** Whether the graph computing `outputs` holds a host op. */
export const hasHostOps = (outputs: readonly Value[]): boolean => topoNodes(outputs).some((n) => opDef(n.op).host === true);

interface Stage {
  program: Program | null;
  /** The original values this program reads from earlier cuts, in feed order (before the traced inputs). */
  reads: Value[];
  /** The original values its outputs are, in order. */
  writes: Value[];
  /** Host nodes run after this program, in graph order. */
  host: Node[];
}

export interface ScheduleStats {
  /** onnxruntime programs run per call. */
  programs: number;
  /** Host nodes run per call, by op. */
  hostOps: Record<string, number>;
  /** Last call: milliseconds in programs and in host ops (waiting included). */
  programMs: number;
  hostMs: number;
  /** Last call: bytes of values crossing cuts (out of one program, into a later one or a host op). */
  crossingBytes: number;
}

export interface Schedule {
  readonly stats: ScheduleStats;
  /** Runs the whole graph; `feeds` for the traced inputs, in order; `context` for host kernels. Resolves with the outputs. */
  run(feeds: readonly { data: TypedArray; shape?: readonly number[] }[], context: unknown, label?: string): Promise<TypedArray[]>;
}

/** Compiles the graph computing `outputs` from the traced `inputs` into programs cut at its host ops. */
export async function compileSchedule(outputs: readonly Value[], inputs: readonly Value[]): Promise<Schedule> {
  const order = topoNodes(outputs);
  const avail = new Map<Value, number>();
  const at = (v: Value | null): number => (v === null || v.node === null ? 0 : avail.get(v)!);
  const stageOf = new Map<Node, number>();
  let last = 0;
  for (const n of order) {
    const ready = Math.max(0, ...n.inputs.map(at));
    const isHost = opDef(n.op).host === true;
    if (isHost && !KERNELS.has(n.op)) throw new Error(`compileSchedule: host op ${n.op} has no kernel registered (import the layer that provides it, e.g. comm/kernels.js)`);
    stageOf.set(n, ready);
    for (const o of n.outputs) avail.set(o, isHost ? ready + 1 : ready);
    last = Math.max(last, isHost ? ready + 1 : ready);
  }
  const isHost = (n: Node): boolean => opDef(n.op).host === true;
  // Values consumed across a cut: by a later program, by a host node, or as a final output.
  const crossing = new Set<Value>();
  for (const n of order) {
    for (const v of n.inputs) {
      if (v === null || v.node === null) continue;
      const producer = v.node;
      if (isHost(n) || isHost(producer) || stageOf.get(producer)! !== stageOf.get(n)!) crossing.add(v);
    }
  }
  for (const o of outputs) if (o.node !== null) crossing.add(o);

  const stages: Stage[] = [];
  for (let k = 0; k <= last; k++) {
    const nodes = order.filter((n) => !isHost(n) && stageOf.get(n) === k);
    const host = order.filter((n) => isHost(n) && stageOf.get(n) === k);
    if (nodes.length === 0) { stages.push({ program: null, reads: [], writes: [], host }); continue; }
    const map = new Map<Value, Value>();
    const reads: Value[] = [];
    const placeholders: Value[] = [];
    const get = (v: Value | null): Value | null => {
      if (v === null || v.node === null) return v;
      const m = map.get(v);
      if (m) return m;
      const p = new Value(v.dtype, v.shape);
      p.name = `cut_${reads.length}`;
      map.set(v, p);
      reads.push(v);
      placeholders.push(p);
      return p;
    };
    for (const n of nodes) {
      const outs = apply(n.op, n.inputs.map(get), n.attrs, n.outputs.length);
      n.outputs.forEach((o, i) => map.set(o, outs[i]!));
    }
    const writes = nodes.flatMap((n) => n.outputs.filter((o) => crossing.has(o)));
    const program = await compileProgram(writes.map((w) => map.get(w)!), [...placeholders, ...inputs]);
    stages.push({ program, reads, writes, host });
  }

  const hostOps: Record<string, number> = {};
  for (const n of order) if (isHost(n)) hostOps[n.op] = (hostOps[n.op] ?? 0) + 1;
  const stats: ScheduleStats = { programs: stages.filter((s) => s.program).length, hostOps, programMs: 0, hostMs: 0, crossingBytes: 0 };

  return {
    stats,
    async run(feeds, context, label = 'schedule') {
      if (feeds.length !== inputs.length) throw new Error(`schedule: ${inputs.length} inputs traced, ${feeds.length} fed`);
      const env = new Map<Value, TypedArray>();
      inputs.forEach((v, i) => env.set(v, feeds[i]!.data));
      const dataOf = (v: Value): TypedArray => {
        const d = env.get(v) ?? v.data;
        if (d === null || d === undefined) throw new Error(`schedule: value v${v.id} ${v.toString()} has no data at its cut`);
        return d;
      };
      stats.programMs = 0; stats.hostMs = 0; stats.crossingBytes = 0;
      for (let k = 0; k < stages.length; k++) {
        const s = stages[k]!;
        if (s.program) {
          const t0 = performance.now();
          const cut = s.reads.map((v) => ({ data: dataOf(v) }));
          for (const c of cut) stats.crossingBytes += c.data.byteLength;
          const out = await runProgram(s.program, `${label}${k}`, [...cut, ...feeds]);
          s.writes.forEach((w, i) => env.set(w, out[i]!));
          stats.programMs += performance.now() - t0;
        }
        if (s.host.length === 0) continue;
        const t0 = performance.now();
        // Issued in graph order (every rank the same), awaited together.
        const pending = s.host.map((n) => {
          const ins = n.inputs.map((v) => dataOf(v!));
          for (const d of ins) stats.crossingBytes += d.byteLength;
          return KERNELS.get(n.op)!(n, ins, context).then((outs) => ({ n, outs }));
        });
        for (const { n, outs } of await Promise.all(pending)) n.outputs.forEach((o, i) => env.set(o, outs[i]!));
        const ms = performance.now() - t0;
        stats.hostMs += ms;
        profiler.record(`${label}_host${k}`, ms, 0, 0);
      }
      return outputs.map(dataOf);
    },
  };
}
