/**
 * Pieces every optimizer shares: graph inputs over whole flat vectors, the once-compiled update
 * program, checks that a gradient buffer matches the parameters, and the weight-decay mask.
 *
 * An update graph has no data of its own: every vector (parameters, gradients, moments, mask) and
 * every per-step scalar (learning rate, bias corrections, clip threshold) is a graph input fed at
 * each run. The graph's structure depends only on the dtype, the flat length and the options that
 * add or remove nodes (clipping, a mask, momentum), so one onnxruntime session serves every step,
 * and every optimizer instance with the same structure.
 */
import type { TypedArray } from '../ir/dtype.js';
import { Value } from '../ir/graph.js';
import { compileProgram, runProgram } from '../runtime/executor.js';
import type { Program } from '../runtime/executor.js';
import { FlatBuffer } from '../runtime/flat.js';
import type { FloatArray, Layout } from '../runtime/flat.js';

export type FloatDType = 'float32' | 'float64';

export const dtypeOf = (a: FloatArray): FloatDType => (a instanceof Float64Array ? 'float64' : 'float32');

/** A zeroed array of the same element type as `like`. */
export function zerosLike<A extends FloatArray>(like: A, n = like.length): A {
  return (like instanceof Float64Array ? new Float64Array(n) : new Float32Array(n)) as A;
}

/** A graph input with no data: a 1-D flat vector of `n` elements, or a scalar when `n` is null. */
export function input(dtype: FloatDType, n: number | null, name: string): Value {
  const v = new Value(dtype, n === null ? [] : [n]);
  v.name = name;
  return v;
}

/** A one-element array of `dtype` holding `x` (rounded once from the host's float64). */
export function scalarData(dtype: FloatDType, x: number): FloatArray {
  return dtype === 'float64' ? Float64Array.of(x) : Float32Array.of(x);
}

/**
 * An update program over flat vectors: traced and compiled on first run, then re-run with fresh
 * feeds. `build` must list every input in `inputs`, in the order `run` feeds them.
 */
export class FlatProgram {
  private program: Promise<Program> | null = null;
  private builds = 0;

  constructor(readonly segment: string, private readonly build: () => { inputs: Value[]; outputs: Value[] }) {}

  /** How many times this program was traced (1 after the first run, however many runs follow). */
  get compiles(): number { return this.builds; }

  async run(feeds: readonly TypedArray[]): Promise<TypedArray[]> {
    if (this.program === null) {
      this.builds++;
      const { inputs, outputs } = this.build();
      this.program = compileProgram(outputs, inputs);
      this.program.catch(() => { this.program = null; });
    }
    const p = await this.program;
    if (p.leaves.length !== feeds.length) {
      throw new Error(`${this.segment}: the update graph has ${p.leaves.length} inputs but ${feeds.length} were fed`);
    }
    return runProgram(p, this.segment, feeds.map((data) => ({ data })));
  }
}

/**
 * Checks that `grads` can drive an update of `params`: same element type and the same layout
 * (the same tensors at the same offsets), so the two flat vectors line up element by element.
 */
export function checkGrads(who: string, params: FlatBuffer<FloatArray>, grads: FlatBuffer<FloatArray>): void {
  if (dtypeOf(grads.data) !== dtypeOf(params.data)) {
    throw new Error(`${who}: gradients are ${dtypeOf(grads.data)} but parameters are ${dtypeOf(params.data)}; use one dtype`);
  }
  if (grads.layout === params.layout) return;
  const [a, b] = [params.layout, grads.layout];
  if (a.size !== b.size || a.slots.length !== b.slots.length) {
    throw new Error(`${who}: gradient layout has ${b.slots.length} tensors in ${b.size} elements, parameters have ${a.slots.length} in ${a.size}`);
  }
  a.slots.forEach((s, i) => {
    const t = b.slots[i]!;
    if (s.name !== t.name || s.offset !== t.offset || s.size !== t.size) {
      throw new Error(`${who}: gradient tensor ${i} is '${t.name}' (${t.size} at ${t.offset}), parameter tensor ${i} is '${s.name}' (${s.size} at ${s.offset})`);
    }
  });
}

/**
 * The flat 0/1 weight-decay mask: 1 over tensors that decay, 0 over those `noDecay` names (and
 * over alignment padding, where parameters and gradients are zero anyway).
 */
export function decayMask<A extends FloatArray>(layout: Layout, like: A, noDecay: (name: string) => boolean, label: string): FlatBuffer<A> {
  const mask = new FlatBuffer(layout, zerosLike(like, layout.size), label);
  for (const s of layout.slots) if (!noDecay(s.name)) mask.data.fill(1, s.offset, s.offset + s.size);
  return mask;
}

/** Copies `src` into `dst` after checking that the lengths agree (for loadState). */
export function restore(who: string, what: string, dst: FloatArray, src: ArrayLike<number>): void {
  if (src.length !== dst.length) throw new Error(`${who}.loadState: '${what}' has ${src.length} elements, expected ${dst.length}`);
  dst.set(src);
}
