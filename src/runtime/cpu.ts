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
  /** The clock /proc/cpuinfo reports (MHz, the first core's; a VM's nominal clock, not a measured boost). */
  mhz: number | null;
  /** FP32 flops per cycle per core assumed for the ISA (two FMA pipes, see `fp32Peak`), and the machine's peak in GFLOP/s. */
  fp32FlopsPerCycle: number;
  fp32PeakGflops: number | null;
  /** How the peak was derived, for reports. */
  peakBasis: string;
}

/**
 * FP32 flops per cycle per core: two FMA pipes of the vector width (2 x 2 x lanes). AVX-512 on
 * Intel Xeon: 64. AMD: Zen 4 runs AVX-512 on 256-bit pipes (32); Zen 5, told by avx512_vp2intersect,
 * has 512-bit ones (64). AVX2 with FMA: 32. Otherwise 8 (SSE). An assumption per ISA, stated with
 * every figure; a Xeon with one AVX-512 FMA pipe has half.
 */
function flopsPerCycle(vendor: string, flags: ReadonlySet<string>): [number, string] {
  if (flags.has('avx512f')) {
    if (vendor === 'AuthenticAMD') return flags.has('avx512_vp2intersect') ? [64, 'AMD Zen 5: 2 x 512-bit FMA'] : [32, 'AMD Zen 4: AVX-512 on 2 x 256-bit FMA'];
    return [64, 'AVX-512: 2 x 512-bit FMA'];
  }
  if (flags.has('avx2') && flags.has('fma')) return [32, 'AVX2: 2 x 256-bit FMA'];
  return [8, 'SSE: 2 x 128-bit mul/add'];
}

export function cpuInfo(): CpuInfo {
  let flags = new Set<string>();
  let [vendor, mhz] = ['', null as number | null];
  try {
    const lines = readFileSync('/proc/cpuinfo', 'utf8').split('\n');
    const field = (name: string): string | undefined => lines.find((l) => l.startsWith(name))?.split(':')[1]?.trim();
    flags = new Set((field('flags') ?? '').split(/\s+/));
    vendor = field('vendor_id') ?? '';
    const m = Number(field('cpu MHz'));
    mhz = Number.isFinite(m) && m > 0 ? m : null;
  } catch { /* not Linux: flags unknown */ }
  const f = { avx2: flags.has('avx2'), avx512f: flags.has('avx512f'), avx512_vnni: flags.has('avx512_vnni'), amx_tile: flags.has('amx_tile') };
  const isa = f.amx_tile ? 'amx' : f.avx512_vnni ? 'avx512-vnni' : f.avx512f ? 'avx512' : f.avx2 ? 'avx2' : 'other';
  const cores = availableParallelism();
  const [perCycle, basis] = flopsPerCycle(vendor, flags);
  const peak = mhz === null ? null : +((cores * mhz * perCycle) / 1000).toFixed(1);
  return {
    model: cpus()[0]?.model ?? 'unknown', cores, isa, flags: f, mhz, fp32FlopsPerCycle: perCycle, fp32PeakGflops: peak,
    peakBasis: `${cores} cores x ${mhz === null ? '?' : (mhz / 1000).toFixed(2)} GHz x ${perCycle} flops/cycle (${basis})`,
  };
}
