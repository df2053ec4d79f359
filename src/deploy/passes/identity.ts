/**
 * Identity elimination: readers of an Identity's result read its input instead. When the result is
 * a graph output, the input's producer is renamed to produce it; an Identity between a graph input
 * (or initializer, or another graph output) and a graph output has nothing to rename and stays.
 */
import type { OnnxGraph } from '../../ir/onnx/model.js';
import { bypass, eachNode, isOnnx } from './common.js';

export function eliminateIdentities(g: OnnxGraph): number {
  return eachNode(g, (n, idx) => isOnnx(n, 'Identity') && n.outputs[0] !== undefined && bypass(g, idx, n, n.inputs[0] ?? '', n.outputs[0]));
}
