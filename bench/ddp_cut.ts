/**
 * npm run bench:ddp-cut — where data parallelism's backward is cut (DDPOptions.programs), on
 * `weft bench`'s step (forward + backward and the gradients' all-reduce; 2 thread ranks x 1
 * thread, random tokens). Each interleaved run is one process whose ranks hold a DDP per cut
 * (tail, buckets, none), and the step with no communication (each rank an independent copy, the
 * bound), over the same parameters, and step them in turn, so the machine's drift falls on all
 * alike; `repeat` such runs. Prints JSON (median step per cut, tokens/s, crossing MB, exposed
 * communication, each cut's tokens/s over the independent copies', the ISA) and writes
 * bench/results/ddp_cut.json.
 * Usage: node dist/bench/ddp_cut.js [preset] [repeat] [rounds]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchThreads } from '../src/comm/threads/launch.js';
import { GPT_PRESETS, PRESET_BATCH } from '../src/nn/index.js';
import { runJson } from '../src/cli/bench.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import type { CutRankResult } from './ddp_cut_rank.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const self = fileURLToPath(import.meta.url);

if (process.argv[2] === '--interleaved') {
  // One interleaved run (a child of the main run): every rank's step times per cut.
  const [preset, rounds] = [process.argv[3] as keyof typeof GPT_PRESETS, Number(process.argv[4])];
  const ranks = await launchThreads<CutRankResult[]>({ nproc: 2, entry: new URL('./ddp_cut_rank.js', import.meta.url), args: { preset, rounds }, timeoutMs: 900_000 });
  // A step of the pair lasts as long as its slower rank.
  const rows = ranks[0]!.map((r, i) => ({ ...r, ms: r.ms.map((x, j) => Math.max(x, ranks[1]![i]!.ms[j]!)) }));
  process.stdout.write(`${JSON.stringify({ rows })}\n`);
} else {
  const preset = (process.argv[2] ?? 'medium') as keyof typeof GPT_PRESETS;
  const repeat = Number(process.argv[3] ?? 2);
  const rounds = Number(process.argv[4] ?? 6);
  const tokens = 2 * PRESET_BATCH[preset] * GPT_PRESETS[preset].ctx;
  const runs: Record<string, { ms: number[]; cut: string; crossing_mb: number; count: number; exposed: number[]; wait: number[] }> = {};
  for (let r = 0; r < repeat; r++) {
    const res = await runJson(process.execPath, [self, '--interleaved', preset, String(rounds)]) as unknown as { rows: CutRankResult[] };
    for (const row of res.rows) {
      const k = row.programs;
      runs[k] ??= { ms: [], cut: row.cut, crossing_mb: row.crossing_mb, count: row.count, exposed: [], wait: [] };
      runs[k]!.ms.push(...row.ms);
      runs[k]!.exposed.push(...row.exposed_ms);
      runs[k]!.wait.push(...row.peer_wait_ms);
      process.stderr.write(`${r} ${k}: median ${median(row.ms).toFixed(0)} ms\n`);
    }
  }
  const bound = median(runs['independent']!.ms);
  const cpu = cpuInfo();
  const result = {
    bench: 'ddp_cut', preset, repeat, rounds, ranks: 2, machine: { model: cpu.model, isa: cpu.isa, cores: cpu.cores },
    note: 'step = forward + backward + all-reduce, barrier to barrier, the slower rank of each; tokens/s over both ranks, without the optimizer',
    cuts: Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, {
      cut: v.cut, programs: v.count, crossing_mb: v.crossing_mb, step_ms: +median(v.ms).toFixed(1), tokens_per_s: +(tokens / (median(v.ms) / 1000)).toFixed(1),
      exposed_comm_ms: +median(v.exposed).toFixed(1), peer_wait_ms: +median(v.wait).toFixed(1), steps: v.ms.length,
      over_independent: +(bound / median(v.ms)).toFixed(3),
    }])),
  };
  const text = JSON.stringify(result, null, 1);
  process.stdout.write(`${text}\n`);
  const out = join(dirname(self), '../../bench/results/ddp_cut.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${text}\n`);
}
