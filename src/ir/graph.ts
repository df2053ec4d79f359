import type { DType, TypedArray } from './dtype.js';
import type { Dim } from './shape.js';
import { fmt } from './shape.js';
import { currentScope } from './scope.js';

/** A constant tensor carried as an attribute (ONNX AttributeProto.t). */
export interface TensorAttr { dtype: DType; shape: number[]; data: TypedArray }

export type AttrValue = number | string | number[] | string[] | TensorAttr;
export type Attrs = Readonly<Record<string, AttrValue>>;

let nextId = 0;

/**
 * A typed value in the graph: produced by `node` (output `index`), or a leaf that holds `data`.
 * A leaf marked `constant` is part of the graph itself (an ONNX initializer, keyed by content);
 * any other leaf is fed to the compiled graph at run time.
 */
export class Value {
  readonly id = nextId++;
  name: string | undefined;
  constant = false;

  constructor(
    readonly dtype: DType,
    readonly shape: readonly Dim[],
    public node: Node | null = null,
    readonly index = 0,
    public data: TypedArray | null = null,
  ) {}

  get rank(): number { return this.shape.length; }

  toString(): string { return `${this.dtype}${fmt(this.shape)}`; }
}

/**
 * One ONNX op application. `inputs` may hold null for an omitted optional input. `scope` is the
 * module path current when the node was made (ir/scope.ts), or null.
 */
export class Node {
  outputs: Value[] = [];
  readonly scope: string | null = currentScope();
  constructor(
    readonly op: string,
    readonly inputs: readonly (Value | null)[],
    readonly attrs: Attrs,
    readonly domain = '',
  ) {}
}

/** Nodes reachable from `outputs`, inputs before users, stopping at leaves (values with no node). */
export function topoNodes(outputs: readonly Value[], stop?: (v: Value) => boolean): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  // Iterative DFS: transformer graphs are deep enough to overflow recursion.
  const stack: [Node, number][] = [];
  const push = (v: Value | null): void => {
    if (v === null || v.node === null || seen.has(v.node) || stop?.(v)) return;
    seen.add(v.node);
    stack.push([v.node, 0]);
  };
  for (const o of outputs) {
    push(o);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const [n, i] = top;
      if (i < n.inputs.length) { top[1]++; push(n.inputs[i]!); continue; }
      stack.pop();
      order.push(n);
    }
  }
  return order;
}
