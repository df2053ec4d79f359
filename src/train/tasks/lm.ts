/**
 * Language modelling on text: the GPT of `model.*` on `data.text` (the Brown corpus or a file),
 * bytes or BPE tokens, a 95/5 split by position, random windows drawn with replacement (as
 * ../shared/anchors/torch_brown.py), evaluated on `eval.windows` fixed windows in one batch, with a
 * text sample at the end of a complete run.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brownText } from '../../data/brown.js';
import { TokenDataset, evalWindows } from '../../data/dataset.js';
import { BpeTokenizer, ByteTokenizer, loadTokenizer, saveTokenizer } from '../../data/tokenizer.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import { GPT } from '../../nn/gpt.js';
import type { GPTConfig } from '../../nn/gpt.js';
import { gptPipeline, parallelizeGPT } from '../../nn/gpt_plan.js';
import type { TpAxis } from '../../nn/tensor_parallel.js';
import type { PipelineModel } from '../../parallel/pipeline.js';
import type { CompileOptions } from '../../tensor/compile.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { RunConfig } from '../config.js';
import { Generator } from '../generate.js';
import { perplexity } from '../metrics.js';
import type { EvalData, Task, TrainSampling } from '../task.js';

/**
 * The GPT of a run's `model.*` for a vocabulary of `vocab` (mixture of experts where
 * model.moe.experts > 0; headDim and mlpHidden only where set, so a default run's GPTConfig, and
 * an export manifest's copy of it, stay as they were).
 */
export function gptConfig(cfg: RunConfig, vocab: number): GPTConfig {
  const { moe, headDim, mlpHidden, ...rest } = cfg.model;
  return { vocab, ...rest, ...(headDim > 0 ? { headDim } : {}), ...(mlpHidden > 0 ? { mlpHidden } : {}), ...(moe.experts > 0 ? { moe } : {}) };
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

export class LanguageModelTask implements Task {
  readonly model: GPT;
  readonly tokenizer: Tokenizer;
  readonly train: TokenDataset;
  readonly eval: EvalData;
  readonly metrics = {};
  readonly derived = perplexity;
  readonly unit = 'tokens' as const;
  readonly unitsPerExample: number;
  /** Activation checkpointing recomputes each transformer block (`GPT.blocks`, paths h0, h1, ...). */
  readonly checkpointUnits = ['h*'] as const;
  /** Windows drawn uniformly with replacement, the draws dealt round-robin to the ranks. */
  readonly sampling: TrainSampling;

  constructor(readonly cfg: RunConfig) {
    const text = readText(cfg);
    const n = Math.floor(text.length * (1 - cfg.data.valFraction));
    this.tokenizer = runTokenizer(cfg, text.subarray(0, n), cfg.out);
    const [train, val] = [this.tokenizer.encode(text.subarray(0, n)), this.tokenizer.encode(text.subarray(n))];
    const { ctx } = cfg.model;
    this.train = new TokenDataset(train, ctx);
    const valSet = new TokenDataset(val, ctx);
    // The fixed windows evaluated as one batch: the mean over all equals the mean of per-window means.
    this.eval = { data: valSet, items: evalWindows(valSet, cfg.eval.windows), batch: cfg.eval.windows };
    this.model = new GPT(gptConfig(cfg, this.tokenizer.vocabSize));
    this.unitsPerExample = ctx;
    const size = this.train.size;
    this.sampling = ({ seed, rank, worldSize }) => ({ kind: 'random', n: size, seed, rank, worldSize });
  }

  describe(params: number): string {
    const m = this.cfg.model;
    return `GPT ${m.layers}x${m.d} (${params.toLocaleString()} params), ${this.cfg.data.text} ${this.tokenizer.vocabSize}-token vocab, ` +
      `${this.train.size.toLocaleString()} train windows`;
  }

  /** Logits [B*T, vocab]. */
  forward(x: Tensor): Tensor { return this.model.logits(x); }

  /** Cross-entropy; in training, plus the MoE layers' weighted load-balancing and z losses. */
  loss(out: Tensor, y: Tensor): Tensor { return this.model.withAux(this.model.criterion(out, y)); }

  checkpointState(): unknown { return { tokenizer: this.tokenizer.toJSON() }; }

  /** The GPT cut into pipeline pieces (nn/gpt_plan.ts). */
  pipeline(pieces: number, blocks?: readonly number[]): PipelineModel { return gptPipeline(this.model, pieces, blocks); }

  /** The GPT's Megatron layout (nn/gpt_plan.ts). */
  parallelize(tp: TpAxis, o: { sp: boolean }): void { parallelizeGPT(this.model, tp, o); }

  finishes(): boolean { return this.cfg.sample.tokens > 0; }

  async finish(compileOptions: CompileOptions = {}): Promise<string | null> {
    const s = this.cfg.sample;
    if (!this.finishes()) return null;
    const text = await new Generator(this.model, this.tokenizer, compileOptions).generate(s.prompt, { tokens: s.tokens, temperature: s.temperature, topK: s.topK, seed: this.cfg.train.seed });
    return `--- sample (temperature ${s.temperature}, top-k ${s.topK}) ---\n${text}\n---`;
  }
}
