/**
 * `weft bench-infer model.onnx [more.onnx ...]`: inference latency (p50 / p99) and throughput by
 * batch size and thread count, each model against the first (fp32 against int8: pass both), as
 * JSON with the CPU's ISA (deploy/bench_infer.ts).
 */
import { basename } from 'node:path';
import { benchInfer } from '../deploy/bench_infer.js';
import { ints, num, parse, UsageError } from './args.js';

export const BENCH_INFER_USAGE = 'weft bench-infer <model.onnx> [other.onnx ...] [--batch 1,8] [--threads 1,2] [--dim seq=128 ...] [--runs 20] [--blocks 3] [--vocab 256] [--key-file FILE]';

export async function benchInferCommand(argv: string[]): Promise<void> {
  // --dim repeats: collect them before the single-valued flags are parsed.
  const dims: Record<string, number> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] !== '--dim') { rest.push(argv[i]!); continue; }
    const m = /^([A-Za-z_][\w.]*)=(\d+)$/.exec(argv[++i] ?? '');
    if (m === null) throw new UsageError(`--dim needs name=N (a symbolic dim's size), got '${argv[i] ?? ''}'`);
    dims[m[1]!] = Number(m[2]);
  }
  const { pos, opt } = parse(rest, ['--batch', '--threads', '--runs', '--blocks', '--vocab', '--warmup', '--key-file'], []);
  if (pos.length === 0) throw new UsageError('weft bench-infer takes one or more ONNX files');
  const models: Record<string, string> = {};
  for (const p of pos) {
    let label = basename(p).replace(/\.onnx$/, '');
    for (let k = 2; models[label] !== undefined; k++) label = `${basename(p)}#${k}`;
    models[label] = p;
  }
  const report = await benchInfer({
    models, batches: ints(opt, '--batch', [1, 8]), threads: ints(opt, '--threads', [1, 2]), dims,
    runs: num(opt, '--runs', 20), blocks: num(opt, '--blocks', 3), warmup: num(opt, '--warmup', 3), intHigh: num(opt, '--vocab', 256),
    keyFile: opt.get('--key-file'),
  });
  process.stdout.write(`${JSON.stringify(report, null, 1)}\n`);
}
