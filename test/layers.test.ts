import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Low to high; a module may import only its own layer or lower ones (docs/architecture.md).
const ORDER = ['ir', 'autodiff', 'runtime', 'tensor', 'nn', 'optim', 'data', 'comm', 'parallel', 'train', 'deploy', 'board', 'cli'];
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const layerOf = (file: string): string => relative(root, file).split('/')[0]!.replace(/\.ts$/, '');

test('imports run from higher layers to lower ones only', () => {
  const violations: string[] = [];
  for (const f of files(root)) {
    const from = layerOf(f);
    if (!ORDER.includes(from)) continue; // src/index.ts re-exports everything
    for (const m of readFileSync(f, 'utf8').matchAll(/from '(\.[^']+)'/g)) {
      const to = layerOf(resolve(dirname(f), m[1]!.replace(/\.js$/, '.ts')));
      if (ORDER.includes(to) && ORDER.indexOf(to) > ORDER.indexOf(from)) violations.push(`${relative(root, f)} imports ${to} (${m[1]})`);
    }
  }
  assert.deepEqual(violations, []);
});

test('only runtime/ort.ts imports onnxruntime-node', () => {
  const users = files(root).filter((f) => /from 'onnxruntime-node'/.test(readFileSync(f, 'utf8'))).map((f) => relative(root, f));
  assert.deepEqual(users, ['runtime/ort.ts']);
});
