/**
 * Vision layers keep PyTorch's defaults: Conv2d's init bound and 'same' padding, AvgPool2d's
 * count_include_pad=True, parameter and buffer names in Sequential order, and convNet's shapes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AvgPool2d, BatchNorm2d, bindParameters, Conv2d, convNet, GlobalAvgPool, Sequential, tensor } from '../src/index.js';

test('Conv2d: weights within +-1/sqrt(fanIn), "same" keeps the size, groups must divide the channels', async () => {
  const conv = new Conv2d(4, 6, 3, { padding: 'same', groups: 2 });
  const p = bindParameters(new Sequential([conv]), { seed: 3 });
  const w = p.flat.view('0.w');
  const bound = 1 / Math.sqrt(2 * 9);
  assert.ok(w.every((v) => Math.abs(v) <= bound) && w.some((v) => Math.abs(v) > 0.8 * bound), 'U(+-1/sqrt(in/groups*k*k))');
  const y = conv.forward(tensor(new Float32Array(2 * 4 * 5 * 7), [2, 4, 5, 7]));
  assert.deepEqual(y.shape, [2, 6, 5, 7]);
  assert.throws(() => new Conv2d(4, 6, 3, { groups: 4 }), /groups \(4\) must divide inChannels \(4\) and outChannels \(6\)/);
});

test('AvgPool2d counts padding in the divisor by default (PyTorch), not when told', async () => {
  const x = tensor(Float32Array.from({ length: 16 }, (_, i) => i + 1), [1, 1, 4, 4]);
  const mean = async (o: { countIncludePad?: boolean }): Promise<number> => Number((await new AvgPool2d(3, { stride: 1, padding: 1, ...o }).forward(x).data())[0]);
  // The top-left window holds 1, 2, 5, 6 inside the image.
  assert.ok(Math.abs(await mean({}) - 14 / 9) < 1e-6);
  assert.ok(Math.abs(await mean({ countIncludePad: false }) - 14 / 4) < 1e-6);
  const g = await new GlobalAvgPool().forward(x).data();
  assert.ok(Math.abs(Number(g[0]) - 8.5) < 1e-6);
});

test('convNet: names parameters and buffers in order, and its classifier sees the pooled size', () => {
  const net = convNet({ input: [1, 28, 28], classes: 10, channels: [8, 16], hidden: 32, batchNorm: true, dropout: 0.1 });
  const p = bindParameters(net);
  assert.deepEqual(p.flat.layout.slots.map((s) => `${s.name}[${s.shape.join(',')}]`), [
    '0.w[8,1,3,3]', '1.w[8]', '1.b[8]', '4.w[16,8,3,3]', '5.w[16]', '5.b[16]', '10.w[784,32]', '10.b[32]', '13.w[32,10]', '13.b[10]',
  ]);
  assert.deepEqual(p.buffers.layout.slots.map((s) => s.name), ['1.running_mean', '1.running_var', '5.running_mean', '5.running_var']);
  assert.ok(net.layers[1] instanceof BatchNorm2d);
  assert.throws(() => convNet({ input: [1, 4, 4], classes: 2, channels: [2, 2, 2], hidden: 0, batchNorm: false, dropout: 0 }), /shrink a 4x4 image below 1x1/);
});
