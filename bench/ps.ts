/**
 * The parameter server measured (docs/parameter-server.md), JSON on stdout:
 * - `straggler`: W workers, one of them 3x slower (each step sleeps base or 3 x base ms beside its
 *   compute), under BSP, SSP (s = 2) and ASP (and ASP without prefetching the next batch's rows):
 *   examples/s summed over the workers, each worker's own rate while it runs. Then a rotating
 *   straggler (worker step mod W is the slow one), the transient delays SSP is for.
 * - `sparse`: bytes a worker sends and receives per step at two table sizes (2^20 and 2^23 rows, same
 *   data) and three batch sizes: they follow the batch's distinct ids, not the table.
 * - `ctr`: the recipe's DeepFM to the end under BSP and ASP: AUC and log loss against the planted
 *   model's (the best possible).
 * `npm run bench:ps -- [straggler|sparse|ctr ...] [--steps N] [--servers S] [--workers W]`
 */
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchThreads } from '../src/comm/threads/launch.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import type { PsRunResult } from '../src/train/ps_train.js';

const argv = process.argv.slice(2);
const opt = (name: string, d: number): number => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : d; };
const parts = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1]!.startsWith('--')));
const which = parts.length > 0 ? parts : ['straggler', 'sparse', 'ctr'];
const recipe = JSON.parse(readFileSync(new URL('../../recipes/ctr.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>;
const S = opt('--servers', 1);
const W = opt('--workers', 3);
const entry = new URL('./ps_rank.js', import.meta.url);
const out = mkdtempSync(join(tmpdir(), 'weft-bench-ps-'));

function cfg(over: { mode: string; steps: number; rows?: number; train?: number; evalEvery?: number; batch?: number }): unknown {
  return {
    ...recipe, out: join(out, `${over.mode}-${over.rows ?? 0}-${Date.now()}`),
    data: { ctr: { ...(recipe['data']!['ctr'] as object), ...(over.rows ? { rows: over.rows } : {}), ...(over.train ? { train: over.train } : {}) } },
    train: { ...recipe['train'], steps: over.steps, threads: 1, ...(over.batch ? { batch: over.batch } : {}) },
    ps: { ...recipe['ps'], servers: S, mode: over.mode },
    eval: { every: over.evalEvery ?? 1_000_000 }, checkpoint: { every: 1_000_000 }, log: { every: 1_000_000 },
  };
}

const launch = (config: unknown, slow?: { worker: number; factor: number; baseMs: number; rotate?: boolean }): Promise<PsRunResult[]> =>
  launchThreads<PsRunResult>({ nproc: W + S, entry, args: { config, ...(slow ? { slow } : {}) }, timeoutMs: 600_000 });

const result: Record<string, unknown> = { bench: 'ps', cpu: { model: cpuInfo().model, isa: cpuInfo().isa }, servers: S, workers: W };
if (which.includes('straggler')) {
  const steps = opt('--steps', 60);
  const rows: Record<string, unknown>[] = [];
  for (const [straggler, mode, prefetch] of [['worker 0', 'bsp', false], ['worker 0', 'ssp', true], ['worker 0', 'asp', true], ['worker 0', 'asp', false],
    ['rotating', 'bsp', false], ['rotating', 'ssp', true], ['rotating', 'asp', true]] as const) {
    const c = cfg({ mode, steps, train: 200_000 }) as { ps: Record<string, unknown> };
    c.ps['prefetch'] = prefetch;
    const r = await launch(c, { worker: 0, factor: 3, baseMs: opt('--base-ms', 20), rotate: straggler === 'rotating' });
    const ws = r.slice(0, W);
    rows.push({ straggler, mode, prefetch, examples_s: Math.round(ws.reduce((a, x) => a + x.examplesPerSecond!, 0)), per_worker: ws.map((x) => Math.round(x.examplesPerSecond!)), max_staleness: Math.max(...r.slice(W).map((x) => x.stats!.maxStaleness)) });
  }
  result['straggler'] = { steps, slow_worker: 0, factor: 3, base_ms: opt('--base-ms', 20), rows };
}
if (which.includes('sparse')) {
  const rows: Record<string, unknown>[] = [];
  for (const [n, batch] of [[1 << 20, 512], [1 << 20, 1024], [1 << 23, 1024], [1 << 20, 2048]] as const) {
    const r = await launch(cfg({ mode: 'bsp', steps: 20, rows: n, train: 200_000, batch }));
    const b = r[0]!.bytesPerStep!;
    rows.push({ table_rows: n, batch, distinct_ids_per_step: Math.round(b.rows), bytes_out_per_step: Math.round(b.out), bytes_in_per_step: Math.round(b.in), bytes_out_per_id: +(b.out / b.rows).toFixed(1) });
  }
  result['sparse'] = rows;
}
if (which.includes('ctr')) {
  const steps = opt('--ctr-steps', (recipe['train']!['steps'] as number));
  const rows: Record<string, unknown>[] = [];
  for (const mode of ['bsp', 'asp']) {
    const t0 = performance.now();
    const r = await launch(cfg({ mode, steps, evalEvery: steps }));
    const e = r[0]!.eval!;
    rows.push({ mode, steps, auc: +e.auc.toFixed(4), oracle_auc: +e.oracleAuc.toFixed(4), gap: +(e.oracleAuc - e.auc).toFixed(4), log_loss: +e.logLoss.toFixed(4), oracle_log_loss: +e.oracleLogLoss.toFixed(4), seconds: Math.round((performance.now() - t0) / 1000) });
  }
  result['ctr'] = rows;
}
rmSync(out, { recursive: true, force: true });
// The ranks print their progress lines on stdout too: the result is the last line.
process.stdout.write(`${JSON.stringify(result)}\n`);
