/**
 * Communication schedules as plain functions of (rank, size): which peer a rank talks to at each
 * step and which block it moves. Backend-independent (no memory, no threads), so every backend and
 * the tests read the same schedule.
 *
 *   ring all-reduce (Patarasuk & Yuan 2009): reduce-scatter then all-gather over neighbours,
 *     2(n-1) steps of m/n elements: bandwidth-optimal, latency 2(n-1) hops.
 *   recursive doubling (Thakur, Rabenseifner & Gropp 2005): log2(n) exchanges of the whole
 *     vector; ranks beyond the largest power of two fold into a partner first.
 *   binomial tree: broadcast (root to leaves) and reduce (leaves to root) in ceil(log2 n) rounds.
 */

/** Elements [start, end) of block `b` when `m` elements are cut into `n` blocks differing by at most one. */
export function blockRange(m: number, n: number, b: number): [number, number] {
  return [Math.floor((b * m) / n), Math.floor(((b + 1) * m) / n)];
}

export const mod = (a: number, n: number): number => ((a % n) + n) % n;

/**
 * Ring reduce-scatter, step s in [0, n-1): rank r sends block (r-s-1) to r+1 and reduces block
 * (r-s-2) received from r-1; after n-1 steps rank r holds the full reduction of block r.
 */
export function ringReduceScatterStep(r: number, n: number, s: number): { send: number; recv: number } {
  return { send: mod(r - s - 1, n), recv: mod(r - s - 2, n) };
}

/** Ring all-gather, step s in [0, n-1): rank r sends block (r-s) to r+1 and receives block (r-s-1) from r-1. */
export function ringAllGatherStep(r: number, n: number, s: number): { send: number; recv: number } {
  return { send: mod(r - s, n), recv: mod(r - s - 1, n) };
}

/**
 * Binomial tree rooted at `root` (MPICH's broadcast tree): the parent of rank r, or -1 at the
 * root, and its children, largest subtree first.
 */
export function binomialTree(r: number, n: number, root: number): { parent: number; children: number[] } {
  const vr = mod(r - root, n);
  let mask = 1;
  let parent = -1;
  while (mask < n) {
    if ((vr & mask) !== 0) { parent = mod(vr - mask + root, n); break; }
    mask <<= 1;
  }
  const children: number[] = [];
  for (mask >>= 1; mask > 0; mask >>= 1) if (vr + mask < n) children.push(mod(vr + mask + root, n));
  return { parent, children };
}

/**
 * Recursive doubling over n ranks (any n). With p the largest power of two <= n and e = n - p,
 * ranks 2i and 2i+1 for i < e fold first: the even one sends its vector to the odd one (`foldTo`)
 * and later receives the result back; the remaining p ranks exchange with `partners` in order.
 */
export function recursiveDoubling(r: number, n: number): { foldTo: number; foldFrom: number; partners: number[] } {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  const e = n - p;
  if (r < 2 * e && r % 2 === 0) return { foldTo: r + 1, foldFrom: -1, partners: [] };
  const vr = r < 2 * e ? r >> 1 : r - e;
  const real = (v: number): number => (v < e ? 2 * v + 1 : v + e);
  const partners: number[] = [];
  for (let mask = 1; mask < p; mask <<= 1) partners.push(real(vr ^ mask));
  return { foldTo: -1, foldFrom: r < 2 * e ? r - 1 : -1, partners };
}
