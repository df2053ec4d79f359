/**
 * Headless Chromium, for drawing the board's charts to a PNG (`weft board --png`, the README's
 * plot) and for the board's browser test. Found as `WEFT_CHROMIUM`, else the first of the usual
 * names on PATH (Debian's `chromium` package installs /usr/bin/chromium).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

const NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];

/** The Chromium executable, or null when there is none. */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env['WEFT_CHROMIUM']) return env['WEFT_CHROMIUM'];
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    for (const n of NAMES) {
      const p = join(dir, n);
      try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
    }
  }
  return null;
}

export interface ScreenshotOptions { width: number; height: number; timeoutMs?: number }

/**
 * Loads `url` in headless Chromium and writes a `width` x `height` screenshot to `out`.
 * `--virtual-time-budget` lets the page fetch and draw before the shot is taken.
 */
export async function screenshot(url: string, out: string, o: ScreenshotOptions): Promise<void> {
  const exe = findChromium();
  if (exe === null) throw new Error('no Chromium found: install it (Debian: apt-get install chromium) or set WEFT_CHROMIUM to its path');
  const profile = mkdtempSync(join(tmpdir(), 'weft-chromium-'));
  try {
    const args = [
      '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run', '--mute-audio',
      `--user-data-dir=${profile}`, `--window-size=${o.width},${o.height}`, '--virtual-time-budget=5000',
      `--screenshot=${out}`, url,
    ];
    const child = spawn(exe, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
    const code = await new Promise<number | null>((ok, fail) => {
      const t = setTimeout(() => { child.kill('SIGKILL'); fail(new Error(`${exe} took over ${(o.timeoutMs ?? 60_000) / 1000} s to draw ${url}`)); }, o.timeoutMs ?? 60_000);
      child.once('error', (e) => { clearTimeout(t); fail(e); });
      child.once('exit', (c) => { clearTimeout(t); ok(c); });
    });
    let size = 0;
    try { size = statSync(out).size; } catch { /* reported below */ }
    if (code !== 0 || size === 0) throw new Error(`${exe} exited with ${code} without writing ${out}:\n${stderr}`);
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}
