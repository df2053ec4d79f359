/**
 * `weft board`: metrics files read incrementally (partial lines wait, malformed lines are kept as
 * skipped, a shrunk file is read again), runs found under a parent directory, the event stream,
 * clear errors; then the page itself in headless Chromium while trainings write to the runs it
 * shows: its charts hold exactly the files' points and grow when new steps land, without a reload.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { discoverRuns, MetricsTail, parseMetricsLine } from '../src/board/runs.js';
import { startBoard } from '../src/board/server.js';
import type { BoardUpdate, RunState } from '../src/board/server.js';
import { findChromium } from '../src/board/chromium.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const cli = join(root, 'dist/src/cli/main.js');
const tmp = mkdtempSync(join(tmpdir(), 'weft-board-'));
const children: ChildProcess[] = [];
after(() => { for (const c of children) c.kill('SIGKILL'); rmSync(tmp, { recursive: true, force: true }); });

const line = (o: unknown): string => `${JSON.stringify(o)}\n`;

test('a metrics line is a row of its finite numbers, or skipped with the reason', () => {
  assert.deepEqual(parseMetricsLine('{"step":3,"loss":2.5,"name":"x","nested":{"a":1},"nan":null}', 1), { step: 3, loss: 2.5 });
  assert.equal(parseMetricsLine('   ', 2), null);
  assert.deepEqual(parseMetricsLine('[1,2]', 3), { line: 3, text: '[1,2]', reason: 'not a JSON object' });
  assert.deepEqual(parseMetricsLine('{"loss":1}', 4), { line: 4, text: '{"loss":1}', reason: 'no numeric "step"' });
  const bad = parseMetricsLine('{"step": 5, "loss": NaN}', 5) as { line: number; reason: string };
  assert.equal(bad.line, 5);
  assert.match(bad.reason, /^not JSON/);
});

test('a tail reads only new lines, waits for a line to end, and reads a shrunk or replaced file again', () => {
  const dir = join(tmp, 'tail');
  mkdirSync(dir);
  const f = join(dir, 'metrics.jsonl');
  const t = new MetricsTail(f);
  assert.deepEqual(t.read(), { reset: false, rows: [], skipped: [], exists: false });
  writeFileSync(f, line({ step: 1, loss: 4 }) + line({ step: 2, loss: 3.5 }) + '{"step":3,"lo');
  let r = t.read();
  assert.deepEqual(r.rows, [{ step: 1, loss: 4 }, { step: 2, loss: 3.5 }]);
  assert.equal(r.reset, false);
  appendFileSync(f, 'ss":3}\nnot json\n' + line({ step: 4, loss: 2 }));
  r = t.read();
  assert.deepEqual(r.rows, [{ step: 3, loss: 3 }, { step: 4, loss: 2 }], 'the partial line completed, then the next');
  assert.deepEqual(r.skipped.map((s) => [s.line, s.text]), [[4, 'not json']]);
  assert.deepEqual(t.read().rows, [], 'nothing new');
  // A resumed run trims its file back to the checkpoint (train/metrics.ts trimMetrics): shorter, so read again.
  writeFileSync(f, line({ step: 1, loss: 4 }));
  r = t.read();
  assert.equal(r.reset, true);
  assert.deepEqual(r.rows, [{ step: 1, loss: 4 }]);
  // Replaced by a rename (a new inode), even if longer.
  writeFileSync(join(dir, 'new'), line({ step: 1, loss: 9 }) + line({ step: 2, loss: 8 }));
  renameSync(join(dir, 'new'), f);
  r = t.read();
  assert.equal(r.reset, true);
  assert.deepEqual(r.rows.map((x) => x['loss']), [9, 8]);
});

test('runs are found as files, run directories, and run directories under a parent', () => {
  const parent = join(tmp, 'parent');
  mkdirSync(join(parent, 'b'), { recursive: true });
  mkdirSync(join(parent, 'a'));
  mkdirSync(join(parent, 'not-a-run'));
  writeFileSync(join(parent, 'a', 'metrics.jsonl'), '');
  writeFileSync(join(parent, 'b', 'metrics.jsonl'), '');
  writeFileSync(join(tmp, 'torch.jsonl'), '');
  mkdirSync(join(tmp, 'starting'));
  const runs = discoverRuns(['parent', 'PyTorch=torch.jsonl', 'starting'], tmp);
  assert.deepEqual(runs.map((r) => r.name), ['parent/a', 'parent/b', 'PyTorch', 'starting']);
  assert.deepEqual(runs.map((r) => r.file), [join(parent, 'a', 'metrics.jsonl'), join(parent, 'b', 'metrics.jsonl'), join(tmp, 'torch.jsonl'), join(tmp, 'starting', 'metrics.jsonl')]);
});

/** Reads server-sent events from `url` until `until` says stop; returns them. */
async function events(url: string, until: (evs: { event: string; data: unknown }[]) => boolean, act: () => void): Promise<{ event: string; data: unknown }[]> {
  const ac = new AbortController();
  const res = await fetch(url, { signal: ac.signal });
  assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const evs: { event: string; data: unknown }[] = [];
  const reader = res.body!.getReader();
  let text = '';
  let acted = false;
  const deadline = setTimeout(() => ac.abort(), 10_000);
  try {
    while (!until(evs)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString('utf8');
      let i: number;
      while ((i = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, i);
        text = text.slice(i + 2);
        const ev = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (ev !== undefined && data !== undefined) evs.push({ event: ev, data: JSON.parse(data) });
      }
      if (!acted && evs.length > 0) { acted = true; act(); }
    }
  } finally {
    clearTimeout(deadline);
    ac.abort();
  }
  return evs;
}

test('the server sends a snapshot, then each poll\'s new rows and skipped lines', async () => {
  const dir = join(tmp, 'sse');
  mkdirSync(dir);
  const f = join(dir, 'metrics.jsonl');
  writeFileSync(f, line({ step: 1, loss: 3 }));
  const board = await startBoard({ runs: [dir], port: 0, pollMs: 50 });
  try {
    const snap = await (await fetch(`${board.url}api/runs`)).json() as { runs: RunState[] };
    assert.deepEqual(snap.runs.map((r) => [r.name, r.exists, r.rows]), [[dir, true, [{ step: 1, loss: 3 }]]]);
    const evs = await events(`${board.url}api/events`, (e) => e.some((x) => x.event === 'update'), () => appendFileSync(f, line({ step: 2, loss: 2.5 }) + 'oops\n'));
    assert.equal(evs[0]!.event, 'snapshot');
    const u = evs.find((x) => x.event === 'update')!.data as BoardUpdate;
    assert.deepEqual(u.runs.map((r) => [r.reset, r.rows, r.skipped.map((s) => s.line)]), [[false, [{ step: 2, loss: 2.5 }], [3]]]);
    const page = await fetch(board.url);
    assert.match(await page.text(), /<script src="uplot.js">/);
    const uplot = await fetch(`${board.url}uplot.js`);
    assert.equal(uplot.status, 200);
    assert.ok((await uplot.text()).includes('uPlot'), 'uPlot is served from node_modules');
    assert.equal((await fetch(`${board.url}../../etc/passwd`)).status, 404);
  } finally {
    await board.close();
  }
});

test('weft board names a run directory that does not exist, and a bad flag', () => {
  const r = spawnSync(process.execPath, [cli, 'board', join(tmp, 'no-such-run')], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /run directory '.*no-such-run' does not exist/);
  const p = spawnSync(process.execPath, [cli, 'board', tmp, '--port', 'x'], { encoding: 'utf8' });
  assert.equal(p.status, 1);
  assert.match(p.stderr, /--port must be a number, got 'x'/);
});

// ---- the page, in headless Chromium -------------------------------------------------------------

const chromiumPath = findChromium();
const browserSkip = chromiumPath === null && process.env['CI'] !== 'true' ? 'no Chromium here (Debian: apt-get install chromium; .ci/run installs it)' : false;

/** A tiny GPT run's config: fast steps, an evaluation every 10. */
function tinyConfig(out: string, steps: number): string {
  const file = join(tmp, `${out.split('/').at(-1)}-${steps}.json`);
  writeFileSync(file, JSON.stringify({
    out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
    train: { steps, batch: 4, lr: 3e-3, warmup: 2, threads: 1 },
    eval: { every: 10, windows: 4 }, checkpoint: { every: 10, keep: 2 }, sample: { tokens: 0 }, log: { every: 10 },
  }));
  return file;
}

function train(config: string, ...extra: string[]): Promise<void> {
  const c = spawn(process.execPath, [cli, 'train', config, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(c);
  let err = '';
  c.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((ok, fail) => c.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`weft train ${config} exited ${code}: ${err}`)))));
}

const rows = (f: string): Record<string, number>[] => readFileSync(f, 'utf8').trim().split('\n').flatMap((l) => { try { return [JSON.parse(l) as Record<string, number>]; } catch { return []; } });

test('the page plots the runs\' points in Chromium and updates as new steps land', { skip: browserSkip, timeout: 180_000 }, async () => {
  assert.ok(chromiumPath !== null, 'CI runs the browser test: .ci/run installs Debian\'s chromium');
  const { chromium } = await import('playwright-core');
  const runs = join(tmp, 'runs');
  mkdirSync(runs);
  const a = join(runs, 'a');
  // A run written by hand, with one line that is not JSON: shown as skipped, its other points still drawn.
  const hand = join(runs, 'hand');
  mkdirSync(hand);
  writeFileSync(join(hand, 'metrics.jsonl'), line({ step: 1, loss: 5.5, lr: 1e-3 }) + '{"step": 2, "loss": oops}\n' + line({ step: 3, loss: 5.25, lr: 1e-3 }));
  const trainingA = train(tinyConfig(a, 30));

  const board = spawn(process.execPath, [cli, 'board', runs, '--port', '0', '--poll-ms', '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(board);
  const url = await new Promise<string>((ok, fail) => {
    let out = '';
    board.stdout!.on('data', (d: Buffer) => { out += d.toString(); const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out); if (m) ok(m[1]!); });
    board.on('exit', (c) => fail(new Error(`weft board exited ${c}`)));
  });
  const browser = await chromium.launch({ executablePath: chromiumPath!, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    type Panel = { id: string; series: { run: string; key: string; color: string; points: [number, number][] }[] };
    // Strings, not functions: they run in the page, whose DOM types this Node project does not load.
    const panels = (): Promise<Panel[]> => page.evaluate<Panel[]>('weftBoard.panels()');
    const series = async (run: string, key: string): Promise<[number, number][]> => {
      const p = (await panels()).flatMap((x) => x.series).find((s) => s.run === run && s.key === key);
      return p?.points ?? [];
    };
    const expected = (f: string, key: string): [number, number][] => rows(f).filter((r) => r[key] !== undefined).map((r) => [r['step']!, r[key]!]);
    const until = async (what: string, ok: () => Promise<boolean>): Promise<void> => {
      const t0 = Date.now();
      while (!(await ok())) {
        if (Date.now() - t0 > 60_000) throw new Error(`the page never showed ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await trainingA;
    const fa = join(a, 'metrics.jsonl');
    await until('run a\'s 30 steps', async () => (await series(`${runs}/a`, 'loss')).length === 30);
    assert.deepEqual(await series(`${runs}/a`, 'loss'), expected(fa, 'loss'), 'the loss chart holds the file\'s points exactly');
    assert.deepEqual(await series(`${runs}/a`, 'val_loss'), expected(fa, 'val_loss'));
    assert.equal((await series(`${runs}/a`, 'val_loss')).length, 3);
    const ids = (await panels()).map((p) => p.id);
    for (const id of ['loss', 'lr', 'grad_norm', 'throughput', 'memory', 'memory_held']) assert.ok(ids.includes(id), `a '${id}' chart (got ${ids.join(', ')})`);
    assert.deepEqual(await series(`${runs}/hand`, 'loss'), [[1, 5.5], [3, 5.25]]);
    const notice = await page.locator('.skipped').first().textContent();
    assert.match(notice ?? '', /hand: line 2 skipped \(not JSON/);
    // The charts are drawn, not only held: the loss canvas has pixels of run a's colour, antialiased
    // towards the white background (a blend: the same fraction of the colour in every channel).
    const color = (await panels()).find((p) => p.id === 'loss')!.series.find((s) => s.run === `${runs}/a`)!.color;
    const drawn = await page.evaluate<number>(`(() => {
      const c = document.querySelector('[data-panel="loss"] canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const rgb = [1, 3, 5].map((i) => 255 - parseInt('${color}'.slice(i, i + 2), 16));
      const top = rgb.indexOf(Math.max(...rgb));
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        const a = (255 - d[i + top]) / rgb[top];
        if (a > 0.4 && [0, 1, 2].every((k) => Math.abs(255 - d[i + k] - a * rgb[k]) < 20)) n++;
      }
      return n;
    })()`);
    assert.ok(drawn > 200, `run a's loss line is drawn (${drawn} pixels of its colour)`);

    // New steps land while the page is open: run a resumes to 50, and a new run b starts under runs/.
    await page.evaluate('window.stayed = 1');
    const before = await page.evaluate<number>('weftBoard.updates');
    const b = join(runs, 'b');
    await Promise.all([train(tinyConfig(a, 50), '--resume'), train(tinyConfig(b, 20))]);
    await until('run a at step 50 and run b at step 20', async () => (await series(`${runs}/a`, 'loss')).length === 50 && (await series(`${runs}/b`, 'loss')).length === 20);
    assert.deepEqual(await series(`${runs}/a`, 'loss'), expected(fa, 'loss'));
    assert.deepEqual(await series(`${runs}/b`, 'loss'), expected(join(b, 'metrics.jsonl'), 'loss'));
    const after = await page.evaluate<number>('weftBoard.updates');
    assert.ok(after > before + 1, `the page took several updates (${before} -> ${after})`);
    assert.equal(await page.evaluate<number>('window.stayed'), 1, 'updated in place, not reloaded');
    const loss = (await panels()).find((p) => p.id === 'loss')!;
    assert.deepEqual(loss.series.map((s) => `${s.run.slice(runs.length + 1)} ${s.key}`).sort(), ['a loss', 'a val_loss', 'b loss', 'b val_loss', 'hand loss'], 'the runs overlaid on one chart');
    assert.deepEqual(errors, [], 'no errors on the page');
    const artifacts = process.env['WEFT_TEST_ARTIFACTS'] ?? join(root, 'test-artifacts');
    mkdirSync(artifacts, { recursive: true });
    const shot = join(artifacts, 'board.png');
    await page.screenshot({ path: shot, fullPage: true });
    const png = readFileSync(shot);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
    assert.equal(png.readUInt32BE(16), 1280, 'screenshot width (IHDR)');
  } finally {
    await browser.close();
    board.kill('SIGTERM');
  }
});

test('weft board --png draws a chart with headless Chromium', { skip: browserSkip, timeout: 60_000 }, () => {
  const dir = join(tmp, 'png');
  mkdirSync(dir);
  writeFileSync(join(dir, 'metrics.jsonl'), [1, 2, 3, 4].map((s) => line({ step: s * 100, val_loss: 3 - s / 4 })).join(''));
  const out = join(tmp, 'out', 'curve.png');
  const r = spawnSync(process.execPath, [cli, 'board', dir, '--png', out, '--panels', 'loss', '--size', '640x300', '--title', 'val'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { width: number; height: number };
  const png = readFileSync(out);
  assert.equal(png.toString('latin1', 1, 4), 'PNG');
  assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [report.width, report.height]);
  assert.equal(report.width, 640);
});
