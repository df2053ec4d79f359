/**
 * A training step's forward + backward as one compiled program: traced once per input signature,
 * it returns the loss and writes every parameter's gradient into a flat gradient buffer (same
 * layout as the parameters), ready for an optimizer, bucketing or all-reduce. Buffer updates the
 * forward records (BatchNorm's running statistics) are further outputs of the same program,
 * written into the model's buffers after each run. With `checkpointing`, the traced step is
 * rewritten (autodiff/checkpoint.ts) so its backward recomputes each unit's forward.
 */
import { applyBufferUpdates } from '../nn/module.js';
import type { BoundParameters } from '../nn/module.js';
import { stepFeeds, traceStepGraph } from '../nn/step_graph.js';
import type { StepGraphOptions } from '../nn/step_graph.js';
import type { FlatBuffer, FloatArray } from '../runtime/flat.js';
import { compile } from '../tensor/compile.js';
import type { CompileOptions, Feed, Signature, Traced } from '../tensor/compile.js';
import type { ScheduleStats } from '../runtime/schedule.js';
import type { CheckpointStats } from '../autodiff/checkpoint.js';
import { Tensor } from '../tensor/tensor.js';

/** The loss of one step from its batch inputs; parameters are the bound tensors it closes over. */
export type LossFn = (...inputs: Tensor[]) => Tensor;

export interface GradStep {
  /** Runs forward + backward; gradients land in `grads` (overwritten, or added when accumulate). */
  (feeds: Feed[], opts?: { accumulate?: boolean; lossScale?: number }): Promise<number>;
  /** How many times the step was traced (1 per distinct input signature). */
  readonly traces: number;
  /** The last run's schedule when the step holds collectives (tensor parallel), else null. */
  readonly schedule: ScheduleStats | null;
  /** What activation checkpointing did to the last trace (null without the option). */
  readonly checkpoint: CheckpointStats | null;
  /** The step's graph for one input signature (loss, gradients, buffer updates), traced, not compiled. */
  trace(...inputs: Signature[]): Traced;
}

/** `compile`'s options (the collectives' context) and the traced graph's (nn/step_graph.ts). */
export type GradStepOptions = CompileOptions & StepGraphOptions;

/**
 * `opts.context` (for steps holding collectives: the groups of each mesh axis) goes to `compile`;
 * `opts.precision`, `opts.lossScale` and `opts.checkpointing` shape the traced graph (nn/step_graph.ts). With
 * `lossScale`, every run takes the scale (`run(feeds, { lossScale })`) and the gradients come out
 * multiplied by it; the returned loss is unscaled.
 */
export function gradStep<A extends FloatArray>(params: BoundParameters<A>, grads: FlatBuffer<A>, loss: LossFn, name = 'fwd_bwd',
  opts: GradStepOptions = {}): GradStep {
  // A plan that shards the parameters (ZeRO stage 3) writes gradients in its own layout.
  if (grads.layout !== params.flat.layout && !opts.shardParameters) throw new Error('gradStep: grads must share the parameters\' layout');
  const slots = grads.layout.slots;
  // The buffers a traced forward updates (BatchNorm's statistics) are a property of the model: every
  // input signature's trace must update the same ones, so one list serves every program.
  let updated: string[] | null = null;
  let ckStats: CheckpointStats | null = null;
  const program = compile((...inputs: Tensor[]) => {
    const g = traceStepGraph(params, loss, inputs, opts);
    if (updated !== null && updated.join() !== g.updated.join()) {
      throw new Error(`gradStep: this trace updates buffers [${g.updated.join(', ')}], an earlier one [${updated.join(', ')}]`);
    }
    updated = g.updated;
    ckStats = g.checkpoint;
    return g.outputs.map((v) => new Tensor(v));
  }, name, opts);
  const run = async (feeds: Feed[], o?: { accumulate?: boolean; lossScale?: number }): Promise<number> => {
    const out = await program(...stepFeeds('gradStep', opts, feeds, o?.lossScale));
    slots.forEach((s, k) => grads.write(s, out[k + 1] as A, o?.accumulate));
    applyBufferUpdates(params, updated ?? [], out.slice(slots.length + 1) as A[]);
    return Number(out[0]![0]);
  };
  Object.defineProperty(run, 'schedule', { get: () => program.schedule });
  Object.defineProperty(run, 'checkpoint', { get: () => ckStats });
  Object.defineProperty(run, 'trace', { value: program.trace });
  return Object.defineProperty(run, 'traces', { get: () => program.traces }) as GradStep;
}
