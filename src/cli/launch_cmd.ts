/**
 * `weft launch --max-restarts K -- <command> [args...]`: runs a job as a child process and, when it
 * fails, runs it again with `--resume` (added once), at most K times, each restart logged with
 * the exit code or signal. The supervisor for jobs weft cannot restart from inside: an MPI job
 * (mpirun ends every process when one dies), or a process killed by the kernel.
 *
 *   weft launch --max-restarts 3 -- mpirun -np 4 weft train recipes/brown-small.json
 *
 * SIGINT and SIGTERM are passed to the child and end the launch without a restart.
 */
import { spawn } from 'node:child_process';
import { withRestarts } from '../train/restart.js';
import { UsageError } from './args.js';

export const LAUNCH_USAGE = 'weft launch --max-restarts K -- <command> [args...]   (re-runs a failed job with --resume; e.g. around mpirun)';

class Stopped extends Error {}

function runOnce(cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'inherit' });
    let stopped = false;
    const forward = (sig: NodeJS.Signals): void => { stopped = true; child.kill(sig); };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    const done = (): void => { process.off('SIGINT', forward); process.off('SIGTERM', forward); };
    child.on('error', (e) => { done(); reject(new Stopped(`weft launch: cannot start ${cmd}: ${e.message}`)); });
    child.on('exit', (code, signal) => {
      done();
      if (code === 0) resolve();
      else if (stopped) reject(new Stopped(`weft launch: stopped by a signal (${signal ?? code})`));
      else reject(new Error(`${[cmd, ...args].join(' ')} ${signal !== null ? `was killed by ${signal}` : `exited with code ${code}`}`));
    });
  });
}

export async function launchCommand(argv: string[]): Promise<void> {
  const sep = argv.indexOf('--');
  const own = sep >= 0 ? argv.slice(0, sep) : argv.slice(0, 2);
  const job = sep >= 0 ? argv.slice(sep + 1) : argv.slice(2);
  const i = own.indexOf('--max-restarts');
  if (i < 0 || own[i + 1] === undefined) throw new UsageError(`weft launch needs --max-restarts K: ${LAUNCH_USAGE}`);
  const maxRestarts = Number(own[i + 1]);
  if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new UsageError(`--max-restarts must be an integer >= 0, got ${own[i + 1]}`);
  if (job.length === 0) throw new UsageError(`weft launch: no command to run: ${LAUNCH_USAGE}`);
  const [cmd, ...args] = job as [string, ...string[]];
  await withRestarts((n) => runOnce(cmd, n > 0 && !args.includes('--resume') ? [...args, '--resume'] : args), {
    maxRestarts, fatal: (e) => e instanceof Stopped,
  });
}
