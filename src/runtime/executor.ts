/**
 * Compiles IR graphs to onnxruntime sessions and runs them.
 *
 * A program is keyed by the graph's structure: ops, attributes, wiring, leaf dtypes and shapes,
 * and the contents of constants. Values fed at run time (parameters, data) are not part of the
 * key, so re-tracing the same step builds the same key and reuses the compiled session.
 */
import type { TypedArray } from '../ir/dtype.js';
import { topoNodes, Value } from '../ir/graph.js';
import type { DType } from '../ir/dtype.js';
import type { Dim } from '../ir/shape.js';
import { fmt, isStatic } from '../ir/shape.js';
import { toModelProto } from '../ir/onnx/export.js';
import { lowerComposites } from '../ir/rewrite.js';
import { disabledOptimizers, fillKernelGaps } from './kernel_gaps.js';
import { createSession } from './ort.js';
import type { Session, SessionOptions } from './ort.js';
import { profiler } from './profiler.js';
import { availableParallelism } from 'node:os';

/** float32 matrix products' precision (PyTorch's torch.set_float32_matmul_precision): see `setMatmulPrecision`. */
export const MATMUL_PRECISIONS = ['highest', 'medium'] as const;
export type MatmulPrecision = (typeof MATMUL_PRECISIONS)[number];

export const settings = {
  /** Intra-op threads per session (onnxruntime's MLAS pool). Default: all cores. */
  threads: availableParallelism(),
  /** float32 products' precision for steps compiled from now on (`setMatmulPrecision`). */
  matmulPrecision: 'highest' as MatmulPrecision,
};

/**
 * The precision of float32 matrix products, as torch.set_float32_matmul_precision: 'highest'
 * (the default) computes them in float32; 'medium' lets them run on bfloat16 operands with float32
 * accumulation where the CPU has fast bfloat16 kernels (AMX, AVX512-BF16) and measurement finds
 * them faster (runtime/native_products.ts): every value stays float32, only a product's inputs are
 * rounded to bfloat16 inside it. Applies to steps compiled from now on.
 */
export function setMatmulPrecision(p: MatmulPrecision): void {
  if (!(MATMUL_PRECISIONS as readonly string[]).includes(p)) throw new Error(`setMatmulPrecision: expected ${MATMUL_PRECISIONS.join(' or ')}, got '${String(p)}'`);
  settings.matmulPrecision = p;
}

/** Sets the intra-op thread count for sessions compiled from now on. */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`setThreads: expected a positive integer, got ${n}`);
  settings.threads = n;
}

export interface Program {
  readonly key: string;
  /** This graph's non-constant leaves, in feed order. */
  readonly leaves: readonly Value[];
  readonly session: Session;
}

/** Sessions by structure key. A session is shared; the leaves that feed it belong to each graph. */
const programs = new Map<string, Promise<Session>>();

export const cacheSize = (): number => programs.size;

/** Drops every compiled session. */
export async function clearCache(): Promise<void> {
  const all = [...programs.values()];
  programs.clear();
  for (const p of all) await (await p).release();
}

function hashBytes(a: TypedArray): string {
  const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i]!, 0x01000193);
  return (h >>> 0).toString(36);
}

function attrKey(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (ArrayBuffer.isView(x) ? hashBytes(x as TypedArray) : x));
}

/** Structural key of the graph computing `outputs`, and its non-constant leaves in order. */
export function structureKey(outputs: readonly Value[], inputs: readonly Value[] = []): { key: string; leaves: Value[] } {
  const ids = new Map<Value, number>();
  const leaves: Value[] = [];
  const parts: string[] = [`t${settings.threads}`];
  let spare = 0;
  const id = (v: Value): number => {
    let k = ids.get(v);
    if (k !== undefined) return k;
    k = ids.size;
    ids.set(v, k);
    if (v.node === null) {
      if (v.constant) parts.push(`C${k}:${v.dtype}${fmt(v.shape)}=${v.data!.length <= 16 ? Array.from(v.data as ArrayLike<number | bigint>).join(',') : hashBytes(v.data!)}`);
      else { leaves.push(v); parts.push(`L${k}:${v.dtype}${fmt(v.shape)}`); }
    }
    return k;
  };
  inputs.forEach(id);
  for (const n of topoNodes(outputs)) {
    const ins = n.inputs.map((v) => (v === null ? '_' : id(v))).join(',');
    // An output realized earlier is detached (its node is null, its data kept): here it is an
    // unused slot of this node, and a leaf only where another node reads it.
    const outs = n.outputs.map((o) => (o.node === n ? id(o) : `x${spare++}`));
    parts.push(`${n.op}(${ins})${Object.keys(n.attrs).length ? attrKey(n.attrs) : ''}>${outs.join(',')}`);
  }
  parts.push(`out:${outputs.map(id).join(',')}`);
  return { key: parts.join(';'), leaves };
}

/**
 * The ONNX model a program is compiled from, and its session options: composites lowered, kernel
 * gaps filled, leaves named `in<i>`, outputs `output_<i>`, every other value `v<id>` (the memory
 * estimate maps onnxruntime's optimized graph back to these values by those names).
 */
export function programModel(outputs: readonly Value[], leaves: readonly Value[], arena = true): { model: Uint8Array; lowered: Value[]; options: SessionOptions } {
  const lowered = fillKernelGaps(lowerComposites(outputs));
  const model = toModelProto({ inputs: leaves, outputs: lowered, inputNames: leaves.map((_, i) => `in${i}`) });
  return { model, lowered, options: { threads: settings.threads, disabledOptimizers: disabledOptimizers(lowered), ...(arena === false ? { arena } : {}) } };
}

/**
 * The program computing `outputs` from its leaves: the session comes from the cache when a graph
 * of the same structure was compiled before; the leaves are always this graph's own.
 */
export async function compileProgram(outputs: readonly Value[], inputs: readonly Value[] = [], o: { arena?: boolean } = {}): Promise<Program> {
  const arena = o.arena ?? true;
  const { key: structure, leaves } = structureKey(outputs, inputs);
  const key = arena ? structure : `${structure};noarena`;
  let s = programs.get(key);
  if (s === undefined) {
    const m = programModel(outputs, leaves, arena);
    s = createSession(m.model, m.options);
    programs.set(key, s);
    s.catch(() => programs.delete(key));
  }
  return { key, leaves, session: await s };
}

/** Concrete shape of a fed array, resolving symbolic dims from the data's length. */
function feedShape(v: Value, data: TypedArray, given?: readonly number[]): number[] {
  if (given) return [...given];
  if (isStatic(v.shape)) return [...v.shape];
  const known = v.shape.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
  const syms = v.shape.filter((d) => typeof d !== 'number');
  if (syms.length !== 1) throw new Error(`run: cannot infer ${fmt(v.shape)} from ${data.length} elements; give the shape`);
  return v.shape.map((d: Dim) => (typeof d === 'number' ? d : data.length / known));
}

/** Runs a program on leaf data (or `feeds` overriding the first leaves) and times it. */
export async function runProgram(p: Program, segment: string, feeds: readonly { data: TypedArray; shape?: readonly number[] }[] = []): Promise<TypedArray[]> {
  let inBytes = 0;
  const args = p.leaves.map((v, i) => {
    const f = feeds[i];
    const data = f?.data ?? v.data;
    if (data === null) throw new Error(`run: input ${v.name ?? `v${v.id}`} ${v.toString()} has no data; feed it`);
    inBytes += data.byteLength;
    return { dtype: v.dtype as DType, shape: feedShape(v, data, f?.shape), data };
  });
  const t0 = performance.now();
  const out = await p.session.run(args);
  profiler.record(segment, performance.now() - t0, inBytes, out.reduce((s, a) => s + a.byteLength, 0));
  return out;
}

/**
 * Computes `values` (MLX-style eval): compiles what they need, runs it, stores the results in the
 * values and detaches them from the graph, so later graphs start from data.
 */
export async function realize(values: readonly Value[], segment = 'eager'): Promise<void> {
  const targets = [...new Set(values.filter((v) => v.data === null))];
  if (targets.length === 0) return;
  const p = await compileProgram(targets);
  const out = await runProgram(p, segment);
  targets.forEach((v, i) => {
    v.data = out[i]!;
    v.node = null;
  });
}
