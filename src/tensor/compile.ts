/**
 * compile(fn): trace once, compile once, re-run from cache (jax.jit / mx.compile). The function is
 * traced with placeholder inputs on first call for each input signature (dtypes and shapes);
 * later calls with the same signature skip tracing and run the cached onnxruntime session.
 * Tensors the function closes over (parameters) are read from their current data at every call.
 */
import type { DType, TypedArray } from '../ir/dtype.js';
import { compileProgram, runProgram } from '../runtime/executor.js';
import type { Program } from '../runtime/executor.js';
import { fmt } from '../ir/shape.js';
import { placeholder, Tensor } from './tensor.js';

export interface Feed { data: TypedArray; shape: readonly number[]; dtype: DType }

export type Compiled = ((...inputs: Feed[]) => Promise<TypedArray[]>) & { readonly traces: number };

export function compile(fn: (...inputs: Tensor[]) => Tensor[], name = fn.name || 'compiled'): Compiled {
  const cache = new Map<string, Program>();
  let traces = 0;
  const run = async (...inputs: Feed[]): Promise<TypedArray[]> => {
    const sig = inputs.map((f) => `${f.dtype}${fmt(f.shape)}`).join(';');
    let p = cache.get(sig);
    if (p === undefined) {
      traces++;
      const ph = inputs.map((f, i) => placeholder(f.shape, f.dtype, `arg${i}`));
      const outs = fn(...ph).map((t) => t.value);
      p = await compileProgram(outs, ph.map((t) => t.value));
      cache.set(sig, p);
    }
    return runProgram(p, name, inputs);
  };
  return Object.defineProperty(run, 'traces', { get: () => traces }) as Compiled;
}

export { Tensor };
