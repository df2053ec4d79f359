/**
 * ONNX in and out: exported models pass onnx's own checker (full_check) and compute what weft
 * computes; export -> import -> export is a fixpoint; models written by Python's onnx.helper import
 * and compute what onnxruntime computes from the file; unknown ops are clear import errors.
 *
 * The checker runs in Debian's Python (/usr/bin/python3 with onnx 1.12); tests that need it are
 * skipped, not failed, where that interpreter or its onnx module is missing.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import * as w from '../src/index.js';
import type { Tensor, TypedArray, Value } from '../src/index.js';
import { readFields, asString } from '../src/ir/onnx/wire.js';

const { ops } = w;
const PY = '/usr/bin/python3';
const CHECK = 'import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)';

const hasOnnx = ((): boolean => {
  try { execFileSync(PY, ['-c', 'import onnx'], { stdio: 'pipe' }); return true; } catch { return false; }
})();
const needsPython = hasOnnx ? {} : { skip: `${PY} with the onnx module is not available` };

w.setThreads(1);
const dir = mkdtempSync(join(tmpdir(), 'weft-onnx-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
function writeModel(bytes: Uint8Array, stem: string): string {
  const path = join(dir, `${stem}-${fileNo++}.onnx`);
  writeFileSync(path, bytes);
  return path;
}

/** Runs onnx.checker.check_model(full_check=True); fails with the checker's own words. */
function checkModel(bytes: Uint8Array, stem: string): void {
  const path = writeModel(bytes, stem);
  try {
    execFileSync(PY, ['-c', CHECK, path], { stdio: 'pipe' });
  } catch (e) {
    const err = e as { status: number | null; stderr?: Buffer };
    assert.fail(`onnx checker rejected ${stem} (exit ${err.status}):\n${err.stderr?.toString() ?? ''}`);
  }
}

/** Node op types in graph order, read straight from the bytes. */
function opsOf(bytes: Uint8Array): string[] {
  const graph = readFields(bytes, 'model').find((f) => f.field === 7)!;
  return readFields(graph.bytes, 'graph')
    .filter((f) => f.field === 1)
    .map((n) => asString(readFields(n.bytes, 'node').find((f) => f.field === 4)!));
}

type Feeds = Record<string, ort.Tensor>;

async function runOrt(model: Uint8Array | string, feeds: Feeds): Promise<TypedArray[]> {
  const opts: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  try {
    const out = await s.run(feeds);
    return s.outputNames.map((n) => out[n]!.data as TypedArray);
  } finally {
    await s.release();
  }
}

function assertClose(actual: TypedArray, expected: TypedArray, what: string, atol = 1e-5, rtol = 1e-4): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} elements, expected ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const a = Number(actual[i]!);
    const e = Number(expected[i]!);
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      assert.fail(`${what}: element ${i} is ${a}, expected ${e}`);
    }
  }
}

/** A test graph: inputs with the data fed at run time, outputs, trained weights. */
interface Case {
  inputs: Tensor[];
  data: TypedArray[];
  /** Concrete shapes of the fed data (differs from the input shape where a dim is symbolic). */
  shapes: number[][];
  outputs: Tensor[];
  weights: Tensor[];
}

const feedsOf = (c: Case): Feeds =>
  Object.fromEntries(c.inputs.map((t, i) => [t.value.name!, new ort.Tensor(t.dtype as ort.Tensor.Type, c.data[i] as ort.Tensor.DataType, c.shapes[i]!)]));

const exportCase = (c: Case): Uint8Array => toModel(c.inputs.map((t) => t.value), c.outputs.map((t) => t.value), c.weights.map((t) => t.value));

function toModel(inputs: Value[], outputs: Value[], initializers: Value[]): Uint8Array {
  return w.toModelProto({ inputs, outputs, initializers, outputNames: outputs.map((_, i) => `y${i}`) });
}

/** weft's own answer: feed the placeholders and realize (which detaches the graph: export first). */
async function realizeCase(c: Case): Promise<TypedArray[]> {
  c.inputs.forEach((t, i) => { t.value.data = c.data[i]!; });
  await w.realize(...c.outputs);
  return Promise.all(c.outputs.map((t) => t.data()));
}

function floats(n: number, rng: w.Rng, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

function named<T extends Tensor>(t: T, name: string): T { t.value.name = name; return t; }

// ---------------------------------------------------------------------------------------------
// The graphs

/** MLP: Gemm + Relu, then MatMul + Add + Relu. */
function mlp(): Case {
  const rng = new w.Rng(1);
  const x = w.placeholder([4, 3], 'float32', 'x');
  const W1 = named(w.randn([3, 8], rng), 'W1');
  const b1 = named(w.randn([8], rng), 'b1');
  const W2 = named(w.randn([8, 2], rng), 'W2');
  const b2 = named(w.randn([2], rng), 'b2');
  const h = new w.Tensor(ops.gemm(x.value, W1.value, b1.value)).relu();
  const y = h.matmul(W2).add(b2).relu();
  return { inputs: [x], data: [floats(12, rng)], shapes: [[4, 3]], outputs: [y], weights: [W1, b1, W2, b2] };
}

/**
 * Embedding + LayerNorm + Gelu (lowers to Erf) + Reshape/Transpose/Split/Concat/Slice + Softmax,
 * with two outputs.
 */
function transformerish(): Case {
  const rng = new w.Rng(2);
  const ids = w.placeholder([2, 4], 'int64', 'ids');
  const E = named(w.randn([10, 8], rng), 'embed');
  const scale = named(w.tensor(floats(8, rng, 0.1).map((v) => v + 1)), 'ln_scale');
  const bias = named(w.tensor(floats(8, rng, 0.1)), 'ln_bias');
  const h = E.gather(ids).layerNorm(scale, bias).gelu(); // [2, 4, 8]
  const heads = h.reshape([2, 4, 2, 4]).transpose([0, 2, 1, 3]); // [2, 2, 4, 4]
  const [a, c] = heads.split([1, 1], 1);
  const joined = new w.Tensor(ops.concat([c!.value, a!.value], 3)); // [2, 1, 4, 8]
  const sliced = joined.slice([1, 0], [8, 4], [3, 2], [2, 1]); // [2, 1, 4, 4], strided
  const probs = sliced.softmax(-1);
  const ids64 = BigInt64Array.from([1, 3, 3, 9, 0, 2, 7, 3], BigInt);
  return { inputs: [ids], data: [ids64], shapes: [[2, 4]], outputs: [probs, h.mean([1])], weights: [E, scale, bias] };
}

/** A symbolic batch dim flows through MatMul, LayerNorm, Gelu, Reshape(-1) and Softmax. */
function symbolicBatch(): Case {
  const rng = new w.Rng(3);
  const x = w.placeholder(['batch', 6], 'float32', 'x');
  const W = named(w.randn([6, 4], rng, 0.5), 'W');
  const s = named(w.ones([4]), 's');
  const h = x.matmul(W).layerNorm(s, null).gelu();
  const y = h.reshape([-1, 2]).softmax(-1).reshape([0, 2]);
  return { inputs: [x], data: [floats(5 * 6, rng)], shapes: [[5, 6]], outputs: [y, h.sum([1])], weights: [W, s] };
}

/** Forward and backward in one graph: embedding, Gemm, Gelu, LayerNorm, cross-entropy, grad(). */
function withBackward(): Case {
  const rng = new w.Rng(4);
  const ids = w.placeholder([6], 'int64', 'ids');
  const targets = w.placeholder([6], 'int64', 'targets');
  const E = named(w.randn([7, 5], rng, 0.5), 'embed');
  const W = named(w.randn([5, 5], rng, 0.5), 'W');
  const b = named(w.randn([5], rng, 0.1), 'b');
  const s = named(w.ones([5]), 'ln_scale');
  const U = named(w.randn([5, 7], rng, 0.5), 'U');
  const h = new w.Tensor(ops.gemm(E.gather(ids).value, W.value, b.value)).gelu().layerNorm(s, null);
  const loss = h.matmul(U).crossEntropy(targets);
  const grads = w.grad(loss, [E, W, b, s, U]);
  return {
    inputs: [ids, targets],
    data: [BigInt64Array.from([0, 1, 2, 1, 6, 3], BigInt), BigInt64Array.from([1, 2, 0, 6, 5, 1], BigInt)],
    shapes: [[6], [6]],
    outputs: [loss, ...grads],
    weights: [E, W, b, s, U],
  };
}

/** The ops every weft model is made of (as of this test), each at least once. */
const EVERY_OP = [
  'Abs', 'Add', 'Cast', 'Concat', 'ConstantOfShape', 'Div', 'Dropout', 'Equal', 'Erf', 'Exp', 'Expand', 'Gather',
  'GatherElements', 'Gemm', 'Greater', 'Identity', 'LayerNormalization', 'Less', 'Log', 'LogSoftmax', 'MatMul', 'Mul',
  'Neg', 'Pad', 'Pow', 'Reciprocal', 'ReduceMax', 'ReduceMean', 'ReduceSum', 'ReduceSumSquare', 'Relu', 'Reshape',
  'ScatterElements', 'Shape', 'Sigmoid', 'Sign', 'Slice', 'Softmax', 'Split', 'Sqrt', 'Squeeze', 'Sub', 'Sum', 'Tanh',
  'Transpose', 'Unsqueeze', 'Where',
];

/** One graph touching every op above, with a symbolic batch so Shape/Expand take the run-time path. */
function everyOp(): Case {
  const rng = new w.Rng(6);
  const a = ops.apply1;
  const x = w.placeholder(['batch', 4], 'float32', 'x');
  const ids = w.placeholder([3], 'int64', 'ids');
  const W = named(w.randn([4, 4], rng, 0.5), 'W');
  const E = named(w.randn([5, 4], rng, 0.5), 'E');
  const xv = x.value;
  const pos = ops.add(ops.mul(xv, xv), ops.scalar(0.5)); // > 0, for Log / Sqrt / Pow
  const u = ops.sum([ops.log(pos), ops.sqrt(pos), ops.pow(pos, ops.scalar(1.5)), ops.reciprocal(pos)]);
  const v = ops.sub(ops.div(ops.tanh(u), ops.add(ops.sigmoid(u), ops.scalar(1))), ops.mul(ops.sign(u), a('Abs', [u])));
  const e = ops.add(ops.erf(v), ops.exp(ops.neg(ops.relu(v))));
  const g = ops.gemm(ops.matmul(e, W.value), W.value, null, { transB: true, alpha: 0.5 });
  const [dropped] = ops.apply('Dropout', [g, ops.scalar(0.25), ops.constant(new Uint8Array([0]), 'bool', [])]);
  const ln = ops.layerNorm(dropped!, ops.constant(new Float32Array(4).fill(1), 'float32', [4]), null);
  const big = ops.where(ops.greater(ln, ops.scalar(0)), ln, ops.where(a('Less', [ln, ops.scalar(-1)]), ops.scalar(-1), ln));
  const eq = ops.cast(ops.equal(big, ops.scalar(-1)), 'float32');
  const soft = ops.add(ops.softmax(big, -1), ops.logSoftmax(eq, -1));
  const full = ops.expandLike(ops.reduceMax(soft, [1]), soft); // Shape + Expand on 'batch'
  const zeros = ops.zerosLike(soft); // ConstantOfShape from Shape
  const rows = ops.reduceMean(ops.add(ops.add(full, zeros), ops.reduceSumSquare(soft, [1])), [1], false); // [batch]
  const emb = ops.gather(E.value, ids.value); // [3, 4]
  const [l, r] = ops.split(emb, [1, 2], 0);
  const cat = ops.concat([r!, l!], 0);
  const t = ops.transpose(ops.reshape(cat, [2, 6]), [1, 0]); // [6, 2]
  const sl = ops.slice(ops.pad(t, [1, 0, 0, 1]), [0], [6], [0]); // [6, 3]
  const sq = ops.squeeze(ops.unsqueeze(sl, [0]), [0]);
  const idx = ops.constant(BigInt64Array.from([2, 0, 1, 1, 0, 2], BigInt), 'int64', [6, 1]);
  const picked = ops.gatherElements(sq, idx, 1); // [6, 1]
  const scattered = ops.scatterAdd(ops.identity(sq), idx, picked, 1);
  const total = ops.reduceSum(scattered, [0, 1], false);
  return {
    inputs: [x, ids],
    data: [floats(3 * 4, rng), BigInt64Array.from([4, 0, 2], BigInt)],
    shapes: [[3, 4], [3]],
    outputs: [new w.Tensor(rows), new w.Tensor(total), new w.Tensor(scattered)],
    weights: [W, E],
  };
}

const CASES: Record<string, () => Case> = { mlp, transformerish, symbolicBatch, withBackward, everyOp };

// ---------------------------------------------------------------------------------------------

describe('export', () => {
  for (const [name, make] of Object.entries(CASES)) {
    test(`${name}: passes onnx.checker full_check`, needsPython, () => {
      checkModel(exportCase(make()), name);
    });

    test(`${name}: onnxruntime on the exported model matches realize()`, async () => {
      const c = make();
      const bytes = exportCase(c);
      const fromFile = await runOrt(writeModel(bytes, name), feedsOf(c));
      const mine = await realizeCase(c);
      assert.equal(fromFile.length, mine.length);
      mine.forEach((m, i) => assertClose(fromFile[i]!, m, `${name} output ${i}`));
    });
  }

  test('the every-op graph exports each op it names', () => {
    const seq = new Set(opsOf(exportCase(everyOp())));
    assert.deepEqual(EVERY_OP.filter((op) => !seq.has(op)), []);
  });

  test('the backward graph exports the ops its gradient rules build', () => {
    const seq = opsOf(exportCase(withBackward()));
    for (const op of ['Gather', 'Gemm', 'Erf', 'LayerNormalization', 'LogSoftmax', 'GatherElements', 'ScatterElements', 'ConstantOfShape']) {
      assert.ok(seq.includes(op), `expected ${op} in ${seq.join(' ')}`);
    }
    assert.ok(!seq.includes('Gelu'), 'Gelu is not an opset-17 op and must be lowered');
  });

  test('the symbolic dim is kept as dim_param in the model inputs', needsPython, () => {
    const path = writeModel(exportCase(symbolicBatch()), 'symbolic');
    const dims = execFileSync(PY, ['-c',
      'import onnx,sys; m=onnx.load(sys.argv[1]); print([d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim])',
      path]).toString().trim();
    assert.equal(dims, "['batch', 6]");
  });

  test('a user name that looks like a generated one does not collide', needsPython, async () => {
    const x = w.placeholder([3], 'float32');
    const mid = x.relu();
    const y = mid.exp();
    // Name the input what the intermediate value would be called by default.
    const bytes = w.toModelProto({ inputs: [x.value], inputNames: [`v${mid.value.id}`], outputs: [y.value, y.value, x.value] });
    checkModel(bytes, 'collide');
    const out = await runOrt(bytes, { [`v${mid.value.id}`]: new ort.Tensor('float32', new Float32Array([-1, 0, 2]), [3]) });
    assertClose(out[0]!, new Float32Array([1, 1, Math.exp(2)]), 'y');
    assertClose(out[1]!, out[0]!, 'repeated output');
    assertClose(out[2]!, new Float32Array([-1, 0, 2]), 'input as output');
  });

  test('a leaf that is neither input, weight nor constant is an export error', () => {
    const x = w.placeholder([2], 'float32', 'x');
    const stray = w.placeholder([2], 'float32', 'stray');
    assert.throws(() => w.toModelProto({ inputs: [x.value], outputs: [x.add(stray).value] }), /stray.*neither a graph input nor a constant/);
  });
});

describe('round trip', () => {
  for (const [name, make] of Object.entries(CASES)) {
    test(`${name}: export -> import -> export keeps the op sequence and the outputs`, async () => {
      const c = make();
      const first = exportCase(c);
      const m = w.fromModelProto(first, name);
      assert.deepEqual(m.inputs.map((v) => v.name), c.inputs.map((t) => t.value.name));
      assert.deepEqual(m.inputs.map((v) => v.shape), c.inputs.map((t) => t.shape));
      assert.deepEqual(m.outputs.map((v) => [v.dtype, v.shape.length]), c.outputs.map((t) => [t.dtype, t.shape.length]));
      for (const t of c.weights) assert.ok(m.initializers.has(t.value.name!), `weight ${t.value.name} is an initializer`);
      const second = toModel(m.inputs, m.outputs, [...m.initializers.values()]);
      assert.deepEqual(opsOf(second), opsOf(first));

      const feeds = feedsOf(c);
      const [a, b] = [await runOrt(first, feeds), await runOrt(second, feeds)];
      a.forEach((x, i) => assertClose(b[i]!, x, `${name} re-exported output ${i}`, 1e-6, 1e-6));

      // The imported IR computes through weft's own runtime, too.
      const p = await w.compileProgram(m.outputs, m.inputs);
      const mine = await w.runProgram(p, 'onnx-test', c.data.map((data, i) => ({ data, shape: c.shapes[i]! })));
      a.forEach((x, i) => assertClose(mine[i]!, x, `${name} imported output ${i}`));
    });

    test(`${name}: the re-exported model passes the checker`, needsPython, () => {
      const m = w.fromModelProto(exportCase(make()), name);
      checkModel(toModel(m.inputs, m.outputs, [...m.initializers.values()]), `${name}-again`);
    });
  }
});

/** Builds a model with onnx.helper: a Constant node, raw and typed initializers, int/float/ints/string attributes. */
const HELPER_MODEL = `
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
inits = [
    numpy_helper.from_array(f32(10, 4), 'E'),                                           # raw_data
    helper.make_tensor('ln_scale', TensorProto.FLOAT, [4], [1.0, 0.5, 2.0, 1.5]),      # float_data
    helper.make_tensor('ln_bias', TensorProto.FLOAT, [4], [0.1, -0.1, 0.0, 0.2]),
    numpy_helper.from_array(f32(6, 4), 'W'),
    numpy_helper.from_array(f32(6), 'C'),
    helper.make_tensor('pads', TensorProto.INT64, [6], [0, 0, 1, 0, 0, 1]),            # int64_data
    helper.make_tensor('flat', TensorProto.INT64, [2], [-1, 4]),
    numpy_helper.from_array(np.array([0], dtype=np.int64), 'starts'),
    numpy_helper.from_array(np.array([5], dtype=np.int64), 'ends'),
    numpy_helper.from_array(np.array([1], dtype=np.int64), 'axes1'),
]
nodes = [
    helper.make_node('Gather', ['E', 'ids'], ['emb'], name='embed', axis=0),                               # int
    helper.make_node('Transpose', ['X'], ['xt'], name='t1', perm=[0, 2, 1]),                                 # ints
    helper.make_node('Pad', ['xt', 'pads'], ['xp'], name='pad', mode='reflect'),                             # string
    helper.make_node('Transpose', ['xp'], ['xq'], name='t2', perm=[0, 2, 1]),
    helper.make_node('Add', ['xq', 'emb'], ['s'], name='add'),
    helper.make_node('LayerNormalization', ['s', 'ln_scale', 'ln_bias'], ['ln'], name='ln', axis=-1, epsilon=1e-3),  # float
    helper.make_node('Reshape', ['ln', 'flat'], ['r'], name='flatten'),
    helper.make_node('Gemm', ['r', 'W', 'C'], ['g'], name='proj', alpha=0.5, transB=1),
    helper.make_node('Constant', [], ['k'], name='k', value=helper.make_tensor('kv', TensorProto.FLOAT, [6], [1, 2, 3, -1, 0.5, 0.25])),
    helper.make_node('Mul', ['g', 'k'], ['gk'], name='scale'),
    helper.make_node('Softmax', ['gk'], ['sm'], name='softmax', axis=1),
    helper.make_node('ReduceMean', ['sm'], ['mean'], name='mean', axes=[1], keepdims=1),
    helper.make_node('Slice', ['sm', 'starts', 'ends', 'axes1'], ['head'], name='head'),
    helper.make_node('Concat', ['head', 'mean'], ['cat'], name='cat', axis=1),
    helper.make_node('Tanh', ['cat'], ['Y'], name='tanh'),
    helper.make_node('Cast', ['ids'], ['idsf'], name='cast', to=TensorProto.FLOAT),
    helper.make_node('ReduceSum', ['idsf'], ['Z'], name='rsum', keepdims=0),
]
z = helper.make_tensor_value_info('Z', TensorProto.FLOAT, [])
z.type.tensor_type.shape.SetInParent()  # a scalar: shape present, with no dims
graph = helper.make_graph(
    nodes, 'helper_graph',
    [helper.make_tensor_value_info('X', TensorProto.FLOAT, ['N', 3, 4]),
     helper.make_tensor_value_info('ids', TensorProto.INT64, ['N', 5])],
    [helper.make_tensor_value_info('Y', TensorProto.FLOAT, ['M', 6]), z],
    inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], producer_name='onnx.helper')
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, sys.argv[1])
`;

describe('import', () => {
  test('a model written by onnx.helper imports and computes what onnxruntime computes from the file', needsPython, async () => {
    const path = join(dir, 'helper.onnx');
    execFileSync(PY, ['-c', HELPER_MODEL, path], { stdio: 'pipe' });
    const m = w.fromModelProto(new Uint8Array(readFileSync(path)), 'helper.onnx');

    assert.equal(m.opset, 17);
    assert.deepEqual(m.inputs.map((v) => `${v.name}:${v.toString()}`), ['X:float32[N, 3, 4]', 'ids:int64[N, 5]']);
    assert.deepEqual(m.outputs.map((v) => v.toString()), ['float32[5*N, 6]', 'float32[]']);
    assert.deepEqual([...m.initializers.keys()].sort(), ['C', 'E', 'W', 'ln_bias', 'ln_scale']);

    const n = 2;
    const rng = new w.Rng(5);
    const X = floats(n * 3 * 4, rng);
    const ids = BigInt64Array.from([0, 9, 3, 3, 1, 2, 8, 7, 4, 5], BigInt);
    const expected = await runOrt(path, {
      X: new ort.Tensor('float32', X, [n, 3, 4]),
      ids: new ort.Tensor('int64', ids, [n, 5]),
    });
    const p = await w.compileProgram(m.outputs, m.inputs);
    const got = await w.runProgram(p, 'onnx-test', [{ data: X, shape: [n, 3, 4] }, { data: ids, shape: [n, 5] }]);
    assertClose(got[0]!, expected[0]!, 'Y');
    assertClose(got[1]!, expected[1]!, 'Z');
    assert.equal(got[1]![0], 42);

    // Attributes survived with their kinds: re-exported, the model still passes the checker.
    const again = toModel(m.inputs, m.outputs, [...m.initializers.values()]);
    checkModel(again, 'helper-again');
    const rerun = await runOrt(again, { X: new ort.Tensor('float32', X, [n, 3, 4]), ids: new ort.Tensor('int64', ids, [n, 5]) });
    assertClose(rerun[0]!, expected[0]!, 'Y re-exported');
  });

  test('Constant value_float / value_ints forms and float16 bits in int32_data import', needsPython, async () => {
    const path = join(dir, 'constants.onnx');
    execFileSync(PY, ['-c', `
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper
h = helper.make_tensor('H', TensorProto.FLOAT16, [3], np.array([0.5, -1.25, 3.0], dtype=np.float16))
assert len(h.int32_data) == 3 and not h.raw_data
nodes = [
    helper.make_node('Constant', [], ['two'], value_float=2.0),
    helper.make_node('Constant', [], ['shp'], value_ints=[2, 3]),
    helper.make_node('Reshape', ['X', 'shp'], ['x2']),
    helper.make_node('Mul', ['x2', 'two'], ['m']),
    helper.make_node('Cast', ['H'], ['h32'], to=TensorProto.FLOAT),
    helper.make_node('Add', ['m', 'h32'], ['Y']),
]
g = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('X', TensorProto.FLOAT, [6])],
                      [helper.make_tensor_value_info('Y', TensorProto.FLOAT, [2, 3])], [h])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, sys.argv[1])
`, path], { stdio: 'pipe' });
    const m = w.fromModelProto(new Uint8Array(readFileSync(path)), 'constants.onnx');
    assert.deepEqual(m.outputs[0]!.shape, [2, 3]);
    const X = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const expected = await runOrt(path, { X: new ort.Tensor('float32', X, [6]) });
    assertClose(expected[0]!, Float32Array.from([2.5, 2.75, 9, 8.5, 8.75, 15]), 'onnxruntime');
    const got = await w.runProgram(await w.compileProgram(m.outputs, m.inputs), 'onnx-test', [{ data: X }]);
    assertClose(got[0]!, expected[0]!, 'weft');
  });

  test('attribute kinds read back as written', () => {
    const x = w.placeholder([2, 3, 4], 'float32', 'x');
    const t = new w.Tensor(ops.apply1('Transpose', [x.value], { perm: [2, 0, 1] }));
    const g = new w.Tensor(ops.gemm(t.reshape([4, 6]).value, ops.constant(new Float32Array(30).fill(1), 'float32', [5, 6]), null, { transB: true, alpha: 0.25 }));
    const p = new w.Tensor(ops.apply1('Pad', [g.value, ops.ints([0, 1, 0, 1])], { mode: 'reflect' }));
    const m = w.fromModelProto(w.toModelProto({ inputs: [x.value], outputs: [p.value] }));
    const nodes: { op: string; attrs: Record<string, unknown> }[] = [];
    const seen = new Set<unknown>();
    const visit = (v: Value | null): void => {
      if (v === null || v.node === null || seen.has(v.node)) return;
      seen.add(v.node);
      v.node.inputs.forEach(visit);
      nodes.push({ op: v.node.op, attrs: { ...v.node.attrs } });
    };
    m.outputs.forEach(visit);
    assert.deepEqual(nodes.find((n) => n.op === 'Transpose')!.attrs, { perm: [2, 0, 1] });
    assert.deepEqual(nodes.find((n) => n.op === 'Gemm')!.attrs, { transB: 1, alpha: 0.25 });
    assert.deepEqual(nodes.find((n) => n.op === 'Pad')!.attrs, { mode: 'reflect' });
    assert.deepEqual(m.outputs[0]!.shape, [4, 7]);
  });

  for (const op of ['Einsum', 'NonMaxSuppression']) {
    test(`an unknown op (${op}) is an OnnxImportError naming the op and the node`, needsPython, () => {
      const path = join(dir, `${op}.onnx`);
      const script = `
import sys
from onnx import TensorProto, helper
op = sys.argv[2]
if op == 'Einsum':
    node = helper.make_node('Einsum', ['A', 'B'], ['Y'], name='contract_ab', equation='ij,jk->ik')
    ins = [helper.make_tensor_value_info('A', TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info('B', TensorProto.FLOAT, [3, 4])]
else:
    node = helper.make_node('NonMaxSuppression', ['A', 'B'], ['Y'], name='nms_boxes')
    ins = [helper.make_tensor_value_info('A', TensorProto.FLOAT, [1, 6, 4]), helper.make_tensor_value_info('B', TensorProto.FLOAT, [1, 1, 6])]
relu = helper.make_node('Relu', ['A'], ['R'], name='first')
g = helper.make_graph([relu, node], 'g', ins, [helper.make_tensor_value_info('Y', TensorProto.FLOAT, None)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
m.ir_version = 8
open(sys.argv[1], 'wb').write(m.SerializeToString())
`;
      execFileSync(PY, ['-c', script, path, op], { stdio: 'pipe' });
      const bytes = new Uint8Array(readFileSync(path));
      const name = op === 'Einsum' ? 'contract_ab' : 'nms_boxes';
      assert.throws(() => w.fromModelProto(bytes, `${op}.onnx`), (e: unknown) => {
        assert.ok(e instanceof w.OnnxImportError, `expected OnnxImportError, got ${String(e)}`);
        assert.match(e.message, new RegExp(`'${op}' is not supported`));
        assert.match(e.message, new RegExp(`node 1 '${name}'`));
        assert.match(e.message, /^\S+\.onnx: /);
        return true;
      });
    });
  }
});
