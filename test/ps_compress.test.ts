/**
 * parallel/ps/compress.ts, push compression: fp16 within 2^-11 relative in the normal range and
 * exact on halves (round to nearest even, overflow to inf, subnormals, signed zeros, NaN); int8
 * within s/2 per element with s = max|g| / 127 per row, all-zero rows at s = 0, poisoned rows NaN;
 * pushBytes equal to the encoded bytes, and fp16 / int8 at 1/2 and (dim + 4) / 4dim of fp32 (padded).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromHalf } from '../src/ir/dtype.js';
import { decodePush, encodePush, pushBytes } from '../src/parallel/ps/compress.js';
import type { PushCompression } from '../src/parallel/ps/compress.js';

/** A xorshift32 stream of uniforms in [0, 1): the test's own, so its inputs are fixed. */
function uniforms(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

const roundTrip = (g: Float32Array, dim: number, mode: PushCompression): Float32Array => {
  const out = new Float32Array(g.length);
  decodePush(encodePush(g, dim, mode), g.length / dim, dim, mode, out);
  return out;
};

test('fp16: 20,000 values over the normal range [2^-14, 65504] come back within 2^-11 relative', () => {
  const u = uniforms(7);
  const g = Float32Array.from({ length: 20_000 }, () => (u() < 0.5 ? -1 : 1) * 2 ** (-14 + u() * 29.99));
  const back = roundTrip(g, 10, 'fp16');
  let worst = 0;
  for (let i = 0; i < g.length; i++) worst = Math.max(worst, Math.abs(back[i]! - g[i]!) / Math.abs(g[i]!));
  assert.ok(worst <= 2 ** -11, `worst relative error ${worst}`);
  assert.ok(worst > 2 ** -12, `worst relative error ${worst}: suspiciously exact`);
});

test('fp16: every finite half (subnormals, ±0, ±65504) comes back exactly; inf, NaN, overflow and ties to even as IEEE rounds', () => {
  const halves = Float32Array.from({ length: 0x7c00 * 2 }, (_, i) => fromHalf(i < 0x7c00 ? i : 0x8000 | (i - 0x7c00)));
  const back = roundTrip(halves, 2, 'fp16');
  for (let i = 0; i < halves.length; i++) assert.ok(Object.is(back[i], halves[i]), `half ${i}: ${halves[i]} came back ${back[i]}`);
  const cases: [number, number][] = [
    [Infinity, Infinity], [-Infinity, -Infinity], [NaN, NaN],
    [65519, 65504], [65520, Infinity], [-1e6, -Infinity], // 65520 is the tie between 65504 and 2^16: to even, inf
    [1 + 2 ** -11, 1], [1 + 3 * 2 ** -11, 1 + 2 ** -9], // ties to the even mantissa
    [2 ** -25, 0], [3 * 2 ** -25, 2 ** -23], [2 ** -26, 0], [-(2 ** -30), -0], // subnormal ties and underflow keep the sign
  ];
  const got = roundTrip(Float32Array.from(cases, (c) => c[0]), 1, 'fp16');
  cases.forEach(([x, want], i) => assert.ok(Object.is(got[i], want), `${x} -> ${got[i]}, want ${want}`));
});

test('int8: |error| <= s/2 per element with s = max|g| / 127 per row, padding bytes zero; all-zero rows have s = 0', () => {
  const u = uniforms(11);
  for (const dim of [1, 3, 9, 16, 33]) {
    const rows = 200;
    const g = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) {
      const mag = 10 ** (-6 + 10 * u()); // rows of very different scales
      if (r % 17 !== 5) for (let j = 0; j < dim; j++) g[r * dim + j] = (u() - 0.5) * mag;
    }
    const enc = encodePush(g, dim, 'int8') as Int32Array;
    const scales = new Float32Array(enc.buffer);
    const w = 1 + Math.ceil(dim / 4);
    const back = new Float32Array(g.length);
    decodePush(enc, rows, dim, 'int8', back);
    for (let r = 0; r < rows; r++) {
      let max = 0;
      for (let j = 0; j < dim; j++) max = Math.max(max, Math.abs(g[r * dim + j]!));
      const s = scales[r * w]!;
      assert.equal(s, Math.fround(max / 127), `dim ${dim} row ${r}: scale`);
      if (max === 0) assert.equal(enc[r * w], 0, 'an all-zero row has scale bits 0');
      for (let j = 0; j < dim; j++) {
        const e = Math.abs(back[r * dim + j]! - g[r * dim + j]!);
        assert.ok(e <= (s / 2) * (1 + 1e-6), `dim ${dim} row ${r} element ${j}: error ${e} > s/2 = ${s / 2}`);
      }
      // Padding bytes after the row's dim codes are zero.
      const bytes = new Int8Array(enc.buffer, 4 * (r * w + 1), 4 * (w - 1));
      for (let j = dim; j < bytes.length; j++) assert.equal(bytes[j], 0);
    }
    assert.ok(back.some((x, i) => x !== g[i]), 'int8 is lossy on random rows');
  }
});

test('int8: a row holding inf or NaN decodes to all NaN; the other rows are unaffected', () => {
  const g = Float32Array.of(1, 2, 3, Infinity, 0, 1, -4, NaN, 2, 5, -5, 0.5);
  const back = roundTrip(g, 3, 'int8');
  const s0 = Math.fround(3 / 127);
  assert.deepEqual([...back.subarray(0, 3)], [42, 85, 127].map((q) => Math.fround(q * s0))); // 1 / s0 = 42.33, 2 / s0 = 84.67
  assert.ok(back.subarray(3, 9).every(Number.isNaN), `poisoned rows: ${[...back.subarray(3, 9)]}`);
  const s3 = Math.fround(5 / 127);
  assert.deepEqual([...back.subarray(9)], [127, -127, 13].map((q) => Math.fround(q * s3))); // 0.5 / s3 = 12.7
});

test('pushBytes equals the encoded byte length; fp16 is 1/2 of fp32 and int8 (1 + ceil(dim / 4)) / dim of it', () => {
  const u = uniforms(3);
  for (const [rows, dim] of [[0, 4], [1, 1], [1, 9], [3, 9], [50, 9], [7, 16], [5, 3], [11, 33]] as const) {
    const g = Float32Array.from({ length: rows * dim }, () => u() - 0.5);
    for (const mode of ['none', 'fp16', 'int8'] as const) {
      assert.equal(encodePush(g, dim, mode).byteLength, pushBytes(rows, dim, mode), `${rows} x ${dim} ${mode}`);
    }
  }
  assert.equal(pushBytes(1000, 16, 'none'), 64_000);
  assert.equal(pushBytes(1000, 16, 'fp16'), 32_000);
  assert.equal(pushBytes(1000, 16, 'int8'), 20_000); // 16 codes + a 4-byte scale a row: 5/16 of fp32
  assert.equal(pushBytes(1000, 9, 'fp16'), 18_000);
  assert.equal(pushBytes(1000, 9, 'int8'), 16_000); // 9 codes padded to 12, + 4: 4/9 of fp32's 36,000
  assert.equal(pushBytes(3, 3, 'fp16'), 20); // 9 halves in 5 words
  const g = Float32Array.of(1, 2);
  assert.equal(encodePush(g, 2, 'none'), g, "'none' sends the gradients themselves");
});

test('bad input: errors name the argument, the mode and both lengths', () => {
  assert.throws(() => encodePush(new Float32Array(10), 3, 'int8'), /encodePush: grads\.length 10 is not a multiple of dim 3/);
  assert.throws(() => encodePush(new Float32Array(3), 0, 'fp16'), /encodePush: dim must be a positive integer, got 0/);
  assert.throws(() => encodePush(new Float32Array(3), 3, 'fp8' as PushCompression), /mode must be one of none, fp16, int8, got 'fp8'/);
  const enc = encodePush(new Float32Array(18), 9, 'int8');
  assert.throws(() => decodePush(enc, 2, 9, 'int8', new Float32Array(17)), /decodePush: out must have n x dim = 2 x 9 = 18 elements, got 17/);
  assert.throws(() => decodePush(enc, 3, 9, 'int8', new Float32Array(27)), /a 'int8' push of 3 x 9 has 12 words, got 8/);
  assert.throws(() => decodePush(enc, 2, 9, 'none', new Float32Array(18)), /a 'none' push is a Float32Array, got a Int32Array/);
  assert.throws(() => pushBytes(-1, 9, 'fp16'), /pushBytes: rows must be a non-negative integer, got -1/);
});
