import type { ProcessGroup } from './process_group.js';

/**
 * Every rank's JSON-serializable value, in rank order (small control data: loader states, metrics),
 * through two collectives: the longest encoding, then an all-gather of padded UTF-8 bytes.
 */
export async function allGatherJson<T>(pg: ProcessGroup, value: T): Promise<T[]> {
  if (pg.size === 1) return [value];
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  const len = Int32Array.of(bytes.length);
  await pg.allReduce(len, 'max').wait();
  const words = Math.ceil(len[0]! / 4) + 1;
  const mine = new Int32Array(words);
  mine[0] = bytes.length;
  new Uint8Array(mine.buffer, 4).set(bytes);
  const all = new Int32Array(words * pg.size);
  await pg.allGather(mine, all).wait();
  return Array.from({ length: pg.size }, (_, r) => {
    const n = all[r * words]!;
    return JSON.parse(new TextDecoder().decode(new Uint8Array(all.buffer, (r * words + 1) * 4, n))) as T;
  });
}
