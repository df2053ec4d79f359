/**
 * Constant folding: a node of the default domain whose inputs are all constants (initializers that
 * are not graph inputs, Constant nodes, results folded before it) is evaluated once and becomes an
 * initializer. Nodes are evaluated by onnxruntime itself, every candidate of a round in one session
 * over a model holding just them and their constant inputs (optimization disabled), so every ONNX op
 * folds without a kernel written here; when that model fails to load or run (an op or type
 * onnxruntime lacks), each node is tried alone and the ones that fail are left as they are.
 * Shape and Size of a value whose shape is fully static fold without a session.
 *
 * Refused: ops that draw random numbers (RandomNormal*, RandomUniform*, Multinomial, Bernoulli),
 * Dropout (identity at inference, removed by the no-op pass; folding could bake a training-mode mask),
 * DequantizeLinear (a quantized model's weights stay int8 beside their scales, the QDQ form runtimes
 * turn into integer kernels; onnxruntime's folding skips it too);
 * other domains' ops; ops with subgraph attributes (If, Loop, Scan: their bodies may read names
 * the one-node model lacks); inputs kept opaque (external data, strings); results of a type weft
 * does not model; and a node whose results are larger than both its constant inputs and
 * `foldMaxBytes` (64 KiB by default): an Expand, Tile, ConstantOfShape or Range that big would grow
 * the file rather than save work.
 */
import { allocate, BYTES, ONNX_CODE } from '../../ir/dtype.js';
import type { DType } from '../../ir/dtype.js';
import type { OnnxGraph, OnnxModel, OnnxNode, OnnxTensor } from '../../ir/onnx/model.js';
import { attrInt, encodeModel, tensorOf } from '../../ir/onnx/model.js';
import { createInferenceSession } from '../../runtime/ort.js';
import { GraphIndex } from '../graph.js';
import type { PassContext } from './common.js';
import { dtypeOfCode, isOnnx, opsetOf, typesOf } from './common.js';
import { isStatic } from './shapes.js';
import type { ValueType } from './shapes.js';

const REFUSED = new Set(['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli', 'Dropout', 'DequantizeLinear']);

export async function foldConstants(g: OnnxGraph, ctx: PassContext): Promise<number> {
  let changes = foldStaticShapes(g, ctx);
  const idx = new GraphIndex(g);
  const types = typesOf(g, ctx);
  const known = new Map<string, number>([['', 0]]); // name -> bytes, for constants and candidates' results
  const bytesOf = (name: string): number | undefined => known.get(name) ?? idx.constant(name)?.data?.byteLength;
  const candidates: OnnxNode[] = [];
  for (const n of g.nodes) {
    if (!isOnnx(n) || REFUSED.has(n.op) || n.op.includes('Sequence') || n.op.startsWith('Optional')) continue;
    if (n.attrs.some((a) => a.raw !== undefined) || !n.inputs.every((i) => bytesOf(i) !== undefined)) continue;
    // A result known to be too big is not even computed (inference says its size: 1 GiB Expands stay unmade).
    const inBytes = [...new Set(n.inputs)].reduce((p, i) => p + bytesOf(i)!, 0);
    const outBytes = n.outputs.map((o) => staticBytes(types.get(o)));
    if (outBytes.reduce<number>((p, b) => p + (b ?? 0), 0) > Math.max(inBytes, ctx.foldMaxBytes)) continue;
    candidates.push(n);
    // Unknown sizes count as the bound: a chain through them is judged again when the values exist.
    n.outputs.forEach((o, k) => known.set(o, outBytes[k] ?? ctx.foldMaxBytes));
  }
  if (candidates.length === 0) return changes;
  const lookup = (name: string): OnnxTensor | undefined => idx.constant(name);
  const values = await evaluate(candidates, lookup, ctx);

  // Accept in graph order: a node folds when its inputs are constants now and its results are not too big.
  const accepted = new Set<OnnxNode>();
  const folded = new Set<string>();
  const bytes = (t: OnnxTensor | undefined): number => t?.data?.byteLength ?? 0;
  for (const n of candidates) {
    const inputs = n.inputs.filter((i) => i !== '');
    if (!inputs.every((i) => folded.has(i) || idx.constant(i) !== undefined)) continue;
    const outs = n.outputs.filter((o) => o !== '');
    if (!outs.every((o) => values.has(o))) continue;
    const outBytes = outs.reduce((p, o) => p + bytes(values.get(o)), 0);
    const inBytes = [...new Set(inputs)].reduce((p, i) => p + bytes(values.get(i) ?? idx.constant(i)), 0);
    if (outBytes > Math.max(inBytes, ctx.foldMaxBytes)) continue;
    accepted.add(n);
    for (const o of outs) folded.add(o);
  }
  for (const n of accepted) {
    for (const o of n.outputs) {
      if (o === '') continue;
      const readLater = idx.consumers(o).some((r) => !accepted.has(r)) || idx.pinned(o);
      if (readLater) g.initializers.push(values.get(o)!);
    }
  }
  g.nodes = g.nodes.filter((n) => !accepted.has(n));
  changes += accepted.size;
  return changes;
}

/** Bytes of a value whose type and shape are known and static, else undefined. */
function staticBytes(t: ValueType | undefined): number | undefined {
  const d = t === undefined || t.elemType === 0 ? null : dtypeOfCode(t.elemType);
  return d === null || t === undefined || !isStatic(t.shape) ? undefined : t.shape.reduce((p, q) => p * q, BYTES[d]);
}

/** Shape and Size of a name whose shape is known and fully static become int64 initializers. */
function foldStaticShapes(g: OnnxGraph, ctx: PassContext): number {
  const types = typesOf(g, ctx);
  const opset = opsetOf(ctx, '');
  const drop = new Set<OnnxNode>();
  for (const n of g.nodes) {
    if (!(isOnnx(n, 'Shape') || isOnnx(n, 'Size')) || n.outputs[0] === '') continue;
    const s = types.get(n.inputs[0] ?? '')?.shape ?? null;
    if (!isStatic(s)) continue;
    let values: number[];
    if (n.op === 'Size') values = [s.reduce((p, q) => p * q, 1)];
    else {
      const r = s.length;
      const at = (v: number): number => Math.min(r, Math.max(0, v < 0 ? v + r : v));
      values = opset >= 15 ? s.slice(at(attrInt(n, 'start', 0)), at(attrInt(n, 'end', r))) : s;
    }
    const data = BigInt64Array.from(values, (v) => BigInt(v));
    g.initializers.push(tensorOf(n.outputs[0]!, 'int64', n.op === 'Size' ? [] : [values.length], data));
    drop.add(n);
  }
  g.nodes = g.nodes.filter((n) => !drop.has(n));
  return drop.size;
}

/** The results of `nodes` (in graph order), by name; what onnxruntime cannot compute is missing. */
async function evaluate(nodes: OnnxNode[], lookup: (name: string) => OnnxTensor | undefined, ctx: PassContext): Promise<Map<string, OnnxTensor>> {
  try {
    return await run(nodes, lookup, ctx);
  } catch {
    const out = new Map<string, OnnxTensor>();
    for (const n of nodes) {
      try {
        for (const [k, v] of await run([n], (name) => out.get(name) ?? lookup(name), ctx)) out.set(k, v);
      } catch { /* left unfolded */ }
    }
    return out;
  }
}

async function run(nodes: OnnxNode[], lookup: (name: string) => OnnxTensor | undefined, ctx: PassContext): Promise<Map<string, OnnxTensor>> {
  const made = new Set(nodes.flatMap((n) => n.outputs));
  const inits = new Map<string, OnnxTensor>();
  for (const n of nodes) {
    for (const i of n.inputs) {
      if (i === '' || made.has(i) || inits.has(i)) continue;
      const t = lookup(i);
      if (t === undefined) throw new Error(`constant folding: '${i}' has no value`);
      inits.set(i, { ...t, name: i });
    }
  }
  const outputs = [...made].filter((o) => o !== '');
  const model: OnnxModel = {
    irVersion: ctx.irVersion, opsets: ctx.opsets.map((o) => ({ ...o })), producer: 'weft optimize', extra: [],
    graph: {
      name: 'fold', nodes, initializers: [...inits.values()], inputs: [], valueInfo: [], extra: [],
      // A name alone: onnxruntime infers each result's type.
      outputs: outputs.map((name) => ({ name, elemType: 0, shape: null, raw: new Uint8Array(0) })),
    },
  };
  const s = await createInferenceSession(encodeModel(model), { threads: ctx.threads, optimization: 'disabled' }, 'constant folding');
  try {
    const r = await s.run({});
    const out = new Map<string, OnnxTensor>();
    for (const name of outputs) {
      const v = r[name];
      if (v === undefined || !(v.dtype in ONNX_CODE)) continue;
      const dtype = v.dtype as DType;
      // A type onnxruntime-node hands back in another array kind than weft's (none known) is not folded.
      if (v.data.constructor !== allocate(dtype, 0).constructor) continue;
      out.set(name, tensorOf(name, dtype, v.dims, v.data));
    }
    return out;
  } finally {
    await s.release();
  }
}

