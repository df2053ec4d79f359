/**
 * One rank of bench/ddp_cut.ts's interleaved run: the benchmark GPT's forward + backward under DDP
 * with each `programs` value (auto, which resolves to one of the others and so measures it twice,
 * tail, buckets, none), one DistributedDataParallel per value over the same parameters and
 * gradients, and the same step with no communication at all (each rank its own independent copy:
 * the bound data parallelism is measured against), stepped in turn (auto, tail, buckets, none,
 * independent, auto, ...) so that drift in the machine's speed falls on all of them alike. Returns
 * each one's step times (ms; barrier to gradients reduced, the warm-up rounds dropped) and what
 * crossed its cuts.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { bindParameters, GPT, GPT_PRESETS, PRESET_BATCH } from '../src/nn/index.js';
import { DistributedDataParallel } from '../src/parallel/ddp.js';
import { DDP_PROGRAMS } from '../src/parallel/ddp.js';
import type { DDPPrograms } from '../src/parallel/ddp.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { setThreads } from '../src/runtime/executor.js';
import { gradStep } from '../src/train/step.js';
import { Rng } from '../src/tensor/random.js';

export interface CutRankResult { programs: DDPPrograms | 'independent'; cut: string; count: number; crossing_mb: number; ms: number[]; exposed_ms: number[]; peer_wait_ms: number[] }

export default async function rank(pg: ProcessGroup, a: { preset: keyof typeof GPT_PRESETS; rounds: number }): Promise<CutRankResult[]> {
  setThreads(1);
  const cfg = GPT_PRESETS[a.preset];
  const [B, T] = [PRESET_BATCH[a.preset], cfg.ctx];
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 0 });
  const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
  const cuts = DDP_PROGRAMS;
  const ddps = cuts.map((programs) => new DistributedDataParallel(pg, params, grads, (i, t) => model.loss(i!, t!), { programs }));
  const alone = gradStep(params, grads, (i, t) => model.loss(i!, t!));
  const steps: { step(feeds: Parameters<typeof alone>[0]): Promise<unknown>; stats?: DistributedDataParallel['stats'] }[] = [...ddps, { step: (f) => alone(f) }];
  const rng = new Rng(pg.rank);
  const [idx, tgt] = [new BigInt64Array(B * T), new BigInt64Array(B * T)];
  const out: CutRankResult[] = [...cuts, 'independent' as const].map((programs, i) => ({ programs, cut: ddps[i]?.cut ?? 'independent', count: ddps[i]?.programBuckets.length ?? 1, crossing_mb: 0, ms: [], exposed_ms: [], peer_wait_ms: [] }));
  for (let r = 0; r < a.rounds + 2; r++) {
    for (const [i, ddp] of steps.entries()) {
      for (let j = 0; j < B * T; j++) { idx[j] = BigInt(rng.int(cfg.vocab)); tgt[j] = BigInt(rng.int(cfg.vocab)); }
      await pg.barrier().wait();
      const t0 = performance.now();
      await ddp.step([{ data: idx, shape: [B, T], dtype: 'int64' }, { data: tgt, shape: [B, T], dtype: 'int64' }]);
      const ms = performance.now() - t0;
      if (r < 2) continue;
      out[i]!.ms.push(ms);
      out[i]!.exposed_ms.push(ddp.stats?.commExposedMs ?? 0);
      out[i]!.peer_wait_ms.push(ddp.stats?.peerWaitMs ?? 0);
      out[i]!.crossing_mb = +((ddp.stats?.crossingBytes ?? 0) / 2 ** 20).toFixed(1);
    }
  }
  return out;
}
