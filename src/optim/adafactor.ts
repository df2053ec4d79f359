/**
 * Adafactor (Shazeer & Stern 2018), step for step as torch.optim.Adafactor (PyTorch 2.5), with
 * an optional first moment as in the paper (and HF transformers). At step t = 1, 2, ... for each
 * tensor p with gradient g:
 *
 *   beta2' = t^decay (decay -0.8)           rho = min(lr, 1 / sqrt(t))
 *   alpha  = max(eps2, RMS(p)) rho          p <- p (1 - lr wd)            (decoupled decay)
 *   matrices [.., n, m] (factored):  r <- r + beta2' (mean_cols(g^2) - r)   (n values)
 *                                    c <- c + beta2' (mean_rows(g^2) - c)   (m values)
 *                                    v  = r c^T / max(mean(r), eps1)
 *   vectors:                         v <- v + beta2' (g^2 - v)
 *   u = g / sqrt(max(v, eps1^2))     u <- u / max(1, RMS(u) / d)           (update clipping)
 *   with beta1:  m <- beta1 m + (1 - beta1) u,  u = m
 *   p <- p - alpha u
 *
 * A matrix keeps n + m second-moment values instead of AdamW's 2 n m. Each tensor's update is one
 * compiled graph (one per distinct shape), its per-tensor scalars (RMS, norms) computed inside it.
 *
 * @example
 *   const opt = new Adafactor(params, { lr: 1e-2 });
 *   await opt.step(grads);
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import { compileProgram, runProgram } from '../runtime/executor.js';
import type { Program } from '../runtime/executor.js';
import type { FlatBuffer, FloatArray, Slot } from '../runtime/flat.js';
import { profiler } from '../runtime/profiler.js';
import { beginStep } from './clip.js';
import type { StepScaling } from './clip.js';
import type { StepInfo } from './adamw.js';
import { dtypeOf, input, zerosLike } from './common.js';

export interface AdafactorConfig {
  /** The largest relative step (rho = min(lr, 1/sqrt(t))). Default 1e-2 (torch's). */
  lr?: number;
  /** Exponent of the second-moment decay: 1 - beta2_t = t^decay. Default -0.8. */
  decay?: number;
  /** Floor of the second-moment estimate (squared) and of mean(r). Default float32's epsilon (torch: finfo.eps). */
  eps1?: number;
  /** Floor of the parameter RMS in the relative step. Default 1e-3. */
  eps2?: number;
  /** Update clipping threshold: u / max(1, RMS(u) / d). Default 1. */
  d?: number;
  /** First-moment decay; 0 (default) keeps no first moment. */
  beta1?: number;
  /** Decoupled weight decay: p <- p (1 - lr wd). Default 0. */
  weightDecay?: number;
  /** Global-norm gradient clipping before the update. Off if absent. */
  clipNorm?: number;
  /** The global gradient norm when this buffer is not the whole model (tensor parallel). */
  gradNorm?: (grads: FloatArray) => Promise<number>;
}

/** One tensor's optimizer state: factored (row, col) for matrices, full (v) for vectors; m with beta1. */
interface TensorState { row: FloatArray | null; col: FloatArray | null; v: FloatArray | null; m: FloatArray | null }

/** Factored when the tensor has two dims or more (over its last two). */
const factored = (shape: readonly number[]): boolean => shape.length >= 2;

export class Adafactor<A extends FloatArray = FloatArray> {
  t = 0;
  lr: number;
  readonly decay: number;
  readonly eps1: number;
  readonly eps2: number;
  readonly d: number;
  readonly beta1: number;
  readonly weightDecay: number;
  readonly clipNorm: number | null;
  private readonly gradNorm: ((g: FloatArray) => Promise<number>) | null;
  private readonly state = new Map<string, TensorState>();
  private readonly programs = new Map<string, Promise<Program>>();

  constructor(readonly params: FlatBuffer<A>, cfg: AdafactorConfig = {}) {
    this.lr = cfg.lr ?? 1e-2;
    this.decay = cfg.decay ?? -0.8;
    this.eps1 = cfg.eps1 ?? 2 ** -23;
    this.eps2 = cfg.eps2 ?? 1e-3;
    this.d = cfg.d ?? 1;
    this.beta1 = cfg.beta1 ?? 0;
    this.weightDecay = cfg.weightDecay ?? 0;
    this.clipNorm = cfg.clipNorm ?? null;
    this.gradNorm = cfg.gradNorm ?? null;
    const bad = (k: string, v: unknown, want: string): never => { throw new Error(`Adafactor: ${k} must be ${want}, got ${String(v)}`); };
    if (!(this.lr >= 0)) bad('lr', this.lr, 'a non-negative number');
    if (!(this.decay < 0)) bad('decay', this.decay, 'negative (1 - beta2_t = t^decay)');
    if (!(this.beta1 >= 0 && this.beta1 < 1)) bad('beta1', this.beta1, 'in [0, 1)');
    if (!(this.d > 0)) bad('d', this.d, 'positive');
    if (!(this.weightDecay >= 0)) bad('weightDecay', this.weightDecay, 'a non-negative number');
    if (this.clipNorm !== null && !(this.clipNorm > 0)) bad('clipNorm', this.clipNorm, 'a positive number');
    let bytes = 0;
    for (const s of params.layout.slots) {
      const z = (n: number): FloatArray => zerosLike(params.data, n);
      // Row statistics per row of the last two dims, column statistics per column of each matrix.
      const [rows, cols] = factored(s.shape) ? [s.size / s.shape.at(-1)!, s.size / s.shape.at(-2)!] : [0, 0];
      const st: TensorState = factored(s.shape)
        ? { row: z(rows), col: z(cols), v: null, m: this.beta1 > 0 ? z(s.size) : null }
        : { row: null, col: null, v: z(s.size), m: this.beta1 > 0 ? z(s.size) : null };
      for (const a of Object.values(st)) if (a) bytes += (a as FloatArray).byteLength;
      this.state.set(s.name, st);
    }
    profiler.hold('adafactor', bytes);
  }

  /** Bytes of optimizer state (second moments, and first moments with beta1). */
  get stateBytes(): number {
    let n = 0;
    for (const st of this.state.values()) for (const a of Object.values(st)) if (a) n += (a as FloatArray).byteLength;
    return n;
  }

  /** One step from `grads`; `lr` overrides the relative step's cap for this step (schedules). */
  async step(grads: FlatBuffer<A>, lr = this.lr, scaling: StepScaling = {}): Promise<StepInfo> {
    const { s, norm, gradMult } = await beginStep('Adafactor', this.params, grads, lr, this.gradNorm, this.clipNorm, scaling);
    const t = this.t + 1;
    const scalars = [
      s(gradMult), s(t ** this.decay), s(Math.min(lr, 1 / Math.sqrt(t))),
      s(this.eps2), s(this.eps1), s(this.eps1 * this.eps1), s(1 - lr * this.weightDecay), s(this.d), s(this.beta1), s(1 - this.beta1),
    ];
    for (const slot of this.params.layout.slots) {
      const st = this.state.get(slot.name)!;
      const p = this.params.view(slot.name);
      const g = grads.view(slot.name);
      const moments = [st.row, st.col, st.v, st.m].filter((a): a is FloatArray => a !== null);
      const program = await this.program(slot, dtypeOf(this.params.data));
      const out = await runProgram(program, 'adafactor', [p, g, ...moments, ...scalars].map((data) => ({ data })));
      p.set(out[0] as FloatArray);
      moments.forEach((a, i) => a.set(out[i + 1] as FloatArray));
    }
    this.t = t;
    return { gradNorm: norm };
  }

  private program(slot: Slot, dtype: 'float32' | 'float64'): Promise<Program> {
    const key = `${dtype}[${slot.shape.join(',')}]`;
    let p = this.programs.get(key);
    if (p === undefined) {
      const { inputs, outputs } = adafactorGraph(dtype, slot.shape, this.beta1 > 0);
      p = compileProgram(outputs, inputs);
      this.programs.set(key, p);
    }
    return p;
  }

  /** The moments by checkpoint name: 'row.<p>', 'col.<p>', 'v.<p>', 'm.<p>' (views). */
  namedTensors(): Map<string, { shape: readonly number[]; data: FloatArray }> {
    const out = new Map<string, { shape: readonly number[]; data: FloatArray }>();
    for (const [k, st] of this.state) for (const [kind, a] of Object.entries(st)) if (a) out.set(`${kind}.${k}`, { shape: [(a as FloatArray).length], data: a as FloatArray });
    return out;
  }

  /** Restores `t` and moments by checkpoint name (as `namedTensors`), naming what is missing. */
  loadState(t: number, tensors: ReadonlyMap<string, { data: ArrayLike<number> }>, file = 'optimizer state'): void {
    if (!Number.isInteger(t) || t < 0) throw new Error(`Adafactor.loadState: t must be a non-negative integer, got ${t}`);
    for (const [name, a] of this.namedTensors()) {
      const src = tensors.get(name);
      if (!src) throw new Error(`${file}: missing tensor '${name}'`);
      if (src.data.length !== a.data.length) throw new Error(`${file}: tensor '${name}' has ${src.data.length} elements, expected ${a.data.length}`);
      a.data.set(src.data);
    }
    this.t = t;
  }
}

/**
 * One tensor's update. Inputs: p, g, [row, col] or [v], [m], then the scalars clip, beta2' =
 * t^decay, rho, eps2, eps1, eps1^2, decay = 1 - lr wd, d, beta1, 1 - beta1. Outputs: p, the
 * moments in input order.
 */
function adafactorGraph(dtype: 'float32' | 'float64', shape: readonly number[], firstMoment: boolean): { inputs: Value[]; outputs: Value[] } {
  const vec = (name: string, len: number): Value => input(dtype, len, name);
  const sc = (name: string): Value => input(dtype, null, name);
  const n = shape.reduce((a, e) => a * e, 1);
  const fact = factored(shape);
  const [p, g0] = [vec('p', n), vec('g', n)];
  const rows = fact ? n / shape.at(-1)! : 0;
  const cols = fact ? shape.at(-1)! : 0;
  const inner = fact ? shape.at(-2)! : 0;
  const outer = fact ? rows / inner : 0;
  const row = fact ? vec('row', rows) : null;
  const col = fact ? vec('col', outer * cols) : null;
  const v = fact ? null : vec('v', n);
  const m = firstMoment ? vec('m', n) : null;
  const [clip, b2, rho, eps2, eps1, eps1sq, decay, d, beta1, omb1] =
    ['clip', 'beta2', 'rho', 'eps2', 'eps1', 'eps1_sq', 'decay', 'd', 'beta1', 'one_minus_beta1'].map(sc) as Value[] as [Value, Value, Value, Value, Value, Value, Value, Value, Value, Value];
  const lerp = (a: Value, target: Value): Value => b.add(a, b.mul(b.sub(target, a), b2!));
  const g = b.mul(g0, clip);
  const g2 = b.mul(g, g);
  let est: Value;
  const outs: Value[] = [];
  const floor = (x: Value, lo: Value): Value => b.where(b.greater(x, lo), x, lo);
  if (fact) {
    // [outer, inner, cols]: row means over cols -> [outer * inner]; col means over inner -> [outer * cols].
    const g3 = b.reshape(g2, [outer, inner, cols]);
    const r2 = lerp(row!, b.reshape(b.reduceMean(g3, [2], false), [rows]));
    const c2 = lerp(col!, b.reshape(b.reduceMean(g3, [1], false), [outer * cols]));
    const r3 = b.reshape(r2, [outer, inner, 1]);
    const c3 = b.reshape(c2, [outer, 1, cols]);
    const meanR = b.reduceMean(r3, [1], true);
    est = b.reshape(b.div(b.mul(r3, c3), floor(meanR, eps1!)), [n]);
    outs.push(r2, c2);
  } else {
    const v2 = lerp(v!, g2);
    est = v2;
    outs.push(v2);
  }
  let u = b.mul(g, b.reciprocal(b.sqrt(floor(est, eps1sq!))));
  const rms = (x: Value): Value => b.sqrt(b.reduceMean(b.mul(x, x), [0], false));
  const one = b.scalarLike(1, u);
  u = b.div(u, floor(b.div(rms(u), d!), one));
  if (m) {
    const m2 = b.add(b.mul(m, beta1!), b.mul(u, omb1!));
    outs.push(m2);
    u = m2;
  }
  const alpha = b.mul(floor(rms(p), eps2!), rho!);
  const p2 = b.sub(b.mul(p, decay!), b.mul(alpha, u));
  const inputs = [p, g0, ...(fact ? [row!, col!] : [v!]), ...(m ? [m] : []), clip, b2, rho, eps2, eps1, eps1sq, decay, d, beta1, omb1];
  return { inputs, outputs: [p2, ...outs] };
}
