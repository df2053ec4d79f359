/**
 * Model obfuscation (`weft protect`): the same function under names that say nothing.
 *
 * On a copy of the model (ir/onnx/model.ts's plain data): every node, every intermediate value and
 * every initializer is renamed to a meaningless id drawn at random (`k3f9x`); the producer, the
 * graph's name, doc strings, metadata_props and value_info are dropped; nodes are put in another
 * valid topological order (Kahn's algorithm taking a random ready node) and optionally decoy ops
 * that compute their input exactly go in (deploy/decoys.ts). Outputs do not change.
 *
 * Kept: the graph's inputs and outputs (the model's interface: a user feeds `idx`, reads `logits`;
 * renamed only with `renameIo`, the report then maps each old name to its new one), their
 * dims' symbolic names (`batch`), op types, domains, attributes and the weights themselves.
 *
 * Refused, naming what: subgraph attributes (If, Loop, Scan: their bodies read outer names that
 * are kept raw and could not be renamed consistently), model-local functions, sparse initializers,
 * external data (a file name), and fields of onnx.proto this module does not know (it cannot vouch
 * they hold no names). Renaming values is op-agnostic, so other domains' ops (com.microsoft's
 * contrib ops from `weft optimize`) pass through; a string attribute that holds a renamed name
 * (a custom op referring to a tensor by name would break, and leak it) is refused too.
 */
import { randomInt } from 'node:crypto';
import { decodeValueInfo } from '../ir/onnx/model.js';
import type { OnnxAttr, OnnxGraph, OnnxModel, OnnxNode, OnnxTensor, OnnxValueInfo } from '../ir/onnx/model.js';
import { readFields, Writer } from '../ir/onnx/wire.js';
import type { Field } from '../ir/onnx/wire.js';
import { Rng } from '../tensor/random.js';
import { insertDecoys } from './decoys.js';
import { topoSort } from './graph.js';

export interface ProtectOptions {
  /** Seed of every random choice (names, order, decoys); default: a fresh random seed, reported. */
  seed?: number;
  /** Decoy ops to insert (default 0). */
  decoys?: number;
  /** Put the nodes in another random topological order (default true). */
  shuffle?: boolean;
  /** Rename the graph's inputs and outputs too (default false); the report maps them. */
  renameIo?: boolean;
}

export interface ProtectReport {
  seed: number;
  nodes: number;
  nodesRenamed: number;
  /** Values other than initializers: node outputs (graph outputs and inputs only with renameIo). */
  valuesRenamed: number;
  initializersRenamed: number;
  decoys: number;
  decoyKinds: Record<string, number>;
  /** Whether the node order changed (false only when a single order exists, or shuffle is off). */
  shuffled: boolean;
  /** Doc strings, metadata entries and other descriptive fields dropped, and value_info entries dropped. */
  fieldsStripped: number;
  valueInfoDropped: number;
  /** With renameIo: each graph input's and output's old name -> new name. */
  io: { inputs: Record<string, string>; outputs: Record<string, string> } | null;
}

/** Descriptive fields dropped, by message (onnx.proto numbers): doc strings, metadata, annotations. */
const STRIP = {
  model: new Set([3, 4, 5, 6, 14, 20, 26]), // producer_version, domain, model_version, doc_string, metadata_props, training_info, configuration
  graph: new Set([10, 14, 16]), // doc_string, quantization_annotation, metadata_props
  node: new Set([6, 8, 9, 10]), // doc_string, overload (functions are refused), metadata_props, device_configurations
  valueInfo: new Set([3, 4]), // doc_string, metadata_props
  tensor: new Set([12, 16]), // doc_string, metadata_props
};
/** Fields that hold names protect cannot rename: refused. */
const REFUSE: Record<string, Map<number, string>> = {
  model: new Map([[25, 'model-local functions (ModelProto.functions): their bodies\' names']]),
  graph: new Map([[15, 'sparse initializers (GraphProto.sparse_initializer)']]),
};
const SUBGRAPH_TYPES = new Set([5, 10]); // GRAPH, GRAPHS

/**
 * Obfuscates `model` (never mutated): renamed, stripped, shuffled, optionally with decoys.
 *
 * @example
 *   const { model: p, report } = protect(decodeModel(bytes), { seed: 7, decoys: 20 });
 *   writeFileSync('model.protected.onnx', encodeModel(p));
 */
export function protect(model: OnnxModel, opts: ProtectOptions = {}): { model: OnnxModel; report: ProtectReport } {
  const seed = opts.seed ?? randomInt(2 ** 31);
  const decoys = opts.decoys ?? 0;
  const shuffle = opts.shuffle ?? true;
  if (!Number.isInteger(decoys) || decoys < 0) throw new Error(`protect: decoys must be a non-negative integer, got ${decoys}`);
  if (!Number.isSafeInteger(seed)) throw new Error(`protect: seed must be an integer, got ${seed}`);
  const rng = new Rng(seed);
  const m = structuredClone(model);
  const g = m.graph;
  g.nodes.forEach((n, i) => checkNode(n, i));
  checkStringAttrs(g, renamedNames(g, opts.renameIo ?? false));
  const { fieldsStripped, valueInfoDropped } = strip(m);

  const opset = m.opsets.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 17;
  const original = g.nodes.slice();
  const decoyKinds = decoys > 0 ? insertDecoys(g, decoys, opset, rng) : {};
  topoSort(g);
  if (shuffle) {
    g.nodes = randomOrder(g, rng);
    g.initializers = rng.shuffle(g.initializers.slice());
  }
  const shuffled = !sameOrder(original, g.nodes);
  const { counts, io } = rename(g, rng, opts.renameIo ?? false);
  return {
    model: m,
    report: { seed, nodes: g.nodes.length, ...counts, decoys, decoyKinds, shuffled, fieldsStripped, valueInfoDropped, io: opts.renameIo ? io : null },
  };
}

/** Drops every descriptive field of `m` in place (refusing what holds names it cannot rename); counts what went. */
function strip(m: OnnxModel): Pick<ProtectReport, 'fieldsStripped' | 'valueInfoDropped'> {
  const g = m.graph;
  let stripped = 0;
  const keep = (fields: Field[], drop: Set<number>, refuse: Map<number, string> | undefined, where: string): Field[] => fields.filter((f) => {
    const why = refuse?.get(f.field);
    if (why !== undefined) throw new Error(`protect: ${where} holds ${why}, which protect cannot rename; inline them first`);
    if (drop.has(f.field)) { stripped++; return false; }
    throw new Error(`protect: ${where} has field ${f.field}, which protect does not know: it cannot vouch it holds no names`);
  });
  // Messages kept as raw bytes (opaque tensors, non-tensor value infos) are re-encoded without the dropped fields.
  const cleanRaw = (raw: Uint8Array, drop: Set<number>, where: string): Uint8Array => {
    const w = new Writer();
    for (const f of readFields(raw, where)) {
      if (drop.has(f.field)) stripped++;
      else w.field(f);
    }
    return w.finish();
  };
  const cleanTensor = (t: OnnxTensor, where: string): void => {
    if (t.raw === undefined) return;
    if (readFields(t.raw, where).some((f) => f.field === 13 || (f.field === 14 && f.num === 1n))) throw new Error(`protect: ${where} keeps its data in an external file (its name is in the model); load it into the model first`);
    t.raw = cleanRaw(t.raw, STRIP.tensor, where);
  };
  if (m.producer !== '') stripped++;
  m.producer = '';
  m.extra = keep(m.extra, STRIP.model, REFUSE['model'], 'the model');
  g.extra = keep(g.extra, STRIP.graph, REFUSE['graph'], 'the graph');
  g.nodes.forEach((n, i) => {
    n.extra = keep(n.extra, STRIP.node, undefined, nodeWhere(n, i));
    for (const a of n.attrs) {
      if (a.type !== 4) continue;
      const t = a.value as OnnxTensor;
      cleanTensor(t, `${nodeWhere(n, i)} attribute '${a.name}'`);
      t.name = '';
    }
  });
  // Decoded again: without its doc string an input is a plain tensor type, encoded as weft encodes one.
  const cleanInfo = (v: OnnxValueInfo): OnnxValueInfo => (v.raw === undefined ? v : decodeValueInfo(cleanRaw(v.raw, STRIP.valueInfo, `value_info '${v.name}'`), `value_info '${v.name}'`));
  g.inputs = g.inputs.map(cleanInfo);
  g.outputs = g.outputs.map(cleanInfo);
  g.initializers.forEach((t) => cleanTensor(t, `initializer '${t.name}'`));
  const valueInfoDropped = g.valueInfo.length;
  g.valueInfo = [];
  return { fieldsStripped: stripped, valueInfoDropped };
}

const nodeWhere = (n: OnnxNode, i: number): string => `node ${i} (${n.domain ? `${n.domain}.` : ''}${n.op}${n.name ? ` '${n.name}'` : ''})`;

function checkNode(n: OnnxNode, i: number): void {
  for (const a of n.attrs) {
    if (a.raw === undefined) continue;
    if (SUBGRAPH_TYPES.has(a.type)) throw new Error(`protect: ${nodeWhere(n, i)} has a subgraph attribute '${a.name}': the names inside it cannot be renamed consistently; protect refuses models with If, Loop or Scan bodies`);
    throw new Error(`protect: ${nodeWhere(n, i)} attribute '${a.name}' has type ${a.type}, which protect does not model`);
  }
}

/** Whether two node lists are the same nodes in the same order, up to inserted decoys (compared by identity). */
function sameOrder(before: readonly OnnxNode[], after: readonly OnnxNode[]): boolean {
  const old = new Set(before);
  const kept = after.filter((n) => old.has(n));
  return kept.every((n, i) => n === before[i]);
}

/**
 * A random topological order: Kahn's algorithm taking a random ready node each step. At the first
 * step with a choice it never takes the node the current order has there, so the order differs
 * whenever more than one exists. `g.nodes` must be topologically sorted.
 */
function randomOrder(g: OnnxGraph, rng: Rng): OnnxNode[] {
  const producer = new Map<string, number>();
  g.nodes.forEach((n, i) => { for (const o of n.outputs) if (o !== '') producer.set(o, i); });
  const waiting = g.nodes.map(() => 0);
  const readers: number[][] = g.nodes.map(() => []);
  g.nodes.forEach((n, i) => {
    for (const p of new Set(n.inputs.map((x) => producer.get(x)).filter((p): p is number => p !== undefined))) {
      waiting[i]!++;
      readers[p]!.push(i);
    }
  });
  const ready = waiting.flatMap((w, i) => (w === 0 ? [i] : []));
  const out: OnnxNode[] = [];
  let deviated = false;
  while (ready.length > 0) {
    let k = rng.int(ready.length);
    if (!deviated && ready.length > 1) {
      // The node the current order has at this position: pick any other.
      const here = ready.indexOf(out.length);
      if (here >= 0 && k === here) k = (here + 1 + rng.int(ready.length - 1)) % ready.length;
      deviated = true;
    }
    const i = ready[k]!;
    ready[k] = ready[ready.length - 1]!;
    ready.pop();
    out.push(g.nodes[i]!);
    for (const r of readers[i]!) if (--waiting[r]! === 0) ready.push(r);
  }
  return out;
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/**
 * Renames every node, value and initializer of `g` in place (graph inputs and outputs too with
 * `renameIo`; a graph input an initializer backs is a weight, renamed always). New names are
 * distinct random ids of one length, a letter then base-36 digits, none holding an old name of 4+
 * characters (so no old name survives inside a new one).
 */
function rename(g: OnnxGraph, rng: Rng, renameIo: boolean): { counts: Pick<ProtectReport, 'nodesRenamed' | 'valuesRenamed' | 'initializersRenamed'>; io: NonNullable<ProtectReport['io']> } {
  const inits = new Set(g.initializers.map((t) => t.name));
  const names = valueNames(g);
  const renamed = renamedNames(g, renameIo);
  const taken = new Set([...names].filter((x) => !renamed.has(x)));
  const total = renamed.size + g.nodes.length + 1;
  // 26 * 36^(len-1) ids; at least 8 per name, so a draw is rarely a repeat.
  let len = 3;
  while (26 * 36 ** (len - 1) < 8 * total) len++;
  // Only an old name no longer than an id can hide inside one.
  const old = [...names, ...g.nodes.map((n) => n.name), g.name].filter((x) => x.length >= 4 && x.length <= len);
  const draw = (): string => {
    for (;;) {
      let s = ALPHABET[rng.int(26)]!;
      for (let i = 1; i < len; i++) s += ALPHABET[rng.int(36)]!;
      if (!taken.has(s) && !old.some((o) => s.includes(o))) { taken.add(s); return s; }
    }
  };
  const map = new Map<string, string>();
  for (const x of renamed) map.set(x, draw());
  const to = (x: string): string => map.get(x) ?? x;
  for (const n of g.nodes) {
    n.inputs = n.inputs.map(to);
    n.outputs = n.outputs.map(to);
    n.name = draw();
  }
  g.name = draw();
  for (const t of g.initializers) t.name = to(t.name);
  const io = { inputs: {} as Record<string, string>, outputs: {} as Record<string, string> };
  const renameVi = (v: OnnxValueInfo, rec: Record<string, string>): void => {
    if (!inits.has(v.name)) rec[v.name] = to(v.name);
    v.name = to(v.name);
  };
  g.inputs.forEach((v) => renameVi(v, io.inputs));
  g.outputs.forEach((v) => renameVi(v, io.outputs));
  return { counts: { nodesRenamed: g.nodes.length, valuesRenamed: [...renamed].filter((x) => !inits.has(x)).length, initializersRenamed: g.initializers.length }, io };
}

/** Every name of a value: initializers, node inputs and outputs, graph inputs and outputs. */
function valueNames(g: OnnxGraph): Set<string> {
  const names = new Set<string>();
  for (const t of g.initializers) names.add(t.name);
  for (const n of g.nodes) for (const x of [...n.inputs, ...n.outputs]) if (x !== '') names.add(x);
  for (const v of [...g.inputs, ...g.outputs]) names.add(v.name);
  return names;
}

/** The value names protect renames: all but the interface (graph inputs no initializer backs, and outputs) unless `renameIo`. */
function renamedNames(g: OnnxGraph, renameIo: boolean): Set<string> {
  const inits = new Set(g.initializers.map((t) => t.name));
  const iface = new Set([...g.inputs.filter((i) => !inits.has(i.name)).map((i) => i.name), ...g.outputs.map((o) => o.name)]);
  return new Set([...valueNames(g)].filter((x) => renameIo || !iface.has(x)));
}

/** A string attribute whose value is a name being renamed would refer to a tensor by name (and leak it): refused. */
function checkStringAttrs(g: OnnxGraph, renamed: ReadonlySet<string>): void {
  const dec = new TextDecoder();
  g.nodes.forEach((n, i) => n.attrs.forEach((a: OnnxAttr) => {
    const strings = a.type === 3 ? [a.value as Uint8Array] : a.type === 8 ? (a.value as Uint8Array[]) : [];
    for (const s of strings) {
      const text = dec.decode(s);
      if (renamed.has(text)) throw new Error(`protect: ${nodeWhere(n, i)} attribute '${a.name}' holds '${text}', the name of a value it would rename: an op that refers to tensors by name cannot be protected`);
    }
  }));
}
