/**
 * A task is what the trainer trains: a model, its data, a loss and metrics. The GPT on text is
 * one task (`tasks/lm.ts`), image classification another (`tasks/classify.ts`); `fit` builds one
 * from a model, datasets and a loss. The trainer itself knows none of them: accumulation,
 * clipping, schedules, data parallelism, checkpoints, exact resume, metrics and progress work the
 * same for every task.
 *
 * Batches feed the model by field: every field of a record but the last is an input of
 * `forward`, the last is the target of `loss` and the metrics (tokens: x -> y; images: x -> y).
 */
import type { CheckpointMode, CheckpointOptions } from '../autodiff/checkpoint.js';
import type { LoaderOptions } from '../data/loader.js';
import type { SamplerSpec } from '../data/sampler.js';
import type { Module } from '../nn/module.js';
import { scopeModules } from '../nn/scope.js';
import type { TpAxis } from '../nn/tensor_parallel.js';
import type { PipelineModel } from '../parallel/pipeline.js';
import type { CompileOptions } from '../tensor/compile.js';
import type { Tensor } from '../tensor/tensor.js';
import type { DerivedMetrics, MetricFn } from './metrics.js';

/** A dataset the loaders read (token windows, images, ...). */
export type TaskDataset = LoaderOptions['dataset'];

/** How a task's training records are drawn, for one rank of `worldSize`. */
export type TrainSampling = (o: { seed: number; rank: number; worldSize: number }) => SamplerSpec;

export interface EvalData {
  readonly data: TaskDataset;
  /** Records evaluated, in order (default: all of `data`). */
  readonly items?: readonly number[];
  /** Examples per evaluated batch (the last may be shorter). */
  readonly batch: number;
}

export interface Task {
  /** The run's first line: model, size and data ("GPT 4x256, brown 256-token vocab, ..."). */
  describe(params: number): string;
  readonly model: Module;
  readonly train: TaskDataset;
  /** Sampler of the training records (random windows for text, shuffled epochs for images). */
  readonly sampling: TrainSampling;
  /** Loader options for training only (augmentation), merged into the training loader's. */
  readonly trainLoader?: Partial<LoaderOptions>;
  /** Held-out data evaluated every `eval.every` steps; null for none. */
  readonly eval: EvalData | null;
  /** The model's output from a batch's input fields. */
  forward(...inputs: Tensor[]): Tensor;
  /** The mean loss of a batch from the output and the target field. */
  loss(out: Tensor, target: Tensor): Tensor;
  /** Metrics evaluated beside the loss (`val_loss`), by name. */
  readonly metrics: Readonly<Record<string, MetricFn>>;
  readonly derived?: DerivedMetrics;
  /**
   * The modules activation checkpointing recomputes, as module-path globs (`*` within a segment):
   * the GPT's blocks. Absent: the task does not support `train.checkpointing`.
   */
  readonly checkpointUnits?: readonly string[];
  /**
   * The model cut into `pieces` pipeline pieces (parallel/pipeline.ts), `blocks` per piece where
   * given; absent: the task cannot be pipelined.
   */
  pipeline?(pieces: number, blocks?: readonly number[]): PipelineModel;
  /** Applies the model's tensor-parallel plan for this rank (before its parameters are bound); absent: no plan. */
  parallelize?(tp: TpAxis, o: { sp: boolean }): void;
  /** JSON kept in each checkpoint's state (a tokenizer), or undefined. */
  checkpointState?(): unknown;
  /**
   * Text printed after a complete run (a generated sample), or null. Under tensor parallelism every
   * rank of the axis calls it (its programs hold collectives), with `compileOptions` for them.
   */
  finish?(compileOptions?: CompileOptions): Promise<string | null>;
  /**
   * Whether `finish` will run the model (default: whenever there is a `finish`). Every rank asks:
   * at ZeRO stage 3 the parameters are gathered back for it, which is a collective and a whole copy.
   */
  finishes?(): boolean;
  /** Throughput is counted in `unit`s (metrics key `<unit>_per_s`), `unitsPerExample` per record. */
  readonly unit: 'tokens' | 'examples';
  readonly unitsPerExample: number;
}

const MODES: readonly CheckpointMode[] = ['none', 'full', 'selective'];

/**
 * The step option for `train.checkpointing` = `mode` on `task` (undefined for 'none'): scopes the
 * task's checkpoint units on its model (nn `scopeModules`, once per model) so the traced step knows
 * them. Call it before the step is first traced, and hand the result to `gradStep` and
 * `DistributedDataParallel` as `checkpointing`. A task without `checkpointUnits` is an error naming
 * the setting.
 */
export function taskCheckpointing(task: Task, mode: CheckpointMode): CheckpointOptions | undefined {
  if (!MODES.includes(mode)) throw new Error(`train.checkpointing: expected one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  if (mode === 'none') return undefined;
  const units = task.checkpointUnits;
  if (units === undefined || units.length === 0) {
    throw new Error(`train.checkpointing: '${mode}' needs the task's checkpoint units (Task.checkpointUnits), and ${task.constructor.name} (${task.model.constructor.name}) declares none; use 'none'`);
  }
  scopeModules(task.model, units);
  return { mode, units };
}
