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
 * 3. for scale, plain data parallelism run without a limit: its measured peak RSS.
 *
 * Needs root (cgroups), OpenMPI and a writable /sys/fs/cgroup/memory; where the cgroup cannot be
 * made, step 2 runs unconfined and the JSON says so. Usage: node dist/bench/zero_fit.js [budget]
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
const estimate = (zero: number): number => (JSON.parse(execFileSync(process.execPath, [CLI, 'memory', cfg, '--nproc', '2', '--set', `parallel.zero=${zero}`, '--json'], { encoding: 'utf8' })) as { peak_bytes: number }).peak_bytes;
const rssOf = (text: string): number | null => { const m = /peak RSS ([\d.]+) MiB/.exec(text); return m ? Math.round(Number(m[1])) : null; };

const out: Record<string, unknown> = { cpu: cpuInfo().isa, model: 'GPT d768 x 12 blocks, ctx 64, batch 2 per rank (85M parameters)', ranks: 2, budget: budgetText, budget_mib: mib(budget) };
try {
  out['estimate_mib'] = { zero0: mib(estimate(0)), zero3: mib(estimate(3)) };
  // 1. Plain data parallelism under the budget: refused before the first step.
  const ddp = mpirun([process.execPath, CLI, 'train', cfg, '--set', `out=${join(dir, 'ddp')}`, '--budget', budgetText, '--backend', 'mpi']);
  out['ddp_under_budget'] = { exit: ddp.status, message: /--budget[^\n]*/.exec(ddp.text)?.[0] ?? ddp.text.slice(-400), trained: existsSync(join(dir, 'ddp', 'metrics.jsonl')) && readFileSync(join(dir, 'ddp', 'metrics.jsonl'), 'utf8').length > 0 };
  // 2. ZeRO 3, each rank in a cgroup limited to the budget.
  const root = '/sys/fs/cgroup/memory';
  const groups = [0, 1].map((r) => join(root, `weft-zero-fit-${process.pid}-r${r}`));
  let confined = false;
  try {
    for (const g of groups) { mkdirSync(g); writeFileSync(join(g, 'memory.limit_in_bytes'), String(budget)); }
    confined = true;
  } catch (e) {
    out['cgroup_error'] = (e as Error).message;
  }
  const rankCmd = `${confined ? `echo $$ > ${root}/weft-zero-fit-${process.pid}-r$OMPI_COMM_WORLD_RANK/cgroup.procs && ` : ''}exec ${process.execPath} ${CLI} train ${cfg} --set out=${join(dir, 'zero3')} --set parallel.zero=3 --budget ${budgetText} --backend mpi`;
  const z3 = mpirun(['sh', '-c', rankCmd]);
  const read = (g: string, f: string): number | null => (confined ? Number(readFileSync(join(g, f), 'utf8')) : null);
  out['zero3_under_budget'] = {
    exit: z3.status, confined_by: confined ? 'cgroup v1 memory.limit_in_bytes per rank' : 'nothing (no writable memory cgroup)',
    rank_peak_mib: groups.map((g) => { const b = read(g, 'memory.max_usage_in_bytes'); return b === null ? null : mib(b); }),
    oom_events: groups.map((g) => read(g, 'memory.failcnt')),
    rank0_peak_rss_mib: rssOf(z3.text), final: /weft: 3 steps[^\n]*/.exec(z3.text)?.[0] ?? z3.text.slice(-600),
  };
  if (confined) for (const g of groups) { try { rmdirSync(g); } catch { /* a rank still exiting */ } }
  // 3. Plain data parallelism with no limit, for scale.
  const free = mpirun([process.execPath, CLI, 'train', cfg, '--set', `out=${join(dir, 'ddp-free')}`, '--backend', 'mpi']);
  out['ddp_unconfined'] = { exit: free.status, rank0_peak_rss_mib: rssOf(free.text) };
  out['notes'] = 'cgroup max_usage counts page cache the rank touched (its checkpoint writes) as well as RSS; failcnt counts the times the limit was hit (reclaim), not kills.';
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
