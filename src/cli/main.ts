#!/usr/bin/env node
/**
 * The `weft` command.
 *   weft train <config.json> [--resume] [--set key.path=value ...]
 *   weft sample <checkpoint or run dir> [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
 *   weft bench [--preset small|medium] [--threads N[,M]] [--steps S] [--repeat R] [--no-torch]
 *   weft memory <config.json> [--nproc N] [--set key.path=value ...] [--budget 8GB] [--json]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { tokenizerFromJSON } from '../data/tokenizer.js';
import type { TokenizerJSON } from '../data/tokenizer.js';
import { bindParameters, GPT, loadStateDict } from '../nn/index.js';
import { gptConfig } from '../train/tasks/lm.js';
import { MATMUL_PRECISIONS, setThreads } from '../runtime/executor.js';
import { latestCheckpoint, loadCheckpoint } from '../train/checkpoint.js';
import { loadConfig, parseConfig } from '../train/config.js';
import type { RunConfig } from '../train/config.js';
import { Generator } from '../train/generate.js';
import { Trainer } from '../train/trainer.js';
import { runPs } from '../train/ps_train.js';
import { withRestarts } from '../train/restart.js';
import { LAUNCH_USAGE, launchCommand } from './launch_cmd.js';
import { psRoles } from '../parallel/ps/protocol.js';
import { DDP_PROGRAMS } from '../parallel/ddp.js';
import { BENCH_DEFAULTS, measureWeft, measureWeftRanks, sideBySide } from './bench.js';
import { launchThreads } from '../comm/threads/launch.js';
import { initMpi } from '../comm/mpi/group.js';
import type { BenchSettings, Preset } from './bench.js';
import type { ScheduleKind } from '../parallel/pipeline_schedule.js';
import { PRESET_BATCH } from '../nn/gpt.js';
import { PRECISIONS } from '../nn/step_graph.js';
import type { Precision } from '../nn/step_graph.js';
import type { MatmulPrecision } from '../runtime/executor.js';
import { cpuInfo } from '../runtime/cpu.js';
import { existsSync, statSync } from 'node:fs';
import { estimateMemory, fmtBytes, parseSize } from '../train/memory.js';
import type { MemoryEstimate } from '../train/memory.js';
import { ints, num, parse, UsageError } from './args.js';
import { BENCH_INFER_USAGE, benchInferCommand } from './bench_infer_cmd.js';
import { EXPORT_USAGE, exportCommand } from './export_cmd.js';
import { OPTIMIZE_USAGE, optimizeCommand } from './optimize_cmd.js';
import { QUANTIZE_USAGE, quantizeCommand } from './quantize_cmd.js';
import { SERVE_USAGE, serveCommand } from './serve_cmd.js';
import { KEYGEN_USAGE, keygenCommand, PROTECT_USAGE, protectCommand } from './protect_cmd.js';
import { PRUNE_USAGE, pruneCommand } from './prune_cmd.js';
import { EVAL_USAGE, evalCommand } from './eval_cmd.js';
import { BOARD_USAGE, boardCommand } from './board_cmd.js';

const USAGE = `usage:
  weft train <config.json> [--resume] [--set key.path=value ...] [--nproc N | --backend mpi] [--max-restarts K] [--budget 8GB] [--trace DIR]
  weft sample <checkpoint-or-run-dir> [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
  weft bench [--preset small|medium|small,medium] [--threads 1,2] [--steps 10] [--repeat 1] [--nproc N] [--bucket-mb 25] [--programs tail|buckets|none|auto] [--precision fp32|bf16|fp16] [--matmul-precision highest|medium] [--no-torch]
  weft bench --preset medium --nproc 2 --tp 2           (tensor parallel beside data parallel)
  weft bench --preset medium --nproc 2 --pp 2 [--schedule 1f1b|gpipe|interleaved] [--microbatches M] [--chunks V]   (a pipeline beside data parallel)
  weft bench --preset medium --nproc 2 --zero 1|2|3 [--offload]   (ZeRO beside data parallel; --offload: optimizer state, at stage 3 the parameter shard too, on disk)
  weft memory <config.json> [--nproc N] [--set key.path=value ...] [--budget 8GB] [--json]
                                                        (predicted memory per rank, without training; docs/memory.md)
  ${EXPORT_USAGE}
  ${OPTIMIZE_USAGE}
  ${QUANTIZE_USAGE}
  ${BENCH_INFER_USAGE}
  ${SERVE_USAGE}
  ${PROTECT_USAGE}
  ${KEYGEN_USAGE}
  ${PRUNE_USAGE}
  ${EVAL_USAGE}
  ${BOARD_USAGE}
  ${LAUNCH_USAGE}

Every config key, with its default and meaning, is in docs/config.md; e.g. --set parallel.tp=2,
--set parallel.sp=true, --set dist.syncBatchNorm=true, --set train.optimizer=adafactor.
Recipes: recipes/brown-small.json, brown-parity.json, brown-adafactor.json, brown-moe.json, mnist-cnn.json, mnist-distill.json, ctr.json (weft train recipes/ctr.json --nproc 6: 4 workers, 2 parameter servers).`;

/**
 * `--nproc N` starts N ranks as worker threads (the threads backend); `--backend mpi` (or running
 * under mpirun) makes this process one rank of the MPI job.
 */
async function train(argv: string[]): Promise<void> {
  const { pos, sets, on, opt } = parse(argv, ['--nproc', '--backend', '--budget', '--trace', '--max-restarts'], ['--resume']);
  if (pos.length !== 1) throw new UsageError('weft train takes one config file');
  const cfg = loadConfig(pos[0]!, sets);
  const underMpi = process.env['OMPI_COMM_WORLD_SIZE'] !== undefined;
  const backend = opt.get('--backend') ?? (underMpi ? 'mpi' : 'threads');
  const nproc = num(opt, '--nproc', 1);
  if (!Number.isInteger(nproc) || nproc < 1) throw new UsageError(`--nproc must be a positive integer, got ${opt.get('--nproc')}`);
  const resume = on.has('--resume');
  const trace = opt.get('--trace');
  // A torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment) would otherwise
  // start WORLD_SIZE processes that each train alone into the same run directory.
  const worldEnv = process.env['WORLD_SIZE'];
  if (backend === 'threads' && !opt.has('--nproc') && worldEnv !== undefined && worldEnv !== '1') {
    const master = process.env['MASTER_ADDR'] ? ` (MASTER_ADDR=${process.env['MASTER_ADDR']}:${process.env['MASTER_PORT'] ?? '?'})` : '';
    throw new UsageError(`WORLD_SIZE=${worldEnv} is set${master}, but weft does not rendezvous over TCP: `
      + 'start the ranks with mpirun (mpirun -np N weft train <config> --backend mpi, one or many hosts), '
      + 'or as worker threads of one process with --nproc N');
  }
  if (opt.has('--budget')) checkBudget(opt.get('--budget')!, pos[0]!, sets, cfg, backend === 'mpi' ? Number(process.env['OMPI_COMM_WORLD_SIZE'] ?? 1) : nproc, backend);
  const maxRestarts = num(opt, '--max-restarts', 0);
  if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new UsageError(`--max-restarts must be an integer >= 0, got ${opt.get('--max-restarts')}`);
  // A restart resumes from the newest checkpoint the failed attempt left.
  const restarting = (run: (resume: boolean) => Promise<unknown>): Promise<number> => withRestarts(async (n) => { await run(resume || n > 0); }, { maxRestarts });
  if (backend === 'mpi') {
    if (opt.has('--nproc')) throw new UsageError('with --backend mpi the rank count comes from mpirun -np, not --nproc');
    if (maxRestarts > 0) throw new UsageError(`--max-restarts under mpirun: a dead process ends the whole MPI job, so restart it from outside: weft launch --max-restarts ${maxRestarts} -- mpirun -np N weft train ${pos[0]}`);
    const pg = initMpi({ timeoutMs: cfg.dist.timeoutS * 1000 });
    try {
      if (cfg.ps.servers > 0) await runPs(cfg, pg, { resume });
      else await new Trainer(cfg, { pg }).run({ resume, ...(trace ? { trace } : {}) });
    } finally { await pg.destroy(); }
  } else if (backend !== 'threads') {
    throw new UsageError(`--backend must be threads or mpi, got '${backend}'`);
  } else if (nproc > 1) {
    // Too few ranks for the servers is an error before any rank starts.
    const ps = cfg.ps.servers > 0 ? psRoles(nproc, cfg.ps.servers) : null;
    await restarting((again) => launchThreads({
      nproc, entry: new URL('./rank.js', import.meta.url), args: { config: pos[0]!, sets, resume: again, ...(trace ? { trace } : {}) }, timeoutMs: cfg.dist.timeoutS * 1000,
      // Under SSP and ASP the job outlives a worker, but not worker 0, which logs and checkpoints:
      // the servers' clock bound leaves it out.
      ...(ps !== null && cfg.ps.mode !== 'bsp' ? { tolerate: ps.workers.slice(1), onTolerated: (r: number, e: Error) => process.stderr.write(`weft: worker ${r} failed (${e.message}); the other workers go on (ps.mode ${cfg.ps.mode})\n`) } : {}),
    }));
  } else if (cfg.ps.servers > 0) {
    psRoles(1, cfg.ps.servers); // throws: one rank leaves no worker beside the servers
  } else {
    await restarting((again) => new Trainer(cfg).run({ resume: again, ...(trace ? { trace } : {}) }));
  }
}

async function sample(argv: string[]): Promise<void> {
  const { pos, opt } = parse(argv, ['--prompt', '--tokens', '--temperature', '--top-k', '--seed', '--threads'], []);
  if (pos.length !== 1) throw new UsageError('weft sample takes one checkpoint (or run directory)');
  const where = pos[0]!;
  if (!existsSync(where)) throw new Error(`weft sample: ${where} does not exist`);
  const path = statSync(where).isDirectory() && existsSync(`${where}/latest`) ? latestCheckpoint(where)! : where;
  const ck = loadCheckpoint(path);
  const state = ck.state as { config?: unknown; tokenizer?: TokenizerJSON };
  const cfg = parseConfig(state.config, `${dirname(path)}/state.json config`);
  if (cfg.model.kind !== 'gpt') throw new Error(`weft sample: ${path} is a '${cfg.model.kind}' run; sampling text needs a GPT (model.kind 'gpt')`);
  if (opt.has('--threads')) setThreads(num(opt, '--threads', 1));
  const tokenizer = tokenizerFromJSON(state.tokenizer ?? { type: 'byte' }, `${path}/state.json`);
  const model = new GPT(gptConfig(cfg, tokenizer.vocabSize));
  const params = bindParameters(model);
  loadStateDict(params, ck.weights);
  const text = await new Generator(model, tokenizer).generate(opt.get('--prompt') ?? cfg.sample.prompt, {
    tokens: num(opt, '--tokens', cfg.sample.tokens), temperature: num(opt, '--temperature', cfg.sample.temperature),
    topK: num(opt, '--top-k', cfg.sample.topK), seed: num(opt, '--seed', 0),
  });
  process.stdout.write(`${text}\n`);
}

async function bench(argv: string[]): Promise<void> {
  const { opt, on } = parse(argv, ['--preset', '--threads', '--steps', '--repeat', '--nproc', '--bucket-mb', '--programs', '--precision', '--matmul-precision', '--tp', '--zero', '--pp', '--schedule', '--microbatches', '--chunks'], ['--worker', '--no-torch', '--offload']);
  const nproc = num(opt, '--nproc', 1);
  const programs = opt.get('--programs') ?? BENCH_DEFAULTS.programs;
  if (!(DDP_PROGRAMS as readonly string[]).includes(programs)) throw new UsageError(`--programs must be ${DDP_PROGRAMS.join(', ')}, got '${programs}'`);
  const precision = opt.get('--precision') ?? BENCH_DEFAULTS.precision;
  if (!(PRECISIONS as readonly string[]).includes(precision)) throw new UsageError(`--precision must be ${PRECISIONS.join(', ')}, got '${precision}'`);
  const matmulPrecision = opt.get('--matmul-precision') ?? BENCH_DEFAULTS.matmulPrecision;
  if (!(MATMUL_PRECISIONS as readonly string[]).includes(matmulPrecision)) throw new UsageError(`--matmul-precision must be ${MATMUL_PRECISIONS.join(', ')}, got '${matmulPrecision}'`);
  const dp: BenchSettings = {
    bucketMB: num(opt, '--bucket-mb', BENCH_DEFAULTS.bucketMB), programs: programs as BenchSettings['programs'], precision: precision as Precision, matmulPrecision: matmulPrecision as MatmulPrecision,
  };
  const tp = num(opt, '--tp', 1);
  const zero = num(opt, '--zero', 0);
  const pp = num(opt, '--pp', 1);
  if (pp > 1) {
    // A pipeline over every rank beside DDP on the same ranks, alternating (--repeat pairs).
    if (pp !== nproc) throw new UsageError(`--pp ${pp} needs --nproc ${pp} (a pipeline over every rank)`);
    const schedule = (opt.get('--schedule') ?? '1f1b') as ScheduleKind;
    const steps = num(opt, '--steps', 6);
    const cpu = cpuInfo();
    for (const p of (opt.get('--preset') ?? 'medium').split(',') as Preset[]) {
      const pipeline = { pp, schedule, microbatches: num(opt, '--microbatches', PRESET_BATCH[p]), chunks: num(opt, '--chunks', schedule === 'interleaved' ? 2 : 1) };
      for (let r = 0; r < num(opt, '--repeat', 2); r++) {
        const data = await measureWeftRanks(p, 1, steps, nproc, dp);
        const pipe = await measureWeftRanks(p, 1, steps, nproc, BENCH_DEFAULTS, 1, 0, false, pipeline);
        process.stdout.write(`${JSON.stringify({ preset: p, cpu: cpu.isa, pipeline: pipe, data_parallel: data, pp_over_dp_tokens_per_s: +(pipe.tokens_per_s / data.tokens_per_s).toFixed(3) }, null, 1)}\n`);
      }
    }
    return;
  }
  if (zero > 0) {
    // ZeRO beside DDP on the same ranks, alternating (--repeat pairs), as the trainer runs them.
    if (nproc < 2) throw new UsageError(`--zero ${zero} needs --nproc 2 or more`);
    if (zero > 3) throw new UsageError(`--zero ${zero}: the stages are 1, 2 and 3`);
    const offload = on.has('--offload');
    const steps = num(opt, '--steps', 8);
    const cpu = cpuInfo();
    for (const p of (opt.get('--preset') ?? 'medium').split(',') as Preset[]) {
      for (let r = 0; r < num(opt, '--repeat', 2); r++) {
        const data = await measureWeftRanks(p, 1, steps, nproc, dp);
        const z = await measureWeftRanks(p, 1, steps, nproc, dp, 1, zero, offload);
        process.stdout.write(`${JSON.stringify({ preset: p, cpu: cpu.isa, zero: z, data_parallel: data, zero_over_dp_tokens_per_s: +(z.tokens_per_s / data.tokens_per_s).toFixed(3) }, null, 1)}\n`);
      }
    }
    return;
  }
  if (tp > 1) {
    // Tensor parallel beside data parallel on the same ranks (PyTorch's anchors have no TP run).
    if (tp !== nproc) throw new UsageError(`--tp ${tp} needs --nproc ${tp} (tensor parallel over every rank)`);
    const presets = (opt.get('--preset') ?? 'small').split(',') as Preset[];
    const steps = num(opt, '--steps', 5);
    const cpu = cpuInfo();
    for (const p of presets) {
      const tensor = await measureWeftRanks(p, 1, steps, nproc, dp, tp);
      const data = await measureWeftRanks(p, 1, steps, nproc, dp);
      process.stdout.write(`${JSON.stringify({ preset: p, cpu: cpu.isa, tensor_parallel: tensor, data_parallel: data, tp_over_dp_tokens_per_s: +(tensor.tokens_per_s / data.tokens_per_s).toFixed(3) }, null, 1)}\n`);
    }
    return;
  }
  const presets = (opt.get('--preset') ?? 'small,medium').split(',') as Preset[];
  const threads = ints(opt, '--threads', [1, 2]);
  const steps = num(opt, '--steps', 10);
  if (on.has('--worker')) {
    const m = nproc > 1 ? await measureWeftRanks(presets[0]!, threads[0]!, steps, nproc, dp) : await measureWeft(presets[0]!, threads[0]!, steps, undefined, dp);
    process.stdout.write(`${JSON.stringify(m)}\n`);
    return;
  }
  if (on.has('--no-torch')) {
    for (const p of presets) {
      for (const t of threads) {
        const m = nproc > 1 ? await measureWeftRanks(p, t, steps, nproc, dp) : await measureWeft(p, t, steps, undefined, dp);
        process.stdout.write(`${JSON.stringify(m)}\n`);
      }
    }
    return;
  }
  const report = await sideBySide({ presets, threads: nproc > 1 ? [1] : threads, steps, repeat: num(opt, '--repeat', 1), nproc, dp, log: (s) => process.stderr.write(`${s}\n`) });
  process.stdout.write(`${JSON.stringify(report, null, 1)}\n`);
}

/**
 * `weft memory`: the per-rank estimate (train/memory.ts) as a table, or one JSON object whose
 * `peak_bytes` is the predicted peak RSS of a rank; with `--budget`, whether it fits (exit 0 either way).
 */
/**
 * `weft train --budget SIZE`: the run's memory estimated before anything trains (`weft memory`, in a
 * child process, so the estimate's own allocations never count toward the run's peak), refused
 * when it exceeds the budget: per rank under MPI (each rank a process), for the whole process with
 * the threads backend (every rank a thread of it). The error names the budget, the estimate, and
 * what ZeRO stage 3 (then stage 3 offloaded to disk) would need where the run has data-parallel ranks to shard over.
 */
function checkBudget(text: string, config: string, sets: readonly string[], cfg: RunConfig, ranks: number, backend: string): void {
  let budget: number;
  try { budget = parseSize(text, '--budget'); } catch (e) { throw new UsageError((e as Error).message); }
  const threads = backend === 'threads' && ranks > 1;
  const estimate = (extra: readonly string[]): MemoryEstimate => {
    const args = [fileURLToPath(import.meta.url), 'memory', config, '--json', '--nproc', String(ranks), ...[...sets, ...extra].flatMap((x) => ['--set', x])];
    // Outside mpirun: the child must not take the launcher's MPI environment for its own.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OMPI_') && !k.startsWith('PMIX_')));
    return JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', env })) as MemoryEstimate;
  };
  const e = estimate([]);
  const need = threads ? e.process_peak_bytes : e.peak_bytes;
  if (need <= budget) return;
  const what = threads ? `the process (${ranks} ranks as threads)` : 'each rank';
  // What would fit: ZeRO stage 3, then stage 3 with its shards and the optimizer's state on disk (the first that fits ends the list).
  const tries: string[][] = [];
  if (e.dp > 1 && cfg.parallel.zero < 3) tries.push(['parallel.zero=3']);
  if (e.dp > 1 && cfg.parallel.offload !== 'disk') tries.push(['parallel.zero=3', 'parallel.offload=disk']);
  const hints: string[] = [];
  for (const t of tries) {
    const z = estimate(t);
    const bytes = threads ? z.process_peak_bytes : z.peak_bytes;
    hints.push(`with ${t.map((x) => `--set ${x}`).join(' ')} the estimate is ${fmtBytes(bytes)}`);
    if (bytes <= budget) break;
  }
  const hint = hints.length > 0 ? `; ${hints.join(', ')}` : '';
  throw new Error(`--budget ${fmtBytes(budget)}: the estimated peak memory of ${what} is ${fmtBytes(need)} (weft memory: parameters ${fmtBytes(e.params_bytes)}, `
    + `gradients ${fmtBytes(e.grads_bytes)}, optimizer ${fmtBytes(e.optimizer_bytes)}, activations ${fmtBytes(e.activations_bytes)}, workspace ${fmtBytes(e.workspace_bytes)})${hint}; nothing was trained`);
}

async function memory(argv: string[]): Promise<void> {
  const { pos, sets, opt, on } = parse(argv, ['--nproc', '--budget'], ['--json']);
  if (pos.length !== 1) throw new UsageError('weft memory takes one config file');
  const nproc = num(opt, '--nproc', 1);
  if (!Number.isInteger(nproc) || nproc < 1) throw new UsageError(`--nproc must be a positive integer, got ${opt.get('--nproc')}`);
  let budget: number | null = null;
  if (opt.has('--budget')) {
    try { budget = parseSize(opt.get('--budget')!, '--budget'); } catch (e) { throw new UsageError((e as Error).message); }
  }
  const cfg = loadConfig(pos[0]!, sets);
  const e = await estimateMemory(cfg, nproc);
  const fits = budget === null ? null : e.peak_bytes <= budget;
  if (on.has('--json')) {
    process.stdout.write(`${JSON.stringify({ config: pos[0]!, sets, ...e, ...(budget === null ? {} : { budget_bytes: budget, fits }) })}\n`);
    return;
  }
  const rows: [string, number][] = [
    ['parameters', e.params_bytes + e.buffers_bytes], ['gradients', e.grads_bytes], [`optimizer state (${e.optimizer})`, e.optimizer_bytes],
    ['activations', e.activations_bytes], ['workspace', e.workspace_bytes], ['runtime (Node, onnxruntime, data)', e.runtime_bytes],
    ['peak RSS per rank', e.peak_bytes],
  ];
  if (nproc > 1) rows.push([`process peak, threads backend (${nproc} ranks)`, e.process_peak_bytes]);
  const w = Math.max(...rows.map(([k]) => k.length));
  const lines = [`weft memory: ${pos[0]!}${sets.length ? ` ${sets.map((x) => `--set ${x}`).join(' ')}` : ''}; ${nproc} rank${nproc > 1 ? 's' : ''} (dp ${e.dp} x tp ${e.tp})`,
    ...rows.map(([k, b]) => `  ${k.padEnd(w)}  ${fmtBytes(b).padStart(10)}`)];
  if (budget !== null) lines.push(`  budget ${fmtBytes(budget)}: ${fits ? 'fits' : `does not fit (over by ${fmtBytes(e.peak_bytes - budget)})`}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === 'train') await train(rest);
  else if (cmd === 'sample') await sample(rest);
  else if (cmd === 'bench') await bench(rest);
  else if (cmd === 'memory') await memory(rest);
  else if (cmd === 'export') await exportCommand(rest);
  else if (cmd === 'optimize') await optimizeCommand(rest);
  else if (cmd === 'quantize') await quantizeCommand(rest);
  else if (cmd === 'bench-infer') await benchInferCommand(rest);
  else if (cmd === 'serve') await serveCommand(rest);
  else if (cmd === 'protect') await protectCommand(rest);
  else if (cmd === 'keygen') await keygenCommand(rest);
  else if (cmd === 'prune') await pruneCommand(rest);
  else if (cmd === 'eval') await evalCommand(rest);
  else if (cmd === 'board') await boardCommand(rest);
  else if (cmd === 'launch') await launchCommand(rest);
  else throw new UsageError(cmd === undefined || cmd === '--help' || cmd === '-h' ? '' : `unknown command '${cmd}'`);
}

main().catch((e: unknown) => {
  if (e instanceof UsageError) process.stderr.write(`${e.message ? `weft: ${e.message}\n` : ''}${USAGE}\n`);
  else process.stderr.write(`weft: ${(e as Error).message}\n`);
  process.exitCode = e instanceof UsageError && !e.message ? 0 : 1;
});
