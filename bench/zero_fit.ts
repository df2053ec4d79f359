/**
 * A model that does not fit one rank's memory budget, trained with ZeRO stage 3 on 2 MPI ranks
 * under that budget. Prints JSON (bench/results/zero_fit.json):
 *
 * 1. `weft train --budget B` with plain data parallelism refuses before its first step, naming the
 *    budget and the estimate (exit status and message recorded);
 * 2. the same model and budget with `parallel.zero=3`: the estimate fits, and each rank runs inside
 *    its own memory cgroup (v1, `memory.limit_in_bytes` = B; what the kernel enforces: past it the
 *    rank is reclaimed or OOM-killed), recording each rank's peak (`memory.max_usage_in_bytes`) and
 *    rank 0's peak RSS;
 * 3. for scale, plain data parallelism run without a limit: its measured peak RSS;
 * 4. a tighter budget (default 1.25 GiB) that ZeRO stage 3 alone does not fit: `--budget` refuses
 *    it, naming the estimate, and stage 3 with `parallel.offload=disk` (the parameter shard and the
 *    optimizer's state in files) trains under it, each rank in its own cgroup again.
 *
 * Needs root (cgroups), OpenMPI and a writable /sys/fs/cgroup/memory; where the cgroup cannot be
 * made, the runs go unconfined and the JSON says so. Usage: node dist/bench/zero_fit.js [budget] [tight budget]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo } from '../src/runtime/cpu.js';
import { parseSize } from '../src/train/memory.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const budgetText = process.argv[2] ?? '1.8GiB';
const budget = parseSize(budgetText, 'budget');
const tightText = process.argv[3] ?? '1.25GiB';
const tight = parseSize(tightText, 'tight budget');
const dir = mkdtempSync(join(tmpdir(), 'weft-zero-fit-'));
const cfg = join(dir, 'gpt-85m.json');
writeFileSync(cfg, JSON.stringify({
  model: { ctx: 64, d: 768, layers: 12, heads: 12 },
  train: { steps: 3, batch: 2, lr: 1e-4, warmup: 1, threads: 1 },
  eval: { every: 1000, windows: 1, batch: 2 }, checkpoint: { every: 1000 }, sample: { tokens: 0 }, log: { every: 1 },
}));
const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_btl_vader_single_copy_mechanism: 'none' };
const mpirun = (cmd: string[]): { status: number | null; text: string } => {
  const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', ...cmd], { encoding: 'utf8', env, timeout: 900_000 });
  return { status: r.status, text: `${r.stdout}${r.stderr}` };
};
const mib = (b: number): number => Math.round(b / 2 ** 20);
const estimate = (zero: number, offload = 'none'): number => (JSON.parse(execFileSync(process.execPath, [CLI, 'memory', cfg, '--nproc', '2', '--set', `parallel.zero=${zero}`, '--set', `parallel.offload=${offload}`, '--json'], { encoding: 'utf8' })) as { peak_bytes: number }).peak_bytes;
const rssOf = (text: string): number | null => { const m = /peak RSS ([\d.]+) MiB/.exec(text); return m ? Math.round(Number(m[1])) : null; };

const out: Record<string, unknown> = { cpu: cpuInfo().isa, model: 'GPT d768 x 12 blocks, ctx 64, batch 2 per rank (85M parameters)', ranks: 2, budget: budgetText, budget_mib: mib(budget) };
try {
  out['estimate_mib'] = { zero0: mib(estimate(0)), zero3: mib(estimate(3)), zero3_offload: mib(estimate(3, 'disk')) };
  // 1. Plain data parallelism under the budget: refused before the first step.
  const ddp = mpirun([process.execPath, CLI, 'train', cfg, '--set', `out=${join(dir, 'ddp')}`, '--budget', budgetText, '--backend', 'mpi']);
  out['ddp_under_budget'] = { exit: ddp.status, message: /--budget[^\n]*/.exec(ddp.text)?.[0] ?? ddp.text.slice(-400), trained: existsSync(join(dir, 'ddp', 'metrics.jsonl')) && readFileSync(join(dir, 'ddp', 'metrics.jsonl'), 'utf8').length > 0 };
  // 2. ZeRO 3, each rank in a cgroup limited to the budget.
  out['zero3_under_budget'] = confinedRun('zero3', budget, budgetText, ['--set', 'parallel.zero=3']);
  // 3. Plain data parallelism with no limit, for scale.
  const free = mpirun([process.execPath, CLI, 'train', cfg, '--set', `out=${join(dir, 'ddp-free')}`, '--backend', 'mpi']);
  out['ddp_unconfined'] = { exit: free.status, rank0_peak_rss_mib: rssOf(free.text) };
  // 4. The tight budget: stage 3 alone is refused; offloaded to disk, it trains under it.
  const z3tight = mpirun([process.execPath, CLI, 'train', cfg, '--set', `out=${join(dir, 'zero3-tight')}`, '--set', 'parallel.zero=3', '--budget', tightText, '--backend', 'mpi']);
  out['tight_budget'] = tightText;
  out['zero3_under_tight_budget'] = { exit: z3tight.status, message: /--budget[^\n]*/.exec(z3tight.text)?.[0] ?? z3tight.text.slice(-400) };
  out['zero3_offload_under_tight_budget'] = confinedRun('zero3-offload', tight, tightText, ['--set', 'parallel.zero=3', '--set', 'parallel.offload=disk']);
  out['notes'] = 'cgroup max_usage counts page cache the rank touched (its checkpoint writes) as well as RSS; failcnt counts the times the limit was hit (reclaim), not kills.';
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/** `weft train` on 2 MPI ranks, each in its own memory cgroup limited to `limit` (unconfined where none can be made). */
function confinedRun(name: string, limit: number, limitText: string, args: readonly string[]): Record<string, unknown> {
  const root = '/sys/fs/cgroup/memory';
  const groups = [0, 1].map((r) => join(root, `weft-zero-fit-${process.pid}-${name}-r${r}`));
  let confined = false;
  let error: string | null = null;
  try {
    for (const g of groups) { mkdirSync(g); writeFileSync(join(g, 'memory.limit_in_bytes'), String(limit)); }
    confined = true;
  } catch (e) {
    error = (e as Error).message;
  }
  const rankCmd = `${confined ? `echo $$ > ${root}/weft-zero-fit-${process.pid}-${name}-r$OMPI_COMM_WORLD_RANK/cgroup.procs && ` : ''}exec ${process.execPath} ${CLI} train ${cfg} --set out=${join(dir, name)} ${args.join(' ')} --budget ${limitText} --backend mpi`;
  const r = mpirun(['sh', '-c', rankCmd]);
  const read = (g: string, f: string): number | null => (confined ? Number(readFileSync(join(g, f), 'utf8')) : null);
  const memory = existsSync(join(dir, name, 'memory.json')) ? JSON.parse(readFileSync(join(dir, name, 'memory.json'), 'utf8')) as { ranks?: { peak_rss_bytes: number | null }[] } : null;
  const res = {
    exit: r.status, confined_by: confined ? 'cgroup v1 memory.limit_in_bytes per rank' : `nothing (no writable memory cgroup: ${error})`,
    rank_cgroup_peak_mib: groups.map((g) => { const b = read(g, 'memory.max_usage_in_bytes'); return b === null ? null : mib(b); }),
    limit_hits: groups.map((g) => read(g, 'memory.failcnt')),
    rank0_peak_rss_mib: rssOf(r.text),
    ...(memory?.ranks ? { rank_peak_rss_mib: memory.ranks.map((x) => (x.peak_rss_bytes === null ? null : mib(x.peak_rss_bytes))) } : {}),
    final: /weft: 3 steps[^\n]*/.exec(r.text)?.[0] ?? r.text.slice(-600),
  };
  if (confined) for (const g of groups) { try { rmdirSync(g); } catch { /* a rank still exiting */ } }
  return res;
}
process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
