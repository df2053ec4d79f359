/**
 * npm run bench:engine — weft against PyTorch (../shared/anchors/torch_gpt.py) side by side, same
 * thread count, alternating runs; prints JSON with the weft/PyTorch tokens/s ratio per preset and
 * thread count. Flags as `weft bench`: [--preset small,medium] [--threads 1,2] [--steps 10] [--repeat 1].
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
execFileSync(process.execPath, [cli, 'bench', ...process.argv.slice(2)], { stdio: 'inherit' });
