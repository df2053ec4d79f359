// Where node_api.h is, for the native addons' builds (build_mpi.mjs, build_blas.mjs): npm's nodedir
// (set for scripts it runs), next to this node binary, or the system's.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export const NODE_HEADER_DIRS = [
  process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
  resolve(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);

/** The directory holding node_api.h, or undefined. */
export const nodeHeaders = () => NODE_HEADER_DIRS.find((d) => existsSync(join(d, 'node_api.h')));
