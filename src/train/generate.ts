/**
 * Text generation from a GPT: one forward program compiled for a fixed [1, ctx] input (the
 * sequence right-padded; causal attention keeps padding from reaching earlier positions), then
 * temperature / top-k sampling of the next token on the host.
 */
import type { Tokenizer } from '../data/tokenizer.js';
import type { GPT } from '../nn/gpt.js';
import { compile } from '../tensor/compile.js';
import type { Compiled, CompileOptions } from '../tensor/compile.js';
import { Rng } from '../tensor/random.js';

export interface SampleOptions {
  /** Tokens to generate. */
  tokens: number;
  /** Softmax temperature; 0 picks the most likely token. */
  temperature: number;
  /** Sample among the k most likely tokens; 0 for all. */
  topK: number;
  seed?: number;
}

export class Generator {
  private readonly forward: Compiled;

  /** `compileOptions`: for a tensor-parallel model, the context of its collectives (every rank generates in step). */
  constructor(readonly model: GPT, readonly tokenizer: Tokenizer, compileOptions: CompileOptions = {}) {
    if (tokenizer.vocabSize !== model.config.vocab) {
      throw new Error(`Generator: the tokenizer has ${tokenizer.vocabSize} tokens, the model ${model.config.vocab}`);
    }
    this.forward = compile((idx) => [model.gatherLogits(model.logits(idx!))], 'generate', compileOptions);
  }

  /** Continues `prompt` by `o.tokens` tokens; returns the prompt and its continuation. */
  async generate(prompt: string, o: SampleOptions): Promise<string> {
    const { ctx, vocab } = this.model.config;
    const rng = new Rng(o.seed ?? 0);
    const ids = Array.from(this.tokenizer.encode(prompt));
    if (ids.length === 0) ids.push(0);
    const input = new BigInt64Array(ctx);
    const wasTraining = this.model.training;
    this.model.eval();
    try {
      for (let n = 0; n < o.tokens; n++) {
        const window = ids.slice(-ctx);
        input.fill(0n);
        window.forEach((t, i) => { input[i] = BigInt(t); });
        const [logits] = await this.forward({ data: input, shape: [1, ctx], dtype: 'int64' });
        const row = (logits as Float32Array).subarray((window.length - 1) * vocab, window.length * vocab);
        ids.push(pick(row, o, rng));
      }
    } finally {
      this.model.train(wasTraining);
    }
    return this.tokenizer.decode(ids);
  }
}

/** Samples one id from logits with temperature and top-k (greedy at temperature 0). */
export function pick(logits: ArrayLike<number>, o: Pick<SampleOptions, 'temperature' | 'topK'>, rng: Rng): number {
  const order = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!);
  if (o.temperature === 0) return order[0]!;
  const keep = o.topK > 0 ? order.slice(0, o.topK) : order;
  const top = logits[keep[0]!]!;
  const w = keep.map((i) => Math.exp((logits[i]! - top) / o.temperature));
  let r = rng.uniform() * w.reduce((a, b) => a + b, 0);
  for (let k = 0; k < keep.length; k++) if ((r -= w[k]!) <= 0) return keep[k]!;
  return keep[keep.length - 1]!;
}
