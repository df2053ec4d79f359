/**
 * A training step's forward + backward as one compiled program: traced once per input signature,
 * it returns the loss and writes every parameter's gradient into a flat gradient buffer (same
 * layout as the parameters), ready for an optimizer, bucketing or all-reduce.
 */
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { compile } from '../tensor/compile.js';
import type { Feed } from '../tensor/compile.js';
import { grad, Tensor } from '../tensor/tensor.js';

export type LossFn = (params: Record<string, Tensor>, ...inputs: Tensor[]) => Tensor;

export interface GradStep {
  /** Runs forward + backward; gradients land in `grads` (overwritten, or added when accumulate). */
  (feeds: Feed[], opts?: { accumulate?: boolean }): Promise<number>;
  /** How many times the step was traced (1 per distinct input signature). */
  readonly traces: number;
}

export function gradStep<A extends FloatArray>(params: FlatBuffer<A>, grads: FlatBuffer<A>, loss: LossFn, name = 'fwd_bwd'): GradStep {
  if (grads.layout !== params.layout) throw new Error('gradStep: grads must share the parameters\' layout');
  const slots = params.layout.slots;
  const P = Object.fromEntries(slots.map((s) => [s.name, new Tensor(params.leaf(s.name))]));
  const wrt = slots.map((s) => P[s.name]!);
  const program = compile((...inputs: Tensor[]) => {
    const l = loss(P, ...inputs);
    return [l, ...grad(l, wrt)];
  }, name);
  const run = async (feeds: Feed[], opts?: { accumulate?: boolean }): Promise<number> => {
    const out = await program(...feeds);
    const g = grads.data;
    for (let k = 0; k < slots.length; k++) {
      const s = slots[k]!;
      const src = out[k + 1] as A;
      if (opts?.accumulate) {
        for (let i = 0; i < s.size; i++) g[s.offset + i]! += src[i]!;
      } else g.set(src, s.offset);
    }
    return Number(out[0]![0]);
  };
  return Object.defineProperty(run, 'traces', { get: () => program.traces }) as GradStep;
}
