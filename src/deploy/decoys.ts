/**
 * Decoy ops for `protect` (deploy/protect.ts): ops inserted on float32 activations that compute
 * their input exactly, bit for bit, for every float including -0.0, infinities and NaN:
 *
 *   x * 1, x - 0, x / 1   (IEEE 754: exact; -0 * 1 = -0 and -0 - 0 = -0, unlike -0 + 0 = +0)
 *   Identity(x), Neg(Neg(x)), Reshape(x, Shape(x))
 *   Transpose(Transpose(x, p), p^-1)   (only where x's rank is known)
 *
 * They make the file's op sequence differ from the model's; onnxruntime's own optimizer removes
 * some of them at load (Identity, x * 1 and friends, transpose pairs), so they cost little at run time.
 */
import type { OnnxGraph, OnnxNode } from '../ir/onnx/model.js';
import { attrs, tensorOf } from '../ir/onnx/model.js';
import type { Rng } from '../tensor/random.js';
import { GraphIndex, namer } from './graph.js';
import { inferTypes } from './passes/shapes.js';
import type { ValueType } from './passes/shapes.js';

const FLOAT = 1;
/** A decoy on Q/DQ edges would break onnxruntime's QDQ fusion: the int8 model would run in float, and compute other numbers. */
const QDQ = new Set(['QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear']);

export type DecoyKind = 'Mul' | 'Sub' | 'Div' | 'Identity' | 'NegNeg' | 'ReshapeShape' | 'TransposePair';
const KINDS: readonly DecoyKind[] = ['Mul', 'Sub', 'Div', 'Identity', 'NegNeg', 'ReshapeShape', 'TransposePair'];

/** Where a decoy may go: a float32 value some node reads that is not a graph output, a constant or a Q/DQ edge. */
function candidates(g: OnnxGraph, types: ReadonlyMap<string, ValueType>): string[] {
  const idx = new GraphIndex(g);
  const inits = new Set(g.initializers.map((t) => t.name));
  const names = [...g.inputs.map((i) => i.name), ...g.nodes.flatMap((n) => n.outputs)];
  return [...new Set(names)].filter((v) => {
    if (v === '' || inits.has(v) || idx.isGraphOutput(v) || types.get(v)?.elemType !== FLOAT) return false;
    const p = idx.producer(v);
    if (p !== undefined && (p.op === 'Constant' || QDQ.has(p.op))) return false;
    const readers = idx.consumers(v);
    return readers.length > 0 && readers.every((r) => !QDQ.has(r.op));
  });
}

/**
 * Inserts `count` decoys on randomly chosen float32 activations of `g` (in place; a decoy's own
 * output may take a later one). Returns how many of each kind went in. The nodes are appended:
 * the caller restores a topological order.
 */
export function insertDecoys(g: OnnxGraph, count: number, opset: number, rng: Rng): Record<string, number> {
  const fresh = namer(g);
  const made: Record<string, number> = {};
  const types = inferTypes(g, opset);
  const pool = candidates(g, types);
  if (count > 0 && pool.length === 0) throw new Error('protect: decoys: the model has no float32 activation a decoy could go on (graph inputs and node outputs read by a node, not graph outputs)');
  const scalar = (value: number): string => {
    const name = fresh('c');
    g.initializers.push(tensorOf(name, 'float32', [], Float32Array.of(value)));
    return name;
  };
  const node = (op: string, inputs: string[], extra: Partial<OnnxNode> = {}): string => {
    const out = fresh('d');
    g.nodes.push({ name: '', op, domain: '', inputs, outputs: [out], attrs: [], extra: [], ...extra });
    return out;
  };
  for (let k = 0; k < count; k++) {
    const v = pool[rng.int(pool.length)]!;
    const rank = types.get(v)?.shape?.length;
    const kinds = KINDS.filter((x) => x !== 'TransposePair' || (rank !== undefined && rank >= 2));
    const kind = kinds[rng.int(kinds.length)]!;
    // The readers of v now, before the decoy (which reads v) is added.
    const readers = new GraphIndex(g).consumers(v);
    let out: string;
    if (kind === 'Mul' || kind === 'Div') out = node(kind, [v, scalar(1)]);
    else if (kind === 'Sub') out = node('Sub', [v, scalar(0)]);
    else if (kind === 'Identity') out = node('Identity', [v]);
    else if (kind === 'NegNeg') out = node('Neg', [node('Neg', [v])]);
    else if (kind === 'ReshapeShape') out = node('Reshape', [v, node('Shape', [v])]);
    else {
      const perm = shuffled(rank!, rng);
      const inv = new Array<number>(rank!);
      perm.forEach((p, i) => { inv[p] = i; });
      out = node('Transpose', [node('Transpose', [v], { attrs: [attrs.ints('perm', perm)] })], { attrs: [attrs.ints('perm', inv)] });
    }
    made[kind] = (made[kind] ?? 0) + 1;
    // Some readers (at least one) take the decoy's output instead of v.
    const moved = readers.filter((_, i) => i === 0 || rng.uniform() < 0.5);
    for (const r of moved) r.inputs = r.inputs.map((x) => (x === v ? out : x));
    types.set(out, types.get(v)!);
    pool.push(out);
  }
  return made;
}

/** A random permutation of 0..n-1 other than the identity (n >= 2; Fisher-Yates, redrawn when it is the identity). */
function shuffled(n: number, rng: Rng): number[] {
  for (;;) {
    const p = rng.shuffle(Array.from({ length: n }, (_, i) => i));
    if (p.some((x, i) => x !== i)) return p;
  }
}
