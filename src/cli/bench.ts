/**
 * `weft bench`: the benchmark GPT's training step (forward + backward + AdamW(lr 3e-4, wd 0.1) on
 * random tokens; median step after 3 warm-ups, as ../shared/anchors/torch_gpt.py measures), run
 * side by side with PyTorch at the same thread count when the anchor and python3-torch are there.
 * Each measurement runs in its own process so thread settings are clean.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindParameters, GPT, GPT_PRESETS, PRESET_BATCH } from '../nn/index.js';
import { AdamW } from '../optim/adamw.js';
import { setThreads } from '../runtime/executor.js';
import { FlatBuffer } from '../runtime/flat.js';
import { profiler } from '../runtime/profiler.js';
import { Rng } from '../tensor/random.js';
import { gradStep } from '../train/step.js';

export type Preset = keyof typeof GPT_PRESETS;

export interface WeftMeasurement {
  system: 'weft'; preset: Preset; threads: number; params: number; step_s: number; fwd_bwd_s: number; optimizer_s: number;
  tokens_per_s: number; model_gflops_per_s: number; loss: number; held_mb: number; segments_ms: Record<string, number>;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** One weft measurement in this process. */
export async function measureWeft(preset: Preset, threads: number, steps: number): Promise<WeftMeasurement> {
  if (!(preset in GPT_PRESETS)) throw new Error(`bench: preset must be small or medium, got '${preset}'`);
  setThreads(threads);
  const cfg = GPT_PRESETS[preset];
  const [B, T] = [PRESET_BATCH[preset], cfg.ctx];
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 0 });
  const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
  const opt = new AdamW(params.flat, { lr: 3e-4, weightDecay: 0.1 });
  const step = gradStep(params, grads, (idx, tgt) => model.loss(idx!, tgt!));
  const rng = new Rng(0);
  const [idx, tgt] = [new BigInt64Array(B * T), new BigInt64Array(B * T)];
  const total: number[] = [];
  const fb: number[] = [];
  let loss = 0;
  for (let i = 0; i < steps + 3; i++) {
    for (let r = 0; r < B; r++) {
      const row = Array.from({ length: T + 1 }, () => BigInt(rng.int(cfg.vocab)));
      for (let j = 0; j < T; j++) { idx[r * T + j] = row[j]!; tgt[r * T + j] = row[j + 1]!; }
    }
    const t0 = performance.now();
    loss = await step([{ data: idx, shape: [B, T], dtype: 'int64' }, { data: tgt, shape: [B, T], dtype: 'int64' }]);
    const t1 = performance.now();
    await opt.step(grads);
    total.push((performance.now() - t0) / 1000);
    fb.push((t1 - t0) / 1000);
  }
  const stepS = median(total.slice(3));
  const fwdBwd = median(fb.slice(3));
  const n = params.flat.layout.slots.reduce((s, x) => s + x.size, 0);
  const flopsPerToken = 6 * n + 12 * cfg.layers * cfg.ctx * cfg.d;
  const rep = profiler.report();
  return {
    system: 'weft', preset, threads, params: n, step_s: stepS, fwd_bwd_s: fwdBwd, optimizer_s: stepS - fwdBwd,
    tokens_per_s: (B * T) / stepS, model_gflops_per_s: (flopsPerToken * B * T) / stepS / 1e9, loss,
    held_mb: Math.round(rep.totalHeldBytes / 2 ** 20),
    segments_ms: Object.fromEntries(Object.entries(rep.segments).map(([k, s]) => [k, +s.meanMs.toFixed(2)])),
  };
}

const ANCHOR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../shared/anchors/torch_gpt.py');
const PY = '/usr/bin/python3';

function torchMissing(): string | null {
  if (!existsSync(ANCHOR)) return `anchor not found at ${ANCHOR}`;
  try { execFileSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }); return null; } catch { return 'python3-torch is not installed (apt-get install python3-torch libopenblas0-pthread)'; }
}

type Row = Record<string, unknown> & { tokens_per_s: number };

function runJson(cmd: string, args: string[]): Row {
  const out = execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop()!) as Row;
}

/**
 * weft and PyTorch alternating (weft, torch, weft, torch ...) `repeat` times per configuration;
 * the ratio is taken pair by pair and its median reported.
 */
export function sideBySide(o: { presets: Preset[]; threads: number[]; steps: number; repeat: number; log?: (s: string) => void }): unknown {
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  const missing = torchMissing();
  const results = [];
  for (const preset of o.presets) {
    for (const threads of o.threads) {
      const weft: Row[] = [];
      const torch: Row[] = [];
      for (let r = 0; r < o.repeat; r++) {
        weft.push(runJson(process.execPath, [cli, 'bench', '--worker', '--preset', preset, '--threads', String(threads), '--steps', String(o.steps)]));
        if (!missing) torch.push(runJson(PY, [ANCHOR, '--preset', preset, '--threads', String(threads), '--steps', String(o.steps)]));
      }
      const ratios = torch.map((t, i) => weft[i]!.tokens_per_s / t.tokens_per_s);
      const row = {
        preset, threads,
        weft_tokens_per_s: median(weft.map((w) => w.tokens_per_s)),
        torch_tokens_per_s: torch.length ? median(torch.map((t) => t.tokens_per_s)) : null,
        ratio_weft_over_torch: ratios.length ? median(ratios) : null,
        ratios, weft: weft.at(-1), torch: torch.at(-1) ?? missing,
      };
      o.log?.(JSON.stringify(row));
      results.push(row);
    }
  }
  return { bench: 'engine', steps: o.steps, repeat: o.repeat, torch: missing ?? 'pytorch (../shared/anchors/torch_gpt.py)', results };
}
