import { topoNodes, Value } from './graph.js';
import type { Node } from './graph.js';
import { apply, makeCtx, opDef } from './registry.js';
import { withScope } from './scope.js';

/**
 * A rewrite rule sees a node whose inputs are already rewritten and returns replacement outputs,
 * or null to keep the op (re-applied to the new inputs).
 */
export type RewriteRule = (n: Node, inputs: readonly (Value | null)[]) => Value[] | null;

/**
 * Rebuilds the graph under `outputs`, applying `rule` to every node; leaves are kept as they are.
 * What replaces a node carries its scope (ir/scope.ts), so passes after a rewrite (activation
 * checkpointing after mixed precision) still see which module each node came from.
 */
export function rewrite(outputs: readonly Value[], rule: RewriteRule): Value[] {
  const map = new Map<Value, Value>();
  const get = (v: Value | null): Value | null => (v === null ? null : map.get(v) ?? v);
  for (const n of topoNodes(outputs)) {
    const inputs = n.inputs.map(get);
    const same = inputs.every((v, i) => v === n.inputs[i]);
    const out = withScope(n.scope, () => rule(n, inputs) ?? (same ? n.outputs : apply(n.op, inputs, n.attrs, n.outputs.length)));
    n.outputs.forEach((o, i) => { if (out[i] !== o && out[i] !== undefined) map.set(o, out[i]!); });
  }
  return outputs.map((o) => get(o)!);
}

/** Expands composite ops (those with a lowering) into ONNX ops, recursively. */
export function lowerComposites(outputs: readonly Value[]): Value[] {
  return rewrite(outputs, (n, inputs) => {
    const def = opDef(n.op);
    if (!def.lower) return null;
    return lowerComposites(def.lower(makeCtx(def, inputs, n.attrs, n.outputs.length)));
  });
}
