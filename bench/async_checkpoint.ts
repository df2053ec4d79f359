/**
 * Asynchronous against synchronous checkpoints on the medium GPT (d 512, 8 layers, 25.4M
 * parameters: 0.3 GB of weights and AdamW moments a checkpoint): the time each checkpoint held its
 * step, and the writer's time. `npm run bench:async-checkpoint -- [--steps 12] [--every 3]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GPT_PRESETS } from '../src/nn/gpt.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

const argv = process.argv.slice(2);
const opt = (name: string, d: number): number => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : d; };
const steps = opt('--steps', 12);
const every = opt('--every', 3);
const m = GPT_PRESETS.medium;
const rows: Record<string, unknown>[] = [];
for (const async of [false, true, false, true]) {
  const out = mkdtempSync(join(tmpdir(), 'weft-bench-ck-'));
  try {
    const cfg = parseConfig({
      out, model: { ctx: m.ctx, d: m.d, layers: m.layers, heads: m.heads },
      train: { steps, batch: 8, warmup: 2 }, eval: { every: 1_000_000, windows: 2 },
      checkpoint: { every, keep: 2, async }, sample: { tokens: 0 },
    }, 'bench config');
    const t0 = performance.now();
    const r = await new Trainer(cfg).run({ out: null });
    const wall = (performance.now() - t0) / 1000;
    const held = r.checkpoints.map((c) => c.blockedMs);
    const mean = held.reduce((a, b) => a + b, 0) / held.length;
    rows.push({ async, checkpoints: held.length, blocked_ms: held.map((x) => Math.round(x)), mean_blocked_ms: Math.round(mean), last_write_ms: r.checkpoints.at(-1)!.writeMs === null ? null : Math.round(r.checkpoints.at(-1)!.writeMs!), wall_s: +wall.toFixed(1), step_ms: Math.round((1000 * wall) / steps) });
  } finally { rmSync(out, { recursive: true, force: true }); }
}
const mean = (a: boolean): number => { const xs = rows.filter((x) => x['async'] === a).map((x) => x['mean_blocked_ms'] as number); return xs.reduce((p, q) => p + q, 0) / xs.length; };
const c = cpuInfo();
process.stdout.write(`${JSON.stringify({ bench: 'async-checkpoint', cpu: { model: c.model, isa: c.isa }, model: 'medium', steps, every, rows, blocked_fraction: +(mean(true) / mean(false)).toFixed(3) })}\n`);
