/**
 * Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_ (norm_type 2):
 *
 *   total = sqrt(sum_i g_i^2)                 over ALL parameters (the whole flat vector)
 *   scale = min(1, maxNorm / (total + 1e-6))
 *   g    <- g * scale
 *
 * The norm is one reduction over the whole vector (`globalNorm`); AdamW and SGD feed the scale to
 * their chunked update as a scalar input; `clipGradNorm` applies it on its own. Alignment padding in a flat gradient buffer must be zero (it is in buffers made
 * by FlatBuffer.zeros and written through views), or it would count toward the norm.
 *
 * A non-finite norm is returned as is; the scale then stays 1 (where torch would multiply by NaN),
 * so callers that want to skip such steps should check the returned norm.
 */
import * as b from '../ir/build.js';
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { checkGrads, chunkLength, dtypeOf, FlatProgram, input, scalarData } from './common.js';
import type { ShardSpec } from './common.js';

/** Added to the norm before dividing, as torch does. */
export const CLIP_EPS = 1e-6;

/** min(1, maxNorm / (norm + 1e-6)); 1 for a non-finite norm (see the module comment). */
export function clipScale(norm: number, maxNorm: number): number {
  return Number.isFinite(norm) ? Math.min(1, maxNorm / (norm + CLIP_EPS)) : 1;
}

const norms = new Map<string, FlatProgram>();

/**
 * The global L2 norm of a flat vector: one reduction over all of it (clipping needs the total
 * before any chunk of the update runs), accumulated in float64 across chunks.
 */
export async function globalNorm(g: FloatArray): Promise<number> {
  const dtype = dtypeOf(g);
  let p = norms.get(dtype);
  if (p === undefined) {
    p = new FlatProgram('grad_norm', (n) => {
      const x = input(dtype, n, 'grads');
      return { inputs: [x], outputs: [b.reduceSumSquare(x, [0], false)] };
    });
    norms.set(dtype, p);
  }
  let total = 0;
  const chunk = chunkLength();
  for (let off = 0; off < g.length; off += chunk) {
    const [partial] = await p.runOnce([g.subarray(off, Math.min(off + chunk, g.length))], []);
    total += partial![0]!;
  }
  return Math.sqrt(total);
}

const scalers = new Map<string, FlatProgram>();

/**
 * Clips `grads` in place to global L2 norm `maxNorm` (torch.nn.utils.clip_grad_norm_) and returns
 * the norm before clipping. Views of the buffer stay valid: the result is written back in place.
 *
 * @example
 *   const norm = await clipGradNorm(grads, 1.0);
 */
export async function clipGradNorm(grads: FlatBuffer<FloatArray>, maxNorm: number): Promise<number> {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be a positive number, got ${maxNorm}`);
  const dtype = dtypeOf(grads.data);
  const norm = await globalNorm(grads.data);
  const scale = clipScale(norm, maxNorm);
  if (scale < 1) {
    let p = scalers.get(dtype);
    if (p === undefined) {
      p = new FlatProgram('clip', (n) => {
        const g = input(dtype, n, 'grads');
        const s = input(dtype, null, 'scale');
        return { inputs: [g, s], outputs: [b.mul(g, s)] };
      });
      scalers.set(dtype, p);
    }
    await p.run([grads.data], [scalarData(dtype, scale)], [grads.data]);
  }
  return norm;
}

/**
 * How the gradients handed to a step are scaled: by a loss scale (mixed precision: the backward
 * ran on loss x scale, so every gradient is `lossScale` times too large), and the global norm when
 * the caller already computed it (of the gradients as handed in, scaled).
 */
export interface StepScaling {
  lossScale?: number;
  norm?: number;
}

/**
 * What every optimizer step starts with: the gradients checked against the parameters, lr
 * checked, a scalar-feed maker in the parameters' dtype, the global gradient norm of the unscaled
 * gradients (the caller's `gradNorm` where the buffer is not the whole model), and the factor the
 * update multiplies the gradients by: the clip scale over the loss scale.
 */
export async function beginStep(who: string, params: FlatBuffer<FloatArray>, grads: FlatBuffer<FloatArray>, lr: number,
  gradNorm: ((g: FloatArray) => Promise<number>) | null, clipNorm: number | null, scaling: StepScaling = {}, shard: ShardSpec | null = null,
): Promise<{ s: (x: number) => FloatArray; norm: number; gradMult: number }> {
  // A shard's gradients are checked piece by piece (updatePieces); its norm is the caller's.
  if (shard === null) checkGrads(`${who}.step`, params, grads);
  else if (scaling.norm === undefined && gradNorm === null) throw new Error(`${who}.step: a ZeRO shard's step needs the global norm (scaling.norm or gradNorm): no rank holds every gradient`);
  if (!(lr >= 0)) throw new Error(`${who}.step: lr must be a non-negative number, got ${lr}`);
  const S = scaling.lossScale ?? 1;
  if (!(S > 0) || !Number.isFinite(S)) throw new Error(`${who}.step: lossScale must be a positive finite number, got ${S}`);
  const dt = dtypeOf(params.data);
  const norm = (scaling.norm ?? await (gradNorm ?? globalNorm)(grads.data)) / S;
  return { s: (x) => scalarData(dt, x), norm, gradMult: (clipNorm === null ? 1 : clipScale(norm, clipNorm)) / S };
}
