/**
 * `weft protect in.onnx out.onnx [--seed N] [--decoys N] [--no-shuffle] [--rename-io] [--encrypt]
 * [--key-file FILE]`: the model obfuscated (deploy/protect.ts) and, with --encrypt, encrypted
 * (deploy/model_file.ts, AES-256-GCM); a JSON report on stdout. The input may itself be encrypted.
 * Protect last: optimize and quantize first (their passes read the graph protect scrambles).
 *
 * `weft keygen key-file`: a fresh 32-byte key as 64 hex digits, file mode 0600, never overwriting.
 */
import { renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { decodeModel, encodeModel } from '../ir/onnx/model.js';
import { encryptModel, KEY_ENV, loadKey, newKeyText, readModelFile } from '../deploy/model_file.js';
import { protect } from '../deploy/protect.js';
import { num, parse, UsageError } from './args.js';

export const PROTECT_USAGE = 'weft protect <in.onnx> <out.onnx> [--seed N] [--decoys N] [--no-shuffle] [--rename-io] [--encrypt] [--key-file FILE]';
export const KEYGEN_USAGE = 'weft keygen <key-file>                               (a fresh AES-256 key for --encrypt / --key-file, mode 0600)';

/** Writes `bytes` to a temporary name beside `path` and renames it, so a failure never leaves half a file. */
function writeWhole(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new Error(`${path}: cannot write it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** `weft protect`: see the file's comment. */
export function protectCommand(argv: string[]): void {
  const { pos, opt, on } = parse(argv, ['--seed', '--decoys', '--key-file'], ['--no-shuffle', '--rename-io', '--encrypt']);
  if (pos.length !== 2) throw new UsageError(`weft protect takes an input and an output ONNX file, got ${pos.length} argument(s)`);
  const [src, dst] = pos as [string, string];
  const decoys = num(opt, '--decoys', 0);
  if (!Number.isInteger(decoys) || decoys < 0) throw new UsageError(`--decoys must be a non-negative integer, got '${opt.get('--decoys')}'`);
  const seed = opt.has('--seed') ? num(opt, '--seed', 0) : undefined;
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw new UsageError(`--seed must be an integer, got '${opt.get('--seed')}'`);
  const keyFile = opt.get('--key-file');
  // The key is checked before any work, so a missing or bad key writes nothing.
  const key = on.has('--encrypt') ? loadKey(keyFile) : null;
  if (on.has('--encrypt') && key === null) throw new UsageError(`--encrypt needs a key: --key-file FILE or the environment variable ${KEY_ENV} (weft keygen FILE makes one); nothing was written`);
  const bytes = readModelFile(src, { keyFile });
  const bytesIn = statSync(src).size;
  const { model, report } = protect(decodeModel(bytes, src), { decoys, shuffle: !on.has('--no-shuffle'), renameIo: on.has('--rename-io'), ...(seed === undefined ? {} : { seed }) });
  const plain = encodeModel(model);
  const out = key === null ? plain : encryptModel(plain, key);
  writeWhole(dst, out);
  // readModelFile hands back the plaintext: a decrypted input is shorter than its file.
  const inputEncrypted = bytesIn !== bytes.length;
  if (inputEncrypted && key === null) process.stderr.write(`weft protect: note: ${src} was encrypted and ${dst} is not (add --encrypt to keep it encrypted)\n`);
  process.stdout.write(`${JSON.stringify({ input: src, output: dst, bytesIn, bytesOut: out.length, inputEncrypted, encrypted: key !== null, ...report })}\n`);
}

/** `weft keygen`: see the file's comment. */
export function keygenCommand(argv: string[]): void {
  const { pos } = parse(argv, [], []);
  if (pos.length !== 1) throw new UsageError(`weft keygen takes one key file to write, got ${pos.length} argument(s)`);
  const path = pos[0]!;
  try {
    // 'wx': fails when the file exists (an existing key may be the only one some model opens with).
    writeFileSync(path, newKeyText(), { mode: 0o600, flag: 'wx' });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new Error(`key file ${path} already exists; not overwritten (a model encrypted with it would be lost)`);
    throw new Error(`key file ${path}: cannot write it (${code ?? (e as Error).message})`);
  }
  process.stdout.write(`${JSON.stringify({ keyFile: path, bytes: 32, format: 'hex', mode: '0600' })}\n`);
}
