#!/usr/bin/env node
// Builds native/build/weft_blas.node, the N-API binding of weft's native matrix products, when a C
// compiler and OpenBLAS's headers (Debian libopenblas-dev) exist, with oneDNN too where its headers
// are (libdnnl-dev); otherwise says so in one line and succeeds: every product then runs inside
// onnxruntime, as without the addon. Runs from the package's "install" script (npm ci runs it).
// WEFT_BLAS=0 skips it (CI's run without the addon).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_HEADER_DIRS, nodeHeaders } from './node_headers.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'weft_blas.c');
const outDir = join(root, 'native', 'build');
const out = join(outDir, 'weft_blas.node');

if (process.env.WEFT_BLAS === '0') {
  rmSync(out, { force: true });
  console.log('weft: WEFT_BLAS=0, so the native matrix products are not built (onnxruntime runs them all)');
  process.exit(0);
}
const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
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

mkdirSync(outDir, { recursive: true });
const tmp = `${out}.tmp`;
const defs = ['-DWEFT_OPENBLAS', ...(dnnl ? ['-DWEFT_DNNL'] : [])];
const libs = ['-lopenblas', ...(dnnl ? ['-ldnnl', '-lgomp'] : [])];
const args = ['-O2', '-shared', '-fPIC', '-Wall', '-Wextra', '-Wno-unused-parameter', `-I${include}`, `-I${openblas}`, ...defs, source, '-o', tmp, ...libs];
try {
  execFileSync(cc, args, { stdio: 'inherit' });
} catch {
  // The addon is an accelerator, never a requirement: a failed build leaves onnxruntime doing it all.
  console.log(`weft: building the native matrix products failed (${cc} ${args.join(' ')}); onnxruntime runs them all`);
  process.exit(0);
}
renameSync(tmp, out);
console.log(`weft: built the native matrix products (OpenBLAS${dnnl ? ', oneDNN' : ''}): ${out}`);
