/**
 * One rank of test/tensor_parallel.test.ts: the tiny GPT under the tensor-parallel plan (tp = the
 * world), float64, one forward + backward on a fixed batch; every gradient shard is gathered back
 * into the whole tensor and compared with the single-device model's gradient, computed here too.
 */
import type { ProcessGroup } from '../src/comm/process_group.js';
import type { CommArray } from '../src/comm/process_group.js';
import { GPT } from '../src/nn/gpt.js';
import { parallelizeGPT } from '../src/nn/gpt_plan.js';
import { bindParameters } from '../src/nn/module.js';
import type { BoundParameters } from '../src/nn/module.js';
import type { Compiled } from '../src/tensor/compile.js';
import { unshard } from '../src/nn/placement.js';
import '../src/parallel/spmd.js';
import { setThreads } from '../src/runtime/executor.js';
import { compile } from '../src/tensor/compile.js';
import { Rng } from '../src/tensor/random.js';
import { grad } from '../src/tensor/tensor.js';

export interface TpArgs { sp: boolean }
export interface TpResult { loss: number; refLoss: number; maxRelGrad: number; maxParamDiff: number; hostOps: Record<string, number>; wireBytes: Record<string, number>; overlapping: number; programs: number; localParams: number; expectedLocal: number; params: number }

export const CFG = { vocab: 32, ctx: 8, d: 16, layers: 2, heads: 4 };
export const [B, T] = [2, 8];

export default async function rank(pg: ProcessGroup, args: TpArgs): Promise<TpResult> {
  setThreads(1);
  const rng = new Rng(7);
  const x = BigInt64Array.from({ length: B * T }, () => BigInt(rng.int(CFG.vocab)));
  const y = BigInt64Array.from({ length: B * T }, () => BigInt(rng.int(CFG.vocab)));
  const feeds = [{ data: x, shape: [B, T], dtype: 'int64' as const }, { data: y, shape: [B, T], dtype: 'int64' as const }];
  const lossAndGrads = (model: GPT, params: BoundParameters<Float64Array>, context?: unknown): Compiled => {
    const wrt = params.flat.layout.slots.map((s) => params.tensors[s.name]!);
    return compile((a, t) => { const l = model.loss(a!, t!); return [l, ...grad(l, wrt)]; }, 'tp_check', context === undefined ? {} : { context });
  };

  const ref = new GPT(CFG);
  const refParams = bindParameters(ref, { seed: 3, dtype: 'float64' });
  const refOut = await lossAndGrads(ref, refParams)(...feeds);

  const model = new GPT(CFG);
  parallelizeGPT(model, { axis: 'tp', size: pg.size, index: pg.rank }, { sp: args.sp });
  const params = bindParameters(model, { seed: 3, dtype: 'float64' });
  const step = lossAndGrads(model, params, { groups: { tp: pg } });
  const out = await step(...feeds);

  let maxRelGrad = 0, maxParamDiff = 0;
  const named = new Map(model.namedParameters());
  for (const [k, s] of params.flat.layout.slots.entries()) {
    const p = named.get(s.name)!;
    const whole = async (local: Float64Array): Promise<Float64Array> => {
      if (p.placement === null) return local;
      const all = new Float64Array(local.length * pg.size);
      await pg.allGather(local as CommArray, all as CommArray).wait();
      return unshard(Array.from({ length: pg.size }, (_, i) => all.subarray(i * local.length, (i + 1) * local.length)), p.shape, p.placement);
    };
    const g = await whole(out[k + 1] as Float64Array);
    const gr = refOut[k + 1] as Float64Array;
    const scale = Math.max(...Array.from(gr, Math.abs), 1e-30);
    for (let i = 0; i < gr.length; i++) maxRelGrad = Math.max(maxRelGrad, Math.abs(g[i]! - gr[i]!) / scale);
    const w = await whole(params.flat.view(s.name));
    const wr = refParams.flat.view(s.name);
    for (let i = 0; i < wr.length; i++) maxParamDiff = Math.max(maxParamDiff, Math.abs(w[i]! - wr[i]!));
  }
  return {
    loss: Number(out[0]![0]), refLoss: Number(refOut[0]![0]), maxRelGrad, maxParamDiff, hostOps: step.schedule!.hostOps,
    wireBytes: step.schedule!.wireBytes, overlapping: step.schedule!.overlapping, programs: step.schedule!.programs,
    // Replicated tensors whole, sharded ones 1/tp (a layout's alignment padding aside).
    expectedLocal: model.namedParameters().reduce((a, [, p]) => a + p.shape.reduce((x, e) => x * e, 1) / (p.placement ? pg.size : 1), 0),
    localParams: params.flat.layout.slots.reduce((a, s) => a + s.size, 0), params: refParams.flat.layout.slots.reduce((a, s) => a + s.size, 0),
  };
}
