#!/usr/bin/env node
// Builds native/build/weft_blas.node, the N-API binding of weft's native matrix products, when a C
// compiler and OpenBLAS's headers (Debian libopenblas-dev) exist, with oneDNN too where its headers
// are (libdnnl-dev); otherwise says so in one line and succeeds: every product then runs inside
// onnxruntime, as without the addon. Runs from the package's "install" script (npm ci runs it).
// WEFT_BLAS=0 skips it (CI's run without the addon).
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BUILD_DIR, buildAddon, NODE_HEADER_DIRS, nodeHeaders, which } from './node_headers.mjs';

const out = join(BUILD_DIR, 'weft_blas.node');

if (process.env.WEFT_BLAS === '0') {
  rmSync(out, { force: true });
  console.log('weft: WEFT_BLAS=0, so the native matrix products are not built (onnxruntime runs them all)');
  process.exit(0);
}
const cc = ['cc', 'gcc', 'clang'].find(which);
const header = (name) => ['/usr/include', '/usr/include/x86_64-linux-gnu', '/usr/include/aarch64-linux-gnu', '/usr/include/openblas', '/usr/local/include']
  .find((d) => existsSync(join(d, name)));
const openblas = header('cblas.h') && header('openblas_config.h');
const dnnl = header('dnnl.h');
if (!cc || !openblas) {
  console.log(`weft: ${cc ? 'OpenBLAS headers' : 'a C compiler'} not found, so the native matrix products are not built (install libopenblas-dev and run npm ci to build them)`);
  process.exit(0);
}

const include = nodeHeaders();
if (!include) {
  console.log(`weft: node_api.h not found in ${NODE_HEADER_DIRS.join(', ')}, so the native matrix products are not built`);
  process.exit(0);
}

const defs = ['-DWEFT_OPENBLAS', ...(dnnl ? ['-DWEFT_DNNL', '-fopenmp'] : [])];
const libs = ['-lopenblas', ...(dnnl ? ['-ldnnl', '-lgomp'] : [])];
try {
  buildAddon(cc, 'weft_blas', include, [`-I${openblas}`, ...defs], libs);
} catch (e) {
  // The addon is an accelerator, never a requirement: a failed build leaves onnxruntime doing it all.
  console.log(`weft: building the native matrix products failed (${e.message}); onnxruntime runs them all`);
  process.exit(0);
}
console.log(`weft: built the native matrix products (OpenBLAS${dnnl ? ', oneDNN' : ''}): ${out}`);
