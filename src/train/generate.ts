/**
 * Text generation from a GPT, then temperature / top-k sampling of the next token on the host.
 * Two ways to the next token's logits, the same tokens out (greedy: tested over 256 tokens):
 *
 * - KV cache (default): one compiled program of `GPT.forwardCached`, traced once with symbolic
 *   new and past lengths, runs the prompt (past 0) and then one token a call; a token costs one
 *   position's forward (attention over the past), not the whole window's. The cache is one
 *   preallocated [ctx, heads, hd] array per layer and per keys / values, position-major so the
 *   first P positions are a prefix: it is fed as [1, P, heads, hd] views without copying (the
 *   program transposes them), and only the new positions' keys and values come back, copied in
 *   behind (returning the whole extended cache made a medium-preset step 1.8x dearer at past 252
 *   than at past 4; this way 1.16x, medians of interleaved runs). Once the sequence is longer than
 *   the context, the window slides (the last ctx tokens, positions from 0 again), no cached key
 *   is valid any more, and every further token is the recompute loop's, as before.
 * - recompute (`cache: false`): one forward program compiled for a fixed [1, ctx] input (the window
 *   right-padded; causal attention keeps padding from reaching earlier positions) per token.
 *
 * A tensor-parallel model (compile options with a context) and a mixture-of-experts GPT (expert
 * capacity sized from a static token count) always recompute.
 */
import type { Tokenizer } from '../data/tokenizer.js';
import type { TypedArray } from '../ir/dtype.js';
import { gptWidths } from '../nn/gpt.js';
import type { GPT, KV } from '../nn/gpt.js';
import { compile } from '../tensor/compile.js';
import type { Compiled, CompileOptions } from '../tensor/compile.js';
import { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';

export interface SampleOptions {
  /** Tokens to generate. */
  tokens: number;
  /** Softmax temperature; 0 picks the most likely token. */
  temperature: number;
  /** Sample among the k most likely tokens; 0 for all. */
  topK: number;
  seed?: number;
  /** Use the KV cache where the model allows (default true); false: recompute the window for every token. */
  cache?: boolean;
  /** Called with each new id as soon as it is picked (streaming output; the benchmark times tokens by it). */
  onToken?: (id: number) => void;
}

export class Generator {
  private readonly forward: Compiled;
  /**
   * The cached path's program: (idx [1, new], past keys and values of each layer [1, past, heads,
   * hd]) -> (logits [new, vocab], the new positions' keys and values [1, new, heads, hd]); null
   * where the model cannot take it.
   */
  private readonly step: Compiled | null;

  /** `compileOptions`: for a tensor-parallel model, the context of its collectives (every rank generates in step). */
  constructor(readonly model: GPT, readonly tokenizer: Tokenizer, compileOptions: CompileOptions = {}) {
    if (tokenizer.vocabSize !== model.config.vocab) {
      throw new Error(`Generator: the tokenizer has ${tokenizer.vocabSize} tokens, the model ${model.config.vocab}`);
    }
    this.forward = compile((idx) => [model.gatherLogits(model.logits(idx!))], 'generate', compileOptions);
    const cacheable = compileOptions.context === undefined && model.config.moe === undefined;
    const L = model.config.layers;
    const swap = (t: Tensor): Tensor => t.transpose([0, 2, 1, 3]); // [1, P, H, hd] <-> [1, H, P, hd]
    this.step = !cacheable ? null : compile((idx, ...kv) => {
      const past: KV[] = Array.from({ length: L }, (_, l) => ({ k: swap(kv[2 * l]!), v: swap(kv[2 * l + 1]!) }));
      const r = model.forwardCached(idx!, past);
      return [model.gatherLogits(r.logits), ...r.fresh.flatMap((p): Tensor[] => [swap(p.k), swap(p.v)])];
    }, 'generate-step', { ...compileOptions, symbolic: [[null, 'new'], ...Array.from({ length: 2 * L }, () => [null, 'past', null, null])] });
  }

  /** Whether `generate` uses the KV cache by default (false for tensor-parallel and mixture-of-experts models). */
  get cached(): boolean { return this.step !== null; }

  /** Traces so far of each path's program: the cached step's stays 1 however long the sequence. */
  get traces(): { recompute: number; cached: number } { return { recompute: this.forward.traces, cached: this.step?.traces ?? 0 }; }

  /** Continues `prompt` by `o.tokens` tokens; returns the prompt and its continuation. */
  async generate(prompt: string, o: SampleOptions): Promise<string> {
    const ids = Array.from(this.tokenizer.encode(prompt));
    if (ids.length === 0) ids.push(0);
    return this.tokenizer.decode(await this.generateIds(ids, o));
  }

  /** Continues the token ids `prompt` (at least one) by `o.tokens` tokens; returns prompt and continuation. */
  async generateIds(prompt: readonly number[], o: SampleOptions): Promise<number[]> {
    if (prompt.length === 0) throw new Error('Generator: the prompt has no tokens');
    const { ctx, vocab, layers, heads } = this.model.config;
    const hd = gptWidths(this.model.config).headDim;
    const rng = new Rng(o.seed ?? 0);
    const ids = [...prompt];
    const input = new BigInt64Array(ctx);
    const useCache = (o.cache ?? true) && this.step !== null;
    const row = heads * hd;
    // Keys and values of ids[0 .. done), position-major; valid while the window has not slid.
    const cache = useCache ? Array.from({ length: 2 * layers }, () => new Float32Array(ctx * row)) : [];
    let done = 0;
    const wasTraining = this.model.training;
    this.model.eval();
    try {
      for (let n = 0; n < o.tokens; n++) {
        let next: ArrayLike<number>;
        if (useCache && ids.length <= ctx) {
          const fresh = ids.slice(done);
          const [logits, ...added]: TypedArray[] = await this.step!(
            { data: BigInt64Array.from(fresh, BigInt), shape: [1, fresh.length], dtype: 'int64' },
            ...cache.map((c) => ({ data: c.subarray(0, done * row), shape: [1, done, heads, hd], dtype: 'float32' as const })),
          );
          added.forEach((a, i) => cache[i]!.set(a as Float32Array, done * row));
          done = ids.length;
          next = (logits as Float32Array).subarray((fresh.length - 1) * vocab, fresh.length * vocab);
        } else {
          const window = ids.slice(-ctx);
          input.fill(0n);
          window.forEach((t, i) => { input[i] = BigInt(t); });
          const [logits] = await this.forward({ data: input, shape: [1, ctx], dtype: 'int64' });
          next = (logits as Float32Array).subarray((window.length - 1) * vocab, window.length * vocab);
        }
        ids.push(pick(next, o, rng));
        o.onToken?.(ids[ids.length - 1]!);
      }
    } finally {
      this.model.train(wasTraining);
    }
    return ids;
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
