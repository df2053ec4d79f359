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
import { AdamW } from '../src/optim/adamw.js';
import { gptLayout, gptLoss, initGPT, PRESETS, randomTokens } from '../src/models/gpt.js';
import { gradStep } from '../src/train/step.js';

const arg = (k: string, d: string): string => { const i = process.argv.indexOf(k); return i < 0 ? d : process.argv[i + 1]!; };
const preset = arg('--preset', 'small') as keyof typeof PRESETS;
const threads = Number(arg('--threads', '1'));
const steps = Number(arg('--steps', '10'));
const cfg = PRESETS[preset];
if (!cfg) throw new Error(`--preset: expected small or medium, got '${preset}'`);
setThreads(threads);

const params = FlatBuffer.zeros(gptLayout(cfg), 'params');
initGPT(params, 0);
const grads = FlatBuffer.zeros(params.layout, 'grads');
const opt = new AdamW(params, { lr: 3e-4, weightDecay: 0.1 });
const step = gradStep(params, grads, (P, idx, tgt) => gptLoss(cfg, P, idx!, tgt!));
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
const nParams = params.layout.slots.reduce((s, x) => s + x.size, 0);
const tokens = cfg.batch * cfg.ctx;
const flopsPerToken = 6 * nParams + 12 * cfg.layers * cfg.ctx * cfg.d;
const report = profiler.report();
console.log(JSON.stringify({
  system: 'weft', preset, threads, params: nParams, step_s: stepS, fwd_bwd_s: median(fwdBwd.slice(3)),
  optimizer_s: stepS - median(fwdBwd.slice(3)), tokens_per_s: tokens / stepS,
  model_gflops_per_s: (flopsPerToken * tokens) / stepS / 1e9, loss,
  held_mb: Math.round(report.totalHeldBytes / 2 ** 20),
}));
