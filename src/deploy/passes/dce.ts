/**
 * Dead-node elimination: nodes none of whose results reach a graph output (or a subgraph that reads
 * them), and initializers nothing reads, are removed (deploy/graph.ts's removeDead). Graph inputs
 * stay, read or not: a model's signature is not the optimizer's to change.
 */
import type { OnnxGraph } from '../../ir/onnx/model.js';
import { removeDead } from '../graph.js';

export function eliminateDead(g: OnnxGraph): number {
  const inits = g.initializers.length;
  return removeDead(g) + (inits - g.initializers.length);
}
