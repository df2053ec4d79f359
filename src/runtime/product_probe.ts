/**
 * The measuring process of runtime/native_products.ts: reads `{ threads, requests }` as JSON on
 * stdin, measures each product (MLAS in a program, each library, the cut), records the choices in
 * the machine's file, and prints them as JSON. A process of its own, so that measuring leaves
 * nothing in the run's memory.
 */
import '../ir/ops/index.js';
import { setThreads } from './executor.js';
import { runProbes } from './native_products.js';
import type { ProbeRequest } from './native_products.js';

let input = '';
process.stdin.setEncoding('utf8').on('data', (d: string) => { input += d; });
process.stdin.on('end', () => {
  const { threads, requests } = JSON.parse(input) as { threads: number; requests: ProbeRequest[] };
  setThreads(threads);
  runProbes(requests, threads).then((out) => process.stdout.write(JSON.stringify(out)), (e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
});
