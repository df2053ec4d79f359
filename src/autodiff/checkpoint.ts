/**
 * Activation checkpointing as a transformation of the traced step (forward + backward IR), not of
 * model code. The forward nodes of each unit (a module chosen by glob, found by `Node.scope`,
 * ir/scope.ts) are cloned for the backward: every backward node of unit u that reads a forward
 * value made inside u reads its clone instead, so the forward value dies in the forward and only
 * what the clones start from stays stored between forward and backward.
 *
 * What stays stored (kept) inside a unit, by mode:
 * - always: the unit's outputs (values read outside the unit: they are another unit's inputs, or
 *   read by the non-unit forward; recomputing them would need the unit's own backward, a cycle),
 *   outputs of random ops (Dropout: a second draw gives another mask) and of host ops (collectives:
 *   recomputing one would add communication and a program cut to every step), and values computed
 *   from parameters and constants alone (weights transposed or cast: not activations, batch-free);
 * - 'full': nothing else. Each unit keeps only its inputs (Chen et al. 2016's per-block
 *   checkpoints); everything inside is recomputed once per step, by one clone set per unit shared
 *   by all its backward consumers.
 * - 'selective': also the outputs of parameter-consuming linear ops (MatMul / Gemm / Conv /
 *   ConvTranspose with exactly one operand computed from parameters: the projections, whose
 *   recomputation costs K multiply-adds per stored element). Everything else is recomputed:
 *   attention's scores, softmax and AV products (activation x activation MatMuls: the O(T^2)
 *   memory Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
 *   Models", single out), and the O(1)-per-element ops (LayerNorm, GELU, adds, reshapes). This is
 *   Korthikanti's criterion (store what is expensive to recompute per byte, recompute what is cheap)
 *   applied op by op, without knowing module names; it recomputes LayerNorm and GELU too, which
 *   they keep, trading a few memory-bound passes for storing 2 fewer [tokens, d] and one fewer
 *   [tokens, 4d] per block.
 *
 * Ordering. onnxruntime picks its own topological order, so a clone that could run early would be
 * computed early and held, saving nothing; and it runs weight gradients (which no node reads) at
 * the very end, which would hold every unit's clones until then (measured: with only the first
 * condition below, peak RSS did not fall at all). Every clone is therefore made data-dependent on
 * the backward having reached its unit and finished the unit after it: a value a clone starts from
 * (and that no cloned input already depends on) is read as `x + 0 * s`, with s the sum of one
 * element of each gradient flowing into the unit from outside it (the gradients of its outputs)
 * and of each result (passed-on and weight gradients) of the units those gradients come from. That
 * is one Gather per such value, one Mul per unit and one Add per gated input; onnxruntime folds
 * neither (s is not a constant), and the Add makes the clone's inputs differ from the original's,
 * so its common subexpression elimination cannot merge the clone back. `x + 0 * s` is x exactly for
 * finite s (a non-finite gradient makes the step's gradients NaN, still non-finite).
 */
import * as b from '../ir/build.js';
import { BYTES, isFloat } from '../ir/dtype.js';
import type { DType } from '../ir/dtype.js';
import { topoNodes } from '../ir/graph.js';
import type { Node, Value } from '../ir/graph.js';
import { apply, opDef } from '../ir/registry.js';
import { unitMatcher, withScope } from '../ir/scope.js';
import { isStatic, numel } from '../ir/shape.js';

export type CheckpointMode = 'none' | 'full' | 'selective';

export interface CheckpointOptions {
  /** 'none' transforms nothing (the stats are still measured). */
  readonly mode: CheckpointMode;
  /** Module-path globs of the units (`*` within a segment): each matching module is one unit. */
  readonly units: readonly string[];
}

export interface CheckpointStats {
  readonly mode: CheckpointMode;
  /** Units the forward holds nodes of. */
  readonly units: number;
  /** Nodes cloned for the backward, and how many of each op. */
  readonly recomputed: number;
  readonly recomputedOps: Readonly<Record<string, number>>;
  /** `x + 0 * s` adds that order the clones after the backward reaches their unit. */
  readonly gates: number;
  /**
   * Bytes of forward-made activations the backward reads (so held from forward to backward),
   * from their static shapes; values computed from parameters and constants alone are not counted.
   */
  readonly savedBytes: number;
}

/** A traced step: its forward outputs (loss, buffer updates) and all its outputs (those and the gradients). */
export interface TracedStep {
  readonly forward: readonly Value[];
  readonly outputs: readonly Value[];
}

const LINEAR = new Set(['MatMul', 'Gemm', 'Conv', 'ConvTranspose']);

/**
 * Rewrites `step.outputs` so that the backward recomputes each unit's forward (see the file's
 * comment). Returns the new outputs, in order, and what it did. A mode other than 'none' on a
 * step without any node in a unit is an error: the units' modules were not scoped.
 *
 *   const { outputs, stats } = checkpoint({ forward: [loss], outputs: [loss, ...grads] }, { mode: 'full', units: ['h*'] });
 */
export function checkpoint(step: TracedStep, opts: CheckpointOptions): { outputs: Value[]; stats: CheckpointStats } {
  const fwd = new Set(topoNodes(step.forward));
  const order = topoNodes(step.outputs);
  const unitOf = unitMatcher(opts.units);
  const unitAt = (n: Node): string | null => unitOf(n.scope);
  const units = new Set<string>();
  for (const n of fwd) { const u = unitAt(n); if (u !== null) units.add(u); }
  const fixed = fixedValues(order);
  const stats = { mode: opts.mode, units: units.size, recomputed: 0, recomputedOps: {} as Record<string, number>, gates: 0, savedBytes: 0 };
  if (opts.mode === 'none') return { outputs: [...step.outputs], stats: { ...stats, savedBytes: savedBytes(step.outputs, fwd, fixed) } };
  if (units.size === 0) {
    throw new Error(`checkpointing '${opts.mode}': no traced node lies in a unit [${opts.units.join(', ')}]; scope the units' modules before tracing (nn scopeModules(model, units))`);
  }

  const keep = keptValues(order, fwd, step.forward, unitAt, fixed, opts.mode);
  const recompute = (v: Value): boolean => v.node !== null && fwd.has(v.node) && unitAt(v.node) !== null && !keep.has(v);
  /** Whether backward node n reads forward value v through a clone of its own unit. */
  const viaClone = (n: Node, v: Value | null): v is Value => v !== null && recompute(v) && unitAt(v.node!) === unitAt(n);

  // What each unit's recomputation waits for: the gradients flowing into the unit from outside it
  // (backward values its backward nodes read that another unit's backward, or none's, made), and
  // every result of the units those come from (values their backward makes for anyone else: the
  // gradients they pass on, and their weight gradients). onnxruntime orders weight gradients, which
  // nothing reads, last: without the second part every unit's clones would live until the end.
  const incoming = new Map<string, Set<Value>>();
  const results = new Map<string, Set<Value>>();
  const add = (m: Map<string, Set<Value>>, u: string, v: Value): void => {
    let set = m.get(u);
    if (set === undefined) m.set(u, (set = new Set()));
    set.add(v);
  };
  const outputSet = new Set(step.outputs);
  for (const n of order) {
    if (fwd.has(n)) continue;
    const u = unitAt(n);
    for (const v of n.inputs) {
      if (v === null || v.node === null || fwd.has(v.node)) continue;
      const from = unitAt(v.node);
      if (from === u) continue;
      if (u !== null) add(incoming, u, v);
      if (from !== null) add(results, from, v);
    }
    if (u !== null) for (const o of n.outputs) if (outputSet.has(o)) add(results, u, o);
  }
  const waitsFor = new Map<string, Value[]>();
  for (const [u, ins] of incoming) {
    const all = new Set(ins);
    for (const v of ins) {
      const from = unitAt(v.node!);
      if (from !== null) for (const r of results.get(from) ?? []) all.add(r);
    }
    waitsFor.set(u, [...all].filter((v) => isFloat(v.dtype)));
  }

  const rebuilt = new Map<Value, Value>();
  const get = (v: Value): Value => rebuilt.get(v) ?? v;
  const clones = new Map<string, Map<Value, Value>>();
  const gated = new Set<Value>();
  const gates = new Map<string, Map<string, Value>>();
  const zero = new Map<string, Value | null>();

  /** 0 * s for unit u, in `dtype` (null when no gradient flows into u from outside). */
  const zeroOf = (u: string, dtype: DType): Value | null => {
    if (!zero.has(u)) {
      const ins = waitsFor.get(u) ?? [];
      zero.set(u, ins.length === 0 ? null : withScope(u, () => {
        const dt = ins[0]!.dtype;
        const one = ins.map((v) => b.cast(b.gather(b.reshape(get(v), [-1]), b.constant(BigInt64Array.of(0n), 'int64', [])), dt));
        return b.mul(b.sum(one), b.scalar(0, dt));
      }));
    }
    const z = zero.get(u)!;
    return z === null ? null : b.cast(z, dtype);
  };
  const gate = (u: string, x: Value): Value => {
    let m = gates.get(u);
    if (m === undefined) gates.set(u, (m = new Map()));
    const key = String(x.id);
    let g = m.get(key);
    if (g === undefined) {
      const z = zeroOf(u, x.dtype);
      if (z === null) return x;
      g = withScope(u, () => b.add(x, z));
      stats.gates++;
      gated.add(g);
      m.set(key, g);
    }
    return g;
  };

  /** The clone of forward value v (recomputed, in unit u), cloning what it needs first. */
  const cloneOf = (u: string, v: Value): Value => {
    let m = clones.get(u);
    if (m === undefined) clones.set(u, (m = new Map()));
    const done = m;
    // Iterative post-order over the recomputed producers v needs (a unit may be a whole model).
    const stack: [Node, boolean][] = [[v.node!, false]];
    while (stack.length > 0) {
      const [n, expanded] = stack.pop()!;
      if (done.has(n.outputs[0]!)) continue;
      const needs = n.inputs.filter((x): x is Value => x !== null && recompute(x) && !done.has(x));
      if (!expanded && needs.length > 0) {
        stack.push([n, true]);
        for (const x of needs) stack.push([x.node!, false]);
        continue;
      }
      const ins = n.inputs.map((x) => (x !== null && recompute(x) ? done.get(x)! : x));
      if (!ins.some((x) => x !== null && gated.has(x))) {
        // Nothing cloned feeds it: gate one input that varies with the batch.
        const k = ins.findIndex((x) => x !== null && !fixed(x) && isFloat(x.dtype));
        if (k >= 0) ins[k] = gate(u, ins[k]!);
      }
      const out = withScope(n.scope, () => apply(n.op, ins, n.attrs, n.outputs.length));
      stats.recomputed++;
      stats.recomputedOps[n.op] = (stats.recomputedOps[n.op] ?? 0) + 1;
      const isGated = ins.some((x) => x !== null && gated.has(x));
      n.outputs.forEach((o, i) => { done.set(o, out[i]!); if (isGated) gated.add(out[i]!); });
    }
    return done.get(v)!;
  };

  for (const n of backwardOrder(order, fwd, (n) => (n.inputs.some((v) => viaClone(n, v)) ? waitsFor.get(unitAt(n)!) ?? [] : []))) {
    const u = unitAt(n);
    const ins = n.inputs.map((v) => (v === null ? null : viaClone(n, v) ? cloneOf(u!, v) : get(v)));
    if (ins.every((v, i) => v === n.inputs[i])) continue;
    const out = withScope(n.scope, () => apply(n.op, ins, n.attrs, n.outputs.length));
    n.outputs.forEach((o, i) => rebuilt.set(o, out[i]!));
  }
  const outputs = step.outputs.map(get);
  return { outputs, stats: { ...stats, savedBytes: savedBytes(outputs, fwd, fixed) } };
}

/**
 * Values computed from constants, parameters and buffers alone (leaves holding data; a traced
 * input is a placeholder without): batch-free, so never activations.
 */
function fixedValues(order: readonly Node[]): (v: Value) => boolean {
  const set = new Set<Value>();
  const fixed = (v: Value): boolean => (v.node === null ? v.data !== null : set.has(v));
  for (const n of order) {
    const ins = n.inputs.filter((x): x is Value => x !== null);
    if (ins.length > 0 && ins.every(fixed)) for (const o of n.outputs) set.add(o);
  }
  return fixed;
}

/** The forward values inside units that stay stored under `mode` (see the file's comment). */
function keptValues(order: readonly Node[], fwd: ReadonlySet<Node>, forwardOutputs: readonly Value[], unitAt: (n: Node) => string | null, fixed: (v: Value) => boolean, mode: CheckpointMode): Set<Value> {
  const keep = new Set<Value>(forwardOutputs);
  for (const n of order) {
    if (!fwd.has(n)) continue;
    // Inputs from another unit, or read by the non-unit forward: that unit's outputs.
    for (const v of n.inputs) if (v !== null && v.node !== null && unitAt(v.node) !== null && unitAt(v.node) !== unitAt(n)) keep.add(v);
    if (unitAt(n) === null) continue;
    const def = opDef(n.op);
    const projection = mode === 'selective' && LINEAR.has(n.op) && n.inputs.slice(0, 2).filter((x) => x !== null && fixed(x)).length === 1;
    if (def.random === true || def.host === true || projection || n.outputs.every(fixed)) for (const o of n.outputs) keep.add(o);
  }
  return keep;
}

/**
 * The backward nodes (not in `fwd`) under `order`, inputs before users, where `extra(n)` names
 * further values n must come after (the gradients that gate its unit's clones).
 */
function backwardOrder(order: readonly Node[], fwd: ReadonlySet<Node>, extra: (n: Node) => readonly Value[]): Node[] {
  const out: Node[] = [];
  const state = new Map<Node, 1 | 2>();
  for (const root of order) {
    if (fwd.has(root) || state.has(root)) continue;
    const stack: [Node, (Node | null)[], number][] = [];
    const enter = (n: Node): void => {
      state.set(n, 1);
      const deps = [...n.inputs, ...extra(n)].map((v) => (v === null || v.node === null || fwd.has(v.node) ? null : v.node));
      stack.push([n, deps, 0]);
    };
    enter(root);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const [n, deps, i] = top;
      if (i < deps.length) {
        top[2]++;
        const d = deps[i];
        if (d === null || d === undefined) continue;
        const s = state.get(d);
        if (s === 1) throw new Error(`checkpointing: a unit's recomputation would depend on its own backward (at ${d.op}, scope ${d.scope ?? 'none'}); choose units whose outputs are not read inside them`);
        if (s === undefined) enter(d);
        continue;
      }
      stack.pop();
      state.set(n, 2);
      out.push(n);
    }
  }
  return out;
}

/** Bytes of forward-made, batch-dependent values read by nodes outside the forward. */
function savedBytes(outputs: readonly Value[], fwd: ReadonlySet<Node>, fixed: (v: Value) => boolean): number {
  const held = new Set<Value>();
  for (const n of topoNodes(outputs)) {
    if (fwd.has(n)) continue;
    for (const v of n.inputs) if (v !== null && v.node !== null && fwd.has(v.node) && !fixed(v)) held.add(v);
  }
  let bytes = 0;
  for (const v of held) if (isStatic(v.shape)) bytes += numel(v.shape) * BYTES[v.dtype];
  return bytes;
}
