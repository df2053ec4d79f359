/**
 * Deploying a QAT-trained model (ir/qat.ts) as int8 ONNX in QDQ form, the form onnxruntime's
 * QDQ transformers fuse at session creation into QLinearConv / QGemm / QLinearMatMul /
 * MatMulIntegerToFloat, MLAS's u8 x s8 kernels (VNNI / AMX where the CPU has them):
 *
 * - each site's weight is an s8 initializer (clamp(round(w / s_c))) -> DequantizeLinear(per axis),
 *   its bias an int32 initializer with scale s_x * s_w,c -> DequantizeLinear, and its activation
 *   input QuantizeLinear -> DequantizeLinear (u8, the site's frozen range);
 * - the same Q -> DQ pair is repeated after every op between the activation's producer and the
 *   product that only moves or selects values (MaxPool, Flatten, Reshape, Transpose, Relu, ...),
 *   up to and including a Relu or the producer itself: Conv -> Relu -> Q is the pattern
 *   onnxruntime needs to emit a u8 QLinearConv, and DQ -> MaxPool -> Q lets the pool run on u8.
 *   Fake quantization is idempotent and commutes with those ops (monotone, and 0 stays 0), so the
 *   extra pairs change no value: the model computes exactly weft's eval forward of the QAT graph
 *   (`qatForward`) when onnxruntime runs it unfused, and within requantization rounding fused.
 *
 * Ranges are frozen before export: `calibrateRanges` runs the eval forward over batches and averages
 * each site's batch min and max (what an exponential moving average observer converges to,
 * without its dependence on the first batch), or takes their extremes (`aggregate: 'minmax'`,
 * onnxruntime's MinMax calibrator, for post-training quantization).
 *
 * @example
 *   const ranges = await calibrateRanges(model, batches);          // batches: Feed[] of [N, 1, 28, 28]
 *   const onnx = exportQdq(model, { input: ['batch', 1, 28, 28], ranges });
 */
import * as b from '../ir/build.js';
import type { DType } from '../ir/dtype.js';
import { topoNodes } from '../ir/graph.js';
import type { Value } from '../ir/graph.js';
import { toModelProto } from '../ir/onnx/export.js';
import { activationQParams, qat, qatSites, quantizeWeight, roundHalfEven, weightScales } from '../ir/qat.js';
import type { QatProduct, QatRanges, QatSite } from '../ir/qat.js';
import { apply } from '../ir/registry.js';
import { rewrite } from '../ir/rewrite.js';
import type { Dim } from '../ir/shape.js';
import type { Module } from '../nn/module.js';
import { compile } from '../tensor/compile.js';
import type { Compiled, Feed } from '../tensor/compile.js';
import { placeholder, Tensor } from '../tensor/tensor.js';

/** A model whose forward takes one tensor (a `Sequential`, `convNet`). */
export type QatModel = Module & { forward(x: Tensor): Tensor };

export interface QdqOptions {
  /** The input's shape (a symbolic batch dim, e.g. ['batch', 1, 28, 28]), float32. */
  input: readonly Dim[];
  /** Frozen activation range per site (`calibrateRanges`). */
  ranges: QatRanges;
  ops?: readonly QatProduct[];
  /** int32 biases (default true; false leaves them float, which onnxruntime then does not fuse). */
  bias?: boolean;
  inputName?: string;
  outputName?: string;
}

/** Ops between an activation's producer and its product through which a Q -> DQ pair is repeated. */
const PASS = new Set(['MaxPool', 'Flatten', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Identity', 'Relu']);

const paramNames = (model: Module): Map<Value, string> => new Map(model.namedParameters().map(([n, p]) => [p.t.value, n]));

/** Traces `fn` with the model in eval mode, restoring its mode after. */
function inEval<T>(model: Module, fn: () => T): T {
  const was = model.training;
  model.eval();
  try { return fn(); } finally { model.train(was); }
}

/**
 * Each site's activation range over `batches`, the model in eval mode: the mean of the batches'
 * min and max ('mean', default), or the smallest min and largest max ('minmax'). With `quantize`
 * (default true) the model computes fake-quantized (QAT: later sites see quantized inputs, as the
 * exported model does, each batch at its own range); false observes the float model (PTQ).
 */
export async function calibrateRanges(model: QatModel, batches: readonly Feed[],
  o: { ops?: readonly QatProduct[]; quantize?: boolean; aggregate?: 'mean' | 'minmax' } = {}): Promise<Record<string, [number, number]>> {
  if (batches.length === 0) throw new Error('calibrateRanges: no batches');
  let names: string[] = [];
  const run = compile((x) => inEval(model, () => {
    const r = qat([model.forward(x).value], { params: paramNames(model), observe: true, quantize: o.quantize ?? true, ...(o.ops ? { ops: o.ops } : {}) });
    names = r.sites.map((s) => s.name);
    return r.observed.map((v) => new Tensor(v));
  }), 'qat.calibrate');
  const acc: [number, number][] = [];
  for (const feed of batches) {
    const out = await run(feed);
    out.forEach((r, i) => {
      const [lo, hi] = [Number(r[0]), Number(r[1])];
      const a = acc[i];
      if (a === undefined) acc[i] = [lo, hi];
      else if (o.aggregate === 'minmax') acc[i] = [Math.min(a[0], lo), Math.max(a[1], hi)];
      else acc[i] = [a[0] + lo, a[1] + hi];
    });
  }
  const k = o.aggregate === 'minmax' ? 1 : batches.length;
  return Object.fromEntries(names.map((n, i) => [n, [acc[i]![0] / k, acc[i]![1] / k]]));
}

/**
 * weft's eval forward of the QAT graph with frozen ranges, compiled: what the exported model
 * computes (up to onnxruntime's integer requantization when it fuses).
 */
export function qatForward(model: QatModel, o: { ranges: QatRanges; ops?: readonly QatProduct[]; bias?: boolean }): Compiled {
  return compile((x) => inEval(model, () => {
    const r = qat([model.forward(x).value], { params: paramNames(model), ranges: o.ranges, ...(o.ops ? { ops: o.ops } : {}), ...(o.bias !== undefined ? { bias: o.bias } : {}) });
    return [new Tensor(r.outputs[0]!)];
  }), 'qat.eval');
}

/** The QDQ int8 ONNX model of `model`'s eval forward (see the file's comment). */
export function exportQdq(model: QatModel, o: QdqOptions): Uint8Array {
  const params = paramNames(model);
  const x = placeholder(o.input, 'float32', o.inputName ?? 'x');
  const y = inEval(model, () => model.forward(x).value);
  const sites = qatSites([y], params, o.ops);
  const missing = sites.filter((s) => o.ranges[s.name] === undefined).map((s) => s.name);
  if (missing.length > 0) throw new Error(`exportQdq: no range for site(s) ${missing.join(', ')} (ranges has ${Object.keys(o.ranges).join(', ') || 'none'})`);
  const qp = (s: QatSite): { scale: number; zeroPoint: number } => activationQParams(o.ranges[s.name]![0], o.ranges[s.name]![1]);

  // Values that get a Q -> DQ pair where they are made: each site's activation and the chain of
  // single-consumer values behind it (see PASS).
  const consumers = new Map<Value, number>([[y, 1]]);
  const nodes = topoNodes([y]);
  for (const n of nodes) for (const v of n.inputs) if (v !== null) consumers.set(v, (consumers.get(v) ?? 0) + 1);
  const atProducer = new Map<Value, { scale: number; zeroPoint: number }>();
  for (const s of sites) {
    let v = s.node.inputs[s.act]!;
    if (v.node === null || consumers.get(v) !== 1) continue; // a graph input or a shared value: quantized at the site
    for (;;) {
      atProducer.set(v, qp(s));
      const p = v.node;
      if (p === null || p.op === 'Relu' || !PASS.has(p.op)) break;
      const u = p.inputs[0]!;
      if (u.node === null || consumers.get(u) !== 1) break;
      v = u;
    }
  }
  const qdq = (v: Value, q: { scale: number; zeroPoint: number }): Value => {
    const [s, z] = [b.scalar(q.scale), b.constant(Uint8Array.of(q.zeroPoint), 'uint8', [])];
    return b.apply1('DequantizeLinear', [b.apply1('QuantizeLinear', [v, s, z]), s, z]);
  };
  const dequantized = (data: Int8Array | Int32Array, dtype: DType, shape: readonly number[], scales: Float32Array, axis: number): Value => {
    const zp = dtype === 'int8' ? new Int8Array(scales.length) : new Int32Array(scales.length);
    return b.apply1('DequantizeLinear', [b.constant(data, dtype, shape), b.constant(scales, 'float32', [scales.length]), b.constant(zp, dtype, [scales.length])], { axis });
  };

  const bySite = new Map(sites.map((s) => [s.node, s]));
  const out = rewrite([y], (n, inputs) => {
    const s = bySite.get(n);
    let outs: Value[] | null = null;
    // MaxPool's Indices (traced for its gradient) would keep onnxruntime from pooling u8 values.
    if (n.op === 'MaxPool' && n.outputs.length === 2 && !consumers.has(n.outputs[1]!)) outs = apply(n.op, inputs, n.attrs, 1);
    if (s !== undefined) {
      const ins = [...inputs];
      const q = qp(s);
      if (!atProducer.has(n.inputs[s.act]!)) ins[s.act] = qdq(ins[s.act]!, q);
      const w = s.weight;
      const shape = w.shape as number[];
      const sw = weightScales(w.data as Float32Array, shape, s.axis);
      ins[1] = dequantized(quantizeWeight(w.data as Float32Array, shape, s.axis, sw), 'int8', shape, sw, s.axis);
      if (s.bias !== null && (o.bias ?? true)) {
        const sb = sw.map((c) => Math.fround(q.scale * c));
        const bias = s.bias.data as Float32Array;
        const bq = Int32Array.from(bias, (v, c) => Math.min(2147483647, Math.max(-2147483648, roundHalfEven(Math.fround(v / sb[c]!)))));
        ins[2] = dequantized(bq, 'int32', [bias.length], sb, 0);
      }
      outs = apply(n.op, ins, n.attrs, n.outputs.length);
    }
    if (!n.outputs.some((v) => atProducer.has(v))) return outs;
    outs ??= apply(n.op, inputs, n.attrs, n.outputs.length);
    return outs.map((v, i) => (atProducer.has(n.outputs[i]!) ? qdq(v, atProducer.get(n.outputs[i]!)!) : v));
  });
  // Parameters no site took (a BatchNorm's, an embedding) stay float initializers.
  const leaves = new Set(topoNodes(out).flatMap((n) => n.inputs.filter((v): v is Value => v !== null && v.node === null && params.has(v))));
  return toModelProto({ inputs: [x.value], outputs: out, initializers: [...leaves], outputNames: [o.outputName ?? 'y'], graphName: 'weft_qdq' });
}
