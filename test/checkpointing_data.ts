/** The tiny GPT and token batches shared by test/checkpointing.test.ts and its ranks. */
import { Rng } from '../src/tensor/random.js';

export const CFG = { vocab: 32, ctx: 8, d: 16, layers: 2, heads: 2 };

/** B windows of random token ids and targets, from `seed`. */
export function tokens(seed: number, B: number): { x: BigInt64Array; y: BigInt64Array } {
  const rng = new Rng(seed);
  const x = BigInt64Array.from({ length: B * CFG.ctx }, () => BigInt(rng.int(CFG.vocab)));
  const y = BigInt64Array.from({ length: B * CFG.ctx }, () => BigInt(rng.int(CFG.vocab)));
  return { x, y };
}
