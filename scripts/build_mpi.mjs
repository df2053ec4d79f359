#!/usr/bin/env node
// Builds native/build/weft_mpi.node, the N-API binding of the `mpi` process-group backend, when
// OpenMPI's compiler wrapper `mpicc` is on PATH; otherwise says so in one line and succeeds, since
// every other backend works without it. Runs as the package's "install" script (npm ci runs it).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, renameSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_HEADER_DIRS, nodeHeaders } from './node_headers.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'weft_mpi.c');
const outDir = join(root, 'native', 'build');
const out = join(outDir, 'weft_mpi.node');

const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
if (!which('mpicc')) {
  console.log('weft: mpicc not found, so the MPI backend is not built (install openmpi-bin libopenmpi-dev and run npm ci to build it)');
  process.exit(0);
}

const include = nodeHeaders();
if (!include) {
  console.error(`weft: cannot build the MPI backend: node_api.h not found in ${NODE_HEADER_DIRS.join(', ')} (install Node's headers, e.g. the nodejs or libnode-dev package)`);
  process.exit(1);
}

mkdirSync(outDir, { recursive: true });
const tmp = `${out}.tmp`;
const args = ['-O2', '-shared', '-fPIC', '-Wall', '-Wextra', '-Wno-unused-parameter', `-I${include}`, source, '-o', tmp];
try {
  execFileSync('mpicc', args, { stdio: 'inherit' });
} catch {
  console.error(`weft: building the MPI backend failed: mpicc ${args.join(' ')}`);
  process.exit(1);
}
renameSync(tmp, out); // atomic: a running test never loads a half-written binding
console.log(`weft: built the MPI backend: ${out}`);
