/**
 * Tensor (and sequence) parallelism of the GPT on the IR's collectives: at tp = 2 and 4, with and
 * without sequence parallelism, the loss and every gradient (shards gathered back) equal the
 * single-device model's in float64; each rank holds only its shards; the collectives per step
 * are Megatron's count (per block, 2 all-reduces forward and 2 backward without sp).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchThreads } from '../src/comm/threads/launch.js';
import type { TpArgs, TpResult } from './tensor_parallel_rank.js';
import { B, CFG, T } from './tensor_parallel_rank.js';
import { GPT } from '../src/nn/gpt.js';
import { parallelizeGPT } from '../src/nn/gpt_plan.js';
import { applyPlan } from '../src/nn/tensor_parallel.js';

for (const nproc of [2, 4]) {
  for (const sp of [false, true]) {
    test(`GPT at tp=${nproc}${sp ? ' with sequence parallelism' : ''}: loss and gradients equal one device (float64)`, async () => {
      const args: TpArgs = { sp };
      const results = await launchThreads({ nproc, entry: new URL('./tensor_parallel_rank.js', import.meta.url), args, timeoutMs: 60_000 }) as TpResult[];
      for (const [rank, r] of results.entries()) {
        assert.ok(Math.abs(r.loss - r.refLoss) < 1e-12, `rank ${rank}: loss ${r.loss} vs ${r.refLoss}`);
        assert.ok(r.maxRelGrad < 1e-10, `rank ${rank}: gradients differ by ${r.maxRelGrad} (relative)`);
        assert.equal(r.maxParamDiff, 0, `rank ${rank}: the shards start from the single-device init`);
      }
      const r0 = results[0]!;
      // 2 layers: without sp, 2 copies (qkv, fc1) and 2 all-reduces (proj, fc2) per block, plus the
      // embedding's all-reduce, the head's copy and the cross-entropy's 3; each copy's backward is an all-reduce.
      // (weft.Copy is the identity in its program: only its backward all-reduce is a cut.)
      if (!sp) assert.deepEqual(r0.hostOps, { 'weft.AllReduce': 2 * 2 + 1 + 3 + (2 * 2 + 1) });
      // Bytes per rank per step (float64, ring costs), M = one [B*T, d] activation, N = B*T rows.
      // Per block, both move 8 (P-1)/P M: 2 all-reduces forward + 2 backward without sp, 4
      // all-gathers + 4 reduce-scatters with it.
      const [L, d, P] = [CFG.layers, CFG.d, nproc];
      const [M, N, f] = [B * T * d * 8, B * T * 8, (P - 1) / P];
      const wire = r0.wireBytes;
      if (!sp) {
        // 2L all-reduces forward and 2L backward per block, the embedding's and the head copy's, and the loss's 3 of [N, 1].
        assert.equal(wire['weft.AllReduce'], 2 * f * ((4 * L + 2) * M + 3 * N));
      } else {
        // Blocks: 4L gathers and 4L scatters; the head's gather and its scatter; the split's gather backward.
        assert.equal(wire['weft.AllGather'], f * (4 * L + 2) * M);
        assert.equal(wire['weft.ReduceScatter'], f * (4 * L + 1) * M);
        // The embedding's all-reduce, the loss's 3, and the summed gradients of LayerNorm and row-parallel biases (replicated, used on shards).
        assert.equal(wire['weft.AllReduce'], 2 * f * (M + 3 * N + (L * 6 * d + 2 * d) * 8));
      }
      assert.equal(r0.localParams, r0.expectedLocal, 'a rank holds its shards and the replicated tensors');
      assert.ok(r0.localParams < r0.params, `rank holds ${r0.localParams} of ${r0.params} parameters`);
      assert.ok(r0.overlapping > 0, `some programs run while collectives are in flight (${r0.overlapping} of ${r0.programs})`);
    });
  }
}

test('a plan names module paths by glob; a pattern that matches nothing, or a style that does not fit, is an error', () => {
  const gpt = new GPT({ vocab: 32, ctx: 8, d: 16, layers: 2, heads: 4 });
  const tp = { axis: 'tp', size: 2, index: 1 };
  applyPlan(gpt, { 'h*.attn.qkv': { kind: 'colwise', parts: 3 } }, tp);
  const placed = gpt.namedParameters().filter(([, p]) => p.placement !== null).map(([n]) => n);
  assert.deepEqual(placed, ['h0.attn.qkv.w', 'h0.attn.qkv.b', 'h1.attn.qkv.w', 'h1.attn.qkv.b']);
  assert.throws(() => applyPlan(gpt, { 'h*.attn.qvk': { kind: 'colwise' } }, tp), /parallel plan: 'h\*\.attn\.qvk' matches no module of GPT \(modules: tok, h0, h0\.ln1/);
  assert.throws(() => applyPlan(gpt, { 'h0.ln1': { kind: 'rowwise' } }, tp), /'h0\.ln1' puts rowwise on 'h0\.ln1', a LayerNorm; it needs a Linear/);
  assert.throws(() => parallelizeGPT(new GPT({ vocab: 30, ctx: 8, d: 16, layers: 1, heads: 4 }), { axis: 'tp', size: 4, index: 0 }), /tp = 4 must divide the vocabulary \(30\)/);
});
