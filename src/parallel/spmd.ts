/**
 * `compileSpmd(fn, groups)`: `compile` for steps that hold the IR's collectives, run on the
 * process group of each collective's mesh axis. The traced graph becomes a schedule of
 * onnxruntime programs cut at each collective (runtime/schedule.ts); this module only binds the
 * groups and loads the collectives' kernels.
 *
 *   const step = compileSpmd((x) => [new Tensor(allReduce(x.matmul(w).value, 'tp', 2))], { tp: pg });
 *   const [y] = await step(feed);
 */
import '../comm/kernels.js';
import type { CollectiveContext } from '../comm/kernels.js';
import type { ProcessGroup } from '../comm/process_group.js';
import { compile } from '../tensor/compile.js';
import type { Compiled } from '../tensor/compile.js';
import type { Tensor } from '../tensor/tensor.js';

export function compileSpmd(fn: (...inputs: Tensor[]) => Tensor[], groups: Readonly<Record<string, ProcessGroup>>, name = fn.name || 'spmd'): Compiled {
  const context: CollectiveContext = { groups };
  return compile(fn, name, { context });
}
