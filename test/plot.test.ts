/**
 * scripts/png.ts (the PNG encoder and raster canvas) and scripts/plot_curves.ts (training curves from
 * JSON-lines logs to a PNG): the file structure decodes, pixels land where drawn, ticks are nice, and
 * the CLI end to end, errors naming the file and line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import * as zlib from 'node:zlib';
import { Canvas, crc32, encodePng, FONT_CHARS, hex, measureText, PNG_SIGNATURE } from '../scripts/png.js';
import { formatTick, niceTicks, PALETTE, parseSeriesSpec, PlotError, readSeries } from '../scripts/plot_curves.js';

const tmp = mkdtempSync(join(tmpdir(), 'weft-plot-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const script = fileURLToPath(new URL('../scripts/plot_curves.js', import.meta.url));

interface Chunk { type: string; data: Buffer; crc: number; crcOf: Buffer }

/** Splits a PNG into its chunks (after checking the signature). */
function chunks(png: Buffer): Chunk[] {
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const out: Chunk[] = [];
  let o = 8;
  while (o < png.length) {
    const n = png.readUInt32BE(o);
    assert.ok(o + 12 + n <= png.length, 'chunk runs past the end of the file');
    out.push({ type: png.toString('latin1', o + 4, o + 8), data: png.subarray(o + 8, o + 8 + n), crc: png.readUInt32BE(o + 8 + n), crcOf: png.subarray(o + 4, o + 8 + n) });
    o += 12 + n;
  }
  assert.equal(o, png.length);
  return out;
}

/** Decodes what encodePng writes (8-bit RGB/RGBA, filter 0 rows) to RGBA, checking it on the way. */
function decode(png: Buffer): { width: number; height: number; colorType: number; raw: Buffer; rgba: Uint8Array } {
  const cs = chunks(png);
  assert.deepEqual(cs.map((c) => c.type), ['IHDR', 'IDAT', 'IEND']);
  for (const c of cs) assert.equal(c.crc, zlib.crc32(c.crcOf), `${c.type} CRC`);
  const ihdr = cs[0]!.data;
  assert.equal(ihdr.length, 13);
  const width = ihdr.readUInt32BE(0), height = ihdr.readUInt32BE(4), colorType = ihdr[9]!;
  assert.deepEqual([ihdr[8], ihdr[10], ihdr[11], ihdr[12]], [8, 0, 0, 0]); // depth 8, deflate, filter 0, no interlace
  assert.ok(colorType === 6 || colorType === 2);
  assert.equal(cs[2]!.data.length, 0);
  const ch = colorType === 6 ? 4 : 3;
  const raw = zlib.inflateSync(cs[1]!.data);
  assert.equal(raw.length, height * (1 + ch * width));
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (1 + ch * width)], 0, `row ${y} filter byte`);
    for (let x = 0; x < width; x++) {
      for (let k = 0; k < 4; k++) rgba[(y * width + x) * 4 + k] = k < ch ? raw[y * (1 + ch * width) + 1 + x * ch + k]! : 255;
    }
  }
  return { width, height, colorType, raw, rgba };
}

const pixel = (img: { width: number; rgba: Uint8Array }, x: number, y: number): number[] => [...img.rgba.subarray((y * img.width + x) * 4, (y * img.width + x) * 4 + 4)];

// ---- PNG encoder ------------------------------------------------------------------------------------

test('crc32: the standard check value and the IEND chunk CRC', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(Buffer.from('IEND')), 0xae426082);
  assert.equal(crc32(new Uint8Array(0)), 0);
  const b = Buffer.from('weft: a TypeScript framework');
  assert.equal(crc32(b), zlib.crc32(b));
  assert.equal(crc32(b.subarray(5), crc32(b.subarray(0, 5))), crc32(b), 'continues a running CRC');
});

test('encodePng: a 3x2 RGBA image decodes to its signature, IHDR, IDAT rows and IEND', () => {
  const px = [
    [255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255],
    [0, 0, 0, 0], [255, 255, 255, 128], [12, 34, 56, 78],
  ];
  const rgba = Uint8Array.from(px.flat());
  const png = encodePng(3, 2, rgba);
  const img = decode(png);
  assert.deepEqual([img.width, img.height, img.colorType], [3, 2, 6]);
  assert.equal(img.raw.length, 2 * (1 + 4 * 3));
  assert.deepEqual([...img.raw], [0, ...px.slice(0, 3).flat(), 0, ...px.slice(3).flat()]);
  assert.deepEqual(png.subarray(-12), Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]));
});

test('encodePng: { alpha: false } writes RGB (color type 2), 3 bytes a pixel', () => {
  const rgba = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  const img = decode(encodePng(2, 1, rgba, { alpha: false }));
  assert.equal(img.colorType, 2);
  assert.deepEqual([...img.raw], [0, 1, 2, 3, 5, 6, 7]);
});

test('encodePng: a larger image round-trips through inflate byte for byte', () => {
  const w = 97, h = 41;
  const rgba = Uint8Array.from({ length: w * h * 4 }, (_, i) => (i * 7919) % 251);
  const img = decode(encodePng(w, h, rgba));
  assert.deepEqual(img.rgba, rgba);
});

test('encodePng: rejects a buffer of the wrong size and bad dimensions', () => {
  assert.throws(() => encodePng(2, 2, new Uint8Array(15)), /expected 16 bytes/);
  assert.throws(() => encodePng(0, 2, new Uint8Array(0)), /positive integers/);
  assert.throws(() => encodePng(1.5, 2, new Uint8Array(12)), /positive integers/);
});

// ---- Canvas -----------------------------------------------------------------------------------------

test('canvas: starts white; fillRect, blend and strokeRect set the pixels they cover', () => {
  const c = new Canvas(10, 8);
  assert.deepEqual(c.get(0, 0), [255, 255, 255, 255]);
  c.fillRect(2, 3, 3, 2, [10, 20, 30]);
  assert.deepEqual(c.get(2, 3), [10, 20, 30, 255]);
  assert.deepEqual(c.get(4, 4), [10, 20, 30, 255]);
  assert.deepEqual(c.get(5, 4), [255, 255, 255, 255]);
  assert.deepEqual(c.get(2, 5), [255, 255, 255, 255]);
  c.fillRect(0, 0, 1, 1, [0, 0, 0, 128]); // half-transparent black over white
  assert.deepEqual(c.get(0, 0).map((v) => Math.round(v / 10)), [13, 13, 13, 26]);
  c.fillRect(7, 0, 0.5, 1, [0, 0, 0]); // half a pixel covered
  assert.ok(Math.abs(c.get(7, 0)[0] - 128) <= 1);
  c.fillRect(-5, -5, 100, 100, [255, 255, 255]); // clipped to the canvas, no throw
  c.strokeRect(1, 1, 6, 5, [255, 0, 0]);
  assert.deepEqual(c.get(1, 1).slice(0, 3), [255, 0, 0]);
  assert.deepEqual(c.get(6, 5).slice(0, 3), [255, 0, 0]);
  assert.deepEqual(c.get(3, 3).slice(0, 3), [255, 255, 255]);
  const img = decode(c.toPng());
  assert.equal(img.colorType, 2);
  assert.deepEqual(pixel(img, 1, 1), [255, 0, 0, 255]);
});

test('canvas: lines, polylines and circles are anti-aliased and respect the clip rectangle', () => {
  const c = new Canvas(40, 20);
  c.line(2, 10.5, 37, 10.5, [0, 0, 255], 1);
  assert.deepEqual(c.get(20, 10), [0, 0, 255, 255]);
  assert.deepEqual(c.get(20, 8), [255, 255, 255, 255]);
  c.line(20.5, 0, 20.5, 20, [0, 128, 0], 3);
  assert.deepEqual(c.get(20, 5).slice(0, 3), [0, 128, 0]);
  assert.deepEqual(c.get(19, 5).slice(0, 3), [0, 128, 0]);
  assert.deepEqual(c.get(23, 5).slice(0, 3), [255, 255, 255]);
  const diag = new Canvas(20, 20);
  diag.line(0, 0, 20, 20, [0, 0, 0], 1.5);
  const edge = diag.get(10, 11)[0];
  assert.ok(edge > 0 && edge < 255, `a diagonal has partly covered pixels beside it (got ${edge})`);
  const c2 = new Canvas(20, 20);
  c2.clip = { x: 0, y: 0, w: 10, h: 20 };
  c2.polyline([[0, 5.5], [19, 5.5], [19, 15]], [255, 0, 0], 1);
  c2.clip = null;
  assert.deepEqual(c2.get(5, 5).slice(0, 3), [255, 0, 0]);
  assert.deepEqual(c2.get(15, 5).slice(0, 3), [255, 255, 255], 'clipped');
  const c3 = new Canvas(21, 21);
  c3.circle(10.5, 10.5, 6, [0, 0, 0]);
  assert.deepEqual(c3.get(10, 10).slice(0, 3), [0, 0, 0]);
  assert.deepEqual(c3.get(0, 0).slice(0, 3), [255, 255, 255]);
  c3.circle(10.5, 10.5, 4, [255, 255, 255], 1); // an outline: the center stays black
  assert.deepEqual(c3.get(10, 10).slice(0, 3), [0, 0, 0]);
  assert.deepEqual(c3.get(14, 10).slice(0, 3), [255, 255, 255]);
  c3.dot(10.5, 10.5, 1, [255, 0, 0], { color: [0, 255, 0], width: 2 });
  assert.deepEqual(c3.get(10, 10).slice(0, 3), [255, 0, 0]);
  assert.deepEqual(c3.get(12, 10).slice(0, 3), [0, 255, 0]);
});

test('font: every listed character draws ink inside the box it reports, at integer and fractional scales', () => {
  assert.ok(/^ 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/.test(FONT_CHARS));
  for (const ch of '.,-:()/= ') assert.ok(FONT_CHARS.includes(ch), ch);
  for (const scale of [1, 2, 1.5]) {
    for (const ch of FONT_CHARS.trim()) {
      const c = new Canvas(40, 40);
      const box = c.text(ch, 10, 10, [0, 0, 0], { scale });
      let inside = 0;
      for (let y = 0; y < 40; y++) {
        for (let x = 0; x < 40; x++) {
          if (c.get(x, y)[0] === 255) continue;
          assert.ok(x >= box.x && x <= box.x + box.w && y >= box.y && y <= box.y + box.h, `${JSON.stringify(ch)} at scale ${scale}: ink at (${x}, ${y}) outside its box`);
          inside++;
        }
      }
      assert.ok(inside > 0, `${JSON.stringify(ch)} draws something`);
    }
  }
  const c = new Canvas(10, 10);
  c.text('\u20ac', 1, 1, [0, 0, 0]); // not in the font: a box
  assert.deepEqual(c.get(1, 1).slice(0, 3), [0, 0, 0]);
  assert.equal(measureText('1.5'), 5 + 1 + 2 + 1 + 5);
  assert.equal(measureText('1.5', { scale: 2 }), 2 * 14);
  assert.ok(measureText('ab', { bold: true }) > measureText('ab'));
});

test('font: alignment and vertical text place the box where asked', () => {
  const c = new Canvas(100, 100);
  const w = measureText('loss', { scale: 2 });
  const r = c.text('loss', 50, 20, [0, 0, 0], { scale: 2, align: 'right', baseline: 'bottom' });
  assert.deepEqual([r.x, r.y, r.w], [50 - w, 20 - 14, w]);
  const m = c.text('loss', 50, 50, [0, 0, 0], { scale: 2, align: 'center', baseline: 'middle' });
  assert.deepEqual([m.x, m.y], [50 - w / 2, 50 - 7]);
  const v = c.text('loss', 10, 90, [0, 0, 0], { scale: 2, vertical: true });
  assert.deepEqual([v.x, v.y, v.w, v.h], [10, 90 - w, 18, w]);
  // 'l' is the first letter: read bottom to top, it is the lowest ink; its stem is vertical text's bottom row.
  let lowest = -1;
  for (let y = 99; y >= 0 && lowest < 0; y--) for (let x = 0; x < 30; x++) if (c.get(x, y)[0] !== 255) { lowest = y; break; }
  assert.ok(lowest <= 89 && lowest >= 86, `lowest ink at row ${lowest}`);
  assert.deepEqual(hex('#1f77b4'), [31, 119, 180]);
  assert.deepEqual(hex('#fff8'), [255, 255, 255, 136]);
  assert.throws(() => hex('blue'), /not a hex color/);
});

// ---- Axes and data ----------------------------------------------------------------------------------

test('niceTicks: steps of 1, 2 or 5 x 10^k, limits rounded out to whole steps', () => {
  assert.deepEqual(niceTicks(0, 5000, 6), { lo: 0, hi: 5000, step: 1000, ticks: [0, 1000, 2000, 3000, 4000, 5000] });
  const y = niceTicks(1.33, 4.55, 6);
  assert.deepEqual([y.lo, y.hi, y.step], [1, 5, 0.5]);
  assert.deepEqual(y.ticks, [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]);
  const t = niceTicks(0.1, 0.7, 3);
  assert.deepEqual(t.ticks, [0, 0.2, 0.4, 0.6, 0.8], 'no 0.6000000000000001');
  const n = niceTicks(-3, 7, 5);
  assert.deepEqual([n.lo, n.hi, n.step], [-4, 8, 2]);
  const one = niceTicks(2, 2, 4); // a single value still gets a range
  assert.ok(one.lo < 2 && one.hi > 2 && one.ticks.length >= 2);
  const zero = niceTicks(0, 0, 4);
  assert.ok(zero.lo <= 0 && zero.hi > 0);
  const fixed = niceTicks(1.33, 4.55, 6, { lo: 1.2, hi: 3 });
  assert.deepEqual([fixed.lo, fixed.hi], [1.2, 3]);
  assert.ok(fixed.ticks.every((v) => v >= 1.2 && v <= 3));
  for (const [a, b, k] of [[0, 1, 5], [3, 97, 7], [1e-3, 4e-3, 4], [0, 123456, 6], [-1, -0.2, 5]] as const) {
    const r = niceTicks(a, b, k);
    assert.ok(r.lo <= a && r.hi >= b, `${a}..${b}`);
    const m = r.step / 10 ** Math.floor(Math.log10(r.step) + 1e-9);
    assert.ok([1, 2, 5].some((c) => Math.abs(m - c) < 1e-9), `step ${r.step}`);
  }
});

test('formatTick: decimals from the step, k/M suffixes, no negative zero', () => {
  assert.equal(formatTick(1.5, 0.5), '1.5');
  assert.equal(formatTick(2, 0.5), '2.0');
  assert.equal(formatTick(0.25, 0.05), '0.25');
  assert.equal(formatTick(3000, 1000), '3000');
  assert.equal(formatTick(20000, 10000, 60000), '20k');
  assert.equal(formatTick(2500, 500, 10000), '2.5k');
  assert.equal(formatTick(0, 10000, 60000), '0');
  assert.equal(formatTick(3e7, 1e7), '30M');
  assert.equal(formatTick(-1e-17, 0.1), '0.0');
});

test('parseSeriesSpec: NAME=FILE:XFIELD:YFIELD, the file may contain colons', () => {
  assert.deepEqual(parseSeriesSpec('weft=runs/brown/metrics.jsonl:step:val_loss'), { name: 'weft', file: 'runs/brown/metrics.jsonl', x: 'step', y: 'val_loss' });
  assert.deepEqual(parseSeriesSpec('a b=C:/logs/x.jsonl:it:eval.loss'), { name: 'a b', file: 'C:/logs/x.jsonl', x: 'it', y: 'eval.loss' });
  for (const bad of ['weft', '=f:x:y', 'w=f:x', 'w=:x:y', 'w=f::y']) {
    assert.throws(() => parseSeriesSpec(bad), (e: unknown) => e instanceof PlotError && e.exitCode === 2 && /NAME=FILE:XFIELD:YFIELD/.test(e.message), bad);
  }
});

test('readSeries: skips rows lacking the fields (or null/NaN), reads dotted paths, sorts by x', () => {
  const f = join(tmp, 'mixed.jsonl');
  writeFileSync(f, [
    '{"step": 20, "val_loss": 2.0}',
    '',
    '{"step": 10, "train_loss": 3.1}',
    '{"step": 10, "val_loss": 2.5, "eval": {"loss": 9}}',
    '{"step": 30, "val_loss": null}',
    '{"step": 40, "val_loss": NaN}',
    '{"step": "50", "val_loss": 1.0}',
    '[1, 2]',
    '{"step": 0, "val_loss": 3.0}\r',
  ].join('\n'));
  assert.deepEqual(readSeries({ name: 'w', file: f, x: 'step', y: 'val_loss' }).points, [[0, 3], [10, 2.5], [20, 2]]);
  assert.deepEqual(readSeries({ name: 'w', file: f, x: 'step', y: 'eval.loss' }).points, [[10, 9]]);
});

// ---- CLI --------------------------------------------------------------------------------------------

const run = (...args: string[]) => spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 30_000 });

test('plot_curves: two JSONL files to a PNG of the requested size, points on stdout', () => {
  const a = join(tmp, 'weft.jsonl'), b = join(tmp, 'torch.jsonl');
  writeFileSync(a, Array.from({ length: 11 }, (_, i) => JSON.stringify({ step: i * 100, val_loss: 1.3 + 3 * Math.exp(-i / 3), lr: 1e-3 })).join('\n'));
  writeFileSync(b, Array.from({ length: 11 }, (_, i) => JSON.stringify(i % 2 ? { step: i * 100, loss: 9 } : { step: i * 100, val: 1.35 + 3 * Math.exp(-i / 3.2) })).join('\n') + '\n');
  const out = join(tmp, 'sub', 'dir', 'curves.png');
  const r = run('--out', out, '--title', 'Brown corpus: validation loss', '--series', `weft=${a}:step:val_loss`, '--series', `PyTorch=${b}:step:val`, '--width', '320', '--height', '200');
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { out: string; width: number; height: number; series: { name: string; file: string; points: [number, number][] }[] };
  assert.equal(res.out, out);
  assert.deepEqual([res.width, res.height], [320, 200]);
  assert.deepEqual(res.series.map((s) => [s.name, s.file, s.points.length]), [['weft', a, 11], ['PyTorch', b, 6]]);
  assert.deepEqual(res.series[1]!.points[1], [200, 1.35 + 3 * Math.exp(-2 / 3.2)]);
  const img = decode(readFileSync(out));
  assert.deepEqual([img.width, img.height], [320, 200]);
  // Both series' colors are on the image, and the corners are background.
  const colors = new Set<string>();
  for (let i = 0; i < img.rgba.length; i += 4) colors.add(`${img.rgba[i]},${img.rgba[i + 1]},${img.rgba[i + 2]}`);
  for (const c of PALETTE.slice(0, 2)) assert.ok(colors.has(c.slice(0, 3).join(',')), `color ${c.join(',')} drawn`);
  assert.ok(!colors.has(PALETTE[2]!.slice(0, 3).join(',')), 'no third series');
  assert.deepEqual(pixel(img, 0, 0), [255, 255, 255, 255]);
  assert.deepEqual(pixel(img, 319, 199), [255, 255, 255, 255]);

  const def = join(tmp, 'default.png');
  const d = run('--out', def, '--series', `weft=${a}:step:val_loss`);
  assert.equal(d.status, 0, d.stderr);
  const dimg = decode(readFileSync(def));
  assert.deepEqual([dimg.width, dimg.height], [800, 480]);
});

test('plot_curves: errors name the file (and line) and exit non-zero without writing', () => {
  const good = join(tmp, 'good.jsonl');
  writeFileSync(good, '{"step": 1, "val": 2}\n{"step": 2, "val": 1.5}\n');
  const out = join(tmp, 'never.png');

  const missing = join(tmp, 'nope', 'metrics.jsonl');
  let r = run('--out', out, '--series', `weft=${missing}:step:val`);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /series "weft": cannot read .*nope\/metrics\.jsonl: no such file/);

  const bad = join(tmp, 'bad.jsonl');
  writeFileSync(bad, '{"step": 1, "val": 2}\n\n{"step": 2, "val": \n{"step": 3, "val": 1}\n');
  r = run('--out', out, '--series', `ok=${good}:step:val`, '--series', `bad=${bad}:step:val`);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`${bad}:3: malformed JSON line`), r.stderr);

  const empty = join(tmp, 'empty.jsonl');
  writeFileSync(empty, '{"step": 1, "loss": 2}\n{"epoch": 1}\n');
  r = run('--out', out, '--series', `ok=${good}:step:val`, '--series', `none=${empty}:step:val`);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`series "none": no points in ${empty}`), r.stderr);
  assert.match(r.stderr, /none of its 2 rows has numbers in both "step" and "val"/);

  r = run('--series', `ok=${good}:step:val`);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--out is required/);
  r = run('--out', out);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--series is required/);
  r = run('--out', out, '--series', `ok=${good}`);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /NAME=FILE:XFIELD:YFIELD/);
  r = run('--out', out, '--series', `ok=${good}:step:val`, '--width', 'wide');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--width "wide"/);
  r = run('--out', out, '--series', `ok=${good}:step:val`, '--colour', 'red');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /colour/);
  assert.throws(() => readFileSync(out), /ENOENT/);

  r = run('--help');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^usage: /);
});
