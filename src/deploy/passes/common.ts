/**
 * What every optimize pass shares: its context, the pass signature, and the few edits they all make
 * (drop a node, make one name stand for another, read a constant as numbers).
 */
import type { DType } from '../../ir/dtype.js';
import { dtypeFromOnnx, toNumbers } from '../../ir/dtype.js';
import type { OnnxGraph, OnnxNode, OnnxTensor } from '../../ir/onnx/model.js';
import { tensorDtype } from '../../ir/onnx/model.js';
import { GraphIndex } from '../graph.js';
import type { ValueType } from './shapes.js';
import { inferTypes } from './shapes.js';

export interface PassContext {
  /** The model's opset imports; a pass that emits another domain's op adds that domain (`useOpset`). */
  readonly opsets: { domain: string; version: number }[];
  readonly irVersion: number;
  /** Threads of the onnxruntime sessions constant folding evaluates nodes with. */
  readonly threads: number;
  /** Constant folding keeps a node whose results exceed this many bytes and its constant inputs' bytes together. */
  readonly foldMaxBytes: number;
}

/** A pass rewrites `g` in place and returns how many rewrites it made (0: nothing to do). */
export type Pass = (g: OnnxGraph, ctx: PassContext) => number | Promise<number>;

/** The imported version of `domain` ('' and 'ai.onnx' are the same); 0 when not imported. */
export function opsetOf(ctx: PassContext, domain: string): number {
  const d = domain === 'ai.onnx' ? '' : domain;
  return ctx.opsets.find((o) => (o.domain === 'ai.onnx' ? '' : o.domain) === d)?.version ?? 0;
}

export function useOpset(ctx: PassContext, domain: string, version: number): void {
  if (opsetOf(ctx, domain) === 0) ctx.opsets.push({ domain, version });
}

/** An op of the default domain (ai.onnx), the only domain whose ops passes rewrite by meaning. */
export const isOnnx = (n: OnnxNode, op?: string): boolean => (n.domain === '' || n.domain === 'ai.onnx') && (op === undefined || n.op === op);

export function removeNode(g: OnnxGraph, n: OnnxNode): void {
  const k = g.nodes.indexOf(n);
  if (k >= 0) g.nodes.splice(k, 1);
}

/** Readers of `from` (as `idx` knows them) read `to` instead. */
function rename(idx: GraphIndex, from: string, to: string): void {
  for (const r of idx.consumers(from)) r.inputs = r.inputs.map((i) => (i === from ? to : i));
}

/**
 * Removes `node`, whose output `out` holds the same value as `src`, so that `src` stands for it.
 * A graph output keeps its name: then `src`'s producer is renamed to produce `out` (refused when
 * `src` is itself a graph input, output or initializer, or a name a subgraph reads). Returns
 * whether the node went.
 */
export function bypass(g: OnnxGraph, idx: GraphIndex, node: OnnxNode, src: string, out: string): boolean {
  if (src === '' || idx.readBySubgraph(out)) return false;
  if (!idx.isGraphOutput(out)) {
    removeNode(g, node);
    rename(idx, out, src);
    return true;
  }
  const p = idx.producer(src);
  if (p === undefined || idx.pinned(src) || idx.isGraphInput(src) || idx.initializer(src) !== undefined) return false;
  removeNode(g, node);
  p.outputs = p.outputs.map((o) => (o === src ? out : o));
  rename(idx, src, out);
  return true;
}

/**
 * Calls `fn` on every node with an index of the graph, until a sweep over the nodes rewrites
 * nothing; returns the rewrites. A rewrite edits only its node's neighbourhood (producers of its
 * inputs and their inputs' producers and readers, readers of its inputs and outputs), so the
 * index is rebuilt per sweep, not per rewrite: after a rewrite, a node whose own names, or whose
 * producers' names, were in a rewritten neighbourhood waits for the next sweep. (Rebuilding after
 * every rewrite made a 4,000-node graph take 7 s.) A rewrite replaces a node's `inputs` and
 * `outputs` arrays, never edits them in place: the sweep keeps the old arrays to know what changed.
 */
export function eachNode(g: OnnxGraph, fn: (n: OnnxNode, idx: GraphIndex) => boolean): number {
  let total = 0;
  for (;;) {
    const idx = new GraphIndex(g);
    const before = new Map(g.nodes.map((n) => [n, { inputs: n.inputs, outputs: n.outputs }]));
    const touched = new Set<OnnxNode>();
    const dirty = new Set<string>();
    const ioOf = (n: OnnxNode): { inputs: string[]; outputs: string[] } => before.get(n) ?? n;
    const producers = (names: string[]): OnnxNode[] => names.flatMap((i) => idx.producer(i) ?? []);
    const readers = (names: string[]): OnnxNode[] => names.flatMap((i) => idx.consumers(i));
    let changes = 0;
    for (const n of [...g.nodes]) {
      if (touched.has(n)) continue;
      const near = producers(ioOf(n).inputs);
      const names = [n, ...near].flatMap((m) => [...ioOf(m).inputs, ...ioOf(m).outputs]);
      if (names.some((x) => dirty.has(x))) continue;
      if (!fn(n, idx)) continue;
      changes++;
      const hood = new Set([n, ...near, ...readers(ioOf(n).outputs), ...readers(ioOf(n).inputs)]);
      for (const p of near) for (const m of [...producers(ioOf(p).inputs), ...readers(ioOf(p).inputs)]) hood.add(m);
      for (const m of hood) {
        touched.add(m);
        for (const x of [...ioOf(m).inputs, ...ioOf(m).outputs, ...m.inputs, ...m.outputs]) dirty.add(x);
      }
    }
    total += changes;
    if (changes === 0 || dirty.size === 0) return total;
  }
}

/** A constant's values as numbers (float16 and bfloat16 decoded), with its dims and dtype; null when not a known constant. */
export interface Numbers { dtype: DType; dims: number[]; values: number[]; tensor: OnnxTensor }

export function numbersOf(idx: GraphIndex, name: string): Numbers | null {
  if (name === '') return null;
  const t = idx.constant(name);
  if (t === undefined || t.data === null) return null;
  const dtype = tensorDtype(t)!;
  return { dtype, dims: t.dims, values: toNumbers(t.data, dtype), tensor: t };
}

export const dtypeOfCode = (code: number): DType | null => {
  try { return dtypeFromOnnx(code, 'value'); } catch { return null; }
};

/** Types and shapes of every name, inferred over the graph as it stands (passes/shapes.ts). */
export function typesOf(g: OnnxGraph, ctx: PassContext): Map<string, ValueType> {
  return inferTypes(g, opsetOf(ctx, ''));
}

/** A node's attribute list with `name` set to `value` (attribute objects are never edited in place). */
export function withAttr(n: OnnxNode, a: OnnxNode['attrs'][number]): OnnxNode['attrs'] {
  return [...n.attrs.filter((x) => x.name !== a.name), a];
}

/** Whether `name` is read by anything: a node, a subgraph, or the graph's outputs. */
export const isRead = (idx: GraphIndex, name: string): boolean => name !== '' && (idx.consumers(name).length > 0 || idx.pinned(name));
