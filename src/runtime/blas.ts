/**
 * The native matrix-product addon (native/weft_blas.c, built by scripts/build_blas.mjs at npm ci
 * where OpenBLAS's headers and a compiler exist). `blas()` is null where it was not built, or
 * where WEFT_BLAS=0: everything then runs inside onnxruntime, as it always can.
 */
import { createRequire } from 'node:module';
import { addonPath } from './addon.js';

/**
 * The libraries the addon may hold: OpenBLAS is always compiled in, oneDNN where it was found;
 * `dnnl_bf16` is oneDNN's matmul on operands rounded to bfloat16 (float32 accumulation), for the
 * products of bf16 mixed precision only, present where oneDNN has a bfloat16 kernel for the CPU.
 */
export const BLAS_LIBS = { openblas: 0, dnnl: 1, dnnl_bf16: 2 } as const;
export type BlasLib = (typeof BLAS_LIBS)[keyof typeof BLAS_LIBS];

interface Native {
  gemm(lib: number, a: Float32Array, b: Float32Array, c: Float32Array, batch: number, m: number, n: number, k: number,
    transA: number, transB: number, strideA: number, strideB: number, strideC: number, beta: number, threads: number): void;
  info(): { openblas?: string; dnnl?: string; dnnl_bf16?: string };
}

export interface Blas {
  /** For i < batch: C_i = op(A_i) op(B_i) + beta C_i, row-major float32, on `threads` threads; a stride of 0 broadcasts one matrix. */
  gemm(lib: BlasLib, a: Float32Array, b: Float32Array, c: Float32Array, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, strideA: number, strideB: number, strideC: number, beta: number, threads: number): void;
  has(lib: BlasLib): boolean;
  /** The libraries compiled in: OpenBLAS's build string, oneDNN's version, the kernel oneDNN picks for bfloat16 (its ISA). */
  info(): { openblas?: string; dnnl?: string; dnnl_bf16?: string };
}

let cached: Blas | null | undefined;

/** The addon, or null where it is absent (not built, or WEFT_BLAS=0). A built addon that fails to load throws, naming its path. */
export function blas(): Blas | null {
  if (cached !== undefined) return cached;
  const path = process.env['WEFT_BLAS'] === '0' ? null : addonPath('weft_blas.node', 'WEFT_BLAS_BINDING');
  if (!path) return (cached = null);
  // oneDNN's OpenMP threads spin after each product by default, and here onnxruntime's own pool
  // runs between products: the spinning took its cores (small GPT, 2 threads, matmul precision
  // medium: 1,610 tokens/s spinning, 2,106 passive). libgomp reads this when the addon loads it.
  process.env['OMP_WAIT_POLICY'] ??= 'PASSIVE';
  let native: Native;
  try {
    native = createRequire(import.meta.url)(path) as Native;
  } catch (e) {
    throw new Error(`the native matrix products at ${path} do not load (${(e as Error).message}); rebuild them with node scripts/build_blas.mjs, or set WEFT_BLAS=0`);
  }
  const libs = native.info();
  cached = {
    gemm: (lib, a, b, c, batch, m, n, k, ta, tb, sa, sb, sc, beta, threads) => native.gemm(lib, a, b, c, batch, m, n, k, ta ? 1 : 0, tb ? 1 : 0, sa, sb, sc, beta, threads),
    has: (lib) => (lib === BLAS_LIBS.openblas ? libs.openblas !== undefined : lib === BLAS_LIBS.dnnl ? libs.dnnl !== undefined : libs.dnnl_bf16 !== undefined),
    info: () => libs,
  };
  return cached;
}
