/**
 * The runs a board shows, read incrementally from their metrics.jsonl files.
 *
 * A run is a metrics file: one JSON object per line, each with a numeric `step` (what the trainer,
 * the parameter server and the PyTorch anchors' converted logs write). `MetricsTail` reads a file
 * from where it last stopped, so a board polls a growing file for the cost of its new bytes. Lines
 * that are not such objects are kept as `SkippedLine`s (line number, text, reason) for the page to
 * show, never dropped silently; a line still being written (no newline yet) waits for its end.
 * A file that shrinks or is replaced (a resumed run trims the lines past its checkpoint,
 * train/metrics.ts `trimMetrics`) is read again from the start and reported as a reset.
 */
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** One metrics line: its step and every other finite number in it (nested values are left out). */
export interface MetricRow { step: number; [key: string]: number }

/** A line that is not a metrics row, shown on the page as skipped. */
export interface SkippedLine { line: number; text: string; reason: string }

/** What one read of a file found: rows and skipped lines past the last read; `reset` when the file was read again from its start. */
export interface TailUpdate { reset: boolean; rows: MetricRow[]; skipped: SkippedLine[]; exists: boolean }

const SHOWN_CHARS = 200;
const READ_BYTES = 1 << 20;

/** Parses one line of a metrics file: a row, a skipped line, or null for a blank line. */
export function parseMetricsLine(text: string, line: number): MetricRow | SkippedLine | null {
  if (text.trim() === '') return null;
  const shown = text.length > SHOWN_CHARS ? `${text.slice(0, SHOWN_CHARS)}…` : text;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { line, text: shown, reason: `not JSON (${(e as Error).message})` };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { line, text: shown, reason: 'not a JSON object' };
  const o = v as Record<string, unknown>;
  if (typeof o['step'] !== 'number' || !Number.isFinite(o['step'])) return { line, text: shown, reason: 'no numeric "step"' };
  const row: MetricRow = { step: o['step'] };
  for (const [k, x] of Object.entries(o)) if (typeof x === 'number' && Number.isFinite(x)) row[k] = x;
  return row;
}

/** Reads a metrics file from where the last `read` stopped. */
export class MetricsTail {
  private offset = 0;
  private pending = Buffer.alloc(0);
  private lines = 0;
  private ino = -1;

  constructor(readonly file: string) {}

  /** The rows and skipped lines that landed since the last call (all of them, with `reset`, if the file shrank or was replaced). */
  read(): TailUpdate {
    let fd: number;
    try {
      fd = openSync(this.file, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      const reset = this.offset > 0 || this.lines > 0;
      this.restart();
      return { reset, rows: [], skipped: [], exists: false };
    }
    try {
      const st = fstatSync(fd);
      let reset = false;
      if (st.ino !== this.ino || st.size < this.offset) {
        reset = this.ino !== -1;
        this.restart();
        this.ino = st.ino;
      }
      const rows: MetricRow[] = [];
      const skipped: SkippedLine[] = [];
      const chunk = Buffer.allocUnsafe(READ_BYTES);
      for (;;) {
        const n = readSync(fd, chunk, 0, READ_BYTES, this.offset);
        if (n <= 0) break;
        this.offset += n;
        let data = Buffer.concat([this.pending, chunk.subarray(0, n)]);
        let nl: number;
        while ((nl = data.indexOf(0x0a)) >= 0) {
          const r = parseMetricsLine(data.toString('utf8', 0, nl), ++this.lines);
          if (r !== null) ('reason' in r ? skipped : rows).push(r as MetricRow & SkippedLine);
          data = data.subarray(nl + 1);
        }
        this.pending = Buffer.from(data);
      }
      return { reset, rows, skipped, exists: true };
    } finally {
      closeSync(fd);
    }
  }

  private restart(): void {
    this.offset = 0;
    this.pending = Buffer.alloc(0);
    this.lines = 0;
    this.ino = -1;
  }
}

/** A run on the board: its name on the page and its metrics file. */
export interface RunSource { name: string; file: string }

/**
 * `NAME=PATH` names a run on the page (`weft board weft=runs/a PyTorch=torch.jsonl`), as
 * TensorBoard's `--logdir_spec` does; a path that itself exists is taken whole, '=' and all.
 */
export function namedPath(arg: string, cwd = process.cwd()): { name: string; path: string } {
  const m = /^([^=/]+)=(.+)$/.exec(arg);
  return m && !existsSync(resolve(cwd, arg)) ? { name: m[1]!, path: m[2]! } : { name: arg, path: arg };
}

/** A command-line path that does not exist, or is neither a metrics file nor a directory. */
export class BoardInputError extends Error {}

/**
 * Checks the paths a board was given: each must exist, as a file (a metrics file of any name) or a
 * directory. Throws `BoardInputError` naming the first that does not.
 */
export function checkRunPaths(paths: readonly string[], cwd = process.cwd()): void {
  if (paths.length === 0) throw new BoardInputError('no run directories given');
  for (const arg of paths) {
    const p = namedPath(arg, cwd).path;
    const abs = resolve(cwd, p);
    if (!existsSync(abs)) throw new BoardInputError(`run directory '${p}' does not exist`);
    const st = statSync(abs);
    if (!st.isDirectory() && !st.isFile()) throw new BoardInputError(`'${p}' is neither a run directory nor a metrics file`);
  }
}

/**
 * The runs under the given paths, now (a board calls this on every poll, so runs that appear later
 * join): a file is one run; a directory holding metrics.jsonl is one run; a directory's
 * subdirectories holding metrics.jsonl are runs too (`weft board runs`, as `tensorboard --logdir`);
 * a directory holding neither yet is a run whose file has not been written (a training just starting).
 * Names are the paths as given, or the NAME of NAME=PATH (a subdirectory's joined to its parent's).
 */
export function discoverRuns(paths: readonly string[], cwd = process.cwd()): RunSource[] {
  const out = new Map<string, RunSource>();
  // `shown` is the path as the user wrote it (joined with a subdirectory's name), the run's name on the page; `file` is absolute.
  const add = (shown: string, file: string): void => { if (!out.has(file)) out.set(file, { name: shown, file }); };
  for (const given of paths) {
    const { name, path: p } = namedPath(given, cwd);
    const abs = resolve(cwd, p);
    let st;
    try { st = statSync(abs); } catch { continue; } // removed while watched: its run stays, as missing
    if (!st.isDirectory()) { add(name, abs); continue; }
    const own = join(abs, 'metrics.jsonl');
    const children = readdirSync(abs, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(abs, d.name, 'metrics.jsonl')))
      .map((d) => d.name)
      .sort();
    if (existsSync(own) || children.length === 0) add(name, own);
    for (const c of children) add(join(name, c), join(abs, c, 'metrics.jsonl'));
  }
  return [...out.values()];
}
