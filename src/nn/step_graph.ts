/**
 * The traced graph of one training step of a bound model: forward, the transformations a run
 * asks for (mixed precision on the forward, ir/autocast.ts), the loss scale, the backward, and
 * activation checkpointing on the whole (autodiff/checkpoint.ts). `gradStep` (one process or tensor
 * parallel) and data parallelism both trace through here, so every way of running a step computes
 * the same graph.
 *
 * Outputs, in order: the loss (float32, unscaled), one gradient per parameter slot (the
 * parameters' dtype: the float32 master's gradient, widened from the compute dtype at its cast;
 * with `shardParameters`, one per slot of the plan's gradient layout instead), then the buffer updates the forward recorded (BatchNorm's running statistics), named in
 * `updated`.
 */
import { autocast } from '../ir/autocast.js';
import type { HalfDType } from '../ir/autocast.js';
import * as b from '../ir/build.js';
import { qat } from '../ir/qat.js';
import type { QatOptions } from '../ir/qat.js';
import type { Value } from '../ir/graph.js';
import { grad } from '../autodiff/grad.js';
import { checkpoint } from '../autodiff/checkpoint.js';
import type { CheckpointOptions, CheckpointStats } from '../autodiff/checkpoint.js';
import type { FloatArray } from '../runtime/flat.js';
import type { Feed } from '../tensor/compile.js';
import type { Tensor } from '../tensor/tensor.js';
import { takeBufferUpdates } from './module.js';
import type { BoundParameters } from './module.js';

export type Precision = 'fp32' | 'fp16' | 'bf16';

export const PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'bf16'];

/** The compute dtype of a precision; null for fp32 (no rewrite). */
export function computeDtype(p: Precision): HalfDType | null {
  if (p === 'fp32') return null;
  if (p === 'fp16') return 'float16';
  if (p === 'bf16') return 'bfloat16';
  throw new Error(`precision must be one of ${PRECISIONS.join(', ')}, got '${String(p)}'`);
}

export interface StepGraphOptions {
  /** Mixed precision: the forward rewritten by `autocast` (ir/autocast.ts). Default fp32. */
  precision?: Precision;
  /**
   * The step takes one more input after the batch, a float32 scalar the loss is multiplied by
   * before the backward (dynamic loss scaling): gradients come out scaled by it.
   */
  lossScale?: boolean;
  /**
   * Quantization-aware training: the forward's parameter products on fake-quantized int8 operands
   * (ir/qat.ts), before the backward; fp32 only.
   */
  qat?: Omit<QatOptions, 'params' | 'observe'>;
  /** Recompute each unit's forward in the backward (units: module-path globs, scoped by nn `scopeModules`). */
  checkpointing?: CheckpointOptions;
  /**
   * A parallel plan's rewrite of the whole traced step, applied last (ZeRO stage 3,
   * parallel/zero3.ts: parameters gathered per layer, gradients reduce-scattered). It may return
   * gradients in a layout of its own (one per slot of the plan's gradient buffer).
   */
  shardParameters?: (g: { forward: Value[]; grads: Value[] }) => { forward: Value[]; grads: Value[] };
}

export interface StepGraph {
  /** [loss, ...gradients in slot order, ...buffer updates]. */
  outputs: Value[];
  /** Names of the buffers whose updates follow the gradients. */
  updated: string[];
  /** What activation checkpointing did (null without it). */
  checkpoint: CheckpointStats | null;
}

/**
 * The feeds of a traced step: the batch, and with `lossScale` the scale after it (a float32
 * scalar). `who` names the caller when a loss-scaled step is run without a scale.
 */
export function stepFeeds(who: string, o: StepGraphOptions, batch: readonly Feed[], lossScale: number | undefined): Feed[] {
  if (!o.lossScale) return [...batch];
  if (lossScale === undefined) throw new Error(`${who}: the step was built with a loss scale; pass { lossScale } to every run`);
  return [...batch, { data: Float32Array.of(lossScale), shape: [], dtype: 'float32' }];
}

/** The loss of one step from its batch inputs. */
export type StepLoss = (...inputs: Tensor[]) => Tensor;

/**
 * Traces `loss` on `inputs` (placeholders; with `lossScale`, the last one is the scale) and
 * appends its backward with respect to every parameter.
 */
export function traceStepGraph<A extends FloatArray>(params: BoundParameters<A>, loss: StepLoss, inputs: readonly Tensor[], o: StepGraphOptions = {}): StepGraph {
  const batch = o.lossScale ? inputs.slice(0, -1) : inputs;
  const slots = params.flat.layout.slots;
  const wrt = slots.map((s) => params.tensors[s.name]!.value);
  let l = loss(...batch).value;
  const upd = takeBufferUpdates(params);
  let updates = upd.values.map((t) => t.value);
  const half = computeDtype(o.precision ?? 'fp32');
  if (o.qat !== undefined) {
    if (half !== null) throw new Error(`qat with precision ${o.precision}: quantization-aware training runs in fp32`);
    const q = qat([l, ...updates], { ...o.qat, params: new Map(slots.map((s, i) => [wrt[i]!, s.name])) });
    l = q.outputs[0]!;
    updates = q.outputs.slice(1);
  }
  if (half !== null) {
    const cast = autocast([l, ...updates], { dtype: half, params: new Set(wrt), who: `precision ${o.precision}` });
    l = cast[0]!;
    updates = cast.slice(1);
  }
  const scaled = o.lossScale ? b.mul(l, inputs[inputs.length - 1]!.value) : l;
  let outputs = [l, ...grad(scaled, wrt), ...updates];
  let stats: CheckpointStats | null = null;
  if (o.checkpointing !== undefined) {
    const ck = checkpoint({ forward: [l, ...updates], outputs }, o.checkpointing);
    outputs = ck.outputs;
    stats = ck.stats;
  }
  if (o.shardParameters !== undefined) {
    const nf = updates.length;
    const g = o.shardParameters({ forward: [outputs[0]!, ...outputs.slice(outputs.length - nf)], grads: outputs.slice(1, outputs.length - nf) });
    outputs = [g.forward[0]!, ...g.grads, ...g.forward.slice(1)];
  }
  return { outputs, updated: upd.names, checkpoint: stats };
}
