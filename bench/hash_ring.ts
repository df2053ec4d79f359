/**
 * Consistent hashing (parallel/hash_ring.ts) measured: the fraction of 200,000 keys moved when a
 * server joins S servers (against 1 / (S + 1) and the 1.2 / S bound), the largest server's share
 * over the mean, and the lookup cost. `npm run bench:hash-ring`.
 */
import { HashRing, movedKeys, rowKey } from '../src/parallel/hash_ring.js';
import { cpuInfo } from '../src/runtime/cpu.js';

const KEYS = Float64Array.from({ length: 200_000 }, (_, i) => (i % 4 === 3 ? i : rowKey(i % 3, (i * 7919) % 1_000_000)));
const names = (n: number): string[] => Array.from({ length: n }, (_, i) => `ps${i}`);
const rows = [1, 2, 3, 4, 6, 8].map((S) => {
  const ring = new HashRing(names(S));
  const { moved, betweenKept } = movedKeys(ring, ring.withServer(`ps${S}`), KEYS);
  const count = new Array<number>(S).fill(0);
  for (const o of ring.ownersOf(KEYS)) count[o]!++;
  return { servers: S, moved: +(moved / KEYS.length).toFixed(4), ideal: +(1 / (S + 1)).toFixed(4), bound: +(1.2 / S).toFixed(4), between_kept: betweenKept, max_share: +(Math.max(...count) / (KEYS.length / S)).toFixed(3) };
});
const ring = new HashRing(names(8));
ring.ownersOf(KEYS);
const t0 = performance.now();
ring.ownersOf(KEYS);
const ns = ((performance.now() - t0) * 1e6) / KEYS.length;
const c = cpuInfo();
process.stdout.write(`${JSON.stringify({ bench: 'hash-ring', cpu: { model: c.model, isa: c.isa }, keys: KEYS.length, virtual_nodes: ring.virtualNodes, rows, lookup_ns_per_key: Math.round(ns) }, null, 1)}\n`);
