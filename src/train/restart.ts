/**
 * Restarts on failure (torchelastic's max_restarts): a job that fails is run again from its
 * newest checkpoint, at most `maxRestarts` times, each restart logged with its cause. What counts
 * as "run again" is the caller's: a new launch of thread ranks with `resume`, or a new child
 * process (`weft launch`). Errors in the run's own description (a bad config or usage) are not
 * retried: the same input would fail the same way.
 */
import { ConfigError } from './config.js';

export interface RestartOptions {
  maxRestarts: number;
  /** One line per restart (default: stderr). */
  log?: (line: string) => void;
  /** Errors that must not be retried (default: ConfigError). */
  fatal?: (e: unknown) => boolean;
}

/**
 * Runs `attempt(0)`, and on a failure `attempt(1)`, ... up to `attempt(maxRestarts)`; returns the
 * restarts used. The last failure is rethrown, saying how many restarts came before it.
 */
export async function withRestarts(attempt: (n: number) => Promise<void>, opts: RestartOptions): Promise<number> {
  const { maxRestarts } = opts;
  if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new RangeError(`--max-restarts must be an integer >= 0, got ${maxRestarts}`);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const fatal = opts.fatal ?? ((e: unknown) => e instanceof ConfigError);
  for (let n = 0; ; n++) {
    try {
      await attempt(n);
      return n;
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (fatal(e) || n >= maxRestarts) {
        if (n === 0 || fatal(e)) throw e;
        throw new Error(`${why} (after ${n} restart${n === 1 ? '' : 's'}, --max-restarts ${maxRestarts})`, { cause: e });
      }
      log(`weft: restart ${n + 1} of ${maxRestarts}: ${why.split('\n')[0]}; resuming from the newest checkpoint`);
    }
  }
}
