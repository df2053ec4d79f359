/** Every recipe in recipes/ is a valid run config (unknown keys and wrong types would name the file and key). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/train/config.js';

const dir = fileURLToPath(new URL('../../recipes/', import.meta.url));

test('every recipe parses as a run config', () => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 4, `recipes: ${files.join(', ')}`);
  for (const f of files) {
    const cfg = loadConfig(`${dir}${f}`);
    assert.ok(cfg.train.steps > 0, f);
  }
  assert.equal(loadConfig(`${dir}brown-adafactor.json`).train.optimizer, 'adafactor');
  assert.equal(loadConfig(`${dir}mnist-cnn.json`).model.kind, 'cnn');
});
