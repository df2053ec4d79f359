/** Command-line arguments of the `weft` subcommands: positionals, flags with values, switches. */

/** A mistake in the command line: printed with the usage text. */
export class UsageError extends Error {}

/** Splits argv into positionals, repeated `--set` values and single-valued flags. */
export function parse(argv: string[], flags: string[], switches: string[]): { pos: string[]; opt: Map<string, string>; sets: string[]; on: Set<string> } {
  const pos: string[] = [];
  const opt = new Map<string, string>();
  const sets: string[] = [];
  const on = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') throw new UsageError('');
    if (switches.includes(a)) on.add(a);
    else if (a === '--set') sets.push(argv[++i] ?? (() => { throw new UsageError('--set needs key.path=value'); })());
    else if (flags.includes(a)) {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      opt.set(a, v);
    } else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else pos.push(a);
  }
  return { pos, opt, sets, on };
}

export function num(opt: Map<string, string>, k: string, d: number): number {
  const v = opt.get(k);
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${k} must be a number, got '${v}'`);
  return n;
}

/** A comma-separated list of positive integers (`--threads 1,2`), naming the flag when one is not. */
export function ints(opt: Map<string, string>, k: string, d: readonly number[]): number[] {
  const v = opt.get(k);
  if (v === undefined) return [...d];
  const xs = v.split(',').map(Number);
  if (xs.some((x) => !Number.isInteger(x) || x < 1)) throw new UsageError(`${k} must be positive integers separated by commas, got '${v}'`);
  return xs;
}
