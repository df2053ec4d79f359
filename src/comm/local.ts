/**
 * A process group of one rank: every collective is the identity (or a copy). Lets data-parallel
 * code run unchanged in a single process, and tests exercise it without threads.
 */
import type { CommArray, ProcessGroup, ReduceOp, Work } from './process_group.js';

let seq = 0;
const done = (label: string): Work => ({ label: `${label}#${seq++}`, wait: () => Promise.resolve() });
const copy = (out: CommArray | null, input: CommArray | null): void => { if (out && input && out !== input) out.set(input); };

export class LocalProcessGroup implements ProcessGroup {
  readonly rank = 0;
  readonly size = 1;
  readonly backend = 'local';
  readonly timeoutMs = 0;

  allReduce(_buf: CommArray, _op?: ReduceOp): Work { return done('allReduce'); }
  broadcast(): Work { return done('broadcast'); }
  reduce(): Work { return done('reduce'); }
  allGather(input: CommArray, out: CommArray): Work { copy(out, input); return done('allGather'); }
  reduceScatter(input: CommArray, out: CommArray): Work { copy(out, input); return done('reduceScatter'); }
  gather(input: CommArray, out: CommArray | null): Work { copy(out, input); return done('gather'); }
  scatter(input: CommArray | null, out: CommArray): Work { copy(out, input); return done('scatter'); }
  allToAll(input: CommArray, out: CommArray): Work { copy(out, input); return done('allToAll'); }
  allToAllV(input: CommArray, _s: readonly number[], out: CommArray): Work { copy(out, input); return done('allToAllV'); }
  barrier(): Work { return done('barrier'); }
  send(): Work { throw new Error('LocalProcessGroup: send has no peer in a group of one'); }
  recv(): Work { throw new Error('LocalProcessGroup: recv has no peer in a group of one'); }
  split(): Promise<ProcessGroup> { return Promise.resolve(new LocalProcessGroup()); }
  destroy(): Promise<void> { return Promise.resolve(); }
}
