/**
 * `weft board [runs...]`: a local web page plotting runs' metrics live (src/board/), or, with
 * `--png`, one chart of them drawn by headless Chromium into a PNG file.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { BoardInputError } from '../board/runs.js';
import { startBoard } from '../board/server.js';
import { screenshot } from '../board/chromium.js';
import { num, parse, UsageError } from './args.js';

/** Pixels above and below a --png chart: its title and one line of legend. */
const PNG_FRAME = 90;

export const BOARD_USAGE = 'weft board [run-dir | runs-dir | metrics.jsonl ...] [--port 6006] [--host 127.0.0.1] [--poll-ms 500] [--png out.png [--panels loss,lr] [--title T] [--size 900x480]]';

export async function boardCommand(argv: string[]): Promise<void> {
  const { pos, opt } = parse(argv, ['--port', '--host', '--poll-ms', '--png', '--panels', '--title', '--size'], []);
  const runs = pos.length > 0 ? pos : ['runs'];
  const port = num(opt, '--port', opt.has('--png') ? 0 : 6006);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be an integer in 0..65535, got ${opt.get('--port')}`);
  const pollMs = num(opt, '--poll-ms', 500);
  if (!(pollMs >= 10)) throw new UsageError(`--poll-ms must be at least 10, got ${opt.get('--poll-ms')}`);
  for (const k of ['--panels', '--title', '--size']) if (opt.has(k) && !opt.has('--png')) throw new UsageError(`${k} goes with --png`);
  if (pos.length === 0 && !existsSync('runs')) throw new Error('board: no run directories given, and there is no ./runs: pass one or more run directories or metrics.jsonl files');
  let board;
  try {
    board = await startBoard({ runs, port, pollMs, ...(opt.has('--host') ? { host: opt.get('--host')! } : {}) });
  } catch (e) {
    if (e instanceof BoardInputError) throw new Error(`board: ${e.message}`);
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new Error(`board: port ${port} is in use: pass --port N (or --port 0 for any free port)`);
    throw e;
  }
  if (opt.has('--png')) {
    try {
      // A PNG of nothing would be a blank picture in a report: say so instead.
      if (board.snapshot().runs.every((r) => r.rows.length === 0)) throw new Error(`board --png: no metrics rows yet in ${runs.join(', ')}`);
      const [width, height] = size(opt.get('--size') ?? '900x480');
      const q = new URLSearchParams({ static: '1', width: String(width), height: String(height) });
      const panels = opt.get('--panels') ?? 'loss';
      q.set('panels', panels);
      const n = panels.split(',').length;
      if (opt.has('--title')) q.set('title', opt.get('--title')!);
      const out = resolve(opt.get('--png')!);
      mkdirSync(dirname(out), { recursive: true });
      // The window holds the chart's title above it and its legend below.
      const window = { width, height: n * (height + PNG_FRAME) };
      await screenshot(`${board.url}?${q}`, out, window);
      process.stdout.write(`${JSON.stringify({ png: out, runs, panels: panels.split(','), ...window })}\n`);
    } finally {
      await board.close();
    }
    return;
  }
  const n = board.snapshot().runs.length;
  process.stdout.write(`weft board: ${board.url} (${runs.join(', ')}; ${n} run${n === 1 ? '' : 's'} so far, read every ${pollMs} ms); Ctrl-C to stop\n`);
  await new Promise<void>((ok) => {
    const stop = (): void => { void board.close().then(ok); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

function size(text: string): [number, number] {
  const m = /^(\d+)x(\d+)$/.exec(text);
  const w = m ? Number(m[1]) : NaN, h = m ? Number(m[2]) : NaN;
  if (!(w >= 200 && h >= 150 && w <= 4000 && h <= 4000)) throw new UsageError(`--size must be WIDTHxHEIGHT in pixels (200..4000 x 150..4000), got '${text}'`);
  return [w, h];
}
