/**
 * Tokenizers: bytes <-> token ids. `ByteTokenizer` is the identity on UTF-8 bytes (vocabulary 256);
 * `BpeTokenizer` is byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte-level
 * variant): ids 0..255 are the bytes, id 256 + i is merges[i] = [a, b], the concatenation of a and b.
 *
 * Both round-trip exactly on any bytes: `decodeBytes(encode(b))` equals `b`. `decode` returns the
 * UTF-8 string, so it is exact whenever the bytes are valid UTF-8.
 *
 * @example
 *   const tok = BpeTokenizer.train(brownText(), 512);
 *   tok.save('brown512.json');
 *   const ids = BpeTokenizer.load('brown512.json').encode('The jury said.');
 */
import { readFileSync, writeFileSync } from 'node:fs';

export interface Tokenizer {
  readonly vocabSize: number;
  /** Token ids of a string (encoded as UTF-8 first) or of raw bytes. */
  encode(input: string | Uint8Array): Int32Array;
  /** The bytes the ids stand for: the exact inverse of `encode`. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array;
  /** `decodeBytes` read as UTF-8 (invalid sequences become U+FFFD). */
  decode(ids: ArrayLike<number>): string;
  toJSON(): TokenizerJSON;
}

export type TokenizerJSON =
  | { type: 'byte' }
  | { type: 'bpe'; version: 1; vocabSize: number; maxPiece: number; merges: [number, number][] };

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8');
const asBytes = (input: string | Uint8Array): Uint8Array => (typeof input === 'string' ? utf8.encode(input) : input);

function checkIds(ids: ArrayLike<number>, vocabSize: number, who: string): void {
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i]!;
    if (!(Number.isInteger(t) && t >= 0 && t < vocabSize)) throw new Error(`${who}.decode: ids[${i}] = ${t} is not a token id in [0, ${vocabSize})`);
  }
}

/** Identity on bytes: token id = byte value. */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 256;
  encode(input: string | Uint8Array): Int32Array { return Int32Array.from(asBytes(input)); }
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    checkIds(ids, 256, 'ByteTokenizer');
    return Uint8Array.from(ids as ArrayLike<number>);
  }
  decode(ids: ArrayLike<number>): string { return fromUtf8.decode(this.decodeBytes(ids)); }
  toJSON(): TokenizerJSON { return { type: 'byte' }; }
}

// ---- pre-tokenization: merges never cross a piece boundary --------------------------------------

/** Pieces longer than this are cut, which bounds the per-piece merge loop (words this long are rare). */
const MAX_PIECE = 64;

const isSpace = (b: number): boolean => b === 32 || (b >= 9 && b <= 13);

/**
 * Calls `emit(start, end)` for each piece of `bytes`, in order, covering every byte once. A piece is
 * a run of non-whitespace bytes with at most one leading space (" word"), or a run of whitespace
 * that does not give up the space a following word takes (GPT-2's `\s+(?!\S)|\s+`, with words
 * split on whitespace only). Pieces longer than MAX_PIECE bytes are cut into MAX_PIECE chunks.
 */
function forEachPiece(bytes: Uint8Array, emit: (start: number, end: number) => void): void {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const start = i;
    if (!isSpace(bytes[i]!) || (bytes[i] === 32 && i + 1 < n && !isSpace(bytes[i + 1]!))) {
      i++;
      while (i < n && !isSpace(bytes[i]!)) i++;
    } else {
      while (i < n && isSpace(bytes[i]!)) i++;
      if (i < n && i - start > 1 && bytes[i - 1] === 32) i--; // leave " " to the next word
    }
    for (let s = start; s < i; s += MAX_PIECE) emit(s, Math.min(i, s + MAX_PIECE));
  }
}

// ---- pair keys and a max-heap of (count, pair) ---------------------------------------------------

/** Token ids stay below 2^20, so a pair (a, b) packs exactly into a double as a * 2^20 + b. */
const KEY = 1 << 20;
const pairKey = (a: number, b: number): number => a * KEY + b;

/** Max-heap ordered by count, ties by the smaller pair key (so training is deterministic). */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number { return this.keys.length; }
  private above(i: number, j: number): boolean {
    const ci = this.counts[i]!, cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }
  private swap(i: number, j: number): void {
    const c = this.counts[i]!; this.counts[i] = this.counts[j]!; this.counts[j] = c;
    const k = this.keys[i]!; this.keys[i] = this.keys[j]!; this.keys[j] = k;
  }
  push(count: number, key: number): void {
    this.counts.push(count); this.keys.push(key);
    let i = this.keys.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p); i = p;
    }
  }
  top(): { count: number; key: number } { return { count: this.counts[0]!, key: this.keys[0]! }; }
  pop(): void {
    const last = this.keys.length - 1;
    this.swap(0, last); this.counts.pop(); this.keys.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < last && this.above(l, m)) m = l;
      if (r < last && this.above(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m); i = m;
    }
  }
}

// ---- BPE -----------------------------------------------------------------------------------------

export interface BpeTrainStats { seconds: number; pieces: number; uniquePieces: number }

export class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly merges: readonly (readonly [number, number])[];
  private readonly rank = new Map<number, number>();
  private readonly bytesOf: Uint8Array[] = [];
  private readonly cache = new Map<string, Int32Array>();
  /** Set by `train`: how long it took and how many pieces the corpus had. */
  trainStats: BpeTrainStats | null = null;

  /** From a merges list: merges[i] = [a, b] with a, b < 256 + i makes token 256 + i. */
  constructor(merges: readonly (readonly [number, number])[]) {
    merges.forEach(([a, b], i) => {
      const limit = 256 + i;
      if (!(Number.isInteger(a) && Number.isInteger(b) && a >= 0 && b >= 0 && a < limit && b < limit)) {
        throw new Error(`BpeTokenizer: merges[${i}] must be two token ids in [0, ${limit}), got ${JSON.stringify([a, b])}`);
      }
    });
    if (256 + merges.length > KEY) throw new Error(`BpeTokenizer: at most ${KEY - 256} merges, got ${merges.length}`);
    this.merges = merges.map(([a, b]) => [a, b] as const);
    this.vocabSize = 256 + merges.length;
    for (let b = 0; b < 256; b++) this.bytesOf.push(Uint8Array.of(b));
    this.merges.forEach(([a, b], i) => {
      this.rank.set(pairKey(a, b), i);
      const [x, y] = [this.bytesOf[a]!, this.bytesOf[b]!];
      const xy = new Uint8Array(x.length + y.length);
      xy.set(x); xy.set(y, x.length);
      this.bytesOf.push(xy);
    });
  }

  /**
   * Learn `vocabSize - 256` merges from `data`: split it into pieces (whitespace-bounded words, see
   * forEachPiece), count each distinct piece once, then repeatedly merge the most frequent adjacent
   * pair (ties: the smaller [a, b]), updating pair counts only in the pieces that contain it.
   * Stops early if no pair is left (tiny corpora).
   */
  static train(data: string | Uint8Array, vocabSize: number): BpeTokenizer {
    if (!(Number.isInteger(vocabSize) && vocabSize >= 256 && vocabSize <= KEY)) {
      throw new Error(`BpeTokenizer.train: vocabSize must be an integer in [256, ${KEY}], got ${vocabSize}`);
    }
    const t0 = performance.now();
    const bytes = asBytes(data);
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const pieceCount = new Map<string, number>();
    let pieces = 0;
    forEachPiece(bytes, (s, e) => {
      const k = buf.toString('latin1', s, e);
      pieceCount.set(k, (pieceCount.get(k) ?? 0) + 1);
      pieces++;
    });
    const words: number[][] = [];
    const counts: number[] = [];
    for (const [k, c] of pieceCount) {
      const w = new Array<number>(k.length);
      for (let j = 0; j < k.length; j++) w[j] = k.charCodeAt(j);
      words.push(w); counts.push(c);
    }
    const pairCount = new Map<number, number>();
    const where = new Map<number, number[]>(); // pair -> pieces that (may) contain it
    const add = (k: number, c: number, w: number): void => {
      pairCount.set(k, (pairCount.get(k) ?? 0) + c);
      const ws = where.get(k);
      if (ws === undefined) where.set(k, [w]); else if (ws[ws.length - 1] !== w) ws.push(w);
    };
    words.forEach((w, i) => { for (let j = 0; j + 1 < w.length; j++) add(pairKey(w[j]!, w[j + 1]!), counts[i]!, i); });
    const heap = new PairHeap();
    for (const [k, c] of pairCount) heap.push(c, k);

    const merges: [number, number][] = [];
    const seen = new Int32Array(words.length).fill(-1);
    while (256 + merges.length < vocabSize) {
      while (heap.size > 0 && pairCount.get(heap.top().key) !== heap.top().count) heap.pop(); // stale
      if (heap.size === 0) break;
      const key = heap.top().key;
      heap.pop();
      const a = Math.floor(key / KEY), b = key % KEY, id = 256 + merges.length;
      merges.push([a, b]);
      const changed = new Set<number>();
      for (const wi of where.get(key)!) {
        if (seen[wi] === id) continue;
        seen[wi] = id;
        const w = words[wi]!, c = counts[wi]!;
        let has = false;
        for (let j = 0; j + 1 < w.length && !has; j++) has = w[j] === a && w[j + 1] === b;
        if (!has) continue;
        for (let j = 0; j + 1 < w.length; j++) {
          const k = pairKey(w[j]!, w[j + 1]!);
          pairCount.set(k, pairCount.get(k)! - c);
          changed.add(k);
        }
        const nw: number[] = [];
        for (let j = 0; j < w.length; j++) {
          if (j + 1 < w.length && w[j] === a && w[j + 1] === b) { nw.push(id); j++; } else nw.push(w[j]!);
        }
        for (let j = 0; j + 1 < nw.length; j++) {
          const k = pairKey(nw[j]!, nw[j + 1]!);
          if (nw[j] === id || nw[j + 1] === id) add(k, c, wi); else pairCount.set(k, pairCount.get(k)! + c);
          changed.add(k);
        }
        words[wi] = nw;
      }
      where.delete(key);
      for (const k of changed) {
        const c = pairCount.get(k)!;
        if (c === 0) { pairCount.delete(k); where.delete(k); } else heap.push(c, k);
      }
    }
    const tok = new BpeTokenizer(merges);
    tok.trainStats = { seconds: (performance.now() - t0) / 1000, pieces, uniquePieces: words.length };
    return tok;
  }

  /** Token ids of one piece: apply the lowest-ranked merge present until none applies. */
  private encodePiece(bytes: Uint8Array, s: number, e: number): Int32Array {
    let ids: number[] = Array.from(bytes.subarray(s, e));
    for (;;) {
      let best = -1;
      for (let j = 0; j + 1 < ids.length; j++) {
        const r = this.rank.get(pairKey(ids[j]!, ids[j + 1]!));
        if (r !== undefined && (best < 0 || r < best)) best = r;
      }
      if (best < 0) break;
      const [a, b] = this.merges[best]!;
      const next: number[] = [];
      for (let j = 0; j < ids.length; j++) {
        if (j + 1 < ids.length && ids[j] === a && ids[j + 1] === b) { next.push(256 + best); j++; } else next.push(ids[j]!);
      }
      ids = next;
    }
    return Int32Array.from(ids);
  }

  encode(input: string | Uint8Array): Int32Array {
    const bytes = asBytes(input);
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let out = new Int32Array(Math.max(16, bytes.length >> 1));
    let n = 0;
    forEachPiece(bytes, (s, e) => {
      const k = buf.toString('latin1', s, e);
      let ids = this.cache.get(k);
      if (ids === undefined) {
        ids = this.encodePiece(bytes, s, e);
        if (this.cache.size >= 1 << 16) this.cache.clear(); // bounded memory on unusual inputs
        this.cache.set(k, ids);
      }
      if (n + ids.length > out.length) { const grown = new Int32Array(2 * out.length + ids.length); grown.set(out); out = grown; }
      out.set(ids, n);
      n += ids.length;
    });
    return out.slice(0, n);
  }

  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    checkIds(ids, this.vocabSize, 'BpeTokenizer');
    let len = 0;
    for (let i = 0; i < ids.length; i++) len += this.bytesOf[ids[i]!]!.length;
    const out = new Uint8Array(len);
    for (let i = 0, p = 0; i < ids.length; i++) { const b = this.bytesOf[ids[i]!]!; out.set(b, p); p += b.length; }
    return out;
  }

  decode(ids: ArrayLike<number>): string { return fromUtf8.decode(this.decodeBytes(ids)); }

  toJSON(): TokenizerJSON {
    return { type: 'bpe', version: 1, vocabSize: this.vocabSize, maxPiece: MAX_PIECE, merges: this.merges.map(([a, b]) => [a, b]) };
  }

  /** Write as JSON, one merge per line. */
  save(path: string): void { saveTokenizer(this, path); }

  /** Read a file written by `save`; errors name the file and what is wrong in it. */
  static load(path: string): BpeTokenizer {
    const t = loadTokenizer(path);
    if (!(t instanceof BpeTokenizer)) throw new Error(`BpeTokenizer.load: ${path} holds a ${t.toJSON().type} tokenizer, not bpe`);
    return t;
  }
}

// ---- files ---------------------------------------------------------------------------------------

export function saveTokenizer(t: Tokenizer, path: string): void {
  const j = t.toJSON();
  const text = j.type === 'bpe'
    ? `{"type":"bpe","version":1,"vocabSize":${j.vocabSize},"maxPiece":${j.maxPiece},"merges":[\n${j.merges.map((m) => JSON.stringify(m)).join(',\n')}\n]}\n`
    : `${JSON.stringify(j)}\n`;
  writeFileSync(path, text);
}

/** A tokenizer from its JSON; `source` (a file name) prefixes every error. */
export function tokenizerFromJSON(j: unknown, source = 'tokenizer JSON'): Tokenizer {
  const o = j as Record<string, unknown> | null;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error(`${source}: expected a JSON object with a "type", got ${Array.isArray(o) ? 'an array' : String(o)}`);
  if (o.type === 'byte') return new ByteTokenizer();
  if (o.type !== 'bpe') throw new Error(`${source}: "type" must be "byte" or "bpe", got ${JSON.stringify(o.type)}`);
  if (o.version !== 1) throw new Error(`${source}: unsupported bpe "version" ${JSON.stringify(o.version)} (this weft reads version 1)`);
  if (o.maxPiece !== MAX_PIECE) throw new Error(`${source}: "maxPiece" ${JSON.stringify(o.maxPiece)} differs from this weft's ${MAX_PIECE}: the file was trained with another pre-tokenizer`);
  const merges = o.merges;
  if (!Array.isArray(merges)) throw new Error(`${source}: "merges" must be an array of [a, b] pairs, got ${typeof merges}`);
  merges.forEach((m: unknown, i) => {
    if (!Array.isArray(m) || m.length !== 2) throw new Error(`${source}: merges[${i}] must be a pair [a, b], got ${JSON.stringify(m)}`);
  });
  if (o.vocabSize !== 256 + merges.length) throw new Error(`${source}: "vocabSize" is ${JSON.stringify(o.vocabSize)} but ${merges.length} merges make ${256 + merges.length}`);
  try {
    return new BpeTokenizer(merges as [number, number][]);
  } catch (e) {
    throw new Error(`${source}: ${(e as Error).message}`);
  }
}

/** Read a tokenizer file (`saveTokenizer`'s format); errors name the file. */
export function loadTokenizer(path: string): Tokenizer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`tokenizer file ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new Error(`tokenizer file ${path}: not valid JSON (${(e as Error).message})`);
  }
  return tokenizerFromJSON(j, `tokenizer file ${path}`);
}
