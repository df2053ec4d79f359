// What the native addons' builds share (build_mpi.mjs, build_blas.mjs): where
// node_api.h is (npm's nodedir, set for scripts it runs; next to this node binary; the system's),
// finding a command, and compiling one C file into native/build/<name>.node atomically.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const NODE_HEADER_DIRS = [
  process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
  resolve(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);

/** The directory holding node_api.h, or undefined. */
export const nodeHeaders = () => NODE_HEADER_DIRS.find((d) => existsSync(join(d, 'node_api.h')));

/** Whether `cmd` is on PATH. */
export const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BUILD_DIR = join(root, 'native', 'build');

/**
 * Compiles native/<name>.c with `cc` into native/build/<name>.node (written beside and renamed,
 * so a running test never loads a half-written binding). Returns the output path, or throws with
 * the command line that failed.
 */
export function buildAddon(cc, name, include, flags = [], libs = []) {
  mkdirSync(BUILD_DIR, { recursive: true });
  const out = join(BUILD_DIR, `${name}.node`);
  const tmp = `${out}.tmp`;
  const args = ['-O2', '-shared', '-fPIC', '-Wall', '-Wextra', '-Wno-unused-parameter', `-I${include}`, ...flags, join(root, 'native', `${name}.c`), '-o', tmp, ...libs];
  try {
    execFileSync(cc, args, { stdio: 'inherit' });
  } catch {
    throw new Error(`${cc} ${args.join(' ')}`);
  }
  renameSync(tmp, out);
  return out;
}
