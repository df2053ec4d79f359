/**
 * `weft optimize in.onnx out.onnx [--no-ort-fusions] [--passes fold,dce,...] [--json]`: graph passes
 * over any ONNX file (deploy/optimize.ts), the result written to out.onnx and a report printed
 * (as JSON with --json). A file that is not ONNX is an error naming it.
 */
import { writeFileSync } from 'node:fs';
import { readModelFile } from '../deploy/model_file.js';
import { decodeModel, encodeModel } from '../ir/onnx/model.js';
import { formatReport, optimize, PASS_NAMES } from '../deploy/optimize.js';
import type { PassName } from '../deploy/optimize.js';
import { parse, UsageError } from './args.js';

export const OPTIMIZE_USAGE = `weft optimize <in.onnx> <out.onnx> [--no-ort-fusions] [--passes ${PASS_NAMES.join(',')}] [--json] [--key-file FILE]`;

export async function optimizeCommand(argv: string[]): Promise<void> {
  const { pos, opt, on } = parse(argv, ['--passes', '--key-file'], ['--no-ort-fusions', '--json']);
  let passes: PassName[] | undefined;
  const list = opt.get('--passes');
  if (list !== undefined) {
    const names = list.split(',').filter((p) => p !== '');
    const bad = names.find((p) => !(PASS_NAMES as string[]).includes(p));
    if (bad !== undefined || names.length === 0) throw new UsageError(`--passes: unknown pass '${bad ?? list}'; the passes are ${PASS_NAMES.join(', ')}`);
    passes = names as PassName[];
  }
  if (pos.length !== 2) throw new UsageError(`weft optimize takes an input and an output file, got ${pos.length} argument${pos.length === 1 ? '' : 's'}`);
  const [src, dst] = pos as [string, string];
  const keyFile = opt.get('--key-file');
  const bytes = readModelFile(src, { keyFile });
  const input = decodeModel(bytes, src);
  const { model, report } = await optimize(input, { ortFusions: !on.has('--no-ort-fusions'), ...(passes ? { passes } : {}) });
  const out = encodeModel(model);
  writeFileSync(dst, out);
  if (on.has('--json')) process.stdout.write(`${JSON.stringify({ input: src, output: dst, bytesBefore: bytes.length, bytesAfter: out.length, ...report })}\n`);
  else process.stdout.write(`weft optimize: ${src} -> ${dst} (${bytes.length} -> ${out.length} bytes)\n${formatReport(report)}\n`);
}
