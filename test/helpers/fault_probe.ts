/**
 * Child process of malloc.test.ts: runs one program whose 40 MB output onnxruntime-node copies into
 * a fresh buffer, 8 times with a collection between, and prints the minor page faults of runs 3-8
 * and the allocator's mode (WEFT_MALLOC decides it) as one JSON line. Run with --expose-gc.
 */
import { compile } from '../../src/tensor/compile.js';
import { setThreads } from '../../src/runtime/executor.js';
import { tuneAllocator } from '../../src/runtime/malloc.js';

setThreads(1);
const n = 10 * 2 ** 20;
const f = compile((x) => [x.mul(2)]);
const x = { data: new Float32Array(n).fill(1), shape: [n], dtype: 'float32' as const };
const gc = (globalThis as { gc?: () => void }).gc!;
let faults = 0;
for (let i = 0; i < 8; i++) {
  const before = process.resourceUsage().minorPageFault;
  const [y] = await f(x);
  if ((y as Float32Array)[n - 1] !== 2) throw new Error('fault_probe: wrong output');
  if (i >= 2) faults += process.resourceUsage().minorPageFault - before;
  gc();
}
process.stdout.write(`${JSON.stringify({ ...tuneAllocator(), faultsPerRun: faults / 6, pagesPerOutput: (n * 4) / 4096 })}\n`);
