/**
 * Memory per rank of a training run, predicted without training: the run's `Trainer` is built
 * (parameters, data, the optimizer's zeroed state) and its step and evaluation are traced, never
 * compiled or run; the graphs are analysed by liveness (runtime/memory.ts).
 *
 *   params, buffers, grads   flat buffers: 4 bytes per element of the rank's layout (tensor
 *                            parallelism shards the layout, so tp halves the sharded tensors)
 *   optimizer                AdamW m and v: 8 bytes/param; SGD momentum: 4; Adafactor: for each
 *                            matrix [.., n, m] (n + m) * prod(leading dims), else the tensor, and
 *                            4 bytes/param more with a first moment
 *   activations              forward values the traced backward reads (liveness)
 *   workspace                the rest of what onnxruntime holds for the step and evaluation
 *                            sessions, plus JavaScript's copies of their outputs and the
 *                            optimizer's chunk-sized update programs
 *   runtime                  measured here: RSS of this process before the trainer is built (Node,
 *                            onnxruntime), and what building it added beyond the parameters (the
 *                            task's data and tokenizer), plus the loader's worker thread (calibrated)
 *
 * onnxruntime's CPU allocator: every session has its own BFC arena, which keeps what it grows to.
 * Sessions run without the memory pattern (runtime/ort.ts), so each intermediate is allocated
 * from the arena as it is made and later runs reuse the first run's chunks: a session holds its
 * liveness peak once (`ARENA_COPIES`; with the pattern it held it twice). That peak is taken in
 * onnxruntime's order over the graph it runs after its fusions, with its aliasing and its
 * planner's buffer reuse (`ortGraphMemory`: one session is created and released per program,
 * nothing runs); weft's own order under-counts checkpointed steps by a third. Each program of a
 * schedule (DDP's buckets, tensor-parallel cuts) is its own session, so their peaks add up.
 * `ORT_OVER_LIVENESS` (calibrated, see docs/memory.md) covers what the liveness misses: arena
 * rounding, kernel scratch and the session's own allocations. weft's per-run accounting
 * (trainer.ts `memoryAccounting`) keeps weft's order: it is a cheap, session-free figure of the
 * traced graph, and its saved-activation bytes do not depend on the order.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { graphMemory, ortGraphMemory, ortScheduleMemory } from '../runtime/memory.js';
import { takeOutGrouped } from '../runtime/native_products.js';
import type { GraphMemory, OrtProgramMemory } from '../runtime/memory.js';
import { CHUNK_PER_THREAD, chunkLength } from '../optim/common.js';
import { RING } from '../optim/offload.js';
import { GATHER_WINDOW } from '../parallel/zero.js';
import { settings } from '../runtime/executor.js';
import { rssBytes } from '../runtime/rss.js';
import type { CommArray, ProcessGroup, Work } from '../comm/process_group.js';
import type { Layout } from '../runtime/flat.js';
import type { RunConfig } from './config.js';
import { Trainer } from './trainer.js';

/**
 * Calibrated: bytes of RSS per byte of the liveness peak in onnxruntime's own order and buffers
 * (runtime/ort_graph.ts). The BFC arena's chunk rounding alone is 1.05-1.07 (profiler: bytes in
 * use over bytes requested, small GPT step at batch 4); the rest is kernel scratch and the
 * session's own allocations. Fit on small-b64-adamw alone (1.2 before: 1.029 there), checked on
 * every other config (docs/memory.md has the table and the command that reproduces it).
 */
export const ORT_OVER_LIVENESS = 1.16;
/** Derived from the allocator (see above): the first run's chunks serve every run. */
export const ARENA_COPIES = 1;
/**
 * Calibrated: how many earlier steps' gradient outputs (the fresh arrays onnxruntime returns every
 * step) are still resident at the peak: arrays V8 has not collected yet, and freed ones the
 * allocator keeps. Kept from the earlier fit of three gradient copies (the step's own and two
 * earlier steps'), on models whose gradients are 13-97 MiB.
 */
export const RETAINED_STEPS = 2;
/**
 * Calibrated: no more than this is retained, whatever the steps allocated: V8 collects once the
 * arrays outgrow its external-memory limit. Fit on a d768 x 12 GPT (325 MiB of gradients a step,
 * ZeRO stage 0 on 2 MPI ranks: 164-249 MiB retained, measured), where two whole earlier steps
 * over-counted the peak by 24% (docs/memory.md).
 */
export const RETAINED_TRANSIENT_BYTES = 200 * 2 ** 20;
/** Calibrated: the data loader's worker thread (its V8 isolate and the batches it has made). */
export const LOADER_WORKER_BYTES = 48 * 2 ** 20;

export interface MemoryEstimate {
  ranks: number;
  dp: number;
  tp: number;
  optimizer: RunConfig['train']['optimizer'];
  /** Bytes per rank. */
  params_bytes: number;
  buffers_bytes: number;
  grads_bytes: number;
  optimizer_bytes: number;
  activations_bytes: number;
  workspace_bytes: number;
  /** Measured at estimate time: Node and onnxruntime, and the task's data; plus the loader thread. */
  runtime_bytes: number;
  /** Predicted peak RSS of one rank's process (an MPI rank). */
  peak_bytes: number;
  /** With the threads backend every rank shares one process: its predicted peak RSS. */
  process_peak_bytes: number;
  /** What the figures come from: the step's programs (liveness peaks), the evaluation's. */
  detail: { step_programs: OrtProgramMemory[]; step_graph: GraphMemory; eval: OrtProgramMemory | null; eval_runs: number; step_copies: number };
}

/**
 * Optimizer state by formula (what the optimizers' `profiler.hold` reports; tested against it).
 * `paramsOnDisk`: the parameters are streamed from a file too (ZeRO stage 3 offloaded), one more ring.
 */
export function optimizerStateBytes(cfg: RunConfig['train'], layout: Layout, offload: RunConfig['parallel']['offload'] = 'none', paramsOnDisk = false): number {
  const vectors = (cfg.optimizer === 'adamw' ? 2 : cfg.optimizer === 'sgd' && cfg.momentum > 0 ? 1 : 0) + (paramsOnDisk ? 1 : 0);
  // Offloaded, the state is in files; memory holds the ring of chunk buffers (optim/offload.ts).
  if (offload === 'disk' && vectors > 0) return 4 * vectors * RING * Math.min(chunkLength(), layout.size);
  if (cfg.optimizer !== 'adafactor') return 4 * vectors * layout.size;
  let n = 0;
  for (const s of layout.slots) {
    const sh = s.shape;
    n += sh.length >= 2 ? s.size / sh.at(-1)! + s.size / sh.at(-2)! : s.size;
    if (cfg.adafactorBeta1 > 0) n += s.size;
  }
  return 4 * n;
}

/**
 * A group of `size` ranks that only has a shape: building a trainer needs no communication. It
 * names the threads backend, as `weft train --nproc N` runs: choices that depend on where the ranks
 * are (DDP's 'auto' cut, parallel/ddp.ts resolveDDPPrograms) are then made as that run makes them.
 */
class ShapeGroup implements ProcessGroup {
  readonly rank = 0;
  readonly backend = 'threads';
  readonly timeoutMs = 0;
  constructor(readonly size: number) {}
  private no(op: string): never { throw new Error(`memory estimate: ${op} was called; estimating communicates nothing (this is a bug)`); }
  allReduce(_b: CommArray): Work { return this.no('allReduce'); }
  broadcast(_b: CommArray): Work { return this.no('broadcast'); }
  reduce(_b: CommArray): Work { return this.no('reduce'); }
  allGather(_i: CommArray): Work { return this.no('allGather'); }
  reduceScatter(_i: CommArray): Work { return this.no('reduceScatter'); }
  gather(_i: CommArray): Work { return this.no('gather'); }
  scatter(_i: CommArray | null): Work { return this.no('scatter'); }
  allToAll(_i: CommArray): Work { return this.no('allToAll'); }
  allToAllV(_i: CommArray): Work { return this.no('allToAllV'); }
  barrier(): Work { return this.no('barrier'); }
  send(_b: CommArray): Work { return this.no('send'); }
  recv(_b: CommArray): Work { return this.no('recv'); }
  split(): Promise<ProcessGroup> { return this.no('split'); }
  destroy(): Promise<void> { return Promise.resolve(); }
}

/**
 * Predicts per-rank memory of `weft train cfg` on `nproc` ranks (dp = nproc / parallel.tp).
 * Builds the run's trainer in this process (its parameters are allocated and initialized, into a
 * temporary run directory) and traces its step; nothing is compiled.
 */
export async function estimateMemory(cfg: RunConfig, nproc = 1): Promise<MemoryEstimate> {
  if (!Number.isInteger(nproc) || nproc < 1) throw new Error(`estimateMemory: nproc must be a positive integer, got ${nproc}`);
  const out = mkdtempSync(join(tmpdir(), 'weft-memory-'));
  try {
    const before = rssBytes() ?? 0;
    const t = new Trainer({ ...cfg, out }, { pg: new ShapeGroup(nproc) });
    const built = rssBytes() ?? 0;
    const layout = t.params.flat.layout;
    // At ZeRO stage 3 the rank holds its parameter shard (none when it is offloaded to a file); the whole vector exists only per layer.
    const params = (t.zero3?.params ?? t.params.flat).data.byteLength;
    const buffers = t.params.buffers.data.byteLength;
    const traced = await t.traceStep();
    const whole = graphMemory(traced.step.outputs, traced.forward);
    const schedule = traced.groups !== null || t.tp.size > 1 || t.zero3 !== null;
    // Each program's peak is taken in onnxruntime's own execution order, over the graph it runs.
    // The step as it will run: with the products a native library takes (runtime/native_products.ts).
    const taken = await takeOutGrouped(traced.step.outputs, traced.groups ?? undefined);
    const cut = schedule || taken.outputs !== traced.step.outputs;
    const programs = cut ? await ortScheduleMemory(taken.outputs, taken.groups ? { groups: taken.groups } : {}) : null;
    const stepPrograms = programs?.programs ?? [await ortGraphMemory(traced.step.outputs, traced.forward)];
    const stepCopies = Math.min(ARENA_COPIES, cfg.train.steps * cfg.train.accumulate);
    // A session's arena keeps its intermediates; its outputs are handed to JavaScript (copied) and
    // released, so of a schedule's programs only one holds its outputs at a time (measured: four
    // sessions each with 128 MB of intermediates and a 64 MB output grew RSS by 4 x 133 + 125 MB).
    const arena = (g: GraphMemory, copies: number): number => ORT_OVER_LIVENESS * (copies * (g.peakBytes - g.outputBytes) + g.outputBytes) + g.constantBytes;
    // Stage 3's programs run without arenas (runtime/ort.ts): one program's intermediates at a time.
    const arenas = t.zero3 === null;
    const stepArena = arenas
      ? stepPrograms.reduce((s, g) => s + arena(g, stepCopies) - ORT_OVER_LIVENESS * g.outputBytes, 0) + ORT_OVER_LIVENESS * Math.max(...stepPrograms.map((g) => g.outputBytes))
      : ORT_OVER_LIVENESS * Math.max(...stepPrograms.map((g) => g.peakBytes)) + stepPrograms.reduce((s, g) => s + g.constantBytes, 0);
    // JavaScript holds the step's gradients (and, in a schedule, the values crossing cuts) until the
    // step returns; the gradients' arrays are garbage after that, collected some steps later.
    // (At stage 3 the step's gradients are the shard's; the gathered parameters and each layer's
    // whole gradients are values crossing cuts, held from their program to their last reader.)
    const gradOut = 4 * (t.zero3?.grads ?? t.params.flat).layout.size;
    const crossing = programs === null ? whole.outputBytes : programs.crossingPeakBytes;
    // ZeRO's communication buffers (parallel/zero.ts; S the shard's elements, N x S every segment's
    // padded length), each made once and reused: at stage 2 the reduce-scatters' send buffer (N x S, the DDP path);
    // the all-gathers' receive buffers (N x the largest c each): GATHER_WINDOW at stages 1 and 2 (the
    // parameters after each update), one at stage 3 (a checkpoint's segments).
    const N = t.dp.size;
    const send = t.zero?.stage === 2 && t.tp.size === 1 ? 4 * N * t.zero.shard.layout.size : 0;
    const gatherBuffer = 4 * N * Math.max(0, ...(t.zero?.shard.ranges ?? []).map((r) => r.c));
    const gathers = t.zero === null ? 0 : (t.zero.stage < 3 ? GATHER_WINDOW : 1) * gatherBuffer;
    // Stage 2's send buffer and the gradient outputs copied into it are counted as the larger of
    // the two, as measured (2 MPI ranks, GPT d512 x 8: stage 2 peaked 35 - 78 MiB below stage 0
    // with the tail cut, -73 to +15 MiB with a program per bucket, where counting both put the
    // estimate 48 MiB above stage 0 and 6 - 13% above the ranks).
    const live = Math.max(gradOut, send) + gathers + Math.max(0, crossing - whole.outputBytes);
    // Earlier steps' gradient outputs still resident: RETAINED_STEPS steps' worth, at most what the
    // run's steps before the last allocated, and no more than RETAINED_TRANSIENT_BYTES.
    const A = cfg.train.accumulate;
    const earlier = (Math.min(RETAINED_STEPS, cfg.train.steps - 1) * A + A - 1) * gradOut;
    const stepJs = live + Math.min(RETAINED_TRANSIENT_BYTES, earlier);
    // Under tensor parallelism the evaluation is a schedule too: its programs' sessions add up.
    const evalPrograms = traced.eval === null || (t.tp.size === 1 && t.zero3 === null) ? null : (await ortScheduleMemory(traced.eval.outputs)).programs;
    const evalGraph = traced.eval === null ? null : evalPrograms === null ? await ortGraphMemory(traced.eval.outputs)
      : arenas ? sumPrograms(evalPrograms) : evalPrograms.reduce((a, b) => (b.peakBytes > a.peakBytes ? b : a));
    const evals = Math.floor(cfg.train.steps / cfg.eval.every) + (cfg.train.steps % cfg.eval.every === 0 ? 0 : 1);
    // Only rank 0 evaluates under data parallelism; every rank does under tensor parallelism.
    const evalRuns = evalGraph ? evals * (t.evalFeedCount()) : 0;
    const evalArena = evalGraph && evalRuns > 0 ? arena(evalGraph, Math.min(ARENA_COPIES, evalRuns)) + evalGraph.outputBytes : 0;
    // The update runs chunk by chunk: the fed views are the buffers' own, the outputs are copies.
    const optWork = 2 * 3 * 4 * CHUNK_PER_THREAD * settings.threads;
    const workspace = stepArena + stepJs + evalArena + optWork - whole.savedBytes;
    // ZeRO: the optimizer's state covers only this rank's shard; at stage 2 so do the held gradients.
    const shard = t.zero?.shard.layout ?? null;
    const optimizer = optimizerStateBytes(cfg.train, shard ?? layout, cfg.parallel.offload, t.zero3?.file != null);
    const gradsHeld = t.grads === null ? 4 * (shard?.size ?? 0) : 4 * layout.size + (t.zero?.grads ? 4 * shard!.size : 0);
    // Stage 3 bound (and initialized) the whole vector before keeping its shard (offloaded: a
    // shard-sized copy written to the file): those transients are not the run's, whether or not a
    // collection has returned them yet.
    const bound = t.zero3 ? 4 * t.zero3.shard.layout.size + 4 * layout.size : params;
    const setup = Math.max(0, built - before - bound - buffers);
    const runtime = before + setup + LOADER_WORKER_BYTES;
    const peak = runtime + params + buffers + gradsHeld + optimizer + whole.savedBytes + workspace;
    return {
      ranks: nproc, dp: t.dp.size, tp: t.tp.size, optimizer: cfg.train.optimizer,
      params_bytes: params, buffers_bytes: buffers, grads_bytes: gradsHeld, optimizer_bytes: optimizer,
      activations_bytes: whole.savedBytes, workspace_bytes: Math.round(workspace), runtime_bytes: runtime,
      peak_bytes: Math.round(peak), process_peak_bytes: Math.round(before + nproc * (peak - before)),
      detail: { step_programs: stepPrograms, step_graph: whole, eval: evalGraph, eval_runs: evalRuns, step_copies: stepCopies },
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** Programs that are separate sessions, as one: their arenas and outputs add up. */
function sumPrograms(ps: readonly OrtProgramMemory[]): OrtProgramMemory {
  const sum = (k: 'peakBytes' | 'savedBytes' | 'outputBytes' | 'constantBytes' | 'nodes' | 'weftPeakBytes' | 'ortNodes' | 'guessed'): number => ps.reduce((s, p) => s + p[k], 0);
  return {
    peakBytes: sum('peakBytes'), savedBytes: sum('savedBytes'), outputBytes: sum('outputBytes'), constantBytes: sum('constantBytes'),
    nodes: sum('nodes'), weftPeakBytes: sum('weftPeakBytes'), ortNodes: sum('ortNodes'), guessed: sum('guessed'),
  };
}

const UNITS: Record<string, number> = {
  b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/**
 * A size such as `8GB`, `512MiB`, `1.5G` or `1000000` in bytes. Decimal units (kB, MB, GB, TB,
 * and the bare K, M, G, T) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024; case is
 * ignored. `what` names the input in the error (e.g. `--budget`).
 */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase() || 'b'] : undefined;
  if (!m || unit === undefined) throw new Error(`${what} must be a size such as 8GB, 512MiB or 1.5G, got '${text}'`);
  return Math.round(Number(m[1]) * unit);
}

/** Bytes as a short human figure in binary units (1.5 GiB, 1.25 GiB, 325.4 MiB). */
export function fmtBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (Math.abs(x) >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  // Two decimals below 10 (a 1.25 GiB budget reads as itself), trailing zeros dropped; one above.
  return `${i === 0 ? x : Math.abs(x) < 10 ? String(+x.toFixed(2)) : x.toFixed(1)} ${u[i]}`;
}
