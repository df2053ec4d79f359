#!/usr/bin/env node
// Builds native/build/weft_mem.node, the binding that sets the C allocator's thresholds so that
// onnxruntime-node's output buffers stop faulting in fresh pages on every step (native/weft_mem.c,
// src/runtime/malloc.ts), when a C compiler and Node's headers exist; otherwise says so in one line
// and succeeds: glibc's defaults then stay. Runs from the package's "install" script.
import { buildAddon, NODE_HEADER_DIRS, nodeHeaders, which } from './node_headers.mjs';

const cc = ['cc', 'gcc', 'clang'].find(which);
const include = nodeHeaders();
if (!cc || !include) {
  console.log(`weft: ${cc ? `node_api.h (looked in ${NODE_HEADER_DIRS.join(', ')})` : 'a C compiler'} not found, so the allocator settings are not built (glibc's defaults stay)`);
  process.exit(0);
}
try {
  console.log(`weft: built the allocator settings: ${buildAddon(cc, 'weft_mem', include)}`);
} catch (e) {
  console.log(`weft: building the allocator settings failed (${e.message}); glibc's defaults stay`);
}
