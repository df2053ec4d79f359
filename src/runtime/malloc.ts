/**
 * The C allocator's thresholds (native/weft_mem.c, built at npm ci where a C compiler is).
 *
 * onnxruntime-node returns every output of a program in a fresh ArrayBuffer (V8 allocates it with
 * glibc's calloc), and glibc maps each buffer past its mmap threshold (dynamic, at most 32 MiB)
 * afresh and unmaps it when the buffer is collected; freed heap past the trim threshold goes back
 * to the OS too. A step moving hundreds of MB between programs (DDP's bucketed backward: 498 MB
 * of activations cross its cuts on the medium GPT) then faults in every page of them on every
 * step. With both thresholds raised, large buffers come from the heap and their pages stay mapped
 * for the next step, as a caching allocator (PyTorch's) keeps its blocks: the memory a step freed
 * stays with the process instead of going back to the OS.
 *
 * `tuneAllocator()` runs once, before the first onnxruntime session (ort.ts). WEFT_MALLOC=0 leaves
 * glibc's defaults; so does a machine without the addon or without glibc.
 */
import { createRequire } from 'node:module';
import { addonPath } from './addon.js';

/** mmap only buffers past 1 GiB; never trim the heap's top (mallopt's largest value). */
export const ALLOCATOR_SETTINGS = { mmapThreshold: 2 ** 30, trimThreshold: 2 ** 31 - 1 } as const;

interface Native {
  tune(mmapThreshold: number, trimThreshold: number): [number | null, number | null];
  stats(): { arena: number; mmapped: number; free: number } | null;
}

export interface AllocatorState {
  /** 'tuned': both thresholds applied; 'default': glibc's own (why in `reason`). */
  mode: 'tuned' | 'default';
  reason?: string;
}

let state: AllocatorState | undefined;
let native: Native | null = null;

/** Applies ALLOCATOR_SETTINGS once per process (later calls return the first answer). */
export function tuneAllocator(): AllocatorState {
  if (state) return state;
  if (process.env['WEFT_MALLOC'] === '0') return (state = { mode: 'default', reason: 'WEFT_MALLOC=0' });
  const path = addonPath('weft_mem.node', 'WEFT_MEM_BINDING');
  if (!path) return (state = { mode: 'default', reason: 'native/build/weft_mem.node is not built (no C compiler at npm ci)' });
  try {
    native = createRequire(import.meta.url)(path) as Native;
  } catch (e) {
    throw new Error(`the allocator settings at ${path} do not load (${(e as Error).message}); rebuild them with node scripts/build_mem.mjs, or set WEFT_MALLOC=0`);
  }
  const [a, b] = native.tune(ALLOCATOR_SETTINGS.mmapThreshold, ALLOCATOR_SETTINGS.trimThreshold);
  if (a === null) return (state = { mode: 'default', reason: 'not glibc' });
  if (a !== 1 || b !== 1) return (state = { mode: 'default', reason: `mallopt refused ${a !== 1 ? 'M_MMAP_THRESHOLD' : 'M_TRIM_THRESHOLD'}` });
  return (state = { mode: 'tuned' });
}

/** glibc's heap bytes, bytes in mmapped blocks and free bytes it holds; null without the addon or glibc. */
export function allocatorStats(): { arena: number; mmapped: number; free: number } | null {
  return native?.stats() ?? null;
}
