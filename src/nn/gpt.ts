/**
 * GPT: token + learned position embeddings, pre-LN transformer blocks
 *   x += proj(causal_attention(qkv(ln1(x)))),  x += fc2(gelu(fc1(ln2(x)))),
 * a final LayerNorm and an LM head tied to the token embedding. The benchmark GPT of
 * ../shared/anchors/README.md is `GPT_PRESETS.small` / `.medium`.
 *
 * The residual stream is kept 2-D, [B*T, d]: every Linear is one Gemm and so is its weight
 * gradient (a 3-D MatMul would give a batched product plus a reduction in backward).
 *
 * `forwardCached` runs the same blocks over a KV cache (incremental decoding: each layer's keys
 * and values of earlier positions fed back), with symbolic batch and lengths where a graph is
 * exported (deploy/export.ts) or traced once for every length (train/generate.ts).
 */
import * as b from '../ir/build.js';
import type { Dim } from '../ir/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { Dropout, Embedding, LayerNorm, Linear } from './layers.js';
import { init, Module } from './module.js';
import type { Parameter } from './module.js';
import { MoE, moeAuxLoss, moeDefaults } from './moe.js';
import type { MoEConfig } from './moe.js';

export interface GPTConfig {
  /** Vocabulary size (256 for bytes). */
  vocab: number;
  /** Context length: the longest sequence the position table covers. */
  ctx: number;
  /** Model width. */
  d: number;
  layers: number;
  /** Attention heads; must divide d unless `headDim` is given. */
  heads: number;
  /**
   * Width of each head (default d / heads). Independent of d so that a model whose heads were
   * pruned (train/prune_structured.ts) keeps its d: qkv is Linear(d, 3 heads headDim), proj
   * Linear(heads headDim, d).
   */
  headDim?: number;
  /** Dropout on attention output and MLP output (0: none, as the benchmark). */
  dropout?: number;
  /** Std of the normal init of every Linear and Embedding weight. Default 0.02. */
  initStd?: number;
  /** GPT-2's scaled init of residual projections (std / sqrt(2 layers)). Default off (the anchors' init). */
  scaledResidualInit?: boolean;
  /** MLP hidden width over d (4 in GPT-2 and the anchors). Default 4. */
  mlpRatio?: number;
  /** MLP hidden width in neurons, overriding mlpRatio x d (a model whose neurons were pruned). */
  mlpHidden?: number;
  /** Mixture of experts in place of the MLP of every `moe.every`-th block (nn/moe.ts). Default none. */
  moe?: MoEConfig;
}

/** The head width and the MLP width of `c`, defaults applied: d / heads and mlpRatio x d. */
export function gptWidths(c: Pick<GPTConfig, 'd' | 'heads' | 'headDim' | 'mlpRatio' | 'mlpHidden'>): { headDim: number; mlpHidden: number } {
  return { headDim: c.headDim ?? c.d / c.heads, mlpHidden: c.mlpHidden ?? (c.mlpRatio ?? 4) * c.d };
}

/** Whether block `l` of a GPT with `c` is a mixture-of-experts block. */
export const isMoeBlock = (c: GPTConfig, l: number): boolean => c.moe !== undefined && (l + 1) % moeDefaults(c.moe).every === 0;

export const GPT_PRESETS = {
  small: { vocab: 256, ctx: 128, d: 256, layers: 4, heads: 4 },
  medium: { vocab: 256, ctx: 256, d: 512, layers: 8, heads: 8 },
} as const satisfies Record<string, GPTConfig>;

/** The benchmark batch sizes of each preset. */
export const PRESET_BATCH = { small: 16, medium: 8 } as const;

/**
 * Additive causal mask [T, P + T] of T new positions after P cached ones: new position i sees every
 * cached position and the new ones up to itself (0), not later ones (-1e9: finite, float64-safe).
 */
function causalMask(T: number, dtype: 'float32' | 'float64', P = 0): Tensor {
  const K = P + T;
  const m = dtype === 'float32' ? new Float32Array(T * K) : new Float64Array(T * K);
  for (let i = 0; i < T; i++) for (let j = P + i + 1; j < K; j++) m[i * K + j] = -1e9;
  return new Tensor(b.constant(m, dtype, [T, K]));
}

/**
 * One attention layer's cache: keys and values [B, heads, P, hd] of the P positions before the
 * new ones (the exported step model's `past_key_<l>` / `past_value_<l>`).
 */
export interface KV { k: Tensor; v: Tensor }

/** Positions and mask of T new tokens after P cached ones; symbolic sizes are read at run time. */
interface Window {
  /** Positions P .. P + T - 1, int64 [T]. */
  pos: Tensor;
  /** The additive mask [T, P + T]. */
  mask: Tensor;
}

/**
 * The window of T new tokens (ids `idx`) after the P positions of `pastK` (null: none): with every
 * size a number, constants (the mask of training); otherwise built from run-time positions, the
 * mask -1e9 where a key's position exceeds the query's.
 */
function window(idx: Tensor, T: Dim, pastK: Tensor | null, dtype: 'float32' | 'float64'): Window {
  const P = pastK?.shape[2] ?? 0;
  if (typeof T === 'number' && typeof P === 'number') {
    return { pos: new Tensor(b.ints(Array.from({ length: T }, (_, i) => P + i))), mask: causalMask(T, dtype, P) };
  }
  const fresh = new Tensor(b.arange(T, idx.value));
  const pos = P === 0 ? fresh : fresh.add(new Tensor(b.shapeDims(pastK!.value, [P])));
  const keys = P === 0 ? pos : new Tensor(b.concat([b.arange(P, pastK!.value), pos.value], 0));
  const later = new Tensor(b.greater(keys.unsqueeze([0]).value, pos.unsqueeze([1]).value));
  return { pos, mask: new Tensor(b.where(later.value, b.scalar(-1e9, dtype), b.scalar(0, dtype))) };
}

export class CausalSelfAttention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly drop: Dropout;

  /** Width of each head: d / heads unless given. */
  readonly headDim: number;

  constructor(readonly d: number, readonly heads: number, std: number, projStd: number, dropout: number, headDim?: number) {
    super();
    if (headDim === undefined && d % heads !== 0) throw new Error(`CausalSelfAttention: heads (${heads}) must divide d (${d})`);
    this.headDim = headDim ?? d / heads;
    const inner = heads * this.headDim;
    this.qkv = this.child('qkv', new Linear(d, 3 * inner, { init: init.normal(std) }));
    this.proj = this.child('proj', new Linear(inner, d, { init: init.normal(projStd) }));
    this.drop = this.child('drop', new Dropout(dropout));
  }

  /** x [B*T, d] -> [B*T, d]; scores scaled by 1/sqrt(headDim), future positions masked. */
  forward(x: Tensor, B: number, T: number): Tensor {
    return this.attend(x, B, T, causalMask(T, x.dtype as 'float32' | 'float64'), null).y;
  }

  /**
   * Attention of T new positions x [B*T, d] over `past` (keys and values of the P positions before
   * them; null: none) and themselves, with the additive `mask` [T, P + T]; returns y [B*T, d], the
   * new positions' keys and values `fresh` [B, H, T, hd] and the cache extended by them, `present`
   * [B, H, P + T, hd]. B and T may be symbolic (an exported graph); reshapes read them at run time.
   */
  attend(x: Tensor, B: Dim, T: Dim, mask: Tensor, past: KV | null): { y: Tensor; present: KV; fresh: KV } {
    // Heads by -1: under tensor parallelism a rank's qkv holds only its heads (a plan's shards).
    const hd = this.headDim;
    const qkv = this.qkv.forward(x).reshape([B, T, 3, -1, hd]).transpose([2, 0, 3, 1, 4]); // [3, B, H, T, hd]
    const [q, kNew, vNew] = qkv.split([1, 1, 1], 0).map((t) => t.squeeze([0])) as [Tensor, Tensor, Tensor];
    const k = past === null ? kNew : new Tensor(b.concat([past.k.value, kNew.value], 2));
    const v = past === null ? vNew : new Tensor(b.concat([past.v.value, vNew.value], 2));
    const att = q.mul(1 / Math.sqrt(hd)).matmul(k.T).add(mask).softmax(-1);
    const heads = att.matmul(v).transpose([0, 2, 1, 3]); // [B, T, H, hd]
    const y = heads.reshape(typeof B === 'number' && typeof T === 'number' ? [B * T, -1] : [-1, (heads.shape[2] as number) * hd]);
    return { y: this.drop.forward(this.proj.forward(y)), present: { k, v }, fresh: { k: kNew, v: vNew } };
  }
}

export class MLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly drop: Dropout;

  constructor(d: number, std: number, projStd: number, dropout: number, hidden = 4 * d) {
    super();
    this.fc1 = this.child('fc1', new Linear(d, hidden, { init: init.normal(std) }));
    this.fc2 = this.child('fc2', new Linear(hidden, d, { init: init.normal(projStd) }));
    this.drop = this.child('drop', new Dropout(dropout));
  }

  forward(x: Tensor): Tensor { return this.drop.forward(this.fc2.forward(this.fc1.forward(x).gelu())); }
}

export class Block extends Module {
  readonly ln1: LayerNorm;
  readonly attn: CausalSelfAttention;
  readonly ln2: LayerNorm;
  readonly mlp: MLP | MoE;

  constructor(c: GPTConfig, l = 0) {
    super();
    const std = c.initStd ?? 0.02;
    const projStd = c.scaledResidualInit ? std / Math.sqrt(2 * c.layers) : std;
    this.ln1 = this.child('ln1', new LayerNorm(c.d));
    this.attn = this.child('attn', new CausalSelfAttention(c.d, c.heads, std, projStd, c.dropout ?? 0, c.headDim));
    this.ln2 = this.child('ln2', new LayerNorm(c.d));
    this.mlp = this.child('mlp', isMoeBlock(c, l) ? new MoE(c.d, c.moe!, std, projStd) : new MLP(c.d, std, projStd, c.dropout ?? 0, gptWidths(c).mlpHidden));
  }

  forward(x: Tensor, B: number, T: number): Tensor {
    const h = x.add(this.attn.forward(this.ln1.forward(x), B, T));
    return h.add(this.mlp.forward(this.ln2.forward(h)));
  }

  /** `forward` of T new positions over the cache `past` (`CausalSelfAttention.attend`); returns their keys and values and the cache extended. */
  forwardCached(x: Tensor, B: Dim, T: Dim, mask: Tensor, past: KV | null): { y: Tensor; present: KV; fresh: KV } {
    const a = this.attn.attend(this.ln1.forward(x), B, T, mask, past);
    const h = x.add(a.y);
    return { y: h.add(this.mlp.forward(this.ln2.forward(h))), present: a.present, fresh: a.fresh };
  }
}

export class GPT extends Module {
  readonly tok: Embedding;
  readonly pos: Parameter;
  readonly blocks: Block[];
  readonly lnf: LayerNorm;

  constructor(readonly config: GPTConfig) {
    super();
    const c = config;
    for (const k of ['vocab', 'ctx', 'd', 'layers', 'heads'] as const) {
      if (!Number.isInteger(c[k]) || c[k] <= 0) throw new Error(`GPTConfig.${k} must be a positive integer, got ${String(c[k])}`);
    }
    for (const k of ['headDim', 'mlpHidden'] as const) {
      const v = c[k];
      if (v !== undefined && (!Number.isInteger(v) || v <= 0)) throw new Error(`GPTConfig.${k} must be a positive integer when given, got ${String(v)}`);
    }
    const std = c.initStd ?? 0.02;
    this.tok = this.child('tok', new Embedding(c.vocab, c.d, init.normal(std)));
    this.pos = this.param('pos', [c.ctx, c.d], init.normal(std));
    if (c.moe !== undefined) moeDefaults(c.moe);
    this.blocks = Array.from({ length: c.layers }, (_, l) => this.child(`h${l}`, new Block(c, l)));
    this.lnf = this.child('lnf', new LayerNorm(c.d));
  }

  /**
   * Logits [B*T, vocab] for token ids `idx` [B, T] (int64). B and T may be symbolic (an exported
   * graph: 'batch', 'seq'), which `forwardCached` without a cache serves.
   */
  logits(idx: Tensor): Tensor {
    const [B, T] = idx.shape;
    if (typeof B !== 'number' || typeof T !== 'number') return this.forwardCached(idx, null).logits;
    if (T > this.config.ctx) throw new Error(`GPT: sequence length ${T} exceeds the context ${this.config.ctx}`);
    const pos = T === this.config.ctx ? this.pos.t : this.pos.t.slice([0], [T], [0]);
    let x = this.tok.forward(idx).add(pos).reshape([B * T, this.config.d]);
    for (const blk of this.blocks) x = blk.forward(x, B, T);
    return this.head(this.lnf.forward(x));
  }

  /**
   * Incremental forward with a KV cache: logits [B*T, vocab] of T new tokens `idx` [B, T] at
   * positions P .. P + T - 1, given `past` (per layer, the keys and values [B, heads, P, hd] of the
   * P tokens before them; null: P = 0), `fresh`, each layer's keys and values of the new tokens
   * [B, heads, T, hd], and `present`, each layer's cache extended by them to P + T. The
   * same blocks as `logits`: a prefill (past null) then steps of one token give the logits of the
   * whole sequence at those positions. P + T must not exceed the context (a static excess is an
   * error here; a run-time one is onnxruntime's out-of-range Gather of the position table).
   */
  forwardCached(idx: Tensor, past: readonly KV[] | null): { logits: Tensor; present: KV[]; fresh: KV[] } {
    const [B, T] = idx.shape as [Dim, Dim];
    const c = this.config;
    if (past !== null && past.length !== c.layers) throw new Error(`GPT: the cache has ${past.length} layers, the model ${c.layers}`);
    const P = past?.[0]!.k.shape[2] ?? 0;
    if (typeof T === 'number' && typeof P === 'number' && P + T > c.ctx) {
      throw new Error(`GPT: ${P} cached and ${T} new positions exceed the context ${c.ctx}`);
    }
    const w = window(idx, T, past?.[0]!.k ?? null, this.pos.t.dtype as 'float32' | 'float64');
    const pos = typeof T === 'number' && P === 0 ? this.pos.t.slice([0], [T], [0]) : this.pos.t.gather(w.pos);
    let x = this.tok.forward(idx).add(pos).reshape([typeof B === 'number' && typeof T === 'number' ? B * T : -1, c.d]);
    const [present, fresh]: [KV[], KV[]] = [[], []];
    this.blocks.forEach((blk, l) => {
      const r = blk.forwardCached(x, B, T, w.mask, past?.[l] ?? null);
      x = r.y;
      present.push(r.present);
      fresh.push(r.fresh);
    });
    return { logits: this.head(this.lnf.forward(x)), present, fresh };
  }

  /** Tied head: logits = x tok^T [B*T, vocab], one Gemm with transB. */
  head(x: Tensor): Tensor {
    return new Tensor(b.gemm(x.value, this.tok.weight.t.value, null, { transB: true }));
  }

  /** The whole vocabulary's logits from `logits` (the identity here; a tensor-parallel plan gathers its slices). */
  gatherLogits(logits: Tensor): Tensor { return logits; }

  /** Mean cross-entropy of `logits` [B*T, vocab] against `tgt` [B, T]. */
  criterion(logits: Tensor, tgt: Tensor): Tensor {
    return logits.crossEntropy(tgt.reshape([-1]));
  }

  /**
   * Mean cross-entropy of predicting `tgt` [B, T] from `idx` [B, T]; in training, plus the MoE
   * layers' weighted load-balancing and z losses (evaluation reports the cross-entropy alone).
   */
  loss(idx: Tensor, tgt: Tensor): Tensor {
    return this.withAux(this.criterion(this.logits(idx), tgt));
  }

  /** `ce` plus, in training, the weighted load-balancing and z losses the MoE layers' last forward recorded. */
  withAux(ce: Tensor): Tensor {
    const aux = moeAuxLoss(this);
    return aux !== null && this.training ? ce.add(aux) : ce;
  }
}
