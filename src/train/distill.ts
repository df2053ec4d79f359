/**
 * Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
 * Network"): a student trained on a trained teacher's soft targets as well as the labels,
 *
 *   loss = alpha T^2 KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) hard,
 *
 * z_t, z_s the teacher's and student's logits, T the temperature, `hard` the task's own loss. The
 * T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (the soft
 * gradients scale as 1/T^2). KL is summed over classes and averaged over the rows of the logits,
 * as the hard loss averages: per example for a classifier, per token for the GPT ([B*T, vocab]).
 *
 * The teacher is a run of `weft train` (train/run_model.ts), bound with its own parameters and
 * traced into the student's step: its leaves are fed from its buffer like any bound parameter, and
 * the step differentiates only with respect to the student's, so the teacher is a constant-weight
 * forward in the same program. It runs in eval mode (no dropout, BatchNorm's running statistics,
 * no buffer updates) and in float32 under mixed precision (ir/autocast.ts `fullPrecision`).
 */
import { fullPrecision } from '../ir/autocast.js';
import { takeBufferUpdates } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import type { RunConfig } from './config.js';
import { modelOfRun } from './run_model.js';
import type { RunModel } from './run_model.js';
import type { Task } from './task.js';
import type { TokenizerJSON } from '../data/tokenizer.js';

/** The mix of the soft and hard terms (config `train.distill`). */
export interface DistillOptions {
  /** Weight of the soft term, in [0, 1]. */
  alpha: number;
  /** Softmax temperature, > 0. */
  temperature: number;
}

/**
 * The distillation loss from the student's logits, the teacher's (the same shape [..., classes])
 * and the task's hard loss (a scalar):
 * `alpha T^2 mean_rows sum_c p_c (log p_c - log q_c) + (1 - alpha) hard`, p = softmax(teacher / T),
 * q = softmax(student / T). It computes in the logits' dtype (float64 in the gradient tests).
 *
 *   const l = distillLoss(student, teacher, student.crossEntropy(y), { alpha: 0.5, temperature: 2 });
 */
export function distillLoss(student: Tensor, teacher: Tensor, hard: Tensor, o: DistillOptions): Tensor {
  const same = student.rank === teacher.rank && student.shape.every((d, i) => typeof d !== 'number' || typeof teacher.shape[i] !== 'number' || d === teacher.shape[i]);
  if (!same) throw new Error(`train.distill: the teacher's logits [${teacher.shape.join(', ')}] and the student's [${student.shape.join(', ')}] differ in shape`);
  const T = o.temperature;
  const logQ = student.div(T).logSoftmax(-1);
  const logP = teacher.div(T).logSoftmax(-1);
  const kl = logP.exp().mul(logP.sub(logQ)).sum([student.rank - 1]).mean();
  return kl.mul(o.alpha * T * T).add(hard.mul(1 - o.alpha));
}

/** A teacher in a trainer's step: its model, and the loss that mixes its soft targets in. */
export interface Distillation {
  /** The teacher's run and model (eval mode, its own bound parameters). */
  readonly teacher: RunModel;
  readonly options: DistillOptions;
  /** The teacher's logits of a batch's input fields, traced in float32. */
  logits(...inputs: Tensor[]): Tensor;
  /** The step's loss: `distillLoss` of the student's output, the teacher's logits of `inputs`, and `hard`. */
  loss(out: Tensor, hard: Tensor, inputs: readonly Tensor[]): Tensor;
}

const describeTokenizer = (t: TokenizerJSON): string => (t.type === 'byte' ? 'byte (vocab 256)' : `bpe (vocab ${t.vocabSize})`);

/**
 * The distillation of a run config (`train.distill`), or null when `teacher` is ''. Loads the
 * teacher and checks it against the student: the same `model.kind`; for the GPT the same
 * tokenizer (its JSON) and a context at least the student's; and refuses the parallel layouts
 * whose step it does not cover (tensor and pipeline parallelism, ZeRO stage 3). Every error
 * names train.distill and both values.
 */
export function distillation(cfg: RunConfig, task: Task): Distillation | null {
  const d = cfg.train.distill;
  if (d.teacher === '') return null;
  const p = cfg.parallel;
  if (p.tp > 1 || p.pp > 1 || p.zero === 3) {
    throw new Error(`train.distill: the teacher runs whole inside each data-parallel rank's step (parallel.tp ${p.tp}, parallel.pp ${p.pp}, parallel.zero ${p.zero}); use data parallelism (ZeRO stages 0-2) only`);
  }
  const who = 'train.distill.teacher';
  const teacher = modelOfRun(d.teacher, who, 'teacher.params');
  if (teacher.kind !== cfg.model.kind) {
    throw new Error(`${who}: ${teacher.dir} trained model.kind '${teacher.kind}', the student's model.kind is '${cfg.model.kind}'`);
  }
  if (teacher.kind === 'gpt') {
    const mine = ((task.checkpointState?.() as { tokenizer?: TokenizerJSON } | undefined)?.tokenizer) ?? { type: 'byte' };
    if (JSON.stringify(mine) !== JSON.stringify(teacher.tokenizer)) {
      const [a, b] = [describeTokenizer(teacher.tokenizer), describeTokenizer(mine)];
      throw new Error(`${who}: ${teacher.dir}'s tokenizer is ${a}, the student's is ${b}${a === b ? ' with different merges' : ''}: the soft targets need the same vocabulary (data.tokenizer, data.bpeVocab, data.text)`);
    }
    if (teacher.cfg.model.ctx < cfg.model.ctx) {
      throw new Error(`${who}: ${teacher.dir} has model.ctx ${teacher.cfg.model.ctx}, shorter than the student's model.ctx ${cfg.model.ctx}`);
    }
  }
  teacher.model.eval();
  const options = { alpha: d.alpha, temperature: d.temperature };
  const logits = (...inputs: Tensor[]): Tensor => fullPrecision(() => {
    const z = teacher.kind === 'gpt' ? teacher.model.logits(inputs[0]!) : teacher.model.forward(inputs[0]!);
    // Eval mode records no buffer updates; drop any, so none outlives this trace.
    takeBufferUpdates(teacher.bound);
    return z;
  });
  return { teacher, options, logits, loss: (out, hard, inputs) => distillLoss(out, logits(...inputs), hard, options) };
}
