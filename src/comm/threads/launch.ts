/**
 * Starts `nproc` ranks as worker threads of this process and collects their results.
 *
 *   // train.ts
 *   export default async function (pg: ProcessGroup, args: { steps: number }) { ...; return loss; }
 *   // main thread
 *   const losses = await launchThreads({ nproc: 4, entry: new URL('./train.js', import.meta.url), args: { steps: 100 } });
 *
 * The launcher owns the shared memory (the control block and the world group's block) and watches
 * the ranks: the first one that throws, crashes or exits before returning is recorded in the
 * control block and every comm thread is woken, so every other rank's pending and later
 * operations fail at once with a CollectiveError naming it; after `graceMs` the remaining workers
 * are terminated and the launch rejects with a `LaunchError` naming the rank and its error.
 * Each rank's stdout and stderr lines are prefixed "[rank N] ".
 */
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Readable, Writable } from 'node:stream';
import { Control, DEFAULT_REGION_BYTES, FAILED, groupGeometry, RETURNED } from './layout.js';
import type { AllReduceAlgorithm } from './layout.js';
import { workerExecArgv } from './protocol.js';
import type { FromRank, RankInit, ToRank } from './protocol.js';

export interface LaunchOptions {
  /** Number of ranks. */
  nproc: number;
  /** Module whose default export `async (pg, args) => result` each rank runs (a path or a file URL). */
  entry: string | URL;
  /** Passed to every rank (structured-clonable). */
  args?: unknown;
  /** Timeout of every wait of every operation, in ms. Default 30000. */
  timeoutMs?: number;
  /** Extra environment for the ranks (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE are set). */
  env?: Record<string, string>;
  /** Bytes of each rank's receive windows per group (default 4 MiB); longer messages stream through them. */
  regionBytes?: number;
  /** After a failure, how long the other ranks get to finish on their own before termination. Default 1000 ms. */
  graceMs?: number;
  /** All-reduce algorithm of every group: 'auto' (default: by size, see `chooseAllReduce`) or a fixed one. */
  allReduceAlgorithm?: 'auto' | AllReduceAlgorithm;
  /**
   * Ranks the job survives losing (a parameter server's workers under ASP or SSP): when one fails,
   * only its own operations end: it is marked failed, `onTolerated` is told, and every other rank
   * runs on (a point-to-point operation waiting on it fails alone; a collective waiting on it breaks
   * its group). The launch resolves with `undefined` as that rank's result, unless a rank outside
   * this set fails too.
   */
  tolerate?: readonly number[];
  /** Called (on the launching thread) when a tolerated rank fails. */
  onTolerated?: (rank: number, error: Error) => void;
}

/** The launch failed: `rank` failed first with `cause`; `failures` lists every rank that failed, `results` what the others returned. */
export class LaunchError extends Error {
  override readonly name = 'LaunchError';
  constructor(message: string, readonly rank: number, readonly failures: { rank: number; error: Error }[], readonly results: unknown[], cause: Error) {
    super(message, { cause });
  }
}

function entryHref(entry: string | URL): string {
  if (entry instanceof URL) return entry.href;
  return /^(file|data):/.test(entry) ? entry : pathToFileURL(resolvePath(entry)).href;
}

/** Copies `from` to `to` line by line, each line prefixed. */
function prefixLines(from: Readable, to: Writable, prefix: string): void {
  let rest = '';
  from.setEncoding('utf8');
  from.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    if (lines.length > 0) to.write(lines.map((l) => prefix + l + '\n').join(''));
  });
  from.on('end', () => { if (rest !== '') to.write(prefix + rest + '\n'); });
}

function rebuild(e: { name: string; message: string; stack?: string }): Error {
  const err = new Error(e.message);
  err.name = e.name;
  if (e.stack !== undefined) err.stack = e.stack;
  return err;
}

export function launchThreads<R = unknown>(opts: LaunchOptions): Promise<R[]> {
  const { nproc } = opts;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const graceMs = opts.graceMs ?? 1000;
  const regionBytes = opts.regionBytes ?? DEFAULT_REGION_BYTES;
  if (!(Number.isInteger(nproc) && nproc >= 1)) throw new RangeError(`launchThreads: nproc must be a positive integer, got ${nproc}`);
  if (!(timeoutMs > 0)) throw new RangeError(`launchThreads: timeoutMs must be positive, got ${timeoutMs}`);
  if (!(Number.isInteger(regionBytes) && regionBytes >= 65536)) throw new RangeError(`launchThreads: regionBytes must be an integer >= 65536, got ${regionBytes}`);
  const entry = entryHref(opts.entry);
  const control = Control.create(nproc);
  const world = new SharedArrayBuffer(groupGeometry(nproc, regionBytes).bytes);

  return new Promise<R[]>((resolve, reject) => {
    const results: unknown[] = new Array<unknown>(nproc).fill(undefined);
    const finished = new Array<boolean>(nproc).fill(false);
    const failures: { rank: number; error: Error }[] = [];
    const workers: Worker[] = [];
    const shared = new Map<string, { sab: SharedArrayBuffer; readers: number }>();
    const gets = new Map<string, { w: Worker; req: number }[]>();
    let exited = 0;
    let returned = 0;
    const timers: NodeJS.Timeout[] = [];

    const terminateAllLater = (): void => {
      timers.push(setTimeout(() => { for (const w of workers) void w.terminate(); }, graceMs));
    };
    const reply = (w: Worker, m: ToRank): void => w.postMessage(m);
    const tolerated = new Set(opts.tolerate ?? []);
    const lost: { rank: number; error: Error }[] = [];
    const fail = (rank: number, error: Error): void => {
      if (finished[rank]) return;
      finished[rank] = true;
      if (tolerated.has(rank) && failures.length === 0) {
        lost.push({ rank, error });
        control.setStatus(rank, FAILED);
        if (++returned === nproc) terminateAllLater();
        opts.onTolerated?.(rank, error);
        return;
      }
      failures.push({ rank, error });
      if (failures.length > 1) { control.setStatus(rank, FAILED); return; }
      control.abort(rank, `${error.name}: ${error.message}`);
      control.setStatus(rank, FAILED);
      for (const [, ws] of gets) for (const { w, req } of ws) reply(w, { type: 'got', req, sab: null, error: `rank ${rank} failed` });
      gets.clear();
      terminateAllLater();
    };
    const settle = (): void => {
      if (exited < nproc) return;
      for (const t of timers) clearTimeout(t);
      if (failures.length === 0) { resolve(results as R[]); return; }
      const first = failures[0]!;
      failures.push(...lost);
      const others = failures.slice(1).map((f) => f.rank);
      const more = others.length > 0 ? ` (ranks ${others.join(', ')} failed after it)` : '';
      reject(new LaunchError(`rank ${first.rank} failed: ${first.error.name}: ${first.error.message}${more}`, first.rank, failures, results, first.error));
    };
    const onMessage = (rank: number, w: Worker, m: FromRank): void => {
      switch (m.type) {
        case 'result':
          if (finished[rank]) return;
          finished[rank] = true;
          results[rank] = m.value;
          control.setStatus(rank, RETURNED);
          if (++returned === nproc) terminateAllLater();
          return;
        case 'error': fail(rank, rebuild(m.error)); return;
        case 'put': {
          const waiting = gets.get(m.name) ?? [];
          gets.delete(m.name);
          for (const { w: gw, req } of waiting) reply(gw, { type: 'got', req, sab: m.sab });
          if (m.readers > waiting.length) shared.set(m.name, { sab: m.sab, readers: m.readers - waiting.length });
          return;
        }
        case 'get': {
          if (failures.length > 0) { reply(w, { type: 'got', req: m.req, sab: null, error: `rank ${failures[0]!.rank} failed` }); return; }
          const s = shared.get(m.name);
          if (s === undefined) { gets.set(m.name, [...(gets.get(m.name) ?? []), { w, req: m.req }]); return; }
          if (--s.readers === 0) shared.delete(m.name);
          reply(w, { type: 'got', req: m.req, sab: s.sab });
          return;
        }
      }
    };

    for (let rank = 0; rank < nproc; rank++) {
      const init: RankInit = { rank, size: nproc, control: control.sab, world, regionBytes, timeoutMs, entry, args: opts.args, allReduceAlgorithm: opts.allReduceAlgorithm ?? 'auto' };
      const env = { ...process.env, ...opts.env, RANK: String(rank), WORLD_SIZE: String(nproc), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(nproc) };
      const w = new Worker(new URL('./rank_worker.js', import.meta.url), { workerData: init, env, stdout: true, stderr: true, execArgv: workerExecArgv(), name: `weft-rank-${rank}` });
      workers.push(w);
      prefixLines(w.stdout, process.stdout, `[rank ${rank}] `);
      prefixLines(w.stderr, process.stderr, `[rank ${rank}] `);
      w.on('message', (m: FromRank) => onMessage(rank, w, m));
      w.on('error', (e: Error) => fail(rank, e));
      w.on('exit', (code: number) => {
        exited++;
        if (!finished[rank]) fail(rank, new Error(`exited with code ${code} before returning from its entry`));
        settle();
      });
    }
  });
}
