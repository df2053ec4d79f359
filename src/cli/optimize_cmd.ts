/**
 * `weft optimize in.onnx out.onnx [--no-ort-fusions] [--passes fold,dce,...] [--json]`: graph passes
 * over any ONNX file (deploy/optimize.ts), the result written to out.onnx and a report printed
 * (as JSON with --json). A file that is not ONNX is an error naming it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { decodeModel, encodeModel } from '../ir/onnx/model.js';
import { formatReport, optimize, PASS_NAMES } from '../deploy/optimize.js';
import type { PassName } from '../deploy/optimize.js';

export const OPTIMIZE_USAGE = `weft optimize <in.onnx> <out.onnx> [--no-ort-fusions] [--passes ${PASS_NAMES.join(',')}] [--json]`;

export async function optimizeCommand(argv: string[]): Promise<void> {
  const pos: string[] = [];
  let fusions = true;
  let json = false;
  let passes: PassName[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--no-ort-fusions') fusions = false;
    else if (a === '--json') json = true;
    else if (a === '--passes') {
      const v = argv[++i];
      if (v === undefined) throw new Error(`--passes needs a list, e.g. fold,dce\nusage: ${OPTIMIZE_USAGE}`);
      const names = v.split(',').filter((p) => p !== '');
      const bad = names.find((p) => !(PASS_NAMES as string[]).includes(p));
      if (bad !== undefined) throw new Error(`--passes: unknown pass '${bad}'; the passes are ${PASS_NAMES.join(', ')}`);
      passes = names as PassName[];
    } else if (a === '--help' || a === '-h') { process.stdout.write(`usage: ${OPTIMIZE_USAGE}\n`); return; }
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}\nusage: ${OPTIMIZE_USAGE}`);
    else pos.push(a);
  }
  if (pos.length !== 2) throw new Error(`optimize needs an input and an output file, got ${pos.length} argument${pos.length === 1 ? '' : 's'}\nusage: ${OPTIMIZE_USAGE}`);
  const [src, dst] = pos as [string, string];
  let bytes: Uint8Array;
  try { bytes = new Uint8Array(readFileSync(src)); } catch (e) { throw new Error(`${src}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
  const input = decodeModel(bytes, src);
  const { model, report } = await optimize(input, { ortFusions: fusions, ...(passes ? { passes } : {}) });
  const out = encodeModel(model);
  writeFileSync(dst, out);
  if (json) process.stdout.write(`${JSON.stringify({ input: src, output: dst, bytesBefore: bytes.length, bytesAfter: out.length, ...report })}\n`);
  else process.stdout.write(`weft optimize: ${src} -> ${dst} (${bytes.length} -> ${out.length} bytes)\n${formatReport(report)}\n`);
}
