/**
 * `weft bench`: the benchmark GPT's training step (forward + backward + AdamW(lr 3e-4, wd 0.1) on
 * random tokens; median step after 3 warm-ups, as ../shared/anchors/torch_gpt.py measures), run
 * side by side with PyTorch at the same thread count when the anchor and python3-torch are there.
 * Each measurement runs in its own process so thread settings are clean.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindParameters, GPT, GPT_PRESETS, gptWidths, PRESET_BATCH } from '../nn/index.js';
import { AdamW } from '../optim/adamw.js';
import { setMatmulPrecision, setThreads } from '../runtime/executor.js';
import type { MatmulPrecision } from '../runtime/executor.js';
import { FlatBuffer } from '../runtime/flat.js';
import { profiler } from '../runtime/profiler.js';
import { Rng } from '../tensor/random.js';
import { gradStep } from '../train/step.js';
import { ddpBuckets, DistributedDataParallel, resolveDDPPrograms } from '../parallel/ddp.js';
import type { DDPPrograms } from '../parallel/ddp.js';
import type { Precision } from '../nn/step_graph.js';
import { ZeroShard } from '../parallel/zero.js';
import { ZeroStage3 } from '../parallel/zero3.js';
import { globalNorm } from '../optim/clip.js';
import { gptPipeline, parallelizeGPT } from '../nn/gpt_plan.js';
import { PipelineStage } from '../parallel/pipeline.js';
import { pipelineTable } from '../parallel/pipeline_schedule.js';
import type { ScheduleKind } from '../parallel/pipeline_schedule.js';
import '../parallel/spmd.js';
import { launchThreads } from '../comm/threads/launch.js';
import { cpuInfo } from '../runtime/cpu.js';
import { nativeStats } from '../runtime/native_products.js';
import { blas } from '../runtime/blas.js';
import type { ProcessGroup } from '../comm/process_group.js';

export type Preset = keyof typeof GPT_PRESETS;

export interface WeftMeasurement {
  system: 'weft'; preset: Preset; threads: number; ranks: number; ddp_cut?: DDPPrograms; ddp_programs?: number; crossing_mb?: number; exposed_comm_ms?: number; peer_wait_ms?: number; comm_alone_ms?: number; comm_hidden_fraction?: number; params: number; step_s: number; fwd_bwd_s: number; optimizer_s: number;
  tokens_per_s: number; model_gflops_per_s: number; loss: number;
  /** The ISA, and the model FLOP/s as a fraction of the FP32 peak of the cores the measurement used (threads x ranks; cpuInfo's basis). */
  isa?: string; fraction_of_peak?: number | null; native_products?: number; held_mb: number; segments_ms: Record<string, number>;
  /** Tensor parallel only: the degree, collectives per step by op, bytes each rank moves per step, and the schedule's shape. */
  tp?: number; collectives?: Record<string, number>; wire_mb_per_step?: number; programs?: number; overlapping_programs?: number;
  /** Pipeline only: the layout, the bubble's formula and each stage's measured bubble (and their mean). */
  pp?: number; schedule?: string; microbatches?: number; chunks?: number; bubble_formula?: number; bubble_by_stage?: number[]; bubble?: number;
}

/** B rows of T + 1 random tokens: each row's first T into `idx`, its last T into `tgt` (the next-token targets). */
function randomTokens(rng: Rng, vocab: number, B: number, T: number, idx: BigInt64Array, tgt: BigInt64Array): void {
  for (let r = 0; r < B; r++) {
    const row = Array.from({ length: T + 1 }, () => BigInt(rng.int(vocab)));
    for (let j = 0; j < T; j++) { idx[r * T + j] = row[j]!; tgt[r * T + j] = row[j + 1]!; }
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The ISA, and `gflops` over the FP32 peak of `cores` of this machine's (cpuInfo: its clock and ISA). */
function peakOf(gflops: number, cores: number): { isa: string; fraction_of_peak: number | null } {
  const cpu = cpuInfo();
  const peak = cpu.fp32PeakGflops === null ? null : (cpu.fp32PeakGflops * Math.min(cores, cpu.cores)) / cpu.cores;
  return { isa: cpu.isa, fraction_of_peak: peak === null ? null : +(gflops / peak).toFixed(3) };
}

/**
 * One weft measurement in this process, or on this rank of `pg` (data parallel: each rank trains
 * its own batch of the preset's size, tokens/s counts every rank's tokens).
 */
/**
 * A measurement's settings: the step's precision (fp32, or mixed precision: nn/step_graph.ts), its
 * float32 products' (train.matmulPrecision: runtime/executor.ts `setMatmulPrecision`), and
 * data parallel's bucket size (MB) and where its backward is cut (DDPOptions.programs).
 */
export interface BenchSettings { bucketMB: number; programs: DDPPrograms; precision: Precision; matmulPrecision: MatmulPrecision }
export const BENCH_DEFAULTS: BenchSettings = { bucketMB: 25, programs: 'tail', precision: 'fp32', matmulPrecision: 'highest' };

export async function measureWeft(preset: Preset, threads: number, steps: number, pg?: ProcessGroup, dp: BenchSettings = BENCH_DEFAULTS, tp = 1, zero = 0, offload = false): Promise<WeftMeasurement> {
  const { bucketMB, programs } = dp;
  const precision = dp.precision ?? 'fp32';
  const stepOpts = precision === 'fp32' ? {} : { precision };
  if (!(preset in GPT_PRESETS)) throw new Error(`bench: preset must be small or medium, got '${preset}'`);
  setThreads(threads);
  setMatmulPrecision(dp.matmulPrecision ?? 'highest');
  const cfg = GPT_PRESETS[preset];
  const [B, T] = [PRESET_BATCH[preset], cfg.ctx];
  const model = new GPT(cfg);
  // Tensor parallel over every rank (tp = ranks): one batch, each rank its shards of every layer.
  if (tp > 1) {
    if (!pg || pg.size !== tp) throw new Error(`bench: --tp ${tp} needs --nproc ${tp} (tensor parallel over every rank)`);
    parallelizeGPT(model, { axis: 'tp', size: tp, index: pg.rank });
  }
  let params = bindParameters(model, { seed: 0 });
  if (zero > 0 && (!pg || pg.size < 2 || tp > 1)) throw new Error('bench: --zero needs --nproc >= 2 and no --tp');
  // ZeRO as the trainer runs it: DDP's buckets are the segments; stage 2 keeps only a gradient shard;
  // stage 3 shards the parameters per block and gathers them inside the step (parallel/zero3.ts).
  // With offload, stage 3's parameter shard is in a file too (as the trainer runs parallel.offload 'disk').
  const offloadDir = offload ? mkdtempSync(join(tmpdir(), `weft-bench-offload-${pg?.rank ?? 0}-`)) : null;
  const z3 = zero === 3 ? new ZeroStage3(params, { units: ['h*'], rank: pg!.rank, size: pg!.size, ...(offloadDir ? { offload: { dir: offloadDir } } : {}) }) : null;
  // The whole vector is dropped, as the trainer drops it: only the shard is held.
  if (z3) params = { ...params, flat: FlatBuffer.detached(params.flat.layout, 'params') };
  const shard = zero > 0 && zero < 3 ? new ZeroShard(params.flat.layout, ddpBuckets(params.flat.layout.slots, { bucketBytes: bucketMB * 2 ** 20, programs: resolveDDPPrograms(programs, pg!) }), { rank: pg!.rank, size: pg!.size }) : null;
  const shardGrads = zero === 2 ? shard!.zeros('zero.grads') : z3?.grads ?? null;
  const grads = zero >= 2 ? null : FlatBuffer.zeros(params.flat.layout, 'grads');
  const opt = new AdamW(z3?.params ?? params.flat, { lr: 3e-4, weightDecay: 0.1, ...(shard ? { shard } : {}), ...(offloadDir ? { offload: { dir: offloadDir, ...(z3?.file ? { params: z3.file } : {}) } } : {}) });
  const ddp = pg && pg.size > 1 && tp === 1 && !z3 ? new DistributedDataParallel(pg, params, grads, (idx, tgt) => model.loss(idx!, tgt!), {
    bucketBytes: bucketMB * 2 ** 20, programs, step: stepOpts, ...(shardGrads ? { zero: { shard: shard!, grads: shardGrads } } : {}),
  }) : null;
  const optStep = async (): Promise<void> => {
    const part = shard ?? z3?.shard ?? null;
    if (part === null) { await opt.step(grads!); return; }
    const norm = shardGrads ? Math.sqrt(Object.values(await part.sumSquares(pg!, shardGrads.data)).reduce((a, x) => a + x, 0)) : await globalNorm(grads!.data);
    await opt.step(shardGrads ?? grads!, 3e-4, { norm });
    if (shard) await shard.allGatherInPlace(pg!, params.flat.data);
  };
  const tpStep = tp > 1 ? gradStep(params, grads!, (idx, tgt) => model.loss(idx!, tgt!), 'fwd_bwd', { context: { groups: { tp: pg! } }, ...stepOpts })
    : z3 ? gradStep(params, z3.grads, (idx, tgt) => model.loss(idx!, tgt!), 'fwd_bwd', { context: { groups: { dp: pg! }, stores: z3.stores }, shardParameters: z3.rewrite, arena: false, ...stepOpts }) : null;
  const step = ddp ? (feeds: Parameters<typeof ddp.step>[0]) => ddp.step(feeds) : tpStep ?? gradStep(params, grads!, (idx, tgt) => model.loss(idx!, tgt!), 'fwd_bwd', stepOpts);
  if (ddp) await ddp.broadcastParameters();
  const rng = new Rng(tp > 1 ? 0 : pg?.rank ?? 0);
  const tpExposed: number[] = [];
  const exposed: number[] = [];
  const peerWait: number[] = [];
  const commAlone: number[] = [];
  const [idx, tgt] = [new BigInt64Array(B * T), new BigInt64Array(B * T)];
  const total: number[] = [];
  const fb: number[] = [];
  let loss = 0;
  for (let i = 0; i < steps + 3; i++) {
    randomTokens(rng, cfg.vocab, B, T, idx, tgt);
    const t0 = performance.now();
    loss = await step([{ data: idx, shape: [B, T], dtype: 'int64' }, { data: tgt, shape: [B, T], dtype: 'int64' }]);
    const t1 = performance.now();
    await optStep();
    total.push((performance.now() - t0) / 1000);
    fb.push((t1 - t0) / 1000);
    if (tpStep) tpExposed.push(tpStep.schedule!.hostMs);
    if (z3) {
      // Stage 3's gathers and reduce-scatters with nothing to hide behind, in the step's order.
      const c0 = performance.now();
      const mine = new Float32Array(z3.shard.layout.size);
      for (let k = 0; k < z3.shard.ranges.length; k++) for (let j = 0; j < 2; j++) await z3.shard.allGatherSegment(pg!, k, mine);
      for (const [k, r] of z3.shard.ranges.entries()) await z3.shard.reduceScatter(pg!, k, new Float32Array(r.segHi - r.segLo), new Float32Array(r.c)).wait();
      commAlone.push(performance.now() - c0);
    }
    if (ddp) {
      exposed.push(ddp.stats.commExposedMs);
      peerWait.push(ddp.stats.peerWaitMs);
      // The same all-reduces with nothing to hide behind: what communication costs on its own.
      const c0 = performance.now();
      const scratch = grads?.data ?? new Float32Array(params.flat.layout.size);
      await Promise.all(ddp.buckets.map((b) => pg!.allReduce(scratch.subarray(b.lo, b.hi), 'mean').wait()));
      commAlone.push(performance.now() - c0);
    }
  }
  const stepS = median(total.slice(3));
  const fwdBwd = median(fb.slice(3));
  const n = params.flat.layout.slots.reduce((s, x) => s + x.size, 0);
  // Attention's QK^T and AV products scale with the heads' total width (d unless headDim is set).
  const flopsPerToken = 6 * n + 12 * cfg.layers * cfg.ctx * cfg.heads * gptWidths(cfg).headDim;
  const rep = profiler.report();
  const ranks = pg?.size ?? 1;
  // Tensor-parallel ranks train one batch together: tokens count once.
  const replicas = tp > 1 ? 1 : ranks;
  const tpStats = tpStep?.schedule ?? null;
  const tpComm = tpStats ? {
    ...(z3 ? { comm_alone_ms: median(commAlone.slice(3)), comm_hidden_fraction: Math.max(0, 1 - median(tpExposed.slice(3)) / median(commAlone.slice(3))) } : { tp }),
    ...(offload ? { offload: 'disk' } : {}), exposed_comm_ms: median(tpExposed.slice(3)), collectives: tpStats.hostOps,
    wire_mb_per_step: +(Object.values(tpStats.wireBytes).reduce((a, x) => a + x, 0) / 2 ** 20).toFixed(2), programs: tpStats.programs, overlapping_programs: tpStats.overlapping,
  } : {};
  // Communication hidden behind the backward: 1 - (what was still left once the slowest rank had
  // finished its backward) / (the same all-reduces run alone). Waiting for a slower rank is
  // reported apart (peer_wait_ms): it is load imbalance, which no overlap can hide.
  const [exp, alone] = [median(exposed.slice(3)), median(commAlone.slice(3))];
  const comm = ddp ? {
    bucket_mb: bucketMB, ddp_cut: ddp.cut, ddp_programs: ddp.programBuckets.length, crossing_mb: +(ddp.stats.crossingBytes / 2 ** 20).toFixed(1), exposed_comm_ms: exp, peer_wait_ms: median(peerWait.slice(3)), comm_alone_ms: alone,
    comm_hidden_fraction: Math.max(0, 1 - exp / alone),
  } : {};
  // Offloaded: what the disk moved per step (the optimizer's streams and stage 3's loads), and how long the update waited on it.
  let io = {};
  if (opt.offloaded) {
    await opt.flush();
    const st = opt.offloaded.stats();
    const per = (x: number): number => +(x / (steps + 3)).toFixed(1);
    io = { offload_io: { read_mb_per_step: per(st.readBytes / 2 ** 20), written_mb_per_step: per(st.writeBytes / 2 ** 20), update_wait_ms_per_step: per(st.waitMs) } };
    await opt.close();
    await z3?.close();
    rmSync(offloadDir!, { recursive: true, force: true });
  }
  return {
    system: 'weft', preset, threads, ranks, ...(precision !== 'fp32' ? { precision } : {}), ...(dp.matmulPrecision === 'medium' ? { matmul_precision: 'medium' } : {}), ...(zero > 0 ? { zero } : {}), ...comm, ...tpComm, ...io, params: n, step_s: stepS, fwd_bwd_s: fwdBwd, optimizer_s: stepS - fwdBwd,
    tokens_per_s: (replicas * B * T) / stepS, model_gflops_per_s: (flopsPerToken * tp * replicas * B * T) / stepS / 1e9, loss,
    ...peakOf((flopsPerToken * tp * replicas * B * T) / stepS / 1e9, threads * ranks), native_products: nativeStats.calls / (steps + 3),
    held_mb: Math.round(rep.totalHeldBytes / 2 ** 20),
    segments_ms: Object.fromEntries(Object.entries(rep.segments).map(([k, s]) => [k, +s.meanMs.toFixed(2)])),
  };
}

const ANCHOR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../shared/anchors/torch_gpt.py');
const PY = '/usr/bin/python3';

function torchMissing(): string | null {
  if (!existsSync(ANCHOR)) return `anchor not found at ${ANCHOR}`;
  try { execFileSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }); return null; } catch { return 'python3-torch is not installed (apt-get install python3-torch libopenblas0-pthread)'; }
}

type Row = Record<string, unknown> & { tokens_per_s: number };

/** Runs a measurement process (its stderr shown) and parses the last line it prints as JSON. */
export function runJson(cmd: string, args: string[]): Promise<Row> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`bench: ${cmd} ${args.join(' ')} exited with code ${code}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()!) as Row);
    });
  });
}

/**
 * weft and PyTorch alternating (weft, torch, weft, torch ...) `repeat` times per configuration;
 * the ratio is taken pair by pair and its median reported. With `nproc` > 1 each repeat also
 * measures the scaling baseline: weft on one rank alone, and `nproc` independent one-rank weft
 * processes at once. Scaling efficiency = data-parallel tokens/s / (nproc x alone). The
 * independent processes bound it from the machine: `concurrent_bound` is what they achieve
 * together, `sync_bound` what synchronous training can (every step waits for the slowest copy).
 */
export async function sideBySide(o: { presets: Preset[]; threads: number[]; steps: number; repeat: number; nproc?: number; dp?: BenchSettings; log?: (s: string) => void }): Promise<unknown> {
  const nproc = o.nproc ?? 1;
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  const missing = torchMissing();
  const results = [];
  for (const preset of o.presets) {
    for (const threads of o.threads) {
      const weft: Row[] = [];
      const torch: Row[] = [];
      const scaling: { alone: number; concurrent: number[]; efficiency: number; concurrent_bound: number; sync_bound: number }[] = [];
      const worker = (n: number): string[] => [cli, 'bench', '--worker', '--preset', preset, '--threads', String(threads), '--steps', String(o.steps), '--nproc', String(n), '--bucket-mb', String((o.dp ?? BENCH_DEFAULTS).bucketMB), '--programs', (o.dp ?? BENCH_DEFAULTS).programs, '--precision', (o.dp ?? BENCH_DEFAULTS).precision, '--matmul-precision', (o.dp ?? BENCH_DEFAULTS).matmulPrecision];
      for (let r = 0; r < o.repeat; r++) {
        weft.push(await runJson(process.execPath, worker(nproc)));
        const torchArgs = nproc > 1 ? ['--ddp', String(nproc)] : ['--threads', String(threads)];
        if (!missing) torch.push(await runJson(PY, [ANCHOR, '--preset', preset, ...torchArgs, '--steps', String(o.steps)]));
        if (nproc > 1) {
          const alone = (await runJson(process.execPath, worker(1))).tokens_per_s;
          const concurrent = (await Promise.all(Array.from({ length: nproc }, () => runJson(process.execPath, worker(1))))).map((x) => x.tokens_per_s);
          const ideal = nproc * alone;
          scaling.push({
            alone, concurrent, efficiency: weft[r]!.tokens_per_s / ideal,
            concurrent_bound: concurrent.reduce((a, x) => a + x, 0) / ideal, sync_bound: (nproc * Math.min(...concurrent)) / ideal,
          });
        }
      }
      const ratios = torch.map((t, i) => weft[i]!.tokens_per_s / t.tokens_per_s);
      const row = {
        preset, threads, ranks: nproc,
        weft_tokens_per_s: median(weft.map((w) => w.tokens_per_s)),
        torch_tokens_per_s: torch.length ? median(torch.map((t) => t.tokens_per_s)) : null,
        ratio_weft_over_torch: ratios.length ? median(ratios) : null,
        ratios, weft: weft.at(-1), torch: torch.at(-1) ?? missing,
        ...(nproc > 1 ? { scaling_efficiency: median(scaling.map((x) => x.efficiency)), scaling } : {}),
      };
      o.log?.(JSON.stringify(row));
      results.push(row);
    }
  }
  const cpu = cpuInfo();
  return {
    bench: 'engine', steps: o.steps, repeat: o.repeat, torch: missing ?? 'pytorch (../shared/anchors/torch_gpt.py)',
    machine: { model: cpu.model, isa: cpu.isa, cores: cpu.cores, fp32_peak_gflops: cpu.fp32PeakGflops, peak_basis: cpu.peakBasis, native_products: blas()?.info() ?? 'addon not built' },
    results,
  };
}

/** A data-parallel measurement: `nproc` ranks (threads backend) of `threads` intra-op threads each. */
export async function measureWeftRanks(preset: Preset, threads: number, steps: number, nproc: number, dp: BenchSettings = BENCH_DEFAULTS, tp = 1, zero = 0, offload = false, pipeline?: PipelineBench): Promise<WeftMeasurement> {
  const results = await launchThreads<WeftMeasurement>({
    nproc, entry: new URL('./bench_rank.js', import.meta.url), args: { preset, threads, steps, dp, tp, zero, offload, ...(pipeline ? { pipeline } : {}) }, timeoutMs: 900_000,
  });
  // A pipeline's row is its last stage's (it holds the loss); the bubble is every stage's mean.
  if (pipeline) {
    const last = results.at(-1)!;
    const bubbles = results.map((r) => r.bubble_by_stage![0]!);
    return { ...last, bubble_by_stage: bubbles, bubble: +(bubbles.reduce((a, b) => a + b, 0) / bubbles.length).toFixed(4) };
  }
  return results[0]!;
}

/** `weft bench --pp P --schedule S [--microbatches M] [--chunks V]`: a pipeline over every rank. */
export interface PipelineBench { pp: number; schedule: ScheduleKind; microbatches: number; chunks: number }

/**
 * One stage of a pipeline measurement: the preset GPT cut into pp x chunks pieces, the preset's
 * batch (one batch for the whole pipeline: tokens count once) in `microbatches`, AdamW; the
 * stage's bubble is the median over the measured steps of its idle time over its step.
 */
export async function measurePipeline(preset: Preset, threads: number, steps: number, pg: ProcessGroup, p: PipelineBench): Promise<WeftMeasurement> {
  setThreads(threads);
  const cfg = GPT_PRESETS[preset];
  const [B, T] = [PRESET_BATCH[preset], cfg.ctx];
  if (pg.size !== p.pp) throw new Error(`bench: --pp ${p.pp} needs --nproc ${p.pp} (a pipeline over every rank)`);
  const model = new GPT(cfg);
  const bound = bindParameters(model, { seed: 0 });
  const n = bound.flat.layout.slots.reduce((s, x) => s + x.size, 0);
  const table = pipelineTable(p.schedule, p.pp, p.microbatches, p.chunks);
  const pipe = new PipelineStage(gptPipeline(model, p.pp * p.chunks), bound, { stage: pg.rank, stages: p.pp, actions: table.actions[pg.rank]!, microbatches: p.microbatches, chunks: p.chunks });
  const opt = new AdamW(pipe.params, { lr: 3e-4, weightDecay: 0.1 });
  const rng = new Rng(0);
  const [idx, tgt] = [new BigInt64Array(B * T), new BigInt64Array(B * T)];
  const total: number[] = [];
  const fb: number[] = [];
  const bubbles: number[] = [];
  let loss = 0;
  for (let i = 0; i < steps + 3; i++) {
    randomTokens(rng, cfg.vocab, B, T, idx, tgt);
    await pg.barrier().wait();
    const t0 = performance.now();
    loss = await pipe.step([{ data: idx, shape: [B, T], dtype: 'int64' }, { data: tgt, shape: [B, T], dtype: 'int64' }], { pp: pg });
    const t1 = performance.now();
    await opt.step(pipe.grads);
    total.push((performance.now() - t0) / 1000);
    fb.push((t1 - t0) / 1000);
    bubbles.push(pipe.lastStep!.bubble);
  }
  const stepS = median(total.slice(3));
  // Attention's QK^T and AV products scale with the heads' total width (d unless headDim is set).
  const flopsPerToken = 6 * n + 12 * cfg.layers * cfg.ctx * cfg.heads * gptWidths(cfg).headDim;
  const rep = profiler.report();
  return {
    system: 'weft', preset, threads, ranks: pg.size, pp: p.pp, schedule: p.schedule, microbatches: p.microbatches, chunks: p.chunks,
    bubble_formula: +((p.pp - 1) / (p.chunks * p.microbatches + p.pp - 1)).toFixed(4), bubble_by_stage: [+median(bubbles.slice(3)).toFixed(4)],
    params: n, step_s: stepS, fwd_bwd_s: median(fb.slice(3)), optimizer_s: stepS - median(fb.slice(3)),
    tokens_per_s: (B * T) / stepS, model_gflops_per_s: (flopsPerToken * B * T) / stepS / 1e9, loss, ...peakOf((flopsPerToken * B * T) / stepS / 1e9, threads * pg.size),
    held_mb: Math.round(rep.totalHeldBytes / 2 ** 20), segments_ms: {},
  };
}
