/**
 * ir/onnx/model.ts: any ONNX file as data and back. A model onnx.helper writes with fields weft
 * does not model (doc strings, metadata, an op of another domain, a subgraph attribute) round-trips
 * to the same bytes' meaning, and weft's own exports re-encode byte for byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as w from '../src/index.js';
import { decodeModel, encodeModel, OnnxFormatError } from '../src/ir/onnx/model.js';
import { toModelProto } from '../src/ir/onnx/export.js';
import { checkModel, needsPython, python } from './helpers/onnx_check.js';

test("weft's export decodes and re-encodes to the same bytes", () => {
  const x = w.placeholder(['batch', 4], 'float32', 'x');
  const wt = w.tensor(Float32Array.from({ length: 12 }, (_, i) => i / 7), [4, 3]);
  const y = x.matmul(wt).relu().softmax(-1);
  const bytes = toModelProto({ inputs: [x.value], outputs: [y.value], initializers: [wt.value] });
  const m = decodeModel(bytes);
  assert.equal(m.graph.inputs[0]!.shape![0], 'batch');
  assert.deepEqual(m.graph.nodes.map((n) => n.op), ['MatMul', 'Relu', 'Softmax']);
  assert.deepEqual(encodeModel(m), bytes);
});

const PYMODEL = `
import onnx, sys
from onnx import helper as h, TensorProto as T
import numpy as np
then = h.make_graph([h.make_node('Identity', ['a'], ['t'])], 'then', [], [h.make_tensor_value_info('t', T.FLOAT, [2])])
els = h.make_graph([h.make_node('Neg', ['a'], ['e'])], 'else', [], [h.make_tensor_value_info('e', T.FLOAT, [2])])
nodes = [
  h.make_node('Relu', ['x'], ['a'], name='relu', doc_string='a doc string'),
  h.make_node('ReduceSum', ['a'], ['s'], keepdims=0),
  h.make_node('Greater', ['s', 'zero'], ['c']),
  h.make_node('If', ['c'], ['y'], then_branch=then, else_branch=els),
  h.make_node('FusedGemm', ['x2', 'w'], ['z'], domain='com.microsoft', activation='Relu', alpha=1.0),
]
g = h.make_graph(nodes, 'g', [h.make_tensor_value_info('x', T.FLOAT, [2]), h.make_tensor_value_info('x2', T.FLOAT, ['n', 2])],
  [h.make_tensor_value_info('y', T.FLOAT, [2]), h.make_tensor_value_info('z', T.FLOAT, ['n', 2])],
  [h.make_tensor('zero', T.FLOAT, [], [0.0]), h.make_tensor('w', T.FLOAT, [2, 2], [1, 2, 3, 4])])
m = h.make_model(g, opset_imports=[h.make_opsetid('', 17), h.make_opsetid('com.microsoft', 1)], producer_name='onnx.helper')
m.ir_version = 8
m.doc_string = 'model doc'
h.set_model_props(m, {'author': 'test'})
sys.stdout.buffer.write(m.SerializeToString())
`;

test('a model with fields weft does not model (doc strings, metadata, a subgraph, another domain) round-trips', needsPython, () => {
  const bytes = new Uint8Array(Buffer.from(python(`import base64,io,sys\nbuf=io.BytesIO()\nout=sys.stdout\nsys.stdout=type('W',(),{'buffer':buf})()\n${PYMODEL}\nsys.stdout=out\nprint(base64.b64encode(buf.getvalue()).decode())`).trim(), 'base64'));
  const m = decodeModel(bytes, 'helper.onnx');
  assert.equal(m.producer, 'onnx.helper');
  assert.deepEqual(m.opsets, [{ domain: '', version: 17 }, { domain: 'com.microsoft', version: 1 }]);
  const fused = m.graph.nodes.find((n) => n.op === 'FusedGemm')!;
  assert.equal(fused.domain, 'com.microsoft');
  assert.equal(m.graph.nodes.find((n) => n.op === 'If')!.attrs.every((a) => a.raw !== undefined), true);
  const again = encodeModel(m);
  assert.deepEqual(decodeModel(again), m);
  checkModel(again, 'roundtrip');
  // Python reads back what it wrote: the doc strings, metadata and both branches.
  const b64 = Buffer.from(again).toString('base64');
  const seen = python(`import onnx,base64,sys\nm=onnx.load_from_string(base64.b64decode(sys.argv[1]))\nprint(m.doc_string, m.metadata_props[0].value, m.graph.node[0].doc_string, *[a.g.node[0].op_type for a in sorted(m.graph.node[3].attribute, key=lambda a: a.name, reverse=True)])`, [b64]);
  assert.equal(seen.trim(), 'model doc test a doc string Identity Neg');
});

test('a file that is not an ONNX model is a clear error naming it', () => {
  assert.throws(() => decodeModel(new Uint8Array(0), 'empty.onnx'), (e: Error) => e instanceof OnnxFormatError && /empty\.onnx: the file is empty/.test(e.message));
  assert.throws(() => decodeModel(new TextEncoder().encode('hello, this is text'), 'text.onnx'), (e: Error) => e instanceof OnnxFormatError && /text\.onnx/.test(e.message));
  const x = w.placeholder([2], 'float32', 'x');
  const good = toModelProto({ inputs: [x.value], outputs: [x.relu().value] });
  assert.throws(() => decodeModel(good.subarray(0, good.length - 3), 'cut.onnx'), (e: Error) => e instanceof OnnxFormatError && /cut\.onnx/.test(e.message));
});
