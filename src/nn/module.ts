/**
 * Modules: a tree of named parameters and children with train/eval modes and a state dict.
 *
 * A module declares its parameters (shape + initializer) when built; `bindParameters(model)`
 * then lays every parameter of the tree out in one flat buffer, in tree order, initializes them
 * from one seeded generator, and binds each to a zero-copy view. Optimizers, gradient buckets and
 * checkpoints all work on that flat buffer; `forward` code just reads `param.t`.
 */
import { FlatBuffer, Layout } from '../runtime/flat.js';
import type { FloatArray } from '../runtime/flat.js';
import { fmt } from '../ir/shape.js';
import { Rng } from '../tensor/random.js';
import { Tensor } from '../tensor/tensor.js';

/** Fills a parameter's view; `fanIn`/`fanOut` come from its shape. */
export type Init = (view: FloatArray, rng: Rng, shape: readonly number[]) => void;

export const init = {
  zeros: (): Init => (v) => v.fill(0),
  ones: (): Init => (v) => v.fill(1),
  constant: (c: number): Init => (v) => v.fill(c),
  /** N(0, std^2). */
  normal: (std: number): Init => (v, rng) => { for (let i = 0; i < v.length; i++) v[i] = rng.normal() * std; },
  /** U(-a, a) with a = 1/sqrt(fanIn) (PyTorch's Linear default). */
  uniformFanIn: (): Init => (v, rng, shape) => {
    const a = 1 / Math.sqrt(shape[0] ?? 1);
    for (let i = 0; i < v.length; i++) v[i] = (rng.uniform() * 2 - 1) * a;
  },
};

export class Parameter {
  private bound: Tensor | null = null;

  constructor(readonly shape: readonly number[], public init: Init) {}

  /** The parameter as a graph leaf over its flat-buffer view. */
  get t(): Tensor {
    if (this.bound === null) throw new Error(`Parameter of shape ${fmt(this.shape)} is not bound: call bindParameters(model) first`);
    return this.bound;
  }

  /** @internal */
  bind(t: Tensor): void { this.bound = t; }
}

export abstract class Module {
  training = true;
  private readonly ownParams = new Map<string, Parameter>();
  private readonly children = new Map<string, Module>();

  /** Declares a parameter of this module. */
  protected param(name: string, shape: readonly number[], initializer: Init): Parameter {
    if (this.ownParams.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is declared twice`);
    const p = new Parameter(shape, initializer);
    this.ownParams.set(name, p);
    return p;
  }

  /** Registers a child module under `name`. */
  protected child<M extends Module>(name: string, m: M): M {
    if (this.ownParams.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is declared twice`);
    this.children.set(name, m);
    return m;
  }

  /** Every parameter of the tree as [dotted name, parameter], own parameters first, then children in order. */
  namedParameters(prefix = ''): [string, Parameter][] {
    const out: [string, Parameter][] = [...this.ownParams].map(([n, p]) => [prefix + n, p]);
    for (const [n, c] of this.children) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  modules(): Module[] { return [this, ...[...this.children.values()].flatMap((c) => c.modules())]; }

  /** Sets train (true) or eval (false) mode on the whole tree. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  eval(): this { return this.train(false); }
}

/** A model's parameters, bound into one flat buffer. */
export interface BoundParameters<A extends FloatArray = Float32Array> {
  readonly flat: FlatBuffer<A>;
  /** Name -> graph leaf, in layout order. */
  readonly tensors: Record<string, Tensor>;
}

/**
 * Lays out, initializes (one Rng seeded with `seed`, tree order) and binds every parameter of
 * `model` to a view of one flat buffer.
 */
export function bindParameters(model: Module, opts?: { seed?: number; dtype?: 'float32'; label?: string }): BoundParameters<Float32Array>;
export function bindParameters(model: Module, opts: { seed?: number; dtype: 'float64'; label?: string }): BoundParameters<Float64Array>;
export function bindParameters(model: Module, opts: { seed?: number; dtype?: 'float32' | 'float64'; label?: string } = {}): BoundParameters<FloatArray> {
  const named = model.namedParameters();
  const layout = new Layout(named.map(([name, p]) => ({ name, shape: p.shape })));
  const flat: FlatBuffer<FloatArray> = opts.dtype === 'float64' ? FlatBuffer.zeros64(layout, opts.label ?? 'params') : FlatBuffer.zeros(layout, opts.label ?? 'params');
  const rng = new Rng(opts.seed ?? 0);
  const tensors: Record<string, Tensor> = {};
  for (const [name, p] of named) {
    p.init(flat.view(name), rng, p.shape);
    const t = new Tensor(flat.leaf(name));
    p.bind(t);
    tensors[name] = t;
  }
  return { flat, tensors };
}

/** Copies of every parameter by name (the state dict). */
export function stateDict(bound: BoundParameters<FloatArray>): Map<string, { shape: readonly number[]; data: FloatArray }> {
  return new Map(bound.flat.layout.slots.map((s) => [s.name, { shape: s.shape, data: bound.flat.view(s.name).slice() }]));
}

/**
 * Loads a state dict: every parameter must be present with its shape (errors name the tensor and
 * both shapes), and unknown names are errors unless `strict` is false.
 */
export function loadStateDict(bound: BoundParameters<FloatArray>, sd: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, strict = true): void {
  const layout = bound.flat.layout;
  for (const s of layout.slots) {
    const e = sd.get(s.name);
    if (!e) throw new Error(`loadStateDict: missing tensor '${s.name}' ${fmt(s.shape)}`);
    if (e.shape.length !== s.shape.length || e.shape.some((d, i) => d !== s.shape[i])) {
      throw new Error(`loadStateDict: tensor '${s.name}' has shape ${fmt(e.shape)}, the model expects ${fmt(s.shape)}`);
    }
  }
  if (strict) {
    const known = new Set(layout.slots.map((s) => s.name));
    const extra = [...sd.keys()].filter((k) => !known.has(k));
    if (extra.length) throw new Error(`loadStateDict: unexpected tensors ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`);
  }
  for (const s of layout.slots) bound.flat.view(s.name).set(sd.get(s.name)!.data);
}
