/**
 * The allocator settings (runtime/malloc.ts): with them a program's large output reuses the pages
 * the previous run's output freed; with glibc's defaults (WEFT_MALLOC=0) every page of it faults in
 * afresh on every run. Counted in page faults (process.resourceUsage), each in its own process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { addonPath } from '../src/runtime/addon.js';

const probe = fileURLToPath(new URL('./helpers/fault_probe.js', import.meta.url));
const run = (env: Record<string, string>): { mode: string; reason?: string; faultsPerRun: number; pagesPerOutput: number } =>
  JSON.parse(execFileSync(process.execPath, ['--expose-gc', probe], { env: { ...process.env, ...env }, encoding: 'utf8' }).trim().split('\n').pop()!);

const built = addonPath('weft_mem.node', 'WEFT_MEM_BINDING');

test('large outputs stop faulting in fresh pages with the allocator settings', { skip: built && existsSync(built) ? false : 'native/build/weft_mem.node is not built' }, () => {
  const plain = run({ WEFT_MALLOC: '0' });
  const tuned = run({ WEFT_MALLOC: '' });
  assert.equal(plain.mode, 'default');
  assert.equal(plain.reason, 'WEFT_MALLOC=0');
  assert.equal(tuned.mode, 'tuned', JSON.stringify(tuned));
  // glibc's defaults: a 40 MB buffer is a fresh mapping, each of its pages a fault.
  assert.ok(plain.faultsPerRun >= 0.9 * plain.pagesPerOutput, `default: ${plain.faultsPerRun} faults a run for ${plain.pagesPerOutput} pages`);
  assert.ok(tuned.faultsPerRun <= 0.3 * plain.faultsPerRun, `tuned: ${tuned.faultsPerRun} faults a run against ${plain.faultsPerRun}`);
});

test('without the addon the allocator keeps glibc\'s defaults and says why', () => {
  const r = run({ WEFT_MALLOC: '', WEFT_MEM_BINDING: '/nonexistent/weft_mem.node' });
  assert.equal(r.mode, 'default');
  assert.match(r.reason!, /not built/);
});
