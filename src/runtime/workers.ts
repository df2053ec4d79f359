/** Flags that hold for the whole process (every thread already has them), which a worker refuses. */
const PROCESS_WIDE = new Set(['--single-threaded-gc', '--single-threaded', '--v8-pool-size']);

/**
 * The parent's Node flags for a worker thread, minus `--input-type`, which a worker started from a
 * file rejects (every worker made under `node --input-type=module -e ...` would crash), and the
 * process-wide ones (`node --single-threaded-gc weft ...`: its ranks collect garbage on their own
 * threads, not on helpers competing with the compute for the cores).
 */
export function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--input-type') i++;
    else if (!argv[i]!.startsWith('--input-type=') && !PROCESS_WIDE.has(argv[i]!.split('=')[0]!)) out.push(argv[i]!);
  }
  return out;
}
