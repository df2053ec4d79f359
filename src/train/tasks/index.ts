/** The tasks a run config can describe: `model.kind` 'gpt' (text) or 'cnn' (images). */
import { mnist, MNIST_SHAPE } from '../../data/mnist.js';
import { convNet } from '../../nn/vision.js';
import type { RunConfig } from '../config.js';
import { accuracy, topK } from '../metrics.js';
import type { Task } from '../task.js';
import { LanguageModelTask } from './lm.js';
import { SupervisedTask } from './supervised.js';

export { LanguageModelTask } from './lm.js';
export { SupervisedTask } from './supervised.js';
export type { SupervisedTaskOptions } from './supervised.js';

/** The task of a run config. */
export function taskFromConfig(cfg: RunConfig): Task {
  if (cfg.model.kind === 'gpt') return new LanguageModelTask(cfg);
  if (cfg.model.kind === 'ctr') {
    throw new Error("model.kind 'ctr' trains on a parameter server (docs/parameter-server.md), not as a task of the trainer: weft train <config> --nproc N with ps.servers < N; weft memory and weft export do not cover it yet");
  }
  return imageTask(cfg);
}

/** A CNN classifier on `data.images`, evaluated on the whole test split: val_loss, accuracy, top5. */
function imageTask(cfg: RunConfig): SupervisedTask {
  const m = cfg.model;
  const pad = cfg.data.cropPadding;
  const data = mnist(pad > 0 ? { augment: { randomCrop: { padding: pad } } } : {});
  const model = convNet({ input: [...MNIST_SHAPE], classes: data.classes, channels: m.channels, hidden: m.hidden, batchNorm: m.batchNorm, dropout: m.dropout });
  return new SupervisedTask({
    model, train: data.train, eval: { data: data.test, batch: cfg.eval.batch },
    metrics: { accuracy: accuracy(), top5: topK(5) },
    name: `CNN [${m.channels.join(', ')}]${m.batchNorm ? ' +BN' : ''}${m.hidden ? ` fc ${m.hidden}` : ''} on ${cfg.data.images}${pad ? ` (random shift ±${pad})` : ''}`,
  });
}
