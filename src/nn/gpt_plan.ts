/**
 * The GPT's tensor-parallel plan (Megatron-LM's layout), beside the model and applied to a model
 * instance before `bindParameters`; gpt.ts stays single-device code.
 *
 * - token embedding: vocab parallel (rows of the table), and the tied LM head gives this rank's
 *   vocabulary slice of the logits, which a vocab-parallel cross-entropy reads without gathering;
 * - attention: q|k|v column parallel by heads (each rank its heads of q, k and v), the output
 *   projection row parallel; MLP: fc1 column parallel, fc2 row parallel;
 * - LayerNorms and the position table replicated; with `sp`, the residual stream between the
 *   regions is split by tokens (Korthikanti et al.), LayerNorms run on those shards.
 *
 * Per block without sp: forward 2 all-reduces (after proj, after fc2), backward 2 (the copies into
 * qkv and fc1); with sp the same bytes as 2 all-gathers + 2 reduce-scatters each way.
 */
import * as b from '../ir/build.js';
import { allGather, copyTo } from '../ir/ops/collective.js';
import { Tensor } from '../tensor/tensor.js';
import { gptWidths, MLP } from './gpt.js';
import type { GPT } from './gpt.js';
import { applyPlan, fromRowShards, toRowShards, vocabParallelCrossEntropy } from './tensor_parallel.js';
import type { Plan, TpAxis } from './tensor_parallel.js';

export interface GptPlanOptions {
  /** Sequence parallelism between the tensor-parallel regions. */
  sp?: boolean;
}

/** Checks that `size` divides what it must, naming each factor. */
export function checkGptParallel(c: { vocab: number; d: number; heads: number; dropout?: number; mlpRatio?: number; mlpHidden?: number; headDim?: number }, size: number, axis = 'tp'): void {
  const bad: string[] = [];
  if (c.heads % size !== 0) bad.push(`the heads (${c.heads})`);
  if (c.vocab % size !== 0) bad.push(`the vocabulary (${c.vocab})`);
  const hidden = gptWidths(c).mlpHidden;
  if (hidden % size !== 0) bad.push(c.mlpHidden === undefined ? `the MLP width ${c.mlpRatio ?? 4}d (${hidden})` : `the MLP width mlpHidden (${hidden})`);
  if (bad.length) throw new Error(`tensor parallel: ${axis} = ${size} must divide ${bad.join(', ')}`);
  if ((c.dropout ?? 0) > 0) throw new Error(`tensor parallel: dropout (${c.dropout}) must be 0: replicated activations would draw different masks on each rank`);
}

/** The GPT's plan as data: module paths to styles (the head and loss are wired in `parallelizeGPT`). */
export const GPT_PLAN: Plan = {
  'tok': { kind: 'vocabEmbedding' },
  'h*.attn.qkv': { kind: 'colwise', parts: 3 },
  'h*.attn.proj': { kind: 'rowwise' },
  'h*.mlp.fc1': { kind: 'colwise' },
  'h*.mlp.fc2': { kind: 'rowwise' },
  // Sequence parallel only: LayerNorms on row shards.
  'h*.ln1': { kind: 'sequenceNorm' },
  'h*.ln2': { kind: 'sequenceNorm' },
  'lnf': { kind: 'sequenceNorm' },
};

/** Applies the plan to `gpt` for this rank of the axis. */
export function parallelizeGPT(gpt: GPT, tp: TpAxis, o: GptPlanOptions = {}): void {
  checkGptParallel(gpt.config, tp.size, tp.axis);
  const sp = o.sp ?? false;
  // Mixture-of-experts blocks have no MLP to split (their experts stay whole on each tp rank, which
  // all route the same replicated tokens); a GPT of experts only has no 'h*.mlp.fc*' at all.
  const dense = gpt.blocks.some((blk) => blk.mlp instanceof MLP);
  applyPlan(gpt, dense ? GPT_PLAN : Object.fromEntries(Object.entries(GPT_PLAN).filter(([k]) => !k.startsWith('h*.mlp.'))), tp, { sp });
  if (sp) {
    const first = gpt.blocks[0]!;
    const forward = first.forward.bind(first);
    first.forward = (x: Tensor, B: number, T: number): Tensor => forward(toRowShards(x, tp), B, T);
  }
  // Tied head: this rank's vocabulary rows of the table give its slice of the logits.
  gpt.head = (x: Tensor): Tensor => {
    const full = sp ? fromRowShards(x, tp) : new Tensor(copyTo(x.value, tp.axis, tp.size));
    return new Tensor(b.gemm(full.value, gpt.tok.weight.t.value, null, { transB: true }));
  };
  gpt.criterion = (logits: Tensor, tgt: Tensor): Tensor => vocabParallelCrossEntropy(logits, tgt, tp);
  // Sampling needs every logit: the slices gathered (a replicated result; backward: split).
  gpt.gatherLogits = (logits: Tensor): Tensor => new Tensor(allGather(logits.value, tp.axis, tp.size, 1, 'split'));
}

/**
 * The GPT cut into `pieces` pipeline pieces (parallel/pipeline.ts's `PipelineModel`): the
 * embeddings with the first piece, the final LayerNorm and the tied head with the last, the blocks
 * in order, `blocks[s]` of them in piece s (default: an equal share each; the blocks cost the same,
 * so equal counts are balanced stages). The head reads the token embedding, so that weight is in
 * both the first and the last piece (its gradient is summed between their stages).
 */
export function gptPipeline(gpt: GPT, pieces: number, blocks?: readonly number[]): {
  pieces: number;
  params(s: number): string[];
  forward(s: number, x: Tensor | null, batch: readonly Tensor[]): Tensor;
  output(s: number, batch: readonly Tensor[]): { dtype: 'float32'; shape: number[] };
} {
  const L = gpt.config.layers;
  if (!(Number.isInteger(pieces) && pieces >= 1)) throw new Error(`GPT pipeline: pieces must be a positive integer, got ${pieces}`);
  if (blocks === undefined) {
    if (L % pieces !== 0) throw new Error(`GPT pipeline: ${L} layers do not split evenly into ${pieces} pieces; give the blocks of each piece (parallel.stages, ${pieces} numbers summing to ${L})`);
    blocks = Array.from({ length: pieces }, () => L / pieces);
  }
  if (blocks.length !== pieces) throw new Error(`GPT pipeline: parallel.stages has ${blocks.length} entries, the pipeline ${pieces} pieces`);
  if (!blocks.every((n) => Number.isInteger(n) && n >= 0) || blocks.reduce((a, n) => a + n, 0) !== L) {
    throw new Error(`GPT pipeline: parallel.stages [${blocks.join(', ')}] must be non-negative integers summing to the model's ${L} layers`);
  }
  const start = blocks.map((_, s) => blocks!.slice(0, s).reduce((a, n) => a + n, 0));
  const names = gpt.namedParameters().map(([n]) => n);
  const last = pieces - 1;
  const inPiece = (n: string, s: number): boolean => {
    const h = /^h(\d+)\./.exec(n);
    if (h) { const l = Number(h[1]); return l >= start[s]! && l < start[s]! + blocks![s]!; }
    if (n.startsWith('tok.')) return s === 0 || s === last;
    if (n === 'pos') return s === 0;
    if (n.startsWith('lnf.')) return s === last;
    throw new Error(`GPT pipeline: parameter '${n}' belongs to no piece`);
  };
  const dims = (batch: readonly Tensor[]): [number, number] => batch[0]!.shape as [number, number];
  return {
    pieces,
    params: (s) => names.filter((n) => inPiece(n, s)),
    forward(s, x, batch) {
      const [B, T] = dims(batch);
      let h = x;
      if (s === 0) {
        const idx = batch[0]!;
        const pos = T === gpt.config.ctx ? gpt.pos.t : gpt.pos.t.slice([0], [T], [0]);
        h = gpt.tok.forward(idx).add(pos).reshape([B * T, gpt.config.d]);
      }
      for (let l = start[s]!; l < start[s]! + blocks![s]!; l++) h = gpt.blocks[l]!.forward(h!, B, T);
      return s === last ? gpt.criterion(gpt.head(gpt.lnf.forward(h!)), batch[batch.length - 1]!) : h!;
    },
    output(_s, batch) {
      const [B, T] = dims(batch);
      return { dtype: 'float32', shape: [B * T, gpt.config.d] };
    },
  };
}
