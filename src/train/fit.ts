/**
 * `fit`: train a model on datasets from TypeScript in one call, in the spirit of Keras's
 * `model.fit` and Lightning's `Trainer.fit`, with callbacks. It is the same `Trainer` the `weft`
 * command runs, so checkpoints, exact resume, accumulation, clipping, schedules and data
 * parallelism (pass `pg`) all apply.
 *
 * @example
 *   const { train, test } = mnist();
 *   const model = new Sequential([new Conv2d(1, 16, 3, { padding: 1 }), new ReLU(), new MaxPool2d(2), new Flatten(), new Linear(16 * 14 * 14, 10)]);
 *   const r = await fit(model, { train, eval: test, epochs: 2, batch: 64, lr: 1e-3, metrics: ['accuracy'], out: 'runs/mine',
 *     callbacks: [earlyStopping({ monitor: 'accuracy', mode: 'max', patience: 3 })] });
 *   console.log(r.evals.at(-1)?.metrics.accuracy);
 */
import type { LoaderOptions } from '../data/loader.js';
import type { ProcessGroup } from '../comm/process_group.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import { parseConfig } from './config.js';
import type { RunConfig } from './config.js';
import { metricByName } from './metrics.js';
import type { MetricFn } from './metrics.js';
import type { TaskDataset } from './task.js';
import { SupervisedTask } from './tasks/supervised.js';
import { Trainer } from './trainer.js';
import type { Callback, TrainOptions, TrainResult } from './trainer.js';

export interface FitOptions {
  /** Training records: every field but the last feeds the model, the last is the target. */
  train: TaskDataset;
  /** Held-out records, evaluated whole every `evalEvery` steps and at the end. */
  eval?: TaskDataset;
  /** Examples per evaluation batch. Default 500. */
  evalBatch?: number;
  /** Mean loss of a batch from output and target; default cross-entropy over class scores. */
  loss?: (out: Tensor, target: Tensor) => Tensor;
  /** 'accuracy', 'top5', ... or your own metric functions by name. */
  metrics?: readonly string[] | Readonly<Record<string, MetricFn>>;
  /** Length of training: optimizer steps, or epochs of `train` (rounded up to whole steps). */
  steps?: number;
  epochs?: number;
  /** Examples per micro-batch per rank. Default 32. */
  batch?: number;
  accumulate?: number;
  optimizer?: 'adamw' | 'sgd';
  lr?: number;
  /** Any other `train.*` field of the run config (schedule, warmup, weightDecay, clip, seed, ...). */
  trainConfig?: Partial<RunConfig['train']>;
  /** Run directory (metrics.jsonl, checkpoints). */
  out: string;
  evalEvery?: number;
  checkpointEvery?: number;
  callbacks?: readonly Callback[];
  /** Training-only loader options (augmentation). */
  trainLoader?: Partial<LoaderOptions>;
  /** Data parallel: this rank's process group (every rank calls fit with the same options). */
  pg?: ProcessGroup;
  /** Data parallel: BatchNorm statistics over every rank's batch (SyncBatchNorm). */
  syncBatchNorm?: boolean;
  resume?: boolean;
  /** Progress output; default stdout, null for silent. */
  log?: NodeJS.WritableStream | null;
}

/** Trains `model` as `o` says; resolves when training ends. */
export async function fit(model: Module & { forward(...inputs: Tensor[]): Tensor }, o: FitOptions): Promise<TrainResult> {
  const ranks = o.pg?.size ?? 1;
  const batch = o.batch ?? 32;
  const accumulate = o.accumulate ?? 1;
  if (o.steps !== undefined && o.epochs !== undefined) throw new Error('fit: give steps or epochs, not both');
  const perStep = batch * accumulate * ranks;
  const steps = o.steps ?? Math.ceil(((o.epochs ?? 1) * o.train.size) / perStep);
  const every = o.evalEvery ?? Math.max(1, Math.ceil(o.train.size / perStep));
  const cfg = parseConfig({
    out: o.out,
    model: { kind: 'cnn' },
    train: { schedule: 'constant', warmup: 0, weightDecay: 0, clip: 0, ...o.trainConfig, steps, batch, accumulate, ...(o.optimizer ? { optimizer: o.optimizer } : {}), ...(o.lr !== undefined ? { lr: o.lr } : {}) },
    eval: { every, batch: o.evalBatch ?? 500 },
    checkpoint: { every: o.checkpointEvery ?? steps, keep: 2 },
    dist: { syncBatchNorm: o.syncBatchNorm ?? false },
    sample: { tokens: 0 },
  }, 'fit options');
  const metrics = Array.isArray(o.metrics)
    ? Object.fromEntries((o.metrics as readonly string[]).map((n) => [n, metricByName(n)]))
    : (o.metrics as Readonly<Record<string, MetricFn>> | undefined) ?? {};
  const task = new SupervisedTask({
    model, train: o.train, eval: o.eval ? { data: o.eval, batch: cfg.eval.batch } : null, metrics,
    ...(o.loss ? { loss: o.loss } : {}), ...(o.trainLoader ? { trainLoader: o.trainLoader } : {}),
  });
  const run: TrainOptions = { resume: o.resume ?? false, ...(o.log !== undefined ? { out: o.log } : {}) };
  return new Trainer(cfg, { task, ...(o.pg ? { pg: o.pg } : {}), ...(o.callbacks ? { callbacks: o.callbacks } : {}) }).run(run);
}

/**
 * Stops a run when `monitor` (an evaluated metric such as 'accuracy' or 'val_loss') has not
 * improved by more than `minDelta` for `patience` evaluations (Keras's EarlyStopping).
 */
export function earlyStopping(o: { monitor: string; mode?: 'min' | 'max'; patience?: number; minDelta?: number }): Callback {
  const sign = (o.mode ?? (o.monitor.includes('loss') ? 'min' : 'max')) === 'max' ? 1 : -1;
  const patience = o.patience ?? 3;
  const minDelta = o.minDelta ?? 0;
  let best = -Infinity;
  let since = 0;
  return {
    onEvalEnd(m, ctx) {
      const v = m[o.monitor];
      if (v === undefined) throw new Error(`earlyStopping: metric '${o.monitor}' is not evaluated (have: ${Object.keys(m).join(', ')})`);
      if (sign * v > best + minDelta) { best = sign * v; since = 0; return; }
      if (++since >= patience) ctx.stop();
    },
  };
}
