/**
 * Training on a parameter server (docs/parameter-server.md): `weft train` with ps.servers = S
 * makes the last S ranks servers (parallel/ps/server.ts) and the others workers. A worker draws
 * its share of the batches, pulls the rows its batch touches (deduplicated) and the dense
 * parameters, runs DeepFM's forward and backward in onnxruntime, and pushes the gradients of
 * exactly those rows; the servers apply the optimizer. Worker 0 logs, evaluates (AUC and log loss
 * against the planted model's) and checkpoints: every server writes its shard once every worker
 * has finished the step, then worker 0 commits the run's checkpoint (so `latest` names only
 * complete ones). Any number of servers resumes from any checkpoint: each reads every shard file
 * and keeps the rows the ring now gives it.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { flight } from '../comm/flight.js';
import type { ProcessGroup } from '../comm/process_group.js';
import { plantedCtr } from '../data/ctr.js';
import type { CtrSplit } from '../data/ctr.js';
import { RandomWindowSampler, reshardSamplerState } from '../data/sampler.js';
import type { SamplerState } from '../data/sampler.js';
import { bindParameters } from '../nn/module.js';
import type { BoundParameters } from '../nn/module.js';
import { bceWithLogits, DeepFM } from '../nn/deepfm.js';
import { HashRing, rowKey } from '../parallel/hash_ring.js';
import { PsClient, uniqueIds } from '../parallel/ps/client.js';
import { psRoles, serverName } from '../parallel/ps/protocol.js';
import type { ServerStats } from '../parallel/ps/protocol.js';
import { runServer } from '../parallel/ps/server.js';
import type { Resize } from '../parallel/ps/server.js';
import { normalRow, ShardStore } from '../parallel/ps/store.js';
import type { PsOptimizerConfig, RowsBlob, TableSpec } from '../parallel/ps/store.js';
import { decodeShard, encodeShard } from './ps_shard_file.js';
import { setThreads } from '../runtime/executor.js';
import { FlatBuffer } from '../runtime/flat.js';
import { compile } from '../tensor/compile.js';
import { Tensor } from '../tensor/tensor.js';
import { auc, logLossFromLogits } from './auc.js';
import { fsyncDir, latestGoodCheckpoint, loadCheckpoint, saveCheckpoint, stepDirName, writeDurable } from './checkpoint.js';
import { parseConfig } from './config.js';
import type { RunConfig } from './config.js';
import { MetricsLog } from './metrics.js';
import { gradStep } from './step.js';

/** The dense parameters' table (rows are ps.chunk-float pieces of the flat vector) and the embedding table. */
export const DENSE = 0;
export const EMB = 1;

export interface PsRunOptions {
  resume?: boolean;
  /** Tests and benchmarks: milliseconds worker `w` sleeps after step `t` (a straggler). */
  delayMs?: (worker: number, step: number) => number;
  /** Tests: worker `w` throws after finishing step `t` (a dead worker). */
  failAt?: { worker: number; step: number };
}

export interface PsRunResult {
  role: 'worker' | 'server';
  index: number;
  steps: number;
  /** Servers: their counters. Workers: null. */
  stats: ServerStats | null;
  /** Worker 0: the last evaluation. Every worker: bytes it sent and received per training step on average, and its examples/s. */
  eval?: { auc: number; logLoss: number; oracleAuc: number; oracleLogLoss: number };
  bytesPerStep?: { out: number; in: number; rows: number };
  examplesPerSecond?: number;
  /** Worker 0: the dense parameters at the end (tests compare runs). */
  dense?: Float32Array;
}

export function psTables(cfg: RunConfig): TableSpec[] {
  return [
    { id: DENSE, name: 'dense', dim: cfg.ps.chunk, init: { kind: 'given' } },
    { id: EMB, name: 'embedding', dim: 1 + cfg.model.ctr.dim, init: { kind: 'normal', std: cfg.model.ctr.initStd, seed: cfg.train.seed } },
  ];
}

export function psOptimizer(cfg: RunConfig): PsOptimizerConfig {
  const p = cfg.ps;
  return { kind: p.optimizer, lr: p.lr, beta1: p.beta1, beta2: p.beta2, eps: p.eps, initialAccumulator: p.initialAccumulator };
}

/** The ring of `n` servers: ps0 .. ps(n-1). */
const ringOf = (cfg: RunConfig, n: number): HashRing => new HashRing(Array.from({ length: n }, (_, i) => serverName(i)), { virtualNodes: cfg.ps.virtualNodes });

/** The ring's changes (ps.active, ps.resize), and the ring that serves step `clock`. */
export function psRings(cfg: RunConfig): { at: (clock: number) => HashRing; resizes: Resize[] } {
  const p = cfg.ps;
  const rings = [{ clock: 0, ring: ringOf(cfg, p.active > 0 ? p.active : p.servers) }];
  for (let i = 0; i < p.resize.length; i += 2) rings.push({ clock: p.resize[i]!, ring: ringOf(cfg, p.resize[i + 1]!) });
  const resizes = rings.slice(1).map((r, i) => ({ clock: r.clock, before: rings[i]!.ring, after: r.ring }));
  return { at: (clock) => rings.filter((r) => r.clock <= Math.max(0, clock)).at(-1)!.ring, resizes };
}

export const ctrData = (cfg: RunConfig): ReturnType<typeof plantedCtr> => plantedCtr({
  ...(cfg.data.ctr.fields.length > 0 ? { fields: cfg.data.ctr.fields } : {}), rows: cfg.data.ctr.rows, train: cfg.data.ctr.train, test: cfg.data.ctr.test, seed: cfg.data.ctr.seed,
});

/** The model a CTR run trains (local row slots for one batch). */
export function ctrModel(cfg: RunConfig, fields: number, batch = cfg.train.batch): { model: DeepFM; params: BoundParameters; denseLength: number } {
  const model = new DeepFM({ fields, dim: cfg.model.ctr.dim, hidden: cfg.model.ctr.hidden, capacity: batch * fields });
  const params = bindParameters(model, { seed: cfg.train.seed });
  return { model, params, denseLength: params.flat.layout.slot('rows.w').offset };
}

const shardDir = (out: string, step: number): string => join(out, 'ps', stepDirName(step));
const shardFile = (dir: string, index: number, servers: number): string => join(dir, `shard-${index}-of-${servers}.safetensors`);

/** A shard file written under a temporary name, fsynced and renamed into place. */
function writeShard(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true });
  writeDurable(tmp, [bytes]);
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}

/** Every row of every shard file of a checkpoint's parameter-server state, as blobs per file. */
export function readShards(runDir: string, ckptState: { ps?: PsCheckpointState }, source: string): RowsBlob[][] {
  const ps = ckptState.ps;
  if (ps === undefined) throw new Error(`${source}: not a parameter-server checkpoint (its state has no 'ps' entry)`);
  const dir = join(runDir, ps.shards);
  const files = Array.from({ length: ps.servers }, (_, i) => shardFile(dir, i, ps.servers));
  for (const f of files) if (!existsSync(f)) throw new Error(`${source}: shard file ${f} is missing (${ps.servers} servers wrote this checkpoint)`);
  return files.map((f, i) => {
    const bytes = readFileSync(f);
    // Checkpoints since the shards' hashes were recorded: a flipped byte is caught before decoding.
    const want = ps.files?.[i];
    if (want !== undefined) {
      if (bytes.length !== want.bytes) throw new Error(`${f}: ${bytes.length} bytes, the checkpoint recorded ${want.bytes}`);
      const got = createHash('sha256').update(bytes).digest('hex');
      if (got !== want.sha256) throw new Error(`${f}: SHA-256 mismatch (the checkpoint recorded ${want.sha256.slice(0, 12)}..., the file has ${got.slice(0, 12)}...)`);
    }
    return decodeShard(bytes, f).blobs;
  });
}

/** What a parameter-server checkpoint's state.json records of its shards. */
export interface PsCheckpointState { shards: string; servers: number; mode?: string; files?: { bytes: number; sha256: string }[] }

export async function runPs(cfg: RunConfig, pg: ProcessGroup, opts: PsRunOptions = {}): Promise<PsRunResult> {
  const roles = psRoles(pg.size, cfg.ps.servers);
  setThreads(cfg.train.threads > 0 ? cfg.train.threads : Math.max(1, Math.floor(availableParallelism() / roles.workers.length)));
  const tables = psTables(cfg);
  const rings = psRings(cfg);
  const resume = opts.resume === true ? psResumePoint(cfg.out, pg.rank === 0) : null;
  if (pg.rank >= roles.workers.length) return serve(cfg, pg, roles, tables, rings, resume);
  // Workers need the state alone; the shard rows they read to verify are let go.
  return work(cfg, pg, roles, tables, rings, resume && { state: resume.state, shards: [] }, opts);
}

/** A checkpoint to resume from: its state, and the rows of every shard file it names. */
interface PsResume { state: { step: number; sampler: SamplerState; workers: number; ps?: PsCheckpointState }; shards: RowsBlob[][] }

/**
 * The newest checkpoint whose own files verify (latestGoodCheckpoint) and whose shard files under
 * `<out>/ps/step-N` all exist and decode; one that fails either is skipped and worker 0 logs it.
 * Every rank, worker or server, runs this same deterministic choice on the same files, so all
 * resume from the same step: workers read the shards too (once, here), since a server that skipped
 * a checkpoint must not meet workers that took it.
 */
function psResumePoint(out: string, lead: boolean): PsResume | null {
  let shards: RowsBlob[][] = [];
  const good = latestGoodCheckpoint(out, {
    log: lead ? (line) => { process.stdout.write(`${line}\n`); } : () => undefined,
    verify: (ck, path) => { shards = readShards(out, ck.state as PsResume['state'], path); },
  });
  return good === null ? null : { state: good.checkpoint.state as PsResume['state'], shards };
}

type Rings = ReturnType<typeof psRings>;

async function serve(cfg: RunConfig, pg: ProcessGroup, roles: { workers: number[]; servers: number[] }, tables: TableSpec[], rings: Rings, resume: PsResume | null): Promise<PsRunResult> {
  const index = pg.rank - roles.workers.length;
  const S = roles.servers.length;
  const store = new ShardStore(tables, psOptimizer(cfg));
  let startClock = 0;
  if (resume !== null) {
    startClock = resume.state.step;
    const ring = rings.at(startClock);
    const mine = (t: number) => (k: number): boolean => ring.ownerName(rowKey(t, k)) === serverName(index);
    for (const file of resume.shards) for (const b of file) store.importRows(b, mine(b.table));
  }
  const stats = await runServer(pg, {
    index, workers: roles.workers, store, tables, mode: cfg.ps.mode, staleness: cfg.ps.staleness, startClock,
    servers: roles.servers, resizes: rings.resizes,
    save: async (clock, blobs) => {
      const dir = shardDir(cfg.out, clock);
      mkdirSync(dir, { recursive: true });
      const bytes = encodeShard(blobs, { step: String(clock), server: String(index), servers: String(S) });
      writeShard(shardFile(dir, index, S), bytes);
      return { bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
    },
  });
  return { role: 'server', index, steps: 0, stats };
}

interface Pulled { after: SamplerState; keys: Int32Array; local: Int32Array; labels: Float32Array; dense: Float32Array; rows: Float32Array; minClock: number; waitMs: number }

async function work(cfg: RunConfig, pg: ProcessGroup, roles: { workers: number[]; servers: number[] }, tables: TableSpec[], rings: Rings, resume: PsResume | null, opts: PsRunOptions): Promise<PsRunResult> {
  const wi = pg.rank;
  const W = roles.workers.length;
  const lead = wi === 0;
  const B = cfg.train.batch;
  const data = ctrData(cfg);
  const F = data.train.fields;
  const { model, params, denseLength } = ctrModel(cfg, F);
  const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
  const step = gradStep(params, grads, (local: Tensor, y: Tensor) => bceWithLogits(model.forward(local), y), 'ctr_step');
  const chunk = cfg.ps.chunk;
  const nChunks = Math.ceil(denseLength / chunk);
  const denseKeys = Int32Array.from({ length: nChunks }, (_, i) => i);
  const ps = new PsClient(pg, { servers: roles.servers, ring: rings.at, tables, worker: wi, compression: cfg.ps.compression });
  const rowsSlot = params.flat.layout.slot('rows.w');
  const rowDim = 1 + cfg.model.ctr.dim;

  let start = 0;
  let samplerState: SamplerState | undefined;
  if (resume !== null) {
    const st = resume.state;
    start = st.step;
    samplerState = reshardSamplerState(Array.from({ length: st.workers }, () => st.sampler), W, wi);
  } else if (lead) {
    const init = new Float32Array(nChunks * chunk);
    init.set(params.flat.data.subarray(0, denseLength));
    await ps.init(DENSE, denseKeys, init);
  }
  const sampler = new RandomWindowSampler({ n: data.train.n, seed: cfg.train.dataSeed, rank: wi, worldSize: W }, samplerState);
  const log = lead ? new MetricsLog(cfg.out, { resumedAt: resume === null ? null : start, tensorboard: cfg.log.tensorboard }) : null;

  const draw = (t: number): Promise<Pulled> => {
    const ids = new Int32Array(B * F);
    const labels = new Float32Array(B);
    for (let i = 0; i < B; i++) {
      const r = sampler.next()!;
      ids.set(data.train.ids.subarray(r * F, (r + 1) * F), i * F);
      labels[i] = data.train.labels[r]!;
    }
    const after = sampler.state();
    const { keys, local } = uniqueIds(ids);
    const t0 = performance.now();
    return Promise.all([ps.pull(DENSE, denseKeys, t), ps.pull(EMB, keys, t)]).then(([d, e]) => ({
      after, keys, local, labels, dense: d.values, rows: e.values, minClock: Math.min(d.minClock, e.minClock), waitMs: performance.now() - t0,
    }));
  };
  const prefetch = cfg.ps.prefetch && (cfg.ps.mode === 'asp' || (cfg.ps.mode === 'ssp' && cfg.ps.staleness >= 1));
  const denseGrad = new Float32Array(nChunks * chunk);
  let next: Promise<Pulled> | null = null;
  let t = start;
  const tStart = performance.now();
  let bytes0 = { out: ps.bytesOut, in: ps.bytesIn };
  let lastEval: PsRunResult['eval'];
  let tLog = performance.now();
  let window = 0;
  let asideMs = 0;
  // Bytes of the training steps alone (not evaluation or checkpoint traffic).
  const stepBytes = { out: 0, in: 0, rows: 0 };
  for (; t < cfg.train.steps; t++) {
    const b0 = { out: ps.bytesOut, in: ps.bytesIn };
    flight.note(`step ${t + 1}: pulling the batch's rows`);
    const cur = await (next ?? draw(t));
    flight.note(`step ${t + 1}: forward, backward and pushes`);
    next = prefetch && t + 1 < cfg.train.steps ? draw(t + 1) : null;
    params.flat.data.set(cur.dense.subarray(0, denseLength), 0);
    params.flat.data.set(cur.rows, rowsSlot.offset);
    const U = cur.keys.length;
    const loss = await step([{ data: cur.local, shape: [B, F], dtype: 'int32' }, { data: cur.labels, shape: [B], dtype: 'float32' }]);
    denseGrad.set(grads.data.subarray(0, denseLength));
    await Promise.all([ps.push(DENSE, denseKeys, denseGrad, t), ps.push(EMB, cur.keys, grads.data.slice(rowsSlot.offset, rowsSlot.offset + U * rowDim), t)]);
    await ps.clock(t + 1);
    stepBytes.rows += U;
    stepBytes.out += ps.bytesOut - b0.out;
    stepBytes.in += ps.bytesIn - b0.in;
    if (opts.failAt !== undefined && opts.failAt.worker === wi && opts.failAt.step === t + 1) throw new Error(`worker ${wi}: injected failure after step ${t + 1}`);
    const delay = opts.delayMs?.(wi, t) ?? 0;
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const done = t + 1;
    window++;
    if (!lead) continue;
    // Evaluation and checkpoint traffic and time are not a training step's: the window restarts after them.
    let restart = false;
    if (done % cfg.log.every === 0 || done === cfg.train.steps) {
      const now = performance.now();
      const steps = window;
      const m = { step: done, loss, examples_s: Math.round((steps * B * W) / ((now - tLog) / 1000)), pull_wait_ms: Number(cur.waitMs.toFixed(2)), rows: U,
        bytes_out: Math.round((ps.bytesOut - bytes0.out) / steps), bytes_in: Math.round((ps.bytesIn - bytes0.in) / steps), stale: t - cur.minClock };
      restart = true;
      log!.append(m);
      process.stdout.write(`step ${done}/${cfg.train.steps} loss ${loss.toFixed(4)} ${m.examples_s} examples/s rows ${U} pushed ${(m.bytes_out / 1024).toFixed(1)} KiB/step\n`);
    }
    const tAside = performance.now();
    if (done % cfg.eval.every === 0 || done === cfg.train.steps) {
      lastEval = await evaluateCtr(model, params, denseLength, data.test, async (keys) => (await ps.pull(EMB, keys, done)).values, async () => (await ps.pull(DENSE, denseKeys, done)).values);
      log!.append({ step: done, val_loss: lastEval.logLoss, auc: lastEval.auc, oracle_auc: lastEval.oracleAuc });
      restart = true;
      process.stdout.write(`eval step ${done}: auc ${lastEval.auc.toFixed(4)} (planted model ${lastEval.oracleAuc.toFixed(4)}) log loss ${lastEval.logLoss.toFixed(4)} (${lastEval.oracleLogLoss.toFixed(4)})\n`);
    }
    if (done % cfg.checkpoint.every === 0 || done === cfg.train.steps) {
      // Each server's file length and SHA-256, recorded here and checked on resume.
      const files = await ps.save(done);
      saveCheckpoint(cfg.out, done, {
        weights: {}, optimizer: {},
        state: { config: cfg, step: done, sampler: cur.after, workers: W, ps: { shards: join('ps', stepDirName(done)), servers: roles.servers.length, mode: cfg.ps.mode, files } },
        keep: cfg.checkpoint.keep,
      });
      pruneShardDirs(cfg.out);
      restart = true;
    }
    asideMs += performance.now() - tAside;
    if (restart) { bytes0 = { out: ps.bytesOut, in: ps.bytesIn }; tLog = performance.now(); window = 0; }
  }
  // Examples/s over the training steps: worker 0's evaluations and checkpoints left out.
  const elapsed = (performance.now() - tStart - asideMs) / 1000;
  const stepsRun = t - start;
  const result: PsRunResult = {
    role: 'worker', index: wi, steps: stepsRun, stats: null,
    bytesPerStep: { out: stepBytes.out / Math.max(1, stepsRun), in: stepBytes.in / Math.max(1, stepsRun), rows: stepBytes.rows / Math.max(1, stepsRun) },
    examplesPerSecond: (stepsRun * B) / elapsed,
  };
  if (lead) {
    result.dense = (await ps.pull(DENSE, denseKeys, t)).values.slice(0, denseLength);
    if (lastEval !== undefined) result.eval = lastEval;
  }
  await ps.done();
  return result;
}

/** Removes shard directories no checkpoint of the run names any more. */
function pruneShardDirs(out: string): void {
  const root = join(out, 'ps');
  if (!existsSync(root)) return;
  const kept = new Set(readdirSync(out).filter((d) => d.startsWith('step-')));
  for (const d of readdirSync(root)) if (!kept.has(d)) rmSync(join(root, d), { recursive: true, force: true });
}

/**
 * AUC and log loss of the model over a test split, in batches of the model's capacity; rows and
 * dense parameters come from `rowsOf` / `denseOf` (the servers, or a checkpoint's shard files).
 * The planted model's own AUC and log loss on the same examples are the best achievable.
 */
export async function evaluateCtr(model: DeepFM, params: BoundParameters, denseLength: number, test: CtrSplit,
  rowsOf: (keys: Int32Array) => Promise<Float32Array>, denseOf: () => Promise<Float32Array>): Promise<NonNullable<PsRunResult['eval']>> {
  const F = test.fields;
  const B = model.cfg.capacity / F;
  const was = params.flat.data.slice();
  params.flat.data.set((await denseOf()).subarray(0, denseLength), 0);
  const rowsSlot = params.flat.layout.slot('rows.w');
  const fwd = compile((local: Tensor) => [model.forward(local)], 'ctr_eval');
  const logits = new Float64Array(test.n);
  for (let s = 0; s < test.n; s += B) {
    const n = Math.min(B, test.n - s);
    const ids = new Int32Array(B * F);
    ids.set(test.ids.subarray(s * F, (s + n) * F));
    const { keys, local } = uniqueIds(ids);
    params.flat.data.set(await rowsOf(keys), rowsSlot.offset);
    const [out] = await fwd({ data: local, shape: [B, F], dtype: 'int32' });
    for (let i = 0; i < n; i++) logits[s + i] = Number(out![i]);
  }
  params.flat.data.set(was);
  return { auc: auc(logits, test.labels), logLoss: logLossFromLogits(logits, test.labels), oracleAuc: auc(test.logits, test.labels), oracleLogLoss: logLossFromLogits(test.logits, test.labels) };
}

/**
 * `weft eval`: a CTR run's checkpoint (a run directory: its latest; or a step directory) on its
 * planted test split, read from the shard files whatever number of servers wrote them; rows the
 * checkpoint does not hold were never touched and are their init, as a server would create them.
 */
export async function evaluateCheckpoint(path: string, opts: { test?: number } = {}): Promise<{ step: number; examples: number; servers: number } & NonNullable<PsRunResult['eval']>> {
  const ck = loadCheckpoint(path);
  const isStep = existsSync(join(path, 'state.json'));
  const runDir = isStep ? join(path, '..') : path;
  const state = ck.state as { config?: unknown; step: number; ps?: { shards: string; servers: number } };
  if (state.ps === undefined) throw new Error(`weft eval: ${path} is not a parameter-server (model.kind 'ctr') checkpoint: its state.json has no 'ps' entry`);
  const cfg = parseConfig(state.config, `${path} state.json config`);
  if (opts.test !== undefined) cfg.data.ctr.test = opts.test;
  const data = ctrData(cfg);
  const F = data.test.fields;
  const { model, params, denseLength } = ctrModel(cfg, F, Math.min(cfg.train.batch * 4, 4096));
  const tables = psTables(cfg);
  const rows = new Map<number, Float32Array>();
  const dense = new Float32Array(Math.ceil(denseLength / cfg.ps.chunk) * cfg.ps.chunk);
  for (const file of readShards(runDir, state, path)) {
    for (const b of file) {
      for (let i = 0; i < b.keys.length; i++) {
        const v = b.values.subarray(i * b.dim, (i + 1) * b.dim);
        if (b.table === EMB) rows.set(b.keys[i]!, v);
        else if (b.table === DENSE) dense.set(v, b.keys[i]! * b.dim);
      }
    }
  }
  const emb = tables[1]!;
  const dim = emb.dim;
  const init = emb.init as { kind: 'normal'; std: number; seed: number };
  const rowsOf = async (keys: Int32Array): Promise<Float32Array> => {
    const out = new Float32Array(keys.length * dim);
    keys.forEach((k, i) => {
      const r = rows.get(k);
      if (r !== undefined) out.set(r, i * dim);
      else normalRow(init.seed, EMB, k, init.std, out, i * dim, dim);
    });
    return out;
  };
  const e = await evaluateCtr(model, params, denseLength, data.test, rowsOf, async () => dense);
  return { step: state.step, examples: data.test.n, servers: state.ps.servers, ...e };
}
