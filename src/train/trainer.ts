/**
 * The training loop for any task (a model, its data, a loss and metrics; see task.ts): AdamW or
 * SGD, schedule, gradient accumulation and clipping, data parallelism, periodic evaluation and
 * checkpoints, exact resume, metrics as JSON lines, a live progress line, and callbacks.
 *
 * Resume is exact: a checkpoint holds the weights and buffers, the optimizer's state and step
 * count, and every rank's loader state as of the last consumed batch, so the steps after a resume
 * draw the same batches (and augmentations) from the same parameters and compute the same losses
 * as an uninterrupted run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { createLoader, SyncLoader } from '../data/loader.js';
import { reshardSamplerState } from '../data/sampler.js';
import type { Batch, Loader, LoaderState } from '../data/loader.js';
import { bindParameters, loadStateDict } from '../nn/module.js';
import { BatchNorm2d } from '../nn/vision.js';
import type { BoundParameters } from '../nn/module.js';
import { AdamW } from '../optim/adamw.js';
import { SGD } from '../optim/sgd.js';
import { Adafactor } from '../optim/adafactor.js';
import type { FileVector } from '../optim/offload.js';
import { warmupConstant, warmupCosine } from '../optim/schedule.js';
import type { Schedule } from '../optim/schedule.js';
import { setMatmulPrecision, setThreads } from '../runtime/executor.js';
import { graphMemory } from '../runtime/memory.js';
import { peakRssBytes, resetPeakRss, rssBytes } from '../runtime/rss.js';
import { profiler } from '../runtime/profiler.js';
import { FlatBuffer } from '../runtime/flat.js';
import type { FloatArray, Layout } from '../runtime/flat.js';
import { compile } from '../tensor/compile.js';
import type { Compiled, Feed, Traced } from '../tensor/compile.js';
import type { Value } from '../ir/graph.js';
import { allReduceHook, bf16Hook, ddpBuckets, DistributedDataParallel, fp16Hook, resolveDDPPrograms } from '../parallel/ddp.js';
import { ZeroShard } from '../parallel/zero.js';
import { ZeroStage3 } from '../parallel/zero3.js';
import { chromeTrace, PipelineStage } from '../parallel/pipeline.js';
import { pipelineTable } from '../parallel/pipeline_schedule.js';
import type { CommHook } from '../parallel/ddp.js';
import { globalNorm } from '../optim/clip.js';
import { LossScaler } from '../optim/loss_scale.js';
import type { LossScalerState } from '../optim/loss_scale.js';
import { autocast } from '../ir/autocast.js';
import { computeDtype, stepFeeds } from '../nn/step_graph.js';
import type { StepGraphOptions } from '../nn/step_graph.js';
import '../parallel/spmd.js';
import { localPart, shardedNorm, wholeTensor } from '../parallel/tensor_parallel.js';
import type { Placements } from '../parallel/tensor_parallel.js';
import { localShape } from '../nn/placement.js';
import { expertParallel, MoE } from '../nn/moe.js';
import { expertHook } from '../parallel/expert.js';
import { deviceMesh } from '../comm/process_group.js';
import type { CollectiveContext } from '../comm/kernels.js';
import { allGatherJson } from '../comm/json.js';
import { flight } from '../comm/flight.js';
import { LocalProcessGroup } from '../comm/local.js';
import type { ProcessGroup } from '../comm/process_group.js';
import { Tensor } from '../tensor/tensor.js';
import { latestGoodCheckpoint, loadCheckpoint, saveCheckpointStreamed, stepDirName } from './checkpoint.js';
import type { Checkpoint, CheckpointTensor, LazyTensor } from './checkpoint.js';
import { BackgroundCheckpointer } from './async_checkpoint.js';
import { MetricsLog } from './metrics.js';
import type { RunConfig } from './config.js';
import { Pruner, pruneSchedule, prunableNames } from './prune.js';
import { distillation } from './distill.js';
import type { Distillation } from './distill.js';
import { gradStep } from './step.js';
import type { GradStep } from './step.js';
import type { Task } from './task.js';
import { taskCheckpointing } from './task.js';
import { taskFromConfig } from './tasks/index.js';

export interface StepMetrics {
  /** Optimizer steps completed. */
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  /** Throughput in the task's unit: `tokens_per_s` for text, `examples_per_s` for images. */
  tokens_per_s?: number;
  examples_per_s?: number;
  elapsed_s: number;
  /** Evaluation steps only: the loss on the held-out data, and the task's metrics (accuracy, perplexity, ...). */
  val_loss?: number;
  /** `train.prune`, logged steps only: the fraction of prunable weights that are exactly zero. */
  sparsity?: number;
  [metric: string]: number | undefined;
}

/**
 * Hooks into a run (Keras callbacks, Lightning hooks). Each may be async; the run waits for it.
 * Callbacks run on rank 0 only, where metrics are complete. `ctx.stop()` ends the run after the
 * current step, with a checkpoint (early stopping).
 */
export interface Callback {
  onTrainBegin?(ctx: CallbackContext): void | Promise<void>;
  onStepEnd?(m: StepMetrics, ctx: CallbackContext): void | Promise<void>;
  onEvalEnd?(m: Readonly<Record<string, number>>, ctx: CallbackContext): void | Promise<void>;
  onCheckpoint?(path: string, ctx: CallbackContext): void | Promise<void>;
  onTrainEnd?(r: TrainResult, ctx: CallbackContext): void | Promise<void>;
}

export interface CallbackContext {
  readonly trainer: Trainer;
  readonly step: number;
  /** Ends the run after the current step (all ranks stop together). */
  stop(): void;
}

export interface TrainerOptions {
  /** The ranks to train on (data parallel); default a group of one. */
  pg?: ProcessGroup;
  /** What to train; default the task the config describes (`taskFromConfig`). */
  task?: Task;
  callbacks?: readonly Callback[];
}

export interface TrainOptions {
  /** Continue from the run directory's newest checkpoint that verifies (a damaged newer one is skipped and logged). */
  resume?: boolean;
  /** Stop (with a checkpoint) after this many completed steps: for tests and preemption. */
  stopAfter?: number;
  /**
   * Called on every rank after each step (its metrics written, before its checkpoint): fault
   * injection for chaos tests (a rank that exits here dies mid-run), preemption signals.
   */
  afterStep?: (step: number, rank: number) => void | Promise<void>;
  /** Progress and summary output; default process.stdout. Null: silent. */
  out?: NodeJS.WritableStream | null;
  /**
   * A directory: each pipeline stage writes `trace-rank<r>.json` there, a Chrome trace (Perfetto,
   * chrome://tracing) of its last step: compute, transfers and the waits between them.
   */
  trace?: string;
}

export interface TrainResult {
  steps: number;
  losses: number[];
  valLosses: { step: number; val_loss: number }[];
  /** Every evaluation: its step and metrics (val_loss and the task's). */
  evals: { step: number; metrics: Record<string, number> }[];
  checkpoint: string | null;
  /** Each checkpoint: how long the step was held for it, and (asynchronous ones) how long the writer took. */
  checkpoints: { step: number; blockedMs: number; writeMs: number | null }[];
  /** What the task printed at the end (a text sample), or null. */
  sample: string | null;
  /** Throughput in the task's unit (tokens/s for text, examples/s for images). */
  tokensPerS: number;
  /** This rank's memory: weft's accounting and the process's peak RSS (also in <out>/memory.json). */
  memory: MemoryAccounting;
}

/** What a rank held: weft's own accounting (flat buffers by label, the step's liveness) and peak RSS. */
export interface MemoryAccounting {
  /** Long-lived buffers by label (`profiler.hold`: params, grads, adamw.m, ...), bytes. */
  held: Record<string, number>;
  held_bytes: number;
  /** Forward values the step's backward reads, and the step graph's liveness peak (runtime/memory.ts). */
  activations_bytes: number;
  step_peak_bytes: number;
  /** The process's peak RSS since the run began (VmHWM, reset at the start of `run`); null off Linux. */
  peak_rss_bytes: number | null;
}

/**
 * `<out>/memory.json`: rank 0's accounting at the top level, and every rank's in rank order
 * (gathered at the end of the run). Under MPI each rank is a process and its `peak_rss_bytes` is
 * its own; with the threads backend every rank is a thread of one process and reports that
 * process's peak RSS (the same figure, all ranks together).
 */
export interface MemoryFile extends MemoryAccounting {
  /** The process group's backend ('mpi', 'threads', 'local'). */
  backend: string;
  ranks: MemoryAccounting[];
}

type Optimizer = AdamW<Float32Array> | SGD<Float32Array> | Adafactor<Float32Array>;

/** Per-parameter tensors of a flat buffer (checkpoint form: names survive layout changes). */
function byName(flat: FlatBuffer<Float32Array>): Map<string, { shape: readonly number[]; data: Float32Array }> {
  return new Map(flat.layout.slots.map((s) => [s.name, { shape: s.shape, data: flat.view(s.name) }]));
}

/** Gathers per-parameter tensors back into one flat array of `layout`, naming what is missing. */
function flatFrom(layout: Layout, tensors: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, prefix: string, file: string): Float32Array {
  const out = new Float32Array(layout.size);
  for (const s of layout.slots) {
    const t = tensors.get(prefix + s.name);
    if (!t) throw new Error(`${file}: missing tensor '${prefix + s.name}'`);
    if (t.data.length !== s.size) throw new Error(`${file}: tensor '${prefix + s.name}' has ${t.data.length} elements, the model's '${s.name}' has ${s.size}`);
    out.set(t.data, s.offset);
  }
  return out;
}

/** Tensors this rank holds whole, as lazily read checkpoint tensors. */
const heldTensors = (m: Map<string, { shape: readonly number[]; data: FloatArray }>): (readonly [string, LazyTensor])[] =>
  [...m].map(([k, t]) => [k, { shape: t.shape, dtype: 'F32', read: async () => t.data as Float32Array }] as const);

/** A batch's fields as program feeds, in field order. */
const feedsOf = (b: Batch): Feed[] => b.fields.map((f) => ({ data: f.data, shape: f.shape, dtype: f.dtype }));

export class Trainer {
  readonly task: Task;
  readonly params: BoundParameters;
  /** The full gradient buffer; null under ZeRO stage 2 with data parallelism (the shard's gradients are `zero.grads`). */
  readonly grads: FlatBuffer<Float32Array> | null;
  /**
   * ZeRO over the data-parallel axis (parallel/zero.ts): the partition (the optimizer updates this
   * rank's slices, its state shard-sized), and at stage 2 the reduced gradient shard; null without ZeRO.
   */
  readonly zero: { stage: 1 | 2 | 3; shard: ZeroShard; grads: FlatBuffer<Float32Array> | null } | null;
  /** ZeRO stage 3's plan: the parameter shard, and the rewrite that gathers parameters per layer; null below stage 3. */
  readonly zero3: ZeroStage3 | null;
  readonly opt: Optimizer;
  /** The teacher of `train.distill` and its loss (train/distill.ts); null without distillation. */
  readonly distill: Distillation | null;
  readonly pg: ProcessGroup;
  private readonly schedule: Schedule;
  private readonly step: GradStep | null;
  private readonly ddp: DistributedDataParallel | null;
  private readonly evalProgram: Compiled;
  private evalBatches: Feed[][] | null = null;
  private readonly callbacks: readonly Callback[];
  /** Rank 0's writer thread for asynchronous checkpoints (started at the first one). */
  private readonly writer = new BackgroundCheckpointer();
  /** The mesh: dp x tp, ranks row-major (tp fastest); this rank's coordinates. */
  readonly dp: { size: number; index: number };
  readonly tp: { size: number; index: number };
  /** The pipeline axis: this rank's stage and the stage count (size 1 without pipeline parallelism). */
  readonly pp: { size: number; index: number };
  /** The expert axis inside dp: groups of ep consecutive data-parallel ranks; this rank's place in its group. */
  readonly ep: { size: number; index: number };
  /** Parameters split over ep (the MoE layers' experts). */
  private readonly experts: ReadonlySet<string>;
  /** The ranks holding this rank's experts (dp / ep of them); null when ep = dp or without experts. */
  private edp: ProcessGroup | null = null;
  /** This rank's pipeline stage (parallel/pipeline.ts), or null. */
  readonly pipe: PipelineStage | null;
  /** Where each parameter lies (tensor parallel); null for none. */
  private readonly placements: Placements | null;
  /** fp16's dynamic loss scale; null for fp32 and bf16 (unscaled). */
  readonly scaler: LossScaler | null;
  /** `train.prune`'s masks over the parameters (train/prune.ts); null with pruning off. */
  readonly pruner: Pruner | null;
  /** The global gradient norm of this rank's buffer (shards' squares summed over tp). */
  private readonly gradNorm: (g: Float32Array | Float64Array) => Promise<number>;
  /** The groups collectives in the step run on; filled by `run` (making groups is async). */
  /** What the step's host ops read: the mesh's groups (collectives), stage 3's offloaded shard (`weft.Load`). */
  private readonly context: CollectiveContext & { groups: Record<string, ProcessGroup>; stores?: Readonly<Record<string, FileVector>> } = { groups: {} };

  constructor(readonly cfg: RunConfig, opts: TrainerOptions = {}) {
    this.pg = opts.pg ?? new LocalProcessGroup();
    this.callbacks = opts.callbacks ?? [];
    setThreads(cfg.train.threads > 0 ? cfg.train.threads : Math.max(1, Math.floor(availableParallelism() / this.pg.size)));
    setMatmulPrecision(cfg.train.matmulPrecision);
    mkdirSync(cfg.out, { recursive: true });
    const task = this.task = opts.task ?? taskFromConfig(cfg);
    const tp = cfg.parallel.tp;
    const pp = cfg.parallel.pp;
    if (this.pg.size % (tp * pp) !== 0) {
      throw new Error(pp > 1 ? `parallel.tp (${tp}) x parallel.pp (${pp}) = ${tp * pp} must divide the ${this.pg.size} ranks (data parallel takes what is left: dp = ranks / (tp x pp))`
        : `parallel.tp (${tp}) must divide the ${this.pg.size} ranks (data parallel takes what is left: dp = ranks / tp)`);
    }
    // Ranks on the mesh pp x dp x tp, tp fastest (Megatron's order: tensor parallel inside a node, pipeline across).
    const dpSize = this.pg.size / (tp * pp);
    this.tp = { size: tp, index: this.pg.rank % tp };
    this.dp = { size: dpSize, index: Math.floor(this.pg.rank / tp) % dpSize };
    this.pp = { size: pp, index: Math.floor(this.pg.rank / (tp * dpSize)) };
    if (pp > 1) checkPipelineConfig(cfg, task);
    const ep = cfg.parallel.ep;
    this.ep = { size: ep, index: this.dp.index % ep };
    if (ep > 1) checkExpertConfig(cfg, dpSize);
    if (cfg.parallel.sp && tp === 1) throw new Error('parallel.sp needs parallel.tp > 1 (sequence parallelism splits the tensor-parallel regions\' activations)');
    if (tp > 1) {
      if (!task.parallelize) throw new Error(`parallel.tp = ${tp}: this task's model has no tensor-parallel plan (the GPT has one)`);
      task.parallelize({ axis: 'tp', size: tp, index: this.tp.index }, { sp: cfg.parallel.sp });
    }
    if (ep > 1) expertParallel(task.model, { axis: 'ep', size: ep, index: this.ep.index });
    // The expert parameters (sharded over ep): their gradients reduce over the ranks holding the same experts.
    this.experts = new Set(task.model.namedParameters().filter(([, p]) => p.placement?.axis === 'ep').map(([n]) => n));
    if (cfg.dist.syncBatchNorm) {
      // The same arithmetic on one rank as on many, so a run's numbers do not depend on the rank count.
      const norms = task.model.modules().filter((m): m is BatchNorm2d => m instanceof BatchNorm2d);
      if (norms.length === 0) throw new Error('dist.syncBatchNorm: the model has no BatchNorm2d');
      for (const m of norms) m.sync = { axis: 'dp', size: this.dp.size };
    }
    const bound = bindParameters(task.model, { seed: cfg.train.seed });
    // A pipeline stage keeps the parameters of its pieces (every rank bound the whole model alike).
    this.pipe = null;
    if (pp > 1) {
      const { schedule, chunks, stages } = cfg.parallel;
      const microbatches = cfg.parallel.microbatches || pp;
      const table = pipelineTable(schedule, pp, microbatches, chunks);
      const model = task.pipeline!(pp * chunks, stages.length > 0 ? stages : undefined);
      this.pipe = new PipelineStage(model, bound, { stage: this.pp.index, stages: pp, actions: table.actions[this.pp.index]!, microbatches, chunks });
    }
    this.placements = tp > 1 || ep > 1 ? new Map(task.model.namedParameters().map(([n, p]) => [n, p.placement])) : null;
    const t = cfg.train;
    const layout = bound.flat.layout;
    const Z = cfg.parallel.zero;
    if (Z > 3) throw new Error(`parallel.zero ${Z}: the stages are 0, 1, 2 and 3`);
    if (Z > 0 && t.optimizer === 'adafactor') throw new Error('parallel.zero with train.optimizer adafactor: its factored moments follow whole tensors, which a ZeRO shard cuts; use adamw or sgd');
    const ddpPath = this.pg.size > 1 && tp === 1 && Z < 3 && pp === 1;
    const bucketBytes = cfg.dist.bucketMB * 2 ** 20;
    // Disk offload: the optimizer's state (and at stage 3 the parameter shard) in files, one directory per rank (parallel.offloadDir).
    if (cfg.parallel.offload === 'disk' && t.optimizer === 'adafactor') throw new Error("parallel.offload 'disk' with train.optimizer adafactor: its factored moments are not offloaded; use adamw or sgd");
    const offloadDir = cfg.parallel.offload === 'disk' ? join(cfg.parallel.offloadDir || join(cfg.out, 'offload'), `rank${this.pg.rank}`) : null;
    this.zero3 = null;
    if (Z === 3) {
      // Segments are the task's units (the GPT's blocks) and the runs of parameters between them;
      // every rank keeps its slices (in memory, or offloaded to a file) and the whole vector is dropped.
      const z3 = this.zero3 = new ZeroStage3(bound, { units: task.checkpointUnits ?? [], rank: this.dp.index, size: this.dp.size, ...(offloadDir ? { offload: { dir: offloadDir } } : {}) });
      this.params = { ...bound, flat: FlatBuffer.detached(layout, 'params') };
      this.zero = { stage: 3, shard: z3.shard, grads: z3.grads };
      this.context.groups['dp'] = this.pg;
      this.context.stores = z3.stores;
    } else if (Z > 0) {
      this.params = bound;
      // DDP's buckets are the segments (stage 2 reduce-scatters each as the backward makes it);
      // under tensor parallelism the gradients are reduced after the step: one segment.
      const segments = ddpPath ? ddpBuckets(layout.slots, { bucketBytes, programs: resolveDDPPrograms(cfg.dist.programs, this.pg) }) : [{ lo: 0, hi: layout.size }];
      const shard = new ZeroShard(layout, segments, { rank: this.dp.index, size: this.dp.size });
      // Stage 1's gradient shard is a copy of this rank's slices of the full reduced gradients, made
      // for each update and dropped; stage 2's is held: the reduce-scatter lands there.
      this.zero = { stage: Z as 1 | 2, shard, grads: Z === 2 ? shard.zeros('zero.grads') : null };
    } else {
      this.params = this.pipe ? { ...bound, flat: this.pipe.params } : bound;
      this.zero = null;
    }
    this.grads = this.pipe ? this.pipe.grads : (Z === 2 && ddpPath) || Z === 3 ? null : FlatBuffer.zeros(layout, 'grads');
    // The norm of the whole model: tensor-parallel shards' squares summed over the axis; at ZeRO
    // stages 2 and 3 (a gradient shard per rank) the owned squares summed over the data-parallel axis too.
    this.gradNorm = this.pipe ? (g) => this.pipelineNorm(g as Float32Array) : (this.zero?.stage ?? 0) >= 2 ? (g) => this.zeroNorm(g as Float32Array)
      : this.placements ? (g) => shardedNorm(layout, this.placements!, (axis) => this.groupOf(axis))(g) : globalNorm;
    this.scaler = t.precision === 'fp16'
      ? new LossScaler({ init: t.lossScale, growthInterval: t.lossScaleWindow, hysteresis: t.lossScaleHysteresis, minScale: Math.min(t.lossScaleMin, t.lossScale) })
      : null;
    // The norm comes with every step (optimizerStep computes it, for clipping and overflow checks).
    const clip = { ...(t.clip > 0 ? { clipNorm: t.clip } : {}), lossScaled: this.scaler !== null };
    if (t.optimizer === 'adafactor' && tp > 1) throw new Error('train.optimizer adafactor: its factored moments are not sharded for tensor parallelism yet; use adamw or sgd with parallel.tp > 1');
    // Under ZeRO stages 1 and 2 the optimizer updates this rank's slices of the full parameters, its
    // state shard-sized; at stage 3 the parameter shard is the whole vector it updates.
    const shard = this.zero && !this.zero3 ? { shard: this.zero.shard } : {};
    const masters = this.zero3?.params ?? this.params.flat;
    const offload = offloadDir ? { offload: { dir: offloadDir, ...(this.zero3?.file ? { params: this.zero3.file } : {}) } } : {};
    this.opt = t.optimizer === 'sgd'
      ? new SGD(masters, { lr: t.lr, momentum: t.momentum, weightDecay: t.weightDecay, ...clip, ...shard, ...offload })
      : t.optimizer === 'adafactor'
      ? new Adafactor(masters, { lr: t.lr, beta1: t.adafactorBeta1, weightDecay: t.weightDecay, ...clip })
      : new AdamW(masters, { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay, ...clip, ...shard, ...offload });
    this.schedule = t.schedule === 'cosine' && t.steps > t.warmup
      ? warmupCosine({ lr: t.lr, warmupSteps: t.warmup, warmup: 'step+1', totalSteps: t.steps, minLr: Math.min(t.minLr, t.lr) })
      : warmupConstant({ lr: t.lr, warmupSteps: t.warmup, warmup: 'step+1' });
    const scale = 1 / t.accumulate;
    const distill = this.distill = distillation(cfg, task);
    const loss = (...fields: Tensor[]): Tensor => {
      const inputs = fields.slice(0, -1);
      const out = task.forward(...inputs);
      const hard = task.loss(out, fields[fields.length - 1]!);
      // Distillation mixes the teacher's soft targets in (train/distill.ts); the evaluation stays the task's own loss.
      const l = distill === null ? hard : distill.loss(out, hard, inputs);
      return scale === 1 ? l : l.mul(scale);
    };
    const checkpointing = taskCheckpointing(task, t.checkpointing);
    if (t.qat && (t.precision !== 'fp32' || tp > 1 || cfg.parallel.pp > 1 || cfg.parallel.zero === 3)) {
      throw new Error(`train.qat: quantization-aware training runs in fp32 on whole tensors (train.precision '${t.precision}', parallel.tp ${tp}, parallel.pp ${cfg.parallel.pp}, parallel.zero ${cfg.parallel.zero}); per-channel weight ranges over shards would differ from the single-process model's`);
    }
    this.pruner = null;
    // (parseConfig refused the parallel modes that shard the parameters.)
    if (t.prune.sparsity > 0) {
      this.pruner = new Pruner(layout, prunableNames(task.model), t.prune.scope, pruneSchedule(t.prune, t.steps));
    }
    const stepOptions: StepGraphOptions = { precision: t.precision, lossScale: this.scaler !== null, ...(checkpointing ? { checkpointing } : {}), ...(t.qat ? { qat: {} } : {}) };
    if (ddpPath) {
      this.step = null;
      const hooks: Record<string, CommHook> = { allreduce: allReduceHook, fp16: fp16Hook, bf16: bf16Hook };
      const hook = cfg.dist.hook === 'auto' ? (t.precision === 'fp32' ? 'allreduce' : t.precision) : cfg.dist.hook;
      const reduce = ep > 1 ? expertHook(hooks[hook]!, this.experts, () => ({ ep, edp: this.edp })) : hooks[hook]!;
      this.ddp = new DistributedDataParallel(this.pg, this.params, this.grads, loss, {
        bucketBytes, programs: cfg.dist.programs, hook: reduce, step: stepOptions, groups: this.context.groups,
        ...(this.zero?.grads ? { zero: { shard: this.zero.shard, grads: this.zero.grads } } : {}),
      });
    } else {
      this.ddp = null;
      // With tensor parallelism or ZeRO stage 3 the step holds collectives: a schedule run on the mesh's groups.
      const z3 = this.zero3;
      // A pipeline stage runs its own per-microbatch schedules (PipelineStage.step).
      this.step = this.pipe ? null : gradStep(this.params, z3?.grads ?? this.grads!, loss, 'fwd_bwd', {
        // Stage 3's many per-layer programs run without onnxruntime's arenas (runtime/ort.ts).
        ...stepOptions, ...(tp > 1 || z3 ? { context: this.context } : {}), ...(z3 ? { shardParameters: z3.rewrite, arena: false } : {}),
      });
    }
    const metricFns = Object.values(task.metrics);
    const half = computeDtype(t.precision);
    const weights = new Set(Object.values(this.params.tensors).map((x) => x.value));
    // Evaluation computes as the step does: the same autocast of the forward.
    this.evalProgram = compile((...fields) => {
      const target = fields[fields.length - 1]!;
      const out = task.forward(...fields.slice(0, -1));
      const outs = [task.loss(out, target), ...metricFns.map((m) => m(out, target))].map((x) => x.value);
      const cast = half === null ? outs : autocast(outs, { dtype: half, params: weights, who: `train.precision ${t.precision}` });
      return (this.zero3 ? this.zero3.forward(cast) : cast).map((v) => new Tensor(v));
    }, 'eval', tp > 1 || ep > 1 || this.zero3 ? { context: this.context, ...(this.zero3 ? { arena: false } : {}) } : {});
  }

  /**
   * The step's graph and the evaluation's for this config's batches, traced and neither compiled
   * nor run (train/memory.ts analyses them): the step as `run` would execute it (one program,
   * DDP's per-bucket cut in `groups`, or a tensor-parallel schedule), `forward` the indices of its
   * outputs the forward computes (the loss and buffer updates; the rest are gradients).
   */
  async traceStep(): Promise<{ step: Traced; forward: number[]; groups: Value[][] | null; eval: Traced | null }> {
    if (this.pipe) throw new Error(`parallel.pp = ${this.pp.size}: the memory estimate does not cover pipeline stages yet`);
    const loader = await SyncLoader.create({
      ...this.task.trainLoader, dataset: this.task.train, batch: this.cfg.train.batch,
      sampler: this.task.sampling({ seed: this.cfg.train.dataSeed, rank: this.dp.index, worldSize: this.dp.size }),
    });
    const b = loader.nextSync();
    await loader.close();
    if (b === null) throw new Error('traceStep: the training data gave no batch');
    const sig = stepFeeds('traceStep', { lossScale: this.scaler !== null }, feedsOf(b), 1);
    const dd = this.ddp ? this.ddp.trace(...sig) : null;
    const traced = dd ?? this.step!.trace(...sig);
    const nGrads = (this.zero3?.grads ?? this.params.flat).layout.slots.length;
    const forward = [0, ...traced.outputs.slice(1 + nGrads).map((_, i) => 1 + nGrads + i)];
    const evalSig = this.task.eval !== null ? this.evalFeeds()[0]! : null;
    let evalTrace: Traced | null = null;
    if (evalSig !== null) {
      this.task.model.eval();
      try { evalTrace = this.evalProgram.trace(...evalSig); } finally { this.task.model.train(); }
    }
    return { step: traced, forward, groups: dd?.groups ?? null, eval: evalTrace };
  }

  /** How many batches one evaluation runs (memory estimates count the evaluation program's runs). */
  evalFeedCount(): number { return this.task.eval === null ? 0 : this.evalFeeds().length; }

  /** The evaluation batches, read once (evaluation data has no random augmentation). */
  private evalFeeds(): Feed[][] {
    if (this.evalBatches !== null) return this.evalBatches;
    const ev = this.task.eval!;
    const loader = new SyncLoader({ dataset: ev.data, sampler: { kind: 'sequential', items: ev.items ?? ev.data.size }, batch: ev.batch });
    const out: Feed[][] = [];
    for (let b = loader.nextSync(); b !== null; b = loader.nextSync()) out.push(feedsOf(b));
    if (out.length === 0) throw new Error('evaluation data is empty');
    return (this.evalBatches = out);
  }

  /**
   * The task's metrics on its evaluation data (eval mode: no dropout, BatchNorm's running
   * statistics): `val_loss`, each metric, and the derived ones, averaged over examples.
   */
  async evaluate(): Promise<Record<string, number>> {
    // A pipeline evaluates its loss through the stages (every rank takes part); the task's other metrics need the model's whole output.
    const names = ['val_loss', ...(this.pipe ? [] : Object.keys(this.task.metrics))];
    const sums = new Float64Array(names.length);
    let n = 0;
    this.task.model.eval();
    try {
      for (const feeds of this.evalFeeds()) {
        const rows = feeds[0]!.shape[0]!;
        const outs = this.pipe ? [Float32Array.of(await this.pipe.evaluate(feeds, this.context.groups))] : await this.evalProgram(...feeds);
        outs.forEach((o, i) => { sums[i]! += Number(o[0]) * rows; });
        n += rows;
      }
    } finally {
      this.task.model.train();
    }
    const m: Record<string, number> = {};
    names.forEach((k, i) => { m[k] = sums[i]! / n; });
    return { ...m, ...(this.task.derived?.(m) ?? {}) };
  }

  /**
   * Restores weights, optimizer and data position from the run's newest checkpoint that verifies
   * (`latestGoodCheckpoint`: a damaged newer one costs the steps since, `log` names it); returns its
   * directory, step and loader state. Every rank runs this same deterministic choice on the same
   * files, so all restore the same checkpoint (run() compares their choices).
   */
  private restore(log: (line: string) => void): { dir: string; step: number; loader: LoaderState } | null {
    const good = latestGoodCheckpoint(this.cfg.out, { log });
    if (good === null) return null;
    const ck = good.checkpoint;
    this.loadWeights(ck);
    const layout = this.params.flat.layout;
    const ofile = join(ck.dir, 'optimizer.safetensors');
    const st = ck.state as { step: number; optimizer: { name?: string; t: number }; loaders: LoaderState[]; lossScaler?: LossScalerState };
    // A run that changes to fp16 at a resume starts its loss scale afresh.
    if (this.scaler && st.lossScaler) this.scaler.loadState(st.lossScaler, `${join(ck.dir, 'state.json')}: lossScaler`);
    // Another data-parallel degree re-deals the global sample stream from where it stopped.
    let loaderState = st.loaders[this.dp.index];
    if (st.loaders.length !== this.dp.size) {
      try {
        const sampler = reshardSamplerState(st.loaders.map((l) => l.sampler), this.dp.size, this.dp.index);
        loaderState = { sampler, batches: Math.floor((st.loaders[0]!.batches * st.loaders.length) / this.dp.size) };
      } catch (e) {
        throw new Error(`${join(ck.dir, 'state.json')}: saved by ${st.loaders.length} data-parallel ranks, resuming on ${this.dp.size}: ${(e as Error).message.replace(/^reshardSamplerState: /, '')}`);
      }
    }
    ck.optimizer = this.localize(ck.optimizer, null, ofile);
    const saved = st.optimizer.name ?? 'adamw';
    if (saved !== this.cfg.train.optimizer) throw new Error(`${join(ck.dir, 'state.json')}: optimizer state is ${saved}, the config's train.optimizer is ${this.cfg.train.optimizer}`);
    if (this.opt instanceof AdamW) {
      this.opt.loadState({ t: st.optimizer.t, m: this.shardOf(flatFrom(layout, ck.optimizer, 'm.', ofile)), v: this.shardOf(flatFrom(layout, ck.optimizer, 'v.', ofile)) });
    } else if (this.opt instanceof Adafactor) {
      this.opt.loadState(st.optimizer.t, ck.optimizer, ofile);
    } else {
      this.opt.loadState({ t: st.optimizer.t, momentum: this.opt.momentum > 0 ? this.shardOf(flatFrom(layout, ck.optimizer, 'momentum.', ofile)) : null });
    }
    this.pruner?.load(ck.optimizer, ofile);
    return { dir: ck.dir, step: st.step, loader: loaderState! };
  }

  /**
   * A checkpoint's weights (and buffers) into this rank's parameters: checkpoints hold whole
   * tensors, so a sharded rank takes its part, whatever layout wrote them. Errors name the file.
   */
  private loadWeights(ck: Checkpoint): void {
    const file = join(ck.dir, 'model.safetensors');
    const layout = this.params.flat.layout;
    try {
      let weights = this.localize(ck.weights, '', file);
      if (this.pipe) {
        // Every tensor of the model must be there; this stage takes its pieces'.
        for (const s of this.pipe.wholeLayout.slots) if (!weights.has(s.name)) throw new Error(`missing tensor '${s.name}'`);
        const whole = new Set([...this.pipe.wholeLayout.slots.map((s) => s.name), ...this.params.buffers.layout.slots.map((s) => s.name)]);
        const extra = [...weights.keys()].filter((k) => !whole.has(k));
        if (extra.length > 0) throw new Error(`unexpected tensors ${extra.slice(0, 5).join(', ')}`);
        const mine = new Set([...this.params.flat.layout.slots.map((s) => s.name), ...this.params.buffers.layout.slots.map((s) => s.name)]);
        weights = new Map([...weights].filter(([k]) => mine.has(k)));
      }
      if (this.zero3 === null) loadStateDict(this.params, weights);
      else {
        // Stage 3 keeps only its slices: checked and loaded through a transient whole vector.
        const whole = FlatBuffer.zeros(layout);
        loadStateDict({ ...this.params, flat: whole }, weights);
        this.zero3.load(whole.data);
      }
    } catch (e) { throw new Error(`${file}: ${(e as Error).message.replace(/^loadStateDict: /, '')}`); }
  }

  /**
   * `train.init`: the weights of a run's latest checkpoint (or of a checkpoint directory) start
   * this run; the optimizer, the step and the data position start afresh (fine-tuning, e.g. after
   * `weft prune`). The checkpoint must hold exactly this model's tensors and shapes.
   */
  private initFrom(path: string): string {
    let ck: Checkpoint;
    try { ck = loadCheckpoint(path); } catch (e) { throw new Error(`train.init: ${path}: ${(e as Error).message}`); }
    try { this.loadWeights(ck); } catch (e) { throw new Error(`train.init: ${(e as Error).message}`); }
    return ck.dir;
  }

  /**
   * This rank's parts of whole tensors (a checkpoint's), by the placements; `prefix` '' for
   * weights, null for optimizer tensors ('m.<name>', 'v.<name>', 'momentum.<name>').
   */
  private localize<T extends { shape: readonly number[]; data: ArrayLike<number> }>(tensors: Map<string, T>, prefix: '' | null, file: string): Map<string, T> {
    if (this.placements === null) return tensors;
    const full = new Map(this.task.model.namedParameters().map(([n, p]) => [n, p.shape]));
    const out = new Map<string, T>();
    for (const [key, t] of tensors) {
      const name = prefix === null ? key.slice(key.indexOf('.') + 1) : key;
      const p = this.placements.get(name);
      if (!p) { out.set(key, t); continue; }
      const shape = full.get(name)!;
      const n = shape.reduce((a, e) => a * e, 1);
      if (t.data.length !== n) throw new Error(`${file}: tensor '${key}' has ${t.data.length} elements, the whole of '${name}' ${shape.join('x')} has ${n}`);
      out.set(key, { ...t, shape: localShape(shape, p), data: localPart(Float32Array.from(t.data), shape, p) });
    }
    return out;
  }

  /**
   * Whole tensors, read lazily in slot order, of a vector laid out like the parameters: `data` this
   * rank's ZeRO shard (`sharded`: each segment all-gathered over dp when its first tensor is read)
   * or its full local vector, in memory or in a file (offloaded: only what a tensor or segment
   * needs is read); tensor-parallel shards gathered over tp. Every rank must read them all, in
   * order (the reads are collectives).
   */
  private lazyTensors(data: Float32Array | FileVector, sharded: boolean, prefix: string): (readonly [string, LazyTensor])[] {
    const shapes = new Map(this.task.model.namedParameters().map(([n, p]) => [n, p.shape]));
    const z = sharded ? this.zero!.shard : null;
    const range = async (lo: number, n: number): Promise<Float32Array> => {
      if (data instanceof Float32Array) return data.subarray(lo, lo + n);
      const a = new Float32Array(n);
      await data.read(lo, a);
      return a;
    };
    let held: { k: number; segment: Float32Array } | null = null;
    return this.params.flat.layout.slots.map((s) => [prefix + s.name, {
      shape: shapes.get(s.name)!, dtype: 'F32',
      read: async () => {
        let local: Float32Array;
        if (z !== null) {
          const k = z.segmentOf(s.offset);
          const r = z.ranges[k]!;
          // Into the shard's first gather buffer: one segment is read at a time, and the reads of
          // one vector end before the next vector's begin (the save reads them in order).
          if (held?.k !== k) held = { k, segment: await z.allGatherSlice(this.dpGroup(), k, await range(r.at, r.c), z.gatherBuffer(0)) };
          const at = s.offset - r.segLo;
          local = held.segment.subarray(at, at + s.size);
        } else local = await range(s.offset, s.size);
        return this.placements === null ? local : wholeTensor(local, shapes.get(s.name)!, this.placements.get(s.name) ?? null, this.groupOf(this.placements.get(s.name)?.axis));
      },
    }] as const);
  }

  /** Every rank hands in its loader state; rank 0 writes the checkpoint. Returns its path (rank 0) or null. */
  private async save(step: number, loader: Loader): Promise<string | null> {
    // One loader state per data-parallel rank (the tensor-parallel ranks of one share its data).
    // (Ranks of one replica across tensor-parallel shards and pipeline stages share its data.)
    const loaders = (await allGatherJson(this.pg, loader.state())).filter((_, r) => r % this.tp.size === 0 && r < this.tp.size * this.dp.size);
    const o = this.opt;
    const state = {
      step, config: this.cfg, ranks: this.pg.size, parallel: { dp: this.dp.size, tp: this.tp.size, pp: this.pp.size }, optimizer: { name: this.cfg.train.optimizer, t: o.t }, loaders,
      ...(this.scaler ? { lossScaler: this.scaler.state() } : {}),
      ...(this.task.checkpointState?.() as Record<string, unknown> | undefined ?? {}),
    };
    // Streamed: each tensor read when the file reaches it (a ZeRO segment gathered over dp, a
    // tensor-parallel shard over tp, a pipeline stage's tensor sent to rank 0), every rank reading
    // in the same order, rank 0 writing.
    const { weights, optimizer } = this.pipe ? await this.pipelineTensors() : await this.shardedTensors();
    if (!this.cfg.checkpoint.async) {
      if (this.pg.rank !== 0) {
        for (const [, t] of [...weights, ...optimizer]) await t.read();
        return null;
      }
      return saveCheckpointStreamed(this.cfg.out, step, { weights, optimizer, state, keep: this.cfg.checkpoint.keep });
    }
    // Asynchronous: the previous write must have landed; then a copy of every tensor (read in the
    // same order on every rank: the reads are collectives) goes to the writer thread.
    if (this.pg.rank === 0) await this.writer.idle();
    const copy = async (list: readonly (readonly [string, LazyTensor])[]): Promise<[string, CheckpointTensor][]> => {
      const out: [string, CheckpointTensor][] = [];
      for (const [k, t] of list) { const d = await t.read(); if (this.pg.rank === 0) out.push([k, { shape: t.shape, data: d.slice() }]); }
      return out;
    };
    const snap = { weights: await copy(weights), optimizer: await copy(optimizer), state, keep: this.cfg.checkpoint.keep };
    if (this.pg.rank !== 0) return null;
    this.writer.start(this.cfg.out, step, snap);
    return join(this.cfg.out, stepDirName(step));
  }

  /** A checkpoint's tensors, read lazily: the parameters (gathered over dp and tp where sharded) and buffers, and the optimizer's state. */
  private async shardedTensors(): Promise<{ weights: (readonly [string, LazyTensor])[]; optimizer: (readonly [string, LazyTensor])[] }> {
    const o = this.opt;
    const z3 = this.zero3;
    const weights = [...this.lazyTensors(z3 ? z3.file ?? z3.params.data : this.params.flat.data, z3 !== null, ''), ...heldTensors(byName(this.params.buffers))];
    // AdamW's m and v, SGD's momentum (offloaded: read from their files as the save reaches them), each saved as 'm.<name>', ...
    const vectors = o instanceof Adafactor ? null : o.offloaded ? o.offloaded.names.map((key, i) => [key, o.offloaded!.files[i]!] as const)
      : Object.entries(await o.stateVectors()).map(([key, buf]) => [key, buf.data as Float32Array] as const);
    const optimizer = o instanceof Adafactor ? heldTensors(o.namedTensors()) : vectors!.flatMap(([key, v]) => this.lazyTensors(v, this.zero !== null, `${key}.`));
    return { weights, optimizer: [...optimizer, ...(this.pruner?.checkpointTensors() ?? [])] };
  }

  /**
   * A pipeline's checkpoint tensors: whole tensors in the whole model's order, each read by rank 0
   * from the stage that speaks for it (its own, or received from that stage's rank of data-parallel
   * replica 0), the optimizer's state the same way.
   */
  private async pipelineTensors(): Promise<{ weights: (readonly [string, LazyTensor])[]; optimizer: (readonly [string, LazyTensor])[] }> {
    const pipe = this.pipe!;
    const o = this.opt;
    if (o instanceof Adafactor) throw new Error('pipeline checkpoints: adafactor state is not saved from stages yet');
    const shapes = new Map(this.task.model.namedParameters().map(([n, p]) => [n, p.shape]));
    const vectors: [string, FlatBuffer<FloatArray>][] = [['', pipe.params], ...Object.entries(await o.stateVectors()).map(([k, v]) => [`${k}.`, v as FlatBuffer<FloatArray>] as [string, FlatBuffer<FloatArray>])];
    const world = this.pg;
    let tag = 0;
    const lazy = vectors.map(([prefix, buf]) => pipe.wholeLayout.slots.map((s) => {
      const t = tag++ % 32768;
      const owner = pipe.ownerOf(s.name);
      // The rank that speaks for it: stage `owner` of data-parallel replica 0, tensor-parallel rank 0
      // (pp is the mesh's slowest axis, tp its fastest); a tp-sharded tensor is gathered over tp first.
      const from = owner * this.dp.size * this.tp.size;
      const shape = shapes.get(s.name)!;
      const size = shape.reduce((a, e) => a * e, 1);
      const holds = this.pp.index === owner && this.dp.index === 0;
      return [prefix + s.name, {
        shape, dtype: 'F32',
        read: async () => {
          let mine: Float32Array | null = null;
          if (holds) {
            const local = buf.view(s.name) as Float32Array;
            mine = this.placements === null ? local.slice() : await wholeTensor(local, shape, this.placements.get(s.name) ?? null, this.groupOf(this.placements.get(s.name)?.axis));
          }
          if (world.rank === from && from !== 0) await world.send(mine!, 0, t).wait();
          if (world.rank !== 0) return new Float32Array(0);
          if (from === 0) return mine!;
          const got = new Float32Array(size);
          await world.recv(got, from, t).wait();
          return got;
        },
      }] as const;
    }));
    return { weights: [...lazy[0]!, ...heldTensors(byName(this.params.buffers))], optimizer: lazy.slice(1).flat() };
  }

  /** Forward + backward of one micro-batch: data parallel when there are several ranks. */
  private async microStep(b: Batch, first: boolean, last: boolean): Promise<number> {
    const feeds = feedsOf(b);
    const lossScale = this.scaler?.scale;
    // ZeRO stage 2 reduce-scatters every micro-step into the shard (DeepSpeed's stage 2 does too).
    const noSync = !last && this.zero?.stage !== 2;
    if (this.ddp) return this.ddp.step(feeds, { accumulate: !first, noSync, ...(lossScale ? { lossScale } : {}) });
    if (this.pipe) return this.pipe.step(feeds, this.context.groups);
    return this.step!(feeds, { accumulate: !first, ...(lossScale ? { lossScale } : {}) });
  }

  async run(o: TrainOptions = {}): Promise<TrainResult> {
    const { cfg, task } = this;
    const lead = this.pg.rank === 0;
    const out = !lead ? null : o.out === undefined ? process.stdout : o.out;
    const say = (s: string): void => { out?.write(`${s}\n`); };
    // The peak from here on is the run's (start-up transients before this are not).
    resetPeakRss();
    if (this.tp.size > 1 && this.context.groups['tp'] === undefined) {
      // Every rank must shard the same way: compare the plans before any collective of the step.
      const plan = { tp: this.tp.size, sp: cfg.parallel.sp, placements: [...this.placements!].map(([n, p]) => (p ? `${n}:${p.dim}/${p.parts ?? 1}` : n)).join(' ') };
      const plans = await allGatherJson(this.pg, plan);
      plans.forEach((q, r) => {
        if (JSON.stringify(q) !== JSON.stringify(plans[0])) {
          throw new Error(`parallel plan: rank ${r} has tp=${q.tp} sp=${q.sp}${q.placements !== plans[0]!.placements ? ' and other placements' : ''}, rank 0 tp=${plans[0]!.tp} sp=${plans[0]!.sp}`);
        }
      });
    }
    // (Stage 3 without tp or pp put the world in as 'dp' at construction; a mesh replaces it.)
    if ((this.tp.size > 1 && this.context.groups['tp'] === undefined) || (this.pp.size > 1 && this.context.groups['pp'] === undefined)) {
      // The mesh pp x dp x tp (pp slowest, tp fastest), its axes of more than one rank named.
      const mesh = await deviceMesh(this.pg, { ...(this.pp.size > 1 ? { pp: this.pp.size } : {}), dp: this.dp.size, ...(this.tp.size > 1 ? { tp: this.tp.size } : {}) });
      Object.assign(this.context.groups, mesh.groups);
    }
    if (this.ep.size > 1 && this.context.groups['ep'] === undefined) {
      // Expert groups: ep consecutive data-parallel ranks of one tensor-parallel index; edp: the
      // ranks at the same place in each group (same tp index too).
      const [tp, ep] = [this.tp, this.ep.size];
      this.context.groups['ep'] = ep === this.pg.size ? this.pg : await this.pg.split(tp.index + tp.size * Math.floor(this.dp.index / ep));
      if (ep < this.dp.size) this.edp = await this.pg.split(tp.index + tp.size * (this.dp.index % ep));
    }
    const resumed = o.resume ? this.restore(say) : null;
    if (o.resume && this.pg.size > 1) {
      // A file system that showed the ranks different files would otherwise mix steps silently.
      const dirs = await allGatherJson(this.pg, resumed?.dir ?? null);
      dirs.forEach((d, r) => { if (d !== dirs[0]) throw new Error(`--resume: rank ${r} chose ${d ?? 'no checkpoint'}, rank 0 ${dirs[0] ?? 'no checkpoint'} (${cfg.out} reads differently on different ranks)`); });
    }
    if (o.resume && resumed === null) say(`weft: no checkpoint in ${cfg.out}; starting from scratch`);
    if (resumed === null && cfg.train.init !== '') say(`weft: weights from ${this.initFrom(cfg.train.init)} (train.init)`);
    let step = resumed?.step ?? 0;
    const log = lead ? new MetricsLog(cfg.out, { resumedAt: resumed ? step : null, tensorboard: cfg.log.tensorboard }) : null;
    if (this.ddp) await this.ddp.broadcastParameters(this.experts.size > 0 ? { names: this.experts, group: this.edp } : undefined);
    // Masks hold before the first step too: a mask update due now (start 0), or restored ones re-applied.
    this.pruner?.step(step, this.params.flat.data);
    const loader = await createLoader({
      ...task.trainLoader, dataset: task.train, batch: cfg.train.batch, depth: 2, retries: cfg.data.readRetries, backoffMs: cfg.data.readBackoffMs,
      sampler: task.sampling({ seed: cfg.train.dataSeed, rank: this.dp.index, worldSize: this.dp.size }),
      ...(resumed ? { state: resumed.loader } : {}),
    });
    const { batch: B, accumulate: A, steps } = cfg.train;
    const units = task.unitsPerExample;
    const unitKey = task.unit === 'tokens' ? 'tokens_per_s' : 'examples_per_s';
    const stop = Math.min(steps, o.stopAfter ?? steps);
    const losses: number[] = [];
    const valLosses: { step: number; val_loss: number }[] = [];
    const evals: { step: number; metrics: Record<string, number> }[] = [];
    const tty = out !== null && (out as NodeJS.WriteStream).isTTY === true;
    let stopRequested = false;
    const ctx = (s: number): CallbackContext => ({ trainer: this, step: s, stop: () => { stopRequested = true; } });
    const call = async (f: (c: Callback) => void | Promise<void>): Promise<void> => { if (lead) for (const c of this.callbacks) await f(c); };
    const nParams = this.params.flat.layout.slots.reduce((s, x) => s + x.size, 0);
    say(`weft: ${this.pg.size > 1 ? `${this.pg.size} ranks (${this.pg.backend}), ` : ''}${task.describe(nParams)}; ` +
      `${resumed ? `resuming at step ${step}` : 'from scratch'} -> step ${stop}`);
    await call((c) => c.onTrainBegin?.(ctx(step)));
    const t0 = performance.now();
    const first = step;
    let checkpoint: string | null = null;
    const checkpoints: TrainResult['checkpoints'] = [];
    // The time the last checkpoint held its step, reported with the next step's metrics.
    let blocked: number | null = null;
    try {
      while (step < stop) {
        const lr = this.schedule(step);
        let loss = 0;
        for (let a = 0; a < A; a++) {
          const b = await loader.next();
          if (b === null) throw new Error('training data ran out (the training samplers are endless; this is a bug)');
          // What a hang dump says this rank was doing (comm/flight.ts).
          flight.note(`step ${step + 1}: forward and backward${A > 1 ? ` of micro-batch ${a + 1}/${A}` : ''}`);
          loss += await this.microStep(b, a === 0, a === A - 1);
        }
        flight.note(`step ${step + 1}: gradient reduction and optimizer`);
        const dpGroup = this.dpGroup();
        // Tensor parallel x data parallel: the replicas average their gradients after the step
        // (reduce-scattered into the shards at ZeRO stage 2; inside the step at stage 3).
        if (this.zero3) { /* the step's reduce-scatters left the averaged shard */ } else if (this.tp.size > 1 && this.dp.size > 1) {
          if (this.zero?.grads) await this.zero.shard.reduceScatter(dpGroup, 0, this.grads!.data, this.zero.grads.data.subarray(0, this.zero.shard.ranges[0]!.c)).wait();
          else if (this.ep.size > 1) await this.expertReduce(dpGroup, this.grads!);
          else await dpGroup.allReduce(this.grads!.data, 'mean').wait();
        } else if (this.pipe && this.dp.size > 1) await dpGroup.allReduce(this.grads!.data, 'mean').wait();
        else if (this.zero?.grads && this.dp.size === 1) this.zero.shard.take(this.grads!.data, this.zero.grads.data);
        if (this.dp.size > 1) {
          const l = Float32Array.of(loss);
          await dpGroup.allReduce(l, 'mean').wait();
          loss = l[0]!;
        }
        const { gradNorm, skipped } = await this.optimizerStep(lr);
        const moe = await this.moeMetrics();
        step++;
        this.pruner?.step(step, this.params.flat.data);
        losses.push(loss);
        const elapsed = (performance.now() - t0) / 1000;
        const m: StepMetrics = { step, loss, lr, grad_norm: gradNorm, [unitKey]: ((step - first) * A * B * units * this.dp.size) / elapsed, elapsed_s: elapsed };
        if (this.scaler) Object.assign(m, { loss_scale: this.scaler.scale, skipped: skipped ? 1 : 0, skipped_steps: this.scaler.skipped });
        if (moe) Object.assign(m, moe);
        if (blocked !== null) { m['checkpoint_blocked_ms'] = Number(blocked.toFixed(1)); blocked = null; }
        if (this.pipe?.lastStep) m['pipeline_bubble'] = Number(this.pipe.lastStep.bubble.toFixed(4));
        // Only rank 0 logs: the other ranks skip reading /proc each step.
        if (lead) Object.assign(m, memoryMetrics(step === first + 1 || step % cfg.eval.every === 0 || step === stop));
        if (this.pruner && (step % cfg.log.every === 0 || step % cfg.eval.every === 0 || step === stop)) m.sparsity = this.pruner.sparsity(this.params.flat.data);
        let evaluated: Record<string, number> | null = null;
        // Under tensor parallelism and ZeRO 3 every rank evaluates (its programs hold collectives); rank 0 reports.
        if ((lead || this.tp.size > 1 || this.ep.size > 1 || this.zero3 || this.pipe) && task.eval !== null && (step % cfg.eval.every === 0 || step === stop)) {
          flight.note(`step ${step}: evaluation`);
          evaluated = await this.evaluate();
          Object.assign(m, evaluated);
          valLosses.push({ step, val_loss: evaluated['val_loss']! });
          evals.push({ step, metrics: evaluated });
          const rss = peakRssBytes();
          if (rss !== null) m['peak_rss_bytes'] = rss;
        }
        log?.append(m);
        await call((c) => c.onStepEnd?.(m, ctx(step)));
        await o.afterStep?.(step, this.pg.rank);
        if (evaluated !== null) await call((c) => c.onEvalEnd?.(evaluated!, ctx(step)));
        if (this.pg.size > 1 && this.callbacks.length > 0) stopRequested = await this.agreeToStop(stopRequested);
        const eta = ((stop - step) * elapsed) / (step - first);
        const extra = evaluated === null ? '' : Object.entries(evaluated).map(([k, v]) => `  ${k === 'val_loss' ? 'val' : k} ${v.toFixed(4)}`).join('');
        const scale = (this.scaler ? `  scale ${this.scaler.scale}${this.scaler.skipped > 0 ? ` (${this.scaler.skipped} skipped)` : ''}` : '') +
          (moe ? `  experts max/mean ${moe['moe_balance']!.toFixed(2)} dropped ${(100 * moe['moe_dropped']!).toFixed(1)}%` : '') +
          (m.sparsity !== undefined ? `  sparsity ${m.sparsity.toFixed(3)}` : '');
        const line = `step ${step}/${steps}  loss ${loss.toFixed(4)}${extra}${scale}  ` +
          `${Math.round(m[unitKey]!).toLocaleString()} ${task.unit === 'tokens' ? 'tok' : 'ex'}/s  ETA ${fmtTime(eta)}`;
        if (tty) out!.write(`\r${line}\x1b[K${evaluated !== null ? '\n' : ''}`);
        else if (step % cfg.log.every === 0 || evaluated !== null) say(line);
        const ending = stopRequested || step === stop;
        if (step % cfg.checkpoint.every === 0 || ending) {
          const tc = performance.now();
          flight.note(`step ${step}: checkpoint`);
          checkpoint = await this.save(step, loader);
          blocked = performance.now() - tc;
          checkpoints.push({ step, blockedMs: blocked, writeMs: null });
          if (checkpoint !== null) { const p = checkpoint; await call((c) => c.onCheckpoint?.(p, ctx(step))); }
        }
        if (stopRequested) break;
      }
      if (tty) out!.write('\n');
    } finally {
      await loader.close();
      // Offloaded optimizer state: pending writes land and the files close (a trainer runs once).
      if (!(this.opt instanceof Adafactor)) await this.opt.close();
      await this.zero3?.close();
      // The last asynchronous checkpoint lands before the run returns (its error, if any, is the run's).
      await this.writer.close();
      for (const c of checkpoints) if (this.writer.last?.step === c.step) c.writeMs = this.writer.last.ms;
    }
    const tokensPerS = ((step - first) * A * B * units * this.dp.size) / ((performance.now() - t0) / 1000 || 1);
    if (o.trace !== undefined) {
      if (this.pipe?.lastStep) {
        mkdirSync(o.trace, { recursive: true });
        writeFileSync(join(o.trace, `trace-rank${this.pg.rank}.json`), JSON.stringify(chromeTrace(this.pipe.lastStep, this.pg.rank)));
        const s = this.pipe.lastStep;
        if (this.pp.index === 0 && this.dp.index === 0) say(`weft: trace of step ${step} in ${o.trace} (stage 0: ${s.ms.toFixed(1)} ms, bubble ${(100 * s.bubble).toFixed(1)}%)`);
      } else say('weft: --trace records pipeline stages (parallel.pp > 1); nothing was written');
    }
    // Generation runs the whole model: at stage 3 every rank gathers the parameters back first
    // (not for a run that samples nothing: the whole vector and its gather buffers would add twice
    // the parameters' bytes, measured +70 MiB of peak RSS on a rank of a d512 x 8 GPT).
    // A pipeline stage holds only its pieces: no sample from the whole model (yet).
    const finishes = step === steps && this.pipe === null && task.finish !== undefined && (task.finishes?.() ?? true);
    if (this.zero3 && finishes) this.attachParameters(await this.wholeParameters());
    // Under tp the ranks of replica 0's axis sample together, under ep those of the first expert group (their programs hold collectives).
    const finishing = finishes && (lead || (this.tp.size > 1 && this.dp.index === 0) || (this.ep.size > 1 && this.dp.index < this.ep.size));
    const axes = { ...(this.tp.size > 1 ? { tp: this.context.groups['tp']! } : {}), ...(this.ep.size > 1 ? { ep: this.context.groups['ep']! } : {}) };
    const sample = finishing ? await task.finish!(Object.keys(axes).length > 0 ? { context: { groups: axes } } : {}) : null;
    const last = evals.at(-1);
    say(`weft: ${step - first} steps in ${fmtTime((performance.now() - t0) / 1000)}, ${Math.round(tokensPerS).toLocaleString()} ${task.unit}/s; ` +
      `final loss ${losses.at(-1)?.toFixed(4) ?? '-'}${last ? `, ${Object.entries(last.metrics).map(([k, v]) => `${k === 'val_loss' ? 'val' : k} ${v.toFixed(4)}`).join(', ')}` : ''}; checkpoint ${checkpoint ?? '-'}`);
    if (sample !== null) say(`\n${sample}`);
    const memory = await this.memoryAccounting();
    // A collective: every rank reaches it once, after the same steps and saves, and none after it.
    const ranks = await allGatherJson(this.pg, memory);
    const mib = (b: number | null): string => (b === null ? '-' : `${(b / 2 ** 20).toFixed(1)} MiB`);
    const rssMax = ranks.some((r) => r.peak_rss_bytes === null) ? null : Math.max(...ranks.map((r) => r.peak_rss_bytes!));
    // Threads share one process: every rank's figure is that process's VmHWM, so a max says nothing.
    const overRanks = this.pg.size > 1 && this.pg.backend !== 'threads' ? ` (max over ${ranks.length} ranks ${mib(rssMax)})` : '';
    say(`weft: memory${this.pg.size > 1 ? ' (rank 0)' : ''}: ${Object.entries(memory.held).filter(([, b]) => b > 0).map(([k, b]) => `${k} ${mib(b)}`).join(', ')}; ` +
      `activations ${mib(memory.activations_bytes)}, step peak ${mib(memory.step_peak_bytes)} (liveness); peak RSS ${mib(memory.peak_rss_bytes)}${overRanks}`);
    const file: MemoryFile = { ...memory, backend: this.pg.backend, ranks };
    if (lead) writeFileSync(join(cfg.out, 'memory.json'), `${JSON.stringify(file)}\n`);
    const result = { steps: step, losses, valLosses, evals, checkpoint, checkpoints, sample, tokensPerS, memory };
    await call((c) => c.onTrainEnd?.(result, ctx(step)));
    return result;
  }

  /**
   * The optimizer's step on the reduced gradients. Under fp16 the gradients are loss-scaled: an
   * inf or NaN anywhere, on any rank, skips the step on every rank (parameters and moments
   * untouched) and backs the scale off; otherwise the optimizer divides the scale out.
   */
  private async optimizerStep(lr: number): Promise<{ gradNorm: number; skipped: boolean }> {
    const z = this.zero;
    // Under ZeRO the optimizer updates this rank's slices: from the full reduced gradients at
    // stage 1, from the gradient shard at stage 2.
    const grads = z?.grads ?? this.grads!;
    const norm = await this.gradNorm(z?.grads ? z.grads.data : this.grads!.data);
    let lossScale = 1;
    if (this.scaler !== null) {
      lossScale = this.scaler.scale;
      const flag = Float32Array.of(Number.isFinite(norm) ? 0 : 1);
      if (this.pg.size > 1) await this.pg.allReduce(flag, 'max').wait();
      if (this.scaler.update(flag[0]! > 0)) return { gradNorm: norm / lossScale, skipped: true };
    }
    const { gradNorm } = await this.opt.step(grads, lr, { norm, ...(this.scaler ? { lossScale } : {}) });
    // Stages 1 and 2 gather the updated slices into every rank's parameters; stage 3 keeps its shard.
    if (z !== null && z.stage < 3) await z.shard.allGatherInPlace(this.dpGroup(), this.params.flat.data);
    return { gradNorm, skipped: false };
  }

  /** This rank's shard of a full flat vector laid out like the parameters (the vector itself without ZeRO). */
  private shardOf(full: Float32Array): Float32Array {
    if (this.zero === null) return full;
    const out = new Float32Array(this.zero.shard.layout.size);
    this.zero.shard.take(full, out);
    return out;
  }

  /** The parameters as one flat vector: gathered from every rank's shard at stage 3 (every rank calls it). */
  private async wholeParameters(): Promise<FlatBuffer<Float32Array>> {
    if (this.zero3 === null) return this.params.flat;
    const whole = FlatBuffer.zeros(this.params.flat.layout);
    await this.zero3.gatherParameters(this.dpGroup(), whole.data);
    return whole;
  }

  /** Binds the model's parameter tensors to views of `whole` (stage 3, once training is over: generation runs the model itself). */
  private attachParameters(whole: FlatBuffer<Float32Array>): void {
    for (const s of whole.layout.slots) this.params.tensors[s.name]!.value.data = whole.view(s.name);
  }

  /** The data-parallel group: the world without tensor or pipeline parallelism, the mesh's 'dp' axis with them. */
  /**
   * The MoE layers' routing in the step just taken, over every data-parallel rank's tokens (a
   * collective: every rank calls it), null without MoE layers: tokens routed to each expert (before
   * the capacity) and kept, summed over the layers (`moe_tokens_e<i>`, `moe_kept_e<i>`), max / mean
   * routed tokens per expert (`moe_balance`, the layers' mean; `moe_balance_worst`), the fraction of assignments dropped, and the unweighted aux and z losses,
   * each the layers' mean.
   */
  private async moeMetrics(): Promise<Record<string, number> | null> {
    const layers = this.task.model.namedModules().filter((e): e is [string, MoE] => e[1] instanceof MoE);
    if (layers.length === 0) return null;
    const E = layers[0]![1].c.experts;
    const all = Float64Array.from(layers.flatMap(([p]) => [...this.params.buffers.view(`${p}.stats`)]));
    if (this.dp.size > 1) await this.dpGroup().allReduce(all, 'sum').wait();
    const out: Record<string, number> = {};
    const tokens = new Float64Array(E);
    let [balance, worst, dropped, aux, z] = [0, 0, 0, 0, 0];
    const kept = new Float64Array(E);
    layers.forEach((_, l) => {
      const st = all.subarray(l * (2 * E + 3), (l + 1) * (2 * E + 3));
      const routed = st.subarray(0, E);
      routed.forEach((t, i) => { tokens[i]! += t; });
      st.subarray(E, 2 * E).forEach((t, i) => { kept[i]! += t; });
      const mean = routed.reduce((a, t) => a + t, 0) / E;
      const r = mean > 0 ? Math.max(...routed) / mean : 0;
      balance += r / layers.length;
      worst = Math.max(worst, r);
      dropped += st[2 * E]! / this.dp.size / layers.length;
      aux += st[2 * E + 1]! / this.dp.size / layers.length;
      z += st[2 * E + 2]! / this.dp.size / layers.length;
    });
    tokens.forEach((t, i) => { out[`moe_tokens_e${i}`] = t; });
    kept.forEach((t, i) => { out[`moe_kept_e${i}`] = t; });
    return { ...out, moe_balance: balance, moe_balance_worst: worst, moe_dropped: dropped, moe_aux: aux, moe_z: z };
  }

  /** Averages `grads` over `dp` after the step, the experts' over the ranks holding them (parallel/expert.ts), as one bucket. */
  private async expertReduce(dp: ProcessGroup, grads: FlatBuffer<Float32Array>): Promise<void> {
    const whole = { index: 0, lo: 0, hi: grads.data.length, slots: grads.layout.slots };
    await expertHook(allReduceHook, this.experts, () => ({ ep: this.ep.size, edp: this.edp }))(dp, grads.data, whole).wait();
  }

  /** The group of a mesh axis a placement splits over (tp or ep); the world for none. */
  private groupOf(axis: string | undefined): ProcessGroup {
    const g = axis === undefined ? this.pg : this.context.groups[axis];
    if (!g) throw new Error(`trainer: no group for the '${axis}' axis`);
    return g;
  }

  private dpGroup(): ProcessGroup { return this.tp.size > 1 || this.pp.size > 1 ? this.context.groups['dp']! : this.pg; }

  /**
   * The global gradient norm of a pipeline stage's gradients: squares summed over the stages, a
   * tied parameter counted on its first stage only; with tensor parallelism the sharded tensors'
   * squares summed over tp too (the replicated ones are the same on every tp rank).
   */
  private async pipelineNorm(g: Float32Array): Promise<number> {
    const pipe = this.pipe!;
    const layout = pipe.grads.layout;
    const skip = new Set(pipe.tied.filter((t) => t.stages[0] !== pipe.stage).flatMap((t) => t.names));
    const sums = new Float64Array(2);
    for (const s of layout.slots) {
      if (skip.has(s.name)) continue;
      let ss = 0;
      for (let i = s.offset; i < s.offset + s.size; i++) ss += g[i]! * g[i]!;
      sums[this.placements?.get(s.name) ? 0 : 1]! += ss;
    }
    if (this.tp.size > 1) {
      const sh = sums.subarray(0, 1);
      await this.context.groups['tp']!.allReduce(sh, 'sum').wait();
    }
    const total = Float64Array.of(sums[0]! + sums[1]!);
    await this.context.groups['pp']!.allReduce(total, 'sum').wait();
    return Math.sqrt(total[0]!);
  }

  /** The global gradient norm at ZeRO stages 2 and 3: owned squares summed over dp (and tp-sharded ones over tp). */
  private async zeroNorm(g: Float32Array): Promise<number> {
    const { sharded, replicated } = await this.zero!.shard.sumSquares(this.dpGroup(), g, (n) => this.placements?.get(n) != null);
    if (this.tp.size === 1) return Math.sqrt(sharded + replicated);
    const s = Float64Array.of(sharded);
    await this.context.groups['tp']!.allReduce(s, 'sum').wait();
    return Math.sqrt(s[0]! + replicated);
  }

  /**
   * This rank's memory after a run: the buffers weft holds, the liveness of its step's graph
   * (traced again, after the last step, so no step sees the extra trace), and the peak RSS, read
   * before that trace: what the trace allocates is the accounting's, not the run's.
   */
  private async memoryAccounting(): Promise<MemoryAccounting> {
    const peak = peakRssBytes();
    const { heldBytes, totalHeldBytes } = profiler.report();
    // A pipeline stage's graphs are its chunks' (not traced here: no liveness figures yet).
    const t = this.pipe ? null : await this.traceStep();
    const g = t === null ? { savedBytes: 0, peakBytes: 0 } : graphMemory(t.step.outputs, t.forward);
    return { held: heldBytes, held_bytes: totalHeldBytes, activations_bytes: g.savedBytes, step_peak_bytes: g.peakBytes, peak_rss_bytes: peak };
  }

  /** Rank 0's callbacks decide; every rank learns it, so all stop after the same step. */
  private async agreeToStop(mine: boolean): Promise<boolean> {
    const f = Float32Array.of(mine ? 1 : 0);
    await this.pg.allReduce(f, 'max').wait();
    return f[0]! > 0;
  }
}

/**
 * What pipeline parallelism composes with so far, checked before anything is built: every other
 * combination is an error naming the setting (the numbers of the table itself are
 * `pipelineTable`'s to check, and the batch's split into microbatches is checked here).
 */
function checkPipelineConfig(cfg: RunConfig, task: Task): void {
  const p = cfg.parallel;
  const no = (what: string): never => { throw new Error(`parallel.pp = ${p.pp} with ${what}: not supported yet`); };
  if (!task.pipeline) throw new Error(`parallel.pp = ${p.pp}: this task's model cannot be cut into pipeline stages (the GPT can)`);
  if (p.sp) no('parallel.sp (sequence parallelism splits the activations the stages pass)');
  if (cfg.model.moe.experts > 0) no('model.moe (mixture-of-experts layers)');
  if (p.zero > 0) no(`parallel.zero = ${p.zero}`);
  if (p.offload !== 'none') no(`parallel.offload '${p.offload}'`);
  if (cfg.train.precision !== 'fp32') no(`train.precision '${cfg.train.precision}'`);
  if (cfg.train.checkpointing !== 'none') no(`train.checkpointing '${cfg.train.checkpointing}'`);
  if (cfg.train.optimizer === 'adafactor') no('train.optimizer adafactor');
  if (cfg.train.accumulate !== 1) throw new Error(`parallel.pp = ${p.pp} with train.accumulate = ${cfg.train.accumulate}: a pipeline accumulates over its microbatches; set parallel.microbatches instead`);
  const m = p.microbatches || p.pp;
  if (cfg.train.batch % m !== 0) throw new Error(`train.batch (${cfg.train.batch}) must divide into parallel.microbatches (${m}) equal microbatches`);
  if (p.schedule !== 'interleaved' && p.chunks !== 1) throw new Error(`parallel.chunks = ${p.chunks} needs parallel.schedule 'interleaved' (${p.schedule} runs one chunk per stage)`);
}

/**
 * What expert parallelism composes with so far, checked before anything is built (the config
 * checked that ep divides the experts): every other combination is an error naming the setting.
 */
function checkExpertConfig(cfg: RunConfig, dp: number): void {
  const p = cfg.parallel;
  if (dp % p.ep !== 0) throw new Error(`parallel.ep (${p.ep}) must divide the data-parallel ranks (${dp}): each group of ep ranks holds every expert once`);
  const no = (what: string): never => { throw new Error(`parallel.ep = ${p.ep} with ${what}: not supported yet`); };
  if (p.pp > 1) no(`parallel.pp = ${p.pp}`);
  if (p.zero > 0) no(`parallel.zero = ${p.zero}`);
  if (cfg.train.optimizer === 'adafactor') no('train.optimizer adafactor');
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

/**
 * Memory for the metrics line: the process's resident bytes (`rss_bytes`, every step) and, when
 * `held`, the long-lived buffers by kind (`mem_<label>_bytes`: params, grads, adamw.m, ...; what
 * `profiler.hold` declared), which change only when a run starts or resizes.
 */
function memoryMetrics(held: boolean): Record<string, number> {
  const out: Record<string, number> = {};
  const rss = rssBytes();
  if (rss !== null) out['rss_bytes'] = rss;
  if (held) for (const [k, b] of Object.entries(profiler.report().heldBytes)) if (b > 0) out[`mem_${k.replace(/[^A-Za-z0-9]+/g, '_')}_bytes`] = b;
  return out;
}
