/**
 * Consistent hashing with virtual nodes (Karger et al. 1997; the placement ps-lite and Dynamo
 * use): the parameter server's map from keys (embedding rows, dense chunks) to server ranks.
 *
 * Each server owns `virtualNodes` points on a 32-bit ring, at hashes of its name; a key belongs to
 * the first point at or after its own hash (wrapping). Adding a server takes over only the arcs
 * that end at its points, so about 1/(S+1) of the keys move, all of them to the new server, and
 * none between the servers that stay; removing one moves only its own keys. More virtual nodes
 * even out the arcs: the largest server's share over the mean falls roughly as 1 + c/sqrt(V).
 *
 *   const ring = new HashRing(['ps0', 'ps1']);
 *   ring.owner(rowKey(table, 1234));   // 0 or 1: an index into ring.servers
 *   const grown = ring.withServer('ps2');
 */
import { fmix32 } from '../tensor/random.js';

/** The default virtual nodes per server: with 160, measured shares stay within a few percent of even (test/hash_ring.test.ts). */
export const DEFAULT_VIRTUAL_NODES = 160;


/** A 32-bit hash of a non-negative integer key below 2^53 (its two 32-bit halves mixed in turn). */
export function hashKey(key: number): number {
  const lo = key >>> 0;
  const hi = Math.floor(key / 2 ** 32) >>> 0;
  return fmix32(fmix32(lo ^ 0x9e3779b9) ^ hi);
}

/** A 32-bit hash of a string (FNV-1a over UTF-16 code units, then mixed). */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return fmix32(h >>> 0);
}

/** The key of row `row` of embedding table `table` (tables below 2^21, rows below 2^32): one integer below 2^53. */
export function rowKey(table: number, row: number): number {
  if (!Number.isInteger(table) || table < 0 || table >= 2 ** 21) throw new Error(`rowKey: table must be an integer in [0, 2^21), got ${table}`);
  if (!Number.isInteger(row) || row < 0 || row >= 2 ** 32) throw new Error(`rowKey: row must be an integer in [0, 2^32), got ${row}`);
  return table * 2 ** 32 + row;
}

export class HashRing {
  readonly servers: readonly string[];
  readonly virtualNodes: number;
  /** The ring's points, ascending, and the server (index into `servers`) owning each. */
  private readonly points: Uint32Array;
  private readonly owners: Uint16Array;

  constructor(servers: readonly string[], opts: { virtualNodes?: number } = {}) {
    const v = opts.virtualNodes ?? DEFAULT_VIRTUAL_NODES;
    if (!Number.isInteger(v) || v < 1) throw new Error(`HashRing: virtualNodes must be a positive integer, got ${v}`);
    if (servers.length === 0) throw new Error('HashRing: no servers');
    if (servers.length > 65535) throw new Error(`HashRing: at most 65535 servers, got ${servers.length}`);
    const seen = new Set<string>();
    for (const s of servers) {
      if (seen.has(s)) throw new Error(`HashRing: server '${s}' is named twice`);
      seen.add(s);
    }
    this.servers = [...servers];
    this.virtualNodes = v;
    const n = servers.length * v;
    const pts: { at: number; owner: number; tie: number }[] = [];
    servers.forEach((s, owner) => {
      const base = hashString(s);
      for (let k = 0; k < v; k++) pts.push({ at: fmix32(base ^ fmix32(k + 1)), owner, tie: hashString(`${s}#${k}`) });
    });
    // Equal points (rare) are ordered by a second hash of the name, so the ring does not depend on the order servers are listed in.
    pts.sort((a, b) => a.at - b.at || a.tie - b.tie);
    this.points = new Uint32Array(n);
    this.owners = new Uint16Array(n);
    pts.forEach((p, i) => { this.points[i] = p.at; this.owners[i] = p.owner; });
  }

  /** The index (into `servers`) of the server owning `key` (an integer in [0, 2^53)). */
  owner(key: number): number {
    const h = hashKey(key);
    // The first point >= h, wrapping to the first point.
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === this.points.length ? 0 : lo]!;
  }

  /** The owner's name of `key`. */
  ownerName(key: number): string { return this.servers[this.owner(key)]!; }

  /** Owners of many keys at once (indices into `servers`). */
  ownersOf(keys: ArrayLike<number>): Uint16Array {
    const out = new Uint16Array(keys.length);
    for (let i = 0; i < keys.length; i++) out[i] = this.owner(keys[i]!);
    return out;
  }

  /** This ring with one more server. */
  withServer(name: string): HashRing {
    return new HashRing([...this.servers, name], { virtualNodes: this.virtualNodes });
  }

  /** This ring without the server `name` (an error naming it when it is not there, or is the last). */
  withoutServer(name: string): HashRing {
    if (!this.servers.includes(name)) throw new Error(`HashRing: no server '${name}' (servers: ${this.servers.join(', ')})`);
    if (this.servers.length === 1) throw new Error(`HashRing: '${name}' is the only server; a ring needs one`);
    return new HashRing(this.servers.filter((s) => s !== name), { virtualNodes: this.virtualNodes });
  }
}

/**
 * What a change of ring moves: over `keys`, how many change owner (by server name), and how many
 * of those move between servers that are in both rings (0 for consistent hashing).
 */
export function movedKeys(before: HashRing, after: HashRing, keys: ArrayLike<number>): { moved: number; betweenKept: number } {
  const kept = new Set(before.servers.filter((s) => after.servers.includes(s)));
  let moved = 0;
  let betweenKept = 0;
  for (let i = 0; i < keys.length; i++) {
    const a = before.ownerName(keys[i]!);
    const b = after.ownerName(keys[i]!);
    if (a === b) continue;
    moved++;
    if (kept.has(a) && kept.has(b)) betweenKept++;
  }
  return { moved, betweenKept };
}
