/**
 * The parent's Node flags for a worker thread, minus `--input-type`, which a worker started from a
 * file rejects (every worker made under `node --input-type=module -e ...` would crash).
 */
export function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--input-type') i++;
    else if (!argv[i]!.startsWith('--input-type=')) out.push(argv[i]!);
  }
  return out;
}
