/**
 * IR -> ONNX ModelProto bytes, at opset 17 / IR version 8 (what Debian's onnx 1.12 checker
 * validates). Composite ops are lowered first; constants become initializers.
 */
import { BYTES, ONNX_CODE } from '../dtype.js';
import type { DType, TypedArray } from '../dtype.js';
import type { AttrValue, TensorAttr } from '../graph.js';
import { topoNodes, Value } from '../graph.js';
import { opDef } from '../registry.js';
import { lowerComposites } from '../rewrite.js';
import { Writer } from './wire.js';

export const OPSET = 17;
export const IR_VERSION = 8;

export interface ExportOptions {
  /** Graph inputs, in order. Every non-constant leaf the outputs depend on must be listed. */
  inputs: readonly Value[];
  outputs: readonly Value[];
  /** Names for inputs and outputs; others get `v<id>`. */
  inputNames?: readonly string[];
  outputNames?: readonly string[];
  /** Non-constant leaves to store as initializers (trained weights). */
  initializers?: readonly Value[];
  graphName?: string;
}

const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7, strings: 8 } as const;

export function toModelProto(opts: ExportOptions): Uint8Array {
  const outputs = lowerComposites(opts.outputs);
  const names = new Map<Value, string>();
  const used = new Set<string>();
  const reserve = (n: string): void => {
    if (used.has(n)) throw new Error(`export: the name '${n}' is used twice`);
    used.add(n);
  };
  const claim = (v: Value, n: string): void => { reserve(n); names.set(v, n); };
  // Generated names step around every name claimed below (a user may call an input 'v12').
  const nameOf = (v: Value): string => {
    let n = names.get(v);
    if (n === undefined) {
      n = `v${v.id}`;
      for (let k = 1; used.has(n); k++) n = `v${v.id}_${k}`;
      claim(v, n);
    }
    return n;
  };
  const spareName = (n: { outputs: readonly Value[] }, k: number): string => {
    let name = `unused_${n.outputs[0]!.id}_${k}`;
    for (let j = 1; used.has(name); j++) name = `unused_${n.outputs[0]!.id}_${k}_${j}`;
    reserve(name);
    return name;
  };
  opts.inputs.forEach((v, i) => claim(v, opts.inputNames?.[i] ?? v.name ?? `input_${i}`));
  for (const v of opts.initializers ?? []) claim(v, v.name ?? `w${v.id}`);
  const inputSet = new Set(opts.inputs);
  const initSet = new Set(opts.initializers ?? []);

  const nodes = topoNodes(outputs);
  const host = nodes.find((n) => opDef(n.op).host);
  if (host) {
    const axis = host.attrs['axis'];
    throw new Error(`export: node ${host.op}${typeof axis === 'string' ? ` (axis '${axis}')` : ''} runs outside onnxruntime; an ONNX graph cannot hold it (export the single-device model, or run the step with compileSchedule)`);
  }
  const constants: Value[] = [];
  const seen = new Set<Value>();
  for (const n of nodes) {
    for (const v of n.inputs) {
      if (v === null || v.node !== null || seen.has(v)) continue;
      seen.add(v);
      if (v.constant) constants.push(v);
      else if (!inputSet.has(v) && !initSet.has(v)) {
        throw new Error(`export: value ${v.name ?? `v${v.id}`} ${v.toString()} is a leaf that is neither a graph input nor a constant`);
      }
    }
  }
  // Graph outputs must be distinct, named values. A node's output takes the output name itself;
  // leaves (inputs, weights, constants) and repeated outputs are routed through Identity nodes.
  // (Always adding Identity made export -> import -> export grow by one node per output.)
  const outNames = outputs.map((v, i) => opts.outputNames?.[i] ?? `output_${i}`);
  const viaIdentity = outputs.map((v, i) => {
    if (v.node !== null && !names.has(v)) { claim(v, outNames[i]!); return false; }
    reserve(outNames[i]!);
    return true;
  });

  const w = new Writer();
  w.int(1, IR_VERSION);
  w.string(2, 'weft');
  w.message(7, (g) => {
    for (const n of nodes) {
      g.message(1, (nw) => {
        for (const v of n.inputs) nw.string(1, v === null ? '' : nameOf(v));
        // A detached output (realized earlier, now a leaf with data) is an unused slot here.
        n.outputs.forEach((v, k) => nw.string(2, v.node === n ? nameOf(v) : spareName(n, k)));
        nw.string(4, n.op);
        const def = opDef(n.op);
        for (const [k, val] of Object.entries(n.attrs)) {
          nw.message(5, (aw) => writeAttr(aw, k, def.attrs?.[k]?.kind ?? 'int', val));
        }
      });
    }
    outputs.forEach((v, i) => {
      if (viaIdentity[i]) g.message(1, (nw) => { nw.string(1, nameOf(v)); nw.string(2, outNames[i]!); nw.string(4, 'Identity'); });
    });
    g.string(2, opts.graphName ?? 'weft');
    for (const v of [...constants, ...(opts.initializers ?? [])]) g.message(5, (tw) => writeTensor(tw, nameOf(v), v.dtype, v.shape as number[], v.data!));
    opts.inputs.forEach((v) => g.message(11, (vw) => writeValueInfo(vw, nameOf(v), v)));
    outputs.forEach((v, i) => g.message(12, (vw) => writeValueInfo(vw, outNames[i]!, v)));
  });
  w.message(8, (o) => { o.string(1, ''); o.int(2, OPSET); });
  return w.finish();
}

function writeValueInfo(w: Writer, name: string, v: Value): void {
  w.string(1, name);
  w.message(2, (t) => t.message(1, (tt) => {
    tt.int(1, ONNX_CODE[v.dtype]);
    tt.message(2, (s) => { for (const d of v.shape) s.message(1, (dw) => (typeof d === 'number' ? dw.int(1, d) : dw.string(2, d))); });
  }));
}

export function writeTensor(w: Writer, name: string, dtype: DType, shape: readonly number[], data: TypedArray): void {
  for (const d of shape) w.int(1, d);
  w.int(2, ONNX_CODE[dtype]);
  w.string(8, name);
  const n = shape.reduce((p, q) => p * q, 1);
  if (data.length !== n) throw new Error(`export: tensor '${name}' has ${data.length} elements for shape [${shape.join(', ')}]`);
  const raw = new Uint8Array(data.buffer, data.byteOffset, n * BYTES[dtype]);
  w.bytes(9, raw.slice());
}

function writeAttr(w: Writer, name: string, kind: string, v: AttrValue): void {
  w.string(1, name);
  w.int(20, ATTR_TYPE[kind as keyof typeof ATTR_TYPE]);
  switch (kind) {
    case 'float': w.float(2, v as number); break;
    case 'int': w.int(3, v as number); break;
    case 'string': w.bytes(4, new TextEncoder().encode(v as string)); break;
    case 'tensor': { const t = v as TensorAttr; w.message(5, (tw) => writeTensor(tw, name, t.dtype, t.shape, t.data)); break; }
    case 'floats': for (const x of v as number[]) w.float(7, x); break;
    case 'ints': w.packedInts(8, v as number[]); break;
    case 'strings': for (const x of v as string[]) w.string(9, x); break;
    default: throw new Error(`export: attribute '${name}' has unknown kind ${kind}`);
  }
}
