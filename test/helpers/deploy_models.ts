/**
 * ONNX files of weft models for the deploy passes' tests and benchmarks: a module's eval forward
 * traced on placeholders, every parameter and buffer an initializer (weft export's own command is
 * elsewhere; these stay independent of it).
 */
import * as w from '../../src/index.js';
import type { Module } from '../../src/nn/module.js';
import type { Tensor } from '../../src/tensor/tensor.js';

/** The eval forward of `model` (already bound) on `inputs`, its parameters and buffers as initializers. */
export function exportModule(model: Module, inputs: readonly Tensor[], forward: (...x: Tensor[]) => Tensor, outputName = 'y'): Uint8Array {
  model.eval();
  const y = forward(...inputs);
  const leaves = [...model.namedParameters().map(([, p]) => p.t.value), ...model.namedBuffers().map(([, b]) => b.t.value)];
  return w.toModelProto({ inputs: inputs.map((t) => t.value), outputs: [y.value], initializers: leaves, outputNames: [outputName], graphName: 'weft' });
}

/** A GPT's logits [B*T, vocab] for ids `idx` [B, T] (the GPT's reshapes need B fixed). */
export function gptOnnx(model: w.GPT, B: number, T: number): Uint8Array {
  return exportModule(model, [w.placeholder([B, T], 'int64', 'idx')], (idx) => model.logits(idx), 'logits');
}

/** A tiny GPT (vocab 256, ctx 32, d 64, 2 layers), bound with `seed`. */
export function tinyGpt(seed = 1): w.GPT {
  const m = new w.GPT({ vocab: 256, ctx: 32, d: 64, layers: 2, heads: 2 });
  w.bindParameters(m, { seed });
  return m;
}

/** A CNN's class scores for images x [batch, C, H, W] (the batch dim symbolic). */
export function cnnOnnx(model: w.Sequential, shape: readonly [number, number, number] = [1, 28, 28]): Uint8Array {
  return exportModule(model, [w.placeholder(['batch', ...shape], 'float32', 'x')], (x) => model.forward(x), 'scores');
}

/** An MLP on [batch, inFeatures]: Linear, ReLU, Linear (Gemms with bias). */
export function mlp(inFeatures: number, hidden: number, out: number, seed = 1): w.Sequential {
  const m = new w.Sequential([new w.Linear(inFeatures, hidden), new w.ReLU(), new w.Linear(hidden, out)]);
  w.bindParameters(m, { seed });
  return m;
}

export function mlpOnnx(model: w.Sequential, inFeatures: number): Uint8Array {
  return exportModule(model, [w.placeholder(['batch', inFeatures], 'float32', 'x')], (x) => model.forward(x), 'y');
}

/** Deterministic float data in [-1, 1) (a linear congruential generator), for test feeds. */
export function uniform(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** A small MNIST-shaped CNN (conv stages with BatchNorm, ReLU, max-pool; a hidden Linear), bound with `seed`. */
export function tinyCnn(seed = 1, channels: readonly number[] = [8, 16], hidden = 32, batchNorm = true): w.Sequential {
  const m = w.convNet({ input: [1, 28, 28], classes: 10, channels, hidden, batchNorm, dropout: 0 });
  w.bindParameters(m, { seed });
  return m;
}
