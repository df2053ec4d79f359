// The Chinese docs are translations of the English ones: README.zh-CN.md of README.md, and
// docs/zh-CN/X.md of docs/X.md for every user guide. The prose is Chinese, but every code block (the
// commands a reader copies) must stay exactly the English one, in the same order, so a translation
// never drifts from what its English page tells a reader to run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../../', import.meta.url);
const read = (rel: string): string => readFileSync(new URL(rel, root), 'utf8');

/** docs/*.md kept in English only: the architecture is for weft's own engineers, config.md is generated from the schema. */
const ENGLISH_ONLY = new Set(['architecture.md', 'config.md']);
const guides = readdirSync(new URL('docs/', root)).filter((f) => f.endsWith('.md') && !ENGLISH_ONLY.has(f)).sort();

/** Every translated page: [English, Chinese], repository-relative. */
const PAIRS: [string, string][] = [['README.md', 'README.zh-CN.md'], ...guides.map((f): [string, string] => [`docs/${f}`, `docs/zh-CN/${f}`])];

interface Block { line: number; info: string; text: string }

/** Every fenced code block (``` or ~~~, three or more), with its info string and its 1-based opening line. */
function codeBlocks(md: string, file: string): Block[] {
  const lines = md.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[1]!;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]!);
      if (close && close[1]![0] === fence[0] && close[1]!.length >= fence.length) break;
      body.push(lines[j]!);
    }
    assert.ok(j < lines.length, `${file}: unclosed code block opened at line ${i + 1}`);
    blocks.push({ line: i + 1, info: open[2]!.trim(), text: body.join('\n') });
    i = j;
  }
  return blocks;
}

/** Lines inside code blocks that invoke `weft`, `npm`, `node` or `mpirun` (the commands a reader runs), in order. */
function commands(blocks: Block[]): string[] {
  return blocks.flatMap((b) => b.text.split('\n').map((l) => l.trim()).filter((l) => /^(weft|npm|node|mpirun) /.test(l)));
}

/** The markdown outside code blocks. */
const prose = (md: string): string => md.replace(/^ {0,3}(`{3,}|~{3,})[\s\S]*?^ {0,3}\1\s*$/gm, '');

/** `## ` and deeper headings outside code blocks. */
function sections(md: string): string[] {
  return prose(md).split('\n').filter((l) => /^#{2,} /.test(l));
}

const show = (b: Block | undefined): string => (b ? `(line ${b.line}) \`\`\`${b.info}\n${b.text}\n\`\`\`` : '(none)');

test('every user guide in docs/ has a Chinese translation in docs/zh-CN/', () => {
  assert.ok(guides.length >= 10, `expected the user guides in docs/, found ${guides.join(', ')}`);
  const missing = PAIRS.filter(([, zh]) => !existsSync(new URL(zh, root))).map(([, zh]) => zh);
  assert.deepEqual(missing, [], `translations missing: ${missing.join(', ')}`);
  const stray = existsSync(new URL('docs/zh-CN/', root)) ? readdirSync(new URL('docs/zh-CN/', root)).filter((f) => f.endsWith('.md') && !guides.includes(f)) : [];
  assert.deepEqual(stray, [], `docs/zh-CN/ pages with no English page: ${stray.join(', ')}`);
});

for (const [en, zh] of PAIRS) {
  test(`${zh} has the same code blocks as ${en}, in the same order`, () => {
    if (!existsSync(new URL(zh, root))) return; // reported once, by the test above
    const a = codeBlocks(read(en), en);
    const b = codeBlocks(read(zh), zh);
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const x = a[i];
      const y = b[i];
      if (x && y && x.info === y.info && x.text === y.text) continue;
      assert.fail(`code block ${i + 1} differs (${en} has ${a.length} blocks, ${zh} ${b.length}):\n${en} ${show(x)}\n${zh} ${show(y)}`);
    }
  });

  test(`${zh} lists the same commands as ${en}`, () => {
    if (!existsSync(new URL(zh, root))) return;
    const a = commands(codeBlocks(read(en), en));
    const b = commands(codeBlocks(read(zh), zh));
    const onlyEn = [...new Set(a)].filter((c) => !b.includes(c));
    const onlyZh = [...new Set(b)].filter((c) => !a.includes(c));
    assert.deepEqual({ onlyEn, onlyZh }, { onlyEn: [], onlyZh: [] }, `commands differ:\n  only in ${en}: ${JSON.stringify(onlyEn)}\n  only in ${zh}: ${JSON.stringify(onlyZh)}`);
  });

  test(`${zh} has at least as many headings as ${en}, and is mostly Chinese`, () => {
    if (!existsSync(new URL(zh, root))) return;
    const a = sections(read(en));
    const b = sections(read(zh));
    assert.ok(b.length >= a.length, `${en} has ${a.length} headings, ${zh} ${b.length}:\n${b.join('\n')}`);
    // A translation, not a copy: most of the prose's letters are CJK.
    const text = prose(read(zh)).replace(/`[^`]*`/g, '').replace(/\]\([^)]*\)/g, ']');
    const cjk = (text.match(/[\u4e00-\u9fff]/g) ?? []).length;
    const latin = (text.match(/[A-Za-z]/g) ?? []).length;
    assert.ok(cjk > 0.5 * latin, `${zh}: ${cjk} CJK characters against ${latin} Latin letters outside code: not translated?`);
  });

  test(`every relative link in ${zh} points at a file that exists, and both pages link to each other`, () => {
    if (!existsSync(new URL(zh, root))) return;
    const base = new URL(zh, root);
    const missing: string[] = [];
    for (const m of prose(read(zh)).matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
      const file = target.split('#')[0]!;
      if (!existsSync(fileURLToPath(new URL(file, base)))) missing.push(target);
    }
    assert.deepEqual(missing, [], `links in ${zh} to files that do not exist: ${missing.join(', ')}`);
    const top = (md: string): string => md.split('\n').slice(0, 3).join('\n');
    const back = en.startsWith('docs/') ? `../${en.slice('docs/'.length)}` : en;
    const forth = en.startsWith('docs/') ? `zh-CN/${en.slice('docs/'.length)}` : zh;
    assert.ok(top(read(zh)).includes(`[English](${back})`), `${zh}: language switch "[English](${back})" in its first three lines`);
    assert.ok(top(read(en)).includes(`[简体中文](${forth})`), `${en}: language switch "[简体中文](${forth})" in its first three lines`);
  });
}
