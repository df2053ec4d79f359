/**
 * Evaluation metrics as graphs: each is the batch mean of a per-example quantity computed from
 * the model's output and the target inside the evaluation program, so nothing but one scalar per
 * metric leaves onnxruntime. The trainer averages them over the evaluation set weighted by batch
 * size (a metric of the whole set, not a mean of batch means when the last batch is short).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as b from '../ir/build.js';
import { Tensor } from '../tensor/tensor.js';
import { TensorBoardWriter } from './tensorboard.js';

/** A metric: the batch mean (a scalar) of a per-example quantity, from output and target. */
export type MetricFn = (out: Tensor, target: Tensor) => Tensor;

/** Metrics derived on the host from the evaluated means (perplexity from the loss). */
export type DerivedMetrics = (means: Readonly<Record<string, number>>) => Record<string, number>;

/**
 * Top-k accuracy of class scores `out` [N, C] against integer labels `target` [N]: an example
 * is correct when fewer than k classes score strictly higher than its label (ties count for the
 * label, as torch.topk's order would place an exact tie either way; with float scores they do not
 * happen in practice). No ArgMax/TopK needed: the rank of the label's score is a compare and a sum.
 */
export function topK(k: number): MetricFn {
  if (!(Number.isInteger(k) && k >= 1)) throw new Error(`topK: k must be a positive integer, got ${k}`);
  return (out, target) => {
    if (out.rank !== 2) throw new Error(`topK: scores must be [N, classes], got [${out.shape.join(', ')}]`);
    const C = out.shape[1];
    if (typeof C === 'number' && k > C) throw new Error(`topK: k (${k}) exceeds the ${C} classes`);
    const label = b.unsqueeze(b.cast(target.value, 'int64'), [-1]);
    const picked = b.gatherElements(out.value, label, 1); // [N, 1]
    const higher = b.reduceSum(b.cast(b.greater(out.value, picked), out.dtype), [1], false); // [N]
    const hit = b.cast(b.apply1('Less', [higher, b.scalarLike(k, higher)]), out.dtype);
    return new Tensor(b.reduceMean(hit, [0], false));
  };
}

/** Top-1 accuracy. */
export const accuracy = (): MetricFn => topK(1);

/** Mean cross-entropy of scores [N, C] against labels [N] (the classification loss). */
export const crossEntropy: MetricFn = (out, target) => out.crossEntropy(target);

/** exp(val_loss): the perplexity of a language model whose loss is in nats per token. */
export const perplexity: DerivedMetrics = (m): Record<string, number> => (m['val_loss'] === undefined ? {} : { perplexity: Math.exp(m['val_loss']) });

/** Metrics by the names configs and `fit` accept. */
export function metricByName(name: string): MetricFn {
  if (name === 'accuracy') return accuracy();
  const top = /^top(\d+)$/.exec(name);
  if (top) return topK(Number(top[1]));
  throw new Error(`unknown metric '${name}' (known: accuracy, topK such as top5)`);
}

/**
 * Keeps the lines of metrics.jsonl for steps up to `step` (a resumed run rewrites what came after
 * its checkpoint, so no step is logged twice); a line a crash left half-written is dropped too.
 */
export function trimMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const stepOf = (l: string): number => { try { return (JSON.parse(l) as { step: number }).step; } catch { return Infinity; } };
  const keep = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '' && stepOf(l) <= step);
  writeFileSync(path, keep.map((l) => `${l}\n`).join(''));
}

/**
 * A run's metrics log: `<out>/metrics.jsonl` (started empty, or cut back to the resumed step by
 * `trimMetrics`), and with `tensorboard` the same numbers as TensorBoard scalars under
 * `<out>/tensorboard/` (train/tensorboard.ts). The trainer and the parameter server's worker 0 write
 * through it; `weft board` reads the file.
 */
export class MetricsLog {
  readonly path: string;
  private readonly tb: TensorBoardWriter | null;

  constructor(out: string, o: { resumedAt: number | null; tensorboard: boolean }) {
    mkdirSync(out, { recursive: true });
    this.path = join(out, 'metrics.jsonl');
    if (o.resumedAt === null) writeFileSync(this.path, '');
    else trimMetrics(this.path, o.resumedAt);
    this.tb = o.tensorboard ? new TensorBoardWriter(join(out, 'tensorboard'), o.resumedAt) : null;
  }

  append(m: Readonly<{ step: number } & Record<string, number | undefined>>): void {
    appendFileSync(this.path, `${JSON.stringify(m)}\n`);
    this.tb?.scalars(m.step, m);
  }
}
