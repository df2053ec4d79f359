/**
 * deploy/model_file.ts: an encrypted model round-trips to the same bytes and the same outputs; a
 * wrong key, a flipped byte anywhere (header, IV, body, tag) and a missing key are each an error
 * naming the file, never garbage bytes handed to onnxruntime.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as w from '../src/index.js';
import { decryptModel, encryptModel, KEY_ENV, newKeyText, parseKey, readModelFile } from '../src/deploy/model_file.js';
import { createInferenceSession } from '../src/runtime/ort.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-model-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function tinyModel(): Uint8Array {
  const rng = new w.Rng(3);
  const x = w.placeholder(['batch', 8], 'float32', 'x');
  const W = w.randn([8, 5], rng, 0.3);
  const y = x.matmul(W).relu();
  return w.toModelProto({ inputs: [x.value], outputs: [y.value], initializers: [W.value] });
}

const key = parseKey(new TextEncoder().encode(newKeyText()), 'test key');

test('encryption: round trip gives the same bytes, and the decrypted model computes the same outputs', async () => {
  const plain = tinyModel();
  const enc = encryptModel(plain, key);
  assert.notDeepEqual(enc.subarray(20, 60), plain.subarray(0, 40));
  assert.equal(enc.length, plain.length + 8 + 12 + 16);
  // Two encryptions of one model differ (a fresh IV each time) and both decrypt.
  assert.notDeepEqual(encryptModel(plain, key), enc);
  const path = join(dir, 'm.onnx.enc');
  const kf = join(dir, 'key.hex');
  writeFileSync(path, enc);
  writeFileSync(kf, newKeyText());
  assert.throws(() => readModelFile(path, { keyFile: kf }), /m\.onnx\.enc: cannot decrypt it: the key is wrong or the file was modified/);
  writeFileSync(kf, Buffer.from(key).toString('hex') + '\n');
  const back = readModelFile(path, { keyFile: kf });
  assert.deepEqual(back, plain);
  const x = { dtype: 'float32' as const, dims: [2, 8], data: Float32Array.from({ length: 16 }, (_, i) => Math.sin(i)) };
  const a = await createInferenceSession(plain, { threads: 1 });
  const b = await createInferenceSession(back, { threads: 1 });
  const [ya, yb] = [Object.values(await a.run({ x }))[0]!, Object.values(await b.run({ x }))[0]!];
  assert.deepEqual(yb.data, ya.data);
  assert.ok(ya.data.some((v) => v !== 0));
  await a.release(); await b.release();
});

test('encryption: one flipped byte in the header, IV, body or tag is refused', () => {
  const enc = encryptModel(tinyModel(), key);
  for (const at of [3, 10, 40, Math.floor(enc.length / 2), enc.length - 1]) {
    const bad = enc.slice();
    bad[at]! ^= 0x01;
    assert.throws(() => decryptModel(bad, key, 'flipped.enc'), at < 8 ? /flipped\.enc: not an encrypted weft model/ : /flipped\.enc: cannot decrypt it/, `byte ${at}`);
  }
  assert.throws(() => decryptModel(enc.subarray(0, 30), key, 'short.enc'), /short\.enc: truncated/);
});

test('encryption: the key comes from a file or WEFT_MODEL_KEY; none, or a malformed one, is a clear error', () => {
  const path = join(dir, 'env.onnx.enc');
  const plain = tinyModel();
  writeFileSync(path, encryptModel(plain, key));
  const saved = process.env[KEY_ENV];
  try {
    delete process.env[KEY_ENV];
    assert.throws(() => readModelFile(path), /env\.onnx\.enc: the model is encrypted; give its key with --key-file FILE or the environment variable WEFT_MODEL_KEY/);
    process.env[KEY_ENV] = Buffer.from(key).toString('base64');
    assert.deepEqual(readModelFile(path), plain);
    process.env[KEY_ENV] = 'abc';
    assert.throws(() => readModelFile(path), /WEFT_MODEL_KEY: not an AES-256 key/);
  } finally {
    if (saved === undefined) delete process.env[KEY_ENV]; else process.env[KEY_ENV] = saved;
  }
  // A plain model reads as it is, with or without a key.
  const p2 = join(dir, 'plain.onnx');
  writeFileSync(p2, plain);
  assert.deepEqual(readModelFile(p2), plain);
  assert.throws(() => readModelFile(join(dir, 'missing.onnx')), /missing\.onnx: cannot read it \(ENOENT\)/);
});
