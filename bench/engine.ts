/**
 * npm run bench:engine — weft against PyTorch (../shared/anchors/torch_gpt.py) side by side, in one
 * run, same thread count: each configuration runs weft, then torch, alternating `--repeat` times;
 * ratios are taken pair by pair and their median reported.
 *   node dist/bench/engine.js [--presets small,medium] [--threads 1,2] [--steps 10] [--repeat 1]
 * Prints JSON. PyTorch needs Debian's python3-torch and libopenblas0-pthread; without them the
 * torch side is reported as unavailable.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (k: string, d: string): string => { const i = process.argv.indexOf(k); return i < 0 ? d : process.argv[i + 1]!; };
const presets = arg('--presets', 'small,medium').split(',');
const threadsList = arg('--threads', '1,2').split(',').map(Number);
const steps = arg('--steps', '10');
const repeat = Number(arg('--repeat', '1'));
const anchor = resolve(here, '../../../shared/anchors/torch_gpt.py');
const py = '/usr/bin/python3';

type Row = Record<string, unknown> & { tokens_per_s: number };
const runJson = (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Row => {
  const out = execFileSync(cmd, args, { encoding: 'utf8', env, maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop()!) as Row;
};

function torchAvailable(): string | null {
  if (!existsSync(anchor)) return `anchor not found at ${anchor}`;
  try { execFileSync(py, ['-c', 'import torch'], { stdio: 'ignore' }); return null; } catch { return 'python3-torch is not installed (apt-get install python3-torch libopenblas0-pthread)'; }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const torchMissing = torchAvailable();
const results = [];
for (const preset of presets) {
  for (const threads of threadsList) {
    const weft: Row[] = [];
    const torch: Row[] = [];
    for (let r = 0; r < repeat; r++) {
      weft.push(runJson(process.execPath, [resolve(here, 'gpt_step.js'), '--preset', preset, '--threads', String(threads), '--steps', steps]));
      if (!torchMissing) torch.push(runJson(py, [anchor, '--preset', preset, '--threads', String(threads), '--steps', steps]));
    }
    const ratios = torch.map((t, i) => weft[i]!.tokens_per_s / t.tokens_per_s);
    results.push({
      preset, threads,
      weft_tokens_per_s: median(weft.map((w) => w.tokens_per_s)),
      torch_tokens_per_s: torch.length ? median(torch.map((t) => t.tokens_per_s)) : null,
      ratio_weft_over_torch: ratios.length ? median(ratios) : null,
      weft: weft.at(-1), torch: torch.at(-1) ?? torchMissing,
    });
    console.error(JSON.stringify(results.at(-1)));
  }
}
console.log(JSON.stringify({ bench: 'engine', steps: Number(steps), repeat, results }, null, 1));
