/**
 * Loss parity with PyTorch on the Brown corpus, side by side: PyTorch
 * (../shared/anchors/torch_brown.py, one thread) and weft (recipes/brown-parity.json, one thread)
 * train concurrently on the same bytes with the same settings (small preset, lr 1e-3, 100
 * warm-up steps, AdamW betas 0.9/0.95, wd 0.1, clip 1.0, batch 16); then their validation losses
 * at steps 100..600 are compared and drawn into docs/brown_loss.png by `weft board --png`.
 *   node dist/scripts/brown_parity.js [--seconds 900]
 * Prints JSON: both curves, the per-step differences and the largest one.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeBrownText } from '../src/data/brown.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const arg = (k: string, d: string): string => { const i = process.argv.indexOf(k); return i < 0 ? d : process.argv[i + 1]!; };
const seconds = arg('--seconds', '900');
const run = join(root, 'runs/brown-parity');
mkdirSync(run, { recursive: true });
const text = join(run, 'brown.txt');
writeBrownText(text);
const torchLog = join(run, 'torch.jsonl');

const anchor = resolve(root, '../shared/anchors/torch_brown.py');
const torch = spawn('/usr/bin/python3', [anchor, text, '--preset', 'small', '--seconds', seconds], {
  env: { ...process.env, OPENBLAS_NUM_THREADS: '1' }, stdio: ['ignore', 'pipe', 'inherit'],
});
torch.stdout.pipe(createWriteStream(torchLog));
const torchDone = new Promise<number>((ok) => torch.on('exit', (c) => ok(c ?? 1)));
// Stop PyTorch once it has logged step 600: its loop runs by time, not by steps.
const poll = setInterval(() => {
  try { if (readFileSync(torchLog, 'utf8').includes('"step": 600,')) torch.kill('SIGTERM'); } catch { /* not yet */ }
}, 2000);

// Both run at once, one thread each; spawn (not execFileSync) keeps this process's event loop free
// to drain PyTorch's output and stop it at step 600.
const cli = join(root, 'dist/src/cli/main.js');
const weftRun = spawn(process.execPath, [cli, 'train', join(root, 'recipes/brown-parity.json')], { stdio: 'inherit', cwd: root });
const weftCode = await new Promise<number>((ok) => weftRun.on('exit', (c) => ok(c ?? 1)));
if (weftCode !== 0) { torch.kill('SIGTERM'); throw new Error(`weft train exited with ${weftCode}`); }
await torchDone;
clearInterval(poll);

const rows = (p: string): Record<string, number>[] => readFileSync(p, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, number>);
const weft = new Map(rows(join(run, 'metrics.jsonl')).filter((r) => r['val_loss'] !== undefined).map((r) => [r['step']!, r['val_loss']!]));
const ref = new Map(rows(torchLog).filter((r) => r['val'] !== undefined).map((r) => [r['step']!, r['val']!]));
const steps = [100, 200, 300, 400, 500, 600];
const table = steps.map((s) => ({ step: s, weft: weft.get(s) ?? null, pytorch: ref.get(s) ?? null, diff: weft.has(s) && ref.has(s) ? +(weft.get(s)! - ref.get(s)!).toFixed(4) : null }));
const diffs = table.flatMap((r) => (r.diff === null ? [] : [Math.abs(r.diff)]));
const report = { bench: 'brown-parity', table, max_abs_diff: diffs.length === steps.length ? Math.max(...diffs) : null, within_0_08: diffs.length === steps.length && Math.max(...diffs) <= 0.08 };
writeFileSync(join(run, 'parity.json'), `${JSON.stringify(report, null, 1)}\n`);
console.log(JSON.stringify(report, null, 1));
// PyTorch's log in weft's metric names, so the board draws both curves on one chart.
const torchMetrics = join(run, 'pytorch-metrics.jsonl');
writeFileSync(torchMetrics, rows(torchLog).filter((r) => r['val'] !== undefined).map((r) => `${JSON.stringify({ step: r['step'], loss: r['train'], val_loss: r['val'] })}\n`).join(''));
// The README's chart, as `weft board` draws it (headless Chromium; src/board/).
execFileSync(process.execPath, [cli, 'board', `weft=${run}`, `PyTorch=${torchMetrics}`, '--png', join(root, 'docs/brown_loss.png'),
  '--panels', 'val_loss', '--size', '800x420', '--title', 'Brown corpus, small GPT: validation loss, weft vs PyTorch'], { stdio: 'inherit' });
