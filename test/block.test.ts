/**
 * A whole pre-LN transformer block, as in the benchmark GPT (../shared/anchors/README.md), gradient
 * checked in float64 with respect to its input and every parameter:
 *   x += proj(causal_attention(qkv(ln1(x))));  x += fc2(gelu(fc1(ln2(x))))
 * qkv is one Linear(d, 3d) with the heads split after it, scores are scaled by 1/sqrt(d/heads),
 * fc1 is Linear(d, 4d), and every Linear has a bias.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { grad, ops, realize, Rng, setThreads, Tensor, tensor } from '../src/index.js';
import { checkGrad, normal, uniform } from './helpers/gradcheck.js';
import type { Input } from './helpers/gradcheck.js';

setThreads(1);

const [B, L, d, heads] = [2, 5, 8, 2];
const hd = d / heads;

/** keep[i][j] = j <= i: position i attends to itself and earlier positions. */
const keep = Array.from({ length: L * L }, (_, k) => (k % L <= Math.floor(k / L) ? 1 : 0));
const causalWhere = (s: Tensor): Tensor => s.where(new Tensor(ops.constant(Uint8Array.from(keep), 'bool', [L, L])), -1e9);
const causalAdd = (s: Tensor): Tensor => s.add(new Tensor(ops.constant(Float64Array.from(keep, (k) => (k ? 0 : -1e9)), 'float64', [L, L])));

const linear = (x: Tensor, w: Tensor, b: Tensor): Tensor => x.matmul(w).add(b);

/** [B, L, d] -> [B, heads, L, hd] */
const splitHeads = (t: Tensor): Tensor => t.reshape([B, L, heads, hd]).transpose([0, 2, 1, 3]);

type Thirteen = [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];

/** The block as a function of (x, ln1 w b, qkv w b, proj w b, ln2 w b, fc1 w b, fc2 w b). */
function block(mask: (s: Tensor) => Tensor): (...p: Tensor[]) => Tensor {
  return (...p) => {
    if (p.length !== 13) throw new Error(`block: expected x and 12 parameters, got ${p.length} tensors`);
    const [x, ln1w, ln1b, wqkv, bqkv, wproj, bproj, ln2w, ln2b, w1, b1, w2, b2] = p as Thirteen;
    const [q, k, v] = linear(x.layerNorm(ln1w, ln1b), wqkv, bqkv).split([d, d, d], -1).map(splitHeads);
    const scores = mask(q!.matmul(k!.T).mul(1 / Math.sqrt(hd)));
    const att = scores.softmax(-1).matmul(v!).transpose([0, 2, 1, 3]).reshape([B, L, d]);
    const h = x.add(linear(att, wproj, bproj));
    return h.add(linear(linear(h.layerNorm(ln2w, ln2b), w1, b1).gelu(), w2, b2));
  };
}

// Weights larger than the GPT's N(0, 0.02) init, so that attention is far from uniform and every
// term of the gradient matters; fc1 outputs stay within |x| < 4, where float64 Gelu is a series.
const inputs: Input[] = [
  normal([B, L, d]),
  uniform([d], 0.5, 1.5), normal([d], 0.2),
  normal([d, 3 * d], 0.4), normal([3 * d], 0.2),
  normal([d, d], 0.3), normal([d], 0.2),
  uniform([d], 0.5, 1.5), normal([d], 0.2),
  normal([d, 4 * d], 0.3), normal([4 * d], 0.2),
  normal([4 * d, d], 0.3), normal([d], 0.2),
];

test('gradient: pre-LN transformer block (Where causal mask), w.r.t. x and every parameter', async () => {
  await checkGrad('block, Where mask', inputs, block(causalWhere));
});

test('gradient: pre-LN transformer block (additive -1e9 causal mask), w.r.t. x and every parameter', async () => {
  await checkGrad('block, additive mask', inputs, block(causalAdd), { seed: 2 });
});

test('causal block: output at position 0 has no gradient from later positions', async () => {
  const rng = new Rng(3);
  const ts = inputs.map((s) => {
    const spec = s as Exclude<Input, readonly number[]>;
    return tensor(spec.make(rng, spec.shape.reduce((p, q) => p * q, 1)), spec.shape);
  });
  const y = block(causalWhere)(...ts);
  const first = y.slice([0], [1], [1]);
  const [dx] = grad(first.mul(tensor(Float64Array.from({ length: B * d }, () => rng.normal()), [B, 1, d])).sum(), [ts[0]!]);
  await realize(dx!);
  const g = (await dx!.data()) as Float64Array;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      const row = g.subarray((b * L + t) * d, (b * L + t + 1) * d);
      if (t === 0) assert.ok(row.some((v) => v !== 0), `batch ${b}: position 0 has no gradient from itself`);
      else assert.ok(row.every((v) => v === 0), `batch ${b}: position ${t} leaks into position 0: ${Array.from(row)}`);
    }
  }
});
