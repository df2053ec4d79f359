#!/usr/bin/env node
// Builds native/build/weft_mpi.node, the N-API binding of the `mpi` process-group backend, when
// OpenMPI's compiler wrapper `mpicc` is on PATH; otherwise says so in one line and succeeds, since
// every other backend works without it. Runs as the package's "install" script (npm ci runs it).
import { buildAddon, NODE_HEADER_DIRS, nodeHeaders, which } from './node_headers.mjs';

if (!which('mpicc')) {
  console.log('weft: mpicc not found, so the MPI backend is not built (install openmpi-bin libopenmpi-dev and run npm ci to build it)');
  process.exit(0);
}
const include = nodeHeaders();
if (!include) {
  console.error(`weft: cannot build the MPI backend: node_api.h not found in ${NODE_HEADER_DIRS.join(', ')} (install Node's headers, e.g. the nodejs or libnode-dev package)`);
  process.exit(1);
}
try {
  console.log(`weft: built the MPI backend: ${buildAddon('mpicc', 'weft_mpi', include)}`);
} catch (e) {
  console.error(`weft: building the MPI backend failed: ${e.message}`);
  process.exit(1);
}
