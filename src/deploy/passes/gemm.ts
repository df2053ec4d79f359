/**
 * MatMul + Add -> Gemm: Y = A B + C as one node, where A is known to be 2-D ([M, K]), B is a
 * constant [K, N] of float32 or float64 (Gemm's types in onnxruntime's CPU provider), the Add's
 * other operand is a constant unidirectionally broadcastable to [M, N] (ONNX Gemm's C: [], [N],
 * [1, N], [M, 1] or [M, N]; an [M, ...] needs M known), and nothing but the Add reads the product.
 */
import type { OnnxGraph } from '../../ir/onnx/model.js';
import type { PassContext } from './common.js';
import { eachNode, isOnnx, numbersOf, opsetOf, removeNode, typesOf } from './common.js';

export function fuseMatMulAdd(g: OnnxGraph, ctx: PassContext): number {
  if (opsetOf(ctx, '') < 7) return 0;
  const types = typesOf(g, ctx);
  return eachNode(g, (add, idx) => {
    if (!isOnnx(add, 'Add') || add.inputs.length !== 2) return false;
    for (const k of [0, 1]) {
      const y = add.inputs[k]!;
      const mm = idx.producer(y);
      if (mm === undefined || !isOnnx(mm, 'MatMul') || !idx.onlyReadBy(y, add)) continue;
      const a = types.get(mm.inputs[0] ?? '')?.shape ?? null;
      const b = numbersOf(idx, mm.inputs[1] ?? '');
      const c = numbersOf(idx, add.inputs[1 - k]!);
      if (a === null || a.length !== 2 || b === null || b.dims.length !== 2 || c === null) continue;
      if ((b.dtype !== 'float32' && b.dtype !== 'float64') || c.dtype !== b.dtype) continue;
      const [m, n] = [a[0], b.dims[1]!];
      const d = c.dims;
      const fits = d.length <= 2 && (d.length === 0 || d[d.length - 1] === 1 || d[d.length - 1] === n) && (d.length < 2 || d[0] === 1 || (typeof m === 'number' && d[0] === m));
      if (!fits) continue;
      mm.op = 'Gemm';
      mm.inputs = [mm.inputs[0]!, mm.inputs[1]!, add.inputs[1 - k]!];
      mm.outputs = [add.outputs[0]!];
      removeNode(g, add);
      return true;
    }
    return false;
  });
}
