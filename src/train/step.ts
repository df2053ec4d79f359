/**
 * A training step's forward + backward as one compiled program: traced once per input signature,
 * it returns the loss and writes every parameter's gradient into a flat gradient buffer (same
 * layout as the parameters), ready for an optimizer, bucketing or all-reduce. Buffer updates the
 * forward records (BatchNorm's running statistics) are further outputs of the same program,
 * written into the model's buffers after each run.
 */
import { applyBufferUpdates, takeBufferUpdates } from '../nn/module.js';
import type { BoundParameters } from '../nn/module.js';
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { compile } from '../tensor/compile.js';
import type { CompileOptions, Feed, Signature, Traced } from '../tensor/compile.js';
import type { ScheduleStats } from '../runtime/schedule.js';
import { grad } from '../tensor/tensor.js';
import type { Tensor } from '../tensor/tensor.js';

/** The loss of one step from its batch inputs; parameters are the bound tensors it closes over. */
export type LossFn = (...inputs: Tensor[]) => Tensor;

export interface GradStep {
  /** Runs forward + backward; gradients land in `grads` (overwritten, or added when accumulate). */
  (feeds: Feed[], opts?: { accumulate?: boolean }): Promise<number>;
  /** How many times the step was traced (1 per distinct input signature). */
  readonly traces: number;
  /** The last run's schedule when the step holds collectives (tensor parallel), else null. */
  readonly schedule: ScheduleStats | null;
  /** The step's graph for one input signature (loss, gradients, buffer updates), traced, not compiled. */
  trace(...inputs: Signature[]): Traced;
}

/** `opts.context` (for steps holding collectives: the groups of each mesh axis) goes to `compile`. */
export function gradStep<A extends FloatArray>(params: BoundParameters<A>, grads: FlatBuffer<A>, loss: LossFn, name = 'fwd_bwd', opts: CompileOptions = {}): GradStep {
  if (grads.layout !== params.flat.layout) throw new Error('gradStep: grads must share the parameters\' layout');
  const slots = params.flat.layout.slots;
  const wrt = slots.map((s) => params.tensors[s.name]!);
  // The buffers a traced forward updates (BatchNorm's statistics) are a property of the model: every
  // input signature's trace must update the same ones, so one list serves every program.
  let updated: string[] | null = null;
  const program = compile((...inputs: Tensor[]) => {
    const l = loss(...inputs);
    const upd = takeBufferUpdates(params);
    if (updated !== null && updated.join() !== upd.names.join()) {
      throw new Error(`gradStep: this trace updates buffers [${upd.names.join(', ')}], an earlier one [${updated.join(', ')}]`);
    }
    updated = upd.names;
    return [l, ...grad(l, wrt), ...upd.values];
  }, name, opts);
  const run = async (feeds: Feed[], opts?: { accumulate?: boolean }): Promise<number> => {
    const out = await program(...feeds);
    slots.forEach((s, k) => grads.write(s, out[k + 1] as A, opts?.accumulate));
    applyBufferUpdates(params, updated ?? [], out.slice(slots.length + 1) as A[]);
    return Number(out[0]![0]);
  };
  Object.defineProperty(run, 'schedule', { get: () => program.schedule });
  Object.defineProperty(run, 'trace', { value: program.trace });
  return Object.defineProperty(run, 'traces', { get: () => program.traces }) as GradStep;
}
