/**
 * All-reduce time per operation against message size, per algorithm, on 2, 4 and 8 thread ranks;
 * prints JSON and the crossover (the smallest size from which the ring is faster) per rank count.
 * RING_MIN_BYTES in src/comm/threads/group.ts comes from this.
 *
 *   npx tsc -p . && node dist/bench/collectives.js [--ranks 2,4,8] [--min 1] [--max 4194304] [--step 4] [--ms 300] [--region 4194304] [--repeat 1]
 *
 * This module is also the ranks' entry (its default export runs on each rank).
 */
import { isMainThread } from 'node:worker_threads';
import { cpus } from 'node:os';
import { launchThreads } from '../src/comm/threads/launch.js';
import type { ThreadsProcessGroup } from '../src/comm/threads/group.js';
import { INLINE_BYTES } from '../src/comm/threads/layout.js';
import type { AllReduceAlgorithm } from '../src/comm/threads/layout.js';
import type { ProcessGroup } from '../src/comm/process_group.js';

const ALGOS: AllReduceAlgorithm[] = ['inline', 'recursive_doubling', 'ring'];

interface Args { sizes: number[]; minMs: number }
interface Row { ranks: number; algorithm: AllReduceAlgorithm; elements: number; bytes: number; iters: number; usPerOp: number; runs?: number[] }

/** On each rank: times every (size, algorithm), agreeing on iteration counts through rank 0. */
export default async function rank(pg: ProcessGroup, args: Args): Promise<Row[]> {
  const g = pg as ThreadsProcessGroup;
  const rows: Row[] = [];
  for (const elements of args.sizes) {
    const buf = new Float32Array(elements).fill(1);
    for (const algorithm of ALGOS.filter((a) => a !== 'inline' || elements * 4 <= INLINE_BYTES)) {
      const run = async (k: number): Promise<number> => {
        await g.barrier().wait();
        const t = performance.now();
        for (let i = 0; i < k; i++) await g.allReduceWith(buf, 'sum', algorithm).wait();
        const ms = Float64Array.of(performance.now() - t);
        await g.allReduce(ms, 'max').wait();
        return ms[0]!;
      };
      await run(2);
      const once = (await run(3)) / 3;
      const iters = Int32Array.of(Math.max(3, Math.min(2000, Math.ceil(args.minMs / Math.max(once, 1e-3)))));
      await g.broadcast(iters, 0).wait();
      const ms = await run(iters[0]!);
      rows.push({ ranks: pg.size, algorithm, elements, bytes: elements * 4, iters: iters[0]!, usPerOp: Math.round((ms * 1000) / iters[0]!) });
    }
  }
  return rows;
}

function flag(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
}

async function main(): Promise<void> {
  const ranks = flag('ranks', '2,4,8').split(',').map(Number);
  const min = Number(flag('min', '1'));
  const max = Number(flag('max', String(4 << 20)));
  const step = Number(flag('step', '4'));
  const minMs = Number(flag('ms', '300'));
  const regionBytes = Number(flag('region', String(4 << 20)));
  const repeat = Number(flag('repeat', '1'));
  const sizes: number[] = [];
  for (let e = min; e <= max; e *= step) sizes.push(e);
  const results: Row[] = [];
  const crossover: Record<number, number | null> = {};
  for (const nproc of ranks) {
    // Each launch measures every point once; with --repeat, a point's time is its median over launches.
    const runs: Row[][] = [];
    for (let k = 0; k < repeat; k++) runs.push((await launchThreads<Row[]>({ nproc, entry: new URL(import.meta.url), args: { sizes, minMs }, regionBytes, timeoutMs: 120_000 }))[0]!);
    const rows = runs[0]!.map((row, i) => {
      const ts = runs.map((rs) => rs[i]!.usPerOp).sort((a, b) => a - b);
      return { ...row, usPerOp: ts[Math.floor(ts.length / 2)]!, runs: ts };
    });
    results.push(...rows);
    const t = (a: AllReduceAlgorithm, e: number): number => rows.find((r) => r.algorithm === a && r.elements === e)!.usPerOp;
    crossover[nproc] = sizes.find((e, i) => sizes.slice(i).every((e2) => t('ring', e2) <= t('recursive_doubling', e2))) ?? null;
    if (crossover[nproc] !== null) crossover[nproc] = crossover[nproc]! * 4;
    for (const e of sizes) {
      const inline = e * 4 <= INLINE_BYTES ? `  inline ${String(t('inline', e)).padStart(8)} us` : '';
      process.stderr.write(`ranks ${nproc} ${String(e * 4).padStart(9)} B  rd ${String(t('recursive_doubling', e)).padStart(8)} us  ring ${String(t('ring', e)).padStart(8)} us${inline}\n`);
    }
  }
  console.log(JSON.stringify({ machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '?' }, regionBytes, crossoverBytes: crossover, results }, null, 1));
}

if (isMainThread) await main();
