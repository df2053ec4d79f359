/**
 * What watching a run costs `weft board`: reading a long run's metrics.jsonl the first time, each
 * poll of a growing file (one new line), and the snapshot a page loads, as JSON.
 *   npm run bench:board [-- --rows 100000]
 */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuInfo } from '../src/runtime/cpu.js';
import { MetricsTail } from '../src/board/runs.js';
import { startBoard } from '../src/board/server.js';

const arg = (k: string, d: number): number => { const i = process.argv.indexOf(k); return i < 0 ? d : Number(process.argv[i + 1]); };
const rows = arg('--rows', 100_000);
const dir = mkdtempSync(join(tmpdir(), 'weft-bench-board-'));
const file = join(dir, 'metrics.jsonl');
// Lines shaped like the trainer's (loss, lr, grad_norm, throughput, memory), an evaluation every 100 steps.
const lineOf = (s: number): string => `${JSON.stringify({ step: s, loss: 3 + Math.sin(s), lr: 1e-3, grad_norm: 1.2345678, tokens_per_s: 12345.678, elapsed_s: s * 0.1, rss_bytes: 2e8 + s, ...(s % 100 === 0 ? { val_loss: 3.1, perplexity: 22.2 } : {}) })}\n`;
let text = '';
for (let s = 1; s <= rows; s++) text += lineOf(s);
writeFileSync(file, text);
const ms = (f: () => void): number => { const t = performance.now(); f(); return performance.now() - t; };
const tail = new MetricsTail(file);
const first = ms(() => tail.read());
const polls: number[] = [];
for (let i = 1; i <= 200; i++) { appendFileSync(file, lineOf(rows + i)); polls.push(ms(() => tail.read())); }
polls.sort((a, b) => a - b);
const board = await startBoard({ runs: [dir], port: 0, pollMs: 60_000 });
const t0 = performance.now();
const snap = await (await fetch(`${board.url}api/runs`)).text();
const snapshotMs = performance.now() - t0;
await board.close();
rmSync(dir, { recursive: true, force: true });
const c = cpuInfo();
console.log(JSON.stringify({
  bench: 'board', cpu: c.model, isa: c.isa, rows, file_bytes: Buffer.byteLength(text),
  first_read_ms: +first.toFixed(1), poll_one_line_ms_p50: +polls[100]!.toFixed(3), poll_one_line_ms_p99: +polls[197]!.toFixed(3),
  snapshot_ms: +snapshotMs.toFixed(1), snapshot_bytes: snap.length,
}));
