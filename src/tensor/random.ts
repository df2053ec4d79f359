/**
 * A small, seedable generator (SplitMix64 seeding xoshiro128**): reproducible initialization and
 * sampling, with state that can be saved and restored.
 */
export class Rng {
  private s: Uint32Array;

  constructor(seed = 0) {
    this.s = new Uint32Array(4);
    let x = BigInt.asUintN(64, BigInt(seed));
    for (let i = 0; i < 4; i++) {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      this.s[i] = Number((z ^ (z >> 31n)) & 0xffffffffn);
    }
  }

  /** Uniform 32-bit integer. */
  nextU32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!; s[3]! ^= s[1]!; s[1]! ^= s[2]!; s[0]! ^= s[3]!;
    s[2]! ^= t; s[3] = rotl(s[3]!, 11);
    return r;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number { return ((this.nextU32() >>> 5) * 67108864 + (this.nextU32() >>> 6)) / 9007199254740992; }

  /** Uniform integer in [0, n). */
  int(n: number): number { return Math.floor(this.uniform() * n); }

  /** Shuffles `xs` in place (Fisher-Yates, from the last element down) and returns it. */
  shuffle<A extends { length: number; [i: number]: unknown }>(xs: A): A {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }

  getState(): number[] { return Array.from(this.s); }
  setState(state: readonly number[]): void {
    if (state.length !== 4) throw new Error(`Rng.setState: expected 4 words, got ${state.length}`);
    this.s.set(state);
  }
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/**
 * Murmur3's 32-bit finalizer (a bijection on uint32): every input bit flips about half of the
 * output bits. The one mixer of the hash ring, the CTR generator's feature hash and the parameter
 * server's counter-based row init.
 */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
