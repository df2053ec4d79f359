/**
 * `weft export <run-dir-or-checkpoint> <model.onnx> [--kind logits|step|both]`: a trained run's
 * inference model(s) as ONNX (deploy/export.ts). A GPT writes the whole-sequence model
 * (`logits`), the KV-cache step model (`step`), or both (default: model.onnx and model.step.onnx);
 * a CNN writes its classifier. Beside them, `model.json` names each file's inputs and outputs and
 * holds the GPT's config and tokenizer (docs/deploy-export.md).
 */
import { exportRun } from '../deploy/export.js';
import type { RunExportKind } from '../deploy/export.js';
import { parse, UsageError } from './args.js';

export const EXPORT_USAGE = 'weft export <run-dir-or-checkpoint> <model.onnx> [--kind logits|step|both]';

const KINDS: readonly RunExportKind[] = ['logits', 'step', 'both'];

export async function exportCommand(argv: string[]): Promise<void> {
  const { pos, opt } = parse(argv, ['--kind'], []);
  if (pos.length !== 2) throw new UsageError('weft export takes a run (or checkpoint) directory and the ONNX file to write');
  const kind = opt.get('--kind') ?? 'both';
  if (!(KINDS as readonly string[]).includes(kind)) throw new UsageError(`--kind must be ${KINDS.join(', ')}, got '${kind}'`);
  const [from, out] = pos as [string, string];
  if (!out.endsWith('.onnx')) throw new UsageError(`the output file must end in .onnx, got '${out}'`);
  const { files } = await Promise.resolve(exportRun(from, { out, kind: kind as RunExportKind }));
  for (const f of files) process.stdout.write(`wrote ${f}\n`);
}
