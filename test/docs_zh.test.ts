// README.zh-CN.md is a translation of README.md: the prose is Chinese, but every code block (the
// commands a reader copies) must stay exactly the English one, in the same order, so the two
// READMEs never drift apart in what they tell a reader to run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../../', import.meta.url);
const en = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const zh = readFileSync(new URL('../../README.zh-CN.md', import.meta.url), 'utf8');

interface Block { line: number; info: string; text: string }

/** Every fenced code block (``` or ~~~, three or more), with its info string and its 1-based opening line. */
function codeBlocks(md: string): Block[] {
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
    assert.ok(j < lines.length, `unclosed code block opened at line ${i + 1}`);
    blocks.push({ line: i + 1, info: open[2]!.trim(), text: body.join('\n') });
    i = j;
  }
  return blocks;
}

/** Lines inside code blocks that invoke `weft` or `npm` (the commands a reader runs), in order. */
function commands(blocks: Block[]): string[] {
  return blocks.flatMap((b) => b.text.split('\n').map((l) => l.trim()).filter((l) => /^(weft|npm) /.test(l)));
}

function show(b: Block | undefined): string {
  return b ? `(line ${b.line}) \`\`\`${b.info}\n${b.text}\n\`\`\`` : '(none)';
}

test('README.zh-CN.md has the same code blocks as README.md, in the same order', () => {
  const a = codeBlocks(en);
  const b = codeBlocks(zh);
  assert.ok(a.length > 0, 'README.md has no code blocks');
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    if (x && y && x.info === y.info && x.text === y.text) continue;
    assert.fail(
      `code block ${i + 1} differs (README.md has ${a.length} blocks, README.zh-CN.md ${b.length}):\n` +
        `README.md ${show(x)}\nREADME.zh-CN.md ${show(y)}`,
    );
  }
});

test('README.zh-CN.md lists the same weft / npm commands as README.md', () => {
  const a = commands(codeBlocks(en));
  const b = commands(codeBlocks(zh));
  const onlyEn = [...new Set(a)].filter((c) => !b.includes(c));
  const onlyZh = [...new Set(b)].filter((c) => !a.includes(c));
  assert.deepEqual(
    { onlyEn, onlyZh },
    { onlyEn: [], onlyZh: [] },
    `commands differ:\n  only in README.md: ${JSON.stringify(onlyEn)}\n  only in README.zh-CN.md: ${JSON.stringify(onlyZh)}`,
  );
  assert.deepEqual(new Set(b), new Set(a));
});

test('README.zh-CN.md has at least as many ## sections as README.md', () => {
  // Headings inside code blocks are not sections: drop the blocks first.
  const sections = (md: string) => {
    const out: string[] = [];
    let fence: string | null = null;
    for (const l of md.split('\n')) {
      const f = /^ {0,3}(`{3,}|~{3,})/.exec(l);
      if (f) fence = fence === null ? f[1]![0]! : fence === f[1]![0] ? null : fence;
      else if (fence === null && l.startsWith('## ')) out.push(l);
    }
    return out;
  };
  const a = sections(en);
  const b = sections(zh);
  assert.ok(b.length >= a.length, `README.md has ${a.length} "## " sections, README.zh-CN.md ${b.length}:\n${b.join('\n')}`);
});

test('every relative link in README.zh-CN.md points at a file that exists', () => {
  const prose = zh.replace(/^ {0,3}(`{3,}|~{3,})[\s\S]*?^ {0,3}\1\s*$/gm, '');
  const missing: string[] = [];
  let n = 0;
  for (const m of prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = m[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
    n++;
    const file = target.split('#')[0]!;
    if (!existsSync(fileURLToPath(new URL(file, root)))) missing.push(target);
  }
  assert.ok(n > 0, 'README.zh-CN.md has no relative links');
  assert.deepEqual(missing, [], `links in README.zh-CN.md to files that do not exist: ${missing.join(', ')}`);
  assert.match(zh.split('\n').slice(0, 3).join('\n'), /\[English\]\(README\.md\)/, 'language switch at the top');
});
