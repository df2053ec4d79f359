import type { DType } from './dtype.js';
import { Node, Value } from './graph.js';
import type { AttrValue, Attrs } from './graph.js';
import type { Dim } from './shape.js';
import { fmt } from './shape.js';

export type AttrKind = 'int' | 'float' | 'string' | 'ints' | 'floats' | 'strings' | 'tensor';

export interface OutputType { dtype: DType; shape: readonly Dim[] }

/** What shape inference sees: the node's inputs and attributes, and a way to fail with context. */
export interface InferCtx {
  readonly op: string;
  readonly inputs: readonly (Value | null)[];
  readonly attrs: Attrs;
  /** Input i, which must be present. */
  input(i: number): Value;
  /** Attribute value, or the op's declared default. */
  attr<T extends AttrValue>(name: string): T;
  /** Integer contents of a constant input (axes, shapes, splits); fails if not constant. */
  ints(i: number): number[] | null;
  /** Throws `op: message`, naming the op. */
  fail(message: string): never;
  /** `input 1 (B) of shape [3, 4]`, for messages. */
  describe(i: number): string;
  /** Outputs the node was asked for (ONNX lets a node omit trailing optional outputs). */
  readonly numOutputs: number | undefined;
}

/** What a gradient rule sees. `dy[k]` is the gradient of output k, or null where none flows. */
export interface GradCtx extends InferCtx {
  readonly outputs: readonly Value[];
  readonly dy: readonly (Value | null)[];
  /** needs[i]: whether input i needs a gradient; rules skip work for the others. */
  readonly needs: readonly boolean[];
}

/**
 * A gradient rule returns one entry per input: a value (any broadcast-compatible shape; the engine
 * reduces it to the input's shape) or null where no gradient flows.
 */
export type GradRule = (g: GradCtx) => (Value | null)[];

/** Composite ops lower to ONNX ops by building them from their inputs. */
export type Lowering = (c: InferCtx) => Value[];

export interface OpDef {
  readonly name: string;
  /** ONNX input names, `?` marking optional ones and `...` a variadic tail. */
  readonly inputs: readonly string[];
  readonly attrs?: Readonly<Record<string, { kind: AttrKind; default?: AttrValue }>>;
  readonly infer: (c: InferCtx) => OutputType[];
  readonly grad?: GradRule;
  /** Inputs through which no gradient is defined (indices, shapes, masks). */
  readonly nondiff?: readonly number[];
  /** The rule handles gradients on every output; otherwise only output 0 may carry one. */
  readonly gradAllOutputs?: boolean;
  /** Present on composite ops that are not ONNX ops at opset 17. */
  readonly lower?: Lowering;
  /**
   * Runs outside onnxruntime (weft's own ops: collectives): a step holding one is cut there into
   * programs before and after it (runtime/schedule.ts), and ONNX export refuses it.
   */
  readonly host?: boolean;
  /**
   * A host op whose kernel computes at once on the calling thread (a native matrix product), not
   * one that flies while programs run (a collective): the schedule runs nothing beside it, and
   * puts what could have run beside it into the next program instead of a program of its own.
   */
  readonly inline?: boolean;
  /**
   * Draws random numbers (Dropout): a second evaluation would draw different ones, so activation
   * checkpointing (autodiff/checkpoint.ts) keeps its outputs instead of recomputing them.
   */
  readonly random?: boolean;
}

const REGISTRY = new Map<string, OpDef>();

export function defineOp(def: OpDef): void {
  if (REGISTRY.has(def.name)) throw new Error(`op ${def.name} is defined twice`);
  REGISTRY.set(def.name, def);
}

export function opDef(name: string, where = 'graph'): OpDef {
  const d = REGISTRY.get(name);
  if (d === undefined) {
    throw new Error(`${where}: op '${name}' is not supported by weft (known: ${[...REGISTRY.keys()].sort().join(', ')})`);
  }
  return d;
}

export const knownOps = (): string[] => [...REGISTRY.keys()].sort();

/** Reads a constant integer tensor's contents, or null when the value is not a constant. */
export function constInts(v: Value | null): number[] | null {
  if (v === null || v.data === null || !v.constant) return null;
  return Array.from(v.data as ArrayLike<number | bigint>, Number);
}

export function makeCtx(def: OpDef, inputs: readonly (Value | null)[], attrs: Attrs, numOutputs?: number): InferCtx {
  const names = def.inputs;
  const nameOf = (i: number): string => {
    const n = names[Math.min(i, names.length - 1)] ?? `#${i}`;
    return n.replace(/[?.]/g, '');
  };
  const ctx: InferCtx = {
    op: def.name,
    inputs,
    attrs,
    numOutputs,
    input(i) {
      const v = inputs[i];
      if (v === undefined || v === null) ctx.fail(`input ${i} (${nameOf(i)}) is required`);
      return v;
    },
    attr<T extends AttrValue>(name: string): T {
      const v = attrs[name] ?? def.attrs?.[name]?.default;
      if (v === undefined) ctx.fail(`attribute '${name}' is required`);
      return v as T;
    },
    ints(i) { return constInts(inputs[i] ?? null); },
    fail(message): never { throw new Error(`${def.name}: ${message}`); },
    describe(i) {
      const v = inputs[i];
      return `input ${i} (${nameOf(i)})${v ? ` of shape ${fmt(v.shape)}` : ''}`;
    },
  };
  return ctx;
}

function checkArity(def: OpDef, n: number): void {
  const variadic = def.inputs.some((s) => s.endsWith('...'));
  const required = def.inputs.filter((s) => !s.endsWith('?') && !s.endsWith('...')).length;
  const max = variadic ? Infinity : def.inputs.length;
  // An ONNX variadic tail takes one input or more; weft's ordering-only `after...` may be empty.
  const min = variadic && def.inputs.at(-1) !== 'after...' ? Math.max(required, 1) : required;
  if (n < min || n > max) {
    throw new Error(`${def.name}: expected ${min === max ? min : `${min}..${max}`} inputs (${def.inputs.join(', ')}), got ${n}`);
  }
}

function checkAttrs(def: OpDef, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs)) {
    const spec = def.attrs?.[k];
    if (spec === undefined) throw new Error(`${def.name}: unknown attribute '${k}'`);
    const ok =
      spec.kind === 'int' ? Number.isInteger(v) :
      spec.kind === 'float' ? typeof v === 'number' :
      spec.kind === 'string' ? typeof v === 'string' :
      spec.kind === 'ints' ? Array.isArray(v) && v.every((x) => Number.isInteger(x)) :
      spec.kind === 'floats' ? Array.isArray(v) && v.every((x) => typeof x === 'number') :
      spec.kind === 'strings' ? Array.isArray(v) && v.every((x) => typeof x === 'string') :
      typeof v === 'object' && !Array.isArray(v);
    if (!ok) throw new Error(`${def.name}: attribute '${k}' must be ${spec.kind}, got ${JSON.stringify(v)}`);
  }
}

/** Applies an op: validates arity, attributes and shapes at trace time, and returns its outputs. */
export function apply(op: string, inputs: readonly (Value | null)[], attrs: Attrs = {}, numOutputs?: number): Value[] {
  const def = opDef(op);
  checkArity(def, inputs.length);
  checkAttrs(def, attrs);
  const ctx = makeCtx(def, inputs, attrs, numOutputs);
  let types: OutputType[];
  try { types = def.infer(ctx); } catch (e) {
    // Shared helpers (broadcasting, reshape) throw without the op's name; every message gets it.
    const m = (e as Error).message;
    throw m.startsWith(`${op}:`) ? e : new Error(`${op}: ${m}`);
  }
  if (numOutputs !== undefined && types.length < numOutputs) {
    ctx.fail(`has at most ${types.length} outputs, ${numOutputs} requested`);
  }
  const node = new Node(op, inputs, attrs);
  node.outputs = types.map((t, i) => new Value(t.dtype, t.shape, node, i));
  return node.outputs;
}

/** Single-output convenience. */
export const apply1 = (op: string, inputs: readonly (Value | null)[], attrs: Attrs = {}): Value =>
  apply(op, inputs, attrs)[0]!;
