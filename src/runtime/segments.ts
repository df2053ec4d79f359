/**
 * Segmented programs: one traced graph cut into a sequence of onnxruntime programs, where program
 * k computes the k-th group of targets. Data parallelism uses it to cut the backward pass in
 * reverse layer order, so each gradient bucket's all-reduce starts while later segments of the
 * backward still run.
 *
 * Each node goes to the first segment whose targets need it (so the forward pass, needed by the
 * first gradients, lands in segment 0). A value produced in one segment and used in a later one
 * becomes an output of the first and a fed input of the second; these crossing values (saved
 * activations, activation gradients) are the price of the cut: copies out of and back into
 * onnxruntime, linear in their size.
 */
import { topoNodes, Value } from '../ir/graph.js';
import type { Node } from '../ir/graph.js';
import type { TypedArray } from '../ir/dtype.js';
import { apply } from '../ir/registry.js';
import { compileProgram, runProgram } from './executor.js';
import type { Program } from './executor.js';

interface Segment {
  program: Program;
  /** Number of leading program inputs that are crossing values, with where each comes from. */
  crossing: { segment: number; output: number }[];
  /** Outputs: the group's targets first, then crossing values later segments read. */
  targets: number;
}

export interface SegmentedProgram {
  readonly segments: number;
  /**
   * Runs every segment in order on `feeds` (for the traced inputs, in order); `onSegment(k, targets)`
   * is called as soon as segment k's targets are ready, before segment k+1 starts. Resolves with
   * every group's targets.
   */
  run(feeds: readonly { data: TypedArray; shape?: readonly number[] }[], onSegment?: (k: number, targets: TypedArray[]) => void, label?: string): Promise<TypedArray[][]>;
  /** Bytes of crossing values moved between segments on the last run. */
  readonly crossingBytes: number;
}

/**
 * Compiles `groups` (lists of target values) as consecutive programs. `inputs` are the traced
 * placeholder inputs fed at every run (they may be used by any segment).
 */
export async function compileSegments(groups: readonly (readonly Value[])[], inputs: readonly Value[]): Promise<SegmentedProgram> {
  const segOf = new Map<Node, number>();
  groups.forEach((targets, k) => {
    for (const n of topoNodes(targets, (v) => v.node !== null && segOf.has(v.node))) if (!segOf.has(n)) segOf.set(n, k);
  });
  const order = topoNodes(groups.flat());
  // Crossing values: produced in segment s, used in a later segment, or a later group's target.
  const exported = groups.map(() => [] as Value[]);
  const exportIndex = new Map<Value, { segment: number; output: number }>();
  const exportValue = (v: Value): void => {
    if (v.node === null || exportIndex.has(v)) return;
    const s = segOf.get(v.node)!;
    exportIndex.set(v, { segment: s, output: groups[s]!.length + exported[s]!.length });
    exported[s]!.push(v);
  };
  for (const n of order) for (const v of n.inputs) if (v && v.node && segOf.get(v.node)! < segOf.get(n)!) exportValue(v);
  groups.forEach((targets, k) => { for (const t of targets) if (t.node && segOf.get(t.node)! < k) exportValue(t); });

  const segments: Segment[] = [];
  for (let k = 0; k < groups.length; k++) {
    const map = new Map<Value, Value>();
    const crossing: { segment: number; output: number }[] = [];
    const placeholders: Value[] = [];
    const get = (v: Value | null): Value | null => {
      if (v === null || v.node === null) return v;
      const m = map.get(v);
      if (m) return m;
      const from = exportIndex.get(v);
      if (!from || from.segment >= k) throw new Error(`compileSegments: value v${v.id} is needed by segment ${k} but not available`);
      const p = new Value(v.dtype, v.shape);
      p.name = `cross_${from.segment}_${from.output}`;
      map.set(v, p);
      placeholders.push(p);
      crossing.push(from);
      return p;
    };
    for (const n of order) {
      if (segOf.get(n) !== k) continue;
      const outs = apply(n.op, n.inputs.map(get), n.attrs, n.outputs.length);
      n.outputs.forEach((o, i) => map.set(o, outs[i]!));
    }
    const targets = groups[k]!.map((t) => get(t)!);
    const outputs = [...targets, ...exported[k]!.map((v) => map.get(v)!)];
    const program = await compileProgram(outputs, [...placeholders, ...inputs]);
    segments.push({ program, crossing, targets: targets.length });
  }

  let crossingBytes = 0;
  return {
    segments: segments.length,
    get crossingBytes() { return crossingBytes; },
    async run(feeds, onSegment, label = 'segment') {
      const outs: TypedArray[][] = [];
      crossingBytes = 0;
      for (let k = 0; k < segments.length; k++) {
        const s = segments[k]!;
        const cross = s.crossing.map((c) => ({ data: outs[c.segment]![c.output]! }));
        for (const c of cross) crossingBytes += c.data.byteLength;
        const out = await runProgram(s.program, `${label}${k}`, [...cross, ...feeds]);
        outs.push(out);
        onSegment?.(k, out.slice(0, s.targets));
      }
      return outs.map((o, k) => o.slice(0, segments[k]!.targets));
    },
  };
}
