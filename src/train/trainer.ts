/**
 * The training loop: data, model, AdamW, schedule, gradient accumulation and clipping, periodic
 * evaluation and checkpoints, exact resume, metrics as JSON lines, a live progress line.
 *
 * Resume is exact: a checkpoint holds the weights, both AdamW moments and its step count, and the
 * loader's sampler state as of the last consumed batch, so the steps after a resume draw the same
 * batches from the same parameters and compute the same losses as an uninterrupted run.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { brownText } from '../data/brown.js';
import { TokenDataset, evalWindows } from '../data/dataset.js';
import { createLoader } from '../data/loader.js';
import type { Batch, Loader, LoaderState } from '../data/loader.js';
import { BpeTokenizer, ByteTokenizer, loadTokenizer, saveTokenizer } from '../data/tokenizer.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { bindParameters, loadStateDict, stateDict } from '../nn/module.js';
import type { BoundParameters } from '../nn/module.js';
import { GPT } from '../nn/gpt.js';
import type { GPTConfig } from '../nn/gpt.js';
import { AdamW } from '../optim/adamw.js';
import { warmupConstant, warmupCosine } from '../optim/schedule.js';
import type { Schedule } from '../optim/schedule.js';
import { setThreads } from '../runtime/executor.js';
import { FlatBuffer } from '../runtime/flat.js';
import type { Layout } from '../runtime/flat.js';
import { compile } from '../tensor/compile.js';
import { allReduceHook, DistributedDataParallel, fp16Hook } from '../dist/ddp.js';
import { allGatherJson } from '../dist/json.js';
import { LocalProcessGroup } from '../dist/local.js';
import type { ProcessGroup } from '../dist/process_group.js';
import type { Compiled } from '../tensor/compile.js';
import type { Tensor } from '../tensor/tensor.js';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import type { RunConfig } from './config.js';
import { Generator } from './generate.js';
import { gradStep } from './step.js';
import type { GradStep } from './step.js';

export interface StepMetrics {
  /** Optimizer steps completed. */
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  elapsed_s: number;
  val_loss?: number;
}

export interface TrainerOptions {
  /** The ranks to train on (data parallel); default a group of one. */
  pg?: ProcessGroup;
}

export interface TrainOptions {
  /** Continue from the run directory's latest checkpoint. */
  resume?: boolean;
  /** Stop (with a checkpoint) after this many completed steps: for tests and preemption. */
  stopAfter?: number;
  /** Progress and summary output; default process.stdout. Null: silent. */
  out?: NodeJS.WritableStream | null;
}

export interface TrainResult {
  steps: number;
  losses: number[];
  valLosses: { step: number; val_loss: number }[];
  checkpoint: string | null;
  sample: string | null;
  tokensPerS: number;
}

/** Raw bytes of the configured text. */
function readText(cfg: RunConfig): Uint8Array {
  if (cfg.data.text === 'brown') return brownText();
  try { return readFileSync(cfg.data.text); } catch (e) {
    throw new Error(`data.text: cannot read ${cfg.data.text} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** The tokenizer of a run: bytes, or BPE trained on the training split and saved in the run dir (reused on resume). */
function runTokenizer(cfg: RunConfig, train: Uint8Array, runDir: string): Tokenizer {
  if (cfg.data.tokenizer === 'byte') return new ByteTokenizer();
  const path = join(runDir, 'tokenizer.json');
  if (existsSync(path)) return loadTokenizer(path);
  const tok = BpeTokenizer.train(train, cfg.data.bpeVocab);
  saveTokenizer(tok, path);
  return tok;
}

/** Per-parameter tensors of a flat buffer (checkpoint form: names survive layout changes). */
function byName(flat: FlatBuffer<Float32Array>, prefix = ''): Map<string, { shape: readonly number[]; data: Float32Array }> {
  return new Map(flat.layout.slots.map((s) => [prefix + s.name, { shape: s.shape, data: flat.view(s.name) }]));
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

export class Trainer {
  readonly model: GPT;
  readonly params: BoundParameters;
  readonly grads: FlatBuffer<Float32Array>;
  readonly opt: AdamW<Float32Array>;
  readonly tokenizer: Tokenizer;
  private readonly schedule: Schedule;
  private readonly step: GradStep | null;
  private readonly ddp: DistributedDataParallel | null;
  readonly pg: ProcessGroup;
  private readonly evalProgram: Compiled;
  private readonly trainSet: TokenDataset;
  private readonly evalBatch: { x: BigInt64Array; y: BigInt64Array };
  private readonly metricsPath: string;

  constructor(readonly cfg: RunConfig, opts: TrainerOptions = {}) {
    this.pg = opts.pg ?? new LocalProcessGroup();
    setThreads(cfg.train.threads > 0 ? cfg.train.threads : Math.max(1, Math.floor(availableParallelism() / this.pg.size)));
    mkdirSync(cfg.out, { recursive: true });
    const text = readText(cfg);
    const n = Math.floor(text.length * (1 - cfg.data.valFraction));
    this.tokenizer = runTokenizer(cfg, text.subarray(0, n), cfg.out);
    const [train, val] = [this.tokenizer.encode(text.subarray(0, n)), this.tokenizer.encode(text.subarray(n))];
    const { ctx } = cfg.model;
    this.trainSet = new TokenDataset(train, ctx);
    const valSet = new TokenDataset(val, ctx);
    this.evalBatch = this.windows(valSet, evalWindows(valSet, cfg.eval.windows));

    const gpt: GPTConfig = { vocab: this.tokenizer.vocabSize, ...cfg.model };
    this.model = new GPT(gpt);
    this.params = bindParameters(this.model, { seed: cfg.train.seed });
    this.grads = FlatBuffer.zeros(this.params.flat.layout, 'grads');
    this.opt = new AdamW(this.params.flat, {
      lr: cfg.train.lr, beta1: cfg.train.beta1, beta2: cfg.train.beta2, eps: cfg.train.eps, weightDecay: cfg.train.weightDecay,
      ...(cfg.train.clip > 0 ? { clipNorm: cfg.train.clip } : {}),
    });
    const t = cfg.train;
    this.schedule = t.schedule === 'cosine' && t.steps > t.warmup
      ? warmupCosine({ lr: t.lr, warmupSteps: t.warmup, warmup: 'step+1', totalSteps: t.steps, minLr: Math.min(t.minLr, t.lr) })
      : warmupConstant({ lr: t.lr, warmupSteps: t.warmup, warmup: 'step+1' });
    const scale = 1 / t.accumulate;
    const loss = (x: Tensor | undefined, y: Tensor | undefined): Tensor => (scale === 1 ? this.model.loss(x!, y!) : this.model.loss(x!, y!).mul(scale));
    if (this.pg.size > 1) {
      this.step = null;
      this.ddp = new DistributedDataParallel(this.pg, this.params, this.grads, loss, {
        bucketBytes: cfg.dist.bucketMB * 2 ** 20, hook: cfg.dist.hook === 'fp16' ? fp16Hook : allReduceHook,
      });
    } else {
      this.ddp = null;
      this.step = gradStep(this.params, this.grads, loss);
    }
    this.evalProgram = compile((x, y) => [this.model.loss(x!, y!)], 'eval');
    this.metricsPath = join(cfg.out, 'metrics.jsonl');
  }

  /** The fixed evaluation windows as one batch (mean loss over all equals the mean of per-window means). */
  private windows(ds: TokenDataset, starts: number[]): { x: BigInt64Array; y: BigInt64Array } {
    const T = ds.ctx;
    const x = new BigInt64Array(starts.length * T);
    const y = new BigInt64Array(starts.length * T);
    starts.forEach((s, r) => {
      const rec = ds.window(s);
      for (let j = 0; j < T; j++) { x[r * T + j] = BigInt(rec[j]!); y[r * T + j] = BigInt(rec[j + 1]!); }
    });
    return { x, y };
  }

  /** Mean validation loss over the fixed windows (eval mode: no dropout). */
  async evaluate(): Promise<number> {
    const B = this.evalBatch.x.length / this.cfg.model.ctx;
    const shape = [B, this.cfg.model.ctx];
    this.model.eval();
    try {
      const [l] = await this.evalProgram({ data: this.evalBatch.x, shape, dtype: 'int64' }, { data: this.evalBatch.y, shape, dtype: 'int64' });
      return Number(l![0]);
    } finally {
      this.model.train();
    }
  }

  /** Restores weights, optimizer and data position from the run's latest checkpoint; returns its step and loader state. */
  private restore(): { step: number; loader: LoaderState } | null {
    const path = latestCheckpoint(this.cfg.out);
    if (path === null) return null;
    const ck = loadCheckpoint(path);
    const file = join(ck.dir, 'model.safetensors');
    try { loadStateDict(this.params, ck.weights); } catch (e) { throw new Error(`${file}: ${(e as Error).message.replace(/^loadStateDict: /, '')}`); }
    const layout = this.params.flat.layout;
    const ofile = join(ck.dir, 'optimizer.safetensors');
    const st = ck.state as { step: number; optimizer: { t: number }; loaders: LoaderState[] };
    if (st.loaders.length !== this.pg.size) {
      throw new Error(`${join(ck.dir, 'state.json')}: saved by ${st.loaders.length} ranks, resuming on ${this.pg.size}; data positions do not carry across rank counts`);
    }
    this.opt.loadState({ t: st.optimizer.t, m: flatFrom(layout, ck.optimizer, 'm.', ofile), v: flatFrom(layout, ck.optimizer, 'v.', ofile) });
    return { step: st.step, loader: st.loaders[this.pg.rank]! };
  }

  /** Every rank hands in its loader state; rank 0 writes the checkpoint. Returns its path (rank 0) or null. */
  private async save(step: number, loader: Loader): Promise<string | null> {
    const loaders = await allGatherJson(this.pg, loader.state());
    if (this.pg.rank !== 0) return null;
    const optimizer = new Map([...byName(this.opt.m, 'm.'), ...byName(this.opt.v, 'v.')]);
    const state = { step, config: this.cfg, ranks: this.pg.size, optimizer: { name: 'adamw', t: this.opt.t }, loaders, tokenizer: this.tokenizer.toJSON() };
    return saveCheckpoint(this.cfg.out, step, { weights: stateDict(this.params), optimizer, state, keep: this.cfg.checkpoint.keep });
  }

  /** Forward + backward of one micro-batch: data parallel when there are several ranks. */
  private async microStep(b: Batch, first: boolean, last: boolean): Promise<number> {
    const feeds = b.fields.map((f) => ({ data: f.data, shape: f.shape, dtype: f.dtype })); // x, y int64 [B, T]
    if (this.ddp) return this.ddp.step(feeds, { accumulate: !first, noSync: !last });
    return this.step!(feeds, { accumulate: !first });
  }

  /** Keeps the metrics of steps up to `step` (a resumed run rewrites what came after its checkpoint). */
  private trimMetrics(step: number): void {
    if (!existsSync(this.metricsPath)) return;
    const keep = readFileSync(this.metricsPath, 'utf8').split('\n').filter((l) => l.trim() && (JSON.parse(l) as StepMetrics).step <= step);
    writeFileSync(this.metricsPath, keep.map((l) => `${l}\n`).join(''));
  }

  async run(o: TrainOptions = {}): Promise<TrainResult> {
    const cfg = this.cfg;
    const lead = this.pg.rank === 0;
    const out = !lead ? null : o.out === undefined ? process.stdout : o.out;
    const say = (s: string): void => { out?.write(`${s}\n`); };
    const resumed = o.resume ? this.restore() : null;
    if (o.resume && resumed === null) say(`weft: no checkpoint in ${cfg.out}; starting from scratch`);
    let step = resumed?.step ?? 0;
    if (lead) { if (resumed) this.trimMetrics(step); else writeFileSync(this.metricsPath, ''); }
    if (this.ddp) await this.ddp.broadcastParameters();
    const loader = await createLoader({
      dataset: this.trainSet, batch: cfg.train.batch, depth: 2,
      sampler: { kind: 'random', n: this.trainSet.size, seed: cfg.train.dataSeed, rank: this.pg.rank, worldSize: this.pg.size },
      ...(resumed ? { state: resumed.loader } : {}),
    });
    const { batch: B, accumulate: A, steps } = cfg.train;
    const T = cfg.model.ctx;
    const stop = Math.min(steps, o.stopAfter ?? steps);
    const losses: number[] = [];
    const valLosses: { step: number; val_loss: number }[] = [];
    const tty = out !== null && (out as NodeJS.WriteStream).isTTY === true;
    say(`weft: ${this.pg.size > 1 ? `${this.pg.size} ranks (${this.pg.backend}), ` : ''}GPT ${cfg.model.layers}x${cfg.model.d} (${this.params.flat.layout.slots.reduce((s, x) => s + x.size, 0).toLocaleString()} params), ` +
      `${cfg.data.text} ${this.tokenizer.vocabSize}-token vocab, ${this.trainSet.size.toLocaleString()} train windows; ` +
      `${resumed ? `resuming at step ${step}` : 'from scratch'} -> step ${stop}`);
    const t0 = performance.now();
    const first = step;
    let checkpoint: string | null = null;
    try {
      while (step < stop) {
        const lr = this.schedule(step);
        let loss = 0;
        for (let a = 0; a < A; a++) {
          const b = await loader.next();
          if (b === null) throw new Error('training data ran out (the random-window sampler is endless; this is a bug)');
          loss += await this.microStep(b, a === 0, a === A - 1);
        }
        if (this.pg.size > 1) {
          const l = Float32Array.of(loss);
          await this.pg.allReduce(l, 'mean').wait();
          loss = l[0]!;
        }
        const { gradNorm } = await this.opt.step(this.grads, lr);
        step++;
        losses.push(loss);
        const elapsed = (performance.now() - t0) / 1000;
        const m: StepMetrics = { step, loss, lr, grad_norm: gradNorm, tokens_per_s: ((step - first) * A * B * T * this.pg.size) / elapsed, elapsed_s: elapsed };
        if (lead && (step % cfg.eval.every === 0 || step === stop)) {
          m.val_loss = await this.evaluate();
          valLosses.push({ step, val_loss: m.val_loss });
        }
        if (lead) appendFileSync(this.metricsPath, `${JSON.stringify(m)}\n`);
        const eta = ((stop - step) * elapsed) / (step - first);
        const line = `step ${step}/${steps}  loss ${loss.toFixed(4)}${m.val_loss !== undefined ? `  val ${m.val_loss.toFixed(4)}` : ''}  ` +
          `${Math.round(m.tokens_per_s).toLocaleString()} tok/s  ETA ${fmtTime(eta)}`;
        if (tty) out!.write(`\r${line}\x1b[K${m.val_loss !== undefined ? '\n' : ''}`);
        else if (step % cfg.log.every === 0 || m.val_loss !== undefined) say(line);
        if (step % cfg.checkpoint.every === 0 || step === stop) checkpoint = await this.save(step, loader);
      }
      if (tty) out!.write('\n');
    } finally {
      await loader.close();
    }
    const tokensPerS = ((step - first) * A * B * T * this.pg.size) / ((performance.now() - t0) / 1000 || 1);
    let sample: string | null = null;
    if (lead && step === steps && cfg.sample.tokens > 0) {
      sample = await new Generator(this.model, this.tokenizer).generate(cfg.sample.prompt, { tokens: cfg.sample.tokens, temperature: cfg.sample.temperature, topK: cfg.sample.topK, seed: cfg.train.seed });
    }
    const last = valLosses.at(-1);
    say(`weft: ${step - first} steps in ${fmtTime((performance.now() - t0) / 1000)}, ${Math.round(tokensPerS).toLocaleString()} tokens/s; ` +
      `final loss ${losses.at(-1)?.toFixed(4) ?? '-'}${last ? `, val ${last.val_loss.toFixed(4)}` : ''}; checkpoint ${checkpoint ?? '-'}`);
    if (sample !== null) say(`\n--- sample (temperature ${cfg.sample.temperature}, top-k ${cfg.sample.topK}) ---\n${sample}\n---`);
    return { steps: step, losses, valLosses, checkpoint, sample, tokensPerS };
  }
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}
