/**
 * Native matrix products: the float32 MatMuls and Gemms of a traced graph that a native library
 * (native/weft_blas.c: oneDNN, OpenBLAS) computes faster than onnxruntime's MLAS become
 * `weft.NativeGemm` host ops, so the one schedule (runtime/schedule.ts) cuts the step there, as it
 * cuts at a collective, and runs them on the addon.
 *
 * bf16 mixed precision's products (bfloat16 operands, ir/autocast.ts) are candidates too.
 * onnxruntime has no bfloat16 MatMul on CPU, so it runs them as float32 between casts
 * (runtime/kernel_gaps.ts); the addon can run them in bfloat16 itself (`dnnl_bf16`: oneDNN's AMX or
 * AVX512-BF16 kernels, float32 accumulation) or in float32. onnxruntime-node has no bfloat16
 * tensors either, so such a product crosses the cut as float32 (the operands widened, exactly, in
 * the program that computes them) and its float32 result is rounded to bfloat16 in the program
 * that reads it: the arithmetic of onnxruntime's path, up to the order of accumulation.
 *
 * Chosen per shape by measurement, not by guess: the first time a product of a given shape (and
 * thread count) is seen, a child process times it inside an onnxruntime program (no output copy:
 * inside a step a product's output stays in onnxruntime) and on each library (a fresh output array
 * included, as the kernel allocates one), taking turns, the fastest of several runs each, and so
 * what the cut adds: a program
 * boundary and the exit of each operand a program computes (onnxruntime-node hands outputs over as
 * fresh arrays, whose first touch costs page faults; on the 2-core VMs here an 8 MB output costs
 * 0.5-3 ms, several times its copy). A library takes the product when its time plus the cut's is at
 * least `MARGIN` below MLAS's, and MLAS's is at least `MIN_MLAS_MS` (smaller products stay: their
 * probes' noise would decide, and choices must repeat from process to process). The choices
 * are kept for the process and in a file per machine, thread count and library build
 * ($WEFT_CACHE_DIR, default ~/.cache/weft), so every later process on the machine makes the same
 * ones (results of float32 products differ in rounding between libraries; resumed runs must repeat
 * the same arithmetic).
 *
 * Only with WEFT_NATIVE_PRODUCTS=auto (measured choices) or =all (every product the addon can run,
 * on the fastest library, whatever MLAS does: the tests' way to run every native path against
 * onnxruntime's). Otherwise, or where the addon is absent (not built, or WEFT_BLAS=0), nothing is
 * rewritten: every product runs inside onnxruntime, the graph as traced.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as b from '../ir/build.js';
import type { TypedArray } from '../ir/dtype.js';
import { topoNodes, Value } from '../ir/graph.js';
import type { Node } from '../ir/graph.js';
import { apply } from '../ir/registry.js';
import { rewrite, lowerComposites } from '../ir/rewrite.js';
import { fmt, isStatic, numel } from '../ir/shape.js';
import { blas, BLAS_LIBS } from './blas.js';
import type { Blas, BlasLib } from './blas.js';
import { cpuInfo } from './cpu.js';
import { programModel, settings } from './executor.js';
import { createSession } from './ort.js';

/** A library must be at least this much faster than MLAS (time ratio), the cut's cost included, to take a product. */
export const MARGIN = 1.1;
/** A cut's fixed cost: one more onnxruntime run (~15 us) and its feeds. */
export const CUT_MS = 0.03;
/** Products MLAS runs in less than this stay there: below it a probe's noise (~0.05 ms) is as large as any saving. */
export const MIN_MLAS_MS = 0.25;
/** The measurement's version, part of the choices file's name: a changed rule measures again. */
const RULE_VERSION = 4;

/** One product's geometry: C[batch][m, n] = op(A) op(B) (+ bias), row-major. */
export interface ProductShape { batch: number; m: number; n: number; k: number; transA: boolean; transB: boolean; sharedA: boolean; sharedB: boolean; bias: 'none' | 'row' | 'matrix' }

/** A product's operand dtype: float32, or bfloat16 (bf16 mixed precision's, which `dnnl_bf16` may also run). */
export type ProductDtype = 'float32' | 'bfloat16';

/** A choice: the library (null: onnxruntime) and what was measured, in milliseconds. */
export interface ProductChoice { lib: BlasLib | null; mlasMs: number; cutMs: number; nativeMs: Record<string, number> }

/**
 * Whether a product of `dtype` may run on bfloat16 operands: bf16 mixed precision's (exact: they
 * hold bfloat16 values), and float32 ones under matmul precision 'medium' (rounded).
 */
const bf16Allowed = (dtype: ProductDtype): boolean => dtype === 'bfloat16' || settings.matmulPrecision === 'medium';

const keyOf = (s: ProductShape, threads: number, computed?: readonly boolean[], dtype: ProductDtype = 'float32'): string =>
  `t${threads}${dtype === 'bfloat16' ? ' bf16' : bf16Allowed(dtype) ? ' medium' : ''} b${s.batch} ${s.m}x${s.n}x${s.k}${s.transA ? ' tA' : ''}${s.transB ? ' tB' : ''}${s.batch > 1 && s.sharedA ? ' sA' : ''}${s.batch > 1 && s.sharedB ? ' sB' : ''}${s.bias !== 'none' ? ` +${s.bias}` : ''}${computed ? ` ${computed.map((x) => (x ? 'c' : 'p')).join('')}` : ''}`;

/**
 * WEFT_NATIVE_PRODUCTS: 'auto' by measurement, 'all' every product the addon can run, unset or '0'
 * none. Off by default: on the machines measured so far no step ran faster with its products
 * native (README, "Native matrix products"), and a measurement made under load can choose
 * differently from one process to the next, which changes float32 rounding between runs that
 * should repeat each other.
 */
const mode = (): 'off' | 'all' | 'measured' => {
  const m = process.env['WEFT_NATIVE_PRODUCTS'];
  // Matmul precision 'medium' asks for the bfloat16 kernels where they are faster: measured choices.
  if (m === undefined || m === '') return settings.matmulPrecision === 'medium' ? 'measured' : 'off';
  if (m === '0' || m === 'off') return 'off';
  if (m === 'auto') return 'measured';
  if (m === 'all') return 'all';
  throw new Error(`WEFT_NATIVE_PRODUCTS must be auto, all or 0, got '${m}'`);
};
const enabled = (): Blas | null => (mode() === 'off' ? null : blas());

let memo: Map<string, ProductChoice> | null = null;
/** Forgets this process's choices (tests: the next product reads the file again). */
export function forgetChoices(): void { memo = null; }
function cacheFile(lib: Blas): string {
  const dir = process.env['WEFT_CACHE_DIR'] ?? join(homedir(), '.cache', 'weft');
  const cpu = cpuInfo();
  const id = `v${RULE_VERSION} ${cpu.model} ${cpu.isa} ${JSON.stringify(lib.info())}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return join(dir, `products-${(h >>> 0).toString(36)}.json`);
}
function choices(lib: Blas): Map<string, ProductChoice> {
  if (memo) return memo;
  memo = new Map();
  try {
    const f = cacheFile(lib);
    if (existsSync(f)) for (const [k, v] of Object.entries(JSON.parse(readFileSync(f, 'utf8')) as Record<string, ProductChoice>)) memo.set(k, v);
  } catch { /* an unreadable cache is measured again */ }
  return memo;
}
/**
 * Adds new choices to the machine's file, keeping any another process wrote first (theirs win), and
 * returns the file's choices for those keys. Writes are atomic renames; a concurrent writer can
 * drop an entry, so the file is read back and merged again until it holds every key (or gives up:
 * a read-only home keeps the choices for this process only).
 */
function persist(lib: Blas, fresh: ReadonlyMap<string, ProductChoice>): Map<string, ProductChoice> {
  const out = new Map(fresh);
  try {
    const f = cacheFile(lib);
    mkdirSync(join(f, '..'), { recursive: true });
    for (let attempt = 0; attempt < 5; attempt++) {
      let disk: Record<string, ProductChoice> = {};
      try { disk = JSON.parse(readFileSync(f, 'utf8')) as Record<string, ProductChoice>; } catch { /* none yet */ }
      if ([...fresh.keys()].every((k) => disk[k])) {
        for (const k of fresh.keys()) out.set(k, disk[k]!);
        return out;
      }
      for (const [k, v] of fresh) disk[k] ??= v;
      const tmp = `${f}.${process.pid}.${Math.random().toString(36).slice(2)}`;
      writeFileSync(tmp, JSON.stringify(disk, null, 1));
      renameSync(tmp, f);
    }
  } catch { /* unwritable: this process's choices */ }
  return out;
}

/**
 * Times several calls side by side: each warmed twice, then `reps` rounds calling each in turn,
 * the minimum per call (interference from other work on the machine only ever adds time, and
 * taking turns exposes every call to the same), in milliseconds.
 */
async function timeAll(fs: readonly (() => unknown)[], reps = 9): Promise<number[]> {
  for (const f of fs) for (let i = 0; i < 2; i++) await f();
  const best = fs.map(() => Infinity);
  for (let r = 0; r < reps; r++) {
    for (const [i, f] of fs.entries()) { const t0 = performance.now(); await f(); best[i] = Math.min(best[i]!, performance.now() - t0); }
  }
  return best;
}

/**
 * A probe program on its leaves' data, outside the compile cache (released after measuring, so it
 * leaves no session and no arena behind).
 */
async function probe(outputs: readonly Value[], leaves: readonly Value[]): Promise<{ run: () => Promise<unknown>; release: () => Promise<void> }> {
  const m = programModel(outputs, leaves);
  const session = await createSession(m.model, m.options);
  const feeds = leaves.map((v) => ({ dtype: v.dtype, shape: v.shape as number[], data: v.data! }));
  return { run: () => session.run(feeds), release: () => session.release() };
}

const filled = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);

/** Runs a product on the addon into a fresh array (the kernel's work, also what is timed). */
function runNative(lib: Blas, which: BlasLib, s: ProductShape, a: Float32Array, bm: Float32Array, c: Float32Array | null, threads: number): Float32Array {
  const out = new Float32Array(s.batch * s.m * s.n);
  let beta = 0;
  if (c !== null) {
    beta = 1;
    if (s.bias === 'row') for (let r = 0; r < s.batch * s.m; r++) out.set(c, r * s.n);
    else for (let i = 0; i < s.batch; i++) out.set(c, i * s.m * s.n);
  }
  lib.gemm(which, a, bm, out, s.batch, s.m, s.n, s.k, s.transA, s.transB, s.sharedA ? 0 : s.m * s.k, s.sharedB ? 0 : s.k * s.n, s.m * s.n, beta, threads);
  return out;
}

/** The first element of `v`, flattened: a program's output that costs no copy, so the program times what it computes. */
const firstOf = (v: Value): Value => b.slice(b.reshape(v, [-1]), [0], [1], [0]);

/**
 * What it costs a step to take `bytes` of an activation out of a program (to feed a native
 * product): onnxruntime-node hands every output over as a fresh array, so the difference between a
 * program that returns the whole tensor and one that returns one element of it. Measured once per size.
 */
const exitCost = new Map<number, number>();
async function exitMs(bytes: number): Promise<number> {
  const known = exitCost.get(bytes);
  if (known !== undefined) return known;
  const x = new Value('float32', [bytes / 4], null, 0, filled(bytes / 4));
  const y = b.add(x, b.scalar(1));
  const [whole, one] = [await probe([y], [x]), await probe([firstOf(y)], [x])];
  const [w, o] = await timeAll([whole.run, one.run]);
  await whole.release();
  await one.release();
  exitCost.set(bytes, Math.max(0, w! - o!));
  return exitCost.get(bytes)!;
}

/** A product to measure: how the traced graph computes it, its geometry, and which operands a program computes. */
export interface ProbeRequest {
  key: string; op: 'Gemm' | 'MatMul'; shape: ProductShape; leafShapes: number[][]; computed: boolean[]; dtype: ProductDtype;
  /** Whether the bfloat16 kernels may run it (`bf16Allowed` where it was asked: the measuring process has its own settings). */
  bf16: boolean;
}

/** The libraries that may run a product (`bf16`: the bfloat16 kernels too). */
const libsFor = (lib: Blas, bf16: boolean): [string, BlasLib][] =>
  Object.entries(BLAS_LIBS).filter(([, which]) => lib.has(which) && (which !== BLAS_LIBS.dnnl_bf16 || bf16));

/** The product as onnxruntime runs it in the traced graph, on `l` (a Gemm with its flags; a MatMul with its transposes). */
function mlasForm(r: ProbeRequest, l: readonly Value[]): Value {
  const [tA, tB] = [r.shape.transA, r.shape.transB];
  return r.op === 'Gemm' ? b.gemm(l[0]!, l[1]!, l[2] ?? null, { transA: tA, transB: tB })
    : b.matmul(tA ? b.transposeLast2(l[0]!) : l[0]!, tB ? b.transposeLast2(l[1]!) : l[1]!);
}

/**
 * Measures a product where the step would run it: inside a program (MLAS: the node as traced on
 * fresh leaves, returning one element, less the same program without the product: a run's fixed
 * cost), and on each library (a fresh output array included, as the kernel allocates one), plus
 * what the cut adds, the exit of each operand a program computes (activations; parameters and fed
 * data cross for free).
 */
async function measure(lib: Blas, r: ProbeRequest, threads: number): Promise<ProductChoice> {
  const s = r.shape;
  const leaves = r.leafShapes.map((sh) => new Value('float32', sh, null, 0, filled(numel(sh))));
  let cutMs = CUT_MS;
  for (const [i, sh] of r.leafShapes.entries()) if (r.computed[i]) cutMs += await exitMs(numel(sh) * 4);
  const [a, bm, c] = leaves.map((v) => v.data as Float32Array);
  const libs = libsFor(lib, r.bf16);
  const product = await probe([firstOf(mlasForm(r, leaves))], leaves);
  const base = await probe([b.add(firstOf(leaves[0]!), firstOf(leaves[1]!))], leaves);
  const times = await timeAll([product.run, base.run, ...libs.map(([, which]) => () => runNative(lib, which, s, a!, bm!, c ?? null, threads))]);
  await product.release();
  await base.release();
  const mlasMs = Math.max(0, times[0]! - times[1]!);
  const nativeMs: Record<string, number> = {};
  let best: BlasLib | null = null;
  let bestMs = Infinity;
  libs.forEach(([name, which], i) => {
    const ms = times[2 + i]!;
    nativeMs[name] = +ms.toFixed(4);
    if (ms < bestMs) { bestMs = ms; best = which; }
  });
  const wins = best !== null && mlasMs >= MIN_MLAS_MS && (bestMs + cutMs) * MARGIN <= mlasMs;
  return { lib: wins ? best : null, mlasMs: +mlasMs.toFixed(4), cutMs: +cutMs.toFixed(4), nativeMs };
}

/**
 * Measures `requests` in this process and records them in the machine's file (the probe child's
 * work, runtime/product_probe.ts), returning the file's choices for them.
 */
export async function runProbes(requests: readonly ProbeRequest[], threads: number): Promise<Record<string, ProductChoice>> {
  const lib = blas();
  if (lib === null) throw new Error('native products probe: the addon is not loaded');
  const fresh = new Map<string, ProductChoice>();
  for (const r of requests) fresh.set(r.key, await measure(lib, r, threads));
  return Object.fromEntries(persist(lib, fresh));
}

/**
 * Measures in a child process: its allocations, sessions and page faults stay out of this process
 * (a run's peak RSS is its step's), and its timings out of this process's heap state.
 */
function probeInChild(requests: readonly ProbeRequest[], threads: number): Promise<Record<string, ProductChoice>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./product_probe.js', import.meta.url))], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env } });
    let [out, err] = ['', ''];
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`native products: the measuring process exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      else resolve(JSON.parse(out) as Record<string, ProductChoice>);
    });
    child.stdin.end(JSON.stringify({ threads, requests }));
  });
}

/**
 * The library that measured fastest for a product (OpenBLAS where nothing was measured); for a
 * bfloat16 product, `dnnl_bf16` where the addon has it (WEFT_NATIVE_PRODUCTS=all runs every native
 * path, and that is bf16's own).
 */
function fastest(lib: Blas, c: ProductChoice, dtype: ProductDtype): BlasLib {
  if (bf16Allowed(dtype) && lib.has(BLAS_LIBS.dnnl_bf16)) return BLAS_LIBS.dnnl_bf16;
  const ms = Object.entries(c.nativeMs).sort((p, q) => p[1] - q[1])[0];
  return ms ? BLAS_LIBS[ms[0] as keyof typeof BLAS_LIBS] : lib.has(BLAS_LIBS.dnnl) ? BLAS_LIBS.dnnl : BLAS_LIBS.openblas;
}

/** A last-two-dims transpose (perm [..., r-1, r-2]) feeding a product folds into its trans flag. */
function swapsLast2(v: Value): Value | null {
  const n = v.node;
  if (!n || n.op !== 'Transpose') return null;
  const perm = n.attrs['perm'] as number[] | undefined;
  const r = v.shape.length;
  if (!perm || r < 2) return null;
  return perm.every((p, i) => p === (i === r - 2 ? r - 1 : i === r - 1 ? r - 2 : i)) ? n.inputs[0]! : null;
}

interface Candidate { node: Node; shape: ProductShape; a: Value; b: Value; c: Value | null; leafShapes: number[][]; computed: boolean[]; dtype: ProductDtype }

/** The product a node computes, when it is one the addon can run: float32 or bfloat16, static shapes. */
function candidate(n: Node, inputs: readonly (Value | null)[]): Candidate | null {
  if (n.op !== 'MatMul' && n.op !== 'Gemm') return null;
  const y = n.outputs[0]!;
  const dtype = y.dtype;
  if ((dtype !== 'float32' && dtype !== 'bfloat16') || !isStatic(y.shape) || inputs.some((v) => v !== null && (!isStatic(v.shape) || v.dtype !== dtype))) return null;
  let [A, B] = [inputs[0]!, inputs[1]!];
  let [tA, tB] = [false, false];
  let C: Value | null = null;
  if (n.op === 'Gemm') {
    if ((n.attrs['alpha'] ?? 1) !== 1) return null;
    tA = n.attrs['transA'] === 1;
    tB = n.attrs['transB'] === 1;
    C = inputs[2] ?? null;
    if (C && (n.attrs['beta'] ?? 1) !== 1) return null;
  } else {
    if (A.shape.length < 2 || B.shape.length < 2) return null;
    const [a0, b0] = [swapsLast2(A), swapsLast2(B)];
    if (a0) { A = a0; tA = true; }
    if (b0) { B = b0; tB = true; }
  }
  const [sa, sb] = [A.shape as number[], B.shape as number[]];
  const [ba, bb] = [sa.slice(0, -2), sb.slice(0, -2)];
  if (ba.length > 0 && bb.length > 0 && fmt(ba) !== fmt(bb)) return null; // broadcasting batch dims: left to onnxruntime
  const [m, k] = tA ? [sa.at(-1)!, sa.at(-2)!] : [sa.at(-2)!, sa.at(-1)!];
  const nn = tB ? sb.at(-2)! : sb.at(-1)!;
  const batch = numel(ba.length > 0 ? ba : bb);
  // A shared B under a batch of A is one product of (batch m) rows, when A is not transposed.
  const flatten = ba.length > 0 && bb.length === 0 && !tA;
  const shape: ProductShape = {
    batch: flatten ? 1 : batch, m: flatten ? batch * m : m, n: nn, k, transA: tA, transB: tB,
    sharedA: ba.length === 0 && bb.length > 0, sharedB: bb.length === 0 && ba.length > 0 && !flatten, bias: 'none',
  };
  if (C) {
    const cs = C.shape as number[];
    if (cs.length === 1 || (cs.length === 2 && cs[0] === 1 && shape.batch === 1)) shape.bias = 'row';
    else if (cs.length === 2 && cs[0] === m && cs[1] === nn && shape.batch === 1 && !flatten) shape.bias = 'matrix';
    else return null;
    if (cs.at(-1) !== nn) return null;
  }
  const leafShapes = [sa, sb, ...(C ? [C.shape as number[]] : [])];
  const computed = [A, B, ...(C ? [C] : [])].map((v) => v.node !== null);
  return { node: n, shape, a: A, b: B, c: C, leafShapes, computed, dtype };
}

/**
 * The graph under `outputs` with every product the addon runs faster as `weft.NativeGemm` (the
 * others as they were), measuring the shapes not yet measured. Returns `outputs` itself when the
 * addon is absent or nothing was taken out. Composites are lowered first, so products inside
 * them are seen.
 */
export async function takeOutProducts(outputs: readonly Value[]): Promise<readonly Value[]> {
  const lib = enabled();
  if (lib === null) return outputs;
  const threads = settings.threads;
  const lowered = lowerComposites(outputs);
  const known = choices(lib);
  const found: [Node, Candidate, string][] = [];
  const missing = new Map<string, ProbeRequest>();
  for (const n of topoNodes(lowered)) {
    const c = candidate(n, n.inputs);
    if (!c) continue;
    const key = keyOf(c.shape, threads, c.computed, c.dtype);
    found.push([n, c, key]);
    if (!known.has(key)) missing.set(key, { key, op: n.op as 'Gemm' | 'MatMul', shape: c.shape, leafShapes: c.leafShapes, computed: c.computed, dtype: c.dtype, bf16: bf16Allowed(c.dtype) });
  }
  if (missing.size > 0) for (const [k, v] of Object.entries(await probeInChild([...missing.values()], threads))) known.set(k, v);
  const picks = new Map<Node, ProductChoice>();
  for (const [n, c, key] of found) {
    const choice = known.get(key)!;
    if (mode() === 'all') picks.set(n, { ...choice, lib: fastest(lib, choice, c.dtype) });
    else if (choice.lib !== null) picks.set(n, choice);
  }
  if (picks.size === 0) return outputs;
  return rewrite(lowered, (n, inputs) => {
    const choice = picks.get(n);
    if (!choice) return null;
    const c = candidate(n, inputs)!;
    // bfloat16 operands cross the cut widened (exact); the result is rounded back where it is read.
    const f32 = (v: Value): Value => (c.dtype === 'float32' ? v : b.cast(v, 'float32'));
    // The kernel reads its geometry back from the node: shared and flattened operands as reshapes.
    const a = c.shape.batch === 1 && c.a.shape.length > 2 ? b.reshape(f32(c.a), [c.shape.transA ? c.shape.k : c.shape.m, c.shape.transA ? c.shape.m : c.shape.k]) : f32(c.a);
    const y = apply('weft.NativeGemm', c.c ? [a, f32(c.b), f32(c.c)] : [a, f32(c.b)], { transA: c.shape.transA ? 1 : 0, transB: c.shape.transB ? 1 : 0, lib: choice.lib! }, 1)[0]!;
    const shaped = fmt(y.shape) === fmt(n.outputs[0]!.shape) ? y : b.reshape(y, n.outputs[0]!.shape as number[]);
    return [c.dtype === 'float32' ? shaped : b.cast(shaped, c.dtype)];
  });
}

/**
 * `takeOutProducts` over target groups (a schedule's, runtime/schedule.ts): the rewritten outputs,
 * and the groups made of them in the same order.
 */
export async function takeOutGrouped(outputs: readonly Value[], groups?: readonly (readonly Value[])[]): Promise<{ outputs: readonly Value[]; groups?: readonly (readonly Value[])[] }> {
  const flat = groups ? groups.flat() : outputs;
  const taken = await takeOutProducts(flat);
  if (taken === flat) return { outputs, ...(groups ? { groups } : {}) };
  let at = 0;
  return { outputs: taken, ...(groups ? { groups: groups.map((g) => taken.slice(at, (at += g.length))) } : {}) };
}

/** Native products run in this process (thread) so far, and their milliseconds. */
export const nativeStats = { calls: 0, ms: 0 };

/** The kernel of `weft.NativeGemm` (registered by runtime/schedule.ts). */
export function nativeGemmKernel(n: Node, inputs: readonly TypedArray[]): Promise<TypedArray[]> {
  const lib = blas();
  if (lib === null) throw new Error('weft.NativeGemm: the native matrix products addon is not loaded (build it with node scripts/build_blas.mjs)');
  const [A, B, C] = [n.inputs[0]!.shape as number[], n.inputs[1]!.shape as number[], n.inputs[2]?.shape as number[] | undefined];
  const [tA, tB] = [n.attrs['transA'] === 1, n.attrs['transB'] === 1];
  const [ba, bb] = [A.slice(0, -2), B.slice(0, -2)];
  const [m, k] = tA ? [A.at(-1)!, A.at(-2)!] : [A.at(-2)!, A.at(-1)!];
  const s: ProductShape = {
    batch: numel(ba.length > 0 ? ba : bb), m, n: tB ? B.at(-2)! : B.at(-1)!, k, transA: tA, transB: tB,
    sharedA: ba.length === 0, sharedB: bb.length === 0, bias: C === undefined ? 'none' : C.length === 1 || C[0] === 1 ? 'row' : 'matrix',
  };
  const t0 = performance.now();
  const y = runNative(lib, n.attrs['lib'] as BlasLib, s, inputs[0] as Float32Array, inputs[1] as Float32Array, (inputs[2] as Float32Array | undefined) ?? null, settings.threads);
  nativeStats.calls++;
  nativeStats.ms += performance.now() - t0;
  return Promise.resolve([y]);
}
