/**
 * `weft serve model.onnx`: the model behind an HTTP JSON API (deploy/serve.ts, docs/serve.md).
 * Prints one line (the URL, the model's inputs and outputs, the batching settings) and nothing per
 * request: /metrics counts them. SIGINT or SIGTERM closes it gracefully (queued and in-flight
 * requests are answered) and it exits 0; a second signal exits at once.
 */
import { startServer, TOKEN_ENV } from '../deploy/serve.js';
import type { ServedTensor } from '../deploy/serve_request.js';
import { num, parse, UsageError } from './args.js';

export const SERVE_USAGE = 'weft serve <model.onnx> [--host 127.0.0.1] [--port 8080] [--token T] [--max-batch 32] [--max-wait-ms 2] [--queue 256] [--max-body-mb 8] [--threads 1] [--key-file F]';

const describe = (ts: readonly ServedTensor[]): string => ts.map((t) => `${t.name} ${t.dtype} [${t.dims.map((d) => d ?? '?').join(',')}]`).join(', ');

export async function serveCommand(argv: string[]): Promise<void> {
  const { pos, opt } = parse(argv, ['--host', '--port', '--token', '--max-batch', '--max-wait-ms', '--queue', '--max-body-mb', '--threads', '--key-file'], []);
  if (pos.length !== 1) throw new UsageError('weft serve takes one model file');
  const int = (k: string, d: number, min = 1): number => {
    const v = num(opt, k, d);
    if (!Number.isInteger(v) || v < min) throw new UsageError(`${k} must be an integer >= ${min}, got '${opt.get(k)}'`);
    return v;
  };
  const maxWaitMs = num(opt, '--max-wait-ms', 2);
  if (maxWaitMs < 0) throw new UsageError(`--max-wait-ms must be >= 0, got '${opt.get('--max-wait-ms')}'`);
  const bodyMb = num(opt, '--max-body-mb', 8);
  if (!(bodyMb > 0)) throw new UsageError(`--max-body-mb must be > 0, got '${opt.get('--max-body-mb')}'`);
  const keyFile = opt.get('--key-file');
  const token = opt.get('--token') ?? (process.env[TOKEN_ENV] || undefined);
  const server = await startServer({
    model: pos[0]!, host: opt.get('--host') ?? '127.0.0.1', port: int('--port', 8080, 0),
    maxBatch: int('--max-batch', 32), maxWaitMs, queue: int('--queue', 256), maxBodyBytes: Math.round(bodyMb * 2 ** 20),
    threads: int('--threads', 1), ...(keyFile !== undefined ? { keyFile } : {}), ...(token !== undefined ? { token } : {}),
  });
  const s = server.settings;
  process.stdout.write(`weft serve: ${server.url}/v1/predict  ${pos[0]!}  inputs: ${describe(server.signature.inputs)}  outputs: ${describe(server.signature.outputs)}`
    + `  (max batch ${s.maxBatch}, max wait ${s.maxWaitMs} ms, queue ${s.queue}${token !== undefined ? ', token required' : ''})\n`);
  await new Promise<void>((resolve, reject) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (++signals > 1) { process.stderr.write(`weft serve: ${signal} again, exiting without draining\n`); process.exit(1); }
      server.close().then(resolve, reject);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
