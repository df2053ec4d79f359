/**
 * One weft measurement of the benchmark GPT, in its own process so thread settings are clean:
 * forward + backward + AdamW(lr 3e-4, wd 0.1) on random tokens; median step after 3 warm-ups,
 * the methodology of ../shared/anchors/torch_gpt.py.
 *   node dist/bench/gpt_step.js --preset small --threads 1 --steps 10
 * Prints one JSON line.
 */
import '../src/ir/ops/index.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { setThreads } from '../src/runtime/executor.js';
import { profiler } from '../src/runtime/profiler.js';
import { Rng } from '../src/tensor/random.js';
import { tensor } from '../src/tensor/tensor.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AdamW } from '../src/optim/adamw.js';
import { bindParameters, GPT, GPT_PRESETS, PRESET_BATCH } from '../src/nn/index.js';
import { gradStep } from '../src/train/step.js';

/** Random tokens: [B, T] inputs and their next-token targets, from one [B, T+1] draw. */
function randomTokens(rng: Rng, B: number, T: number, vocab: number): { idx: Tensor; tgt: Tensor } {
  const idx = new BigInt64Array(B * T);
  const tgt = new BigInt64Array(B * T);
  for (let r = 0; r < B; r++) {
    const row = Array.from({ length: T + 1 }, () => BigInt(rng.int(vocab)));
    for (let j = 0; j < T; j++) { idx[r * T + j] = row[j]!; tgt[r * T + j] = row[j + 1]!; }
  }
  return { idx: tensor(idx, [B, T], 'int64'), tgt: tensor(tgt, [B, T], 'int64') };
}

const arg = (k: string, d: string): string => { const i = process.argv.indexOf(k); return i < 0 ? d : process.argv[i + 1]!; };
const preset = arg('--preset', 'small') as keyof typeof GPT_PRESETS;
const threads = Number(arg('--threads', '1'));
const steps = Number(arg('--steps', '10'));
if (!(preset in GPT_PRESETS)) throw new Error(`--preset: expected small or medium, got '${preset}'`);
const cfg = { ...GPT_PRESETS[preset], batch: PRESET_BATCH[preset] };
setThreads(threads);

const model = new GPT(cfg);
const params = bindParameters(model, { seed: 0 });
const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
const opt = new AdamW(params.flat, { lr: 3e-4, weightDecay: 0.1 });
const step = gradStep(params, grads, (idx, tgt) => model.loss(idx!, tgt!));
const rng = new Rng(0);
const times: number[] = [];
const fwdBwd: number[] = [];
let loss = 0;
for (let i = 0; i < steps + 3; i++) {
  const { idx, tgt } = randomTokens(rng, cfg.batch, cfg.ctx, cfg.vocab);
  const t0 = performance.now();
  loss = await step([
    { data: idx.value.data!, shape: [cfg.batch, cfg.ctx], dtype: 'int64' },
    { data: tgt.value.data!, shape: [cfg.batch, cfg.ctx], dtype: 'int64' },
  ]);
  const t1 = performance.now();
  await opt.step(grads);
  const t2 = performance.now();
  times.push((t2 - t0) / 1000);
  fwdBwd.push((t1 - t0) / 1000);
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const stepS = median(times.slice(3));
const nParams = params.flat.layout.slots.reduce((s, x) => s + x.size, 0);
const tokens = cfg.batch * cfg.ctx;
const flopsPerToken = 6 * nParams + 12 * cfg.layers * cfg.ctx * cfg.d;
const report = profiler.report();
console.log(JSON.stringify({
  system: 'weft', preset, threads, params: nParams, step_s: stepS, fwd_bwd_s: median(fwdBwd.slice(3)),
  optimizer_s: stepS - median(fwdBwd.slice(3)), tokens_per_s: tokens / stepS,
  model_gflops_per_s: (flopsPerToken * tokens) / stepS / 1e9, loss,
  held_mb: Math.round(report.totalHeldBytes / 2 ** 20),
}));
