/**
 * compile(fn): trace once, compile once, re-run from cache (jax.jit / mx.compile). The function is
 * traced with placeholder inputs on first call for each input signature (dtypes and shapes);
 * later calls with the same signature skip tracing and run the cached onnxruntime session.
 * Tensors the function closes over (parameters) are read from their current data at every call.
 */
import type { DType, TypedArray } from '../ir/dtype.js';
import { compileProgram, runProgram } from '../runtime/executor.js';
import type { Program } from '../runtime/executor.js';
import { compileSchedule, hasHostOps } from '../runtime/schedule.js';
import { takeOutProducts } from '../runtime/native_products.js';
import type { Schedule, ScheduleStats } from '../runtime/schedule.js';
import { fmt } from '../ir/shape.js';
import type { Dim } from '../ir/shape.js';
import type { Value } from '../ir/graph.js';
import { placeholder, Tensor } from './tensor.js';

export interface Feed { data: TypedArray; shape: readonly number[]; dtype: DType }

/** An input signature: what a trace needs of a feed (no data). */
export type Signature = Pick<Feed, 'shape' | 'dtype'>;

/** A traced graph: its outputs, and the placeholders of its fed inputs, in feed order. */
export interface Traced { outputs: Value[]; inputs: Value[] }

export type Compiled = ((...inputs: Feed[]) => Promise<TypedArray[]>) & {
  readonly traces: number;
  /**
   * Traces the function for one input signature and returns its graph, compiling and caching
   * nothing: what memory estimates analyse (the same graph a call would run).
   */
  trace(...inputs: Signature[]): Traced;
  /** The schedule of the last call, when its graph holds host ops (collectives); null otherwise. */
  readonly schedule: ScheduleStats | null;
};

export interface CompileOptions {
  /**
   * Handed to the kernels of host ops (for collectives, `{ groups }`: the process group of each
   * mesh axis). A graph that holds host ops runs as a schedule of programs cut at each of them.
   */
  context?: unknown;
  /** onnxruntime's CPU arena for the schedule's programs (runtime/ort.ts `SessionOptions.arena`); default on. */
  arena?: boolean;
  /**
   * Dims traced symbolically, per input: a name at dim k makes one trace serve every size fed
   * there (a KV cache that grows by a position per call); null (or a missing entry) keeps the fed
   * size, one trace per signature. `symbolic: [null, [null, null, 'past', null]]`.
   */
  symbolic?: readonly (readonly (string | null)[] | null)[];
}

export function compile(fn: (...inputs: Tensor[]) => Tensor[], name = fn.name || 'compiled', opts: CompileOptions = {}): Compiled {
  const cache = new Map<string, { program: Program } | { schedule: Schedule }>();
  let traces = 0;
  let last: Schedule | null = null;
  const dims = (f: Signature, i: number): Dim[] => f.shape.map((d, k) => opts.symbolic?.[i]?.[k] ?? d);
  const trace = (...inputs: Signature[]): Traced => {
    const ph = inputs.map((f, i) => placeholder(dims(f, i), f.dtype, `arg${i}`));
    return { outputs: fn(...ph).map((t) => t.value), inputs: ph.map((t) => t.value) };
  };
  const run = async (...inputs: Feed[]): Promise<TypedArray[]> => {
    const sig = inputs.map((f, i) => `${f.dtype}${fmt(dims(f, i))}`).join(';');
    let p = cache.get(sig);
    if (p === undefined) {
      traces++;
      const { outputs: traced, inputs: vals } = trace(...inputs);
      // Products a native library runs faster are host ops too (runtime/native_products.ts).
      const outs = await takeOutProducts(traced);
      p = hasHostOps(outs) ? { schedule: await compileSchedule(outs, vals, { arena: opts.arena ?? true }) } : { program: await compileProgram(outs, vals) };
      cache.set(sig, p);
    }
    if ('program' in p) { last = null; return runProgram(p.program, name, inputs); }
    last = p.schedule;
    return p.schedule.run(inputs, opts.context, name);
  };
  Object.defineProperty(run, 'traces', { get: () => traces });
  Object.defineProperty(run, 'trace', { value: trace });
  return Object.defineProperty(run, 'schedule', { get: () => last?.stats ?? null }) as Compiled;
}

export { Tensor };
