/**
 * `weft board`'s HTTP server: the page, uPlot from node_modules (nothing from the network at view
 * time), and the runs' metrics, live.
 *
 *   GET /              the page (src/board/page/index.html)
 *   GET /board.js, /board.css, /uplot.js, /uplot.css
 *   GET /api/runs      every run now: {runs: [{id, name, file, exists, rows, skipped}]}
 *   GET /api/events    the same as server-sent events: one `snapshot`, then an `update` per poll
 *                      that found something ({runs: [...only what changed, rows and skipped lines
 *                      past the last update, or all of them with reset: true], removed: [ids]})
 *
 * One poll loop (every `pollMs`) reads each run's file from where it stopped (runs.ts), finds runs
 * that appeared under the given directories, and sends what it read to every open page.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkRunPaths, discoverRuns, MetricsTail } from './runs.js';
import type { MetricRow, SkippedLine } from './runs.js';

export interface BoardOptions {
  /** Run directories, parents of run directories, or metrics files (see runs.ts `discoverRuns`). */
  runs: readonly string[];
  /** Interface to listen on: loopback unless told otherwise. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** How often the files are read, ms. */
  pollMs?: number;
  /** Paths are named relative to this. */
  cwd?: string;
}

/** A run as the page receives it. */
export interface RunState { id: string; name: string; file: string; exists: boolean; rows: MetricRow[]; skipped: SkippedLine[] }

/** What one poll sends: changed runs (`reset`: their rows replace what the page had) and runs gone. */
export interface BoardUpdate { runs: (RunState & { reset: boolean })[]; removed: string[] }

export interface Board {
  url: string;
  /** Reads every file now (the poll loop does this every `pollMs`), sending what changed. */
  poll(): BoardUpdate;
  /** Every run as it stands. */
  snapshot(): { runs: RunState[] };
  close(): Promise<void>;
}

const PAGE_DIR = fileURLToPath(new URL('../../../src/board/page/', import.meta.url));

/** uPlot's built files, found the way Node resolves the package (so a hoisted or nested install both work). */
function uplotDir(): string {
  return dirname(createRequire(import.meta.url).resolve('uplot'));
}

const ASSETS: Record<string, { file: () => string; type: string }> = {
  '/': { file: () => join(PAGE_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/board.js': { file: () => join(PAGE_DIR, 'board.js'), type: 'text/javascript; charset=utf-8' },
  '/board.css': { file: () => join(PAGE_DIR, 'board.css'), type: 'text/css; charset=utf-8' },
  '/uplot.js': { file: () => join(uplotDir(), 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/uplot.css': { file: () => join(uplotDir(), 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

interface Tracked { state: RunState; tail: MetricsTail; seen: boolean }

/** Starts a board; resolves once it listens. Throws `BoardInputError` for a path that does not exist. */
export async function startBoard(o: BoardOptions): Promise<Board> {
  const cwd = o.cwd ?? process.cwd();
  checkRunPaths(o.runs, cwd);
  for (const a of Object.values(ASSETS)) if (!existsSync(a.file())) throw new Error(`board: its page file ${a.file()} is missing (is the checkout complete?)`);
  const tracked = new Map<string, Tracked>();
  let nextId = 0;
  const clients = new Set<ServerResponse>();

  const poll = (): BoardUpdate => {
    const found = discoverRuns(o.runs, cwd);
    const update: BoardUpdate = { runs: [], removed: [] };
    for (const t of tracked.values()) t.seen = false;
    for (const src of found) {
      let t = tracked.get(src.file);
      const fresh = t === undefined;
      if (t === undefined) {
        t = { state: { id: String(nextId++), name: src.name, file: src.file, exists: false, rows: [], skipped: [] }, tail: new MetricsTail(src.file), seen: true };
        tracked.set(src.file, t);
      }
      t.seen = true;
      const r = t.tail.read();
      if (r.reset) { t.state.rows = []; t.state.skipped = []; }
      t.state.rows.push(...r.rows);
      t.state.skipped.push(...r.skipped);
      const existed = t.state.exists;
      t.state.exists = r.exists;
      if (fresh || r.reset || r.rows.length > 0 || r.skipped.length > 0 || existed !== r.exists) {
        const whole = fresh || r.reset;
        update.runs.push({ ...t.state, rows: whole ? t.state.rows : r.rows, skipped: whole ? t.state.skipped : r.skipped, reset: whole });
      }
    }
    // A directory's placeholder run (no metrics.jsonl yet) goes once its subdirectories turn out to be the runs.
    for (const [file, t] of tracked) {
      if (!t.seen && t.state.rows.length === 0 && t.state.skipped.length === 0) { tracked.delete(file); update.removed.push(t.state.id); }
    }
    if (update.runs.length > 0 || update.removed.length > 0) for (const c of clients) send(c, 'update', update);
    return update;
  };
  const snapshot = (): { runs: RunState[] } => ({ runs: [...tracked.values()].map((t) => t.state) });

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://board').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD' }).end(); return; }
    if (path === '/api/runs') { json(res, snapshot()); return; }
    if (path === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write('retry: 1000\n\n');
      send(res, 'snapshot', snapshot());
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    const asset = ASSETS[path];
    if (asset === undefined) { res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${path}\n`); return; }
    res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache' }).end(readFileSync(asset.file()));
  });
  poll();
  const timer = setInterval(poll, o.pollMs ?? 500);
  timer.unref();
  // Keeps proxies and the browser from timing an idle stream out.
  const beat = setInterval(() => { for (const c of clients) c.write(': keep-alive\n\n'); }, 15_000);
  beat.unref();
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(o.port ?? 6006, o.host ?? '127.0.0.1', () => { server.off('error', fail); ok(); });
  });
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    url: `http://${host}:${a.port}/`,
    poll,
    snapshot,
    close: async () => {
      clearInterval(timer);
      clearInterval(beat);
      for (const c of clients) c.end();
      clients.clear();
      await new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}

function json(res: ServerResponse, v: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(v));
}

function send(res: ServerResponse, event: string, data: unknown): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}
