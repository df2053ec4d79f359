/**
 * `weft.Load`: a host op that reads `length` float32 elements at element `offset` of a vector kept
 * outside memory, the store named `store` (ZeRO stage 3's parameter shard on disk,
 * parallel/zero3.ts). It has no data inputs; its optional `after` inputs only order it (the
 * schedule issues it no earlier than the boundary where they exist, as the collectives' `after`
 * inputs do), so a chain of loads reads each piece a little ahead of its use, not all at once.
 * The kernel (optim/offload.ts) finds the store in the run's context, `context.stores[store]`.
 * No gradient flows through it.
 */
import * as b from '../build.js';
import type { Value } from '../graph.js';
import { defineOp } from '../registry.js';

defineOp({
  name: 'weft.Load', inputs: ['after...'], host: true,
  attrs: { store: { kind: 'string' }, offset: { kind: 'int' }, length: { kind: 'int' } },
  infer: (c) => {
    const [offset, length] = [c.attr<number>('offset'), c.attr<number>('length')];
    if (!(Number.isInteger(offset) && offset >= 0)) c.fail(`offset must be a non-negative integer, got ${offset}`);
    if (!(Number.isInteger(length) && length >= 1)) c.fail(`length must be a positive integer, got ${length}`);
    return [{ dtype: 'float32', shape: [length] }];
  },
  grad: (g) => g.inputs.map(() => null),
});

/** Elements [offset, offset + length) of the store `store`, read once the `after` values exist. */
export const load = (store: string, offset: number, length: number, after: readonly Value[] = []): Value =>
  b.apply1('weft.Load', [...after], { store, offset, length });
