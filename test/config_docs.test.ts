import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { configDoc } from '../src/train/config.js';

test('docs/config.md lists every config field as the schema declares it', () => {
  const doc = readFileSync(new URL('../../docs/config.md', import.meta.url), 'utf8');
  assert.equal(doc, configDoc(), 'regenerate with: npm run build && node dist/scripts/config_docs.js');
});
