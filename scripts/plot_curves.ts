/**
 * Draws training curves from JSON-lines metric logs as a PNG, with no dependencies (for the README:
 * weft's validation loss against PyTorch's on the Brown corpus).
 *
 *   node dist/scripts/plot_curves.js --out docs/brown_loss.png --title "Brown corpus: validation loss" \
 *     --series "weft=runs/brown/metrics.jsonl:step:val_loss" \
 *     --series "PyTorch=runs/brown/torch.jsonl:step:val" [--width 800 --height 480]
 *
 * Each --series is NAME=FILE:XFIELD:YFIELD. FILE is read as JSON lines; a row without a finite number
 * in both fields (or with null, or NaN as Python writes it) is skipped, as are blank lines; a field
 * may be a dotted path ("eval.loss") when no key has that exact name. Points are sorted by x.
 * Prints {"out", "width", "height", "series": [{"name", "file", "x", "y", "points": [[x, y], ...]}]}
 * as JSON on stdout. Exit status 2 for a bad command line, 1 for a missing file, a malformed JSON line
 * (named file:line) or a series with no points.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Canvas, FONT_CAP_HEIGHT, FONT_CELL_HEIGHT, hex, measureText } from './png.js';
import type { Color, Rect } from './png.js';

export class PlotError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'PlotError';
  }
}

// ---- Data -------------------------------------------------------------------------------------------

export interface SeriesSpec { name: string; file: string; x: string; y: string }
export interface Series extends SeriesSpec { points: [number, number][] }

/** Parses NAME=FILE:XFIELD:YFIELD (the file may itself contain ':'; the last two are the fields). */
export function parseSeriesSpec(spec: string): SeriesSpec {
  const eq = spec.indexOf('=');
  const usage = `--series ${JSON.stringify(spec)}: expected NAME=FILE:XFIELD:YFIELD`;
  if (eq <= 0) throw new PlotError(usage, 2);
  const name = spec.slice(0, eq);
  const parts = spec.slice(eq + 1).split(':');
  if (parts.length < 3) throw new PlotError(usage, 2);
  const y = parts.pop()!, x = parts.pop()!, file = parts.join(':');
  if (!file || !x || !y) throw new PlotError(usage, 2);
  return { name, file, x, y };
}

function field(row: unknown, path: string): unknown {
  if (row === null || typeof row !== 'object' || Array.isArray(row)) return undefined;
  const obj = row as Record<string, unknown>;
  if (Object.hasOwn(obj, path)) return obj[path];
  let v: unknown = obj;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, k)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/** Reads a series' points from its JSON-lines file; throws PlotError naming the file (and line). */
export function readSeries(spec: SeriesSpec): Series {
  let text: string;
  try {
    text = readFileSync(spec.file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a directory' : err.message;
    throw new PlotError(`series "${spec.name}": cannot read ${spec.file}: ${why}`);
  }
  const points: [number, number][] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      // Python's json writes NaN / Infinity bare; read them as null (the row is then skipped).
      try {
        row = JSON.parse(line.replace(/([:,[]\s*)(-?Infinity|NaN)(?=\s*[,}\]])/g, '$1null'));
      } catch {
        throw new PlotError(`${spec.file}:${i + 1}: malformed JSON line (${(e as Error).message})`);
      }
    }
    const x = field(row, spec.x), y = field(row, spec.y);
    if (typeof x === 'number' && typeof y === 'number' && Number.isFinite(x) && Number.isFinite(y)) points.push([x, y]);
  });
  if (points.length === 0) {
    const n = lines.filter((l) => l.trim() !== '').length;
    throw new PlotError(`series "${spec.name}": no points in ${spec.file}: none of its ${n} rows has numbers in both "${spec.x}" and "${spec.y}"`);
  }
  points.sort((a, b) => a[0] - b[0]); // stable: repeated x keep file order
  return { ...spec, points };
}

// ---- Axes -------------------------------------------------------------------------------------------

export interface Ticks { lo: number; hi: number; step: number; ticks: number[] }

const tidy = (v: number): number => (v === 0 ? 0 : Number.parseFloat(v.toPrecision(12)));

/**
 * Axis limits and ticks for data in [min, max]: the step of 1, 2 or 5 x 10^k nearest (in ratio) to
 * one giving `target` intervals, limits rounded out to whole steps (unless fixed by `lo` / `hi`).
 */
export function niceTicks(min: number, max: number, target = 6, fixed: { lo?: number; hi?: number } = {}): Ticks {
  let a = fixed.lo ?? min, b = fixed.hi ?? max;
  if (!(b > a)) {
    const d = a === 0 ? 1 : Math.abs(a) * 0.1;
    if (fixed.lo === undefined) a -= d;
    if (fixed.hi === undefined || !(b > a)) b = a + 2 * d;
  }
  const rough = (b - a) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(rough));
  const norm = rough / mag;
  const step = tidy([1, 2, 5, 10].reduce((m, c) => (Math.abs(Math.log(c / norm)) < Math.abs(Math.log(m / norm)) ? c : m)) * mag);
  const lo = fixed.lo ?? tidy(Math.floor(a / step + 1e-9) * step);
  const hi = fixed.hi ?? tidy(Math.ceil(b / step - 1e-9) * step);
  const ticks: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(tidy(k * step));
  return { lo, hi, step, ticks };
}

/** A tick label: as many decimals as the step needs; k / M suffixes from 10,000 up. */
export function formatTick(v: number, step: number, maxAbs = Math.abs(v)): string {
  let div = 1, suffix = '';
  if (maxAbs >= 1e7) { div = 1e6; suffix = 'M'; } else if (maxAbs >= 1e4) { div = 1e3; suffix = 'k'; }
  const s = step / div;
  if (s < 1e-4 && v !== 0) return v.toExponential(1);
  const decimals = Math.max(0, Math.min(10, Math.ceil(-Math.log10(s) - 1e-9)));
  const out = (v / div).toFixed(decimals);
  return (/^-0(\.0*)?$/.test(out) ? out.slice(1) : out) + (v === 0 ? '' : suffix);
}

// ---- Drawing ----------------------------------------------------------------------------------------

export interface PlotOptions {
  width?: number;
  height?: number;
  title?: string;
  xLabel?: string;
  yLabel?: string;
  xMin?: number; xMax?: number; yMin?: number; yMax?: number;
}

/** Colors for the series, in order (Tableau 10). */
export const PALETTE: Color[] = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'].map(hex);

const INK = hex('#222222');
const AXIS = hex('#555555');
const GRID = hex('#e6e6e6');
const WHITE: Color = [255, 255, 255];

/** Draws the series on a new canvas: title, grid, axes, ticks, axis titles, curves with dots, legend. */
export function renderPlot(series: Series[], opts: PlotOptions = {}): Canvas {
  const width = opts.width ?? 800, height = opts.height ?? 480;
  const c = new Canvas(width, height);
  const fs = Math.max(1, Math.round(Math.min(width / 400, height / 240))); // font scale: 2 at 800x480
  const pad = 4 * fs;
  const capH = FONT_CAP_HEIGHT * fs;
  const tickLen = 2 * fs + 1;

  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xr = [Math.min(...xs), Math.max(...xs)] as const, yr = [Math.min(...ys), Math.max(...ys)] as const;

  // Layout: the y ticks depend on the plot's height, the left margin on the y tick labels' width.
  const title = opts.title ?? '';
  const top = pad * 2 + (title ? capH * 2 + pad * 2 : 0);
  const bottom = pad * 2 + tickLen + pad + capH + pad * 2 + capH;
  const plotH = height - top - bottom;
  const yt = niceTicks(yr[0], yr[1], Math.max(2, Math.round(plotH / (capH * 4))), { lo: opts.yMin, hi: opts.yMax });
  const yMaxAbs = Math.max(...yt.ticks.map(Math.abs));
  const yLabels = yt.ticks.map((v) => formatTick(v, yt.step, yMaxAbs));
  const yLabelW = Math.max(...yLabels.map((l) => measureText(l, { scale: fs })));
  const left = pad * 2 + capH + pad * 3 + yLabelW + pad + tickLen;
  const right = pad * 6;
  const plotW = width - left - right;
  if (plotW < 40 || plotH < 40) throw new PlotError(`--width ${width} --height ${height} leaves no room to plot`, 2);
  // Widen the x step until the labels fit with room between them.
  let xt = niceTicks(xr[0], xr[1], 2, { lo: opts.xMin, hi: opts.xMax });
  for (let target = Math.max(2, Math.round(plotW / (capH * 8))); target > 1; target--) {
    xt = niceTicks(xr[0], xr[1], target, { lo: opts.xMin, hi: opts.xMax });
    const maxAbs = Math.max(...xt.ticks.map(Math.abs));
    const widest = Math.max(...xt.ticks.map((v) => measureText(formatTick(v, xt.step, maxAbs), { scale: fs })));
    if (xt.ticks.length < 2 || (plotW / (xt.ticks.length - 1)) > widest + capH * 2) break;
  }
  const xMaxAbs = Math.max(...xt.ticks.map(Math.abs));
  const plot: Rect = { x: left, y: top, w: plotW, h: plotH };
  const X = (v: number): number => plot.x + ((v - xt.lo) / (xt.hi - xt.lo)) * plot.w;
  const Y = (v: number): number => plot.y + plot.h - ((v - yt.lo) / (yt.hi - yt.lo)) * plot.h;

  // Title, a size up when it fits, centered on the plot (or on the canvas when wider than the plot).
  if (title) {
    const ts = measureText(title, { scale: fs + 1, bold: true }) <= plot.w ? fs + 1 : fs;
    const tw = measureText(title, { scale: ts, bold: true });
    const cx = tw <= plot.w ? plot.x + plot.w / 2 : width / 2;
    c.text(title, cx, pad * 2 + (fs + 1 - ts) * FONT_CAP_HEIGHT, INK, { scale: ts, bold: true, align: 'center' });
  }

  // Grid, frame, ticks, tick labels.
  const px = (v: number): number => Math.round(v - 0.5); // the pixel column/row a coordinate falls in
  for (const v of xt.ticks) c.fillRect(px(X(v)), plot.y, 1, plot.h, GRID);
  for (const v of yt.ticks) c.fillRect(plot.x, px(Y(v)), plot.w, 1, GRID);
  c.strokeRect(plot.x - 1, plot.y - 1, plot.w + 2, plot.h + 2, AXIS, 1);
  xt.ticks.forEach((v) => {
    const x = px(X(v));
    c.fillRect(x, plot.y + plot.h + 1, 1, tickLen, AXIS);
    c.text(formatTick(v, xt.step, xMaxAbs), x + 0.5, plot.y + plot.h + 1 + tickLen + pad, INK, { scale: fs, align: 'center' });
  });
  yt.ticks.forEach((v, i) => {
    const y = px(Y(v));
    c.fillRect(plot.x - 1 - tickLen, y, tickLen, 1, AXIS);
    c.text(yLabels[i]!, plot.x - 1 - tickLen - pad, y + 0.5, INK, { scale: fs, align: 'right', baseline: 'middle' });
  });

  // Axis titles.
  const xLabel = opts.xLabel ?? 'step', yLabel = opts.yLabel ?? 'validation loss (nats/byte)';
  c.text(xLabel, plot.x + plot.w / 2, height - pad * 2 - capH, INK, { scale: fs, align: 'center' });
  c.text(yLabel, pad * 2, plot.y + plot.h / 2, INK, { scale: fs, align: 'center', vertical: true });

  // Curves: lines clipped to the plot, then dots at the points inside the axis ranges.
  const thick = 1 + fs / 2 + 0.25;
  const screen = series.map((s) => s.points.map(([x, y]) => [X(x), Y(y)] as [number, number]));
  const inRange = (x: number, y: number): boolean => x >= xt.lo && x <= xt.hi && y >= yt.lo && y <= yt.hi;
  // Dots shrink as a series' points crowd together and are left out when under 3 px apart on average.
  const dotRadius = screen.map((pts) => {
    const gap = pts.length < 2 ? Infinity : Math.abs(pts[pts.length - 1]![0] - pts[0]![0]) / (pts.length - 1);
    return gap < 3 ? 0 : gap < 8 ? fs * 0.75 : fs + 0.75;
  });
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const dotR = dotRadius[i]!;
    c.clip = { x: plot.x, y: plot.y, w: plot.w, h: plot.h };
    c.polyline(screen[i]!, color, thick);
    c.clip = null;
    if (dotR > 0) {
      s.points.forEach(([x, y], k) => {
        if (inRange(x, y)) c.dot(screen[i]![k]![0], screen[i]![k]![1], dotR, color, { color: WHITE, width: Math.max(1, fs / 2) });
      });
    }
  });

  // Legend: a boxed key in whichever corner of the plot the curves cross least.
  const rowH = FONT_CELL_HEIGHT * fs + pad;
  const swatch = 12 * fs;
  const nameW = Math.max(...series.map((s) => measureText(s.name, { scale: fs })));
  const lw = pad * 2 + swatch + pad * 2 + nameW + pad * 2;
  const lh = pad * 2 + rowH * series.length - pad + pad;
  const m = pad * 2;
  const corners: Rect[] = [
    { x: plot.x + plot.w - lw - m, y: plot.y + m, w: lw, h: lh }, // top right
    { x: plot.x + m, y: plot.y + plot.h - lh - m, w: lw, h: lh }, // bottom left
    { x: plot.x + m, y: plot.y + m, w: lw, h: lh }, // top left
    { x: plot.x + plot.w - lw - m, y: plot.y + plot.h - lh - m, w: lw, h: lh }, // bottom right
  ];
  const samples = screen.flatMap((pts) => pts.flatMap((p, k) => {
    const q = pts[k + 1];
    if (!q) return [p];
    const n = Math.max(1, Math.ceil(Math.hypot(q[0] - p[0], q[1] - p[1]) / 2));
    return Array.from({ length: n }, (_, j) => [p[0] + ((q[0] - p[0]) * j) / n, p[1] + ((q[1] - p[1]) * j) / n] as [number, number]);
  }));
  const hits = (r: Rect): number => samples.filter(([x, y]) => x >= r.x - 4 && x <= r.x + r.w + 4 && y >= r.y - 4 && y <= r.y + r.h + 4).length;
  const box = corners.reduce((best, r) => (hits(r) < hits(best) ? r : best));
  c.fillRect(box.x, box.y, box.w, box.h, WHITE);
  c.strokeRect(box.x, box.y, box.w, box.h, hex('#bbbbbb'), 1);
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const cy = box.y + pad * 2 + i * rowH + capH / 2;
    const sx = box.x + pad * 2;
    c.line(sx, cy, sx + swatch, cy, color, thick);
    if (dotRadius[i]! > 0) c.dot(sx + swatch / 2, cy, Math.max(dotRadius[i]!, fs), color, { color: WHITE, width: Math.max(1, fs / 2) });
    c.text(s.name, sx + swatch + pad * 2, cy, INK, { scale: fs, baseline: 'middle' });
  });
  return c;
}

// ---- CLI --------------------------------------------------------------------------------------------

const USAGE = `usage: node dist/scripts/plot_curves.js --out FILE.png --series NAME=FILE:XFIELD:YFIELD [--series ...]
       [--title TEXT] [--width 800] [--height 480] [--xlabel step] [--ylabel "validation loss (nats/byte)"]
       [--xmin N] [--xmax N] [--ymin N] [--ymax N]`;

export interface PlotResult {
  out: string;
  width: number;
  height: number;
  series: { name: string; file: string; x: string; y: string; points: [number, number][] }[];
}

function num(name: string, v: string | undefined, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (integer && (!Number.isInteger(n) || n < 1 || n > 16384))) {
    throw new PlotError(`--${name} ${JSON.stringify(v)}: expected ${integer ? 'a whole number of pixels (1-16384)' : 'a number'}`, 2);
  }
  return n;
}

/** Parses the command line, reads the series, draws and writes the PNG. */
export function main(argv: string[]): PlotResult {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        out: { type: 'string' }, title: { type: 'string' }, series: { type: 'string', multiple: true },
        width: { type: 'string' }, height: { type: 'string' }, xlabel: { type: 'string' }, ylabel: { type: 'string' },
        xmin: { type: 'string' }, xmax: { type: 'string' }, ymin: { type: 'string' }, ymax: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new PlotError(`${(e as Error).message}\n${USAGE}`, 2);
  }
  if (values.help) throw new PlotError(USAGE, 0);
  if (!values.out) throw new PlotError(`--out is required\n${USAGE}`, 2);
  if (!values.series?.length) throw new PlotError(`at least one --series is required\n${USAGE}`, 2);
  const opts: PlotOptions = {
    width: num('width', values.width, true) ?? 800,
    height: num('height', values.height, true) ?? 480,
    title: values.title ?? '',
    xMin: num('xmin', values.xmin), xMax: num('xmax', values.xmax),
    yMin: num('ymin', values.ymin), yMax: num('ymax', values.ymax),
  };
  if (values.xlabel !== undefined) opts.xLabel = values.xlabel;
  if (values.ylabel !== undefined) opts.yLabel = values.ylabel;
  for (const [a, b] of [['xmin', 'xmax'], ['ymin', 'ymax']] as const) {
    const lo = a === 'xmin' ? opts.xMin : opts.yMin, hi = b === 'xmax' ? opts.xMax : opts.yMax;
    if (lo !== undefined && hi !== undefined && !(hi > lo)) throw new PlotError(`--${b} must be greater than --${a}`, 2);
  }
  const series = values.series.map(parseSeriesSpec).map(readSeries);
  const png = renderPlot(series, opts).toPng();
  mkdirSync(dirname(resolve(values.out)), { recursive: true });
  writeFileSync(values.out, png);
  return { out: values.out, width: opts.width!, height: opts.height!, series: series.map(({ name, file, x, y, points }) => ({ name, file, x, y, points })) };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code !== 'EPIPE') throw e; }); // e.g. | head
  try {
    process.stdout.write(`${JSON.stringify(main(process.argv.slice(2)))}\n`);
  } catch (e) {
    if (e instanceof PlotError) {
      if (e.exitCode === 0) {
        process.stdout.write(`${e.message}\n`);
      } else {
        process.stderr.write(`plot_curves: ${e.message}\n`);
      }
      process.exitCode = e.exitCode;
    } else {
      throw e;
    }
  }
}
