/**
 * Rewrites for what onnxruntime's CPU provider lacks or runs slowly:
 * - Erf has no float64 kernel, so float64 Erf becomes its Maclaurin series (Horner in x^2, 60
 *   terms) for |x| <= 3.5, accurate to ~1e-13 there, and the float32 kernel beyond, where erf is
 *   within 1e-6 of +-1.
 * - MLAS's SGEMM is slow when A is transposed (transA=1, the weight gradient X^T dY of every
 *   Linear): on the benchmark GPT's shapes it ran 47-62 GFLOP/s against 65-69 for an explicit
 *   Transpose followed by a plain Gemm, transpose included (2-core AVX2 EPYC, one thread). So
 *   float32 Gemm(transA=1) becomes Transpose + Gemm, and sessions disable onnxruntime's
 *   GemmTransposeFusion, which would fold the Transpose back (`DISABLED_OPTIMIZERS`).
 * - Conv, ConvTranspose, AveragePool and GlobalAveragePool have no float64 kernels (measured on
 *   onnxruntime-node 1.30; MaxPool and BatchNormalization do). float64 exists for
 *   finite-difference gradient checks, so these become im2col patch matrices (ir/im2col.ts: Pad,
 *   strided Slice, Concat, MatMul), ConvTranspose a stride-1 Conv over zero-inserted input with
 *   flipped weights, GlobalAveragePool a ReduceMean. test/vision_ops.test.ts checks each lowering
 *   against onnxruntime's float32 kernels on random geometries.
 * - Half precision runs as float32 between casts. bfloat16 has almost no CPU kernels: of the ops
 *   mixed precision emits, only data movement and Cast run in bfloat16 (probed on
 *   onnxruntime-node 1.30; Conv and the pools are not even valid bfloat16 ONNX at opset 17).
 *   float16 has more, but onnxruntime's own float16 handling on CPU (InsertCastTransformer) wraps
 *   each op lacking a kernel in casts and then drops every cast pair as "precision-free",
 *   including weft's casts of float32 inputs down to float16: the whole graph silently computes
 *   and stores float32 (measured: outputs bit-identical to float32, no memory saved). So both
 *   dtypes get weft's casts, which onnxruntime keeps: half inputs widened (exact), the op in
 *   float32, outputs rounded to the half dtype, which is what a half-precision device stores,
 *   with float32 accumulation. Only `HALF_KERNELS` run in the half dtype itself; a device with
 *   half kernels lists more there and gains speed as well as memory.
 */
import * as b from '../ir/build.js';
import { topoNodes } from '../ir/graph.js';
import type { Node, Value } from '../ir/graph.js';
import { averagePoolIm2col, convIm2col, convTransposeIm2col } from '../ir/im2col.js';
import { apply, makeCtx, opDef } from '../ir/registry.js';
import type { InferCtx } from '../ir/registry.js';
import { rewrite } from '../ir/rewrite.js';
import { convGeometry, convTransposeGeometry, poolGeometry, poolInverseCounts } from '../ir/ops/vision.js';

const TERMS = 60;
// c_n = (-1)^n / (n! (2n + 1)), times 2/sqrt(pi).
const COEF = Array.from({ length: TERMS }, (_, n) => {
  let f = 1;
  for (let k = 2; k <= n; k++) f *= k;
  return ((n % 2 === 0 ? 1 : -1) / (f * (2 * n + 1))) * (2 / Math.sqrt(Math.PI));
});

function erf64(x: Value): Value {
  const x2 = b.mul(x, x);
  let s = b.scalarLike(COEF[TERMS - 1]!, x);
  for (let n = TERMS - 2; n >= 0; n--) s = b.add(b.mul(s, x2), b.scalarLike(COEF[n]!, x));
  const series = b.mul(x, s);
  const far = b.cast(b.erf(b.cast(x, 'float32')), 'float64');
  const near = b.apply1('Less', [b.apply1('Abs', [x]), b.scalarLike(3.5, x)]);
  return b.where(near, series, far);
}

/**
 * alpha A^T op(B) (+ beta C) without MLAS's transA path. Either A is transposed (M*K elements
 * moved) or, when that is larger, the product is taken transposed, op(B)^T A, and the result
 * transposed back (N*K + M*N moved): for fc2's weight gradient (A [tokens, 4d]) the second moves
 * half as much.
 */
function gemmTransA(n: Node, a: Value, bv: Value, c: Value | null): Value {
  const tB = n.attrs['transB'] === 1;
  const alpha = n.attrs['alpha'] as number | undefined;
  const beta = n.attrs['beta'] as number | undefined;
  const [K, M] = a.shape as [number, number];
  const N = (tB ? bv.shape[0] : bv.shape[1]) as number;
  const t = (v: Value): Value => b.transpose(v, [1, 0]);
  const dynamic = [K, M, N].some((d) => typeof d !== 'number');
  if (c !== null || dynamic || M * K <= N * K + M * N) return b.gemm(t(a), bv, c, { transB: tB, alpha, beta });
  // C^T = op(B)^T A: with transB, op(B)^T is B itself; otherwise B is transposed explicitly.
  return t(b.gemm(tB ? bv : t(bv), a, null, { alpha }));
}

/** float64 forms of the ops onnxruntime's CPU provider runs in float32 only. */
const FLOAT64: Record<string, (c: InferCtx) => Value> = {
  Conv: (c) => {
    const win = convGeometry(c);
    return convIm2col(c.input(0), c.input(1), c.inputs[2] ?? null, win, win.group);
  },
  ConvTranspose: (c) => {
    const win = convTransposeGeometry(c);
    return convTransposeIm2col(c.input(0), c.input(1), c.inputs[2] ?? null, win, win.group);
  },
  AveragePool: (c) => {
    const win = poolGeometry(c);
    return averagePoolIm2col(c.input(0), win, poolInverseCounts(win, c.attr<number>('count_include_pad') === 1, 'float64'));
  },
  GlobalAveragePool: (c) => b.reduceMean(c.input(0), Array.from({ length: c.input(0).rank - 2 }, (_, i) => i + 2)),
};

/** onnxruntime graph optimizers that would undo these rewrites (a session config entry). */
export const DISABLED_OPTIMIZERS = ['GemmTransposeFusion'];

/**
 * The optimizers to disable for one lowered graph: `DISABLED_OPTIMIZERS`, and for a graph holding
 * half-precision values also CommonSubexpressionElimination. It would merge the forward's and the
 * backward's float32 casts of one saved half activation into one float32 tensor alive from the
 * forward to the backward, undoing the memory half precision saves (measured on the small GPT at
 * batch 64: fp16 peak RSS 1,744 MB with it, 1,481 MB without, fp32 2,000 MB).
 */
export function disabledOptimizers(outputs: readonly Value[]): string[] {
  for (const n of topoNodes(outputs)) {
    if (n.outputs.some((v) => v.dtype === 'float16' || v.dtype === 'bfloat16')) return [...DISABLED_OPTIMIZERS, 'CommonSubexpressionElimination'];
  }
  return [...DISABLED_OPTIMIZERS];
}

/** Ops run in the half dtype itself on onnxruntime's CPU provider: data movement (probed for bfloat16). */
const HALF_KERNELS = new Set(['Cast', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Concat', 'Slice', 'Split', 'Gather', 'GatherElements', 'Identity', 'Flatten', 'Shape']);

const isHalf = (v: Value | null): v is Value => v !== null && (v.dtype === 'bfloat16' || v.dtype === 'float16');

/** Whether node `n` (inputs already rewritten) must run in float32 between casts. */
function halfGap(n: Node, inputs: readonly (Value | null)[]): boolean {
  return !HALF_KERNELS.has(n.op) && (inputs.some(isHalf) || n.outputs.some(isHalf));
}

/** `n` computed in float32: half inputs widened, outputs cast back to their half dtype. */
function widened(n: Node, inputs: readonly (Value | null)[]): Value[] {
  const ins = inputs.map((v) => (isHalf(v) ? b.cast(v, 'float32') : v));
  const outs = apply(n.op, ins, n.attrs, n.outputs.length);
  return outs.map((v, i) => b.cast(v, n.outputs[i]!.dtype));
}

export function fillKernelGaps(outputs: readonly Value[]): Value[] {
  return rewrite(outputs, (n, inputs) => {
    const x = inputs[0]!;
    if (halfGap(n, inputs)) return widened(n, inputs);
    if (n.op === 'Erf' && x.dtype === 'float64') return [erf64(x)];
    const lower64 = FLOAT64[n.op];
    if (lower64 !== undefined && x.dtype === 'float64') return [lower64(makeCtx(opDef(n.op), inputs, n.attrs, n.outputs.length))];
    if (n.op === 'Gemm' && n.attrs['transA'] === 1 && x.dtype === 'float32') return [gemmTransA(n, x, inputs[1]!, inputs[2] ?? null)];
    return null;
  });
}
