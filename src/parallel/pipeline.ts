/**
 * Pipeline parallelism (GPipe; PipeDream-Flush's 1F1B; Megatron's interleaved 1F1B): the model cut
 * into pieces, piece s = c * p + r on rank r of the 'pp' axis as its chunk c, each microbatch
 * flowing forward through the pieces and its gradient back.
 *
 * Each chunk of a rank is one traced graph holding its forward and backward for one microbatch,
 * with the transfers as IR host ops (`weft.Recv` / `weft.Send`, ir/ops/collective.ts):
 *
 *   x   = Recv(activation of piece s - 1)                  (piece 0: the batch's inputs instead)
 *   y   = piece_s(x)                                        (the last piece: the loss / m)
 *         Send(y to piece s + 1);  dy = Recv(gradient of y, after y)
 *   dx, dW = vjp(y; x, W)(dy)                               (the last piece: grad(loss))
 *         Send(dx to piece s - 1)
 *
 * and it is compiled by the one schedule (runtime/schedule.ts) with two target groups, the forward
 * (y) and the backward (the gradients and the sends), so it is cut at each transfer and between the
 * two passes. A step runs every (microbatch, chunk) pair's schedule at once, each with its
 * microbatch in the run's context (the transfers' tags); receives are therefore posted as soon as
 * a run reaches them, and a send goes out as soon as its value exists. What runs when is the
 * pipeline table's (parallel/pipeline_schedule.ts): every program waits at the schedule's gate
 * until the rank's next compute action is its pass of its microbatch and chunk, and the action
 * ends when that pass's group is complete. One executor runs any table.
 *
 * Gradients of a step are summed over microbatches (each loss is divided by m) into the rank's
 * gradient buffer, over the parameters its pieces read. A tied parameter read by pieces on two
 * ranks (the GPT's embedding, read by the first piece and the head) is summed between them after
 * the flush; the loss is summed over the axis, so every rank reports it.
 *
 * @example
 *   const pipe = new PipelineStage(model, bound, { stage: pp.rank, stages: pp.size, actions: pipelineTable('1f1b', 2, 4, 1).actions[pp.rank]!, microbatches: 4 });
 *   const loss = await pipe.step([idx, tgt], { pp });  // pipe.grads: this rank's summed gradients
 *   await opt.step(pipe.grads);                      // over pipe.params, this rank's parameters
 */
import type { Feed } from '../tensor/compile.js';
import { Tensor } from '../tensor/tensor.js';
import * as b from '../ir/build.js';
import { topoNodes, Value } from '../ir/graph.js';
import type { Node } from '../ir/graph.js';
import { opDef } from '../ir/registry.js';
import type { TypedArray } from '../ir/dtype.js';
import { grad } from '../autodiff/grad.js';
import { recvFrom, sendTo } from '../ir/ops/collective.js';
import { compileSchedule, partition } from '../runtime/schedule.js';
import { bytesOf } from '../runtime/memory.js';
import type { Schedule } from '../runtime/schedule.js';
import { FlatBuffer, Layout } from '../runtime/flat.js';
import type { BoundParameters } from '../nn/module.js';
import type { ProcessGroup } from '../comm/process_group.js';
import '../comm/kernels.js';

/** A model cut into pieces (the task supplies it: the GPT's in train/tasks/lm.ts). */
export interface PipelineModel {
  /** How many pieces (p x v: stages times chunks per stage). */
  readonly pieces: number;
  /** The names of the parameters piece s reads (a tied weight is in several pieces). */
  params(s: number): readonly string[];
  /**
   * Piece s: the first takes the batch's inputs (`x` null), the others the previous piece's
   * output; the last returns the loss of one microbatch from its output and the target (the last
   * batch field). `batch` holds every field of the microbatch.
   */
  forward(s: number, x: Tensor | null, batch: readonly Tensor[]): Tensor;
  /** The type of piece s's output (s below the last) for a microbatch shaped like `batch`: what piece s + 1 receives. */
  output(s: number, batch: readonly Tensor[]): { dtype: 'float32' | 'float64'; shape: number[] };
}

/**
 * The process groups a stage's step runs on: 'pp', the pipeline axis, and any other axis its pieces'
 * graphs name (a tensor-parallel plan's 'tp').
 */
export type PipelineGroups = Readonly<Record<string, ProcessGroup>> & { readonly pp?: ProcessGroup };

/** One compute action of a pipeline table (parallel/pipeline_schedule.ts): a pass of a microbatch on a chunk. */
export interface ComputeAction { readonly op: 'forward' | 'backward'; readonly mb: number; readonly chunk: number }

export interface PipelineOptions {
  /** This rank's index on the pipeline axis, and the axis's size (its group is passed to each step). */
  stage: number;
  stages: number;
  /** This rank's actions in order (its sends and receives are ignored: the graphs hold them). */
  actions: readonly { readonly op: string; readonly mb?: number; readonly chunk?: number }[];
  microbatches: number;
  /** Model chunks per rank (interleaved schedules); default 1. */
  chunks?: number;
  /** Profiler label of the programs; default 'pipeline'. */
  label?: string;
  /**
   * When a backward sends its input's gradient back. By default as soon as it exists: the weight
   * gradients are computed while it flies, so the stage before starts its backward sooner (the
   * input-gradient-first order that zero-bubble schedules build on). `true` holds it until the
   * weight gradients are done too: the backward is then one indivisible action, as the bubble
   * formula (p - 1) / (m + p - 1) models it (bench/pipeline.ts measures both).
   */
  wholeBackward?: boolean;
}

/** Transfer tags: activations into piece s are 2s, gradients out of piece s are 2s + 1. */
const ACT = (s: number): number => 2 * s;
const GRAD = (s: number): number => 2 * s + 1;

interface Chunk {
  piece: number;
  schedule: Schedule;
  /** The batch fields the chunk's graph reads (indices into a microbatch's fields). */
  fields: number[];
  /** Each gradient output's slot in the rank's layout, in output order. */
  gradSlots: number[];
  last: boolean;
  /** Bytes a microbatch's forward leaves for its backward (values its forward programs make and its backward ones read). */
  savedBytes: number;
}

/** One step of a stage as it ran: its compute actions and transfers, in milliseconds from the step's start. */
export interface PipelineStepTrace {
  stage: number;
  /** The step's wall time, to the loss's all-reduce that ends it on every stage together. */
  ms: number;
  /** When the step started, in ms on the shared clock (performance.timeOrigin + now): the times below count from it. */
  origin: number;
  /**
   * The pipeline's window: the first compute on any stage to the last, the time the bubble is a
   * fraction of (`ms` adds the tied parameters' and the loss's all-reduces after it).
   */
  windowMs: number;
  /**
   * Each compute action from its first program's start to its gradients summed in; `compute` the
   * spans inside it that computed (its programs, and summing its gradients): the gaps between them
   * are waits for a transfer in the middle of the action (a receive not yet arrived).
   */
  actions: { op: 'forward' | 'backward'; mb: number; chunk: number; start: number; end: number; compute: [number, number][] }[];
  transfers: { name: string; mb: number; chunk: number; start: number; end: number }[];
  /**
   * Time computing (the actions' compute spans); `bubble` is the rest of `windowMs` over it
   * (waiting: for the pipeline to fill and drain, and for transfers not hidden).
   */
  busyMs: number;
  bubble: number;
  /** The most bytes of saved activations held at once (microbatches in flight x what each saves). */
  peakSavedBytes: number;
  /** The most microbatch-chunks in flight at once (forward done, backward not). */
  peakInFlight: number;
}

export class PipelineStage {
  /** This rank's parameters (those its pieces read), in the model's order. */
  readonly params: FlatBuffer<Float32Array>;
  /** Their gradients summed over a step's microbatches (and with a tied copy's stage). */
  readonly grads: FlatBuffer<Float32Array>;
  readonly stage: number;
  readonly stages: number;
  readonly microbatches: number;
  readonly chunks: number;
  /** The rank's compute actions, in order. */
  readonly actions: readonly ComputeAction[];
  /**
   * Parameters read on several stages (tied), grouped by the set of stages reading them, in the
   * model's order: the same list on every stage (each set's group is split on all of them).
   */
  readonly tied: readonly { stages: number[]; names: string[] }[];
  /** The whole model's parameter layout (every stage's tensors, in the model's order). */
  readonly wholeLayout: Layout;
  private readonly firstReader = new Map<string, number>();
  private compiled: Promise<Chunk[]> | null = null;
  /** The last step as it ran (null before the first). */
  lastStep: PipelineStepTrace | null = null;
  private tiedGroups = new Map<string, Promise<ProcessGroup>>();
  private readonly leaves: Map<string, Value>;

  /**
   * Keeps the parameters this rank's pieces read (copied out of `bound`, which every rank bound
   * alike) and rebinds the model's tensors to them; the rest are detached (no data).
   */
  constructor(readonly model: PipelineModel, bound: BoundParameters, readonly o: PipelineOptions) {
    this.stages = o.stages;
    this.stage = o.stage;
    if (!(Number.isInteger(o.stages) && o.stages >= 1 && Number.isInteger(o.stage) && o.stage >= 0 && o.stage < o.stages)) throw new Error(`pipeline: stage ${o.stage} of ${o.stages} is not a stage`);
    this.microbatches = o.microbatches;
    this.chunks = o.chunks ?? 1;
    if (model.pieces > 32) throw new Error(`pipeline: ${model.pieces} pieces; at most 32 (stages x chunks), the transfers' tags have 6 bits`);
    if (model.pieces !== this.stages * this.chunks) throw new Error(`pipeline: the model has ${model.pieces} pieces, the pipeline ${this.stages} stages x ${this.chunks} chunks`);
    this.actions = o.actions.filter((a): a is ComputeAction => a.op === 'forward' || a.op === 'backward');
    const want = 2 * this.microbatches * this.chunks;
    if (this.actions.length !== want) throw new Error(`pipeline: stage ${this.stage}'s table has ${this.actions.length} compute actions, ${this.microbatches} microbatches x ${this.chunks} chunks need ${want}`);
    const mine = new Set(this.pieces().flatMap((s) => model.params(s)));
    const layout = new Layout(bound.flat.layout.slots.filter((s) => mine.has(s.name)).map((s) => ({ name: s.name, shape: s.shape })));
    this.params = FlatBuffer.zeros(layout, 'params');
    this.grads = FlatBuffer.zeros(layout, 'grads');
    this.leaves = new Map();
    for (const s of bound.flat.layout.slots) {
      const v = bound.tensors[s.name]!.value;
      if (mine.has(s.name)) {
        this.params.view(s.name).set(bound.flat.view(s.name));
        v.data = this.params.view(s.name);
        this.leaves.set(s.name, v);
      } else v.data = null;
    }
    this.wholeLayout = bound.flat.layout;
    const readers = new Map<string, Set<number>>();
    for (let s = 0; s < model.pieces; s++) for (const n of model.params(s)) readers.set(n, (readers.get(n) ?? new Set()).add(s % this.stages));
    for (const sl of bound.flat.layout.slots) {
      const st = readers.get(sl.name);
      if (!st) throw new Error(`pipeline: parameter '${sl.name}' is in no piece`);
      this.firstReader.set(sl.name, Math.min(...st));
    }
    const sets = new Map<string, { stages: number[]; names: string[] }>();
    for (const s of bound.flat.layout.slots) {
      const st = [...(readers.get(s.name) ?? [])].sort((a, b) => a - b);
      if (st.length < 2) continue;
      const k = st.join(',');
      if (!sets.has(k)) sets.set(k, { stages: st, names: [] });
      sets.get(k)!.names.push(s.name);
    }
    this.tied = [...sets.values()];
  }

  /** The stage that speaks for parameter `name` (the first that reads it: what saves it). */
  ownerOf(name: string): number {
    const r = this.firstReader.get(name);
    if (r === undefined) throw new Error(`pipeline: no parameter '${name}'`);
    return r;
  }

  /** The pieces this rank runs, by chunk. */
  pieces(): number[] { return Array.from({ length: this.chunks }, (_, c) => c * this.stages + this.stage); }

  /**
   * One step over `batch` (this rank's whole batch: every field, the first dim the examples),
   * split into `microbatches` equal microbatches. Resolves with the mean loss over them, on every
   * rank; `grads` then holds the summed gradients of this rank's parameters.
   */
  async step(batch: readonly Feed[], groups: PipelineGroups): Promise<number> {
    const pp = this.checkGroup(groups);
    const M = this.microbatches;
    const micro = splitBatch(batch, M);
    const chunks = await (this.compiled ??= this.compile(micro[0]!, true));
    this.grads.data.fill(0);
    // Slots whose gradient this step has summed in (the first is copied, the rest added).
    const summed = new Uint8Array(this.grads.layout.slots.length);
    let loss = 0;
    const t0 = performance.now();
    const trace: PipelineStepTrace = { stage: this.stage, ms: 0, origin: 0, windowMs: 0, actions: [], transfers: [], busyMs: 0, bubble: 0, peakSavedBytes: 0, peakInFlight: 0 };
    const open = new Map<string, PipelineStepTrace['actions'][number]>();
    let live = 0;
    let inFlight = 0;
    // The table's compute actions, let through one at a time.
    let turn = 0;
    const waiting = new Map<string, () => void>();
    const key = (op: string, mb: number, chunk: number): string => `${op}:${mb}:${chunk}`;
    const current = (): string | null => { const a = this.actions[turn]; return a ? key(a.op, a.mb, a.chunk) : null; };
    const advance = (): void => {
      turn++;
      const k = current();
      const w = k === null ? undefined : waiting.get(k);
      if (w) { waiting.delete(k!); w(); }
    };
    const runs = chunks.flatMap((c, ci) => micro.map(async (mb, m) => {
      const feeds = c.fields.map((i) => mb[i]!);
      const gate = async (g: number): Promise<void> => {
        const op = g === 0 ? 'forward' : 'backward';
        const k = key(op, m, ci);
        if (current() !== k) await new Promise<void>((res) => waiting.set(k, res));
        if (!open.has(k)) open.set(k, { op, mb: m, chunk: ci, start: performance.now() - t0, end: 0, compute: [] });
        pass = open.get(k)!;
      };
      // This run's open action: the one its programs' spans belong to.
      let pass: PipelineStepTrace['actions'][number] | null = null;
      const onGroup = (g: number, values: TypedArray[]): void => {
        const a = open.get(key(g === 0 ? 'forward' : 'backward', m, ci));
        live += g === 0 ? c.savedBytes : -c.savedBytes;
        inFlight += g === 0 ? 1 : -1;
        trace.peakSavedBytes = Math.max(trace.peakSavedBytes, live);
        trace.peakInFlight = Math.max(trace.peakInFlight, inFlight);
        if (g === 0 && c.last) loss += (values[0] as Float32Array)[0]!;
        const summing = performance.now() - t0;
        if (g === 1) c.gradSlots.forEach((slot, i) => { addInto(this.grads, slot, values[i] as Float32Array, !summed[slot]); summed[slot] = 1; });
        // The action's work ends with its gradients summed in.
        if (a) { a.end = performance.now() - t0; a.compute.push([summing, a.end]); trace.actions.push(a); }
        pass = null;
        // The next action starts once this run has issued what follows its pass (its sends).
        setImmediate(advance);
      };
      await c.schedule.run(feeds, { groups, microbatch: m }, `${this.o.label ?? 'pipeline'}${c.piece}_`, {
        onGroup, gate,
        onSpan: (name, host, start, end) => {
          if (host) trace.transfers.push({ name, mb: m, chunk: ci, start: start - t0, end: end - t0 });
          else pass?.compute.push([start - t0, end - t0]);
        },
      });
    }));
    await Promise.all(runs);
    // The last pass's advance is deferred like every other.
    await new Promise<void>((res) => setImmediate(res));
    if (turn !== this.actions.length) throw new Error(`pipeline: stage ${this.stage} ran ${turn} of its ${this.actions.length} actions`);
    trace.busyMs = trace.actions.reduce((t, a) => t + a.compute.reduce((u, [s, e]) => u + e - s, 0), 0);
    // Tied parameters: each stage's part of the gradient summed between the stages that read it.
    for (const t of this.tied) {
      const g = await this.tiedGroup(pp, t.stages);
      if (t.stages.includes(this.stage)) for (const n of t.names) await g.allReduce(this.grads.view(n), 'sum').wait();
    }
    const l = Float32Array.of(loss);
    // The pipeline's window, the one the formula's bubble is a fraction of: from the first compute
    // on any stage to the last, on the clock all of a machine's ranks share (performance.timeOrigin
    // + now; ranks on different machines agree only as far as their clocks do).
    const origin = performance.timeOrigin + t0;
    const span = Float64Array.of(-(origin + Math.min(...trace.actions.map((a) => a.start))), origin + Math.max(...trace.actions.map((a) => a.end)));
    if (this.stages > 1) {
      await pp.allReduce(l, 'sum').wait();
      await pp.allReduce(span, 'max').wait();
    }
    // The step ends on every stage at once (the loss's all-reduce).
    trace.ms = performance.now() - t0;
    trace.origin = origin;
    trace.windowMs = span[0]! + span[1]!;
    trace.bubble = 1 - trace.busyMs / trace.windowMs;
    this.lastStep = trace;
    return l[0]!;
  }

  /**
   * The mean loss over `batch` with the forward alone (evaluation), on every rank: the batch in
   * the most microbatches up to the step's that divide it, each piece receiving, computing and
   * sending one microbatch after another.
   */
  async evaluate(batch: readonly Feed[], groups: PipelineGroups): Promise<number> {
    const pp = this.checkGroup(groups);
    const rows = batch[0]!.shape?.[0] ?? batch[0]!.data.length;
    let M = Math.min(this.microbatches, rows);
    while (rows % M !== 0) M--;
    const micro = splitBatch(batch, M);
    const key = JSON.stringify(micro[0]!.map((f) => f.shape ?? [f.data.length]));
    let compiled = this.forwardOnly.get(key);
    if (!compiled) this.forwardOnly.set(key, (compiled = this.compile(micro[0]!, false)));
    const chunks = await compiled;
    let loss = 0;
    // One (microbatch, chunk) after another in that order on each stage: the stages still overlap
    // (stage 0 computes microbatch 1 while stage 1 computes 0), and collectives inside the pieces
    // (a tensor-parallel plan's) are issued in the same order on every rank of their axis.
    for (const [m, mb] of micro.entries()) {
      for (const c of chunks) {
        const out = await c.schedule.run(c.fields.map((i) => mb[i]!), { groups, microbatch: m }, `${this.o.label ?? 'pipeline'}${c.piece}_eval`);
        if (c.last) loss += (out[0] as Float32Array)[0]! / M;
      }
    }
    const l = Float32Array.of(loss);
    if (this.stages > 1) await pp.allReduce(l, 'sum').wait();
    return l[0]!;
  }

  /** Forward-only chunks by microbatch shape (evaluation batches may differ, the last one shorter). */
  private readonly forwardOnly = new Map<string, Promise<Chunk[]>>();

  /** The pipeline axis's group of `groups`, checked against this stage. */
  private checkGroup(groups: PipelineGroups): ProcessGroup {
    const pp = groups.pp;
    if (pp === undefined) throw new Error(`pipeline: the step's groups have no 'pp' axis (given ${Object.keys(groups).join(', ') || 'none'})`);
    if (pp.size !== this.stages || pp.rank !== this.stage) throw new Error(`pipeline: built for stage ${this.stage} of ${this.stages}, run on rank ${pp.rank} of a group of ${pp.size}`);
    return pp;
  }

  /** The group of the stages in `stages` (split once per set; every stage of the axis takes part). */
  private tiedGroup(pp: ProcessGroup, stages: readonly number[]): Promise<ProcessGroup> {
    const k = stages.join(',');
    let g = this.tiedGroups.get(k);
    if (!g) {
      g = pp.split(stages.includes(this.stage) ? 1 : 0);
      this.tiedGroups.set(k, g);
    }
    return g;
  }

  /** Traces and compiles each chunk's graph for microbatches shaped like `mb`: forward and backward, or (`train` false) the forward alone. */
  private async compile(mb: readonly Feed[], train: boolean): Promise<Chunk[]> {
    const P = this.stages;
    const slotIndex = new Map(this.params.layout.slots.map((s, i) => [s.name, i]));
    const out: Chunk[] = [];
    for (const s of this.pieces()) {
      const first = s === 0;
      const last = s === this.model.pieces - 1;
      const fields = mb.map((f) => new Tensor(new Value(f.dtype as 'float32', [...(f.shape ?? [f.data.length])])));
      const names = this.model.params(s);
      const wrt = names.map((n) => this.leaves.get(n)!);
      const [prev, next] = [(s - 1 + P) % P, (s + 1) % P];
      const x = first ? null : recvFrom('pp', P, prev, ACT(s), this.model.output(s - 1, fields));
      const y = this.model.forward(s, x === null ? null : new Tensor(x), fields).value;
      const gs = (seedOf: Value, seed?: Value): Value[] => grad(seedOf, x === null ? wrt : [...wrt, x], seed ? [seed] : undefined);
      // The batch fields the graph computing `outs` reads: its traced inputs.
      const usedBy = (outs: readonly Value[]): number[] => {
        const read = new Set(topoNodes(outs).flatMap((n) => n.inputs));
        return fields.map((_, i) => i).filter((i) => read.has(fields[i]!.value));
      };
      if (!train) {
        const l = last ? y : sendTo(y, 'pp', P, next, ACT(s + 1));
        const used = usedBy([l]);
        out.push({ piece: s, schedule: await compileSchedule([l], used.map((i) => fields[i]!.value)), fields: used, gradSlots: [], last, savedBytes: 0 });
        continue;
      }
      let fwd: Value[];
      let bwd: Value[];
      if (last) {
        const l = b.mul(y, b.scalarLike(1 / this.microbatches, y));
        const g = gs(l);
        fwd = [l];
        bwd = x === null ? g : [...g.slice(0, -1), sendTo(g.at(-1)!, 'pp', P, prev, GRAD(s - 1), this.o.wholeBackward ? g.slice(0, -1) : [])];
      } else {
        const sent = sendTo(y, 'pp', P, next, ACT(s + 1));
        const dy = recvFrom('pp', P, next, GRAD(s), { dtype: y.dtype as 'float32', shape: y.shape as number[] }, [y]);
        const g = gs(y, dy);
        fwd = [y];
        bwd = [...(x === null ? g : g.slice(0, -1)), sent, ...(x === null ? [] : [sendTo(g.at(-1)!, 'pp', P, prev, GRAD(s - 1), this.o.wholeBackward ? g.slice(0, -1) : [])])];
      }
      const used = usedBy([...fwd, ...bwd]);
      const opts = { groups: [fwd, bwd], phases: true };
      const schedule = await compileSchedule([...fwd, ...bwd], used.map((i) => fields[i]!.value), opts);
      out.push({ piece: s, schedule, fields: used, gradSlots: names.map((n) => slotIndex.get(n)!), last, savedBytes: savedBytes(fwd, bwd, opts) });
    }
    return out;
  }
}

/** Bytes of the values the forward group's programs make that the backward group's nodes read (the saved activations of one microbatch). */
function savedBytes(fwd: readonly Value[], bwd: readonly Value[], opts: { groups: Value[][]; phases: boolean }): number {
  const plan = partition([...fwd, ...bwd], opts);
  const group = (g: number): Set<Node> => new Set(plan.stages.flatMap((st) => [...st.before[g]!, ...st.during[g]!]));
  const [f, bk] = [group(0), group(1)];
  const read = new Set<Value>();
  for (const n of plan.order) if (bk.has(n) || (opdefHost(n) && !f.has(n))) for (const v of n.inputs) if (v !== null && v.node !== null && f.has(v.node)) read.add(v);
  return [...read].reduce((t, v) => t + bytesOf(v), 0);
}

const opdefHost = (n: Node): boolean => opDef(n.op).host === true;

/** `batch` split into M equal microbatches along every field's first dim. */
function splitBatch(batch: readonly Feed[], M: number): Feed[][] {
  const rows = batch[0]!.shape?.[0] ?? batch[0]!.data.length;
  if (!(Number.isInteger(M) && M >= 1) || rows % M !== 0) throw new Error(`pipeline: a batch of ${rows} does not split into ${M} microbatches`);
  return Array.from({ length: M }, (_, m) => batch.map((f) => sliceRows(f, m, M)));
}

/** Microbatch m of M of a feed (rows along its first dim). */
function sliceRows(f: Feed, m: number, M: number): Feed {
  const shape = [...(f.shape ?? [f.data.length])];
  const rows = shape[0]! / M;
  const per = f.data.length / shape[0]!;
  shape[0] = rows;
  return { ...f, data: f.data.subarray(m * rows * per, (m + 1) * rows * per) as typeof f.data, shape };
}

/** Adds `g` into slot `slot` of `buf`, or copies it there when `first` (the slot's first gradient of the step). */
function addInto(buf: FlatBuffer<Float32Array>, slot: number, g: Float32Array, first: boolean): void {
  const { offset, size } = buf.layout.slots[slot]!;
  const d = buf.data;
  if (first) { d.set(g.subarray(0, size), offset); return; }
  // Unrolled by four: V8 does not vectorize, and this halves the loop's time.
  let i = 0;
  for (; i + 3 < size; i += 4) {
    const j = offset + i;
    d[j]! += g[i]!; d[j + 1]! += g[i + 1]!; d[j + 2]! += g[i + 2]!; d[j + 3]! += g[i + 3]!;
  }
  for (; i < size; i++) d[offset + i]! += g[i]!;
}

/**
 * A stage's step as a Chrome trace (the JSON object format Perfetto and chrome://tracing read):
 * one process per rank, its compute actions on thread 0 ("F3" forward of microbatch 3, "B3"
 * backward, with the chunk where there are several), the waits between them ("wait", the bubble
 * and any transfer not hidden) and inside them (a receive not yet arrived when the action's next
 * program was due), and its transfers on thread 1; times in microseconds on the clock the machine's ranks share.
 */
export function chromeTrace(t: PipelineStepTrace, rank: number): { traceEvents: Record<string, unknown>[]; displayTimeUnit: string } {
  // On the shared clock, so every rank's file lines up with the others'.
  const us = (ms: number): number => Math.round((t.origin + ms) * 1000);
  const dus = (ms: number): number => Math.round(ms * 1000);
  const ev: Record<string, unknown>[] = [
    { name: 'process_name', ph: 'M', pid: rank, args: { name: `rank ${rank} (stage ${t.stage})` } },
    { name: 'thread_name', ph: 'M', pid: rank, tid: 0, args: { name: 'compute' } },
    { name: 'thread_name', ph: 'M', pid: rank, tid: 1, args: { name: 'transfers' } },
  ];
  const chunks = new Set(t.actions.map((a) => a.chunk)).size > 1;
  let at = 0;
  for (const a of [...t.actions].sort((x, y) => x.start - y.start)) {
    if (a.start > at) ev.push({ name: 'wait', cat: 'bubble', ph: 'X', pid: rank, tid: 0, ts: us(at), dur: dus(a.start - at) });
    const computeMs = a.compute.reduce((u, [s, e]) => u + e - s, 0);
    ev.push({ name: `${a.op === 'forward' ? 'F' : 'B'}${a.mb}${chunks ? `.${a.chunk}` : ''}`, cat: a.op, ph: 'X', pid: rank, tid: 0, ts: us(a.start), dur: dus(a.end - a.start), args: { microbatch: a.mb, chunk: a.chunk, compute_ms: +computeMs.toFixed(3) } });
    // Inside the action, the gaps between its compute spans: a transfer it waited for.
    let c = a.start;
    for (const [s, e] of [...a.compute].sort((x, y) => x[0] - y[0])) {
      if (s - c > 0.01) ev.push({ name: 'wait', cat: 'transfer wait', ph: 'X', pid: rank, tid: 0, ts: us(c), dur: dus(s - c) });
      c = Math.max(c, e);
    }
    at = Math.max(at, a.end);
  }
  for (const x of t.transfers) ev.push({ name: x.name, cat: 'transfer', ph: 'X', pid: rank, tid: 1, ts: us(x.start), dur: dus(x.end - x.start), args: { microbatch: x.mb, chunk: x.chunk } });
  return { traceEvents: ev, displayTimeUnit: 'ms' };
}
