/**
 * Cancelling pairs:
 *   Transpose(Transpose(x, p), q): perm r[i] = p[q[i]]; the identity removes both, another perm
 *     leaves one Transpose of x.
 *   Reshape(Reshape(x, s), t) -> Reshape(x, t) when t is a constant without 0 (a 0 copies a dim of
 *     the middle shape); and when the result has x's shape, neither Reshape is needed.
 *   Squeeze(Unsqueeze(x, a), a) and Unsqueeze(Squeeze(x, a), a) -> x (the same axes, normalized;
 *     Squeeze without axes refuses).
 * The first node of a pair stays while anything else reads its result (dead-node elimination
 * removes it otherwise).
 */
import type { OnnxGraph, OnnxNode } from '../../ir/onnx/model.js';
import { attrInts, attrs } from '../../ir/onnx/model.js';
import type { GraphIndex } from '../graph.js';
import type { PassContext } from './common.js';
import { bypass, eachNode, isOnnx, numbersOf, opsetOf, typesOf, withAttr } from './common.js';
import type { ValueType } from './shapes.js';
import { shapesEqual } from './shapes.js';

export function cancelPairs(g: OnnxGraph, ctx: PassContext): number {
  const types = typesOf(g, ctx);
  const opset = opsetOf(ctx, '');
  return eachNode(g, (n, idx) => {
    if (!isOnnx(n) || (n.outputs[0] ?? '') === '') return false;
    const first = idx.producer(n.inputs[0] ?? '');
    if (first === undefined || !isOnnx(first)) return false;
    const x = first.inputs[0] ?? '';
    if (n.op === 'Transpose' && first.op === 'Transpose') return transposes(g, idx, types, first, n, x);
    if (n.op === 'Reshape' && first.op === 'Reshape') {
      if (shapesEqual(types.get(x)?.shape ?? null, types.get(n.outputs[0]!)?.shape ?? null)) return bypass(g, idx, n, x, n.outputs[0]!);
      const t = numbersOf(idx, n.inputs[1] ?? '');
      if (t === null || t.values.includes(0)) return false;
      n.inputs = [x, n.inputs[1]!];
      return true;
    }
    const pair = `${first.op}/${n.op}`;
    if (pair === 'Unsqueeze/Squeeze' || pair === 'Squeeze/Unsqueeze') {
      const axesOf = (m: OnnxNode): number[] | null => (opset >= 13 ? numbersOf(idx, m.inputs[1] ?? '')?.values ?? null : attrInts(m, 'axes') ?? null);
      const [a, b] = [axesOf(first), axesOf(n)];
      // Both axis lists refer to the rank of the tensor between them.
      const rank = types.get(n.inputs[0]!)?.shape?.length ?? null;
      if (a === null || b === null || a.length === 0 || a.length !== b.length) return false;
      const norm = (v: number[]): number[] | null => (v.some((e) => e < 0) && rank === null ? null : v.map((e) => (e < 0 ? e + rank! : e)).sort((p, q) => p - q));
      const [na, nb] = [norm(a), norm(b)];
      if (pair === 'Squeeze/Unsqueeze') {
        // Squeeze's axes refer to x's rank (the middle rank plus the axes squeezed).
        const r = rank === null ? null : rank + a.length;
        const sa = a.some((e) => e < 0) && r === null ? null : a.map((e) => (e < 0 ? e + r! : e)).sort((p, q) => p - q);
        const ub = b.some((e) => e < 0) && r === null ? null : b.map((e) => (e < 0 ? e + r! : e)).sort((p, q) => p - q);
        return sa !== null && ub !== null && sa.every((e, i) => e === ub[i]) && bypass(g, idx, n, x, n.outputs[0]!);
      }
      return na !== null && nb !== null && na.every((e, i) => e === nb[i]) && bypass(g, idx, n, x, n.outputs[0]!);
    }
    return false;
  });
}

function transposes(g: OnnxGraph, idx: GraphIndex, types: Map<string, ValueType>, first: OnnxNode, second: OnnxNode, x: string): boolean {
  const rank = types.get(x)?.shape?.length ?? null;
  const permOf = (m: OnnxNode): number[] | null => attrInts(m, 'perm') ?? (rank === null ? null : Array.from({ length: rank }, (_, i) => rank - 1 - i));
  const [p, q] = [permOf(first), permOf(second)];
  if (p === null || q === null || p.length !== q.length) return false;
  const r = q.map((i) => p[i]!);
  if (r.every((v, i) => v === i)) return bypass(g, idx, second, x, second.outputs[0]!);
  second.inputs = [x];
  second.attrs = withAttr(second, attrs.ints('perm', r));
  return true;
}
