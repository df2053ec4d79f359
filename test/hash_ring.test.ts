/**
 * parallel/hash_ring.ts, the parameter server's key placement: adding a server moves at most
 * 1.2 / S of the keys, all to the new server; removing one moves only its keys; virtual nodes keep
 * the shares even; the ring does not depend on the order its servers are listed in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HashRing, movedKeys, rowKey } from '../src/parallel/hash_ring.js';

// 200,000 keys: rows of three embedding tables (one of 10^6 rows, sampled) and dense chunk ids.
const KEYS = Float64Array.from({ length: 200_000 }, (_, i) => (i % 4 === 3 ? i : rowKey(i % 3, (i * 7919) % 1_000_000)));
const names = (n: number): string[] => Array.from({ length: n }, (_, i) => `ps${i}`);

test('adding a server moves at most 1.2 / S of the keys (near 1 / (S + 1)), every one to the new server', () => {
  for (const S of [1, 2, 3, 4, 6, 8]) {
    const ring = new HashRing(names(S));
    const grown = ring.withServer(`ps${S}`);
    const { moved, betweenKept } = movedKeys(ring, grown, KEYS);
    const frac = moved / KEYS.length;
    assert.ok(frac <= 1.2 / S, `S=${S}: moved ${frac.toFixed(4)} > 1.2/S`);
    assert.ok(Math.abs(frac - 1 / (S + 1)) < 0.25 / (S + 1), `S=${S}: moved ${frac.toFixed(4)}, expected about ${(1 / (S + 1)).toFixed(4)}`);
    assert.equal(betweenKept, 0, `S=${S}: keys moved between servers that stayed`);
    // Every moved key went to the new server.
    const a = ring.ownersOf(KEYS);
    const b = grown.ownersOf(KEYS);
    for (let i = 0; i < KEYS.length; i++) if (a[i] !== b[i]) assert.equal(b[i], S);
  }
});

test('removing a server moves exactly its keys, and nothing else', () => {
  const ring = new HashRing(names(5));
  const owned = ring.ownersOf(KEYS).filter((o) => o === 2).length;
  const shrunk = ring.withoutServer('ps2');
  const { moved, betweenKept } = movedKeys(ring, shrunk, KEYS);
  assert.equal(moved, owned);
  assert.equal(betweenKept, 0);
});

test('virtual nodes even out the shares: with 160 per server the largest is within 15% of the mean; with 1 it is not', () => {
  const share = (r: HashRing): number => {
    const c = new Array<number>(r.servers.length).fill(0);
    for (const o of r.ownersOf(KEYS)) c[o]!++;
    return Math.max(...c) / (KEYS.length / r.servers.length);
  };
  for (const S of [2, 4, 8]) assert.ok(share(new HashRing(names(S))) < 1.15, `S=${S}: max share ${share(new HashRing(names(S))).toFixed(3)}`);
  assert.ok(share(new HashRing(names(8), { virtualNodes: 1 })) > 1.3, 'one point per server leaves uneven arcs');
});

test('placement depends on the server names, not their order; bad rings and keys are errors naming them', () => {
  const a = new HashRing(['ps0', 'ps1', 'ps2']);
  const b = new HashRing(['ps2', 'ps0', 'ps1']);
  for (let i = 0; i < 5000; i++) assert.equal(a.ownerName(KEYS[i]!), b.ownerName(KEYS[i]!));
  assert.throws(() => new HashRing([]), /no servers/);
  assert.throws(() => new HashRing(['a', 'b', 'a']), /server 'a' is named twice/);
  assert.throws(() => new HashRing(['a'], { virtualNodes: 0 }), /virtualNodes must be a positive integer, got 0/);
  assert.throws(() => a.withoutServer('ps9'), /no server 'ps9'/);
  assert.throws(() => new HashRing(['a']).withoutServer('a'), /the only server/);
  assert.throws(() => rowKey(1, -1), /row must be an integer in \[0, 2\^32\), got -1/);
  assert.throws(() => rowKey(2 ** 21, 0), /table must be/);
});
