/**
 * Supervised learning of any model on any records: every field but the last feeds the model, the
 * last is the target. Image classification (a CNN on MNIST) and `fit` are this task; so is any
 * regression or tagging model given its loss and metrics.
 *
 * Training records are drawn as shuffled epochs dealt to the ranks (torch's DistributedSampler):
 * with N ranks and batch b, one step's N shares are exactly the N * b records a single process
 * with batch N * b would take, across epoch boundaries too when the record count is even.
 */
import type { Module } from '../../nn/module.js';
import type { Tensor } from '../../tensor/tensor.js';
import { crossEntropy } from '../metrics.js';
import type { DerivedMetrics, MetricFn } from '../metrics.js';
import type { EvalData, Task, TaskDataset, TrainSampling } from '../task.js';
import type { LoaderOptions } from '../../data/loader.js';

export interface SupervisedTaskOptions {
  model: Module & { forward(...inputs: Tensor[]): Tensor };
  train: TaskDataset;
  /** Held-out data, evaluated whole in order every `eval.every` steps. */
  eval?: EvalData | null;
  /** The mean loss of a batch; default cross-entropy of class scores [N, C] against labels [N]. */
  loss?: (out: Tensor, target: Tensor) => Tensor;
  metrics?: Readonly<Record<string, MetricFn>>;
  derived?: DerivedMetrics;
  /** Training-only loader options (augmentation). */
  trainLoader?: Partial<LoaderOptions>;
  /** The first line of a run, e.g. 'CNN 2x[32, 64]'; the parameter count is appended. */
  name?: string;
  /** Shuffle the training records every epoch (default true). */
  shuffle?: boolean;
}

export class SupervisedTask implements Task {
  readonly model: Module & { forward(...inputs: Tensor[]): Tensor };
  readonly train: TaskDataset;
  readonly eval: EvalData | null;
  readonly metrics: Readonly<Record<string, MetricFn>>;
  readonly derived?: DerivedMetrics;
  readonly trainLoader?: Partial<LoaderOptions>;
  readonly sampling: TrainSampling;
  readonly unit = 'examples' as const;
  readonly unitsPerExample = 1;
  private readonly lossFn: (out: Tensor, target: Tensor) => Tensor;

  constructor(private readonly o: SupervisedTaskOptions) {
    this.model = o.model;
    this.train = o.train;
    this.eval = o.eval ?? null;
    this.metrics = o.metrics ?? {};
    if (o.derived) this.derived = o.derived;
    if (o.trainLoader) this.trainLoader = o.trainLoader;
    this.lossFn = o.loss ?? crossEntropy;
    const n = o.train.size;
    const shuffle = o.shuffle ?? true;
    this.sampling = ({ seed, rank, worldSize }) => ({ kind: 'sequential', items: n, shuffle, seed, epochs: Infinity, rank, worldSize });
  }

  describe(params: number): string {
    const ev = this.eval ? `, ${(this.eval.items?.length ?? this.eval.data.size).toLocaleString()} held out` : '';
    return `${this.o.name ?? this.model.constructor.name} (${params.toLocaleString()} params), ${this.train.size.toLocaleString()} training records${ev}`;
  }

  forward(...inputs: Tensor[]): Tensor { return this.model.forward(...inputs); }

  loss(out: Tensor, target: Tensor): Tensor { return this.lossFn(out, target); }
}
