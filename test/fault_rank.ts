/**
 * A training rank that dies mid-step (for test/ddp_failure.test.ts): rank `victim` exits with code
 * 3 when it issues its `call`-th all-reduce, i.e. during a step's gradient communication.
 * As a threads entry its default export runs under `launchThreads`; run directly (under mpirun)
 * it trains on the MPI world.
 */
import { pathToFileURL } from 'node:url';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

export interface FaultArgs { out: string; victim: number; call: number; timeoutS: number }

function dying(pg: ProcessGroup, a: FaultArgs): ProcessGroup {
  let n = 0;
  return new Proxy(pg, {
    get(target, prop, recv) {
      if (prop === 'allReduce') {
        return (...args: Parameters<ProcessGroup['allReduce']>) => {
          if (target.rank === a.victim && ++n === a.call) process.exit(3);
          return target.allReduce(...args);
        };
      }
      const v = Reflect.get(target, prop, recv) as unknown;
      return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export default async function rank(pg: ProcessGroup, a: FaultArgs): Promise<void> {
  const cfg = parseConfig({
    out: a.out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
    train: { steps: 50, batch: 4, threads: 1 }, dist: { timeoutS: a.timeoutS, bucketMB: 0.05 },
    checkpoint: { every: 1000 }, eval: { every: 1000 }, sample: { tokens: 0 },
  });
  await new Trainer(cfg, { pg: dying(pg, a) }).run({ out: null });
}

if (import.meta.url === pathToFileURL(process.argv[1]!).href) {
  const { initMpi } = await import('../src/comm/mpi/group.js');
  const a = JSON.parse(process.argv[2]!) as FaultArgs;
  const pg = initMpi({ timeoutMs: a.timeoutS * 1000 });
  await rank(pg, a);
  await pg.destroy();
}
