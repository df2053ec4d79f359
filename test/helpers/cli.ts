/** Running `weft train` from tests. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** `weft train <cfg> --set out=<out> <args>` fails, its stderr matching `pattern`, before its first step. */
export function trainFails(cfg: string, out: string, args: readonly string[], pattern: RegExp): void {
  const r = spawnSync(process.execPath, [CLI, 'train', cfg, '--set', `out=${out}`, ...args], { encoding: 'utf8' });
  assert.notEqual(r.status, 0, `${args.join(' ')} should fail`);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stdout, /step 1\//, 'nothing trained');
}
