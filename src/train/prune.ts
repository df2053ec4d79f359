/**
 * Unstructured magnitude pruning inside training (`train.prune`): Zhu & Gupta's gradual schedule
 * ("To prune, or not to prune", 2017) over the weights of the model's Linear and Conv2d layers,
 * with masks that stay applied through fine-tuning.
 *
 * Sparsity at a mask update t (t = optimizer steps completed), start t0, end t1:
 *
 *   s_t = 0                                              t < t0 (dense)
 *   s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3  t0 <= t < t1
 *   s_t = s_f                                            t >= t1
 *
 * Masks are recomputed at t0, t0 + dt, t0 + 2 dt, ... and at t1 (dt = `every`): the round(s_t n)
 * smallest |w| are pruned (n: all prunable weights for scope 'global', each tensor's own for
 * 'layer'), ties at the threshold broken by position (layout order, then index). Masks are
 * monotone, as in the paper: a pruned weight stays pruned and the new prunes are drawn from the
 * weights still alive. After every optimizer step the pruned weights are set to exactly 0 (the
 * optimizer's moments are left as they are; the mask keeps them from regrowing a weight).
 *
 * Prunable: the `weight` of every Linear and Conv2d module (matrices and kernels), as
 * torch.nn.utils.prune.global_unstructured is typically applied; embeddings (the GPT's `tok`,
 * whose table is also its tied head, and `pos`), norms, biases and MoE expert tensors are not.
 *
 * Every data-parallel rank holds the same parameters after an update (ZeRO 1 and 2 gather them),
 * so every rank computes the same masks with no communication. The masks are checkpoint tensors
 * `mask.<parameter>` (uint8: 1 kept, 0 pruned, the parameter's shape) in optimizer.safetensors.
 */
import { Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { Conv2d } from '../nn/vision.js';
import type { Layout } from '../runtime/flat.js';
import { profiler } from '../runtime/profiler.js';
import type { RunConfig } from './config.js';

/** `train.prune` as configured. */
export type PruneConfig = RunConfig['train']['prune'];

/** The schedule with `end` resolved to a step. */
export interface PruneSchedule { sparsity: number; initial: number; start: number; end: number; every: number }

/** Prefix of the mask tensors in optimizer.safetensors. */
export const MASK_PREFIX = 'mask.';

/** `train.prune.end` -1 means this fraction of train.steps: the last quarter fine-tunes at s_f (Zhu & Gupta prune over part of training, then keep training). */
const DEFAULT_END_FRACTION = 0.75;

/** The schedule of a run: `end` -1 resolved to round(0.75 steps). The config was validated (parseConfig). */
export function pruneSchedule(p: PruneConfig, steps: number): PruneSchedule {
  const end = p.end < 0 ? Math.round(DEFAULT_END_FRACTION * steps) : p.end;
  return { sparsity: p.sparsity, initial: p.initial, start: p.start, end, every: p.every };
}

/** s_t, the target sparsity of a mask update after t steps (module comment); 0 before the ramp starts. */
export function targetSparsity(s: PruneSchedule, t: number): number {
  if (t < s.start) return 0;
  if (t >= s.end) return s.sparsity;
  const x = 1 - (t - s.start) / (s.end - s.start);
  return s.sparsity + (s.initial - s.sparsity) * x ** 3;
}

/** Whether the masks are recomputed after t steps: t0, t0 + dt, ... up to t1, and t1 itself. */
export const isMaskUpdate = (s: PruneSchedule, t: number): boolean => t >= s.start && t <= s.end && ((t - s.start) % s.every === 0 || t === s.end);

/** Names of the prunable parameters (each Linear's and Conv2d's weight), in the model's parameter order. */
export function prunableNames(model: Module): string[] {
  const weights = new Set(model.modules().flatMap((m) => (m instanceof Linear || m instanceof Conv2d ? [m.weight] : [])));
  return model.namedParameters().filter(([, p]) => weights.has(p)).map(([n]) => n);
}

/** A prunable tensor: where it lies in the flat parameters, and its mask (1 kept, 0 pruned). */
interface Masked { readonly name: string; readonly shape: readonly number[]; readonly offset: number; readonly mask: Uint8Array; pruned: number }

/**
 * Masks over a flat parameter vector, their schedule, and their application. The trainer calls
 * `step(t, params)` before the first step of a run (t: the steps already done) and after every
 * optimizer step; checkpoints carry `checkpointTensors()` and `load` restores them.
 *
 * @example
 *   const p = new Pruner(bound.flat.layout, prunableNames(model), 'global', pruneSchedule(cfg.train.prune, cfg.train.steps));
 *   p.step(0, bound.flat.data);                       // before the first step
 *   for (let t = 1; t <= steps; t++) { await opt.step(grads, lr(t)); p.step(t, bound.flat.data); }
 */
export class Pruner {
  readonly schedule: PruneSchedule;
  private readonly entries: Masked[];

  constructor(layout: Layout, names: readonly string[], private readonly scope: 'global' | 'layer', schedule: PruneSchedule) {
    if (names.length === 0) throw new Error('train.prune: the model has no Linear or Conv2d weights to prune');
    this.schedule = schedule;
    this.entries = names.map((name) => {
      const s = layout.slot(name);
      return { name, shape: s.shape, offset: s.offset, mask: new Uint8Array(s.size).fill(1), pruned: 0 };
    });
    profiler.hold('prune.masks', this.entries.reduce((a, t) => a + t.mask.length, 0));
  }

  /** Prunable weights in all. */
  get size(): number { return this.entries.reduce((a, t) => a + t.mask.length, 0); }

  /** Pruned weights in all (what the masks hold; `sparsity` reads the parameters). */
  get pruned(): number { return this.entries.reduce((a, t) => a + t.pruned, 0); }

  /** Each prunable tensor's mask (1 kept, 0 pruned), by parameter name (views: do not write). */
  masks(): Map<string, Uint8Array> { return new Map(this.entries.map((t) => [t.name, t.mask])); }

  /** After t steps: recomputes the masks if t is a mask update, then zeroes the pruned weights of `params`. */
  step(t: number, params: Float32Array): void {
    if (isMaskUpdate(this.schedule, t)) this.update(targetSparsity(this.schedule, t), params);
    this.apply(params);
  }

  /**
   * Prunes up to sparsity `s` by magnitude (never un-pruning): round(s n) pruned over all tensors
   * ('global') or in each ('layer').
   */
  update(s: number, params: Float32Array): void {
    // The bit pattern of |w| as a uint32 orders like |w| (IEEE 754, non-negative): a radix select on it is exact.
    const bits = new Uint32Array(params.buffer, params.byteOffset, params.length);
    const groups = this.scope === 'global' ? [this.entries] : this.entries.map((t) => [t]);
    for (const g of groups) selectSmallest(bits, g, Math.round(s * g.reduce((a, t) => a + t.mask.length, 0)));
  }

  /** Sets every pruned weight of `params` to exactly 0. */
  apply(params: Float32Array): void {
    for (const t of this.entries) {
      if (t.pruned === 0) continue;
      const { mask, offset } = t;
      for (let i = 0; i < mask.length; i++) if (mask[i] === 0) params[offset + i] = 0;
    }
  }

  /** The fraction of prunable weights of `params` that are exactly zero (the metric `sparsity`). */
  sparsity(params: Float32Array): number {
    let zeros = 0;
    for (const t of this.entries) for (let i = t.offset, e = t.offset + t.mask.length; i < e; i++) if (params[i] === 0) zeros++;
    return zeros / this.size;
  }

  /** The masks as checkpoint tensors `mask.<name>` (uint8, the parameter's shape), in model order. */
  checkpointTensors(): (readonly [string, { shape: readonly number[]; dtype: 'U8'; read: () => Promise<Uint8Array> }])[] {
    return this.entries.map((t) => [MASK_PREFIX + t.name, { shape: t.shape, dtype: 'U8', read: async () => t.mask }] as const);
  }

  /**
   * Restores masks from a checkpoint's optimizer tensors; a checkpoint without them (saved before
   * pruning was configured) leaves every weight alive. Errors name the file and the tensor.
   */
  load(tensors: ReadonlyMap<string, { data: ArrayLike<number> }>, file: string): void {
    const present = this.entries.filter((t) => tensors.has(MASK_PREFIX + t.name));
    if (present.length > 0 && present.length < this.entries.length) {
      const missing = this.entries.find((t) => !tensors.has(MASK_PREFIX + t.name))!;
      throw new Error(`${file}: missing tensor '${MASK_PREFIX}${missing.name}' (it holds the masks of other tensors)`);
    }
    for (const t of present) {
      const key = MASK_PREFIX + t.name;
      const src = tensors.get(key)!.data;
      if (src.length !== t.mask.length) throw new Error(`${file}: tensor '${key}' has ${src.length} elements, the model's '${t.name}' has ${t.mask.length}`);
      let pruned = 0;
      for (let i = 0; i < src.length; i++) {
        const v = src[i]!;
        if (v !== 0 && v !== 1) throw new Error(`${file}: tensor '${key}' holds ${v} at ${i}; a mask holds 0 (pruned) or 1 (kept)`);
        t.mask[i] = v;
        if (v === 0) pruned++;
      }
      t.pruned = pruned;
    }
  }
}

/**
 * Prunes the smallest |w| of the live weights of `group` (concatenated in order) until `target`
 * are pruned. A radix select on the keys (|w|'s bits): the top 16 bits' histogram finds the
 * threshold's bucket, the low 16 bits' the threshold; weights below it are pruned, and of those
 * equal to it, the first in order. Three passes, no sort (3.1M weights: a sort costs ~10x more).
 */
function selectSmallest(bits: Uint32Array, group: Masked[], target: number): void {
  const pruned = group.reduce((a, t) => a + t.pruned, 0);
  let need = target - pruned;
  if (need <= 0) return;
  const forEachLive = (f: (key: number) => void): void => {
    for (const t of group) {
      const { mask, offset } = t;
      for (let i = 0; i < mask.length; i++) if (mask[i] === 1) f((bits[offset + i]! & 0x7fffffff) >>> 0);
    }
  };
  const hi = new Uint32Array(1 << 15);
  forEachLive((k) => { hi[k >>> 16]!++; });
  let bucket = 0;
  let below = 0;
  while (below + hi[bucket]! < need) below += hi[bucket++]!;
  const lo = new Uint32Array(1 << 16);
  forEachLive((k) => { if (k >>> 16 === bucket) lo[k & 0xffff]!++; });
  let low = 0;
  while (below + lo[low]! < need) below += lo[low++]!;
  const threshold = ((bucket << 16) | low) >>> 0;
  // `below` weights are under the threshold; the rest of `need` come from those equal to it, in order.
  let ties = need - below;
  for (const t of group) {
    const { mask, offset } = t;
    for (let i = 0; i < mask.length && need > 0; i++) {
      if (mask[i] === 0) continue;
      const k = (bits[offset + i]! & 0x7fffffff) >>> 0;
      if (k < threshold || (k === threshold && ties-- > 0)) { mask[i] = 0; t.pruned++; need--; }
    }
  }
}
