/**
 * A dependency-free PNG encoder and a tiny raster canvas, enough to draw plots for the docs.
 *
 * - `encodePng(width, height, rgba)`: 8-bit RGBA (or RGB) PNG: signature, IHDR, one IDAT (every row
 *   with filter byte 0, compressed with node:zlib), IEND; chunk CRCs from a CRC-32 table.
 * - `Canvas`: an RGBA pixel buffer (opaque white to start) with rectangles, anti-aliased thick lines
 *   and polylines, circles and dots, an optional clip rectangle, and text in a built-in 5x7 bitmap font
 *   (digits, letters of both cases with descenders, common punctuation) at any scale, bold or not,
 *   horizontal or rotated a quarter turn for a y-axis title. No font files.
 */
import { deflateSync } from 'node:zlib';

// ---- PNG --------------------------------------------------------------------------------------------

export const PNG_SIGNATURE: Buffer = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309 / ITU-T V.42, as PNG uses it) of `bytes`. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

export interface PngOptions {
  /** Keep the alpha channel (color type 6, the default) or drop it (color type 2, RGB). */
  alpha?: boolean;
  /** zlib level, 0-9 (default 9). */
  level?: number;
}

/**
 * Encodes `rgba` (width * height * 4 bytes, rows top to bottom, R G B A per pixel) as a PNG file.
 * With `{ alpha: false }` the alpha bytes are dropped and the file is RGB.
 */
export function encodePng(width: number, height: number, rgba: Uint8Array, opts: PngOptions = {}): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || width > 0x7fffffff || height > 0x7fffffff) {
    throw new RangeError(`encodePng: width and height must be positive integers, got ${width}x${height}`);
  }
  if (rgba.length !== width * height * 4) {
    throw new RangeError(`encodePng: expected ${width * height * 4} bytes of RGBA for ${width}x${height}, got ${rgba.length}`);
  }
  const alpha = opts.alpha ?? true;
  const channels = alpha ? 4 : 3;
  const stride = 1 + width * channels;
  const raw = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const row = y * stride; // raw[row] = 0: filter type None
    if (alpha) {
      raw.set(rgba.subarray(y * width * 4, (y + 1) * width * 4), row + 1);
    } else {
      for (let x = 0, s = y * width * 4, d = row + 1; x < width; x++, s += 4, d += 3) {
        raw[d] = rgba[s]!;
        raw[d + 1] = rgba[s + 1]!;
        raw[d + 2] = rgba[s + 2]!;
      }
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = alpha ? 6 : 2; // color type: truecolor with alpha / truecolor
  ihdr[10] = 0; // compression: deflate
  ihdr[11] = 0; // filter method 0
  ihdr[12] = 0; // no interlace
  return Buffer.concat([
    PNG_SIGNATURE,
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: opts.level ?? 9 })),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

// ---- Colors -----------------------------------------------------------------------------------------

/** [r, g, b] or [r, g, b, a], each 0-255. */
export type Color = readonly [number, number, number] | readonly [number, number, number, number];

/** '#rgb', '#rgba', '#rrggbb' or '#rrggbbaa' to a Color. */
export function hex(s: string): Color {
  let h = s.startsWith('#') ? s.slice(1) : s;
  if (h.length === 3 || h.length === 4) h = [...h].map((c) => c + c).join('');
  if (!/^[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$/.test(h)) throw new Error(`not a hex color: ${JSON.stringify(s)}`);
  const v = (i: number): number => parseInt(h.slice(i, i + 2), 16);
  return h.length === 8 ? [v(0), v(2), v(4), v(6)] : [v(0), v(2), v(4)];
}

// ---- Font -------------------------------------------------------------------------------------------

/**
 * A 5x7 bitmap font: 7 rows from the cap line to the baseline, plus up to 2 descender rows
 * (g j p q y , ;). '#' is ink. Glyphs are drawn proportionally: blank columns at either side are
 * trimmed and one column of space follows (digits keep all 5 columns so numbers line up).
 */
const GLYPH_ROWS: Record<string, string> = {
  '0': '.###. #...# #..## #.#.# ##..# #...# .###.',
  '1': '..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.',
  '2': '.###. #...# ....# ...#. ..#.. .#... #####',
  '3': '##### ...#. ..#.. ...#. ....# #...# .###.',
  '4': '...#. ..##. .#.#. #..#. ##### ...#. ...#.',
  '5': '##### #.... ####. ....# ....# #...# .###.',
  '6': '..##. .#... #.... ####. #...# #...# .###.',
  '7': '##### ....# ...#. ..#.. .#... .#... .#...',
  '8': '.###. #...# #...# .###. #...# #...# .###.',
  '9': '.###. #...# #...# .#### ....# ...#. .##..',
  A: '.###. #...# #...# ##### #...# #...# #...#',
  B: '####. #...# #...# ####. #...# #...# ####.',
  C: '.###. #...# #.... #.... #.... #...# .###.',
  D: '###.. #..#. #...# #...# #...# #..#. ###..',
  E: '##### #.... #.... ####. #.... #.... #####',
  F: '##### #.... #.... ####. #.... #.... #....',
  G: '.###. #...# #.... #.### #...# #...# .####',
  H: '#...# #...# #...# ##### #...# #...# #...#',
  I: '.###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  J: '..### ...#. ...#. ...#. ...#. #..#. .##..',
  K: '#...# #..#. #.#.. ##... #.#.. #..#. #...#',
  L: '#.... #.... #.... #.... #.... #.... #####',
  M: '#...# ##.## #.#.# #.#.# #...# #...# #...#',
  N: '#...# #...# ##..# #.#.# #..## #...# #...#',
  O: '.###. #...# #...# #...# #...# #...# .###.',
  P: '####. #...# #...# ####. #.... #.... #....',
  Q: '.###. #...# #...# #...# #.#.# #..#. .##.#',
  R: '####. #...# #...# ####. #.#.. #..#. #...#',
  S: '.#### #.... #.... .###. ....# ....# ####.',
  T: '##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..',
  U: '#...# #...# #...# #...# #...# #...# .###.',
  V: '#...# #...# #...# #...# #...# .#.#. ..#..',
  W: '#...# #...# #...# #.#.# #.#.# #.#.# .#.#.',
  X: '#...# #...# .#.#. ..#.. .#.#. #...# #...#',
  Y: '#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..',
  Z: '##### ....# ...#. ..#.. .#... #.... #####',
  a: '..... ..... .###. ....# .#### #...# .####',
  b: '#.... #.... #.##. ##..# #...# #...# ####.',
  c: '..... ..... .###. #.... #.... #...# .###.',
  d: '....# ....# .##.# #..## #...# #...# .####',
  e: '..... ..... .###. #...# ##### #.... .###.',
  f: '..##. .#..# .#... ###.. .#... .#... .#...',
  g: '..... ..... .#### #...# #...# #...# .#### ....# .###.',
  h: '#.... #.... #.##. ##..# #...# #...# #...#',
  i: '..#.. ..... .##.. ..#.. ..#.. ..#.. .###.',
  j: '...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##..',
  k: '#.... #.... #..#. #.#.. ##... #.#.. #..#.',
  l: '.##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  m: '..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#',
  n: '..... ..... #.##. ##..# #...# #...# #...#',
  o: '..... ..... .###. #...# #...# #...# .###.',
  p: '..... ..... ####. #...# #...# #...# ####. #.... #....',
  q: '..... ..... .#### #...# #...# #...# .#### ....# ....#',
  r: '..... ..... #.##. ##..# #.... #.... #....',
  s: '..... ..... .#### #.... .###. ....# ####.',
  t: '.#... .#... ###.. .#... .#... .#..# ..##.',
  u: '..... ..... #...# #...# #...# #..## .##.#',
  v: '..... ..... #...# #...# #...# .#.#. ..#..',
  w: '..... ..... #...# #...# #.#.# #.#.# .#.#.',
  x: '..... ..... #...# .#.#. ..#.. .#.#. #...#',
  y: '..... ..... #...# #...# #...# #...# .#### ....# .###.',
  z: '..... ..... ##### ...#. ..#.. .#... #####',
  '.': '..... ..... ..... ..... ..... .##.. .##..',
  ',': '..... ..... ..... ..... ..... .##.. .##.. ..#.. .#...',
  ';': '..... .##.. .##.. ..... .##.. .##.. ..#.. .#...',
  ':': '..... .##.. .##.. ..... .##.. .##.. .....',
  '-': '..... ..... ..... .###. ..... ..... .....',
  '+': '..... ..#.. ..#.. ##### ..#.. ..#.. .....',
  '=': '..... ..... ##### ..... ##### ..... .....',
  '(': '...#. ..#.. .#... .#... .#... ..#.. ...#.',
  ')': '.#... ..#.. ...#. ...#. ...#. ..#.. .#...',
  '[': '.###. .#... .#... .#... .#... .#... .###.',
  ']': '.###. ...#. ...#. ...#. ...#. ...#. .###.',
  '/': '..... ....# ...#. ..#.. .#... #.... .....',
  '%': '##... ##..# ...#. ..#.. .#... #..## ...##',
  '_': '..... ..... ..... ..... ..... ..... ..... #####',
  "'": '..#.. ..#.. .#... ..... ..... ..... .....',
  '"': '.#.#. .#.#. ..... ..... ..... ..... .....',
  '!': '..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..',
  '?': '.###. #...# ....# ...#. ..#.. ..... ..#..',
  '*': '..... ..#.. #.#.# .###. #.#.# ..#.. .....',
  '<': '...#. ..#.. .#... #.... .#... ..#.. ...#.',
  '>': '.#... ..#.. ...#. ....# ...#. ..#.. .#...',
  '#': '.#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.',
  '@': '.###. #...# #.### #.#.# #.### #.... .###.',
  '&': '.##.. #..#. #.#.. .#... #.#.# #..#. .##.#',
  '|': '..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..',
  '~': '..... ..... .#... #.#.# ...#. ..... .....',
  '^': '..#.. .#.#. #...# ..... ..... ..... .....',
  // Shown in place of any character the font lacks.
  '\u0000': '##### #...# #...# #...# #...# #...# #####',
};

interface Glyph {
  /** Ink pixels as [column, row] after trimming, row 0 = cap line, row 6 = baseline. */
  ink: [number, number][];
  /** Columns the glyph takes, without the following space. */
  width: number;
}

export const FONT_CAP_HEIGHT = 7;
/** Rows from the cap line to the bottom of a descender. */
export const FONT_CELL_HEIGHT = 9;
const SPACE_WIDTH = 3;

const GLYPHS: Map<string, Glyph> = new Map(
  Object.entries(GLYPH_ROWS).map(([ch, spec]) => {
    const rows = spec.split(' ');
    const ink: [number, number][] = [];
    rows.forEach((row, r) => [...row].forEach((c, x) => { if (c === '#') ink.push([x, r]); }));
    const digit = ch >= '0' && ch <= '9';
    const lo = digit ? 0 : Math.min(...ink.map(([x]) => x));
    const hi = digit ? 4 : Math.max(...ink.map(([x]) => x));
    return [ch, { ink: ink.map(([x, y]) => [x - lo, y]), width: hi - lo + 1 }];
  }),
);

/** The characters the built-in font draws (others draw as a box). */
export const FONT_CHARS: string = [' ', ...GLYPHS.keys()].filter((c) => c !== '\u0000').join('');

function glyph(ch: string): Glyph | null {
  if (ch === ' ') return null;
  return GLYPHS.get(ch) ?? GLYPHS.get('\u0000')!;
}

export interface TextOptions {
  /** Pixels per font pixel (default 1); fractional scales are anti-aliased. */
  scale?: number;
  /** Heavier strokes: each is drawn again a pixel or so to its right. */
  bold?: boolean;
  /** Where x lies on the text: its start, middle or end (default 'left'), along the reading direction. */
  align?: 'left' | 'center' | 'right';
  /** Where y lies: the cap line, the middle of the caps, or the baseline (default 'top'). */
  baseline?: 'top' | 'middle' | 'bottom';
  /** Turn the text a quarter turn counter-clockwise, to read bottom to top (a y-axis title). */
  vertical?: boolean;
}

/** How far (canvas pixels) bold text repeats each stroke to the right, at `scale`. */
const boldShift = (scale: number): number => Math.max(1, Math.round(scale / 3));

/** Width in canvas pixels that `text` takes (its extent along the reading direction). */
export function measureText(text: string, opts: TextOptions = {}): number {
  const s = opts.scale ?? 1;
  const extra = opts.bold ? boldShift(s) : 0;
  let w = 0;
  for (const ch of text) {
    const g = glyph(ch);
    w += (g ? g.width * s + extra : SPACE_WIDTH * s) + s;
  }
  return Math.ceil(Math.max(0, w - s));
}

// ---- Canvas -----------------------------------------------------------------------------------------

export interface Rect { x: number; y: number; w: number; h: number }

/** An RGBA raster, top-left origin, pixel (x, y) covering [x, x+1) x [y, y+1). Starts opaque white. */
export class Canvas {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
  /** Drawing outside this rectangle is discarded (null: the whole canvas). */
  clip: Rect | null = null;

  constructor(width: number, height: number, background: Color = [255, 255, 255]) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new RangeError(`Canvas: width and height must be positive integers, got ${width}x${height}`);
    }
    this.width = width;
    this.height = height;
    this.data = new Uint8Array(width * height * 4);
    this.fillRect(0, 0, width, height, background);
  }

  /** Composites `color` over pixel (x, y) with `coverage` (0-1) times the color's own alpha. */
  blend(x: number, y: number, color: Color, coverage = 1): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const c = this.clip;
    if (c && (x < c.x || y < c.y || x >= c.x + c.w || y >= c.y + c.h)) return;
    const a = Math.min(1, Math.max(0, coverage)) * ((color[3] ?? 255) / 255);
    if (a <= 0) return;
    const i = (y * this.width + x) * 4;
    const d = this.data;
    if (a >= 1) {
      d[i] = color[0]; d[i + 1] = color[1]; d[i + 2] = color[2]; d[i + 3] = 255;
      return;
    }
    const da = d[i + 3]! / 255;
    const oa = a + da * (1 - a);
    for (let k = 0; k < 3; k++) d[i + k] = Math.round((color[k]! * a + d[i + k]! * da * (1 - a)) / oa);
    d[i + 3] = Math.round(oa * 255);
  }

  /** RGBA of pixel (x, y). */
  get(x: number, y: number): [number, number, number, number] {
    const i = (y * this.width + x) * 4;
    return [this.data[i]!, this.data[i + 1]!, this.data[i + 2]!, this.data[i + 3]!];
  }

  /** Fills [x, x+w) x [y, y+h); fractional edges are covered in proportion. */
  fillRect(x: number, y: number, w: number, h: number, color: Color): void {
    if (w <= 0 || h <= 0) return;
    const x1 = x + w, y1 = y + h;
    for (let py = Math.max(0, Math.floor(y)); py < Math.min(this.height, Math.ceil(y1)); py++) {
      const cy = Math.min(py + 1, y1) - Math.max(py, y);
      for (let px = Math.max(0, Math.floor(x)); px < Math.min(this.width, Math.ceil(x1)); px++) {
        const cx = Math.min(px + 1, x1) - Math.max(px, x);
        this.blend(px, py, color, cx * cy);
      }
    }
  }

  /** A rectangle's outline, `thickness` pixels inside [x, x+w) x [y, y+h). */
  strokeRect(x: number, y: number, w: number, h: number, color: Color, thickness = 1): void {
    const t = Math.min(thickness, w / 2, h / 2);
    this.fillRect(x, y, w, t, color);
    this.fillRect(x, y + h - t, w, t, color);
    this.fillRect(x, y + t, t, h - 2 * t, color);
    this.fillRect(x + w - t, y + t, t, h - 2 * t, color);
  }

  /**
   * Composites a coverage mask: `cov` over the pixels [x0, x0+w) x [y0, y0+h), each covered with
   * alpha min(1, cov). Drawing shapes through a mask keeps overlapping parts from darkening.
   */
  private paintMask(x0: number, y0: number, w: number, h: number, cov: Float32Array, color: Color): void {
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const c = cov[j * w + i]!;
        if (c > 0) this.blend(x0 + i, y0 + j, color, c);
      }
    }
  }

  /** An anti-aliased straight line with round ends, `thickness` pixels wide. */
  line(x0: number, y0: number, x1: number, y1: number, color: Color, thickness = 1): void {
    this.polyline([[x0, y0], [x1, y1]], color, thickness);
  }

  /** Anti-aliased connected segments with round joins and ends, `thickness` pixels wide. */
  polyline(points: readonly (readonly [number, number])[], color: Color, thickness = 1): void {
    if (points.length === 0) return;
    const r = thickness / 2;
    const pad = r + 1;
    let bx0 = Infinity, by0 = Infinity, bx1 = -Infinity, by1 = -Infinity;
    for (const [x, y] of points) {
      bx0 = Math.min(bx0, x); by0 = Math.min(by0, y); bx1 = Math.max(bx1, x); by1 = Math.max(by1, y);
    }
    const X0 = Math.max(0, Math.floor(bx0 - pad)), Y0 = Math.max(0, Math.floor(by0 - pad));
    const X1 = Math.min(this.width, Math.ceil(bx1 + pad)), Y1 = Math.min(this.height, Math.ceil(by1 + pad));
    const w = X1 - X0, h = Y1 - Y0;
    if (w <= 0 || h <= 0) return;
    const cov = new Float32Array(w * h);
    const segs = points.length === 1 ? [[points[0]!, points[0]!] as const] : points.slice(1).map((p, k) => [points[k]!, p] as const);
    for (const [[ax, ay], [qx, qy]] of segs) {
      const sx0 = Math.max(X0, Math.floor(Math.min(ax, qx) - pad)), sx1 = Math.min(X1, Math.ceil(Math.max(ax, qx) + pad));
      const sy0 = Math.max(Y0, Math.floor(Math.min(ay, qy) - pad)), sy1 = Math.min(Y1, Math.ceil(Math.max(ay, qy) + pad));
      const dx = qx - ax, dy = qy - ay;
      const len2 = dx * dx + dy * dy;
      for (let py = sy0; py < sy1; py++) {
        for (let px = sx0; px < sx1; px++) {
          const cx = px + 0.5, cy = py + 0.5;
          const t = len2 > 0 ? Math.min(1, Math.max(0, ((cx - ax) * dx + (cy - ay) * dy) / len2)) : 0;
          const ex = cx - (ax + t * dx), ey = cy - (ay + t * dy);
          const c = Math.min(1, Math.max(0, r + 0.5 - Math.sqrt(ex * ex + ey * ey)));
          const k = (py - Y0) * w + (px - X0);
          if (c > cov[k]!) cov[k] = c;
        }
      }
    }
    this.paintMask(X0, Y0, w, h, cov, color);
  }

  /** A circle of radius r about (cx, cy): filled when `thickness` is omitted, else its outline. */
  circle(cx: number, cy: number, r: number, color: Color, thickness?: number): void {
    const outer = thickness === undefined ? r : r + thickness / 2;
    const inner = thickness === undefined ? -Infinity : r - thickness / 2;
    const X0 = Math.max(0, Math.floor(cx - outer - 1)), X1 = Math.min(this.width, Math.ceil(cx + outer + 1));
    const Y0 = Math.max(0, Math.floor(cy - outer - 1)), Y1 = Math.min(this.height, Math.ceil(cy + outer + 1));
    for (let py = Y0; py < Y1; py++) {
      for (let px = X0; px < X1; px++) {
        const d = Math.hypot(px + 0.5 - cx, py + 0.5 - cy);
        const c = Math.min(1, Math.max(0, outer + 0.5 - d)) * Math.min(1, Math.max(0, d - inner + 0.5));
        this.blend(px, py, color, c);
      }
    }
  }

  /** A filled dot with an optional ring around it (e.g. white, to lift it off a line). */
  dot(cx: number, cy: number, r: number, color: Color, ring?: { color: Color; width: number }): void {
    if (ring) this.circle(cx, cy, r + ring.width, ring.color);
    this.circle(cx, cy, r, color);
  }

  /**
   * Draws `text` in the built-in font with its anchor at (x, y); see TextOptions. Returns the box it
   * took on the canvas (before clipping).
   */
  text(text: string, x: number, y: number, color: Color, opts: TextOptions = {}): Rect {
    const s = opts.scale ?? 1;
    const bold = opts.bold ?? false;
    const shift = bold ? boldShift(s) : 0;
    const len = measureText(text, opts); // along the reading direction
    const depth = FONT_CELL_HEIGHT * s; // across it, cap line to descender
    const along = opts.align === 'center' ? -len / 2 : opts.align === 'right' ? -len : 0;
    const across = opts.baseline === 'middle' ? -FONT_CAP_HEIGHT * s / 2 : opts.baseline === 'bottom' ? -FONT_CAP_HEIGHT * s : 0;
    // Lay the text out in its own frame (u along, v across), on a mask with whole-pixel origin.
    const W = Math.ceil(len) + 1, H = Math.ceil(depth) + 1;
    const fu = along - Math.floor(along), fv = across - Math.floor(across);
    const cov = new Float32Array(W * H);
    const box = (u0: number, v0: number): void => {
      const u1 = u0 + s, v1 = v0 + s;
      for (let v = Math.floor(v0); v < Math.ceil(v1); v++) {
        const cv = Math.min(v + 1, v1) - Math.max(v, v0);
        for (let u = Math.floor(u0); u < Math.ceil(u1); u++) {
          const cu = Math.min(u + 1, u1) - Math.max(u, u0);
          if (u >= 0 && v >= 0 && u < W && v < H) cov[v * W + u] = cov[v * W + u]! + cu * cv;
        }
      }
    };
    let pen = 0;
    for (const ch of text) {
      const g = glyph(ch);
      if (!g) { pen += (SPACE_WIDTH + 1) * s; continue; }
      for (const [gx, gy] of g.ink) {
        box(fu + pen + gx * s, fv + gy * s);
        if (bold) box(fu + pen + gx * s + shift, fv + gy * s);
      }
      pen += g.width * s + shift + s;
    }
    for (let k = 0; k < cov.length; k++) if (cov[k]! > 1) cov[k] = 1;
    if (!opts.vertical) {
      const X0 = Math.round(x) + Math.floor(along), Y0 = Math.round(y) + Math.floor(across);
      this.paintMask(X0, Y0, W, H, cov, color);
      return { x: X0, y: Y0, w: Math.ceil(len), h: Math.ceil(depth) };
    }
    // A quarter turn counter-clockwise: u runs up the canvas from y, v runs right from x.
    const X0 = Math.round(x) + Math.floor(across), Yb = Math.round(y) - Math.floor(along);
    for (let v = 0; v < H; v++) {
      for (let u = 0; u < W; u++) {
        const c = cov[v * W + u]!;
        if (c > 0) this.blend(X0 + v, Yb - 1 - u, color, c);
      }
    }
    return { x: X0, y: Yb - Math.ceil(len), w: Math.ceil(depth), h: Math.ceil(len) };
  }

  /** The canvas as a PNG file (RGB unless `alpha`, since the canvas is usually opaque). */
  toPng(opts: PngOptions = {}): Buffer {
    return encodePng(this.width, this.height, this.data, { alpha: false, ...opts });
  }
}
