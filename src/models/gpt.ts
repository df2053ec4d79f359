/**
 * The benchmark GPT of ../shared/anchors/README.md, written functionally over named parameter
 * tensors: token + learned position embeddings, pre-LN blocks
 *   x += proj(causal_attention(qkv(ln1(x)))),  x += fc2(gelu(fc1(ln2(x)))),
 * final LayerNorm, LM head tied to the token embedding, mean cross-entropy.
 *
 * The residual stream is kept 2-D, [B*T, d], so every Linear is one Gemm and its weight gradient
 * one Gemm too (a 3-D MatMul would give a batched product plus a reduction in backward).
 */
import { Layout } from '../runtime/flat.js';
import type { FlatBuffer } from '../runtime/flat.js';
import { Rng } from '../tensor/random.js';
import { Tensor, tensor } from '../tensor/tensor.js';
import * as b from '../ir/build.js';

export interface GPTConfig {
  /** Vocabulary size (256 for bytes). */
  vocab: number;
  /** Context length: the largest T the position table covers. */
  ctx: number;
  d: number;
  layers: number;
  heads: number;
}

export const PRESETS = {
  small: { vocab: 256, ctx: 128, d: 256, layers: 4, heads: 4, batch: 16 },
  medium: { vocab: 256, ctx: 256, d: 512, layers: 8, heads: 8, batch: 8 },
} as const;

/** Parameter names and shapes, in a fixed order (the flat-buffer layout). */
export function gptParams(c: GPTConfig): { name: string; shape: number[] }[] {
  const { vocab: V, ctx: T, d: D } = c;
  const ps = [{ name: 'tok', shape: [V, D] }, { name: 'pos', shape: [T, D] }];
  for (let l = 0; l < c.layers; l++) {
    const p = `h${l}.`;
    ps.push(
      { name: `${p}ln1.w`, shape: [D] }, { name: `${p}ln1.b`, shape: [D] },
      { name: `${p}qkv.w`, shape: [D, 3 * D] }, { name: `${p}qkv.b`, shape: [3 * D] },
      { name: `${p}proj.w`, shape: [D, D] }, { name: `${p}proj.b`, shape: [D] },
      { name: `${p}ln2.w`, shape: [D] }, { name: `${p}ln2.b`, shape: [D] },
      { name: `${p}fc1.w`, shape: [D, 4 * D] }, { name: `${p}fc1.b`, shape: [4 * D] },
      { name: `${p}fc2.w`, shape: [4 * D, D] }, { name: `${p}fc2.b`, shape: [D] },
    );
  }
  ps.push({ name: 'lnf.w', shape: [D] }, { name: 'lnf.b', shape: [D] });
  return ps;
}

export const gptLayout = (c: GPTConfig): Layout => new Layout(gptParams(c));

/** Anchor init: N(0, 0.02) for Linear and Embedding weights, zero biases, LayerNorm (1, 0). */
export function initGPT(params: FlatBuffer<Float32Array | Float64Array>, seed = 0): void {
  const rng = new Rng(seed);
  for (const s of params.layout.slots) {
    const v = params.view(s.name);
    if (s.name.endsWith('.b')) v.fill(0);
    else if (/ln\d?\.w$|lnf\.w$/.test(s.name)) v.fill(1);
    else for (let i = 0; i < v.length; i++) v[i] = rng.normal() * 0.02;
  }
}

/** Parameter tensors over a flat buffer's views (leaves read at every run). */
export function paramTensors(params: FlatBuffer<Float32Array | Float64Array>): Record<string, Tensor> {
  return Object.fromEntries(params.layout.slots.map((s) => [s.name, new Tensor(params.leaf(s.name))]));
}

/** Y = X W + b for X [N, in], W [in, out]: one Gemm. */
const linear = (x: Tensor, w: Tensor, bias: Tensor): Tensor => new Tensor(b.gemm(x.value, w.value, bias.value));

/** Additive causal mask [T, T]: 0 on and below the diagonal, -1e9 above (finite, so float64-safe). */
function causalMask(T: number, dtype: 'float32' | 'float64'): Tensor {
  const m = dtype === 'float32' ? new Float32Array(T * T) : new Float64Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = -1e9;
  return new Tensor(b.constant(m, dtype, [T, T]));
}

/** Mean cross-entropy loss of the GPT on tokens `idx` [B, T] predicting `tgt` [B, T] (int64). */
export function gptLoss(c: GPTConfig, p: Record<string, Tensor>, idx: Tensor, tgt: Tensor): Tensor {
  const [B, T] = idx.shape as number[];
  if (T! > c.ctx) throw new Error(`gptLoss: sequence length ${T} exceeds the context ${c.ctx}`);
  const logits = gptLogits(c, p, idx);
  return logits.crossEntropy(tgt.reshape([B! * T!]));
}

/** Logits [B*T, V] for tokens `idx` [B, T]. */
export function gptLogits(c: GPTConfig, p: Record<string, Tensor>, idx: Tensor): Tensor {
  const [B, T] = idx.shape as number[] as [number, number];
  const { d: D, heads: H } = c;
  const hd = D / H;
  const P = (n: string): Tensor => p[n] ?? (() => { throw new Error(`gpt: missing parameter '${n}'`); })();
  const dtype = P('tok').dtype as 'float32' | 'float64';
  const pos = T === c.ctx ? P('pos') : P('pos').slice([0], [T], [0]);
  // [B, T, D] -> [B*T, D]: the residual stream.
  let x = P('tok').gather(idx).add(pos).reshape([B * T, D]);
  const mask = causalMask(T, dtype);
  const scale = 1 / Math.sqrt(hd);
  for (let l = 0; l < c.layers; l++) {
    const q = (n: string): Tensor => P(`h${l}.${n}`);
    const h = x.layerNorm(q('ln1.w'), q('ln1.b'));
    const qkv = linear(h, q('qkv.w'), q('qkv.b')).reshape([B, T, 3, H, hd]).transpose([2, 0, 3, 1, 4]); // [3, B, H, T, hd]
    const [qs, ks, vs] = qkv.split([1, 1, 1], 0).map((t) => t.squeeze([0])) as [Tensor, Tensor, Tensor];
    const att = qs.mul(scale).matmul(ks.T).add(mask).softmax(-1);
    const y = att.matmul(vs).transpose([0, 2, 1, 3]).reshape([B * T, D]);
    x = x.add(linear(y, q('proj.w'), q('proj.b')));
    const m = linear(x.layerNorm(q('ln2.w'), q('ln2.b')), q('fc1.w'), q('fc1.b')).gelu();
    x = x.add(linear(m, q('fc2.w'), q('fc2.b')));
  }
  x = x.layerNorm(P('lnf.w'), P('lnf.b'));
  // Tied head: logits = x tok^T, one Gemm with transB.
  return new Tensor(b.gemm(x.value, P('tok').value, null, { transB: true }));
}

/** Random tokens for throughput runs: [B, T+1] int64 from a seeded generator. */
export function randomTokens(rng: Rng, B: number, T: number, vocab: number): { idx: Tensor; tgt: Tensor } {
  const all = new BigInt64Array(B * (T + 1));
  for (let i = 0; i < all.length; i++) all[i] = BigInt(rng.int(vocab));
  const idx = new BigInt64Array(B * T);
  const tgt = new BigInt64Array(B * T);
  for (let r = 0; r < B; r++) {
    idx.set(all.subarray(r * (T + 1), r * (T + 1) + T), r * T);
    tgt.set(all.subarray(r * (T + 1) + 1, (r + 1) * (T + 1)), r * T);
  }
  return { idx: tensor(idx, [B, T], 'int64'), tgt: tensor(tgt, [B, T], 'int64') };
}
