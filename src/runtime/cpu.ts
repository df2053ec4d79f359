/**
 * What the CPU can do, for benchmark reports: onnxruntime's MLAS picks kernels by ISA (AVX2,
 * AVX-512, VNNI, AMX), so a figure means little without it. Machines here are Intel Xeons with
 * AVX-512/VNNI/AMX or AMD EPYCs with AVX2 only; compare ratios within one run.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';

export interface CpuInfo {
  model: string;
  cores: number;
  /** The widest vector ISA MLAS can use: 'amx', 'avx512-vnni', 'avx512', 'avx2' or 'other'. */
  isa: string;
  flags: { avx2: boolean; avx512f: boolean; avx512_vnni: boolean; amx_tile: boolean };
}

export function cpuInfo(): CpuInfo {
  let flags = new Set<string>();
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    flags = new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
  } catch { /* not Linux: flags unknown */ }
  const f = { avx2: flags.has('avx2'), avx512f: flags.has('avx512f'), avx512_vnni: flags.has('avx512_vnni'), amx_tile: flags.has('amx_tile') };
  const isa = f.amx_tile ? 'amx' : f.avx512_vnni ? 'avx512-vnni' : f.avx512f ? 'avx512' : f.avx2 ? 'avx2' : 'other';
  return { model: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), isa, flags: f };
}
