/** Running `weft train` under mpirun from tests: where the MPI backend is missing, skip (CI installs OpenMPI, so there it fails instead). */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindingPath, NOT_BUILT } from '../../src/comm/mpi/binding.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const hasMpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { stdio: 'ignore' }).status === 0;
const mpiMissing = !bindingPath() ? NOT_BUILT : !hasMpirun ? 'mpirun is not on PATH (install openmpi-bin)' : null;

/** The `skip` option of an MPI test: a reason where MPI is missing outside CI, else false. */
export const skipMpi: string | false = mpiMissing && process.env['CI'] !== 'true' ? mpiMissing : false;

/** `mpirun -np N node weft train <args> --backend mpi`, its stdout. */
export function mpirunTrain(np: number, args: readonly string[]): string {
  return execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(np), process.execPath, CLI, 'train', ...args, '--backend', 'mpi'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' }, timeout: 120_000 });
}

/**
 * `mpirun -np N node <script> '<args json>' <dir>` for a rank script that writes its result to
 * <dir>/rank<r>.json (test/pipeline_mpi.ts, test/moe_mpi.ts): every rank's result, in rank order.
 */
export function mpirunRanks<R>(np: number, script: URL, args: unknown): R[] {
  const dir = mkdtempSync(join(tmpdir(), 'weft-mpi-ranks-'));
  try {
    execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(np), process.execPath, fileURLToPath(script), JSON.stringify(args), dir],
      { encoding: 'utf8', env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' }, timeout: 120_000 });
    return Array.from({ length: np }, (_, r) => JSON.parse(readFileSync(join(dir, `rank${r}.json`), 'utf8')) as R);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
