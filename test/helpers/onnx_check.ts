/**
 * onnx's own checker (Debian's /usr/bin/python3 with onnx 1.12) for tests that write ONNX files;
 * tests that need it are skipped, not failed, where the interpreter or its module is missing, and
 * fail under CI=true (.ci/run installs python3-onnx).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PY = '/usr/bin/python3';

export const hasOnnx = ((): boolean => {
  try { execFileSync(PY, ['-c', 'import onnx'], { stdio: 'pipe' }); return true; } catch { return false; }
})();

/** `test(name, needsPython, fn)`: skipped without Python's onnx, except under CI, where it must run. */
export const needsPython = hasOnnx || process.env['CI'] === 'true' ? {} : { skip: `${PY} with the onnx module is not available` };

/** Runs a Python snippet (argv[1..] = args) and returns its stdout. */
export function python(code: string, args: string[] = []): string {
  return execFileSync(PY, ['-c', code, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** onnx.checker.check_model(full_check=True) on `bytes`; fails the test with the checker's own words. */
export function checkModel(bytes: Uint8Array, stem: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'weft-check-'));
  const path = join(dir, `${stem}.onnx`);
  try {
    writeFileSync(path, bytes);
    execFileSync(PY, ['-c', 'import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)', path], { stdio: 'pipe' });
  } catch (e) {
    const err = e as { status: number | null; stderr?: Buffer };
    assert.fail(`onnx checker rejected ${stem} (exit ${err.status}):\n${err.stderr?.toString() ?? ''}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
