/**
 * Seeded random ONNX models of ops graph passes rewrite (no-ops, Identity chains, Transpose and
 * Reshape pairs, Slices of elementwise results, MatMul + Add, Gemm + activation, constant chains,
 * Reshape to the input's own Shape), wired with fan-out and graph outputs taken anywhere: every
 * value is [batch, 4] float32, batch 2 or the symbol 'n'.
 */
import type { OnnxModel } from '../../src/ir/onnx/model.js';
import { attrs, constantValue, GraphBuilder, values } from './onnx_build.js';

export function randomModel(seed: number, size: number): OnnxModel {
  const r = (() => { let s = seed >>> 0 || 1; return (): number => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; }; })();
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)]!;
  const b = new GraphBuilder();
  let k = 0;
  const c = (dims: number[], data: number[], dtype: 'float32' | 'int64' = 'float32'): string => b.init(`c${k++}`, dims, data, dtype);
  const vals = [b.input('x', [r() < 0.5 ? 'n' : 2, 4])];
  const perm = [attrs.ints('perm', [1, 0])];
  for (let i = 0; i < size; i++) {
    const v = pick([...vals.slice(-4), ...vals]);
    let y: string;
    switch (Math.floor(r() * 16)) {
      case 0: y = b.node('Identity', [v]); break;
      case 1: y = b.node(pick(['Relu', 'Neg', 'Sigmoid', 'Tanh', 'Abs']), [v]); break;
      case 2: y = b.node(pick(['Add', 'Sub']), [v, c([4], [0, 0, 0, 0])]); break;
      case 3: y = b.node(pick(['Mul', 'Div']), [v, c([1, 4], [1, 1, 1, 1])]); break;
      case 4: y = b.node('Add', [v, pick(vals)]); break;
      case 5: y = b.node('Transpose', [b.node('Transpose', [v], { attrs: perm })], { attrs: perm }); break;
      case 6: y = b.node('Reshape', [b.node('Reshape', [v, c([1], [-1], 'int64')]), c([2], [-1, 4], 'int64')]); break;
      case 7: y = b.node('Squeeze', [b.node('Unsqueeze', [v, c([1], [0], 'int64')]), c([1], [0], 'int64')]); break;
      case 8: y = b.node('Dropout', [v]); break;
      case 9: y = b.node('Cast', [v], { attrs: [attrs.int('to', 1)] }); break;
      case 10: {
        const f = b.node(pick(['Relu', 'Exp', 'Neg']), [v]);
        const half = (lo: number, hi: number): string => b.node('Slice', [f, c([1], [lo], 'int64'), c([1], [hi], 'int64'), c([1], [1], 'int64')]);
        y = b.node('Concat', [half(0, 2), half(2, 4)], { attrs: [attrs.int('axis', 1)] });
        break;
      }
      case 11: y = b.node('Add', [b.node('MatMul', [v, c([4, 4], values(16, k))]), c([4], values(4, k))]); break;
      case 12: y = b.node(pick(['Relu', 'Sigmoid', 'Tanh']), [b.node('Gemm', [v, c([4, 4], values(16, k)), c([4], values(4, k))])]); break;
      case 13: y = b.node('Add', [v, b.node('Mul', [b.node('Transpose', [c([4, 1], values(4, k))], { attrs: perm }), b.node('Constant', [], { attrs: [constantValue([1], [0.5])] })])]); break;
      case 14: y = b.node('Add', [v, b.node('Reshape', [v, b.node('Shape', [v])])]); break;
      default: y = b.node('Slice', [v, c([1], [0], 'int64'), c([1], [2 ** 40], 'int64'), c([1], [1], 'int64')]); break;
    }
    vals.push(y);
  }
  const outs = new Set([vals[vals.length - 1]!]);
  for (let i = 0; i < 3; i++) if (r() < 0.6) outs.add(pick(vals));
  const named = new Set([...outs].map((v) => (v === 'x' || r() < 0.3 ? b.node('Identity', [v], { outputs: [`out${k++}`] }) : v)));
  for (const o of named) b.output(o);
  return b.model();
}
