/**
 * Memory accounting: optimizer state by formula against what the optimizers hold, tensor
 * parallelism halving the sharded parameters, liveness on a hand-built graph with a known answer,
 * and the size parser behind `weft memory --budget`. No timings, no RSS thresholds.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Node, Value } from '../src/ir/graph.js';
import { bindParameters, GPT } from '../src/nn/index.js';
import { parallelizeGPT } from '../src/nn/gpt_plan.js';
import { Adafactor } from '../src/optim/adafactor.js';
import { AdamW } from '../src/optim/adamw.js';
import { SGD } from '../src/optim/sgd.js';
import { FlatBuffer, Layout } from '../src/runtime/flat.js';
import { liveness } from '../src/runtime/memory.js';
import { profiler } from '../src/runtime/profiler.js';
import { parseConfig } from '../src/train/config.js';
import { optimizerStateBytes, parseSize } from '../src/train/memory.js';

const layout = new Layout([{ name: 'w', shape: [3, 5, 7] }, { name: 'b', shape: [7] }, { name: 'e', shape: [32, 16] }]);
const held = (label: string): number => profiler.report().heldBytes[label]!;

test('memory: AdamW state is 8 bytes per parameter (m and v), as the optimizer holds', () => {
  const p = FlatBuffer.zeros(layout);
  new AdamW(p, { lr: 1e-3 });
  assert.equal(optimizerStateBytes(parseConfig({}).train, layout), 8 * layout.size);
  assert.equal(held('adamw.m') + held('adamw.v'), 8 * layout.size);
});

test('memory: SGD momentum is 4 bytes per parameter, none without momentum', () => {
  const p = FlatBuffer.zeros(layout);
  new SGD(p, { lr: 1e-2, momentum: 0.9 });
  assert.equal(optimizerStateBytes(parseConfig({ train: { optimizer: 'sgd' } }).train, layout), held('sgd.momentum'));
  assert.equal(held('sgd.momentum'), 4 * layout.size);
  assert.equal(optimizerStateBytes(parseConfig({ train: { optimizer: 'sgd', momentum: 0 } }).train, layout), 0);
});

test('memory: Adafactor keeps rows + columns per matrix of the last two dims, and m with beta1', () => {
  // w [3,5,7]: 3*(5+7) = 36; b [7]: 7 (unfactored); e [32,16]: 48.
  const factored = 4 * (36 + 7 + 48);
  const p = FlatBuffer.zeros(layout);
  assert.equal(new Adafactor(p, {}).stateBytes, factored);
  assert.equal(held('adafactor'), factored);
  assert.equal(optimizerStateBytes(parseConfig({ train: { optimizer: 'adafactor' } }).train, layout), factored);
  const numel = 105 + 7 + 512;
  assert.equal(new Adafactor(p, { beta1: 0.9 }).stateBytes, factored + 4 * numel);
  assert.equal(optimizerStateBytes(parseConfig({ train: { optimizer: 'adafactor', adafactorBeta1: 0.9 } }).train, layout), factored + 4 * numel);
});

test('memory: tensor parallelism over 2 halves every sharded parameter of the GPT', () => {
  const cfg = { vocab: 256, ctx: 16, d: 32, layers: 2, heads: 4 };
  const whole = bindParameters(new GPT(cfg)).flat.layout;
  const g = new GPT(cfg);
  parallelizeGPT(g, { axis: 'tp', size: 2, index: 0 });
  const shard = bindParameters(g).flat.layout;
  const sharded = new Set(g.namedParameters().filter(([, p]) => p.placement !== null).map(([n]) => n));
  assert.ok(sharded.size > 0);
  for (const s of shard.slots) assert.equal(s.size, sharded.has(s.name) ? whole.slot(s.name).size / 2 : whole.slot(s.name).size, s.name);
});

/** A node with one float32 output of `shape`. */
function node(op: string, inputs: Value[], shape: number[]): Value {
  const n = new Node(op, inputs, {});
  const v = new Value('float32', shape, n, 0);
  n.outputs = [v];
  return v;
}

test('liveness: a hand-built forward + backward has the peak and the saved bytes counted by hand', () => {
  const x = new Value('float32', [4]);
  const a = node('Relu', [x], [4]); // 16 bytes
  const b = node('Exp', [a], [4]); // 16
  const loss = node('ReduceSum', [b], []); // 4
  const g = node('Mul', [a, b], [4]); // 16, the "backward": reads a and b
  const order = [a.node!, b.node!, loss.node!, g.node!];
  const m = liveness(order, [loss, g], new Set([a.node!, b.node!, loss.node!]));
  // Live after each node: 16, 32, 36, 52 (a and b freed after Mul, loss and g kept as outputs).
  assert.equal(m.peakBytes, 52);
  assert.equal(m.savedBytes, 32);
  assert.equal(m.outputBytes, 20);
  // A value read only by the next node is freed before the one after: the peak of a chain is two links.
  const c1 = node('Relu', [x], [100]);
  const c2 = node('Relu', [c1], [100]);
  const c3 = node('Relu', [c2], [1]);
  assert.equal(liveness([c1.node!, c2.node!, c3.node!], [c3]).peakBytes, 800);
});

test('parseSize: decimal and binary units, fractions, bare bytes', () => {
  assert.equal(parseSize('8GB'), 8e9);
  assert.equal(parseSize('512MiB'), 512 * 2 ** 20);
  assert.equal(parseSize('1.5G'), 1.5e9);
  assert.equal(parseSize('2gib'), 2 * 2 ** 30);
  assert.equal(parseSize('1000000'), 1e6);
});

test('parseSize: a budget that is not a size is an error naming the flag and the text', () => {
  assert.throws(() => parseSize('8 parsecs', '--budget'), /--budget must be a size such as 8GB, 512MiB or 1.5G, got '8 parsecs'/);
  assert.throws(() => parseSize('-1GB', '--budget'), /--budget .* got '-1GB'/);
  const r = spawnSync(process.execPath, [fileURLToPath(new URL('../src/cli/main.js', import.meta.url)), 'memory', 'recipes/brown-small.json', '--budget', 'lots'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--budget must be a size .* got 'lots'/);
});
