/**
 * weft serve (deploy/serve.ts) over real HTTP on loopback, port 0: concurrent requests are merged
 * into fewer runs and each answer equals a direct onnxruntime run of its own rows; every request
 * is answered once; each bad request gets its 4xx and message while good ones keep succeeding;
 * a full queue answers 429; the token guards every endpoint but /health; close() answers what
 * was queued and refuses what comes after; /metrics counts what was sent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encryptModel, newKeyText, parseKey } from '../src/deploy/model_file.js';
import { exportCnn, exportGpt } from '../src/deploy/export.js';
import { startServer } from '../src/deploy/serve.js';
import type { ModelServer } from '../src/deploy/serve.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import { CLI } from './helpers/cli.js';
import { gptOnnx, tinyCnn, tinyGpt, uniform } from './helpers/deploy_models.js';

const CNN = exportCnn(tinyCnn(3, [4, 8], 16)).bytes;
const GPT = exportGpt(tinyGpt(2), { kind: 'logits' }).bytes;
const IMAGE = 28 * 28;

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; text: string; json(): { outputs: Record<string, { dims: number[]; data: number[] }>; error: string } }

/** One HTTP request with a 20 s timeout; resolves with the answer (a connection reset after an answer is ignored). */
function call(url: string, method: string, body?: string | Buffer, headers: Record<string, string> = {}, agent?: Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers, timeout: 20_000, ...(agent !== undefined ? { agent } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) as ReturnType<Reply['json']> });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within 20 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

const predict = (s: ModelServer, inputs: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  call(`${s.url}/v1/predict`, 'POST', JSON.stringify({ inputs }), { 'Content-Type': 'application/json', ...headers });

/** A request's images as a nested array [rows][1][28][28]. */
function nested(x: Float32Array, rows: number): number[][][][] {
  return Array.from({ length: rows }, (_, r) => [Array.from({ length: 28 }, (_, i) => Array.from(x.subarray(r * IMAGE + i * 28, r * IMAGE + i * 28 + 28)))]);
}

/** A metric's value in Prometheus text. */
function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line !== undefined, `no ${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

function assertClose(got: readonly number[], want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: ${got.length} values, expected ${want.length}`);
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-6, `${what}[${i}]: ${got[i]} vs direct run ${want[i]}`);
}

test('predict: 12 concurrent CNN requests of 1..5 rows share fewer runs, and each answer equals a direct run of its own rows (1e-6)', async () => {
  const s = await startServer({ model: CNN, maxBatch: 32, maxWaitMs: 30 });
  const direct = await createInferenceSession(CNN, { threads: 1 });
  try {
    const rows = Array.from({ length: 12 }, (_, i) => 1 + (i % 5));
    const xs = rows.map((r, i) => uniform(r * IMAGE, 100 + i));
    // Half the requests nested, half compact: both forms feed the same rows.
    const replies = await Promise.all(xs.map((x, i) => predict(s, { images: i % 2 === 0 ? nested(x, rows[i]!) : { dims: [rows[i]!, 1, 28, 28], data: Array.from(x) } })));
    for (let i = 0; i < xs.length; i++) {
      assert.equal(replies[i]!.status, 200, replies[i]!.text);
      const want = (await direct.run({ images: { dtype: 'float32', dims: [rows[i]!, 1, 28, 28], data: xs[i]! } }))['logits']!;
      const got = replies[i]!.json().outputs['logits']!;
      assert.deepEqual(got.dims, [rows[i], 10]);
      assertClose(got.data, want.data as Float32Array, `request ${i} logits`);
    }
    const m = (await call(`${s.url}/metrics`, 'GET')).text;
    const batches = metric(m, 'weft_batches_total');
    assert.ok(batches < 12 && batches >= 1, `12 requests ran in ${batches} runs: nothing was merged`);
    assert.equal(metric(m, 'weft_requests_total{code="200"}'), 12);
    assert.equal(metric(m, 'weft_batch_rows_sum'), rows.reduce((a, b) => a + b, 0), 'every row ran once');
    assert.equal(metric(m, 'weft_batch_rows_count'), batches);
    assert.equal(metric(m, 'weft_request_seconds_count'), 12);
    assert.equal(metric(m, 'weft_queue_depth'), 0);
  } finally {
    await direct.release();
    await s.close();
  }
});

test('predict: GPT int64 requests of seq 4 and seq 8 never share a run, each equals a direct run, and 40 unique requests are each answered once', async () => {
  const s = await startServer({ model: GPT, maxBatch: 8, maxWaitMs: 30 });
  const direct = await createInferenceSession(GPT, { threads: 1 });
  try {
    const n = 40;
    const seqs = Array.from({ length: n }, (_, i) => (i % 2 === 0 ? 4 : 8));
    // Request i's first token is i: its answer must be its own, not a neighbour's rows.
    const ids = seqs.map((t, i) => Array.from({ length: t }, (_, k) => (k === 0 ? i : (i * 7 + k * 13) % 256)));
    const replies = await Promise.all(ids.map((x) => predict(s, { idx: [x] })));
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      assert.equal(replies[i]!.status, 200, replies[i]!.text);
      const got = replies[i]!.json().outputs['logits']!;
      assert.deepEqual(got.dims, [1, seqs[i], 256]);
      const want = (await direct.run({ idx: { dtype: 'int64', dims: [1, seqs[i]!], data: BigInt64Array.from(ids[i]!, BigInt) } }))['logits']!;
      assertClose(got.data, want.data as Float32Array, `request ${i} (seq ${seqs[i]})`);
      seen.add(replies[i]!.text);
    }
    assert.equal(seen.size, n, 'every answer is distinct: none was given twice');
    const m = (await call(`${s.url}/metrics`, 'GET')).text;
    const batches = metric(m, 'weft_batches_total');
    assert.ok(batches >= 2 && batches < n, `${n} requests of two lengths ran in ${batches} runs`);
    assert.equal(metric(m, 'weft_requests_total{code="200"}'), n);
    assert.equal(metric(m, 'weft_batch_rows_sum'), n);
  } finally {
    await direct.release();
    await s.close();
  }
});

test('bad requests get 4xx naming the input and what was expected, and the server keeps serving', async () => {
  const s = await startServer({ model: CNN, maxBatch: 4, maxWaitMs: 0 });
  const g = await startServer({ model: GPT, maxBatch: 4, maxWaitMs: 0 });
  try {
    const img = Array.from(uniform(IMAGE, 7));
    const good = async (): Promise<void> => {
      const r = await predict(s, { images: { dims: [1, 1, 28, 28], data: img } });
      assert.equal(r.status, 200, `a good request after a bad one: ${r.text}`);
    };
    const cases: [string, string, RegExp][] = [
      ['malformed JSON', '{"inputs": {"images": [1, 2', /malformed JSON/],
      ['not an object', '[1, 2, 3]', /must be a JSON object \{"inputs"/],
      ['unknown input', JSON.stringify({ inputs: { images: img, pixels: [1] } }), /unknown input 'pixels'; the model's inputs are 'images'/],
      ['missing input', JSON.stringify({ inputs: {} }), /missing input 'images'/],
      ['wrong rank', JSON.stringify({ inputs: { images: { dims: [1, 784], data: img } } }), /input 'images': expected rank 4 \[batch, 1, 28, 28\], got rank 2 \[1, 784\]/],
      ['wrong fixed dim', JSON.stringify({ inputs: { images: { dims: [1, 1, 28, 27], data: img.slice(0, 756) } } }), /input 'images': dim 3 must be 28, got 27/],
      ['count vs dims', JSON.stringify({ inputs: { images: { dims: [2, 1, 28, 28], data: img } } }), /input 'images': dims \[2, 1, 28, 28\] hold 1568 elements, "data" has 784/],
      ['non-numeric', JSON.stringify({ inputs: { images: { dims: [1, 1, 28, 28], data: ['a', ...img.slice(1)] } } }), /input 'images': element 0 is "a", expected a finite number \(dtype float32\)/],
      ['batch 0', JSON.stringify({ inputs: { images: { dims: [0, 1, 28, 28], data: [] } } }), /input 'images': the batch \(dim 0\) is 0/],
      ['batch > max', JSON.stringify({ inputs: { images: { dims: [5, 1, 28, 28], data: Array.from(uniform(5 * IMAGE)) } } }), /5 rows is more than the server's max batch 4/],
      ['ragged', JSON.stringify({ inputs: { images: [[[[1, 2], [3]]]] } }), /input 'images': ragged nested array: images\[0\]\[0\]\[1\] has 1 elements, expected 2/],
    ];
    for (const [what, body, want] of cases) {
      const r = await call(`${s.url}/v1/predict`, 'POST', body);
      assert.equal(r.status, 400, `${what}: ${r.text}`);
      assert.match(r.json().error, want, what);
      await good();
    }
    const frac = await predict(g, { idx: [[1, 2.5, 3]] });
    assert.equal(frac.status, 400);
    assert.match(frac.json().error, /input 'idx': element 1 is 2.5, expected an integer in \[-9007199254740991, 9007199254740991\] \(dtype int64\)/);
    const notFound = await call(`${s.url}/v2/predict`, 'POST', '{}');
    assert.equal(notFound.status, 404);
    assert.match(notFound.json().error, /\/v2\/predict: no such endpoint/);
    const wrongMethod = await call(`${s.url}/v1/predict`, 'GET');
    assert.equal(wrongMethod.status, 405);
    assert.match(wrongMethod.json().error, /GET \/v1\/predict: use POST/);
    await good();
    const m = (await call(`${s.url}/metrics`, 'GET')).text;
    assert.equal(metric(m, 'weft_requests_total{code="400"}'), cases.length);
    assert.equal(metric(m, 'weft_requests_total{code="200"}'), cases.length + 1);
    assert.equal(metric(m, 'weft_requests_total{code="404"}'), 1);
    assert.equal(metric(m, 'weft_requests_total{code="405"}'), 1);
  } finally {
    await s.close();
    await g.close();
  }
});

test('a body over maxBodyBytes gets 413 whether declared or chunked, and the next request is served', async () => {
  const s = await startServer({ model: CNN, maxBodyBytes: 20_000 });
  try {
    const big = JSON.stringify({ inputs: { images: { dims: [2, 1, 28, 28], data: Array.from(uniform(2 * IMAGE)) } } });
    assert.ok(big.length > 20_000);
    const declared = await call(`${s.url}/v1/predict`, 'POST', big, { 'Content-Length': String(Buffer.byteLength(big)) });
    assert.equal(declared.status, 413);
    assert.match(declared.json().error, /over the server's limit of 20000 bytes/);
    assert.equal(declared.headers['connection'], 'close');
    const chunked = await call(`${s.url}/v1/predict`, 'POST', big, { 'Transfer-Encoding': 'chunked' });
    assert.equal(chunked.status, 413);
    const ok = await predict(s, { images: { dims: [1, 1, 28, 28], data: Array.from(uniform(IMAGE)) } });
    assert.equal(ok.status, 200, ok.text);
  } finally {
    await s.close();
  }
});

test('a full queue answers 429 with Retry-After; the requests it took are answered 200, none twice', async () => {
  // One queue slot and a long wait: the first request holds the slot, the flood behind it is refused.
  const s = await startServer({ model: CNN, maxBatch: 32, maxWaitMs: 200, queue: 1 });
  try {
    const body = { images: { dims: [1, 1, 28, 28], data: Array.from(uniform(IMAGE)) } };
    const replies = await Promise.all(Array.from({ length: 30 }, () => predict(s, body)));
    const by = (c: number): Reply[] => replies.filter((r) => r.status === c);
    assert.ok(by(429).length > 0, `no 429 among ${replies.map((r) => r.status).join(',')}`);
    assert.equal(by(200).length + by(429).length, 30);
    for (const r of by(429)) { assert.equal(r.headers['retry-after'], '1'); assert.match(r.json().error, /the queue is full \(1 requests waiting\)/); }
    const m = (await call(`${s.url}/metrics`, 'GET')).text;
    assert.equal(metric(m, 'weft_requests_total{code="429"}'), by(429).length);
    assert.equal(metric(m, 'weft_batch_rows_sum'), by(200).length, 'every accepted request ran once');
    const after = await predict(s, body);
    assert.equal(after.status, 200, 'served again once the flood is over');
  } finally {
    await s.close();
  }
});

test('token: binding 0.0.0.0 without one is refused naming the host; with one, missing or wrong is 401 and right is 200; /health needs none', async () => {
  const saved = process.env['WEFT_SERVE_TOKEN'];
  delete process.env['WEFT_SERVE_TOKEN'];
  try {
    await assert.rejects(startServer({ model: CNN, host: '0.0.0.0' }), /binding 0\.0\.0\.0 \(not loopback\) needs a token/);
  } finally {
    if (saved !== undefined) process.env['WEFT_SERVE_TOKEN'] = saved;
  }
  const s = await startServer({ model: CNN, token: 's3cret-token' });
  try {
    const body = { images: { dims: [1, 1, 28, 28], data: Array.from(uniform(IMAGE)) } };
    const none = await predict(s, body);
    assert.equal(none.status, 401);
    assert.match(none.json().error, /missing or wrong bearer token/);
    assert.equal((await predict(s, body, { Authorization: 'Bearer s3cret-tokeX' })).status, 401);
    assert.equal((await predict(s, body, { Authorization: 's3cret-token' })).status, 401, 'no Bearer scheme');
    assert.equal((await call(`${s.url}/metrics`, 'GET')).status, 401);
    const right = await predict(s, body, { Authorization: 'Bearer s3cret-token' });
    assert.equal(right.status, 200, right.text);
    const health = await call(`${s.url}/health`, 'GET');
    assert.equal(health.status, 200);
    const h = JSON.parse(health.text) as { status: string; inputs: { name: string; dtype: string; dims: unknown[] }[]; outputs: { name: string }[] };
    assert.equal(h.status, 'ok');
    assert.deepEqual(h.inputs, [{ name: 'images', dtype: 'float32', dims: ['batch', 1, 28, 28] }]);
    assert.equal(h.outputs[0]!.name, 'logits');
  } finally {
    await s.close();
  }
});

test('close() answers every queued request with 200, then refuses new connections', async () => {
  // A long wait keeps the requests queued when close() is called.
  const s = await startServer({ model: CNN, maxBatch: 32, maxWaitMs: 300 });
  const agent = new Agent({ keepAlive: true });
  try {
    const xs = Array.from({ length: 6 }, (_, i) => uniform(IMAGE, 50 + i));
    const pending = xs.map((x) => call(`${s.url}/v1/predict`, 'POST', JSON.stringify({ inputs: { images: { dims: [1, 1, 28, 28], data: Array.from(x) } } }), {}, agent));
    // Wait until the server holds all six (they are queued for up to 300 ms).
    for (let t = 0; t < 100; t++) {
      const m = (await call(`${s.url}/metrics`, 'GET')).text;
      if (metric(m, 'weft_queue_depth') === 6) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const closed = s.close();
    const replies = await Promise.all(pending);
    for (const r of replies) assert.equal(r.status, 200, r.text);
    assert.equal(new Set(replies.map((r) => r.text)).size, 6, 'six distinct answers');
    await closed;
    await assert.rejects(call(`${s.url}/v1/predict`, 'POST', '{}'), /ECONNREFUSED/);
  } finally {
    agent.destroy();
    await s.close();
  }
});

test('close() that cannot drain gives up after drainTimeoutMs naming the pending requests', async () => {
  const s = await startServer({ model: CNN, drainTimeoutMs: 100 });
  // A request whose body never ends stays in flight.
  const req = httpRequest(`${s.url}/v1/predict`, { method: 'POST', headers: { 'Content-Length': '1000' } });
  req.on('error', () => { /* the server closes it when it gives up */ });
  req.write('{"inputs":');
  for (let t = 0; t < 100; t++) {
    if (/weft_inflight 1/.test((await call(`${s.url}/metrics`, 'GET')).text)) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  await assert.rejects(s.close(), /shutdown gave up after 100 ms with 1 requests pending/);
  req.destroy();
});

test('weft serve (CLI): an encrypted model with --key-file, one line with the URL and inputs, answers, and exits 0 on SIGTERM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-serve-'));
  try {
    const keyText = newKeyText();
    writeFileSync(join(dir, 'key'), keyText);
    writeFileSync(join(dir, 'cnn.onnx'), encryptModel(CNN, parseKey(new TextEncoder().encode(keyText), 'key')));
    const child = spawn(process.execPath, [CLI, 'serve', join(dir, 'cnn.onnx'), '--port', '0', '--key-file', join(dir, 'key'), '--max-batch', '8'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`weft serve printed no line within 20 s: ${err}`)), 20_000);
      child.stdout.on('data', (c: Buffer) => { out += c.toString(); if (out.includes('\n')) { clearTimeout(timer); resolve(out); } });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`weft serve exited ${code}: ${err}`)); });
    });
    assert.match(line, /^weft serve: http:\/\/127\.0\.0\.1:\d+\/v1\/predict .* inputs: images float32 \[batch,1,28,28\]  outputs: logits float32 \[batch,10\]  \(max batch 8, max wait 2 ms, queue 256\)\n$/);
    const url = /http:\/\/[\d.:]+/.exec(line)![0];
    const x = uniform(IMAGE, 9);
    const r = await call(`${url}/v1/predict`, 'POST', JSON.stringify({ inputs: { images: { dims: [1, 1, 28, 28], data: Array.from(x) } } }));
    assert.equal(r.status, 200, r.text);
    const direct = await createInferenceSession(CNN, { threads: 1 });
    const want = (await direct.run({ images: { dtype: 'float32', dims: [1, 1, 28, 28], data: x } }))['logits']!;
    await direct.release();
    assertClose(r.json().outputs['logits']!.data, want.data as Float32Array, 'CLI answer');
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('weft serve did not exit within 20 s of SIGTERM')); }, 20_000);
      child.removeAllListeners('exit');
      child.once('exit', (c) => { clearTimeout(timer); resolve(c); });
      child.kill('SIGTERM');
    });
    assert.equal(code, 0, err);
    assert.equal(out, line, 'nothing logged per request');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('startServer refuses a model without a symbolic batch dim, and bad options, naming them', async () => {
  await assert.rejects(startServer({ model: gptOnnx(tinyGpt(1), 2, 8) }), /model: input 'idx' has shape \[2, 8\]; weft serve needs a symbolic leading batch dim/);
  await assert.rejects(startServer({ model: CNN, maxBatch: 0 }), /maxBatch must be an integer >= 1, got 0/);
  await assert.rejects(startServer({ model: CNN, port: 70000 }), /port must be 0\.\.65535, got 70000/);
  await assert.rejects(startServer({ model: '/nonexistent/m.onnx' }), /\/nonexistent\/m\.onnx: cannot read it \(ENOENT\)/);
});

test('close() serves a request whose body is still arriving when it is called', async () => {
  const s = await startServer({ model: CNN });
  const x = uniform(IMAGE, 11);
  const body = JSON.stringify({ inputs: { images: { dims: [1, 1, 28, 28], data: Array.from(x) } } });
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = httpRequest(`${s.url}/v1/predict`, { method: 'POST', headers: { 'Content-Length': String(body.length) }, timeout: 20_000 }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) as ReturnType<Reply['json']> }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    req.write(body.slice(0, 100));
    setTimeout(() => {
      const closed = s.close();
      setTimeout(() => req.end(body.slice(100)), 30);
      closed.catch(reject);
    }, 50);
  });
  const r = await reply;
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['connection'], 'close');
  const direct = await createInferenceSession(CNN, { threads: 1 });
  const want = (await direct.run({ images: { dtype: 'float32', dims: [1, 1, 28, 28], data: x } }))['logits']!;
  await direct.release();
  assertClose(r.json().outputs['logits']!.data, want.data as Float32Array, 'answer during drain');
  await s.close();
});
