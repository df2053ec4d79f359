/**
 * No-op elimination: a node whose result is one of its inputs, unchanged, is bypassed (its readers
 * read that input; a graph output keeps its name, passes/common.ts's `bypass`):
 *   Dropout at inference (training_mode absent or constant false; its mask unread), Reshape and
 *   Expand whose result has the input's shape, Transpose by the identity permutation, Cast to the
 *   input's own type, Add/Sub of a zero constant and Mul/Div by a one constant when broadcasting
 *   leaves the shape as it was, Pad by zeros, Slice that takes every element (steps 1, result of
 *   the input's shape), Concat, Sum, Max, Min and Mean of one input.
 * "Same shape" means known equal dims (numbers, or the same dim_param); unknown refuses. x + 0 turns
 * -0 into +0; that sign is the one difference this pass allows.
 */
import type { OnnxGraph, OnnxNode } from '../../ir/onnx/model.js';
import { attrInt, attrInts } from '../../ir/onnx/model.js';
import type { GraphIndex } from '../graph.js';
import type { PassContext } from './common.js';
import { bypass, eachNode, isOnnx, isRead, numbersOf, opsetOf, typesOf } from './common.js';
import type { ValueType } from './shapes.js';
import { shapesEqual, sliceParams } from './shapes.js';

export function eliminateNoOps(g: OnnxGraph, ctx: PassContext): number {
  const types = typesOf(g, ctx);
  const opset = opsetOf(ctx, '');
  return eachNode(g, (n, idx) => {
    if (!isOnnx(n) || n.outputs[0] === undefined || n.outputs[0] === '') return false;
    const src = passThrough(n, idx, types, opset);
    return src !== null && bypass(g, idx, n, src, n.outputs[0]);
  });
}

/** The input `n`'s first result equals, or null. */
function passThrough(n: OnnxNode, idx: GraphIndex, types: Map<string, ValueType>, opset: number): string | null {
  const x = n.inputs[0] ?? '';
  const sameShape = (input: string): boolean => shapesEqual(types.get(input)?.shape ?? null, types.get(n.outputs[0]!)?.shape ?? null);
  const all = (name: string | undefined, v: number): boolean => {
    const c = name === undefined ? null : numbersOf(idx, name);
    return c !== null && c.values.length > 0 && c.values.every((e) => e === v);
  };
  switch (n.op) {
    case 'Dropout': {
      if (n.outputs.slice(1).some((o) => isRead(idx, o))) return null;
      if (opset < 7 && attrInt(n, 'is_test', 0) !== 1) return null;
      const mode = n.inputs[2] ?? '';
      return mode === '' || all(mode, 0) ? x : null;
    }
    case 'Reshape': case 'Expand': return sameShape(x) ? x : null;
    case 'Transpose': {
      const p = attrInts(n, 'perm');
      const rank = types.get(x)?.shape?.length;
      return (p !== undefined ? p.every((a, i) => a === i) : rank !== undefined && rank <= 1) ? x : null;
    }
    case 'Cast': {
      const t = types.get(x)?.elemType ?? 0;
      return t !== 0 && t === attrInt(n, 'to', -1) ? x : null;
    }
    case 'Add': case 'Mul': {
      const unit = n.op === 'Add' ? 0 : 1;
      if (n.inputs.length !== 2) return null;
      if (all(n.inputs[1], unit) && sameShape(x)) return x;
      const y = n.inputs[1]!;
      return all(x, unit) && sameShape(y) ? y : null;
    }
    case 'Sub': case 'Div': return n.inputs.length === 2 && all(n.inputs[1], n.op === 'Sub' ? 0 : 1) && sameShape(x) ? x : null;
    case 'Pad': {
      const pads = opset >= 11 ? numbersOf(idx, n.inputs[1] ?? '')?.values : attrInts(n, 'pads');
      return pads !== undefined && pads.every((p) => p === 0) ? x : null;
    }
    case 'Slice': {
      const p = sliceParams(n, (name) => (name === undefined ? null : numbersOf(idx, name)?.values ?? null), opset, types.get(x)?.shape?.length ?? null);
      return p !== null && p.steps.every((s) => s === 1) && sameShape(x) ? x : null;
    }
    case 'Concat': case 'Sum': case 'Max': case 'Min': case 'Mean': return n.inputs.length === 1 ? x : null;
    default: return null;
  }
}
