/**
 * Structured pruning: whole units (a CNN's conv channels and hidden neurons, a GPT's attention
 * heads and MLP neurons) ranked by the norm of their weights, the least important removed, and the
 * tensors physically sliced into a smaller model of the same family, so that the exported model
 * is smaller and faster (Deep Compression's prune -> fine-tune -> quantize, Han et al. 2016, with
 * structured rather than weight-level pruning).
 *
 * Importance of a unit (criterion 'l1' or 'l2': the sum of |w|, or the square root of the sum of
 * w^2, over the weights listed; 'gamma' for a CNN's channels):
 * - CNN channel c of a stage: with BatchNorm, by default its |gamma_c| (Network Slimming, Liu et
 *   al. 2017): BatchNorm divides the filter's scale out, so gamma is the channel's output scale.
 *   On the MNIST recipe with half of every stage removed, gamma kept 52.0% test accuracy before
 *   fine-tuning where the filters' L1 norm kept 13.2% (docs/prune.md). 'l1' / 'l2' (and the
 *   default without BatchNorm): its conv filter W[c, :, :, :] (Li et al. 2017, "Pruning Filters
 *   for Efficient ConvNets").
 * - CNN hidden neuron j: the first Linear's column j (its inputs) and the classifier's row j (its
 *   outputs); L1 under 'gamma'.
 * - GPT head h of a layer: its q, k and v columns of qkv and its rows of proj.
 * - GPT MLP neuron j of a layer: fc1's column j and fc2's row j.
 * Biases are not scored (they are sliced with their unit).
 *
 * Counts: a fraction r keeps max(1, round((1 - r) n)) units of each stage or layer; `heads` is a
 * count removed from every layer. A GPT keeps one `heads` and one `mlpHidden` for all its layers
 * (config.ts has one field each), so the same number is removed in each layer, each layer
 * choosing its own least important units.
 *
 * What is sliced (Linear weights are [in, out], conv weights [out, in, kh, kw]):
 * - CNN stage s: conv s's output channels (weight dim 0, bias), BatchNorm s's weight, bias,
 *   running mean and variance, conv s+1's input channels (weight dim 1); after the last stage the
 *   first Linear's input rows, channel-major as Flatten orders them: channel c covers rows
 *   c h w .. (c + 1) h w - 1. Hidden neurons: the first Linear's columns and bias, the
 *   classifier's rows.
 * - GPT layer l: qkv's columns s H hd + h hd + j (s = q, k, v) and bias, proj's rows h hd + j
 *   (the pruned model keeps hd as `headDim`); fc1's columns and bias, fc2's rows (`mlpHidden`).
 * With the removed units' weights set to zero (and, for a BatchNorm channel, gamma and beta) the
 * original model computes exactly what the pruned one does (test/prune_structured.test.ts).
 *
 * @example
 *   const r = pruneRun(cfg, ck.weights, null, { channels: 0.5 });
 *   // r.config.model.channels: [16, 32, 64]; r.weights: the sliced tensors; r.report.params
 */
import { GPT, gptWidths } from '../nn/gpt.js';
import type { GPTConfig } from '../nn/gpt.js';
import { Linear } from '../nn/layers.js';
import { bindParameters, loadStateDict, stateDict } from '../nn/module.js';
import type { Module } from '../nn/module.js';
import { BatchNorm2d, Conv2d, convNet } from '../nn/vision.js';
import type { ConvNetConfig } from '../nn/vision.js';
import type { RunConfig } from './config.js';
import { cnnConfig } from './run_model.js';
import { gptConfig } from './tasks/lm.js';

export const PRUNE_CRITERIA = ['l1', 'l2', 'gamma'] as const;
export type PruneCriterion = (typeof PRUNE_CRITERIA)[number];
/** The norms over weights ('gamma' scores BatchNorm channels only). */
type Norm = 'l1' | 'l2';

/** What to remove; each field is named as weft prune's flag (`channels` is `--channels`). */
export interface StructuredPruneOptions {
  /** CNN: fraction of every conv stage's channels removed, in (0, 1). */
  channels?: number;
  /** CNN: fraction of the hidden fully connected layer's neurons removed, in (0, 1). */
  hidden?: number;
  /** GPT: attention heads removed from every layer, an integer from 1 to heads - 1. */
  heads?: number;
  /** GPT: fraction of every MLP's neurons removed, in (0, 1). */
  neurons?: number;
  /**
   * Unit importance: 'l1' or 'l2', the norm of the unit's weights; 'gamma', a CNN's channels by
   * their BatchNorm |gamma| (its hidden neurons by L1). Default: 'gamma' for a CNN with
   * BatchNorm, else 'l1'.
   */
  criterion?: PruneCriterion;
}

/** A whole tensor as checkpoints hold it. */
export interface WholeTensor { readonly shape: readonly number[]; readonly data: ArrayLike<number> }
export type WholeTensors = ReadonlyMap<string, WholeTensor>;
/** A sliced tensor. */
export interface SlicedTensor { shape: number[]; data: Float32Array }

/** One stage's or layer's units: how many there were and which (their indices, ascending) remain. */
export interface UnitsKept { layer: string; unit: 'channels' | 'neurons' | 'heads'; before: number; after: number; kept: number[] }

export interface PruneReport {
  kind: 'cnn' | 'gpt';
  criterion: PruneCriterion;
  /** Trained parameters (not BatchNorm's running statistics), before and after. */
  params: { before: number; after: number };
  units: UnitsKept[];
}

export interface Pruned<C> { config: C; weights: Map<string, SlicedTensor>; report: PruneReport }

/** Thrown for options that do not fit the model; the message names the flag. */
export class PruneError extends Error {}

const size = (shape: readonly number[]): number => shape.reduce((a, e) => a * e, 1);

/** The whole tensors of `model`, after checking `weights` holds exactly them (names and shapes; loadStateDict's errors). */
function wholeTensors(model: Module, weights: WholeTensors): Map<string, { shape: readonly number[]; data: Float32Array }> {
  const bound = bindParameters(model);
  loadStateDict(bound, weights);
  // bindParameters' default dtype: float32 views of the bound buffer.
  return new Map([...stateDict(bound)].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }]));
}

const paramCount = (model: Module): number => model.namedParameters().reduce((a, [, p]) => a + size(p.shape), 0);

/** Per position along `axis`, the sum of |x| ('l1') or x^2 ('l2') over every other dim. */
function axisSums(t: WholeTensor, axis: number, criterion: Norm): Float64Array {
  const n = t.shape[axis]!;
  const inner = size(t.shape.slice(axis + 1));
  const out = new Float64Array(n);
  const d = t.data;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    const at = Math.floor(i / inner) % n;
    out[at] = out[at]! + (criterion === 'l1' ? Math.abs(v) : v * v);
  }
  return out;
}

/** Which positions along an axis a unit owns. */
type Positions = (unit: number) => readonly number[];
interface Part { t: WholeTensor; axis: number; positions: Positions }

const one: Positions = (u) => [u];
/** Unit u owns `block` consecutive positions from u * block (a flattened channel, a head's hd). */
const blockOf = (block: number): Positions => (u) => Array.from({ length: block }, (_, j) => u * block + j);
/** A head's q, k and v columns of qkv: s H hd + h hd + j. */
const qkvOf = (heads: number, hd: number): Positions => (h) => [0, 1, 2].flatMap((s) => blockOf(hd)(h).map((p) => s * heads * hd + p));

/** Importance of each of `units` units: the criterion's norm over the weights of `parts`. */
function unitImportance(units: number, parts: readonly Part[], criterion: Norm): Float64Array {
  const score = new Float64Array(units);
  for (const p of parts) {
    const sums = axisSums(p.t, p.axis, criterion);
    for (let u = 0; u < units; u++) for (const i of p.positions(u)) score[u] = score[u]! + sums[i]!;
  }
  if (criterion === 'l2') for (let u = 0; u < units; u++) score[u] = Math.sqrt(score[u]!);
  return score;
}

/** The `k` most important units, ascending by index (ties: the lower index stays). */
export function topUnits(score: ArrayLike<number>, k: number): number[] {
  const order = Array.from({ length: score.length }, (_, i) => i).sort((a, b) => score[b]! - score[a]! || a - b);
  return order.slice(0, k).sort((a, b) => a - b);
}

/** Units a fraction `r` of `n` removed leaves: max(1, round((1 - r) n)). */
export const keepCount = (n: number, r: number): number => Math.max(1, Math.round(n * (1 - r)));

/** `t` with only the positions `keep` along `axis`. */
export function selectAxis(t: WholeTensor, axis: number, keep: readonly number[]): SlicedTensor {
  const n = t.shape[axis]!;
  const inner = size(t.shape.slice(axis + 1));
  const outer = size(t.shape.slice(0, axis));
  const data = new Float32Array(outer * keep.length * inner);
  const src = t.data;
  let at = 0;
  for (let o = 0; o < outer; o++) {
    for (const k of keep) {
      const from = (o * n + k) * inner;
      for (let j = 0; j < inner; j++) data[at++] = src[from + j]!;
    }
  }
  const shape = [...t.shape];
  shape[axis] = keep.length;
  return { shape, data };
}

const expand = (units: readonly number[], positions: Positions): number[] => units.flatMap((u) => [...positions(u)]);

function fraction(v: number | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!(Number.isFinite(v) && v > 0 && v < 1)) throw new PruneError(`${flag} must be a fraction of units to remove, in (0, 1), got ${v}`);
  return v;
}

/** Paths of a model's modules (their parameters are `<path>.w`, `<path>.b`, ...). */
const pathsOf = (model: Module): Map<Module, string> => new Map(model.namedModules().map(([p, m]) => [m, p]));

/**
 * The convNet of `c` with a fraction `o.channels` of every stage's channels (and `o.hidden` of the
 * hidden layer's neurons) removed: the smaller config, its sliced tensors and what was kept.
 */
export function pruneConvNet(c: ConvNetConfig, weights: WholeTensors, o: StructuredPruneOptions): Pruned<ConvNetConfig> {
  for (const flag of ['heads', 'neurons'] as const) if (o[flag] !== undefined) throw new PruneError(`--${flag} prunes a GPT; this is a CNN (use --channels, --hidden)`);
  const rc = fraction(o.channels, '--channels');
  const rh = fraction(o.hidden, '--hidden');
  if (rc === undefined && rh === undefined) throw new PruneError('nothing to prune: give --channels and/or --hidden');
  if (rh !== undefined && c.hidden === 0) throw new PruneError('--hidden: this CNN has no hidden fully connected layer (model.hidden is 0)');
  const criterion = o.criterion ?? (c.batchNorm ? 'gamma' : 'l1');
  if (criterion === 'gamma' && !c.batchNorm) throw new PruneError("--criterion gamma scores channels by their BatchNorm scale; this CNN has no BatchNorm (model.batchNorm is false): use l1 or l2");
  const norm: Norm = criterion === 'gamma' ? 'l1' : criterion;
  const model = convNet(c);
  const w = wholeTensors(model, weights);
  const path = pathsOf(model);
  const name = (m: Module, p: string): string => `${path.get(m)}.${p}`;
  const get = (m: Module, p: string): WholeTensor => w.get(name(m, p))!;
  const convs = model.layers.filter((l): l is Conv2d => l instanceof Conv2d);
  const bns = model.layers.filter((l): l is BatchNorm2d => l instanceof BatchNorm2d);
  const linears = model.layers.filter((l): l is Linear => l instanceof Linear);
  const out = new Map<string, SlicedTensor>([...w].map(([k, t]) => [k, { shape: [...t.shape], data: t.data }]));
  const slice = (m: Module, p: string, axis: number, keep: readonly number[]): void => {
    const k = name(m, p);
    out.set(k, selectAxis(out.get(k)!, axis, keep));
  };
  const units: UnitsKept[] = [];
  const channels: number[] = [];
  let prev: number[] | null = null;
  convs.forEach((conv, s) => {
    const n = conv.outChannels;
    const kept = rc === undefined
      ? Array.from({ length: n }, (_, i) => i)
      : topUnits(unitImportance(n, [criterion === 'gamma' ? { t: get(bns[s]!, 'w'), axis: 0, positions: one } : { t: get(conv, 'w'), axis: 0, positions: one }], norm), keepCount(n, rc));
    slice(conv, 'w', 0, kept);
    if (conv.bias) slice(conv, 'b', 0, kept);
    if (prev !== null) slice(conv, 'w', 1, prev);
    if (c.batchNorm) for (const p of ['w', 'b', 'running_mean', 'running_var']) slice(bns[s]!, p, 0, kept);
    units.push({ layer: path.get(conv)!, unit: 'channels', before: n, after: kept.length, kept });
    channels.push(kept.length);
    prev = kept;
  });
  // Flatten is channel-major: the first Linear's rows c hw .. (c + 1) hw - 1 read channel c.
  const [first] = linears as [Linear, ...Linear[]];
  const hw = first.inFeatures / convs.at(-1)!.outChannels;
  slice(first, 'w', 0, expand(prev!, blockOf(hw)));
  let hidden = c.hidden;
  if (rh !== undefined) {
    const next = linears[1]!;
    const kept = topUnits(unitImportance(c.hidden, [{ t: get(first, 'w'), axis: 1, positions: one }, { t: get(next, 'w'), axis: 0, positions: one }], norm), keepCount(c.hidden, rh));
    slice(first, 'w', 1, kept);
    slice(first, 'b', 0, kept);
    slice(next, 'w', 0, kept);
    units.push({ layer: path.get(first)!, unit: 'neurons', before: c.hidden, after: kept.length, kept });
    hidden = kept.length;
  }
  const config: ConvNetConfig = { ...c, channels, hidden };
  const after = convNet(config);
  loadStateDict(bindParameters(after), out); // the sliced tensors are exactly the smaller model's
  return { config, weights: out, report: { kind: 'cnn', criterion, params: { before: paramCount(model), after: paramCount(after) }, units } };
}

/**
 * The GPT of `c` with `o.heads` heads and a fraction `o.neurons` of the MLP neurons removed from
 * every layer: the smaller config (`heads`, `headDim`, `mlpHidden`), its sliced tensors and what
 * each layer kept. Mixture-of-experts GPTs are refused.
 */
export function pruneGpt(c: GPTConfig, weights: WholeTensors, o: StructuredPruneOptions): Pruned<GPTConfig> {
  for (const flag of ['channels', 'hidden'] as const) if (o[flag] !== undefined) throw new PruneError(`--${flag} prunes a CNN; this is a GPT (use --heads, --neurons)`);
  if (c.moe !== undefined) throw new PruneError('weft prune: a mixture-of-experts GPT (model.moe.experts > 0) cannot be pruned structurally yet (its experts would need pruning one by one)');
  const K = o.heads;
  if (K !== undefined) {
    if (!Number.isInteger(K) || K < 1) throw new PruneError(`--heads must be a positive integer (heads removed from every layer), got ${K}`);
    if (K >= c.heads) throw new PruneError(`--heads ${K} would remove every head: the model has ${c.heads} per layer (at most ${c.heads - 1} can go)`);
  }
  const rn = fraction(o.neurons, '--neurons');
  if (K === undefined && rn === undefined) throw new PruneError('nothing to prune: give --heads and/or --neurons');
  const criterion = o.criterion ?? 'l1';
  if (criterion === 'gamma') throw new PruneError('--criterion gamma scores a CNN\'s BatchNorm channels; a GPT has none (use l1 or l2)');
  const model = new GPT(c);
  const w = wholeTensors(model, weights);
  const path = pathsOf(model);
  const { headDim: hd, mlpHidden: M } = gptWidths(c);
  const H = c.heads;
  const out = new Map<string, SlicedTensor>([...w].map(([k, t]) => [k, { shape: [...t.shape], data: t.data }]));
  const name = (m: Module, p: string): string => `${path.get(m)}.${p}`;
  const slice = (m: Module, p: string, axis: number, keep: readonly number[]): void => {
    const k = name(m, p);
    out.set(k, selectAxis(out.get(k)!, axis, keep));
  };
  const units: UnitsKept[] = [];
  for (const blk of model.blocks) {
    const layer = path.get(blk)!;
    const { qkv, proj } = blk.attn;
    if (K !== undefined) {
      const kept = topUnits(unitImportance(H, [
        { t: w.get(name(qkv, 'w'))!, axis: 1, positions: qkvOf(H, hd) },
        { t: w.get(name(proj, 'w'))!, axis: 0, positions: blockOf(hd) },
      ], criterion), H - K);
      // q of the kept heads, then k, then v: the [3, heads, hd] order attend() reshapes to.
      const cols = [0, 1, 2].flatMap((s) => expand(kept, blockOf(hd)).map((p) => s * H * hd + p));
      slice(qkv, 'w', 1, cols);
      slice(qkv, 'b', 0, cols);
      slice(proj, 'w', 0, expand(kept, blockOf(hd)));
      units.push({ layer, unit: 'heads', before: H, after: kept.length, kept });
    }
    if (rn !== undefined) {
      const { fc1, fc2 } = blk.mlp as { fc1: Linear; fc2: Linear };
      const kept = topUnits(unitImportance(M, [{ t: w.get(name(fc1, 'w'))!, axis: 1, positions: one }, { t: w.get(name(fc2, 'w'))!, axis: 0, positions: one }], criterion), keepCount(M, rn));
      slice(fc1, 'w', 1, kept);
      slice(fc1, 'b', 0, kept);
      slice(fc2, 'w', 0, kept);
      units.push({ layer, unit: 'neurons', before: M, after: kept.length, kept });
    }
  }
  const config: GPTConfig = {
    ...c,
    ...(K !== undefined ? { heads: H - K, headDim: hd } : {}),
    ...(rn !== undefined ? { mlpHidden: keepCount(M, rn) } : {}),
  };
  const after = new GPT(config);
  loadStateDict(bindParameters(after), out);
  return { config, weights: out, report: { kind: 'gpt', criterion, params: { before: paramCount(model), after: paramCount(after) }, units } };
}

/**
 * A run's model (its config `cfg` and checkpoint `weights`) pruned by `o`: the run config with the
 * smaller `model.*` (channels, hidden; heads, headDim, mlpHidden), the sliced tensors and the
 * report. `vocab` is the GPT's vocabulary size (its tokenizer's; ignored for a CNN).
 */
export function pruneRun(cfg: RunConfig, weights: WholeTensors, vocab: number | null, o: StructuredPruneOptions): Pruned<RunConfig> {
  const config = structuredClone(cfg);
  if (cfg.model.kind === 'cnn') {
    const r = pruneConvNet(cnnConfig(cfg), weights, o);
    config.model.channels = [...r.config.channels];
    config.model.hidden = r.config.hidden;
    return { ...r, config };
  }
  if (vocab === null) throw new PruneError('pruneRun: a GPT run needs its vocabulary size (its tokenizer\'s)');
  if (cfg.model.moe.experts > 0) throw new PruneError(`weft prune: a mixture-of-experts GPT (model.moe.experts = ${cfg.model.moe.experts}) cannot be pruned structurally yet`);
  const r = pruneGpt(gptConfig(cfg, vocab), weights, o);
  config.model.heads = r.config.heads;
  config.model.headDim = r.config.headDim ?? 0;
  config.model.mlpHidden = r.config.mlpHidden ?? 0;
  return { ...r, config };
}
