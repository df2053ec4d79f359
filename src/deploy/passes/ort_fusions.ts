/**
 * Fusions into onnxruntime's contrib ops (domain com.microsoft, CPU kernels for float32 only), the
 * ones its 'extended' level makes itself: the file then runs them at any level and has fewer nodes,
 * but only onnxruntime can run it (optimize's `ortFusions: false` leaves them out).
 *   Conv + Relu | Sigmoid | Tanh | LeakyRelu | Clip | HardSigmoid -> FusedConv
 *     (Conv's attributes, `activation`, `activation_params`: LeakyRelu [alpha], Clip [min, max],
 *     HardSigmoid [alpha, beta]; onnxruntime's contrib_ops/cpu/fused_activation.cc)
 *   Gemm + Relu | Sigmoid | Tanh | LeakyRelu | HardSigmoid -> FusedGemm
 *     (Gemm's attributes, `activation`, `activation_alpha`, `activation_beta`; FusedGemm has no Clip)
 * Refused unless the product's result is float32, read by the activation alone, and Clip's bounds
 * are constants; and inside a quantized (QDQ) group (a DequantizeLinear input, a QuantizeLinear
 * reader), which onnxruntime turns into integer kernels only while it is plain Conv/Gemm.
 */
import type { OnnxAttr, OnnxGraph, OnnxNode } from '../../ir/onnx/model.js';
import { attrFloat, attrs } from '../../ir/onnx/model.js';
import type { GraphIndex } from '../graph.js';
import type { PassContext } from './common.js';
import { eachNode, isOnnx, numbersOf, opsetOf, removeNode, typesOf, useOpset } from './common.js';

const MS = 'com.microsoft';
const FLOAT_MAX = 3.4028234663852886e38;

export function fuseOrtActivations(g: OnnxGraph, ctx: PassContext): number {
  const types = typesOf(g, ctx);
  const opset = opsetOf(ctx, '');
  const changes = eachNode(g, (act, idx) => {
    if (!isOnnx(act)) return false;
    const x = act.inputs[0] ?? '';
    const p = idx.producer(x);
    if (p === undefined || !(isOnnx(p, 'Conv') || isOnnx(p, 'Gemm')) || !idx.onlyReadBy(x, act) || types.get(x)?.elemType !== 1) return false;
    // A quantized (QDQ) group, DequantizeLinear -> Conv -> Relu -> QuantizeLinear, is what onnxruntime
    // turns into QLinearConv / QGemm; as FusedConv it would no longer match and would run in float.
    if (p.inputs.some((i) => idx.producer(i)?.op === 'DequantizeLinear') || idx.consumers(act.outputs[0] ?? '').some((r) => r.op === 'QuantizeLinear')) return false;
    const params = activationParams(act, idx, opset);
    if (params === null) return false;
    let extra: OnnxAttr[];
    if (p.op === 'Conv') extra = params.length > 0 ? [attrs.floats('activation_params', params)] : [];
    else {
      if (act.op === 'Clip') return false;
      extra = [params[0], params[1]].flatMap((v, i) => (v === undefined ? [] : [attrs.float(i === 0 ? 'activation_alpha' : 'activation_beta', v)]));
    }
    p.op = p.op === 'Conv' ? 'FusedConv' : 'FusedGemm';
    p.domain = MS;
    p.attrs = [...p.attrs, attrs.string('activation', act.op), ...extra];
    p.outputs = [act.outputs[0]!];
    removeNode(g, act);
    return true;
  });
  if (changes > 0) useOpset(ctx, MS, 1);
  return changes;
}

/** The activation's parameters in onnxruntime's order, or null when it is not one the kernels fuse. */
function activationParams(act: OnnxNode, idx: GraphIndex, opset: number): number[] | null {
  switch (act.op) {
    case 'Relu': case 'Sigmoid': case 'Tanh': return [];
    case 'LeakyRelu': return [attrFloat(act, 'alpha', 0.01)];
    case 'HardSigmoid': return [attrFloat(act, 'alpha', 0.2), attrFloat(act, 'beta', 0.5)];
    case 'Clip': {
      if (opset < 11) return [attrFloat(act, 'min', -FLOAT_MAX), attrFloat(act, 'max', FLOAT_MAX)];
      const bound = (k: number, d: number): number | null => {
        const name = act.inputs[k] ?? '';
        if (name === '') return d;
        const c = numbersOf(idx, name);
        return c === null || c.values.length !== 1 ? null : c.values[0]!;
      };
      const lo = bound(1, -FLOAT_MAX);
      const hi = bound(2, FLOAT_MAX);
      return lo === null || hi === null ? null : [lo, hi];
    }
    default: return null;
  }
}
