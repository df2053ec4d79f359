/**
 * `optimize(model)`: graph passes over any ONNX model (ir/onnx/model.ts's plain data), run in order
 * and repeated until a whole round changes nothing (at most `maxRounds`). Each pass is a small
 * function in deploy/passes/ that returns its number of rewrites; ops a pass does not know pass
 * through untouched and are listed in the report, never an error.
 *
 * Every pass keeps the graph's input and output names, removes value_info for names that vanish,
 * and leaves the nodes in a valid topological order (checked after each pass: a dangling name is
 * an error naming the pass, a bug here rather than in the model).
 *
 * @example
 *   const { model, report } = await optimize(decodeModel(bytes, 'in.onnx'));
 *   writeFileSync('out.onnx', encodeModel(model)); console.log(formatReport(report));
 */
import type { OnnxGraph, OnnxModel, OnnxNode } from '../ir/onnx/model.js';
import { GraphIndex, topoSort } from './graph.js';
import { foldBatchNorms } from './passes/bn_fold.js';
import type { Pass, PassContext } from './passes/common.js';
import { eliminateDead } from './passes/dce.js';
import { foldConstants } from './passes/fold.js';
import { fuseMatMulAdd } from './passes/gemm.js';
import { eliminateIdentities } from './passes/identity.js';
import { eliminateNoOps } from './passes/noop.js';
import { fuseOrtActivations } from './passes/ort_fusions.js';
import { cancelPairs } from './passes/pairs.js';
import { KNOWN_OPS } from './passes/shapes.js';
import { moveSlicesAhead } from './passes/slice_ahead.js';

/** The passes, in the order each round runs them. */
export const PASSES = {
  /** Constant folding, evaluated by onnxruntime (passes/fold.ts). */
  fold: foldConstants,
  /** Dead nodes and unread initializers. */
  dce: eliminateDead,
  identity: eliminateIdentities,
  /** Dropout at inference, same-shape Reshape/Expand, identity Transpose, same-type Cast, +0, *1, zero Pad, whole Slice, one-input Concat. */
  noop: eliminateNoOps,
  /** Transpose/Transpose, Reshape/Reshape, Squeeze/Unsqueeze. */
  pairs: cancelPairs,
  /** BatchNormalization into the Conv, Gemm or MatMul before it. */
  bn: foldBatchNorms,
  /** MatMul + Add -> Gemm. */
  gemm: fuseMatMulAdd,
  /** Slice ahead of elementwise ops. */
  slice: moveSlicesAhead,
  /** Conv/Gemm + activation -> com.microsoft FusedConv/FusedGemm (onnxruntime only; `ortFusions`). */
  fusions: fuseOrtActivations,
} satisfies Record<string, Pass>;

export type PassName = keyof typeof PASSES;
export const PASS_NAMES = Object.keys(PASSES) as PassName[];

export interface OptimizeOptions {
  /** Passes to run (default all), always in PASSES' order. */
  passes?: readonly PassName[];
  /**
   * Fuse into onnxruntime's com.microsoft ops (FusedConv, FusedGemm). Default true; the result then
   * loads only in onnxruntime. False keeps the file to standard ONNX ops.
   */
  ortFusions?: boolean;
  /** Rounds of all passes at most (default 10; a round that changes nothing ends it earlier). */
  maxRounds?: number;
  /** Constant folding keeps a node whose results outgrow both its inputs and this (default 64 KiB). */
  foldMaxBytes?: number;
  /** Threads of constant folding's onnxruntime sessions (default 1). */
  threads?: number;
}

export interface PassReport {
  pass: PassName;
  /** Rewrites over every round. */
  changes: number;
  /** Nodes it removed over every round (negative: it added nodes). */
  nodesRemoved: number;
  /** Initializers it removed over every round (negative: it added them, as folding does). */
  initializersRemoved: number;
}

export interface OptimizeReport {
  nodesBefore: number;
  nodesAfter: number;
  initializersBefore: number;
  initializersAfter: number;
  rounds: number;
  /** False when `maxRounds` ran out while a round still changed something. */
  converged: boolean;
  passes: PassReport[];
  /** Node counts per op type ("Conv", "com.microsoft:FusedConv"), before and after. */
  opsBefore: Record<string, number>;
  opsAfter: Record<string, number>;
  /** Ops no pass has a rule for, left as found: [op, domain, count]. */
  passedThrough: { op: string; domain: string; count: number }[];
}

export async function optimize(input: OnnxModel, opts: OptimizeOptions = {}): Promise<{ model: OnnxModel; report: OptimizeReport }> {
  const model = copyModel(input);
  const g = model.graph;
  const ctx: PassContext = { opsets: model.opsets, irVersion: model.irVersion, threads: opts.threads ?? 1, foldMaxBytes: opts.foldMaxBytes ?? 64 * 1024 };
  const wanted = new Set(opts.passes ?? PASS_NAMES);
  for (const p of wanted) if (!(p in PASSES)) throw new Error(`optimize: unknown pass '${p}'; the passes are ${PASS_NAMES.join(', ')}`);
  if (opts.ortFusions === false) wanted.delete('fusions');
  const order = PASS_NAMES.filter((p) => wanted.has(p));
  const reports = new Map<PassName, PassReport>(order.map((pass) => [pass, { pass, changes: 0, nodesRemoved: 0, initializersRemoved: 0 }]));
  const before = { nodes: g.nodes.length, inits: g.initializers.length, ops: opCounts(g) };

  // Below IR version 4 every initializer is also listed as a graph input and is still a constant
  // (onnxruntime overrides initializers only from IR 4 on): passes see them as initializers alone,
  // and the list is rebuilt at the end.
  const oldInputs = model.irVersion < 4 ? g.inputs : null;
  if (oldInputs !== null) { const inits = new Set(g.initializers.map((t) => t.name)); g.inputs = g.inputs.filter((i) => !inits.has(i.name)); }
  const dangling = danglingNames(g); // an input model's own, not a pass's
  let rounds = 0;
  let converged = false;
  const maxRounds = opts.maxRounds ?? 10;
  while (rounds < maxRounds && !converged) {
    rounds++;
    let changed = 0;
    for (const name of order) {
      const [n0, i0] = [g.nodes.length, g.initializers.length];
      const c = await PASSES[name](g, ctx);
      if (c === 0) continue;
      changed += c;
      topoSort(g);
      pruneValueInfo(g);
      check(g, name, dangling);
      const r = reports.get(name)!;
      r.changes += c;
      r.nodesRemoved += n0 - g.nodes.length;
      r.initializersRemoved += i0 - g.initializers.length;
    }
    converged = changed === 0;
  }
  if (oldInputs !== null) declareInitializers(g, oldInputs);
  return {
    model,
    report: {
      nodesBefore: before.nodes, nodesAfter: g.nodes.length, initializersBefore: before.inits, initializersAfter: g.initializers.length,
      rounds, converged, passes: [...reports.values()], opsBefore: before.ops, opsAfter: opCounts(g), passedThrough: unknownOps(g),
    },
  };
}

/** Ops no pass has a rule for (the contrib ops fusions make are known), by op and domain. */
function unknownOps(g: OnnxGraph): OptimizeReport['passedThrough'] {
  const known = (n: OnnxNode): boolean => ((n.domain === '' || n.domain === 'ai.onnx') && KNOWN_OPS.has(n.op)) || (n.domain === 'com.microsoft' && (n.op === 'FusedConv' || n.op === 'FusedGemm'));
  const out: OptimizeReport['passedThrough'] = [];
  for (const n of g.nodes) {
    if (known(n)) continue;
    const e = out.find((x) => x.op === n.op && x.domain === n.domain);
    if (e) e.count++;
    else out.push({ op: n.op, domain: n.domain, count: 1 });
  }
  return out;
}

/** The report as lines for a terminal. */
export function formatReport(r: OptimizeReport): string {
  const lines = [`nodes ${r.nodesBefore} -> ${r.nodesAfter}, initializers ${r.initializersBefore} -> ${r.initializersAfter} (${r.rounds} round${r.rounds === 1 ? '' : 's'}${r.converged ? '' : ', stopped at the limit with rewrites left'})`];
  const delta = (n: number): string => (n > 0 ? `-${n}` : n < 0 ? `+${-n}` : '0');
  for (const p of r.passes) lines.push(`  ${p.pass.padEnd(9)} ${String(p.changes).padStart(5)} rewrite${p.changes === 1 ? ' ' : 's'}  nodes ${delta(p.nodesRemoved).padStart(5)}  initializers ${delta(p.initializersRemoved).padStart(5)}`);
  const ops = (m: Record<string, number>): string => Object.entries(m).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} x${v}`).join(', ');
  lines.push(`  ops before: ${ops(r.opsBefore) || '(none)'}`, `  ops after:  ${ops(r.opsAfter) || '(none)'}`);
  if (r.passedThrough.length > 0) lines.push(`  passed through: ${r.passedThrough.map((p) => `${p.op}${p.domain === '' ? '' : ` (${p.domain})`} x${p.count}`).join(', ')}`);
  return lines.join('\n');
}

/** A copy a pass may edit: node and list objects are new; tensors and raw fields are shared (passes never write into them). */
function copyModel(m: OnnxModel): OnnxModel {
  const g = m.graph;
  return {
    ...m,
    opsets: m.opsets.map((o) => ({ ...o })),
    graph: {
      ...g,
      nodes: g.nodes.map((n) => ({ ...n, inputs: [...n.inputs], outputs: [...n.outputs], attrs: [...n.attrs] })),
      initializers: [...g.initializers], inputs: [...g.inputs], outputs: [...g.outputs], valueInfo: [...g.valueInfo],
    },
  };
}

function opCounts(g: OnnxGraph): Record<string, number> {
  const m: Record<string, number> = {};
  for (const n of g.nodes) {
    const k = n.domain === '' || n.domain === 'ai.onnx' ? n.op : `${n.domain}:${n.op}`;
    m[k] = (m[k] ?? 0) + 1;
  }
  return m;
}

/** Below IR 4, the graph's inputs again list every initializer: the ones still there in their old places, new ones after. */
function declareInitializers(g: OnnxGraph, old: OnnxGraph['inputs']): void {
  const inits = new Set(g.initializers.map((t) => t.name));
  const real = new Set(g.inputs.map((i) => i.name));
  g.inputs = old.filter((i) => real.has(i.name) || inits.has(i.name));
  const listed = new Set(g.inputs.map((i) => i.name));
  for (const t of g.initializers) if (!listed.has(t.name)) g.inputs.push({ name: t.name, elemType: t.elemType, shape: [...t.dims] });
}

/** value_info entries of names no node, input or initializer holds any more are dropped. */
function pruneValueInfo(g: OnnxGraph): void {
  const names = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.map((t) => t.name), ...g.nodes.flatMap((n) => n.outputs)]);
  g.valueInfo = g.valueInfo.filter((v) => names.has(v.name));
}

/** Names nodes read or the graph outputs that nothing holds (subgraphs read outer names: not checked here). */
function danglingNames(g: OnnxGraph): Set<string> {
  const idx = new GraphIndex(g);
  const inputs = new Set(g.inputs.map((i) => i.name));
  const exists = (name: string): boolean => name === '' || idx.producer(name) !== undefined || idx.initializer(name) !== undefined || inputs.has(name);
  return new Set([...g.nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)].filter((name) => !exists(name)));
}

/** After a pass: no name dangles that did not before. */
function check(g: OnnxGraph, pass: string, before: Set<string>): void {
  const dangling = [...danglingNames(g)].filter((name) => !before.has(name));
  if (dangling.length === 0) return;
  const reader = g.nodes.find((n) => n.inputs.includes(dangling[0]!));
  throw new Error(`optimize: pass '${pass}' left '${dangling[0]}' ${reader ? `read by ${reader.op} '${reader.name}'` : 'as a graph output'} with nothing producing it`);
}
