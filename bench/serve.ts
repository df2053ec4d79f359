/**
 * `weft serve` under load on loopback (docs/serve.md): the MNIST recipe's CNN (recipes/mnist-cnn.json's
 * convNet, bound, untrained: the weights do not change the cost) exported with exportCnn, served
 * by the CLI in a child process (so the clients' JSON work does not share the server's thread),
 * and N requests of one image each from C concurrent keep-alive clients, batching on (max batch,
 * max wait) and off (max batch 1), alternated in pairs (on, off, on, off) so drift on a shared
 * machine falls on both. Every answer is compared with a direct run of its own image (one
 * batched session run before the load), so a lost, repeated or misrouted answer is counted.
 * Prints one JSON object with the CPU and writes it to bench/results/serve.json.
 *
 * `--two-sessions` instead measures whether a second session in the server's process helps: 40 runs
 * of batch 8 on one session, against 20 pairs started together on two sessions.
 *
 * `--write-model FILE` writes the model and stops (for `weft bench-infer FILE --batch 1,8,32`: its
 * cost per row by batch size, which bounds what batching can gain).
 *
 *   npm run bench:serve -- [--two-sessions] [--write-model FILE] [--requests 2000] [--clients 32] [--max-batch 32] [--max-wait-ms 2] [--threads 1] [--pairs 2] [--form compact|nested] [--model cnn|mlp] [--hidden 4096] [--node-args '--cpu-prof']
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, num } from '../src/cli/args.js';
import { exportCnn } from '../src/deploy/export.js';
import { bindParameters } from '../src/nn/module.js';
import { convNet } from '../src/nn/vision.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import { mlp, mlpOnnx, uniform } from '../test/helpers/deploy_models.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const CLASSES = 10;

const { opt, on } = parse(process.argv.slice(2), ['--requests', '--clients', '--max-batch', '--max-wait-ms', '--threads', '--pairs', '--form', '--node-args', '--model', '--write-model', '--hidden'], ['--two-sessions']);
const N = num(opt, '--requests', 2000);
const CLIENTS = num(opt, '--clients', 32);
const MAX_BATCH = num(opt, '--max-batch', 32);
const MAX_WAIT = num(opt, '--max-wait-ms', 2);
const THREADS = num(opt, '--threads', 1);
const PAIRS = num(opt, '--pairs', 2);
const FORM = opt.get('--form') ?? 'compact';
/** 'cnn' (the load test of the issue) or 'mlp' (784 -> 4096 -> 10: a run that is a matrix-vector product at batch 1, where batching pays). */
const MODEL = opt.get('--model') ?? 'cnn';
/** The MLP's hidden width: 4096 keeps its 12.8 MB of weights in this EPYC's L3; 16384 (51 MB) reads them from DRAM on every batch-1 run. */
const HIDDEN = num(opt, '--hidden', 4096);
/** Extra node flags for the server process (e.g. '--cpu-prof --cpu-prof-dir=prof': where its time goes). */
const NODE_ARGS = (opt.get('--node-args') ?? '').split(' ').filter((a) => a !== '');

interface Server { child: ChildProcess; url: string; stderr: () => string }

/** Starts `weft serve` on a free port; resolves with its URL from the line it prints (20 s at most). */
function serve(model: string, maxBatch: number): Promise<Server> {
  const child = spawn(process.execPath, [...NODE_ARGS, CLI, 'serve', model, '--port', '0', '--max-batch', String(maxBatch), '--max-wait-ms', String(MAX_WAIT),
    '--threads', String(THREADS), '--queue', String(Math.max(256, CLIENTS * 2))], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`weft serve printed nothing within 20 s: ${err}`)); }, 20_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /http:\/\/[\d.]+:\d+/.exec(out);
      if (m !== null) { clearTimeout(timer); resolve({ child, url: m[0], stderr: () => err }); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`weft serve exited ${code}: ${err}`)); });
  });
}

/** SIGTERM, then the exit code (a graceful close exits 0); 20 s at most. */
function stop(s: Server): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { s.child.kill('SIGKILL'); reject(new Error('weft serve did not exit within 20 s of SIGTERM')); }, 20_000);
    s.child.removeAllListeners('exit');
    s.child.once('exit', (code) => { clearTimeout(timer); resolve(code); });
    s.child.kill('SIGTERM');
  });
}

interface Answer { status: number; body: string; ms: number }

function post(url: string, body: Buffer, agent: Agent): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request(`${url}/v1/predict`, { method: 'POST', agent, timeout: 30_000, headers: { 'Content-Type': 'application/json', 'Content-Length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', (e) => resolve({ status: -1, body: e.message, ms: performance.now() - t0 }));
    req.end(body);
  });
}

const pct = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

/** N requests from CLIENTS loops, each taking the next request index; every answer checked against `want`. */
async function load(url: string, bodies: readonly Buffer[], want: Float32Array, count: number, output: string) {
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS });
  const answers: (Answer | undefined)[] = new Array(count);
  let next = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    for (let i = next++; i < count; i = next++) answers[i] = await post(url, bodies[i % bodies.length]!, agent);
  }));
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  agent.destroy();
  let non200 = 0;
  let lost = 0;
  let wrong = 0;
  const ms: number[] = [];
  answers.forEach((a, i) => {
    if (a === undefined || a.status === -1) { lost++; return; }
    if (a.status !== 200) { non200++; return; }
    ms.push(a.ms);
    const got = (JSON.parse(a.body) as { outputs: Record<string, { data: number[] }> }).outputs[output]!.data;
    const k = i % bodies.length;
    // Another request's logits differ by far more than 1e-4; batched and single runs agree to ~1e-6.
    if (got.length !== CLASSES || got.some((v, c) => Math.abs(v - want[k * CLASSES + c]!) > 1e-4)) wrong++;
  });
  ms.sort((a, b) => a - b);
  return {
    requests: count, seconds: +seconds.toFixed(3), requests_per_s: +(count / seconds).toFixed(1),
    p50_ms: +pct(ms, 50).toFixed(2), p99_ms: +pct(ms, 99).toFixed(2), non_200: non200, lost, wrong_or_duplicated: wrong,
    client_cpu_ms_per_request: +((c.user + c.system) / 1000 / count).toFixed(3),
  };
}

async function metrics(url: string): Promise<{ batches: number; mean_rows: number }> {
  const agent = new Agent();
  const r = await new Promise<string>((resolve, reject) => {
    const req = request(`${url}/metrics`, { agent, timeout: 10_000 }, (res) => { let t = ''; res.on('data', (c: Buffer) => { t += c.toString(); }); res.on('end', () => resolve(t)); });
    req.on('timeout', () => req.destroy(new Error('/metrics: no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
  const v = (name: string): number => Number(r.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? NaN);
  return { batches: v('weft_batches_total'), mean_rows: +(v('weft_batch_rows_sum') / v('weft_batch_rows_count')).toFixed(2) };
}

/** The served model: its bytes, input and output names, and one row's shape. */
function modelSpec(): { label: string; bytes: Uint8Array; input: string; output: string; row: number[] } {
  if (MODEL === 'mlp') {
    return { label: `MLP 784 -> ${HIDDEN} -> 10 (Gemm, ReLU, Gemm)`, bytes: mlpOnnx(mlp(784, HIDDEN, CLASSES), 784), input: 'x', output: 'y', row: [784] };
  }
  if (MODEL !== 'cnn') throw new Error(`--model must be cnn or mlp, got '${MODEL}'`);
  const net = convNet({ input: [1, 28, 28], classes: CLASSES, channels: [32, 64, 128], hidden: 128, batchNorm: true, dropout: 0.25 });
  bindParameters(net, { seed: 1 });
  return { label: 'convNet channels [32, 64, 128], hidden 128, BatchNorm (recipes/mnist-cnn.json), exportCnn', bytes: exportCnn(net).bytes, input: 'images', output: 'logits', row: [1, 28, 28] };
}

/** A flat row as a nested array of `shape`. */
function nest(x: readonly number[], shape: readonly number[]): unknown {
  if (shape.length === 1) return [...x];
  const per = x.length / shape[0]!;
  return Array.from({ length: shape[0]! }, (_, i) => nest(x.slice(i * per, (i + 1) * per), shape.slice(1)));
}

/** User + system CPU seconds of process `pid` so far (/proc/<pid>/stat, clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** One session's runs back to back against two sessions' runs started together (3 alternating rounds). */
async function twoSessions(bytes: Uint8Array, input: string, row: readonly number[]): Promise<void> {
  const a = await createInferenceSession(bytes, { threads: THREADS });
  const b = await createInferenceSession(bytes, { threads: THREADS });
  const n = row.reduce((p, q) => p * q, 1);
  const f = { [input]: { dtype: 'float32' as const, dims: [8, ...row], data: uniform(8 * n) } };
  for (let i = 0; i < 3; i++) { await a.run(f); await b.run(f); }
  const rounds: { one_session_ms: number; two_sessions_ms: number }[] = [];
  for (let r = 0; r < 3; r++) {
    let t0 = performance.now();
    for (let i = 0; i < 20; i++) { await a.run(f); await a.run(f); }
    const one = performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < 20; i++) await Promise.all([a.run(f), b.run(f)]);
    rounds.push({ one_session_ms: +one.toFixed(1), two_sessions_ms: +(performance.now() - t0).toFixed(1) });
  }
  await a.release();
  await b.release();
  const c = cpuInfo();
  process.stdout.write(`${JSON.stringify({ bench: 'serve-two-sessions', cpu: { model: c.model, isa: c.isa }, load_avg_1m: +loadavg()[0]!.toFixed(2), runs: 40, batch: 8, threads: THREADS, rounds })}\n`);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bench-serve-'));
  try {
    const spec = modelSpec();
    const { bytes, input, output, row } = spec;
    if (on.has('--two-sessions')) { await twoSessions(bytes, input, row); return; }
    const save = opt.get('--write-model');
    if (save !== undefined) { writeFileSync(save, bytes); return; }
    const model = join(dir, 'model.onnx');
    writeFileSync(model, bytes);
    const ROW = row.reduce((a, b) => a * b, 1);
    // Distinct images (a fixed pool of 500, reused in order), and their logits from direct runs.
    const pool = Math.min(N, 500);
    const images = uniform(pool * ROW, 7);
    const want = new Float32Array(pool * CLASSES);
    const direct = await createInferenceSession(bytes, { threads: THREADS });
    for (let s = 0; s < pool; s += 100) {
      const r = Math.min(100, pool - s);
      const out = await direct.run({ [input]: { dtype: 'float32', dims: [r, ...row], data: images.slice(s * ROW, (s + r) * ROW) } });
      want.set(out[output]!.data as Float32Array, s * CLASSES);
    }
    await direct.release();
    const bodies = Array.from({ length: pool }, (_, k) => {
      const x = Array.from(images.subarray(k * ROW, (k + 1) * ROW));
      return Buffer.from(JSON.stringify({ inputs: { [input]: FORM === 'nested' ? [nest(x, row)] : { dims: [1, ...row], data: x } } }));
    });
    const runs: Record<string, unknown>[] = [];
    const ratios: number[] = [];
    for (let p = 0; p < PAIRS; p++) {
      const pair: Record<string, { requests_per_s: number }> = {};
      for (const [label, maxBatch] of [['on', MAX_BATCH], ['off', 1]] as const) {
        const s = await serve(model, maxBatch);
        await load(s.url, bodies, want, Math.min(200, N), output); // warm-up: sockets, the session's arena, JIT
        const before = await metrics(s.url);
        const cpu0 = cpuSeconds(s.child.pid!);
        const r = await load(s.url, bodies, want, N, output);
        const cpu = cpuSeconds(s.child.pid!) - cpu0;
        const after = await metrics(s.url);
        const batches = after.batches - before.batches;
        const exit = await stop(s);
        const row = { batching: label, max_batch: maxBatch, max_wait_ms: MAX_WAIT, ...r, runs: batches, mean_rows_per_run: +(N / batches).toFixed(2), server_cpu_ms_per_request: +((cpu * 1000) / N).toFixed(3), exit_code: exit };
        process.stderr.write(`${JSON.stringify(row)}\n`);
        runs.push(row);
        pair[label] = r;
      }
      ratios.push(+(pair['on']!.requests_per_s / pair['off']!.requests_per_s).toFixed(3));
    }
    const c = cpuInfo();
    const report = {
      bench: 'serve', cpu: { model: c.model, isa: c.isa, cores: c.cores }, load_avg_1m: +loadavg()[0]!.toFixed(2),
      model: spec.label, form: FORM,
      requests: N, clients: CLIENTS, server_threads: THREADS, runs,
      throughput_ratio_on_over_off: ratios,
      non_200_total: runs.reduce((a, r) => a + (r['non_200'] as number), 0),
      lost_total: runs.reduce((a, r) => a + (r['lost'] as number), 0),
      wrong_or_duplicated_total: runs.reduce((a, r) => a + (r['wrong_or_duplicated'] as number), 0),
    };
    process.stdout.write(`${JSON.stringify(report, null, 1)}\n`);
    const results = fileURLToPath(new URL('../../bench/results', import.meta.url));
    mkdirSync(results, { recursive: true });
    writeFileSync(join(results, MODEL === 'mlp' ? `serve-mlp-${HIDDEN}.json` : `serve-${MODEL}.json`), `${JSON.stringify(report, null, 1)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
