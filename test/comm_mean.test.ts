/**
 * The threads backend divides a mean in the same pass as each element's last reduction
 * (comm/threads/transport.ts `reduceInto` with a divisor). These check that this is exactly the
 * sum followed by the division: the kernels on random values, and every algorithm's all-reduce
 * 'mean' of random floats against its own 'sum' divided afterwards, bit for bit, on every rank.
 * This module is also the ranks' entry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMainThread } from 'node:worker_threads';
import { launchThreads } from '../src/comm/threads/launch.js';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { divide, reduceInto, SUM } from '../src/comm/threads/transport.js';
import { Rng } from '../src/tensor/random.js';

/** Random values of mixed magnitudes (so sums round), per rank. */
function values(rank: number, n: number): Float32Array {
  const rng = new Rng(1000 + rank);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.uniform() - 0.5) * 10 ** Math.floor(rng.uniform() * 6 - 3);
  return a;
}

/** On each rank: mean and sum of the same vector by the group's algorithm; the mean must be fround(sum) / size. */
export default async function rank(pg: ProcessGroup, args: { n: number }): Promise<number[]> {
  const mean = values(pg.rank, args.n);
  const sum = values(pg.rank, args.n);
  await pg.allReduce(mean, 'mean').wait();
  await pg.allReduce(sum, 'sum').wait();
  for (let i = 0; i < args.n; i++) {
    const e = Math.fround(sum[i]! / pg.size);
    if (mean[i] !== e) throw new Error(`rank ${pg.rank}: mean[${i}] is ${mean[i]}, sum / ${pg.size} is ${e}`);
  }
  // A fingerprint every rank must share: the first, middle and last elements.
  return [mean[0]!, mean[args.n >> 1]!, mean[args.n - 1]!];
}

if (isMainThread) {
  test('a sum reduced with a divisor is exactly the sum, rounded to its type, then divided', () => {
    const rng = new Rng(7);
    for (const n of [1, 3, 4, 5, 1027]) {
      for (const k of [2, 3, 7]) {
        for (const make of [(m: number) => new Float32Array(m), (m: number) => new Float64Array(m), (m: number) => new Int32Array(m)]) {
          const src = make(n);
          const dst = make(n + 5);
          for (let i = 0; i < n; i++) src[i] = dst instanceof Int32Array ? Math.round((rng.uniform() - 0.5) * 2 ** 31) : (rng.uniform() - 0.5) * 1e3;
          for (let i = 0; i < dst.length; i++) dst[i] = dst instanceof Int32Array ? Math.round((rng.uniform() - 0.5) * 2 ** 31) : (rng.uniform() - 0.5) * 1e-2;
          const [fused, twoPass] = [dst.slice(), dst.slice()];
          reduceInto(fused, 3, src, n, SUM, k);
          reduceInto(twoPass, 3, src, n, SUM);
          divide(twoPass, 3, 3 + n, k);
          assert.deepEqual(fused, twoPass, `${dst.constructor.name}, n ${n}, divisor ${k}`);
          assert.notDeepEqual(fused, dst, 'the reduction changed the destination');
        }
      }
    }
  });

  for (const algo of ['ring', 'recursive_doubling'] as const) {
    for (const nproc of [2, 3, 4]) {
      test(`all-reduce mean by ${algo} on ${nproc} thread ranks equals its sum divided afterwards, bit for bit, on every rank`, async () => {
        const n = 300_001;
        const res = await launchThreads<number[]>({ nproc, entry: new URL(import.meta.url), args: { n }, timeoutMs: 30_000, allReduceAlgorithm: algo });
        for (const r of res) assert.deepEqual(r, res[0]);
      });
    }
  }
}
