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
import { Value } from '../ir/graph.js';
import { compileProgram, runProgram, settings } from '../runtime/executor.js';
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
 * Elements per chunk per intra-op thread. An update is ~15 elementwise ops; run over a whole
 * 25M-element vector, each op streams the vector through memory. Run chunk by chunk, the chunk's
 * intermediates stay in cache: measured on the medium GPT's 25.5M parameters (AdamW-shaped graph,
 * 2-core AVX2 machine), whole vector 1137 ms, 1M-element chunks 348 ms, 256K 278 ms, 64K 249 ms,
 * 16K 384 ms on one thread; with two threads 1M-element chunks were best (251 ms vs 715 whole).
 */
export const CHUNK_PER_THREAD = 1 << 18;

/** Elements per chunk of an update at the current thread count (every chunked loop uses it). */
export const chunkLength = (): number => CHUNK_PER_THREAD * settings.threads;

/**
 * An update program over flat vectors, run chunk by chunk. `build(n)` makes the graph for chunks
 * of n elements: its first `vectors` inputs are flat vectors (fed as zero-copy views of each
 * chunk), the remaining inputs scalars (fed whole); its outputs are vectors, output k written
 * back into `dest[k]` at the chunk's offset. One program is traced per distinct chunk length
 * (at most two: full chunks and the tail), then re-run every step.
 */
export class FlatProgram {
  private programs = new Map<number, Promise<Program>>();
  private builds = 0;

  constructor(readonly segment: string, private readonly build: (n: number) => { inputs: Value[]; outputs: Value[] }) {}

  /** How many graphs were traced (one per distinct chunk length; constant after the first run). */
  get compiles(): number { return this.builds; }

  private program(n: number): Promise<Program> {
    let p = this.programs.get(n);
    if (p === undefined) {
      this.builds++;
      const { inputs, outputs } = this.build(n);
      p = compileProgram(outputs, inputs);
      this.programs.set(n, p);
      p.catch(() => this.programs.delete(n));
    }
    return p;
  }

  /** Runs the graph once on feeds whose vectors all have one length (a chunk, or a whole vector). */
  async runOnce(vectors: readonly FloatArray[], scalars: readonly FloatArray[]): Promise<FloatArray[]> {
    const p = await this.program(vectors[0]!.length);
    if (p.leaves.length !== vectors.length + scalars.length) {
      throw new Error(`${this.segment}: the update graph has ${p.leaves.length} inputs but ${vectors.length + scalars.length} were fed`);
    }
    return (await runProgram(p, this.segment, [...vectors, ...scalars].map((data) => ({ data })))) as FloatArray[];
  }

  /** Runs chunk by chunk over whole flat vectors, writing output k into dest[k]. */
  async run(vectors: readonly FloatArray[], scalars: readonly FloatArray[], dest: readonly FloatArray[]): Promise<void> {
    const n = vectors[0]!.length;
    for (const v of [...vectors, ...dest]) {
      if (v.length !== n) throw new Error(`${this.segment}: flat vectors differ in length (${v.length} vs ${n})`);
    }
    const chunk = chunkLength();
    for (let off = 0; off < n; off += chunk) {
      const end = Math.min(off + chunk, n);
      const out = await this.runOnce(vectors.map((v) => v.subarray(off, end)), scalars);
      dest.forEach((d, k) => d.set(out[k]!, off));
    }
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

/**
 * A ZeRO shard of a flat vector (parallel/zero.ts): the ranges [lo, hi) of the full vector this
 * rank updates, and where each starts (`at`) in the shard's own layout, over which the optimizer's
 * state is allocated. Gradients come either full (laid out like the parameters: stage 1) or as
 * the shard (stage 2).
 */
export interface ShardSpec {
  readonly layout: Layout;
  readonly ranges: readonly { readonly lo: number; readonly hi: number; readonly at: number }[];
}

/** One piece of an update: views of the parameters and gradients, and where its state starts. */
export interface UpdatePiece { p: FloatArray; g: FloatArray; state: FloatArray[]; at: number }

/**
 * The pieces one update runs over: the whole vectors without a shard; with one, per range, views
 * of the full parameters, of the gradients (full or shard-indexed) and of the shard's state, and
 * the range's offset `at` in the state's layout (what state kept in files is read at).
 */
export function updatePieces(who: string, params: FloatArray, grads: FlatBuffer<FloatArray>, paramLayout: Layout, state: readonly FloatArray[], shard: ShardSpec | null): UpdatePiece[] {
  if (shard === null) return [{ p: params, g: grads.data, state: [...state], at: 0 }];
  const full = grads.layout === paramLayout || grads.layout.size === paramLayout.size;
  if (!full && grads.layout !== shard.layout && grads.layout.size !== shard.layout.size) {
    throw new Error(`${who}.step: gradients hold ${grads.layout.size} elements; this shard's optimizer takes the full ${paramLayout.size} or the shard's ${shard.layout.size}`);
  }
  return shard.ranges.filter((r) => r.hi > r.lo).map((r) => {
    const n = r.hi - r.lo;
    return {
      p: params.subarray(r.lo, r.hi),
      g: full ? grads.data.subarray(r.lo, r.hi) : grads.data.subarray(r.at, r.at + n),
      state: state.map((a) => a.subarray(r.at, r.at + n)),
      at: r.at,
    };
  });
}
