/**
 * A tiny builder of ONNX models from plain ops, as ir/onnx/model.ts's data: for tests of passes
 * over graphs weft's export never writes (Identity chains, Conv + BatchNormalization with weights as
 * initializers, contrib ops, other domains).
 */
import type { DType } from '../../src/ir/dtype.js';
import { fromNumbers, ONNX_CODE } from '../../src/ir/dtype.js';
import type { OnnxAttr, OnnxModel, OnnxNode, OnnxTensor, OnnxValueInfo } from '../../src/ir/onnx/model.js';
import { attrs, tensorOf } from '../../src/ir/onnx/model.js';

export { attrs };

/** Deterministic values in [lo, hi) (a 32-bit LCG), for weights and feeds. */
export function values(n: number, seed: number, lo = -1, hi = 1): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((s >>> 8) / 2 ** 24) * (hi - lo);
  });
}

export interface NodeOptions { attrs?: OnnxAttr[]; outputs?: number | string[]; domain?: string; name?: string }

export class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  readonly inputs: OnnxValueInfo[] = [];
  readonly outputs: OnnxValueInfo[] = [];
  private count = 0;

  input(name: string, shape: (number | string | null)[], dtype: DType = 'float32'): string {
    this.inputs.push({ name, elemType: ONNX_CODE[dtype], shape });
    return name;
  }

  /** An initializer (int64 for `dtype` 'int64': numbers become bigints). */
  init(name: string, dims: number[], data: number[], dtype: DType = 'float32'): string {
    this.initializers.push(tensorOf(name, dtype, dims, fromNumbers(dtype, data)));
    return name;
  }

  /** Adds a node; returns its first output's name (all of them via `nodeOutputs`). */
  node(op: string, inputs: string[], o: NodeOptions = {}): string {
    return this.nodeOutputs(op, inputs, o)[0]!;
  }

  nodeOutputs(op: string, inputs: string[], o: NodeOptions = {}): string[] {
    const k = this.count++;
    const outputs = Array.isArray(o.outputs) ? o.outputs : Array.from({ length: o.outputs ?? 1 }, (_, i) => `${op.toLowerCase()}${k}${i === 0 ? '' : `_${i}`}`);
    this.nodes.push({ name: o.name ?? `${op}_${k}`, op, domain: o.domain ?? '', inputs, outputs, attrs: o.attrs ?? [], extra: [] });
    return outputs;
  }

  /** Marks `name` a graph output (shape unknown unless given). */
  output(name: string, dtype: DType = 'float32', shape: (number | string)[] | null = null): void {
    this.outputs.push({ name, elemType: ONNX_CODE[dtype], shape });
  }

  model(opset = 17, more: { domain: string; version: number }[] = []): OnnxModel {
    return {
      irVersion: 8, opsets: [{ domain: '', version: opset }, ...more], producer: 'test', extra: [],
      graph: { name: 'test', nodes: this.nodes, initializers: this.initializers, inputs: this.inputs, outputs: this.outputs, valueInfo: [], extra: [] },
    };
  }
}

/** A Constant node's `value` attribute. */
export const constantValue = (dims: number[], data: number[], dtype: DType = 'float32'): OnnxAttr => attrs.tensor('value', tensorOf('', dtype, dims, fromNumbers(dtype, data)));
