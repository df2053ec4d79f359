/**
 * deploy/protect.ts and `weft protect`: a protected model computes what the original does (bit for
 * bit with onnxruntime's optimizer off, to 1e-6 with it on, decoys and shuffling included), none of
 * its original names, doc strings or metadata are in its bytes, its interface stays (or is renamed
 * with a map back), what it cannot rename (a subgraph) is refused naming the node; an encrypted
 * protected model runs through `weft bench-infer --key-file`, and a wrong key or a flipped byte is
 * a clear error.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TypedArray } from '../src/ir/dtype.js';
import { decodeModel, encodeModel } from '../src/ir/onnx/model.js';
import type { OnnxModel } from '../src/ir/onnx/model.js';
import { readFields, Writer } from '../src/ir/onnx/wire.js';
import type { Field } from '../src/ir/onnx/wire.js';
import { protect } from '../src/deploy/protect.js';
import type { ProtectOptions, ProtectReport } from '../src/deploy/protect.js';
import { optimize } from '../src/deploy/optimize.js';
import { inferTypes } from '../src/deploy/passes/shapes.js';
import { quantize } from '../src/deploy/quantize.js';
import { exportRun } from '../src/deploy/export.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import type { Named } from '../src/runtime/ort.js';
import { cnnOnnx, gptOnnx, mlp, mlpOnnx, tinyCnn, tinyGpt, uniform } from './helpers/deploy_models.js';
import { attrs, GraphBuilder, values } from './helpers/onnx_build.js';
import { CLI } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-protect-'));
after(() => rmSync(dir, { recursive: true, force: true }));

type Feeds = Record<string, Named>;
const gptFeeds = (): Feeds => ({ idx: { dtype: 'int64', dims: [2, 8], data: BigInt64Array.from({ length: 16 }, (_, i) => BigInt((i * 37 + 5) % 256)) } });
const cnnFeeds = (): Feeds => ({ x: { dtype: 'float32', dims: [3, 1, 28, 28], data: uniform(3 * 784, 7) } });

/** One field of a message, as decodeModel keeps fields it does not model. */
function field(write: (w: Writer) => void): Field {
  const w = new Writer();
  write(w);
  return readFields(w.finish(), 'test field')[0]!;
}

/**
 * `bytes` with what real producers leave in a file: node names, doc strings on the model, the graph
 * and each node, metadata_props, a producer version and value_info for every intermediate.
 */
function decorated(bytes: Uint8Array): OnnxModel {
  const m = decodeModel(bytes);
  m.producer = 'secret-producer';
  m.extra.push(field((w) => w.string(3, 'producer-version-9')), field((w) => w.string(6, 'model doc: trained on private data')),
    field((w) => w.message(14, (p) => { p.string(1, 'author'); p.string(2, 'secret-author'); })));
  m.graph.name = 'secret_graph';
  m.graph.extra.push(field((w) => w.string(10, 'graph doc string')));
  // The first input as a ValueInfoProto with a doc string (kept raw by decodeModel).
  const graph = readFields(encodeModel(m), 'model').find((f) => f.field === 7)!.bytes;
  const input = readFields(graph, 'graph').find((f) => f.field === 11)!.bytes;
  const doc = new Writer();
  doc.string(3, 'input doc: feed secret tokens');
  m.graph.inputs[0] = { ...m.graph.inputs[0]!, raw: new Uint8Array([...input, ...doc.finish()]) };
  const io = new Set([...m.graph.inputs, ...m.graph.outputs].map((v) => v.name));
  m.graph.nodes.forEach((n, i) => {
    n.name = `layer${i}/${n.op.toLowerCase()}_node`;
    n.extra.push(field((w) => w.string(6, `node doc ${i}`)));
  });
  const types = inferTypes(m.graph, 17);
  for (const n of m.graph.nodes) {
    for (const o of n.outputs) {
      const t = types.get(o);
      if (o !== '' && !io.has(o) && t !== undefined && t.elemType !== 0) m.graph.valueInfo.push({ name: o, elemType: t.elemType, shape: null });
    }
  }
  return m;
}

/** Every name and descriptive string of `m` of 4+ characters that protect must not keep: not an interface name, op type, attribute name or domain. */
function secrets(m: OnnxModel): string[] {
  const g = m.graph;
  const inits = new Set(g.initializers.map((t) => t.name));
  const kept = [...g.inputs.filter((i) => !inits.has(i.name)).map((i) => i.name), ...g.outputs.map((o) => o.name),
    ...g.nodes.flatMap((n) => [n.op, n.domain, ...n.attrs.map((a) => a.name)]), ...m.opsets.map((o) => o.domain)];
  const all = [m.producer, g.name, ...g.initializers.map((t) => t.name), ...g.nodes.flatMap((n) => [n.name, ...n.inputs, ...n.outputs]), ...g.valueInfo.map((v) => v.name),
    ...[...m.extra, ...g.extra, ...g.nodes.flatMap((n) => n.extra)].flatMap(strings),
    ...[...g.inputs, ...g.outputs].flatMap((v) => (v.raw === undefined ? [] : readFields(v.raw, 'value_info').filter((f) => f.field === 3).flatMap(strings)))];
  return [...new Set(all)].filter((s) => s.length >= 4 && !kept.some((k) => k.includes(s)));
}

/** The printable strings inside a kept field (a doc string, or a metadata entry's key and value). */
function strings(f: Field): string[] {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(f.bytes);
  return text.split(/[^\x20-\x7e]+/).filter((s) => s.length > 0);
}

const contains = (bytes: Uint8Array, s: string): boolean => Buffer.from(bytes).includes(Buffer.from(s, 'utf8'));

async function run(bytes: Uint8Array, feeds: Feeds, optimization: 'disabled' | 'all'): Promise<TypedArray[]> {
  const s = await createInferenceSession(bytes, { threads: 1, optimization });
  try {
    const out = await s.run(feeds);
    return s.outputNames.map((n) => out[n]!.data);
  } finally { await s.release(); }
}

/** Largest |a - b| over the outputs, and whether every output is bit for bit the same. */
async function compare(a: Uint8Array, b: Uint8Array, feeds: Feeds, optimization: 'disabled' | 'all'): Promise<{ diff: number; bitwise: boolean }> {
  const [ya, yb] = [await run(a, feeds, optimization), await run(b, feeds, optimization)];
  let diff = 0;
  let bitwise = ya.length === yb.length;
  ya.forEach((x, k) => {
    const y = yb[k]!;
    assert.equal(y.length, x.length);
    for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(Number(x[i]!) - Number(y[i]!)));
    const [bx, by] = [new Uint8Array(x.buffer, x.byteOffset, x.byteLength), new Uint8Array(y.buffer, y.byteOffset, y.byteLength)];
    if (!Buffer.from(bx).equals(Buffer.from(by))) bitwise = false;
  });
  return { diff, bitwise };
}

/** Protects `m`, checks outputs (bitwise unoptimized, 1e-6 optimized) and that no secret survives; returns the result. */
async function protectedOk(m: OnnxModel, feeds: Feeds, o: ProtectOptions, what: string): Promise<{ bytes: Uint8Array; model: OnnxModel; report: ProtectReport }> {
  const before = encodeModel(m);
  const { model, report } = protect(m, o);
  assert.deepEqual(encodeModel(m), before, `${what}: the input model is not modified`);
  const bytes = encodeModel(model);
  assert.deepEqual(encodeModel(decodeModel(bytes)), bytes, `${what}: the protected model decodes and re-encodes to the same bytes`);
  const exact = await compare(before, bytes, feeds, 'disabled');
  assert.ok(exact.bitwise, `${what}: without onnxruntime's optimizer the outputs are bit for bit the same (max diff ${exact.diff})`);
  const opt = await compare(before, bytes, feeds, 'all');
  assert.ok(opt.diff <= 1e-6, `${what}: optimized outputs within 1e-6, got ${opt.diff}`);
  const names = secrets(m);
  assert.ok(names.length > 0 && names.every((s) => contains(before, s)), `${what}: every secret is in the original's bytes (the search can find them)`);
  const found = names.filter((s) => contains(bytes, s));
  assert.deepEqual(found, [], `${what}: original names in the protected bytes`);
  return { bytes, model, report };
}

test('protect: the GPT computes the same logits (bitwise unoptimized, 1e-6 optimized), under new names in another order, without doc strings or metadata', async () => {
  const m = decorated(gptOnnx(tinyGpt(1), 2, 8));
  const { model: p, report } = await protectedOk(m, gptFeeds(), { seed: 1 }, 'gpt');
  assert.equal(report.nodes, m.graph.nodes.length);
  assert.equal(report.nodesRenamed, m.graph.nodes.length);
  assert.equal(report.initializersRenamed, m.graph.initializers.length);
  assert.equal(report.valuesRenamed, new Set(m.graph.nodes.flatMap((n) => n.outputs)).size - 1, 'every node output but the graph output logits');
  assert.equal(report.valueInfoDropped, m.graph.valueInfo.length);
  assert.equal(report.fieldsStripped, 1 + 3 + 1 + 1 + m.graph.nodes.length, 'producer, 3 model fields, the graph doc, the input doc, one doc per node');
  assert.equal(p.graph.inputs[0]!.raw, undefined, 'without its doc string the input is a plain tensor value_info again');
  assert.deepEqual(p.graph.inputs[0]!.shape, [2, 8]);
  assert.ok(report.shuffled);
  const opsOf = (x: OnnxModel): string => x.graph.nodes.map((n) => n.op).join(' ');
  assert.notEqual(opsOf(p), opsOf(m), 'the node order differs');
  assert.deepEqual([...opsOf(p).split(' ')].sort(), [...opsOf(m).split(' ')].sort(), 'the same ops');
  assert.deepEqual([p.producer, p.extra, p.graph.extra, p.graph.valueInfo], ['', [], [], []]);
  assert.ok(p.graph.nodes.every((n) => n.extra.length === 0 && /^[a-z][a-z0-9]+$/.test(n.name)));
  assert.deepEqual(p.graph.inputs.map((i) => i.name), ['idx']);
  assert.deepEqual(p.graph.outputs.map((o) => o.name), ['logits']);
  // Seeded: the same seed gives the same file, another seed another one.
  assert.deepEqual(encodeModel(protect(m, { seed: 1 }).model), encodeModel(p));
  assert.notDeepEqual(encodeModel(protect(m, { seed: 2 }).model), encodeModel(p));
});

test('protect: decoys compute their input exactly; the GPT and the CNN with 40 decoys give the same outputs', async () => {
  for (const [what, bytes, feeds] of [['gpt', gptOnnx(tinyGpt(2), 2, 8), gptFeeds()], ['cnn', cnnOnnx(tinyCnn(1)), cnnFeeds()]] as const) {
    const m = decorated(bytes);
    const { model: p, report } = await protectedOk(m, feeds, { seed: 3, decoys: 40 }, `${what} + decoys`);
    assert.equal(report.decoys, 40);
    assert.equal(Object.values(report.decoyKinds).reduce((a, b) => a + b, 0), 40);
    const twoNodes = (report.decoyKinds['NegNeg'] ?? 0) + (report.decoyKinds['ReshapeShape'] ?? 0) + (report.decoyKinds['TransposePair'] ?? 0);
    assert.equal(p.graph.nodes.length, m.graph.nodes.length + 40 + twoNodes);
    const scalars = (report.decoyKinds['Mul'] ?? 0) + (report.decoyKinds['Sub'] ?? 0) + (report.decoyKinds['Div'] ?? 0);
    assert.equal(p.graph.initializers.length, m.graph.initializers.length + scalars, 'one constant per Mul/Sub/Div decoy, renamed like the rest');
  }
});

test('protect: decoys keep -0, NaN, infinities and subnormals bit for bit', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [8]);
  b.output(b.node('Neg', [x], { outputs: ['y'] }));
  const m = b.model();
  const specials = Float32Array.of(-0, 0, NaN, Infinity, -Infinity, 1e-45, -3.5, 2 ** 100);
  const feeds: Feeds = { x: { dtype: 'float32', dims: [8], data: specials } };
  const { model: p, report } = protect(m, { seed: 5, decoys: 60 });
  assert.equal(report.decoys, 60);
  assert.ok(Object.keys(report.decoyKinds).length >= 5, `several kinds: ${JSON.stringify(report.decoyKinds)}`);
  for (const o of ['disabled', 'all'] as const) {
    const got = (await run(encodeModel(p), feeds, o))[0] as Float32Array;
    const want = (await run(encodeModel(m), feeds, o))[0] as Float32Array;
    assert.deepEqual([...new Uint32Array(got.buffer, got.byteOffset, 8)], [...new Uint32Array(want.buffer, want.byteOffset, 8)], `optimization ${o}`);
    assert.ok(Object.is(got[1], -0), '-(+0) is -0');
  }
});

test('protect: a chain has one order (shuffled false); --no-shuffle keeps the order; the CNN and an MLP stay equal', async () => {
  const m = decorated(cnnOnnx(tinyCnn(3)));
  const { model: p, report } = await protectedOk(m, cnnFeeds(), { seed: 4 }, 'cnn');
  assert.equal(report.shuffled, false, 'the CNN is a chain');
  assert.deepEqual(p.graph.nodes.map((n) => n.op), m.graph.nodes.map((n) => n.op));
  const g = decorated(gptOnnx(tinyGpt(1), 2, 8));
  const kept = protect(g, { seed: 4, shuffle: false });
  assert.equal(kept.report.shuffled, false);
  assert.deepEqual(kept.model.graph.nodes.map((n) => n.op), g.graph.nodes.map((n) => n.op));
  const feeds: Feeds = { x: { dtype: 'float32', dims: [5, 12], data: uniform(60, 3) } };
  await protectedOk(decorated(mlpOnnx(mlp(12, 16, 4), 12)), feeds, { seed: 6, decoys: 5 }, 'mlp');
});

test('protect: com.microsoft ops (weft optimize fusions, dynamic int8) pass through and compute the same', async () => {
  const { model: fused } = await optimize(decodeModel(cnnOnnx(tinyCnn(2))), { ortFusions: true });
  assert.ok(fused.graph.nodes.some((n) => n.domain === 'com.microsoft'));
  await protectedOk(fused, cnnFeeds(), { seed: 8, decoys: 10 }, 'fused cnn');
  const { model: q } = quantize(decodeModel(mlpOnnx(mlp(64, 64, 8), 64)), { mode: 'dynamic', minWeights: 0 });
  assert.ok(q.graph.nodes.some((n) => n.domain === 'com.microsoft'), q.graph.nodes.map((n) => n.op).join(' '));
  await protectedOk(q, { x: { dtype: 'float32', dims: [3, 64], data: uniform(192, 9) } }, { seed: 9, decoys: 10 }, 'int8 mlp');
});

/** Feeds for every input of `m`: symbolic dims batch 2, seq/new 3, past 4; ids below 256, floats in [-1, 1). */
function feedsFor(m: OnnxModel): Feeds {
  const size: Record<string, number> = { batch: 2, seq: 3, new: 3, past: 4 };
  return Object.fromEntries(m.graph.inputs.map((v, k) => {
    const dims = v.shape!.map((d) => (typeof d === 'number' ? d : size[d!]!));
    const n = dims.reduce((p, q) => p * q, 1);
    const x: Named = v.elemType === 7
      ? { dtype: 'int64', dims, data: BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 31 + k) % 256)) }
      : { dtype: 'float32', dims, data: uniform(n, k + 1) };
    return [v.name, x];
  }));
}

test('protect on a trained run\'s weft export: the GPT logits and KV-cache step models compute the same with decoys', async () => {
  const run = join(dir, 'run');
  await new Trainer(parseConfig({
    out: run, model: { ctx: 16, d: 32, layers: 2, heads: 2 }, train: { steps: 2, batch: 2, lr: 3e-3, warmup: 0, threads: 1 },
    eval: { every: 2, windows: 1 }, checkpoint: { every: 2, keep: 1 }, sample: { tokens: 0 },
  }, 'protect test')).run({ out: null });
  const out = join(dir, 'exported', 'gpt.onnx');
  exportRun(run, { out });
  for (const file of [out, join(dir, 'exported', 'gpt.step.onnx')]) {
    const m = decodeModel(new Uint8Array(readFileSync(file)), file);
    const { report } = await protectedOk(m, feedsFor(m), { seed: 12, decoys: 25 }, file);
    assert.equal(report.decoys, 25);
    assert.ok(report.shuffled);
  }
});

test('protect --rename-io: the interface is renamed and the report maps it back', async () => {
  const bytes = gptOnnx(tinyGpt(1), 2, 8);
  const { model: p, report } = protect(decodeModel(bytes), { seed: 11, renameIo: true });
  const io = report.io!;
  assert.deepEqual(Object.keys(io.inputs), ['idx']);
  assert.deepEqual(Object.keys(io.outputs), ['logits']);
  const pb = encodeModel(p);
  assert.ok(!contains(pb, 'logits') && !contains(pb, 'idx'));
  assert.deepEqual(p.graph.inputs.map((i) => i.name), [io.inputs['idx']]);
  const s = await createInferenceSession(pb, { threads: 1 });
  const got = await s.run({ [io.inputs['idx']!]: gptFeeds()['idx']! });
  await s.release();
  const want = await run(bytes, gptFeeds(), 'all');
  assert.deepEqual(got[io.outputs['logits']!]!.data, want[0]);
  assert.equal(protect(decodeModel(bytes), { seed: 11 }).report.io, null);
});

/** The bytes of a GraphProto (encodeModel's graph field), for a subgraph attribute. */
function graphBytes(b: GraphBuilder): Uint8Array {
  return readFields(encodeModel(b.model()), 'model').find((f) => f.field === 7)!.bytes;
}

test('protect refuses a subgraph (If), naming the node; other unsupported fields name themselves', () => {
  const then = new GraphBuilder();
  then.output(then.node('Identity', ['a'], { outputs: ['t'] }));
  const b = new GraphBuilder();
  const x = b.input('x', [2]);
  const a = b.node('Relu', [x], { outputs: ['a'] });
  const c = b.node('ReduceSum', [a], { outputs: ['s'] });
  b.node('If', [c], { name: 'branch_on_sum', outputs: ['y'] });
  b.output('y');
  const m = b.model();
  const w = new Writer();
  w.string(1, 'then_branch');
  w.int(20, 5);
  w.bytes(6, graphBytes(then));
  m.graph.nodes[2]!.attrs.push({ name: 'then_branch', type: 5, value: null, raw: w.finish() });
  assert.throws(() => protect(m), /protect: node 2 \(If 'branch_on_sum'\) has a subgraph attribute 'then_branch'/);
  const plain = new GraphBuilder();
  plain.output(plain.node('Relu', [plain.input('x', [2])]));
  const fn = plain.model();
  fn.extra.push(field((x) => x.string(25, 'a function')));
  assert.throws(() => protect(fn), /model-local functions/);
  fn.extra = [field((x) => x.string(99, 'new field'))];
  assert.throws(() => protect(fn), /field 99, which protect does not know/);
  assert.throws(() => protect(plain.model(), { decoys: -1 }), /decoys must be a non-negative integer/);
  // A custom op naming a tensor in a string attribute would leak the name and break once renamed.
  const custom = new GraphBuilder();
  const h = custom.node('Relu', [custom.input('x', [2])], { outputs: ['hidden_value'] });
  custom.output(custom.node('Foo', [h], { domain: 'com.example', attrs: [attrs.string('ref', 'hidden_value')] }));
  assert.throws(() => protect(custom.model(17, [{ domain: 'com.example', version: 1 }])), /node 1 \(com\.example\.Foo 'Foo_1'\) attribute 'ref' holds 'hidden_value'/);
});

test('protect below IR version 4: an initializer listed as a graph input is a weight, renamed (not part of the interface)', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 3]);
  const wt = b.init('secret_weight', [3, 2], values(6, 1));
  b.inputs.push({ name: wt, elemType: 1, shape: [3, 2] });
  b.output(b.node('MatMul', [x, wt], { outputs: ['y'] }));
  const m = b.model(8);
  m.irVersion = 3;
  const { model: p, report } = await protectedOk(m, { x: { dtype: 'float32', dims: [2, 3], data: uniform(6, 2) } }, { seed: 13 }, 'ir 3');
  assert.equal(p.graph.inputs[0]!.name, 'x');
  assert.equal(p.graph.inputs[1]!.name, p.graph.initializers[0]!.name);
  assert.notEqual(p.graph.inputs[1]!.name, 'secret_weight');
  assert.equal(report.initializersRenamed, 1);
});

// --- the command ---

const weft = (...args: string[]): ReturnType<typeof spawnSync> => {
  const env = { ...process.env };
  delete env['WEFT_MODEL_KEY'];
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 60_000 });
};

test('weft keygen writes a 0600 key and refuses to overwrite; weft protect --encrypt runs through bench-infer --key-file; a wrong key or a flipped byte is a clear error', () => {
  const model = join(dir, 'mlp.onnx');
  writeFileSync(model, mlpOnnx(mlp(12, 16, 4), 12));
  const key = join(dir, 'model.key');
  const other = join(dir, 'other.key');
  let r = weft('keygen', key);
  assert.equal(r.status, 0, String(r.stderr));
  assert.equal(statSync(key).mode & 0o777, 0o600);
  const text = readFileSync(key, 'utf8');
  assert.match(text, /^[0-9a-f]{64}\n$/);
  r = weft('keygen', key);
  assert.notEqual(r.status, 0);
  assert.match(String(r.stderr), /model\.key already exists; not overwritten/);
  assert.equal(readFileSync(key, 'utf8'), text, 'the key is unchanged');
  assert.equal(weft('keygen', other).status, 0);

  const enc = join(dir, 'mlp.protected.onnx');
  r = weft('protect', model, enc, '--encrypt', '--seed', '3');
  assert.notEqual(r.status, 0);
  assert.match(String(r.stderr), /--encrypt needs a key: --key-file FILE or the environment variable WEFT_MODEL_KEY/);
  assert.ok(!existsSync(enc), 'nothing written without a key');

  r = weft('protect', model, enc, '--encrypt', '--key-file', key, '--decoys', '4', '--seed', '3');
  assert.equal(r.status, 0, String(r.stderr));
  const rep = JSON.parse(String(r.stdout)) as { encrypted: boolean; bytesIn: number; bytesOut: number; decoys: number; nodes: number };
  assert.equal(rep.encrypted, true);
  assert.equal(rep.decoys, 4);
  assert.equal(rep.bytesIn, statSync(model).size);
  assert.equal(rep.bytesOut, statSync(enc).size);
  const bytes = readFileSync(enc);
  assert.equal(bytes.subarray(0, 8).toString(), 'WEFTENC1');
  for (const s of secrets(decodeModel(new Uint8Array(readFileSync(model))))) assert.ok(!bytes.includes(Buffer.from(s)), s);

  const bench = (file: string, k: string): ReturnType<typeof spawnSync> => weft('bench-infer', file, '--key-file', k, '--batch', '2', '--threads', '1', '--runs', '1', '--blocks', '1', '--warmup', '0');
  r = bench(enc, key);
  assert.equal(r.status, 0, String(r.stderr));
  assert.equal((JSON.parse(String(r.stdout)) as { results: unknown[] }).results.length, 1);
  r = bench(enc, other);
  assert.notEqual(r.status, 0);
  assert.match(String(r.stderr), /mlp\.protected\.onnx: cannot decrypt it: the key is wrong or the file was modified/);
  const flipped = join(dir, 'flipped.onnx');
  const bad = Buffer.from(bytes);
  bad[Math.floor(bad.length / 2)]! ^= 0x04;
  writeFileSync(flipped, bad);
  r = bench(flipped, key);
  assert.notEqual(r.status, 0);
  assert.match(String(r.stderr), /flipped\.onnx: cannot decrypt it: the key is wrong or the file was modified/);

  // optimize and quantize read an encrypted model with --key-file too; without a key the error names the file and both ways to give one.
  const opt = join(dir, 'mlp.opt.onnx');
  r = weft('optimize', enc, opt, '--key-file', key, '--json');
  assert.equal(r.status, 0, String(r.stderr));
  assert.equal(decodeModel(new Uint8Array(readFileSync(opt))).graph.inputs[0]!.name, 'x');
  r = weft('quantize', enc, join(dir, 'mlp.int8.onnx'), '--key-file', other, '--min-weights', '0');
  assert.match(String(r.stderr), /mlp\.protected\.onnx: cannot decrypt it: the key is wrong/);
  r = weft('quantize', enc, join(dir, 'mlp.int8.onnx'), '--key-file', key, '--min-weights', '0', '--json');
  assert.equal(r.status, 0, String(r.stderr));
  r = weft('protect', enc, join(dir, 'nokey.onnx'));
  assert.match(String(r.stderr), /mlp\.protected\.onnx: the model is encrypted; give its key with --key-file FILE or the environment variable WEFT_MODEL_KEY/);
  assert.ok(!existsSync(join(dir, 'nokey.onnx')));

  // An encrypted input is read with its key; re-protected without --encrypt it is plain, with a note.
  const again = join(dir, 'again.onnx');
  r = weft('protect', enc, again, '--key-file', key, '--no-shuffle');
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stderr), /was encrypted and .*again\.onnx is not/);
  assert.equal((JSON.parse(String(r.stdout)) as { inputEncrypted: boolean }).inputEncrypted, true);
  assert.equal(decodeModel(new Uint8Array(readFileSync(again))).graph.inputs[0]!.name, 'x');
});
