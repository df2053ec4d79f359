/**
 * Inference models of a trained run as ONNX files (opset 17), traced from the same module code
 * that trains, in eval mode (no dropout; BatchNorm as BatchNormalization over its running
 * statistics), with the weights as initializers named by their parameter paths:
 *
 * - GPT 'logits': `idx` int64 [batch, seq] (seq <= ctx) -> `logits` float32 [batch, seq, vocab];
 * - GPT 'step' (incremental decoding with a KV cache): `idx` int64 [batch, new] and, per layer l,
 *   `past_key_<l>` / `past_value_<l>` float32 [batch, heads, past, hd] (past may be 0) -> `logits`
 *   [batch, new, vocab] of positions past .. past + new - 1 and `present_key_<l>` /
 *   `present_value_<l>` [batch, heads, past+new, hd]; past + new <= ctx;
 * - CNN: `images` float32 [batch, C, H, W] (MNIST's [batch, 1, 28, 28]) -> `logits` [batch, classes].
 *
 * docs/deploy-export.md describes the files, the sidecar JSON and how to run them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { MNIST_SHAPE } from '../data/mnist.js';
import type { TokenizerJSON } from '../data/tokenizer.js';
import type { Value } from '../ir/graph.js';
import { topoNodes } from '../ir/graph.js';
import { toModelProto } from '../ir/onnx/export.js';
import { GPT, gptWidths } from '../nn/gpt.js';
import type { KV } from '../nn/gpt.js';
import type { Module } from '../nn/module.js';
import { placeholder } from '../tensor/tensor.js';
import type { Tensor } from '../tensor/tensor.js';
import { modelOfRun } from '../train/run_model.js';

export type GptExportKind = 'logits' | 'step';
export type RunExportKind = GptExportKind | 'both';

/** The names and shapes of an exported model's inputs and outputs (symbolic dims as strings). */
export interface Signature {
  inputs: { name: string; dtype: string; shape: (number | string)[] }[];
  outputs: { name: string; dtype: string; shape: (number | string)[] }[];
}

export interface Exported extends Signature {
  /** The ModelProto. */
  bytes: Uint8Array;
}

/** The GPT's inference graph: 'logits' over a whole sequence, or 'step', one incremental step over a KV cache. */
export function exportGpt(model: GPT, o: { kind: GptExportKind }): Exported {
  const c = model.config;
  if (c.moe !== undefined) throw new Error('exportGpt: a mixture-of-experts GPT cannot be exported yet (its expert capacity is sized from a static token count)');
  return inEval(model, () => {
    const T = o.kind === 'logits' ? 'seq' : 'new';
    const idx = placeholder(['batch', T], 'int64', 'idx');
    const hd = gptWidths(c).headDim;
    const past: KV[] | null = o.kind === 'logits' ? null : model.blocks.map((_, l) => ({
      k: placeholder(['batch', c.heads, 'past', hd], 'float32', `past_key_${l}`),
      v: placeholder(['batch', c.heads, 'past', hd], 'float32', `past_value_${l}`),
    }));
    const r = model.forwardCached(idx, past);
    const logits = r.logits.reshape(['batch', T, c.vocab]);
    const outputs: [string, Tensor][] = [['logits', logits]];
    if (past !== null) r.present.forEach((p, l) => outputs.push([`present_key_${l}`, p.k], [`present_value_${l}`, p.v]));
    const inputs: [string, Tensor][] = [['idx', idx], ...(past ?? []).flatMap((p, l): [string, Tensor][] => [[`past_key_${l}`, p.k], [`past_value_${l}`, p.v]])];
    return build(inputs, outputs, `weft_gpt_${o.kind}`);
  });
}

/** An image classifier's inference graph: `images` [batch, ...input] -> `logits` [batch, classes]. */
export function exportCnn(model: Module & { forward(x: Tensor): Tensor }, input: readonly [number, number, number] = MNIST_SHAPE): Exported {
  return inEval(model, () => {
    const images = placeholder(['batch', ...input], 'float32', 'images');
    return build([['images', images]], [['logits', model.forward(images)]], 'weft_cnn');
  });
}

/** The sidecar JSON `exportRun` writes beside the model (`<model>.json`). */
export interface ExportManifest {
  format: 'weft-export';
  version: 1;
  /** The checkpoint the weights come from. */
  checkpoint: string;
  step: number;
  kind: 'gpt' | 'cnn';
  /** File name (beside the manifest) -> its inputs and outputs. */
  models: Record<string, Signature & { kind: GptExportKind | 'classifier' }>;
  /** GPT: the model config (vocab, ctx, d, layers, heads, ...) and the tokenizer (`tokenizerFromJSON`). */
  gpt?: { config: GPT['config']; tokenizer: TokenizerJSON };
  /** CNN: input [C, H, W], classes, and the normalization the images need (pixel / 255). */
  cnn?: { input: readonly number[]; classes: number; scale: number };
}

/**
 * Exports the latest checkpoint of a run directory (or one checkpoint directory) to `out`: a GPT
 * writes its 'logits' model, its 'step' model, or with 'both' (the default) `out` and `out`'s
 * `.step.onnx` sibling (model.onnx, model.step.onnx); a CNN writes its classifier. A manifest
 * `<out without .onnx>.json` names the files, their inputs and outputs, and the GPT's config and
 * tokenizer. Returns every file written.
 */
export function exportRun(path: string, opts: { out: string; kind?: RunExportKind }): { files: string[]; manifest: ExportManifest } {
  const run = modelOfRun(path, 'weft export');
  const kind = opts.kind ?? 'both';
  const stem = opts.out.replace(/\.onnx$/, '');
  const manifest: ExportManifest = { format: 'weft-export', version: 1, checkpoint: run.dir, step: run.step, kind: run.kind, models: {} };
  const files: string[] = [];
  mkdirSync(dirname(opts.out), { recursive: true });
  const write = (file: string, e: Exported, k: GptExportKind | 'classifier'): void => {
    writeFileSync(file, e.bytes);
    files.push(file);
    manifest.models[basename(file)] = { kind: k, inputs: e.inputs, outputs: e.outputs };
  };
  if (run.kind === 'gpt') {
    const model = run.model;
    if (kind === 'logits' || kind === 'both') write(opts.out, exportGpt(model, { kind: 'logits' }), 'logits');
    if (kind === 'step') write(opts.out, exportGpt(model, { kind: 'step' }), 'step');
    if (kind === 'both') write(`${stem}.step.onnx`, exportGpt(model, { kind: 'step' }), 'step');
    manifest.gpt = { config: model.config, tokenizer: run.tokenizer };
  } else {
    if (kind !== 'both' && kind !== 'logits') throw new Error(`weft export: --kind ${kind} is a GPT model; ${run.dir} is a CNN run (it exports its classifier)`);
    write(opts.out, exportCnn(run.model, run.input), 'classifier');
    manifest.cnn = { input: [...run.input], classes: run.classes, scale: 1 / 255 };
  }
  const side = `${stem}.json`;
  writeFileSync(side, `${JSON.stringify(manifest, null, 1)}\n`);
  files.push(side);
  return { files, manifest };
}

/** Runs `fn` with `model` in eval mode, restoring its mode after. */
function inEval<T>(model: Module, fn: () => T): T {
  const was = model.training;
  model.eval();
  try { return fn(); } finally { model.train(was); }
}

/** The ModelProto of `outputs` over `inputs`; every other leaf the outputs read is a weight, stored as an initializer under its parameter name. */
function build(inputs: readonly [string, Tensor][], outputs: readonly [string, Tensor][], graphName: string): Exported {
  const ins = new Set(inputs.map(([, t]) => t.value));
  const weights: Value[] = [];
  const seen = new Set<Value>();
  for (const n of topoNodes(outputs.map(([, t]) => t.value))) {
    for (const v of n.inputs) {
      if (v === null || v.node !== null || v.constant || ins.has(v) || seen.has(v)) continue;
      seen.add(v);
      weights.push(v);
    }
  }
  const bytes = toModelProto({
    inputs: inputs.map(([, t]) => t.value), inputNames: inputs.map(([n]) => n),
    outputs: outputs.map(([, t]) => t.value), outputNames: outputs.map(([n]) => n),
    initializers: weights, graphName,
  });
  const sig = (xs: readonly [string, Tensor][]): Signature['inputs'] => xs.map(([name, t]) => ({ name, dtype: t.dtype, shape: [...t.shape] }));
  return { bytes, inputs: sig(inputs), outputs: sig(outputs) };
}
