/**
 * Indexes and small edits over a decoded ONNX graph (ir/onnx/model.ts), shared by every deploy
 * pass: who produces and who reads a name, the constant value behind a name (an initializer or a
 * Constant node), fresh names, and removing what nothing reads.
 */
import type { OnnxGraph, OnnxNode, OnnxTensor } from '../ir/onnx/model.js';
import { subgraphs } from '../ir/onnx/model.js';

export class GraphIndex {
  private readonly producers = new Map<string, OnnxNode>();
  private readonly readers = new Map<string, OnnxNode[]>();
  private readonly inits = new Map<string, OnnxTensor>();
  private readonly outs: Set<string>;
  private subgraphReads: Set<string> | null = null;

  constructor(readonly graph: OnnxGraph) {
    for (const t of graph.initializers) this.inits.set(t.name, t);
    for (const n of graph.nodes) {
      for (const o of n.outputs) if (o !== '') this.producers.set(o, n);
      for (const i of n.inputs) if (i !== '') (this.readers.get(i) ?? this.readers.set(i, []).get(i)!).push(n);
    }
    this.outs = new Set(graph.outputs.map((o) => o.name));
  }

  producer(name: string): OnnxNode | undefined { return this.producers.get(name); }
  consumers(name: string): readonly OnnxNode[] { return this.readers.get(name) ?? []; }
  initializer(name: string): OnnxTensor | undefined { return this.inits.get(name); }
  isGraphOutput(name: string): boolean { return this.outs.has(name); }
  isGraphInput(name: string): boolean { return this.graph.inputs.some((i) => i.name === name); }

  /** The value behind `name` when it is fixed: an initializer that is not also a graph input, or a Constant node's `value`. */
  constant(name: string): OnnxTensor | undefined {
    const t = this.inits.get(name);
    if (t !== undefined) return this.isGraphInput(name) ? undefined : t;
    const p = this.producers.get(name);
    if (p?.op === 'Constant' && p.domain === '' && p.attrs.length === 1 && p.attrs[0]!.name === 'value') {
      const v = p.attrs[0]!.value as OnnxTensor;
      return { ...v, name };
    }
    return undefined;
  }

  /** Whether `name` is read only by `node` (not a graph output, not read inside a subgraph): its producer may be folded into `node`. */
  onlyReadBy(name: string, node: OnnxNode): boolean {
    const r = this.consumers(name);
    return !this.pinned(name) && r.length > 0 && r.every((x) => x === node);
  }

  /** Whether a subgraph attribute (If, Loop, Scan bodies, at any depth) reads `name` from this graph's scope. */
  readBySubgraph(name: string): boolean {
    if (this.subgraphReads === null) {
      this.subgraphReads = new Set();
      for (const n of this.graph.nodes) for (const a of n.attrs) if (a.raw !== undefined) for (const x of rawNames(a.raw)) this.subgraphReads.add(x);
    }
    return this.subgraphReads.has(name);
  }

  /** A name a pass must neither rename nor remove: a graph output, or a name a subgraph reads (kept raw, so not rewritten). */
  pinned(name: string): boolean { return this.isGraphOutput(name) || this.readBySubgraph(name); }
}

/** Every name the graph holds (inputs, outputs, initializers, node outputs). */
function namesOf(g: OnnxGraph): Set<string> {
  const s = new Set<string>();
  for (const v of [...g.inputs, ...g.outputs, ...g.valueInfo]) s.add(v.name);
  for (const t of g.initializers) s.add(t.name);
  for (const n of g.nodes) { for (const o of n.outputs) s.add(o); if (n.name !== '') s.add(n.name); }
  return s;
}

/** Makes names no graph element uses yet: `fresh('w_folded')` -> 'w_folded', then 'w_folded_1', ... */
export function namer(g: OnnxGraph): (base: string) => string {
  const used = namesOf(g);
  return (base) => {
    let n = base;
    for (let k = 1; used.has(n); k++) n = `${base}_${k}`;
    used.add(n);
    return n;
  };
}

/** Removes nodes none of whose outputs reach a graph output, and initializers nothing reads. Returns the nodes removed. */
export function removeDead(g: OnnxGraph): number {
  const live = new Set(g.outputs.map((o) => o.name));
  const keep = new Array<boolean>(g.nodes.length).fill(false);
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (n.outputs.some((o) => o !== '' && live.has(o))) {
      keep[i] = true;
      for (const x of n.inputs) if (x !== '') live.add(x);
      // A subgraph attribute (If, Loop, Scan) may read outer names: they stay live.
      for (const a of n.attrs) if (a.raw !== undefined) for (const name of rawNames(a.raw)) live.add(name);
    }
  }
  const before = g.nodes.length;
  g.nodes = g.nodes.filter((_, i) => keep[i]);
  g.initializers = g.initializers.filter((t) => live.has(t.name) || g.inputs.some((i) => i.name === t.name));
  return before - g.nodes.length;
}

/** Every name a subgraph attribute's nodes read, at any depth (some are the outer graph's). */
function rawNames(raw: Uint8Array): string[] {
  const out: string[] = [];
  for (const g of subgraphs(raw)) {
    for (const n of g.nodes) {
      out.push(...n.inputs);
      for (const a of n.attrs) if (a.raw !== undefined) out.push(...rawNames(a.raw));
    }
  }
  return out;
}

/** Sorts nodes so each follows the producers of its inputs (stable where the order already holds). */
export function topoSort(g: OnnxGraph): void {
  const producer = new Map<string, OnnxNode>();
  for (const n of g.nodes) for (const o of n.outputs) if (o !== '') producer.set(o, n);
  const state = new Map<OnnxNode, 'visiting' | 'done'>();
  const out: OnnxNode[] = [];
  // Depth first from each node in the current order, producers before readers; an explicit stack
  // (a chain of thousands of nodes would overflow recursion).
  for (const root of g.nodes) {
    const stack: { n: OnnxNode; next: number }[] = [{ n: root, next: 0 }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.next === 0) {
        const st = state.get(top.n);
        if (st === 'done') { stack.pop(); continue; }
        if (st === 'visiting') throw new Error(`topoSort: graph '${g.name}' has a cycle through ${top.n.op} '${top.n.name}'`);
        state.set(top.n, 'visiting');
      }
      const p = top.next < top.n.inputs.length ? producer.get(top.n.inputs[top.next++]!) : undefined;
      if (p !== undefined) { if (state.get(p) !== 'done') stack.push({ n: p, next: 0 }); continue; }
      if (top.next < top.n.inputs.length) continue;
      state.set(top.n, 'done');
      out.push(top.n);
      stack.pop();
    }
  }
  g.nodes = out;
}
