import { test } from 'node:test';
import assert from 'node:assert/strict';
import { realize, setThreads, tensor } from '../src/index.js';
import { bindParameters, Dropout, GPT, GPT_PRESETS, Linear, loadStateDict, stateDict } from '../src/nn/index.js';

setThreads(1);

test('GPT parameter counts match the anchors (small 3,257,856; medium 25,482,240)', () => {
  for (const [preset, want] of [['small', 3_257_856], ['medium', 25_482_240]] as const) {
    const n = new GPT(GPT_PRESETS[preset]).namedParameters().reduce((s, [, p]) => s + p.shape.reduce((a, d) => a * d, 1), 0);
    assert.equal(n, want, preset);
  }
});

test('parameters are named by the module tree, in declaration order', () => {
  const names = new GPT({ vocab: 8, ctx: 4, d: 8, layers: 1, heads: 2 }).namedParameters().map(([n]) => n);
  assert.deepEqual(names.slice(0, 6), ['pos', 'tok.w', 'h0.ln1.w', 'h0.ln1.b', 'h0.attn.qkv.w', 'h0.attn.qkv.b']);
  assert.equal(names.at(-1), 'lnf.b');
});

test('bindParameters initializes from the seed: same seed same values, anchor init rules', () => {
  const cfg = { vocab: 16, ctx: 8, d: 8, layers: 1, heads: 2 };
  const a = bindParameters(new GPT(cfg), { seed: 3 });
  const b = bindParameters(new GPT(cfg), { seed: 3 });
  const c = bindParameters(new GPT(cfg), { seed: 4 });
  assert.deepEqual(a.flat.data, b.flat.data);
  assert.notDeepEqual(a.flat.data, c.flat.data);
  assert.ok(a.flat.view('h0.ln1.w').every((x) => x === 1));
  assert.ok(a.flat.view('h0.attn.qkv.b').every((x) => x === 0));
  const w = a.flat.view('h0.mlp.fc1.w');
  const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
  assert.ok(Math.abs(std - 0.02) < 0.004, `fc1 init std ${std}`);
});

test('Linear on a 3-D input equals the 2-D Gemm on its rows', async () => {
  const lin = new Linear(3, 2);
  bindParameters(lin, { seed: 1 });
  const x = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
  const y3 = lin.forward(x);
  const y2 = lin.forward(x.reshape([4, 3]));
  await realize(y3, y2);
  assert.deepEqual(y3.shape, [2, 2, 2]);
  assert.deepEqual(await y3.toArray(), await y2.toArray());
});

test('Dropout is active in train mode only', async () => {
  const d = new Dropout(0.5);
  const x = tensor(new Float32Array(1000).fill(1), [1000]);
  const train = await d.forward(x).toArray();
  assert.ok(train.some((v) => v === 0) && train.some((v) => v === 2));
  d.eval();
  assert.deepEqual(await d.forward(x).toArray(), Array.from({ length: 1000 }, () => 1));
});

test('state dict round trip; wrong shapes and missing or extra tensors are named', () => {
  const cfg = { vocab: 16, ctx: 8, d: 8, layers: 1, heads: 2 };
  const a = bindParameters(new GPT(cfg), { seed: 1 });
  const b = bindParameters(new GPT(cfg), { seed: 2 });
  loadStateDict(b, stateDict(a));
  assert.deepEqual(b.flat.data, a.flat.data);
  const other = bindParameters(new GPT({ ...cfg, d: 16 }), { seed: 1 });
  assert.throws(() => loadStateDict(b, stateDict(other)), /tensor 'pos' has shape \[8, 16\], the model expects \[8, 8\]/);
  const sd = stateDict(a);
  sd.delete('lnf.b');
  assert.throws(() => loadStateDict(b, sd), /missing tensor 'lnf\.b'/);
  const extra = stateDict(a).set('bogus', { shape: [1], data: Float32Array.of(0) });
  assert.throws(() => loadStateDict(b, extra), /unexpected tensors bogus/);
});

test('GPT starts near uniform: initial loss ~ ln(vocab)', async () => {
  const m = new GPT({ vocab: 256, ctx: 16, d: 32, layers: 2, heads: 4 });
  bindParameters(m, { seed: 0 });
  const ids = tensor(BigInt64Array.from({ length: 32 }, (_, i) => BigInt((i * 37) % 256)), [2, 16], 'int64');
  // Targets differ from inputs: the tied head favours repeating the input token.
  const tgt = tensor(BigInt64Array.from({ length: 32 }, (_, i) => BigInt((i * 37 + 101) % 256)), [2, 16], 'int64');
  const loss = await m.loss(ids, tgt).item();
  assert.ok(Math.abs(loss - Math.log(256)) < 0.05, `loss ${loss}`);
});
