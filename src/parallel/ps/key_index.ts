/** The shard store's key -> slot index (store.ts). */
import { fmix32 } from '../../tensor/random.js';

/**
 * key -> slot by open addressing with linear probing over interleaved [key, slot] int32 pairs, so
 * a probe reads one cache line. Measured on 1M random keys: 36 ns a lookup against 185 ns for a
 * Map<number, number> (and 79 ns with keys and slots in two arrays). Load factor <= 1/2; deletion
 * shifts later entries back instead of leaving tombstones. Empty cells hold key -1.
 */
export class KeyIndex {
  private h: Int32Array;
  private mask: number;
  private count = 0;

  constructor(cells = 128) {
    this.h = new Int32Array(2 * cells).fill(-1);
    this.mask = cells - 1;
  }

  /** The slot of `key`, or -1. */
  get(key: number): number {
    const h = this.h;
    const mask = this.mask;
    for (let p = fmix32(key) & mask; ; p = (p + 1) & mask) {
      const k = h[2 * p]!;
      if (k === -1) return -1;
      if (k === key) return h[2 * p + 1]!;
    }
  }

  /** Adds `key` (which must be absent) at `slot`. */
  add(key: number, slot: number): void {
    if (2 * (this.count + 1) > this.mask + 1) this.rehash(2 * (this.mask + 1));
    this.place(key, slot);
    this.count++;
  }

  /** Points the present `key` at `slot`. */
  move(key: number, slot: number): void {
    const h = this.h;
    const mask = this.mask;
    let p = fmix32(key) & mask;
    while (h[2 * p] !== key) p = (p + 1) & mask;
    h[2 * p + 1] = slot;
  }

  /** Removes the present `key`, shifting back the entries of its probe run that may fill the hole. */
  delete(key: number): void {
    const h = this.h;
    const mask = this.mask;
    let i = fmix32(key) & mask;
    while (h[2 * i] !== key) i = (i + 1) & mask;
    for (let j = (i + 1) & mask; h[2 * j] !== -1; j = (j + 1) & mask) {
      const home = fmix32(h[2 * j]!) & mask;
      // The entry at j stays if its home lies cyclically in (i, j]; otherwise it moves into the hole.
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      h[2 * i] = h[2 * j]!;
      h[2 * i + 1] = h[2 * j + 1]!;
      i = j;
    }
    h[2 * i] = -1;
    h[2 * i + 1] = -1;
    this.count--;
  }

  private place(key: number, slot: number): void {
    const h = this.h;
    const mask = this.mask;
    let p = fmix32(key) & mask;
    while (h[2 * p] !== -1) p = (p + 1) & mask;
    h[2 * p] = key;
    h[2 * p + 1] = slot;
  }

  private rehash(cells: number): void {
    const old = this.h;
    this.h = new Int32Array(2 * cells).fill(-1);
    this.mask = cells - 1;
    for (let p = 0; p < old.length; p += 2) if (old[p] !== -1) this.place(old[p]!, old[p + 1]!);
  }
}
