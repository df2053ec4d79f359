/**
 * One rank of test/mixed_precision.test.ts: an fp16 Trainer whose rank `victim` writes an inf into
 * its gradients just before the data-parallel all-reduce of step `step` (its first bucket), as an
 * fp16 overflow on one rank would. Returns what every rank must agree on: the optimizer's step
 * count, the loss scale, the skipped steps, and its parameters.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';
import { ddpBuckets, resolveDDPPrograms } from '../src/parallel/ddp.js';

export interface InjectArgs { out: string; victim: number; step: number; steps: number }

/** Buckets per step: counted from the all-reduces of gradient buffers (longer than one element). */
function injecting(pg: ProcessGroup, a: InjectArgs, buckets: () => number): ProcessGroup {
  let calls = 0;
  return new Proxy(pg, {
    get(target, prop, recv) {
      if (prop === 'allReduce') {
        return (...args: Parameters<ProcessGroup['allReduce']>) => {
          const [buf] = args;
          if (buf.length > 1 && ++calls === (a.step - 1) * buckets() + 1 && target.rank === a.victim) buf[0] = Infinity;
          return target.allReduce(...args);
        };
      }
      const v = Reflect.get(target, prop, recv) as unknown;
      return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export default async function rank(pg: ProcessGroup, a: InjectArgs): Promise<{ t: number; scale: number; skipped: number; params: number[] }> {
  const cfg = parseConfig({
    out: a.out, model: { ctx: 16, d: 32, layers: 2, heads: 2 },
    train: { steps: a.steps, batch: 2, threads: 1, precision: 'fp16', lossScale: 1024, warmup: 0 },
    dist: { hook: 'allreduce', bucketMB: 0.02 }, checkpoint: { every: 1 }, eval: { every: 1000, windows: 2 }, sample: { tokens: 0 },
  }, 'loss scale test');
  let trainer: Trainer | null = null;
  trainer = new Trainer(cfg, { pg: injecting(pg, a, () => ddpBuckets(trainer!.params.flat.layout.slots, { bucketBytes: cfg.dist.bucketMB * 2 ** 20, programs: resolveDDPPrograms(cfg.dist.programs, pg) }).length) });
  await trainer.run({ out: null });
  const s = trainer.scaler!;
  return { t: trainer.opt.t, scale: s.scale, skipped: s.skipped, params: Array.from(trainer.params.flat.data.subarray(0, 64)) };
}
