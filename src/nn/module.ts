/**
 * Modules: a tree of named parameters and children with train/eval modes and a state dict.
 *
 * A module declares its parameters (shape + initializer) when built; `bindParameters(model)`
 * then lays every parameter of the tree out in one flat buffer, in tree order, initializes them
 * from one seeded generator, and binds each to a zero-copy view. Optimizers, gradient buckets and
 * checkpoints all work on that flat buffer; `forward` code just reads `param.t`.
 *
 * Buffers are the rest of a module's state (BatchNorm's running statistics): not trained, not
 * decayed, but checkpointed, and updated by the forward pass itself. Forward code reads `buf.t`
 * and, in training mode, records the next value with `buf.update(tensor)` (lazy, like everything
 * else, as MLX's BatchNorm assigns its running stats). A training step (`gradStep`, DDP) traces the
 * forward, returns every recorded update as an extra output of its one program, and writes it into
 * the buffer after the run, so the next step reads the new statistics.
 */
import { FlatBuffer, Layout } from '../runtime/flat.js';
import type { FloatArray, Slot } from '../runtime/flat.js';
import { fmt, numel } from '../ir/shape.js';
import { localShape, shard } from './placement.js';
import type { Placement } from './placement.js';
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

/** A declared tensor of a module (shape + initializer), bound by `bindParameters` to a flat-buffer view. */
abstract class Declared {
  private bound: Tensor | null = null;
  /** What it is, for errors. */
  protected abstract readonly what: string;

  constructor(readonly shape: readonly number[], public init: Init) {}

  /** The tensor as a graph leaf over its flat-buffer view. */
  get t(): Tensor {
    if (this.bound === null) throw new Error(`${this.what} of shape ${fmt(this.shape)} is not bound: call bindParameters(model) first`);
    return this.bound;
  }

  /** @internal */
  bind(t: Tensor): void { this.bound = t; }
}

/** A trained tensor. `shape` is the whole tensor's; a sharded one holds `localShape(shape, placement)`. */
export class Parameter extends Declared {
  protected readonly what = 'Parameter';
  /** Where the parameter lies on a mesh axis (set by a parallel plan before binding); null: replicated. */
  placement: Placement | null = null;
}

/** Non-trained module state (running statistics), bound to a view of the model's buffer block. */
export class ModuleBuffer extends Declared {
  protected readonly what = 'buffer';
  /** The value recorded by the last traced forward in training mode, taken by the step that traced it. */
  pending: Tensor | null = null;

  /** Records the buffer's next value (applied after the step's program runs). */
  update(next: Tensor): void {
    if (next.shape.length !== this.shape.length || next.shape.some((d, i) => d !== this.shape[i])) {
      throw new Error(`buffer update: value of shape ${fmt(next.shape)} for a buffer of shape ${fmt(this.shape)}`);
    }
    this.pending = next;
  }
}

export abstract class Module {
  training = true;
  private readonly ownParams = new Map<string, Parameter>();
  private readonly ownBuffers = new Map<string, ModuleBuffer>();
  private readonly children = new Map<string, Module>();

  /** Declares a parameter of this module. */
  protected param(name: string, shape: readonly number[], initializer: Init): Parameter {
    this.unique(name);
    const p = new Parameter(shape, initializer);
    this.ownParams.set(name, p);
    return p;
  }

  /** Declares a buffer (non-trained state, e.g. running statistics) of this module. */
  protected buffer(name: string, shape: readonly number[], initializer: Init): ModuleBuffer {
    this.unique(name);
    const buf = new ModuleBuffer(shape, initializer);
    this.ownBuffers.set(name, buf);
    return buf;
  }

  /** Registers a child module under `name`. */
  protected child<M extends Module>(name: string, m: M): M {
    this.unique(name);
    this.children.set(name, m);
    return m;
  }

  private unique(name: string): void {
    if (this.ownParams.has(name) || this.ownBuffers.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is declared twice`);
  }

  /** Every parameter of the tree as [dotted name, parameter], own parameters first, then children in order. */
  namedParameters(prefix = ''): [string, Parameter][] {
    const out: [string, Parameter][] = [...this.ownParams].map(([n, p]) => [prefix + n, p]);
    for (const [n, c] of this.children) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Every buffer of the tree as [dotted name, buffer], in the same order as `namedParameters`. */
  namedBuffers(prefix = ''): [string, ModuleBuffer][] {
    const out: [string, ModuleBuffer][] = [...this.ownBuffers].map(([n, p]) => [prefix + n, p]);
    for (const [n, c] of this.children) out.push(...c.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  /** Every module of the tree as [dotted path, module], this one as '' (PyTorch's named_modules). */
  namedModules(prefix = ''): [string, Module][] {
    return [[prefix.replace(/\.$/, ''), this], ...[...this.children].flatMap(([n, c]) => c.namedModules(`${prefix}${n}.`))];
  }

  modules(): Module[] { return [this, ...[...this.children.values()].flatMap((c) => c.modules())]; }

  /** Sets train (true) or eval (false) mode on the whole tree. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  eval(): this { return this.train(false); }
}

/** A model's parameters, bound into one flat buffer, and its buffers, bound into another. */
export interface BoundParameters<A extends FloatArray = Float32Array> {
  readonly flat: FlatBuffer<A>;
  /** Name -> graph leaf, in layout order. */
  readonly tensors: Record<string, Tensor>;
  /** The buffers' block (an empty layout when the model has none): checkpointed, never optimized. */
  readonly buffers: FlatBuffer<A>;
  /** Name -> buffer, in the buffer block's layout order. */
  readonly bufferList: readonly (readonly [string, ModuleBuffer])[];
}

/**
 * Lays out, initializes (one Rng seeded with `seed`, tree order) and binds every parameter of
 * `model` to a view of one flat buffer.
 */
export function bindParameters(model: Module, opts?: { seed?: number; dtype?: 'float32'; label?: string }): BoundParameters<Float32Array>;
export function bindParameters(model: Module, opts: { seed?: number; dtype: 'float64'; label?: string }): BoundParameters<Float64Array>;
export function bindParameters(model: Module, opts: { seed?: number; dtype?: 'float32' | 'float64'; label?: string } = {}): BoundParameters<FloatArray> {
  const named = model.namedParameters();
  const layout = new Layout(named.map(([name, p]) => ({ name, shape: localShape(p.shape, p.placement) })));
  const flat: FlatBuffer<FloatArray> = opts.dtype === 'float64' ? FlatBuffer.zeros64(layout, opts.label ?? 'params') : FlatBuffer.zeros(layout, opts.label ?? 'params');
  const rng = new Rng(opts.seed ?? 0);
  const tensors: Record<string, Tensor> = {};
  for (const [name, p] of named) {
    if (p.placement === null) p.init(flat.view(name), rng, p.shape);
    else {
      // Every layout draws the whole tensor from the same generator and keeps its shard, so any
      // number of shards starts from the single-device initialization.
      const whole = opts.dtype === 'float64' ? new Float64Array(numel(p.shape)) : new Float32Array(numel(p.shape));
      p.init(whole, rng, p.shape);
      flat.view(name).set(shard(whole, p.shape, p.placement));
    }
    const t = new Tensor(flat.leaf(name));
    p.bind(t);
    tensors[name] = t;
  }
  // Buffers after every parameter, so adding them to a model leaves its parameter init unchanged.
  const bufs = model.namedBuffers();
  const bl = new Layout(bufs.map(([name, x]) => ({ name, shape: x.shape })));
  const buffers: FlatBuffer<FloatArray> = opts.dtype === 'float64' ? FlatBuffer.zeros64(bl, 'buffers') : FlatBuffer.zeros(bl, 'buffers');
  for (const [name, x] of bufs) {
    x.init(buffers.view(name), rng, x.shape);
    x.bind(new Tensor(buffers.leaf(name)));
    x.pending = null;
  }
  return { flat, tensors, buffers, bufferList: bufs };
}

/** The slots of parameters and buffers together, with the block each lives in. */
function entries(bound: BoundParameters<FloatArray>): { slot: Slot; block: FlatBuffer<FloatArray> }[] {
  return [
    ...bound.flat.layout.slots.map((slot) => ({ slot, block: bound.flat })),
    ...bound.buffers.layout.slots.map((slot) => ({ slot, block: bound.buffers })),
  ];
}

/** Copies of every parameter and buffer by name (the state dict). */
export function stateDict(bound: BoundParameters<FloatArray>): Map<string, { shape: readonly number[]; data: FloatArray }> {
  return new Map(entries(bound).map(({ slot: s, block }) => [s.name, { shape: s.shape, data: block.view(s.name).slice() }]));
}

/**
 * Takes the buffer updates the last traced forward recorded, in buffer order, clearing them. A
 * step program returns these as extra outputs and hands the results to `applyBufferUpdates`.
 */
export function takeBufferUpdates(bound: BoundParameters<FloatArray>): { names: string[]; values: Tensor[] } {
  const names: string[] = [];
  const values: Tensor[] = [];
  for (const [name, x] of bound.bufferList) {
    if (x.pending === null) continue;
    names.push(name);
    values.push(x.pending);
    x.pending = null;
  }
  return { names, values };
}

/** Writes a step's buffer outputs (in `names` order) into the buffer block. */
export function applyBufferUpdates(bound: BoundParameters<FloatArray>, names: readonly string[], values: readonly ArrayLike<number>[]): void {
  names.forEach((n, i) => bound.buffers.write(bound.buffers.layout.slot(n), values[i]!));
}

/**
 * Loads a state dict: every parameter must be present with its shape (errors name the tensor and
 * both shapes), and unknown names are errors unless `strict` is false.
 */
export function loadStateDict(bound: BoundParameters<FloatArray>, sd: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, strict = true): void {
  const all = entries(bound);
  for (const { slot: s } of all) {
    const e = sd.get(s.name);
    if (!e) throw new Error(`loadStateDict: missing tensor '${s.name}' ${fmt(s.shape)}`);
    if (e.shape.length !== s.shape.length || e.shape.some((d, i) => d !== s.shape[i])) {
      throw new Error(`loadStateDict: tensor '${s.name}' has shape ${fmt(e.shape)}, the model expects ${fmt(s.shape)}`);
    }
  }
  if (strict) {
    const known = new Set(all.map((e) => e.slot.name));
    const extra = [...sd.keys()].filter((k) => !known.has(k));
    if (extra.length) throw new Error(`loadStateDict: unexpected tensors ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`);
  }
  for (const { slot: s, block } of all) block.view(s.name).set(sd.get(s.name)!.data);
}
