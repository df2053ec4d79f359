/**
 * Reverse-mode autodiff over the IR. Builds the backward graph as more IR nodes, so forward and
 * backward compile into one onnxruntime session.
 *
 * The engine, not the rules, owns: which inputs need gradients (only those on a path from `wrt`,
 * minus each op's declared non-differentiable inputs), summing fan-out contributions, and reducing
 * broadcast gradients back to each input's shape.
 *
 * Backward nodes carry the scope of the forward node they differentiate (ir/scope.ts), so a pass
 * over the step (activation checkpointing) knows whose backward each one is.
 */
import * as b from '../ir/build.js';
import { isFloat } from '../ir/dtype.js';
import { topoNodes, Value } from '../ir/graph.js';
import type { Node } from '../ir/graph.js';
import { makeCtx, opDef } from '../ir/registry.js';
import type { GradCtx } from '../ir/registry.js';
import { withScope } from '../ir/scope.js';
import { fmt, sameShape } from '../ir/shape.js';

/**
 * Gradients of `outputs` with respect to `wrt`. A scalar output is seeded with 1; other outputs
 * need a seed (the incoming gradient) of their shape. Inputs `outputs` do not depend on get zeros.
 */
export function grad(outputs: Value | readonly Value[], wrt: readonly Value[], seeds?: readonly (Value | null)[]): Value[] {
  const outs = Array.isArray(outputs) ? outputs : [outputs as Value];
  const order = topoNodes(outs);
  const depends = new Set<Value>(wrt);
  for (const n of order) if (n.inputs.some((v) => v !== null && depends.has(v))) for (const o of n.outputs) depends.add(o);

  const contribs = new Map<Value, Value[]>();
  const contribute = (v: Value, g: Value): void => {
    const list = contribs.get(v);
    if (list) list.push(g); else contribs.set(v, [g]);
  };
  outs.forEach((o, i) => {
    const seed = seeds?.[i] ?? null;
    if (seed === null && o.rank !== 0) throw new Error(`grad: output ${i} has shape ${fmt(o.shape)}; a non-scalar output needs a seed`);
    contribute(o, seed ?? b.scalarLike(1, o));
  });
  const total = (v: Value): Value | null => {
    const list = contribs.get(v);
    if (!list) return null;
    const s = b.sum(list);
    contribs.set(v, [s]);
    return s;
  };

  for (let k = order.length - 1; k >= 0; k--) {
    const n = order[k]!;
    withScope(n.scope, () => backwardNode(n, depends, total, contribute));
  }
  return wrt.map((w) => total(w) ?? b.zerosLike(w));
}

function backwardNode(n: Node, depends: Set<Value>, total: (v: Value) => Value | null, contribute: (v: Value, g: Value) => void): void {
  const dy = n.outputs.map(total);
  if (dy.every((d) => d === null)) return;
  const def = opDef(n.op);
  const needs = n.inputs.map((v, i) => v !== null && depends.has(v) && isFloat(v.dtype) && !(def.nondiff ?? []).includes(i));
  if (!needs.some(Boolean)) return;
  if (!def.grad) throw new Error(`grad: op ${n.op} has no gradient rule (needed for input ${needs.indexOf(true)})`);
  if (!def.gradAllOutputs && dy.some((d, i) => i > 0 && d !== null)) {
    throw new Error(`grad: op ${n.op} propagates gradients from its first output only, but output ${dy.findIndex((d, i) => i > 0 && d !== null)} has one`);
  }
  const ctx: GradCtx = { ...makeCtx(def, n.inputs, n.attrs, n.outputs.length), outputs: n.outputs, dy, needs };
  const grads = def.grad(ctx);
  n.inputs.forEach((v, i) => {
    const g = grads[i];
    if (!needs[i] || v === null || g === null || g === undefined) return;
    if (g.dtype !== v.dtype) throw new Error(`grad: ${n.op} rule gave a ${g.dtype} gradient for ${v.dtype} input ${i}`);
    const reduced = b.unbroadcast(g, v.shape);
    if (!sameShape(reduced.shape, v.shape)) {
      throw new Error(`grad: ${n.op} rule gave gradient shape ${fmt(g.shape)} for input ${i} of shape ${fmt(v.shape)}`);
    }
    contribute(v, reduced);
  });
}
