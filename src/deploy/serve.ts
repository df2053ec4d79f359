/**
 * `weft serve`: an ONNX model behind an HTTP JSON API (node:http, no dependencies), with dynamic
 * batching (serve_batch.ts), a bounded queue (429 when full), request-size limits (413), /health,
 * Prometheus /metrics (serve_metrics.ts), a bearer token, and a graceful close.
 *
 *   POST /v1/predict  {"inputs": {"images": [[[[0.1, ...]]]]}}            (nested arrays)
 *                     {"inputs": {"images": {"dims": [2, 1, 28, 28], "data": [...]}}}   (compact)
 *                  -> {"outputs": {"logits": {"dims": [2, 10], "data": [...]}}}
 *
 * Security: it binds 127.0.0.1 unless told otherwise; any other address needs a token (the
 * `token` option or WEFT_SERVE_TOKEN), which every endpoint but /health then requires as
 * `Authorization: Bearer <token>`. There is no TLS: put a reverse proxy in front. docs/serve.md.
 *
 * @example
 *   const s = await startServer({ model: 'cnn.onnx', port: 0 });
 *   // ... POST to `${s.url}/v1/predict` ...
 *   await s.close();
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInferenceSession } from '../runtime/ort.js';
import type { InferenceSession } from '../runtime/ort.js';
import { readModelFile } from './model_file.js';
import { Batcher } from './serve_batch.js';
import { ServeMetrics } from './serve_metrics.js';
import { parsePredict, RequestError, serveSignature } from './serve_request.js';
import type { ServeSignature } from './serve_request.js';

/** The environment variable a token may come from when the `token` option is not given. */
export const TOKEN_ENV = 'WEFT_SERVE_TOKEN';

export interface ServeOptions {
  /** The model: a path (plain or encrypted, read by readModelFile) or its ONNX bytes. */
  model: string | Uint8Array;
  /** Address to bind; default 127.0.0.1. Anything but loopback (127.0.0.0/8, ::1, localhost) needs a token. */
  host?: string;
  /** Port; 0 (the default) takes any free port, which `ModelServer.port` tells. */
  port?: number;
  /** Bearer token every endpoint but /health requires; default WEFT_SERVE_TOKEN, else none (loopback only). */
  token?: string;
  /** Most rows in one run (default 32); 1 turns batching off. */
  maxBatch?: number;
  /** Longest the oldest queued request waits for others to fill its run, ms (default 2). */
  maxWaitMs?: number;
  /** Most requests waiting for a run (default 256); past it requests get 429. */
  queue?: number;
  /** Largest request body, bytes (default 8 MiB); larger gets 413 and the connection closed. */
  maxBodyBytes?: number;
  /** onnxruntime intra-op threads (default 1). */
  threads?: number;
  /** Key of an encrypted model (else WEFT_MODEL_KEY). */
  keyFile?: string;
  /** Longest `close` waits for queued and in-flight requests, ms (default 30,000). */
  drainTimeoutMs?: number;
  /** Longest a request may take to arrive in full, ms (default 30,000; node's requestTimeout). */
  requestTimeoutMs?: number;
}

export interface ModelServer {
  /** The bound address and port, and `http://host:port`. */
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly signature: ServeSignature;
  /** The options in force, defaults filled in. */
  readonly settings: { maxBatch: number; maxWaitMs: number; queue: number; maxBodyBytes: number; threads: number };
  /**
   * Stops accepting connections, answers every queued and in-flight request (new ones get 503),
   * then releases the session. Rejects, naming how many requests were pending, when that takes
   * longer than `drainTimeoutMs`. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function positiveInt(v: number | undefined, d: number, name: string, min = 1): number {
  const x = v ?? d;
  if (!Number.isInteger(x) || x < min) throw new Error(`startServer: ${name} must be an integer >= ${min}, got ${x}`);
  return x;
}

/** Token check in constant time: both sides are hashed first, so neither the length nor a prefix leaks. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (m === null) return false;
  const h = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(m[1]!), h(token));
}

function send(res: ServerResponse, status: number, body: string, type = 'application/json', headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

const error = (message: string): string => JSON.stringify({ error: message });

/** A request's body as text; past `max` bytes a RequestError 413 (the rest is not buffered). */
function readBody(req: IncomingMessage, max: number, timeoutMs: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > max) return Promise.reject(new RequestError(`the body is ${declared} bytes, over the server's limit of ${max} bytes`, 413));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    // node's requestTimeout also ends a slow request; this one names it in the answer.
    const timer = setTimeout(() => { done(); reject(new RequestError(`the body did not arrive within ${timeoutMs} ms`, 408)); }, timeoutMs);
    const done = (): void => { clearTimeout(timer); req.off('data', onData); req.off('end', onEnd); req.off('error', onError); };
    const onData = (c: Buffer): void => {
      n += c.length;
      if (n > max) { done(); reject(new RequestError(`the body is over the server's limit of ${max} bytes`, 413)); return; }
      chunks.push(c);
    };
    const onEnd = (): void => { done(); resolve(Buffer.concat(chunks).toString('utf8')); };
    const onError = (e: Error): void => { done(); reject(new RequestError(`reading the body failed: ${e.message}`)); };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/** Starts a model server; resolves once it listens. Bad options and an unloadable model are errors naming them. */
export async function startServer(opts: ServeOptions): Promise<ModelServer> {
  const host = opts.host ?? '127.0.0.1';
  const token = opts.token ?? (process.env[TOKEN_ENV] || undefined);
  if (token !== undefined && token.length === 0) throw new Error('startServer: the token is empty');
  if (!isLoopback(host) && token === undefined) {
    throw new Error(`startServer: binding ${host} (not loopback) needs a token: give --token or set ${TOKEN_ENV}; clients then send "Authorization: Bearer <token>"`);
  }
  const settings = {
    maxBatch: positiveInt(opts.maxBatch, 32, 'maxBatch'), maxWaitMs: opts.maxWaitMs ?? 2,
    queue: positiveInt(opts.queue, 256, 'queue'), maxBodyBytes: positiveInt(opts.maxBodyBytes, 8 * 2 ** 20, 'maxBodyBytes'),
    threads: positiveInt(opts.threads, 1, 'threads'),
  };
  if (!(settings.maxWaitMs >= 0 && Number.isFinite(settings.maxWaitMs))) throw new Error(`startServer: maxWaitMs must be a number >= 0, got ${settings.maxWaitMs}`);
  const port = positiveInt(opts.port, 0, 'port', 0);
  if (port > 65535) throw new Error(`startServer: port must be 0..65535, got ${port}`);
  const drainMs = positiveInt(opts.drainTimeoutMs, 30_000, 'drainTimeoutMs');
  const requestMs = positiveInt(opts.requestTimeoutMs, 30_000, 'requestTimeoutMs');
  const source = typeof opts.model === 'string' ? opts.model : 'model';
  const bytes = typeof opts.model === 'string' ? readModelFile(opts.model, opts.keyFile !== undefined ? { keyFile: opts.keyFile } : {}) : opts.model;
  const sig = serveSignature(bytes, source);
  const session: InferenceSession = await createInferenceSession(bytes, { threads: settings.threads }, source);
  const metrics = new ServeMetrics();
  const batcher = new Batcher(session, sig, settings, metrics);
  let inflight = 0;
  let draining = false;
  const health = JSON.stringify({ status: 'ok', model: source, inputs: sig.inputs, outputs: sig.outputs, maxBatch: settings.maxBatch });

  const predict = async (req: IncomingMessage, res: ServerResponse, t0: number): Promise<void> => {
    inflight++;
    let status = 200;
    try {
      const body = await readBody(req, settings.maxBodyBytes, requestMs);
      const outputs = await batcher.submit(parsePredict(body, sig, settings.maxBatch));
      send(res, 200, JSON.stringify({ outputs }), 'application/json', draining ? { Connection: 'close' } : {});
    } catch (e) {
      status = e instanceof RequestError ? e.status : 500;
      const headers: Record<string, string> = {};
      if (status === 429) headers['Retry-After'] = '1';
      // A body too large was not read to its end: the connection cannot carry another request.
      if (status === 413 || status === 408 || draining) headers['Connection'] = 'close';
      send(res, status, error((e as Error).message), 'application/json', headers);
    } finally {
      inflight--;
      metrics.request(status, (performance.now() - t0) / 1000);
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const t0 = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    const refuse = (status: number, message: string, headers: Record<string, string> = {}): void => {
      // Unread bodies of refused requests are drained by node; nothing here buffers them.
      send(res, status, error(message), 'application/json', headers);
      metrics.request(status, (performance.now() - t0) / 1000);
    };
    if (path === '/health') {
      if (req.method !== 'GET') { refuse(405, `${req.method} /health: use GET`, { Allow: 'GET' }); return; }
      if (draining) send(res, 503, JSON.stringify({ status: 'draining' }));
      else send(res, 200, health);
      return;
    }
    if (token !== undefined && !tokenMatches(req.headers.authorization, token)) {
      refuse(401, `${path}: missing or wrong bearer token (send "Authorization: Bearer <token>")`, { 'WWW-Authenticate': 'Bearer' });
      return;
    }
    if (path === '/metrics') {
      if (req.method !== 'GET') { refuse(405, `${req.method} /metrics: use GET`, { Allow: 'GET' }); return; }
      send(res, 200, metrics.text(batcher.depth, inflight), 'text/plain; version=0.0.4');
      return;
    }
    if (path !== '/v1/predict') { refuse(404, `${req.method} ${path}: no such endpoint (POST /v1/predict, GET /health, GET /metrics)`); return; }
    if (req.method !== 'POST') { refuse(405, `${req.method} /v1/predict: use POST`, { Allow: 'POST' }); return; }
    if (draining) { refuse(503, 'the server is shutting down', { Connection: 'close' }); return; }
    await predict(req, res, t0);
  };

  const server: Server = createServer({ requestTimeout: requestMs }, (req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) send(res, 500, error((e as Error).message));
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`startServer: cannot listen on ${host}:${port}: ${e.message}`)));
    server.listen(port, host, () => resolve());
  }).catch(async (e: unknown) => { await session.release(); throw e; });
  const addr = server.address() as AddressInfo;
  const urlHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;

  let closing: Promise<void> | null = null;
  const close = async (): Promise<void> => {
    draining = true;
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    let gaveUp = false;
    try {
      // In-flight requests include those still sending their bodies; they are served, and queued ones run.
      const drained = (async (): Promise<void> => {
        while (!gaveUp && (inflight > 0 || !batcher.idle)) {
          await batcher.whenIdle();
          if (inflight > 0) await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`weft serve: shutdown gave up after ${drainMs} ms with ${inflight} requests pending (${batcher.depth} queued)`)), drainMs);
      });
      await Promise.race([drained, timeout]);
    } finally {
      gaveUp = true;
      clearTimeout(timer);
      batcher.dispose();
      server.closeAllConnections();
      await closed;
      await session.release();
    }
  };
  return {
    host: addr.address, port: addr.port, url: `http://${urlHost}:${addr.port}`, signature: sig, settings,
    close: () => (closing ??= close()),
  };
}
