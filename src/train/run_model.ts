/**
 * The model of a trained run: the config in a checkpoint's state.json rebuilds the module (the
 * GPT for its tokenizer's vocabulary, or the CNN), and the checkpoint's tensors load into it.
 * `weft export` (deploy/export.ts) ships it; distillation (train/distill.ts) trains a student on
 * its outputs; `weft prune` slices it. One copy of "which module did this run train", so they cannot disagree.
 */
import { existsSync } from 'node:fs';
import { MNIST_SHAPE } from '../data/mnist.js';
import { tokenizerFromJSON } from '../data/tokenizer.js';
import type { TokenizerJSON } from '../data/tokenizer.js';
import { GPT } from '../nn/gpt.js';
import { bindParameters, loadStateDict } from '../nn/module.js';
import type { BoundParameters } from '../nn/module.js';
import type { ConvNetConfig, Sequential } from '../nn/vision.js';
import { convNet } from '../nn/vision.js';
import { loadCheckpoint } from './checkpoint.js';
import type { Checkpoint } from './checkpoint.js';
import { parseConfig } from './config.js';
import type { RunConfig } from './config.js';
import { gptConfig } from './tasks/lm.js';

/** MNIST's classes, data.images' one choice (config.ts). */
const MNIST_CLASSES = 10;

interface RunModelBase {
  /** The checkpoint directory the weights came from, and its step. */
  readonly dir: string;
  readonly step: number;
  /** The run's config (state.json `config`). */
  readonly cfg: RunConfig;
  /** The model's parameters and buffers, loaded from the checkpoint. */
  readonly bound: BoundParameters;
}

/** A run's model with its weights loaded: the GPT (and the tokenizer it was trained with) or the CNN. */
export type RunModel =
  | (RunModelBase & { readonly kind: 'gpt'; readonly model: GPT; readonly tokenizer: TokenizerJSON })
  | (RunModelBase & { readonly kind: 'cnn'; readonly model: Sequential; readonly input: readonly [number, number, number]; readonly classes: number });

/** A run's checkpoint as read: its directory and tensors, its config, and the GPT's tokenizer (null for a CNN). */
export interface RunCheckpoint {
  readonly ck: Checkpoint;
  readonly cfg: RunConfig;
  readonly tokenizer: TokenizerJSON | null;
}

/**
 * The latest checkpoint of a run directory (or one checkpoint directory) with the run config its
 * state.json holds. `who` starts every error ('weft export', 'weft prune', 'train.distill.teacher'),
 * each naming the path and what was expected.
 */
export function readRun(path: string, who: string): RunCheckpoint {
  if (!existsSync(path)) throw new Error(`${who}: ${path} does not exist (expected a run directory or a checkpoint directory)`);
  let ck: Checkpoint;
  try { ck = loadCheckpoint(path); } catch (e) { throw new Error(`${who}: ${path} is not a run or checkpoint directory: ${(e as Error).message}`); }
  const state = ck.state as { config?: unknown; tokenizer?: TokenizerJSON } | null;
  if (state?.config === undefined) throw new Error(`${who}: ${ck.dir}/state.json has no run config (weft train and the Trainer write one; a model built in TypeScript has none)`);
  const cfg = parseConfig(state.config, `${ck.dir}/state.json config`);
  // A byte-level run saves no tokenizer JSON of its own (older checkpoints): bytes.
  return { ck, cfg, tokenizer: cfg.model.kind === 'gpt' ? state.tokenizer ?? { type: 'byte' } : null };
}

/** The CNN a run config describes (`model.kind` 'cnn'): MNIST's input and classes, the config's stages. */
export function cnnConfig(cfg: RunConfig): ConvNetConfig {
  const m = cfg.model;
  return { input: [...MNIST_SHAPE], classes: MNIST_CLASSES, channels: m.channels, hidden: m.hidden, batchNorm: m.batchNorm, dropout: m.dropout };
}

/**
 * The model of the latest checkpoint of a run directory (or of one checkpoint directory), its
 * parameters bound (labelled `label` in the memory accounting) and loaded. `who` starts every
 * error ('weft export', 'train.distill.teacher'), each naming the path and what was expected.
 *
 *   const t = modelOfRun('runs/mnist-cnn', 'weft export');   // t.kind === 'cnn', t.model.forward(images)
 */
export function modelOfRun(path: string, who: string, label = 'params'): RunModel {
  const { ck, cfg, tokenizer } = readRun(path, who);
  const base = { dir: ck.dir, step: ck.step, cfg };
  const load = (model: GPT | Sequential): BoundParameters => {
    const bound = bindParameters(model, { label });
    try { loadStateDict(bound, ck.weights); } catch (e) { throw new Error(`${who}: ${ck.dir}/model.safetensors: ${(e as Error).message.replace(/^loadStateDict: /, '')}`); }
    return bound;
  };
  if (tokenizer !== null) {
    const model = new GPT(gptConfig(cfg, tokenizerFromJSON(tokenizer, `${ck.dir}/state.json`).vocabSize));
    return { ...base, kind: 'gpt', model, tokenizer, bound: load(model) };
  }
  const c = cnnConfig(cfg);
  const model = convNet(c);
  return { ...base, kind: 'cnn', model, input: MNIST_SHAPE, classes: c.classes, bound: load(model) };
}
