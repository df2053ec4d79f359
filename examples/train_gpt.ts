/**
 * The main job: train the small benchmark GPT on bytes of text and print the loss as it falls.
 *   node dist/examples/train_gpt.js [--steps 60] [--threads N] [--text FILE]
 * Default text: weft's own documentation and sources (bundled, no download).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../src/ir/ops/index.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { setThreads, settings } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';
import { AdamW } from '../src/optim/adamw.js';
import { warmupCosine } from '../src/optim/schedule.js';
import { bindParameters, GPT, GPT_PRESETS } from '../src/nn/index.js';
import { gradStep } from '../src/train/step.js';

const arg = (k: string, d: string): string => { const i = process.argv.indexOf(k); return i < 0 ? d : process.argv[i + 1]!; };
const steps = Number(arg('--steps', '60'));
if (process.argv.includes('--threads')) setThreads(Number(arg('--threads', '1')));
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const textFile = arg('--text', '');
const text = textFile
  ? readFileSync(textFile)
  : Buffer.concat(['README.md', 'docs/architecture.md', ...readdirSync(join(root, 'src/ir/ops')).map((f) => `src/ir/ops/${f}`)]
    .filter((f) => f.endsWith('.md') || f.endsWith('.ts')).map((f) => readFileSync(join(root, f))));

const [B, T] = [16, GPT_PRESETS.small.ctx];
const model = new GPT(GPT_PRESETS.small);
const params = bindParameters(model, { seed: 0 });
const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
const opt = new AdamW(params.flat, { lr: 1e-3, beta2: 0.95, weightDecay: 0.1, clipNorm: 1 });
const lrAt = warmupCosine({ lr: 1e-3, warmupSteps: 10, warmup: 'step+1', totalSteps: steps, minLr: 1e-4 });
const step = gradStep(params, grads, (idx, tgt) => model.loss(idx!, tgt!));
const rng = new Rng(1);
const idx = new BigInt64Array(B * T);
const tgt = new BigInt64Array(B * T);
console.log(`weft: small GPT (${params.flat.layout.size.toLocaleString()} floats) on ${text.length.toLocaleString()} bytes, ${steps} steps, ${settings.threads} threads`);
const t0 = performance.now();
for (let s = 0; s < steps; s++) {
  for (let r = 0; r < B; r++) {
    const at = rng.int(text.length - T - 1);
    for (let j = 0; j < T; j++) { idx[r * T + j] = BigInt(text[at + j]!); tgt[r * T + j] = BigInt(text[at + j + 1]!); }
  }
  const loss = await step([{ data: idx, shape: [B, T], dtype: 'int64' }, { data: tgt, shape: [B, T], dtype: 'int64' }]);
  await opt.step(grads, lrAt(s));
  if (s % 10 === 0 || s === steps - 1) {
    const tps = ((s + 1) * B * T) / ((performance.now() - t0) / 1000);
    console.log(`step ${String(s).padStart(4)}  loss ${loss.toFixed(4)}  ${Math.round(tps)} tokens/s`);
  }
}
