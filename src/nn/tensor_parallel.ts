/**
 * Tensor-parallel module styles (Megatron-LM's layers, torchtitan's style names), built only from
 * the IR's collectives (ir/ops/collective.ts). A style sets the placements of a module's
 * parameters (so `bindParameters` keeps only this rank's shard) and wraps that module instance's
 * forward; the model's code and class stay single-device.
 *
 * With sequence parallelism (`sp`), the activations between tensor-parallel regions are split by
 * rows (tokens) over the axis instead of replicated: a column-parallel entry all-gathers them
 * (backward: reduce-scatter), a row-parallel exit reduce-scatters (backward: all-gather), and
 * replicated parameters used on a row shard (LayerNorm, a row-parallel bias) pass through
 * `weft.Copy`, whose backward all-reduces their partial gradients.
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import { allGather, allReduce, copyTo, reduceScatter, splitTo } from '../ir/ops/collective.js';
import { globRegExp } from '../ir/scope.js';
import { Tensor } from '../tensor/tensor.js';
import { Embedding, LayerNorm, Linear } from './layers.js';
import type { Module } from './module.js';

/** A rank's place on the tensor-parallel axis. */
export interface TpAxis { readonly axis: string; readonly size: number; readonly index: number }

export interface StyleOptions {
  /** Sequence parallel: activations outside the region are row shards. */
  sp?: boolean;
}

const T = (v: Value): Tensor => new Tensor(v);

/** A replicated tensor used by rank-local computation: its gradient is summed over the axis. */
const shared = (t: Tensor, tp: TpAxis): Tensor => T(copyTo(t.value, tp.axis, tp.size));

/**
 * Column parallel, Y = X W + b with W [in, out] split by columns (and b with it): X replicated
 * (or row-sharded with sp) in, Y's column shard out. `parts` > 1 shards each of `parts` column
 * blocks (a fused q|k|v projection keeps each rank's heads of q, k and v).
 */
export function colwise(lin: Linear, tp: TpAxis, o: StyleOptions & { parts?: number } = {}): void {
  const parts = o.parts ?? 1;
  lin.weight.placement = { ...tp, dim: 1, parts };
  if (lin.bias) lin.bias.placement = { ...tp, dim: 0, parts };
  const forward = lin.forward.bind(lin);
  lin.forward = (x: Tensor): Tensor => forward(o.sp ? T(allGather(x.value, tp.axis, tp.size, 0)) : shared(x, tp));
}

/**
 * Row parallel, Y = X W + b with W [in, out] split by rows: X's column shard in (a colwise
 * region's output), partial products summed over the axis (sp: reduce-scattered by rows), and b,
 * replicated, added once after the sum.
 */
export function rowwise(lin: Linear, tp: TpAxis, o: StyleOptions = {}): void {
  lin.weight.placement = { ...tp, dim: 0 };
  lin.forward = (x: Tensor): Tensor => {
    const part = b.gemm(x.value, lin.weight.t.value, null);
    const y = T(o.sp ? reduceScatter(part, tp.axis, tp.size, 0) : allReduce(part, tp.axis, tp.size));
    if (!lin.bias) return y;
    return y.add(o.sp ? shared(lin.bias.t, tp) : lin.bias.t);
  };
}

/**
 * Vocab parallel embedding: the table [V, d] split by rows; each rank looks up the ids in its
 * range (others give zeros) and the rows are summed over the axis.
 */
export function vocabParallelEmbedding(emb: Embedding, tp: TpAxis): void {
  if (emb.num % tp.size !== 0) throw new Error(`vocabParallelEmbedding: the vocabulary (${emb.num}) must divide by the '${tp.axis}' size ${tp.size}`);
  emb.weight.placement = { ...tp, dim: 0 };
  const per = emb.num / tp.size;
  emb.forward = (ids: Tensor): Tensor => {
    const { local, mask } = localIds(ids, tp.index * per, per);
    const rows = emb.weight.t.gather(local).mul(mask.cast(emb.weight.t.dtype).unsqueeze([-1]));
    return T(allReduce(rows.value, tp.axis, tp.size));
  };
}

/** ids - lo where lo <= id < lo + n (else 0), and the bool mask of those ids. */
function localIds(ids: Tensor, lo: number, n: number): { local: Tensor; mask: Tensor } {
  const i64 = ids.cast('int64');
  const shifted = i64.sub(T(b.constant(BigInt64Array.of(BigInt(lo)), 'int64', [])));
  const inRange = T(b.apply1('And', [
    b.apply1('GreaterOrEqual', [shifted.value, b.constant(BigInt64Array.of(0n), 'int64', [])]),
    b.apply1('Less', [shifted.value, b.constant(BigInt64Array.of(BigInt(n)), 'int64', [])]),
  ]));
  const local = T(b.where(inRange.value, shifted.value, b.constant(BigInt64Array.of(0n), 'int64', [])));
  return { local, mask: inRange };
}

/**
 * Vocab parallel cross-entropy (Megatron's): logits [N, V / size] hold this rank's vocabulary
 * slice and are never gathered. loss = mean(log sum_v exp(l_v - m) - (l_t - m)) with the max m,
 * the sum and the target's logit each one all-reduce over the axis; m is a constant shift.
 */
export function vocabParallelCrossEntropy(logits: Tensor, targets: Tensor, tp: TpAxis): Tensor {
  const per = logits.shape[1] as number;
  const m = T(allReduce(logits.max([1], true).value, tp.axis, tp.size, 'max'));
  const shifted = logits.sub(m);
  const sumExp = T(allReduce(shifted.exp().sum([1], true).value, tp.axis, tp.size));
  const { local, mask } = localIds(targets.reshape([-1]), tp.index * per, per);
  const picked = shifted.gatherElements(local.unsqueeze([-1]), 1).mul(mask.cast(logits.dtype).unsqueeze([-1]));
  const target = T(allReduce(picked.value, tp.axis, tp.size));
  return sumExp.log().sub(target).mean();
}

/** LayerNorm on a row shard (sequence parallel): its replicated weight and bias get summed gradients. */
export function sequenceParallelNorm(ln: LayerNorm, tp: TpAxis): void {
  ln.forward = (x: Tensor): Tensor => x.layerNorm(shared(ln.weight.t, tp), shared(ln.bias.t, tp), ln.eps);
}

/** Rows of x split over the axis (entering a sequence-parallel region; backward: all-gather). */
export const toRowShards = (x: Tensor, tp: TpAxis): Tensor => T(splitTo(x.value, tp.axis, tp.size, 0));

/** Row shards gathered (leaving it, into rank-local computation; backward: reduce-scatter). */
export const fromRowShards = (x: Tensor, tp: TpAxis): Tensor => T(allGather(x.value, tp.axis, tp.size, 0));

/** A module style of a plan, as data. */
export type Style =
  | { readonly kind: 'colwise'; readonly parts?: number }
  | { readonly kind: 'rowwise' }
  | { readonly kind: 'vocabEmbedding' }
  | { readonly kind: 'sequenceNorm' };

/** Module paths (globs: `*` matches within a path segment) to styles, torchtitan's parallelize plan. */
export type Plan = Readonly<Record<string, Style>>;


/**
 * Applies `plan` to the modules of `model` it names, for this rank of the axis. A pattern that
 * matches no module, or a style on a module it does not fit, is an error naming both.
 */
export function applyPlan(model: Module, plan: Plan, tp: TpAxis, o: StyleOptions = {}): void {
  const modules = model.namedModules();
  for (const [pattern, style] of Object.entries(plan)) {
    const re = globRegExp(pattern);
    const hits = modules.filter(([path]) => re.test(path));
    if (hits.length === 0) throw new Error(`parallel plan: '${pattern}' matches no module of ${model.constructor.name} (modules: ${modules.map(([p]) => p).filter(Boolean).slice(0, 12).join(', ')}, ...)`);
    for (const [path, m] of hits) {
      const wrong = (want: string): never => { throw new Error(`parallel plan: '${pattern}' puts ${style.kind} on '${path}', a ${m.constructor.name}; it needs a ${want}`); };
      if (style.kind === 'colwise') { if (!(m instanceof Linear)) wrong('Linear'); colwise(m as Linear, tp, { ...o, parts: style.parts ?? 1 }); }
      else if (style.kind === 'rowwise') { if (!(m instanceof Linear)) wrong('Linear'); rowwise(m as Linear, tp, o); }
      else if (style.kind === 'vocabEmbedding') { if (!(m instanceof Embedding)) wrong('Embedding'); vocabParallelEmbedding(m as Embedding, tp); }
      else { if (!(m instanceof LayerNorm)) wrong('LayerNorm'); if (o.sp) sequenceParallelNorm(m as LayerNorm, tp); }
    }
  }
}
