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
      if (!sp) assert.deepEqual(r0.hostOps, { 'weft.AllReduce': 2 * 2 + 1 + 3 + (2 * 2 + 1), 'weft.Copy': 2 * 2 + 1 });
      assert.equal(r0.localParams, r0.expectedLocal, 'a rank holds its shards and the replicated tensors');
      assert.ok(r0.localParams < r0.params, `rank holds ${r0.localParams} of ${r0.params} parameters`);
      assert.ok(r0.overlapping > 0, `some programs run while collectives are in flight (${r0.overlapping} of ${r0.programs})`);
    });
  }
}
