/**
 * One rank of test/moe.test.ts: a tiny GPT whose every block is a mixture of experts, trained
 * `steps` AdamW steps data parallel, each rank on its own batch, with the experts split over `ep`
 * ranks (ep 1: every expert on every rank, the reference). Dense gradients average over every
 * rank; an expert's gradient, which its all-to-all backward has already summed over the ep ranks'
 * tokens, is divided by ep and averaged over the ranks holding the same experts. Returns the mean
 * loss of each step, the first step's reduced gradients and the last parameters (experts whole,
 * gathered over ep), and the routing statistics.
 */
import '../src/comm/kernels.js';
import type { ProcessGroup } from '../src/comm/process_group.js';
import { GPT } from '../src/nn/gpt.js';
import { bindParameters } from '../src/nn/module.js';
import { expertParallel, MoE } from '../src/nn/moe.js';
import { unshard } from '../src/nn/placement.js';
import { AdamW } from '../src/optim/adamw.js';
import { setThreads } from '../src/runtime/executor.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { gradStep } from '../src/train/step.js';
import { Rng } from '../src/tensor/random.js';
import type { Feed } from '../src/tensor/compile.js';

export interface MoeRankArgs { ep: number; steps: number; topK: number; capacityFactor: number }
export interface MoeRankResult { losses: number[]; params: Record<string, number[]>; dropped: number[]; perExpert: number[][]; firstGrads: Record<string, number[]> }

export const MOE_CONFIG = { vocab: 64, ctx: 8, d: 16, layers: 2, heads: 2 };
const ROWS = 4;

/** Rank r's batch of step t: ROWS rows of ctx + 1 tokens. */
export function batchOf(t: number, r: number): Feed[] {
  const rng = new Rng(1000 + 97 * t + r);
  const T = MOE_CONFIG.ctx;
  const [idx, tgt] = [new BigInt64Array(ROWS * T), new BigInt64Array(ROWS * T)];
  for (let i = 0; i < ROWS; i++) {
    const row = Array.from({ length: T + 1 }, () => BigInt(rng.int(MOE_CONFIG.vocab)));
    for (let j = 0; j < T; j++) { idx[i * T + j] = row[j]!; tgt[i * T + j] = row[j + 1]!; }
  }
  return [{ data: idx, shape: [ROWS, T], dtype: 'int64' }, { data: tgt, shape: [ROWS, T], dtype: 'int64' }];
}

export default async function rank(pg: ProcessGroup, a: MoeRankArgs): Promise<MoeRankResult> {
  setThreads(1);
  const gpt = new GPT({ ...MOE_CONFIG, moe: { experts: 4, topK: a.topK, every: 1, capacityFactor: a.capacityFactor } });
  // Ranks r and r + ep hold the same experts: ep groups are consecutive ranks.
  const ep = a.ep > 1 ? (a.ep === pg.size ? pg : await pg.split(Math.floor(pg.rank / a.ep))) : null;
  const edp = a.ep > 1 && a.ep < pg.size ? await pg.split(pg.rank % a.ep) : null;
  if (ep) expertParallel(gpt, { axis: 'ep', size: ep.size, index: ep.rank });
  const bound = bindParameters(gpt, { seed: 0 });
  const grads = FlatBuffer.zeros(bound.flat.layout, 'grads');
  const step = gradStep(bound, grads, (idx, tgt) => gpt.loss(idx!, tgt!), 'moe', ep ? { context: { groups: { ep } } } : {});
  const opt = new AdamW(bound.flat, { lr: 3e-3, eps: 1e-6, weightDecay: 0.1 });
  const moes = gpt.namedModules().filter(([, m]) => m instanceof MoE) as [string, MoE][];
  const experts = new Set(moes.flatMap(([p, m]) => (m.ep === null ? [] : ['w1', 'b1', 'w2', 'b2'].map((n) => `${p}.${n}`))));
  const expert = (name: string): boolean => experts.has(name);
  const declared = new Map(gpt.namedParameters());
  /** Every tensor of `buf` whole (expert shards gathered over ep). */
  const whole = async (buf: FlatBuffer<Float32Array>): Promise<Record<string, number[]>> => {
    const out: Record<string, number[]> = {};
    for (const s of buf.layout.slots) {
      const v = Float32Array.from(buf.view(s.name));
      if (!expert(s.name)) { out[s.name] = [...v]; continue; }
      const all = new Float32Array(v.length * ep!.size);
      await ep!.allGather(v, all).wait();
      const shards = Array.from({ length: ep!.size }, (_, i) => all.subarray(i * v.length, (i + 1) * v.length));
      const p = declared.get(s.name)!;
      out[s.name] = [...unshard(shards, p.shape, p.placement!)];
    }
    return out;
  };
  let firstGrads: Record<string, number[]> = {};
  const losses: number[] = [];
  const dropped: number[] = [];
  const perExpert: number[][] = [];
  for (let t = 0; t < a.steps; t++) {
    const l = Float32Array.of(await step(batchOf(t, pg.rank)));
    await pg.allReduce(l, 'mean').wait();
    losses.push(l[0]!);
    for (const s of bound.flat.layout.slots) {
      const g = grads.view(s.name);
      if (!expert(s.name)) { await pg.allReduce(g, 'mean').wait(); continue; }
      for (let i = 0; i < g.length; i++) g[i]! /= ep!.size;
      if (edp) await edp.allReduce(g, 'mean').wait();
    }
    if (t === 0) firstGrads = await whole(grads);
    await opt.step(grads);
    // The first MoE layer's statistics, summed over the ranks (tokens routed and kept) and averaged (dropped fraction).
    const st = Float32Array.from(bound.buffers.view(`${moes[0]![0]}.stats`));
    await pg.allReduce(st, 'sum').wait();
    perExpert.push([...st.subarray(0, 8)]);
    dropped.push(st[8]! / pg.size);
  }
  return { losses, params: await whole(bound.flat), dropped, perExpert, firstGrads };
}
