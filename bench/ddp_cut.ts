/**
 * npm run bench:ddp-cut — where data parallelism's backward is cut, and the C allocator's
 * thresholds, on `weft bench`'s step (2 thread ranks x 1 thread, AdamW, random tokens): every
 * `--programs` (tail, buckets, none) with the allocator tuned and with glibc's defaults
 * (WEFT_MALLOC=0), and one rank alone and two independent one-rank processes at once (the
 * machine's bound on two ranks), each configuration in its own process, all alternating, `repeat`
 * rounds. Prints JSON (tokens/s per run, medians, each configuration over two ranks alone, the ISA)
 * and writes bench/results/ddp_cut.json. Usage: node dist/bench/ddp_cut.js [preset] [repeat] [steps]
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo } from '../src/runtime/cpu.js';

const preset = process.argv[2] ?? 'medium';
const repeat = Number(process.argv[3] ?? 3);
const steps = Number(process.argv[4] ?? 8);
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

type Row = { tokens_per_s: number; exposed_comm_ms?: number; peer_wait_ms?: number; crossing_mb?: number; ddp_programs?: number };
function worker(nproc: number, programs: string, malloc: boolean): Promise<Row> {
  const args = [cli, 'bench', '--worker', '--preset', preset, '--threads', '1', '--steps', String(steps), '--nproc', String(nproc), '--programs', programs];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, WEFT_MALLOC: malloc ? '' : '0' } });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!) as Row) : reject(new Error(`ddp_cut: ${args.join(' ')} exited with ${code}`))));
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const configs = [
  ...(['tail', 'buckets', 'none'] as const).flatMap((programs) => [true, false].map((malloc) => ({ name: `${programs}${malloc ? '' : ' WEFT_MALLOC=0'}`, programs, malloc }))),
];
const runs: Record<string, Row[]> = Object.fromEntries([...configs.map((c) => c.name), 'alone', 'alone WEFT_MALLOC=0', 'two independent', 'two independent WEFT_MALLOC=0'].map((k) => [k, []]));
for (let r = 0; r < repeat; r++) {
  for (const c of configs) {
    const row = await worker(2, c.programs, c.malloc);
    runs[c.name]!.push(row);
    process.stderr.write(`${r} ${c.name}: ${row.tokens_per_s.toFixed(0)} tokens/s\n`);
  }
  for (const malloc of [true, false]) {
    const tag = malloc ? '' : ' WEFT_MALLOC=0';
    runs[`alone${tag}`]!.push(await worker(1, 'tail', malloc));
    const pair = await Promise.all([worker(1, 'tail', malloc), worker(1, 'tail', malloc)]);
    runs[`two independent${tag}`]!.push({ tokens_per_s: pair[0]!.tokens_per_s + pair[1]!.tokens_per_s });
  }
}
const cpu = cpuInfo();
const result = {
  bench: 'ddp_cut', preset, steps, repeat, ranks: 2, machine: { model: cpu.model, isa: cpu.isa, cores: cpu.cores },
  configurations: Object.fromEntries(Object.entries(runs).map(([k, rs]) => {
    const alone = median(runs[k.endsWith('WEFT_MALLOC=0') ? 'alone WEFT_MALLOC=0' : 'alone']!.map((x) => x.tokens_per_s));
    const tps = median(rs.map((x) => x.tokens_per_s));
    return [k, {
      tokens_per_s: +tps.toFixed(1), runs: rs.map((x) => +x.tokens_per_s.toFixed(1)),
      over_two_alone: k.startsWith('alone') ? null : +(tps / (2 * alone)).toFixed(3),
      ...(rs[0]!.ddp_programs !== undefined ? {
        programs: rs[0]!.ddp_programs, crossing_mb: rs[0]!.crossing_mb,
        exposed_comm_ms: +median(rs.map((x) => x.exposed_comm_ms!)).toFixed(1), peer_wait_ms: +median(rs.map((x) => x.peer_wait_ms!)).toFixed(1),
      } : {}),
    }];
  })),
};
const text = JSON.stringify(result, null, 1);
process.stdout.write(`${text}\n`);
const out = join(dirname(fileURLToPath(import.meta.url)), '../../bench/results/ddp_cut.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${text}\n`);
