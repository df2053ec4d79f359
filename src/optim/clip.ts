/**
 * Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_ (norm_type 2):
 *
 *   total = sqrt(sum_i g_i^2)                 over ALL parameters (the whole flat vector)
 *   scale = min(1, maxNorm / (total + 1e-6))
 *   g    <- g * scale
 *
 * `clipGraph` is the graph piece AdamW and SGD put in front of their update; `clipGradNorm` runs
 * it on its own. Alignment padding in a flat gradient buffer must be zero (it is in buffers made
 * by FlatBuffer.zeros and written through views), or it would count toward the norm.
 *
 * A non-finite norm is returned as is; the scale then stays 1 (where torch would multiply by NaN),
 * so callers that want to skip such steps should check the returned norm.
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { dtypeOf, FlatProgram, input, scalarData } from './common.js';

/** Added to the norm before dividing, as torch does. */
export const CLIP_EPS = 1e-6;

/**
 * The L2 norm of the flat vector `g` (a scalar value) and, when `maxNorm` (a scalar graph input)
 * is given, `g` scaled so that its norm is at most `maxNorm`; otherwise `g` itself.
 */
export function clipGraph(g: Value, maxNorm: Value | null): { grads: Value; norm: Value } {
  const norm = b.sqrt(b.reduceSumSquare(g, [0], false));
  if (maxNorm === null) return { grads: g, norm };
  const coef = b.div(maxNorm, b.add(norm, b.scalarLike(CLIP_EPS, norm)));
  const one = b.scalarLike(1, coef);
  // min(1, coef); weft has no Min op, and Where/Less say the same thing.
  const scale = b.where(b.apply1('Less', [coef, one]), coef, one);
  return { grads: b.mul(g, scale), norm };
}

const programs = new Map<string, FlatProgram>();

/** The standalone clipping program for one dtype and flat length (traced once per pair). */
function clipProgram(dtype: 'float32' | 'float64', n: number): FlatProgram {
  const key = `${dtype}:${n}`;
  let p = programs.get(key);
  if (p === undefined) {
    p = new FlatProgram('clip', () => {
      const g = input(dtype, n, 'grads');
      const maxNorm = input(dtype, null, 'max_norm');
      const { grads, norm } = clipGraph(g, maxNorm);
      return { inputs: [g, maxNorm], outputs: [grads, norm] };
    });
    programs.set(key, p);
  }
  return p;
}

/**
 * Clips `grads` in place to global L2 norm `maxNorm` (torch.nn.utils.clip_grad_norm_) and returns
 * the norm before clipping. Views of the buffer stay valid: the result is copied back with set().
 *
 * @example
 *   const norm = await clipGradNorm(grads, 1.0);
 */
export async function clipGradNorm(grads: FlatBuffer<FloatArray>, maxNorm: number): Promise<number> {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be a positive number, got ${maxNorm}`);
  const dtype = dtypeOf(grads.data);
  const [clipped, norm] = await clipProgram(dtype, grads.data.length).run([grads.data, scalarData(dtype, maxNorm)]);
  grads.data.set(clipped as FloatArray);
  return Number(norm![0]);
}
