/**
 * The process's resident memory, from Linux's /proc/self/status: VmRSS (now) and VmHWM (the
 * high-water mark). Writing '5' to /proc/self/clear_refs resets VmHWM to the current RSS (Linux
 * >= 4.0), so a run's peak excludes whatever came before the reset. Elsewhere both read null.
 *
 * RSS counts pages touched, not pages reserved: a zeroed Float32Array or an onnxruntime arena
 * region that nobody has written yet is not resident. Every thread of the process (the threads
 * backend's ranks, the data loader's worker) shares one figure.
 */
import { readFileSync, writeFileSync } from 'node:fs';

function status(field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch { return null; }
}

/** Resident bytes now, or null where /proc is missing. */
export const rssBytes = (): number | null => status('VmRSS');

/** Peak resident bytes since the process started or since the last `resetPeakRss`; null where /proc is missing. */
export const peakRssBytes = (): number | null => status('VmHWM');

/** Resets the peak to the current RSS; false where the kernel does not allow it. */
export function resetPeakRss(): boolean {
  try { writeFileSync('/proc/self/clear_refs', '5'); return true; } catch { return false; }
}
