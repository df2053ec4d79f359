/**
 * A rank of the parameter-server tests: `train` runs runPs on a config; `counter` is an
 * instrument of the consistency bound, independent of the clocks: worker w pushes -1 into its own
 * `keys` SGD rows (lr 1) at every step, so a read of worker v's rows counts v's steps applied
 * before it (x 1/W under BSP, whose update is the mean of the workers' pushes), and the least
 * count over workers is how many steps of every worker the read includes.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import { HashRing } from '../src/parallel/hash_ring.js';
import { PsClient } from '../src/parallel/ps/client.js';
import { psRoles, serverName } from '../src/parallel/ps/protocol.js';
import type { Consistency } from '../src/parallel/ps/protocol.js';
import { runServer } from '../src/parallel/ps/server.js';
import { ShardStore } from '../src/parallel/ps/store.js';
import type { TableSpec } from '../src/parallel/ps/store.js';
import { parseConfig } from '../src/train/config.js';
import { runPs } from '../src/train/ps_train.js';

export interface PsRankArgs {
  kind: 'train' | 'counter';
  config?: unknown;
  resume?: boolean;
  failAt?: { worker: number; step: number };
  slow?: { worker: number; ms: number };
  /** The server ranks throw this long after they start (a dead server). */
  killServerAfterMs?: number;
  counter?: { servers: number; mode: Consistency; staleness: number; steps: number; slowMs: number; keys: number };
}

export default async function (pg: ProcessGroup, args: PsRankArgs): Promise<unknown> {
  if (args.kind === 'train') {
    const cfg = parseConfig(args.config, 'test config');
    const slow = args.slow;
    const kill = args.killServerAfterMs;
    if (kill !== undefined && pg.rank >= pg.size - cfg.ps.servers) {
      await new Promise((r) => setTimeout(r, kill));
      throw new Error('killed by the test');
    }
    return runPs(cfg, pg, {
      resume: args.resume === true,
      ...(args.failAt ? { failAt: args.failAt } : {}),
      ...(slow ? { delayMs: (w: number) => (w === slow.worker ? slow.ms : 0) } : {}),
    });
  }
  const c = args.counter!;
  const roles = psRoles(pg.size, c.servers);
  const tables: TableSpec[] = [{ id: 1, name: 'counter', dim: 2, init: { kind: 'zeros' } }];
  const W = roles.workers.length;
  if (pg.rank >= W) {
    const store = new ShardStore(tables, { kind: 'sgd', lr: 1, beta1: 0.9, beta2: 0.999, eps: 1e-8, initialAccumulator: 0.1 });
    return runServer(pg, { index: pg.rank - W, workers: roles.workers, store, tables, mode: c.mode, staleness: c.staleness, save: async () => ({ bytes: 0, sha256: '' }) });
  }
  const ring = new HashRing(roles.servers.map((_, i) => serverName(i)));
  const ps = new PsClient(pg, { servers: roles.servers, ring, tables, worker: pg.rank });
  const all = Int32Array.from({ length: W * c.keys }, (_, i) => i);
  const mine = Int32Array.from({ length: c.keys }, (_, j) => pg.rank * c.keys + j);
  const unit = c.mode === 'bsp' ? W : 1;
  const reads: { clock: number; applied: number }[] = [];
  const t0 = performance.now();
  for (let t = 0; t < c.steps; t++) {
    const { values } = await ps.pull(1, all, t);
    let applied = Infinity;
    for (let k = 0; k < all.length; k++) applied = Math.min(applied, Math.round(values[2 * k]! * unit));
    reads.push({ clock: t, applied });
    if (pg.rank === 0 && c.slowMs > 0) await new Promise((r) => setTimeout(r, c.slowMs));
    await ps.push(1, mine, new Float32Array(2 * c.keys).fill(-1), t);
    await ps.clock(t + 1);
  }
  const seconds = (performance.now() - t0) / 1000;
  const stats = pg.rank === 0 ? await ps.stats() : null;
  await ps.done();
  return { reads, seconds, workers: W, stats };
}
