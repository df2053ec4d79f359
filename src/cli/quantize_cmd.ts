/**
 * `weft quantize in.onnx out.onnx`: int8 post-training quantization (deploy/quantize.ts), dynamic
 * by default; static with calibration batches from MNIST, the Brown corpus or a safetensors file
 * (deploy/calibrate.ts). Prints what was quantized and what was left float, and why.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { readModelFile } from '../deploy/model_file.js';
import { availableParallelism } from 'node:os';
import { decodeModel, encodeModel } from '../ir/onnx/model.js';
import type { OnnxModel } from '../ir/onnx/model.js';
import { brownCalibration, calibrate, CALIBRATION_METHODS, mnistCalibration, safetensorsCalibration } from '../deploy/calibrate.js';
import type { CalibrationBatch, CalibrationMethod, CalibrationResult } from '../deploy/calibrate.js';
import { DEFAULT_MIN_WEIGHTS, quantize } from '../deploy/quantize.js';
import type { QuantizeFormat, QuantizeMode, QuantizeReport } from '../deploy/quantize.js';
import { num, parse, UsageError } from './args.js';

export const QUANTIZE_USAGE = 'weft quantize <in.onnx> <out.onnx> [--mode dynamic|static] [--format ort|onnx] [--calibrate mnist|brown|file.safetensors] [--method minmax|percentile|entropy] [--percentile 99.999] [--samples 500] [--batch 50] [--seq T] [--min-weights 4096] [--exclude node,...] [--reduce-range] [--threads N] [--json] [--key-file FILE]';

/** The single data input of `m` (MNIST and Brown feed one tensor). */
function soleInput(m: OnnxModel, what: string): { name: string; shape: (number | string | null)[] | null } {
  const inits = new Set(m.graph.initializers.map((t) => t.name));
  const inputs = m.graph.inputs.filter((i) => !inits.has(i.name));
  if (inputs.length !== 1) throw new UsageError(`--calibrate ${what} feeds one input; the model has ${inputs.length} (${inputs.map((i) => i.name).join(', ')}): use --calibrate file.safetensors`);
  return inputs[0]!;
}

function batches(m: OnnxModel, source: string, samples: number, batch: number, seq: number | undefined): Iterable<CalibrationBatch> {
  if (source === 'mnist') return mnistCalibration(soleInput(m, source).name, samples, batch);
  if (source === 'brown') {
    const input = soleInput(m, source);
    const declared = input.shape?.[1];
    const T = seq ?? (typeof declared === 'number' ? declared : undefined);
    if (T === undefined) throw new UsageError(`--calibrate brown: input '${input.name}' has a symbolic sequence dim (${String(declared)}); give its length with --seq T`);
    return brownCalibration(input.name, samples, T, batch);
  }
  if (source.endsWith('.safetensors')) return safetensorsCalibration(new Uint8Array(readFileSync(source)), source, samples, batch);
  throw new UsageError(`--calibrate must be mnist, brown or a .safetensors file, got '${source}'`);
}

function summary(r: QuantizeReport, cal: CalibrationResult | null, out: string, bytes: number): string {
  const lines = [`${out}: ${r.mode} int8 (${r.format}), ${r.quantized.length} product(s) quantized, ${r.skipped.length} left float; ${(bytes / 1e6).toFixed(2)} MB`];
  if (cal) lines.push(`  calibration: ${cal.method} over ${cal.samples} samples (${cal.batches} batches), ${r.activations.length} activation ranges`);
  for (const q of r.quantized) lines.push(`  int8   ${q.op} ${q.node} [${q.weight.join(', ')}] -> ${q.as}`);
  for (const s of r.skipped) lines.push(`  float  ${s.op} ${s.node}: ${s.reason}`);
  return `${lines.join('\n')}\n`;
}

export async function quantizeCommand(argv: string[]): Promise<void> {
  const { pos, opt, on } = parse(argv, ['--mode', '--format', '--calibrate', '--method', '--percentile', '--samples', '--batch', '--seq', '--min-weights', '--exclude', '--threads', '--key-file'], ['--json', '--reduce-range']);
  if (pos.length !== 2) throw new UsageError(`weft quantize takes an input and an output ONNX file, got ${pos.length} argument(s)`);
  const [input, output] = pos as [string, string];
  const mode = (opt.get('--mode') ?? 'dynamic') as QuantizeMode;
  if (mode !== 'dynamic' && mode !== 'static') throw new UsageError(`--mode must be dynamic or static, got '${mode}'`);
  const format = (opt.get('--format') ?? 'ort') as QuantizeFormat;
  if (format !== 'ort' && format !== 'onnx') throw new UsageError(`--format must be ort or onnx, got '${format}'`);
  if (mode === 'static' && opt.has('--format')) throw new UsageError('--format applies to dynamic mode; static mode writes QDQ (standard ONNX)');
  const method = (opt.get('--method') ?? 'minmax') as CalibrationMethod;
  if (!CALIBRATION_METHODS.includes(method)) throw new UsageError(`--method must be one of ${CALIBRATION_METHODS.join(', ')}, got '${method}'`);
  const source = opt.get('--calibrate');
  if (mode === 'static' && source === undefined) throw new UsageError('--mode static needs calibration data: --calibrate mnist|brown|file.safetensors');
  if (mode === 'dynamic' && (source !== undefined || opt.has('--method'))) throw new UsageError('--calibrate and --method apply to --mode static (dynamic mode measures activations at run time)');
  const positive = (k: string, d: number): number => {
    const v = num(opt, k, d);
    if (!(Number.isInteger(v) && v >= 1)) throw new UsageError(`${k} must be a positive integer, got '${opt.get(k)}'`);
    return v;
  };
  const minWeights = num(opt, '--min-weights', DEFAULT_MIN_WEIGHTS);
  const exclude = opt.get('--exclude')?.split(',').filter((s) => s !== '') ?? [];

  const keyFile = opt.get('--key-file');
  const model = decodeModel(readModelFile(input, { keyFile }), input);
  let cal: CalibrationResult | null = null;
  if (mode === 'static') {
    const samples = positive('--samples', source === 'brown' ? 64 : 500);
    const seq = opt.has('--seq') ? positive('--seq', 0) : undefined;
    cal = await calibrate(model, batches(model, source!, samples, positive('--batch', source === 'brown' ? 8 : 50), seq), {
      method, percentile: num(opt, '--percentile', 99.999), threads: positive('--threads', Math.min(availableParallelism(), 4)),
    });
  }
  const { model: q, report } = quantize(model, { mode, format, minWeights, exclude, reduceRange: on.has('--reduce-range'), ...(cal ? { calibration: cal } : {}) });
  const bytes = encodeModel(q);
  writeFileSync(output, bytes);
  if (on.has('--json')) process.stdout.write(`${JSON.stringify({ input, output, bytes: bytes.length, ...report, calibration: cal && { method: cal.method, samples: cal.samples, batches: cal.batches } })}\n`);
  else process.stdout.write(summary(report, cal, output, bytes.length));
}
