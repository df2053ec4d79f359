/**
 * Automatic mixed precision as a rewrite of a traced forward graph (torch.autocast's op lists,
 * applied to the IR instead of at dispatch). Every op is in one of three classes:
 *
 * - `half`: runs in the compute dtype (float16 or bfloat16). Matrix products and convolutions,
 *   where half precision halves the bytes moved and, on a device with half kernels, runs faster.
 *   Their float inputs are cast down; a parameter's cast is made once and shared by every use
 *   (the step's half-precision copy of the weight, computed from the float32 master).
 * - `fp32`: runs in float32 because half precision loses too much. LayerNorm and BatchNorm
 *   statistics, softmax and log-softmax, sums and means (the loss reductions), exp, log, pow, and
 *   scatter-add (whose repeated indices accumulate). Half inputs are cast up.
 * - `promote`: elementwise and data-movement ops run in the widest dtype among their activation
 *   inputs. Constants and parameters are "weak" (PyTorch's Python-scalar rule): they follow the
 *   activations, so `matmul(x, W) + bias` stays half, while the float32 residual stream plus a
 *   half branch is float32.
 *
 * An op absent from these lists has no half-precision path and is an error naming it. The
 * backward is derived from the rewritten forward by autodiff as usual, so gradients flow in the
 * dtype of each forward value and reach the float32 parameters through their Cast (widened once).
 * Casts of constants are folded by onnxruntime.
 */
import * as b from './build.js';
import { isFloat } from './dtype.js';
import type { DType } from './dtype.js';
import type { Node, Value } from './graph.js';
import { apply } from './registry.js';
import { rewrite } from './rewrite.js';
import { withScope } from './scope.js';

export type HalfDType = 'float16' | 'bfloat16';
type AutocastClass = 'half' | 'fp32' | 'promote';

const CLASSES: Record<string, AutocastClass> = {};
const put = (cls: AutocastClass, ops: string): void => { for (const op of ops.split(/\s+/).filter(Boolean)) CLASSES[op] = cls; };
put('half', 'MatMul Gemm Conv ConvTranspose');
put('fp32', `LayerNormalization BatchNormalization Softmax LogSoftmax ReduceSum ReduceMean ReduceSumSquare
  Exp Log Pow ScatterElements`);
put('promote', `Add Sub Mul Div Neg Abs Sign Sqrt Reciprocal Tanh Sigmoid Relu Erf Gelu Identity Sum Where Cast
  Equal Greater Less GreaterOrEqual LessOrEqual And Or Not Gather GatherElements ReduceMax Dropout
  Reshape Transpose Squeeze Unsqueeze Expand Concat Split Slice Pad Shape ConstantOfShape Flatten
  MaxPool AveragePool GlobalAveragePool
  weft.Copy weft.AllReduce weft.AllGather weft.ReduceScatter weft.Split weft.AllToAll weft.Broadcast weft.RootOnly`);

/** The autocast class of an op, or null when it has no half-precision path. */
export const autocastClass = (op: string): AutocastClass | null => CLASSES[op] ?? null;

/** The scope (ir/scope.ts) of nodes traced inside `fullPrecision`: autocast leaves them as traced. */
export const FULL_PRECISION_SCOPE = 'autocast.fp32';

/**
 * Traces `fn` so that autocast keeps what it computes in float32 (torch.autocast(enabled=False)):
 * a distillation teacher's forward, whose soft targets half precision would blur. Its nodes carry
 * the scope FULL_PRECISION_SCOPE; a module scoped inside it (nn `scopeModules`) would override it.
 */
export function fullPrecision<T>(fn: () => T): T { return withScope(FULL_PRECISION_SCOPE, fn); }

export interface AutocastOptions {
  /** The compute dtype of `half` ops. */
  dtype: HalfDType;
  /** Leaves that are parameters (weak in `promote` ops, cast once where a `half` op reads them). */
  params: ReadonlySet<Value>;
  /** Names the setting in errors, e.g. "train.precision fp16". */
  who: string;
}

/**
 * Rewrites the forward graph under `outputs` to compute in mixed precision. Outputs keep their
 * dtype where they were float32 (the loss, buffer updates); everything else follows the classes.
 * Collectives in the graph run in the dtype their input arrives in: they are `promote`, and their
 * kernels move float32, so a half input to one is cast up first.
 */
export function autocast(outputs: readonly Value[], o: AutocastOptions): Value[] {
  const casts = new Map<Value, Value>();
  /** `v` in dtype `to`; a parameter (float32) is only ever cast to the half dtype, once. */
  const as = (v: Value, to: DType): Value => {
    if (v.dtype === to) return v;
    if (!o.params.has(v)) return b.cast(v, to);
    let c = casts.get(v);
    if (c === undefined) casts.set(v, (c = b.cast(v, to)));
    return c;
  };
  const weak = (v: Value): boolean => v.node === null && (v.constant || o.params.has(v));
  const out = rewrite(outputs, (n: Node, inputs) => {
    if (n.scope === FULL_PRECISION_SCOPE) return null;
    const cls = autocastClass(n.op);
    const floats = inputs.map((v) => v !== null && isFloat(v.dtype) && v.dtype !== 'float64');
    if (!floats.some(Boolean)) return null;
    if (cls === null) throw new Error(`${o.who}: op ${n.op} has no half-precision path (it is not in ir/autocast.ts's op lists); train it in fp32`);
    let target: DType;
    if (cls === 'half') target = o.dtype;
    else if (cls === 'fp32') target = 'float32';
    else {
      const strong = inputs.filter((v, i) => floats[i] && !weak(v!)) as Value[];
      if (strong.length === 0) return null;
      target = strong.some((v) => v.dtype === 'float32') ? 'float32' : strong[0]!.dtype;
      if (n.op.startsWith('weft.') && target !== 'float32') target = 'float32';
    }
    if (n.op === 'Cast') return null;
    const ins = inputs.map((v, i) => (floats[i] ? as(v!, target) : v));
    if (ins.every((v, i) => v === inputs[i])) return null;
    return apply(n.op, ins, n.attrs, n.outputs.length);
  });
  // The outputs are the step's results (the loss, buffer updates): float32 as traced.
  return out.map((v, i) => (v.dtype === outputs[i]!.dtype ? v : b.cast(v, outputs[i]!.dtype)));
}
