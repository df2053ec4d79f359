/**
 * GPT: token + learned position embeddings, pre-LN transformer blocks
 *   x += proj(causal_attention(qkv(ln1(x)))),  x += fc2(gelu(fc1(ln2(x)))),
 * a final LayerNorm and an LM head tied to the token embedding. The benchmark GPT of
 * ../shared/anchors/README.md is `GPT_PRESETS.small` / `.medium`.
 *
 * The residual stream is kept 2-D, [B*T, d]: every Linear is one Gemm and so is its weight
 * gradient (a 3-D MatMul would give a batched product plus a reduction in backward).
 */
import * as b from '../ir/build.js';
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
  /** Attention heads; must divide d. */
  heads: number;
  /** Dropout on attention output and MLP output (0: none, as the benchmark). */
  dropout?: number;
  /** Std of the normal init of every Linear and Embedding weight. Default 0.02. */
  initStd?: number;
  /** GPT-2's scaled init of residual projections (std / sqrt(2 layers)). Default off (the anchors' init). */
  scaledResidualInit?: boolean;
  /** MLP hidden width over d (4 in GPT-2 and the anchors). Default 4. */
  mlpRatio?: number;
  /** Mixture of experts in place of the MLP of every `moe.every`-th block (nn/moe.ts). Default none. */
  moe?: MoEConfig;
}

/** Whether block `l` of a GPT with `c` is a mixture-of-experts block. */
export const isMoeBlock = (c: GPTConfig, l: number): boolean => c.moe !== undefined && (l + 1) % moeDefaults(c.moe).every === 0;

export const GPT_PRESETS = {
  small: { vocab: 256, ctx: 128, d: 256, layers: 4, heads: 4 },
  medium: { vocab: 256, ctx: 256, d: 512, layers: 8, heads: 8 },
} as const satisfies Record<string, GPTConfig>;

/** The benchmark batch sizes of each preset. */
export const PRESET_BATCH = { small: 16, medium: 8 } as const;

/** Additive causal mask [T, T]: 0 on and below the diagonal, -1e9 above (finite: float64-safe). */
function causalMask(T: number, dtype: 'float32' | 'float64'): Tensor {
  const m = dtype === 'float32' ? new Float32Array(T * T) : new Float64Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = -1e9;
  return new Tensor(b.constant(m, dtype, [T, T]));
}

export class CausalSelfAttention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly drop: Dropout;

  constructor(readonly d: number, readonly heads: number, std: number, projStd: number, dropout: number) {
    super();
    if (d % heads !== 0) throw new Error(`CausalSelfAttention: heads (${heads}) must divide d (${d})`);
    this.qkv = this.child('qkv', new Linear(d, 3 * d, { init: init.normal(std) }));
    this.proj = this.child('proj', new Linear(d, d, { init: init.normal(projStd) }));
    this.drop = this.child('drop', new Dropout(dropout));
  }

  /** x [B*T, d] -> [B*T, d]; scores scaled by 1/sqrt(d/heads), future positions masked. */
  forward(x: Tensor, B: number, T: number): Tensor {
    // Heads by -1: under tensor parallelism a rank's qkv holds only its heads (a plan's shards).
    const hd = this.d / this.heads;
    const qkv = this.qkv.forward(x).reshape([B, T, 3, -1, hd]).transpose([2, 0, 3, 1, 4]); // [3, B, H, T, hd]
    const [q, k, v] = qkv.split([1, 1, 1], 0).map((t) => t.squeeze([0])) as [Tensor, Tensor, Tensor];
    const att = q.mul(1 / Math.sqrt(hd)).matmul(k.T).add(causalMask(T, x.dtype as 'float32' | 'float64')).softmax(-1);
    const y = att.matmul(v).transpose([0, 2, 1, 3]).reshape([B * T, -1]);
    return this.drop.forward(this.proj.forward(y));
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
    this.attn = this.child('attn', new CausalSelfAttention(c.d, c.heads, std, projStd, c.dropout ?? 0));
    this.ln2 = this.child('ln2', new LayerNorm(c.d));
    this.mlp = this.child('mlp', isMoeBlock(c, l) ? new MoE(c.d, c.moe!, std, projStd) : new MLP(c.d, std, projStd, c.dropout ?? 0, (c.mlpRatio ?? 4) * c.d));
  }

  forward(x: Tensor, B: number, T: number): Tensor {
    const h = x.add(this.attn.forward(this.ln1.forward(x), B, T));
    return h.add(this.mlp.forward(this.ln2.forward(h)));
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
    const std = c.initStd ?? 0.02;
    this.tok = this.child('tok', new Embedding(c.vocab, c.d, init.normal(std)));
    this.pos = this.param('pos', [c.ctx, c.d], init.normal(std));
    if (c.moe !== undefined) moeDefaults(c.moe);
    this.blocks = Array.from({ length: c.layers }, (_, l) => this.child(`h${l}`, new Block(c, l)));
    this.lnf = this.child('lnf', new LayerNorm(c.d));
  }

  /** Logits [B*T, vocab] for token ids `idx` [B, T] (int64). */
  logits(idx: Tensor): Tensor {
    const [B, T] = idx.shape as [number, number];
    if (T > this.config.ctx) throw new Error(`GPT: sequence length ${T} exceeds the context ${this.config.ctx}`);
    const pos = T === this.config.ctx ? this.pos.t : this.pos.t.slice([0], [T], [0]);
    let x = this.tok.forward(idx).add(pos).reshape([B * T, this.config.d]);
    for (const blk of this.blocks) x = blk.forward(x, B, T);
    return this.head(this.lnf.forward(x));
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
