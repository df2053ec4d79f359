/**
 * Expert parallelism inside data parallelism (DeepSpeed-MoE's layout): the data-parallel ranks
 * are cut into groups of `ep` consecutive ranks, each group holding every expert once (rank i of a
 * group its i-th E / ep), and ranks at the same place in different groups (the expert-data-parallel
 * group, `edp`, of dp / ep ranks) holding the same experts. nn/moe.ts routes tokens inside an ep
 * group with all-to-alls; this file reduces the gradients.
 *
 * A dense parameter's gradient averages over every data-parallel rank, as without experts. An
 * expert's gradient on its rank is already summed over the ep group's tokens (the all-to-all's
 * backward brought every rank's contribution), so it is divided by ep and averaged over edp: the
 * same mean over the dp ranks' losses that data parallelism alone computes.
 */
import type { ProcessGroup, Work } from '../comm/process_group.js';
import type { Slot } from '../runtime/flat.js';
import type { Bucket, CommHook } from './ddp.js';

export interface ExpertGroups {
  /** Ranks per expert group. */
  readonly ep: number;
  /** The ranks holding this rank's experts (null: none other, dp = ep). */
  readonly edp: ProcessGroup | null;
}

/** `[lo, hi)` runs of `slots` (covering `lo` to `hi` of the buffer), each all experts or all dense. */
function runs(slots: readonly Slot[], lo: number, hi: number, expert: (name: string) => boolean): { lo: number; hi: number; expert: boolean }[] {
  const out: { lo: number; hi: number; expert: boolean }[] = [];
  for (const [i, s] of slots.entries()) {
    const e = expert(s.name);
    const start = i === 0 ? lo : s.offset;
    if (out.length > 0 && out.at(-1)!.expert === e) continue;
    if (out.length > 0) out.at(-1)!.hi = start;
    out.push({ lo: start, hi, expert: e });
  }
  return out;
}

/** A Work that completes when all of `works` have. */
function allOf(works: readonly Work[]): Work {
  return { label: works.map((w) => w.label).join('+') || 'none', wait: async () => { for (const w of works) await w.wait(); } };
}

/**
 * The data-parallel hook with experts: each bucket's dense runs reduced by `inner` over the
 * data-parallel group, its expert runs divided by ep and averaged over edp. `groups` is read at
 * each bucket (the groups are made after the hook).
 */
export function expertHook(inner: CommHook, experts: ReadonlySet<string>, groups: () => ExpertGroups): CommHook {
  return (pg, bucket, b) => {
    const { ep, edp } = groups();
    const works: Work[] = [];
    for (const r of runs(b.slots, b.lo, b.hi, (n) => experts.has(n))) {
      const view = bucket.subarray(r.lo - b.lo, r.hi - b.lo);
      if (!r.expert) {
        const sub: Bucket = { ...b, lo: r.lo, hi: r.hi, slots: b.slots.filter((s) => s.offset >= r.lo && s.offset < r.hi) };
        works.push(inner(pg, view, sub));
        continue;
      }
      for (let i = 0; i < view.length; i++) view[i]! /= ep;
      if (edp) works.push(edp.allReduce(view, 'mean'));
    }
    return allOf(works);
  };
}
