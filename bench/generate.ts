/**
 * npm run bench:generate — greedy text generation from the benchmark GPTs (small, medium; random
 * init, seed 0), the recompute loop (a [1, ctx] forward per token) against the KV cache (a
 * prefill, then one position per token). Two runs per preset and path: 256 tokens from a short
 * prompt (the figure: past the small preset's context of 128 the window slides, no key
 * is reusable and the cached path recomputes too), and as many tokens as the context holds after
 * the prompt (every token from the cache). The outputs are asserted identical. Per-token cost of
 * the cache: ms per step over the 32 steps after the prompt and over the last 32 of the context.
 * Prints JSON with the CPU's ISA and writes bench/results/generate.json.
 *   node dist/bench/generate.js [threads] [tokens]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ByteTokenizer } from '../src/data/tokenizer.js';
import { GPT, GPT_PRESETS } from '../src/nn/gpt.js';
import { bindParameters } from '../src/nn/module.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { setThreads } from '../src/runtime/executor.js';
import { Generator } from '../src/train/generate.js';

const threads = Number(process.argv[2] ?? 1);
const tokens = Number(process.argv[3] ?? 256);
setThreads(threads);
const tokenizer = new ByteTokenizer();
const PROMPT = 'The jury said';
const prompt = Array.from(tokenizer.encode(PROMPT));
const greedy = { temperature: 0, topK: 0 };

async function timed(g: Generator, n: number, cache: boolean): Promise<{ ids: number[]; s: number }> {
  const t0 = performance.now();
  const ids = await g.generateIds(prompt, { ...greedy, tokens: n, cache });
  return { ids, s: (performance.now() - t0) / 1000 };
}

async function compare(g: Generator, n: number): Promise<Record<string, unknown>> {
  const recompute = await timed(g, n, false);
  const cached = await timed(g, n, true);
  if (cached.ids.join() !== recompute.ids.join()) {
    const at = cached.ids.findIndex((t, i) => t !== recompute.ids[i]);
    throw new Error(`bench:generate: the KV cache's tokens differ from the recompute loop's at position ${at} of ${n + prompt.length}`);
  }
  const rate = (s: number): number => +(n / s).toFixed(1);
  return {
    tokens: n, identical: true,
    recompute: { s: +recompute.s.toFixed(3), tokens_per_s: rate(recompute.s) },
    kv_cache: { s: +cached.s.toFixed(3), tokens_per_s: rate(cached.s) },
    speedup: +(recompute.s / cached.s).toFixed(2),
  };
}

const presets: Record<string, unknown> = {};
for (const name of ['small', 'medium'] as const) {
  const cfg = GPT_PRESETS[name];
  const model = new GPT(cfg);
  bindParameters(model, { seed: 0 });
  const g = new Generator(model, tokenizer);
  // Compile both paths before timing (the cached step is traced once for every length).
  await g.generateIds(prompt, { ...greedy, tokens: 2, cache: false });
  await g.generateIds(prompt, { ...greedy, tokens: 2, cache: true });
  // Tokens the cache serves: the last one's step attends from position ctx - 1.
  const inside = cfg.ctx - prompt.length + 1;
  // Each cached step's time (between consecutive tokens), median over the 32 steps after the
  // prompt and over the last 32 of the context: robust to other load on the machine.
  const at: number[] = [];
  await g.generateIds(prompt, { ...greedy, tokens: inside, onToken: () => { at.push(performance.now()); } });
  const steps = at.slice(1).map((t, i) => t - at[i]!);
  const median = (xs: number[]): number => +[...xs].sort((a, b) => a - b)[xs.length >> 1]!.toFixed(2);
  presets[name] = {
    config: cfg,
    [`${tokens}_tokens`]: { ...(await compare(g, tokens)), recomputed_past_ctx: Math.max(0, prompt.length + tokens - cfg.ctx) },
    within_ctx: await compare(g, inside),
    kv_cache_step_ms_median: { [`past_${prompt.length}_to_${prompt.length + 31}`]: median(steps.slice(0, 32)), [`past_${cfg.ctx - 32}_to_${cfg.ctx - 1}`]: median(steps.slice(-32)) },
    traces: g.traces,
  };
}
const cpu = cpuInfo();
const result = {
  bench: 'generate', machine: { model: cpu.model, isa: cpu.isa, cores: cpu.cores, loadavg_1m_at_end: +loadavg()[0]!.toFixed(2) }, threads, prompt: PROMPT, greedy: true, init: 'random (seed 0)',
  note: 'past the context the window slides (positions restart at 0), so no cached key stays valid: both paths recompute those tokens',
  presets,
};
const text = JSON.stringify(result, null, 1);
process.stdout.write(`${text}\n`);
const file = join(dirname(fileURLToPath(import.meta.url)), '../../bench/results/generate.json');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(file, `${text}\n`);
