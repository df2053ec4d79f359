/**
 * The graph onnxruntime actually runs, read back from the model a session saves after its graph
 * optimizations (`optimizedModelFilePath`), and its liveness in onnxruntime's execution order.
 *
 * Why: onnxruntime does not run our topological order. It fuses (FusedMatMul, FusedGemm, Gelu,
 * transposes folded into their readers), folds constants, and orders the final graph by its own
 * reverse-DFS topological sort; activation checkpointing's recomputation and the weight-gradient
 * Gemms land elsewhere in that order, and the peak moves with them. The saved model lists its
 * nodes in exactly that order: Graph::ToGraphProto walks GraphViewer's default topological order,
 * the order the sequential executor's plan is built from. Checked on the small GPT's step with
 * full checkpointing (batch 4, 654 nodes): the saved node list and onnxruntime's profiler events
 * (`WEFT_ORT_PROFILE`) give the same op at all 654 positions, while our own order differs.
 *
 * The saved model has no value_info: a value that kept the name our export gave it takes its
 * shape and dtype from our graph (`known`); one an optimizer made (`_token_*` outputs of the
 * transpose optimizer, and the like) is inferred by a few shape rules below, and any other is
 * counted as its first input's size (reported in `guessed`, so a miss is visible).
 *
 * Buffers follow onnxruntime's CPU kernels: Reshape, Squeeze, Unsqueeze, Flatten and Identity
 * alias their input (no allocation; the profiler shows a zero arena delta for every Reshape), so
 * a buffer lives until the last reader of any of its aliases.
 */
import { BYTES } from '../ir/dtype.js';
import type { DType } from '../ir/dtype.js';
import { parseTensor, parseValueInfo } from '../ir/onnx/import.js';
import { asInt, asString, packedVarints, readFields } from '../ir/onnx/wire.js';

export interface TensorMeta { dtype: DType; shape: readonly number[] }

export interface OrtNode {
  op: string;
  /** '' for the default domain; 'com.microsoft' for contrib ops such as FusedMatMul. */
  domain: string;
  /** Input names ('' for an absent optional input). */
  inputs: string[];
  outputs: string[];
  /** Integer and integer-list attributes (perm, axes, axis, to, num_outputs), as lists. */
  ints: Map<string, number[]>;
}

export interface OrtGraph {
  /** In the order onnxruntime executes them. */
  nodes: OrtNode[];
  /** Initializers (weft's constants and what constant folding made): meta, and small int64 data. */
  initializers: Map<string, TensorMeta & { values: number[] | null }>;
  inputs: Map<string, TensorMeta>;
  outputs: string[];
}

/** Reads the nodes, initializers, inputs and outputs of a saved (optimized) ONNX model. */
export function readOrtGraph(bytes: Uint8Array, where = 'optimized model'): OrtGraph {
  const graph = readFields(bytes, where).find((f) => f.field === 7 && f.wire === 2);
  if (graph === undefined) throw new Error(`${where}: no graph (ModelProto field 7)`);
  const g: OrtGraph = { nodes: [], initializers: new Map(), inputs: new Map(), outputs: [] };
  for (const f of readFields(graph.bytes, `${where}: graph`)) {
    if (f.field === 1) g.nodes.push(readNode(f.bytes, `${where}: node ${g.nodes.length}`));
    else if (f.field === 5) {
      const t = parseTensor(f.bytes, `${where}: initializer`);
      const small = t.dtype === 'int64' && t.data.length <= 64;
      g.initializers.set(t.name, { dtype: t.dtype, shape: t.shape, values: small ? Array.from(t.data as BigInt64Array, Number) : null });
    } else if (f.field === 11 || f.field === 12) {
      const vi = parseValueInfo(f.bytes, `${where}: ${f.field === 11 ? 'input' : 'output'}`);
      if (f.field === 12) { g.outputs.push(vi.name); continue; }
      if (vi.shape.some((d) => typeof d !== 'number')) throw new Error(`${where}: input '${vi.name}' has a symbolic shape; liveness needs static shapes`);
      g.inputs.set(vi.name, { dtype: vi.dtype, shape: vi.shape as number[] });
    }
  }
  return g;
}

function readNode(bytes: Uint8Array, where: string): OrtNode {
  const n: OrtNode = { op: '', domain: '', inputs: [], outputs: [], ints: new Map() };
  for (const f of readFields(bytes, where)) {
    if (f.field === 1) n.inputs.push(asString(f));
    else if (f.field === 2) n.outputs.push(asString(f));
    else if (f.field === 4) n.op = asString(f);
    else if (f.field === 7) n.domain = asString(f);
    else if (f.field === 5) {
      let name = '';
      const vals: number[] = [];
      for (const a of readFields(f.bytes, `${where} attribute`)) {
        if (a.field === 1) name = asString(a);
        else if (a.field === 3) vals.push(asInt(a, `${where} attribute i`));
        else if (a.field === 8) vals.push(...packedVarints(a, `${where} attribute ints`));
      }
      if (vals.length > 0) n.ints.set(name, vals);
    }
  }
  return n;
}

/** Ops whose CPU kernel returns its input's buffer (onnxruntime's `Alias(0, 0)`). */
export const ALIAS_OPS: ReadonlySet<string> = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity']);

export interface OrtMemory {
  /** Most bytes of node outputs alive at once, in onnxruntime's order. */
  peakBytes: number;
  outputBytes: number;
  /** Initializers the session holds (weft's constants and folded ones). */
  constantBytes: number;
  nodes: number;
  /** Outputs whose shape no rule gave (counted as their first input's size). */
  guessed: number;
  /**
   * Live bytes when each node has run, before its dead inputs are freed: when onnxruntime's
   * profiler samples `mem_bytes_requested_in_use`, so the two compare node by node.
   */
  trace: number[];
}

const size = (m: TensorMeta): number => m.shape.reduce((p, d) => p * d, 1) * BYTES[m.dtype];

/**
 * Liveness of `g` in its node order: a node's outputs are allocated while its inputs are alive,
 * a buffer is freed after the last reader of any of its aliases, graph outputs live to the end;
 * graph inputs and initializers are not counted as live bytes. `known` gives shapes by name.
 */
export function ortLiveness(g: OrtGraph, known: ReadonlyMap<string, TensorMeta>, reuse = true): OrtMemory {
  const meta = new Map<string, TensorMeta>(known);
  for (const [k, v] of g.inputs) meta.set(k, v);
  for (const [k, v] of g.initializers) meta.set(k, v);
  let guessed = 0;
  for (const n of g.nodes) {
    n.outputs.forEach((o, k) => {
      if (o === '' || meta.has(o)) return;
      const m = inferOutput(n, k, meta, g);
      if (m === null) guessed++;
      meta.set(o, m ?? meta.get(n.inputs[0]!) ?? { dtype: 'float32', shape: [] });
    });
  }
  // Each value's buffer: its own, or (through aliases) its root's; fed values have none.
  const fed = (name: string): boolean => g.inputs.has(name) || g.initializers.has(name);
  const root = new Map<string, string>();
  const rootOf = (name: string): string => root.get(name) ?? name;
  const last = new Map<string, number>();
  g.nodes.forEach((n, i) => {
    if (ALIAS_OPS.has(n.op) && n.inputs[0] && n.outputs[0]) root.set(n.outputs[0], rootOf(n.inputs[0]));
    for (const v of n.inputs) if (v !== '') last.set(rootOf(v), i);
  });
  const held = new Set(g.outputs.map(rootOf));
  // onnxruntime's allocation planner (enabled without the memory pattern too): an output takes the
  // buffer of a value already dead with the same dtype and shape (most recently freed first), so
  // that buffer stays in the arena from its first value's allocation to its last value's death.
  const key = (m: TensorMeta): string => `${m.dtype}[${m.shape.join(',')}]`;
  const free: { key: string; buf: number }[] = [];
  const bufOf = new Map<string, number>();
  const bufs: { bytes: number; start: number; end: number }[] = [];
  g.nodes.forEach((n, i) => {
    for (const o of n.outputs) {
      if (o === '' || rootOf(o) !== o || fed(o)) continue;
      const m = meta.get(o)!;
      const end = held.has(o) ? g.nodes.length : Math.max(i, last.get(o) ?? i);
      const j = reuse ? free.findIndex((f) => f.key === key(m)) : -1;
      const b = j >= 0 ? free.splice(j, 1)[0]!.buf : bufs.push({ bytes: size(m), start: i, end }) - 1;
      bufs[b]!.end = end;
      bufOf.set(o, b);
      if (end === i) free.unshift({ key: key(m), buf: b });
    }
    for (const v of n.inputs) {
      const r = rootOf(v);
      const b = bufOf.get(r);
      if (b !== undefined && last.get(r) === i && !held.has(r)) free.unshift({ key: key(meta.get(r)!), buf: b });
    }
  });
  const delta = new Array<number>(g.nodes.length + 2).fill(0);
  for (const b of bufs) { delta[b.start]! += b.bytes; delta[b.end + 1]! -= b.bytes; }
  let live = 0;
  let peak = 0;
  const trace: number[] = [];
  for (let i = 0; i < g.nodes.length; i++) { live += delta[i]!; peak = Math.max(peak, live); trace.push(live); }
  const outputBytes = [...held].reduce((s, v) => s + (fed(v) ? 0 : size(meta.get(v)!)), 0);
  const constantBytes = [...g.initializers.values()].reduce((s, m) => s + size(m), 0);
  return { peakBytes: peak, outputBytes, constantBytes, nodes: g.nodes.length, guessed, trace };
}

/** Shape rules for the ops onnxruntime's optimizers create outputs of; null when none applies. */
function inferOutput(n: OrtNode, k: number, meta: ReadonlyMap<string, TensorMeta>, g: OrtGraph): TensorMeta | null {
  const x = meta.get(n.inputs[0] ?? '');
  if (x === undefined) return null;
  const rank = x.shape.length;
  const norm = (a: number, r: number): number => (a < 0 ? a + r : a);
  const constInput = (i: number): number[] | null => g.initializers.get(n.inputs[i] ?? '')?.values ?? null;
  const axesOf = (): number[] | null => n.ints.get('axes') ?? constInput(1);
  switch (n.op) {
    case 'Transpose': {
      const perm = n.ints.get('perm') ?? x.shape.map((_, i) => rank - 1 - i);
      return { dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) };
    }
    case 'Squeeze': {
      const axes = axesOf()?.map((a) => norm(a, rank));
      return { dtype: x.dtype, shape: x.shape.filter((d, i) => (axes ? !axes.includes(i) : d !== 1)) };
    }
    case 'Unsqueeze': {
      const axes = axesOf();
      if (axes === null) return null;
      const r = rank + axes.length;
      const at = new Set(axes.map((a) => norm(a, r)));
      const shape: number[] = [];
      for (let i = 0, j = 0; i < r; i++) shape.push(at.has(i) ? 1 : x.shape[j++]!);
      return { dtype: x.dtype, shape };
    }
    case 'Reshape': {
      const want = constInput(1);
      if (want === null) return null;
      const total = x.shape.reduce((p, d) => p * d, 1);
      const shape = want.map((d, i) => (d === 0 ? x.shape[i]! : d));
      const known = shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
      return { dtype: x.dtype, shape: shape.map((d) => (d === -1 ? total / known : d)) };
    }
    case 'Split': {
      const axis = norm(n.ints.get('axis')?.[0] ?? 0, rank);
      const parts = n.ints.get('split') ?? constInput(1) ?? n.outputs.map(() => x.shape[axis]! / n.outputs.length);
      return { dtype: x.dtype, shape: x.shape.map((d, i) => (i === axis ? parts[k]! : d)) };
    }
    case 'Cast': {
      const to = n.ints.get('to')?.[0];
      return to === undefined ? null : { dtype: CAST_TO[to] ?? x.dtype, shape: x.shape };
    }
    case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Where': {
      const ins = n.inputs.map((v) => meta.get(v));
      if (ins.some((m) => m === undefined)) return null;
      const r = Math.max(...ins.map((m) => m!.shape.length));
      const shape = Array.from({ length: r }, (_, i) => Math.max(...ins.map((m) => m!.shape[m!.shape.length - r + i] ?? 1)));
      return { dtype: n.op === 'Where' ? ins[1]!.dtype : x.dtype, shape };
    }
    default: return null;
  }
}

const CAST_TO: Record<number, DType> = { 1: 'float32', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16' };
