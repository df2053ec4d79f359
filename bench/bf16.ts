/**
 * npm run bench:bf16 — would bf16 matrix products beat float32 on this CPU? Builds
 * bench/native/bf16_matmul.c against oneDNN (Debian libdnnl-dev) and runs it on one thread: oneDNN's
 * matmul on the benchmark GPT's shapes in float32 and in bfloat16 (float32 accumulation), with the
 * kernel oneDNN chose for each. Prints JSON with the CPU's ISA and its bf16 flags (avx512_bf16,
 * amx_bf16) and writes bench/results/bf16.json. Usage: node dist/bench/bf16.js [reps]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo } from '../src/runtime/cpu.js';

const reps = process.argv[2] ?? '9';
const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(join(tmpdir(), 'weft-bf16-'));
try {
  const exe = join(dir, 'bf16_matmul');
  try {
    execFileSync('cc', ['-O2', join(root, 'bench/native/bf16_matmul.c'), '-o', exe, '-ldnnl', '-lm'], { stdio: 'inherit' });
  } catch {
    throw new Error('bench:bf16 needs a C compiler and oneDNN\'s headers (apt-get install gcc libdnnl-dev)');
  }
  const out = JSON.parse(execFileSync(exe, [reps], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } })) as Record<string, unknown>;
  const flags = (/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/);
  const cpu = cpuInfo();
  const result = { bench: 'bf16', threads: 1, machine: { model: cpu.model, isa: cpu.isa, bf16_flags: flags.filter((f) => /bf16/.test(f)) }, ...out };
  const text = JSON.stringify(result, null, 1);
  process.stdout.write(`${text}\n`);
  const file = join(root, 'bench/results/bf16.json');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${text}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
