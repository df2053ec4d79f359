/**
 * Memory accounting: optimizer state by formula against what the optimizers hold, tensor
 * parallelism halving the sharded parameters, liveness on a hand-built graph with a known answer,
 * and the size parser behind `weft memory --budget`. No timings, no RSS thresholds.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Node, Value } from '../src/ir/graph.js';
import { bindParameters, GPT } from '../src/nn/index.js';
import { parallelizeGPT } from '../src/nn/gpt_plan.js';
import { Adafactor } from '../src/optim/adafactor.js';
import { AdamW } from '../src/optim/adamw.js';
import { SGD } from '../src/optim/sgd.js';
import { FlatBuffer, Layout } from '../src/runtime/flat.js';
import { liveness, ortGraphMemory } from '../src/runtime/memory.js';
import { ortLiveness, readOrtGraph } from '../src/runtime/ort_graph.js';
import type { TensorMeta } from '../src/runtime/ort_graph.js';
import { Writer } from '../src/ir/onnx/wire.js';
import { profiler } from '../src/runtime/profiler.js';
import { parseConfig } from '../src/train/config.js';
import { estimateMemory, optimizerStateBytes, parseSize } from '../src/train/memory.js';
import type { RunConfig } from '../src/train/config.js';

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

interface HandNode { op: string; inputs: string[]; outputs: string[]; domain?: string; ints?: Record<string, number[]> }

/** A saved (optimized) model as onnxruntime writes it: nodes in order, no value_info. */
function handModel(nodes: HandNode[], inputs: Record<string, number[]>, outputs: string[], int64s: Record<string, number[]> = {}): Uint8Array {
  const info = (w: Writer, name: string, shape: number[]): void => {
    w.string(1, name);
    w.message(2, (t) => t.message(1, (tt) => { tt.int(1, 1); tt.message(2, (sh) => { for (const d of shape) sh.message(1, (dw) => dw.int(1, d)); }); }));
  };
  const w = new Writer();
  w.int(1, 8);
  w.message(7, (g) => {
    for (const n of nodes) {
      g.message(1, (nw) => {
        for (const i of n.inputs) nw.string(1, i);
        for (const o of n.outputs) nw.string(2, o);
        nw.string(4, n.op);
        if (n.domain) nw.string(7, n.domain);
        for (const [k, v] of Object.entries(n.ints ?? {})) nw.message(5, (a) => { a.string(1, k); a.packedInts(8, v); a.int(20, 7); });
      });
    }
    for (const [name, vals] of Object.entries(int64s)) {
      g.message(5, (t) => { t.packedInts(1, [vals.length]); t.int(2, 7); t.string(8, name); t.packedInts(7, vals); });
    }
    for (const [name, shape] of Object.entries(inputs)) g.message(11, (vw) => info(vw, name, shape));
    for (const name of outputs) g.message(12, (vw) => info(vw, name, [1]));
  });
  return w.finish();
}

const f32 = (...shape: number[]): TensorMeta => ({ dtype: 'float32', shape });

test('ort graph: the saved model is read in its node order, with contrib domains, attributes and int64 initializers', () => {
  const g = readOrtGraph(handModel([
    { op: 'Transpose', inputs: ['x'], outputs: ['_token_0'], ints: { perm: [1, 0] } },
    { op: 'FusedMatMul', domain: 'com.microsoft', inputs: ['_token_0', 'x'], outputs: ['y'] },
  ], { x: [4, 8] }, ['y'], { shape: [2, -1] }));
  assert.deepEqual(g.nodes.map((n) => `${n.domain}:${n.op}`), [':Transpose', 'com.microsoft:FusedMatMul']);
  assert.deepEqual(g.nodes[0]!.ints.get('perm'), [1, 0]);
  assert.deepEqual(g.initializers.get('shape')?.values, [2, -1]);
  assert.deepEqual(g.inputs.get('x'), f32(4, 8));
  assert.deepEqual(g.outputs, ['y']);
});

test('ort liveness: aliases share their root buffer, optimizer-made outputs get inferred shapes, unknown ones are reported', () => {
  const g = readOrtGraph(handModel([
    { op: 'Relu', inputs: ['x'], outputs: ['a'] }, // 1 KiB
    { op: 'Reshape', inputs: ['a', 'shape'], outputs: ['_token_r'] }, // alias of a: no bytes; [4, 64] from the initializer
    { op: 'FusedMatMul', domain: 'com.microsoft', inputs: ['_token_r', '_token_r'], outputs: ['_token_f'] }, // no rule: guessed as its input, 1 KiB
    { op: 'Neg', inputs: ['_token_f'], outputs: ['b'] }, // 1 KiB; f dies here
    { op: 'Add', inputs: ['a', 'b'], outputs: ['c'] }, // a (through its alias' root) and b die here
  ], { x: [256] }, ['c'], { shape: [4, -1] }));
  const m = ortLiveness(g, new Map([['a', f32(256)], ['b', f32(256)], ['c', f32(256)]]));
  assert.equal(m.guessed, 1);
  // Live when each node has run: a; a (the alias adds nothing); a, f; a, f, b; a, b, c.
  assert.deepEqual(m.trace, [1024, 1024, 2048, 3072, 3072]);
  assert.equal(m.peakBytes, 3072);
  assert.equal(m.outputBytes, 1024);
  assert.equal(m.constantBytes, 16);
});

test("ort liveness: the planner's reuse of a dead same-shape buffer keeps it in the arena until its reuser dies", () => {
  const g = readOrtGraph(handModel([
    { op: 'Neg', inputs: ['x'], outputs: ['p'] }, // [64]: 256 B, dies at node 1
    { op: 'Neg', inputs: ['p'], outputs: ['q'] }, // [256]: 1 KiB, dies at node 2
    { op: 'Neg', inputs: ['q'], outputs: ['r'] }, // [256]: allocated while q is alive, dies at node 3
    { op: 'Neg', inputs: ['r'], outputs: ['s'] }, // [64]: takes p's buffer, idle since node 1
  ], { x: [64] }, ['s']));
  const known = new Map([['p', f32(64)], ['q', f32(256)], ['r', f32(256)], ['s', f32(64)]]);
  const m = ortLiveness(g, known);
  assert.deepEqual(m.trace, [256, 1280, 2304, 1280]);
  // Pure liveness (no reuse) frees p at node 1: its 256 B are missing from the peak.
  assert.deepEqual(ortLiveness(g, known, false).trace, [256, 1280, 2048, 1280]);
});

test("ort graph memory: a program is analysed as onnxruntime optimizes it (MatMul, Add and Relu fused into one node), every shape known", async () => {
  const x = new Value('float32', [8, 16]);
  const w = new Value('float32', [16, 4]);
  const b = new Value('float32', [4]);
  const y = node('Relu', [node('Add', [node('MatMul', [x, w], [8, 4]), b], [8, 4])], [8, 4]);
  const m = await ortGraphMemory([y]);
  assert.equal(m.nodes, 3);
  assert.equal(m.ortNodes, 1); // FusedGemm (MatMul + Add -> Gemm, then its activation folded in)
  assert.equal(m.guessed, 0);
  // weft's order holds the MatMul's and the Add's outputs at once; onnxruntime makes only the output.
  assert.equal(m.weftPeakBytes, 2 * 8 * 4 * 4);
  assert.equal(m.peakBytes, 8 * 4 * 4);
  assert.equal(m.outputBytes, 8 * 4 * 4);
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

test('estimate: ZeRO shards the optimizer state (stage 1) and the gradients (stage 2) by the data-parallel ranks', async () => {
  const cfg = (zero: number): RunConfig => parseConfig({ model: { ctx: 16, d: 32, layers: 2, heads: 2 }, train: { batch: 2, steps: 1 }, parallel: { zero }, eval: { windows: 2 }, sample: { tokens: 0 } }, 'zero estimate');
  const [z0, z1, z2] = [await estimateMemory(cfg(0), 2), await estimateMemory(cfg(1), 2), await estimateMemory(cfg(2), 2)];
  const P = z0.params_bytes / 4;
  assert.equal(z0.optimizer_bytes, 8 * P);
  assert.equal(z1.grads_bytes, 4 * P);
  // The shard: each segment's half, slots aligned to 16 elements (within a few dozen of P / 2).
  const S = z1.optimizer_bytes / 8;
  assert.ok(S >= P / 2 && S - P / 2 < 16 * 8, `shard ${S} elements vs P/2 = ${P / 2}`);
  assert.equal(z2.optimizer_bytes, z1.optimizer_bytes);
  assert.equal(z2.grads_bytes, 4 * S);
});

test('weft train --budget: a run whose estimate exceeds the budget stops before training, naming the budget and the estimate; under it, it trains', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-budget-'));
  try {
    const cfgPath = join(dir, 'tiny.json');
    writeFileSync(cfgPath, JSON.stringify({ out: join(dir, 'run'), model: { ctx: 16, d: 32, layers: 2, heads: 2 }, train: { steps: 2, batch: 2, threads: 1 }, eval: { every: 2, windows: 2 }, sample: { tokens: 0 } }));
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const over = spawnSync(process.execPath, [cli, 'train', cfgPath, '--budget', '20MB'], { encoding: 'utf8' });
    assert.equal(over.status, 1, over.stderr);
    assert.match(over.stderr, /--budget 19\.1 MiB: the estimated peak memory of each rank is [\d.]+ MiB \(weft memory: parameters .*\); nothing was trained/);
    assert.ok(!existsSync(join(dir, 'run', 'metrics.jsonl')), 'no step ran');
    const under = spawnSync(process.execPath, [cli, 'train', cfgPath, '--budget', '8GB'], { encoding: 'utf8' });
    assert.equal(under.status, 0, under.stderr);
    assert.equal(readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
