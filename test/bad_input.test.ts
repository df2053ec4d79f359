/**
 * Bad input: malformed ONNX never crashes the process and always throws OnnxImportError with a
 * message that says what is wrong and where; trace-time shape, dtype, attribute and arity errors
 * name the op and the shapes / dtypes involved.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as w from '../src/index.js';
import type { Value } from '../src/index.js';
import { Writer } from '../src/ir/onnx/wire.js';

const { ops } = w;

/** Asserts `f` throws an OnnxImportError whose message matches every pattern. */
function importFails(bytes: Uint8Array, ...patterns: RegExp[]): string {
  let message = '';
  assert.throws(() => w.fromModelProto(bytes, 'bad.onnx'), (e: unknown) => {
    assert.ok(e instanceof w.OnnxImportError, `expected OnnxImportError, got ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}`);
    message = e.message;
    assert.match(message, /^bad\.onnx: /, 'the message starts with the source');
    for (const p of patterns) assert.match(message, p);
    return true;
  });
  return message;
}

/** Asserts `f` throws (at trace time) an Error whose message matches every pattern. */
function traceFails(f: () => unknown, ...patterns: RegExp[]): string {
  let message = '';
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof Error, `expected an Error, got ${String(e)}`);
    message = e.message;
    for (const p of patterns) assert.match(message, p);
    return true;
  });
  return message;
}

// ---------------------------------------------------------------------------------------------
// A tiny ModelProto writer, so each test states exactly the bytes it feeds the importer.

interface TensorSpec { name: string; dims: number[]; type: number; raw?: Uint8Array; floats?: number[]; int64s?: number[] }
interface NodeSpec { op: string; inputs: string[]; outputs: string[]; name?: string; domain?: string; attrs?: ((w: Writer) => void)[] }
interface ValueSpec { name: string; type?: number; dims?: (number | string)[] }
interface ModelSpec { opset?: number; nodes?: NodeSpec[]; initializers?: TensorSpec[]; inputs?: ValueSpec[]; outputs?: ValueSpec[]; noOpset?: boolean }

function writeTensor(tw: Writer, t: TensorSpec): void {
  for (const d of t.dims) tw.int(1, d);
  tw.int(2, t.type);
  if (t.floats) tw.packedFloats(4, t.floats);
  if (t.int64s) tw.packedInts(7, t.int64s);
  tw.string(8, t.name);
  if (t.raw) tw.bytes(9, t.raw);
}

function writeValue(vw: Writer, v: ValueSpec): void {
  vw.string(1, v.name);
  vw.message(2, (tp) => tp.message(1, (tt) => {
    tt.int(1, v.type ?? 1);
    tt.message(2, (s) => { for (const d of v.dims ?? []) s.message(1, (dw) => (typeof d === 'number' ? dw.int(1, d) : dw.string(2, d))); });
  }));
}

function model(spec: ModelSpec): Uint8Array {
  const m = new Writer();
  m.int(1, 8);
  m.message(7, (g) => {
    for (const n of spec.nodes ?? []) {
      g.message(1, (nw) => {
        for (const i of n.inputs) nw.string(1, i);
        for (const o of n.outputs) nw.string(2, o);
        if (n.name) nw.string(3, n.name);
        nw.string(4, n.op);
        for (const a of n.attrs ?? []) nw.message(5, a);
        if (n.domain) nw.string(7, n.domain);
      });
    }
    g.string(2, 'g');
    for (const t of spec.initializers ?? []) g.message(5, (tw) => writeTensor(tw, t));
    for (const v of spec.inputs ?? []) g.message(11, (vw) => writeValue(vw, v));
    for (const v of spec.outputs ?? []) g.message(12, (vw) => writeValue(vw, v));
  });
  if (!spec.noOpset) m.message(8, (o) => { o.string(1, ''); o.int(2, spec.opset ?? 17); });
  return m.finish();
}

const intAttr = (name: string, v: number) => (a: Writer): void => { a.string(1, name); a.int(20, 2); a.int(3, v); };
const floatAttr = (name: string, v: number) => (a: Writer): void => { a.string(1, name); a.int(20, 1); a.float(2, v); };

/** A valid model: Y = Softmax(Relu(X) @ W + b), W and b initializers. */
function goodModel(): Uint8Array {
  const x = w.placeholder(['batch', 4], 'float32', 'X');
  const W = w.tensor(new Float32Array(12).map((_, i) => i / 12), [4, 3]);
  W.value.name = 'W';
  const b = w.tensor([0.5, -0.5, 0.25]);
  b.value.name = 'b';
  const y = x.relu().matmul(W).add(b).softmax(-1);
  return w.toModelProto({ inputs: [x.value], outputs: [y.value], initializers: [W.value, b.value], outputNames: ['Y'] });
}

/** Deterministic bytes (xorshift), so failures reproduce. */
function randomBytes(n: number, seed: number): Uint8Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('malformed ONNX', () => {
  test('the reference model imports (so the failures below are the corruption\'s)', () => {
    const m = w.fromModelProto(goodModel(), 'good.onnx');
    assert.deepEqual(m.outputs.map((v) => v.toString()), ['float32[batch, 3]']);
  });

  test('an empty buffer', () => {
    importFails(new Uint8Array(0), /no graph \(ModelProto field 7\)/);
  });

  test('random bytes, many seeds and lengths', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const bytes = randomBytes(1 + ((seed * 37) % 700), seed);
      importFails(bytes, /\S/);
    }
  });

  test('a text file is not mistaken for a model', () => {
    importFails(new TextEncoder().encode('ir_version: 8\ngraph { node { op_type: "Relu" } }\n'), /not a valid ONNX protobuf|no graph|opset/);
  });

  test('a valid model truncated at many points', () => {
    const good = goodModel();
    const cuts = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, good.length >> 2, good.length >> 1, (3 * good.length) >> 2, good.length - 9, good.length - 2, good.length - 1];
    for (const cut of cuts) {
      importFails(good.subarray(0, cut), /truncated|claims \d+ bytes, \d+ remain|no graph|opset -1 is not supported/);
    }
    // Every single cut point, with nothing asserted but the error type.
    for (let cut = 0; cut < good.length; cut++) importFails(good.subarray(0, cut));
  });

  test('a length prefix that claims more bytes than remain', () => {
    // Field 7 (graph), wire type 2, length 300 (varint ac 02), then 3 bytes.
    importFails(new Uint8Array([0x08, 0x08, 0x3a, 0xac, 0x02, 1, 2, 3]), /not a valid ONNX protobuf/, /field 7 claims 300 bytes, 3 remain/);
    // The same lie, nested inside an otherwise valid graph: an initializer claiming 2^31 bytes.
    const g = new Writer();
    g.string(2, 'g');
    const graph = g.finish();
    const lie = new Uint8Array([...graph, 0x2a, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00]);
    const m = new Writer();
    m.int(1, 8);
    m.bytes(7, lie);
    m.message(8, (o) => o.int(2, 17));
    importFails(m.finish(), /graph/, /field 5 claims 2147483648 bytes, 1 remain/);
  });

  test('a varint that never ends, and one longer than 10 bytes', () => {
    importFails(new Uint8Array([0x08, 0xff, 0xff, 0xff]), /truncated varint at byte 4/);
    importFails(new Uint8Array([0x08, ...new Array<number>(11).fill(0xff), 0x01]), /varint longer than 10 bytes/);
  });

  test('wire types 3, 4, 6 and 7 are rejected', () => {
    for (const wire of [3, 4, 6, 7]) importFails(new Uint8Array([(7 << 3) | wire, 0, 0, 0, 0]), new RegExp(`unsupported wire type ${wire} for field 7`));
  });

  test('a tensor whose raw_data length disagrees with its dims', () => {
    const spec: ModelSpec = {
      initializers: [{ name: 'W', dims: [2, 3], type: 1, raw: new Uint8Array(20) }],
      nodes: [{ op: 'Relu', inputs: ['W'], outputs: ['Y'] }],
      outputs: [{ name: 'Y', dims: [2, 3] }],
    };
    importFails(model(spec), /initializer 'W'/, /raw_data has 20 bytes/, /\[2, 3\] of float32 needs 24/);
    // Too many bytes is as wrong as too few.
    spec.initializers![0]!.raw = new Uint8Array(28);
    importFails(model(spec), /'W'.*raw_data has 28 bytes.*needs 24/);
  });

  test('a typed-field tensor with the wrong number of values', () => {
    importFails(model({
      initializers: [{ name: 'b', dims: [4], type: 1, floats: [1, 2, 3] }],
      nodes: [{ op: 'Relu', inputs: ['b'], outputs: ['Y'] }],
      outputs: [{ name: 'Y', dims: [4] }],
    }), /'b'.*holds 3 values, shape \[4\] needs 4/);
  });

  test('a tensor claiming huge dims with no data fails fast, without allocating', () => {
    for (const dims of [[1 << 30, 1 << 30], [100000, 100000], [2 ** 31]]) {
      importFails(model({
        initializers: [{ name: 'big', dims, type: 1 }],
        nodes: [{ op: 'Relu', inputs: ['big'], outputs: ['Y'] }],
        outputs: [{ name: 'Y', dims }],
      }), /'big'/, /holds 0 values|too large/);
    }
  });

  test('a negative dim, an unknown element type', () => {
    importFails(model({
      initializers: [{ name: 'n', dims: [2, -3], type: 1 }],
      outputs: [{ name: 'n', dims: [2] }],
    }), /'n': negative dim in \[2, -3\]/);
    importFails(model({
      initializers: [{ name: 's', dims: [1], type: 8, raw: new Uint8Array(1) }], // STRING
      outputs: [{ name: 's', dims: [1] }],
    }), /'s'.*element type 8 is not supported/);
    importFails(model({
      inputs: [{ name: 'X', type: 14, dims: [2] }], // COMPLEX128
      outputs: [{ name: 'X', dims: [2] }],
    }), /input 'X'.*element type 14 is not supported/);
  });

  test('opset 9, opset 18 and a missing opset_import', () => {
    const spec: ModelSpec = { inputs: [{ name: 'X', dims: [2] }], nodes: [{ op: 'Relu', inputs: ['X'], outputs: ['Y'] }], outputs: [{ name: 'Y', dims: [2] }] };
    importFails(model({ ...spec, opset: 9 }), /default-domain opset 9 is not supported \(weft reads opset 13\.\.17\)/);
    importFails(model({ ...spec, opset: 18 }), /opset 18 is not supported/);
    importFails(model({ ...spec, noOpset: true }), /opset -1 is not supported/);
    assert.equal(w.fromModelProto(model(spec)).opset, 17);
  });

  test('a node input that no node, input or initializer defines', () => {
    importFails(model({
      inputs: [{ name: 'X', dims: [2] }],
      nodes: [{ op: 'Add', inputs: ['X', 'ghost'], outputs: ['Y'], name: 'adder' }],
      outputs: [{ name: 'Y', dims: [2] }],
    }), /node 0 'adder' \(Add\): input 'ghost' is not defined before this node/);
  });

  test('nodes out of topological order', () => {
    importFails(model({
      inputs: [{ name: 'X', dims: [2] }],
      nodes: [
        { op: 'Relu', inputs: ['H'], outputs: ['Y'], name: 'second' },
        { op: 'Neg', inputs: ['X'], outputs: ['H'], name: 'first' },
      ],
      outputs: [{ name: 'Y', dims: [2] }],
    }), /node 0 'second' \(Relu\): input 'H' is not defined/);
  });

  test('a graph output no node produces', () => {
    importFails(model({ inputs: [{ name: 'X', dims: [2] }], outputs: [{ name: 'nowhere', dims: [2] }] }),
      /output 'nowhere' is produced by no node/);
  });

  test('an op from another domain', () => {
    importFails(model({
      inputs: [{ name: 'X', dims: [2] }],
      nodes: [{ op: 'FusedGemm', domain: 'com.microsoft', inputs: ['X'], outputs: ['Y'], name: 'fused' }],
      outputs: [{ name: 'Y', dims: [2] }],
    }), /'fused' \(FusedGemm\): op domain 'com\.microsoft' is not supported/);
  });

  test('an unknown op names the op and the node', () => {
    importFails(model({
      inputs: [{ name: 'X', dims: [2, 2] }],
      nodes: [{ op: 'Einsum', inputs: ['X', 'X'], outputs: ['Y'], name: 'contract' }],
      outputs: [{ name: 'Y', dims: [2, 2] }],
    }), /node 0 'contract' \(Einsum\): op 'Einsum' is not supported by weft \(known: .*MatMul/);
  });

  test('a shape error inside the file names the node, the op and both shapes', () => {
    importFails(model({
      inputs: [{ name: 'A', dims: [2, 5] }, { name: 'B', dims: [3, 4] }],
      nodes: [{ op: 'MatMul', inputs: ['A', 'B'], outputs: ['Y'], name: 'mm' }],
      outputs: [{ name: 'Y', dims: [2, 4] }],
    }), /node 0 'mm' \(MatMul\): MatMul: /, /\[2, 5\]/, /\[3, 4\]/);
  });

  test('attribute problems: unknown name, wrong kind, unsupported type', () => {
    const base = { inputs: [{ name: 'X', dims: [2, 3] }], outputs: [{ name: 'Y', dims: [2, 3] }] };
    importFails(model({ ...base, nodes: [{ op: 'Relu', inputs: ['X'], outputs: ['Y'], name: 'r', attrs: [intAttr('alpha', 1)] }] }),
      /'r' \(Relu\): Relu: unknown attribute 'alpha'/);
    importFails(model({ ...base, nodes: [{ op: 'Softmax', inputs: ['X'], outputs: ['Y'], name: 's', attrs: [floatAttr('axis', 1.5)] }] }),
      /'s' \(Softmax\): Softmax: attribute 'axis' must be int, got 1\.5/);
    const graphAttr = (a: Writer): void => { a.string(1, 'body'); a.int(20, 5); };
    importFails(model({ ...base, nodes: [{ op: 'Relu', inputs: ['X'], outputs: ['Y'], name: 'r', attrs: [graphAttr] }] }),
      /attribute 'body': attribute type 5 is not supported/);
    const noValue = (a: Writer): void => { a.string(1, 'axis'); a.int(20, 2); };
    importFails(model({ ...base, nodes: [{ op: 'Softmax', inputs: ['X'], outputs: ['Y'], attrs: [noValue] }] }),
      /'axis': INT without a value/);
    // A FLOAT attribute whose value arrives with the wrong wire type.
    const wrongWire = (a: Writer): void => { a.string(1, 'epsilon'); a.int(20, 1); a.int(2, 7); };
    importFails(model({ ...base, nodes: [{ op: 'Softmax', inputs: ['X'], outputs: ['Y'], attrs: [wrongWire] }] }),
      /not a valid ONNX protobuf: .*'epsilon': field 2 should be a 32-bit float \(wire type 5\), got wire type 0/);
  });

  test('wrong arity and too many outputs', () => {
    const base = { inputs: [{ name: 'X', dims: [2] }], outputs: [{ name: 'Y', dims: [2] }] };
    importFails(model({ ...base, nodes: [{ op: 'Add', inputs: ['X'], outputs: ['Y'], name: 'half' }] }),
      /'half' \(Add\): Add: expected 2 inputs \(A, B\), got 1/);
    importFails(model({ ...base, nodes: [{ op: 'Relu', inputs: ['X'], outputs: ['Y', 'Z'], name: 'two' }] }),
      /'two' \(Relu\): Relu: has at most 1 outputs, 2 requested/);
  });

  test('a Constant node without a value', () => {
    importFails(model({ nodes: [{ op: 'Constant', inputs: [], outputs: ['Y'], name: 'c' }], outputs: [{ name: 'Y', dims: [] }] }),
      /'c' \(Constant\)/);
  });

  test('byte-flip fuzzing a valid model: it imports or throws OnnxImportError, nothing else', () => {
    const good = goodModel();
    let ok = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const bad = good.slice();
      const r = randomBytes(8, seed);
      const flips = 1 + (r[0]! % 3);
      for (let k = 0; k < flips; k++) bad[((r[2 * k + 1]! << 8) | r[2 * k + 2]!) % bad.length] = r[7 - k]!;
      try {
        w.fromModelProto(bad, 'fuzz.onnx');
        ok++;
      } catch (e) {
        assert.ok(e instanceof w.OnnxImportError, `seed ${seed}: ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}`);
        assert.match(e.message, /^fuzz\.onnx: \S/);
      }
    }
    assert.ok(ok < 400, 'some corruptions must be caught');
  });
});

// ---------------------------------------------------------------------------------------------

describe('trace-time errors', () => {
  const p = (shape: (number | string)[], dtype: 'float32' | 'float64' | 'int64' = 'float32', name?: string): Value =>
    w.placeholder(shape, dtype, name).value;

  test('MatMul [2,5] x [3,4] names MatMul, both inputs and both shapes', () => {
    traceFails(() => ops.matmul(p([2, 5]), p([3, 4])),
      /^MatMul: /, /input 0 \(A\) of shape \[2, 5\]/, /input 1 \(B\) of shape \[3, 4\]/, /5.*3/);
  });

  test('MatMul of a scalar, and batch dims that do not broadcast', () => {
    traceFails(() => ops.matmul(p([]), p([3, 4])), /^MatMul: /, /rank >= 1/, /\[\]/, /\[3, 4\]/);
    traceFails(() => ops.matmul(p([2, 3, 4]), p([5, 4, 6])), /\[2, 3, 4\]/, /\[5, 4, 6\]/);
  });

  test('Add of [2,3] and [4] names both shapes', () => {
    traceFails(() => ops.add(p([2, 3]), p([4])), /\[2, 3\]/, /\[4\]/, /3 vs 4/);
  });

  test('Add of [2,3] and [4] names the op', () => {
    traceFails(() => ops.add(p([2, 3]), p([4])), /Add/);
  });

  test('Add of float32 and float64 names the op and both dtypes', () => {
    traceFails(() => ops.add(p([2, 3]), p([2, 3], 'float64')), /^Add: /, /float64/, /float32/);
  });

  test('Sub / Mul / Div / Where dtype and shape mismatches', () => {
    traceFails(() => ops.mul(p([2]), p([2], 'int64')), /^Mul: /, /int64/, /float32/);
    traceFails(() => ops.where(p([2]), p([2]), p([2])), /^Where: /, /condition/, /must be bool, got float32/);
    traceFails(() => ops.sum([p([2, 3]), p([3, 2])]), /\[2, 3\]/, /\[3, 2\]/);
  });

  test('Reshape to an incompatible shape', () => {
    traceFails(() => ops.reshape(p([2, 3]), [4, 2]), /^Reshape: /, /\[2, 3\]/, /\[4, 2\]/);
    traceFails(() => ops.reshape(p([2, 3]), [-1, -1]), /^Reshape: /, /more than one -1/);
    traceFails(() => ops.reshape(p([2, 3]), [4, -1]), /^Reshape: /, /\[2, 3\]/, /\[4, -1\]/);
    traceFails(() => ops.reshape(p(['batch', 3]), [4, -1]), /^Reshape: /, /\[batch, 3\]/, /\[4, -1\]/);
  });

  test('Concat mismatch: shapes off the axis, dtypes, axis out of range', () => {
    traceFails(() => ops.concat([p([2, 3]), p([3, 4])], 0), /^Concat: /, /\[2, 3\]/, /\[3, 4\]/, /outside axis 0/);
    traceFails(() => ops.concat([p([2, 3]), p([2, 3], 'float64')], 1), /^Concat: /, /float64/, /float32/);
    traceFails(() => ops.concat([p([2, 3]), p([2, 3])], 2), /^Concat: /, /axis 2 is out of range for rank 2/);
    traceFails(() => ops.concat([p([2, 3]), p([2])], 1), /^Concat: /, /\[2\]/, /\[2, 3\]/);
  });

  test('Gather with float indices', () => {
    traceFails(() => ops.gather(p([10, 3]), p([4])), /^Gather: /, /indices/, /must be int32 or int64, got float32/);
    traceFails(() => ops.gather(p([10, 3]), p([4], 'int64'), 2), /^Gather: /, /axis 2 is out of range for rank 2/);
  });

  test('an unknown attribute, an attribute of the wrong kind', () => {
    traceFails(() => ops.apply('Relu', [p([2])], { alpha: 1 }), /^Relu: unknown attribute 'alpha'$/);
    traceFails(() => ops.apply('Softmax', [p([2])], { axis: 1.5 }), /^Softmax: attribute 'axis' must be int, got 1\.5$/);
    traceFails(() => ops.apply('Transpose', [p([2, 3])], { perm: 'swap' }), /^Transpose: attribute 'perm' must be ints, got "swap"$/);
    traceFails(() => ops.apply('Concat', [p([2]), p([2])]), /^Concat: attribute 'axis' is required$/);
  });

  test('wrong arity', () => {
    traceFails(() => ops.apply('Add', [p([2])]), /^Add: expected 2 inputs \(A, B\), got 1$/);
    traceFails(() => ops.apply('Relu', [p([2]), p([2])]), /^Relu: expected 1 inputs \(X\), got 2$/);
    traceFails(() => ops.apply('Gemm', [p([2, 2])]), /^Gemm: expected 2\.\.3 inputs \(A, B, C\?\), got 1$/);
    traceFails(() => ops.apply('Concat', []), /^Concat: expected 1\.\.Infinity inputs/);
    traceFails(() => ops.apply('Relu', [p([2])], {}, 2), /^Relu: has at most 1 outputs, 2 requested$/);
  });

  test('an unknown op lists what weft knows', () => {
    traceFails(() => ops.apply('Einsum', [p([2])]), /op 'Einsum' is not supported by weft \(known: .*MatMul/);
  });

  test('other shape checks name the op and the shapes', () => {
    traceFails(() => ops.gemm(p([2, 3]), p([4, 5]), null), /^Gemm: /, /\[2, 3\]/, /\[4, 5\]/, /3 vs 4/);
    traceFails(() => ops.split(p([5]), [2, 2], 0), /^Split: /, /\[2, 2\] sum to 4/, /\[5\]/);
    traceFails(() => ops.transpose(p([5, 2]), [0, 0]), /^Transpose: /, /\[0, 0\]/, /\[5, 2\]/);
    traceFails(() => ops.layerNorm(p([2, 5]), p([4]), null), /^LayerNormalization: /, /\[4\]/, /\[2, 5\]/);
    traceFails(() => ops.softmax(p([5]), 3), /^Softmax: axis 3 is out of range for rank 1$/);
    traceFails(() => ops.squeeze(p([2, 3]), [0]), /^Squeeze: /, /axis 0/, /\[2, 3\]/);
    traceFails(() => ops.expand(p([2, 3]), [4, 3]), /^Expand: |\[2, 3\]/, /\[4, 3\]/);
    traceFails(() => ops.apply('Sqrt', [p([2], 'int64')]), /^Sqrt: /, /must be a float type, got int64/);
  });

  test('the Tensor API surfaces the same errors', () => {
    const a = w.placeholder([2, 5], 'float32', 'a');
    const b = w.placeholder([3, 4], 'float32', 'b');
    traceFails(() => a.matmul(b), /^MatMul: /, /\[2, 5\]/, /\[3, 4\]/);
    traceFails(() => w.tensor([1, 2, 3], [2, 2]), /3 elements do not fill shape \[2, 2\]/);
  });
});
