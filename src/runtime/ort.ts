/**
 * The one file that talks to onnxruntime-node. Everything else sees typed arrays and this API.
 * Facts that shape it (onnxruntime-node 1.30): inputs are zero-copy (a subarray view works), a
 * SharedArrayBuffer is rejected, outputs are fresh buffers, and `run` blocks its thread.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import type { DType, TypedArray } from '../ir/dtype.js';

export interface SessionOptions {
  threads: number;
  /** onnxruntime graph optimizers to turn off (runtime/kernel_gaps.ts decides which). */
  disabledOptimizers: readonly string[];
  /**
   * Keep onnxruntime's CPU arena (default): a session keeps the chunks its first run allocated and
   * every later run reuses them. Off, intermediates are freed after each run: a schedule of many
   * small programs (ZeRO stage 3, one or two per layer) then holds one program's intermediates at a
   * time instead of every program's (a 12-block d768 GPT under ZeRO 3 on 2 MPI ranks: peak RSS per
   * rank 2,111 MiB with arenas, 1,586 MiB without, and the 3 steps took 31.7 s and 29.1 s).
   */
  arena?: boolean;
}

export interface Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: readonly Feed[]): Promise<TypedArray[]>;
  release(): Promise<void>;
}

export interface Feed { dtype: DType; shape: readonly number[]; data: TypedArray }

/** The options every session is created with (the estimate's optimized models use the same). */
function ortOptions(opts: SessionOptions): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // onnxruntime's memory pattern (one planned block for every intermediate, allocated from the
    // second run on) cannot reuse the first run's arena chunks, so every session held its
    // intermediates twice: the small GPT's step at batch 64 peaked at 2,001 MB RSS with it and
    // 1,092 MB without, at the same step time (batch 16: 620 and 391 MB). Without it each tensor
    // comes from the arena as it is made, and the first run's chunks serve every later run.
    enableMemPattern: false,
    ...(opts.arena === false ? { enableCpuMemArena: false } : {}),
    graphOptimizationLevel: 'all',
    extra: { optimization: { disable_specified_optimizers: opts.disabledOptimizers.join(';') } },
  };
}

export async function createSession(model: Uint8Array, opts: SessionOptions): Promise<Session> {
  const s = await ort.InferenceSession.create(model, {
    ...ortOptions(opts),
    // WEFT_ORT_PROFILE=<prefix> writes onnxruntime's per-node trace (chrome://tracing JSON; 1.30's
    // node events carry the arena's bytes in use and its peak after each node).
    ...(process.env['WEFT_ORT_PROFILE'] ? { enableProfiling: true, profileFilePrefix: process.env['WEFT_ORT_PROFILE'] } : {}),
  });
  if (process.env['WEFT_ORT_PROFILE']) profiled(s);
  return {
    inputNames: s.inputNames,
    outputNames: s.outputNames,
    async run(feeds) {
      const f: Record<string, ort.Tensor> = {};
      feeds.forEach((x, i) => { f[s.inputNames[i]!] = toOrt(x); });
      const out = await s.run(f);
      return s.outputNames.map((n) => out[n]!.data as TypedArray);
    },
    release: () => s.release(),
  };
}

/**
 * The model as onnxruntime will run it: a session is created with the same options as
 * `createSession` and `optimizedModelFilePath`, released without running, and the saved ONNX
 * returned (nodes in execution order, after fusions and constant folding; runtime/ort_graph.ts
 * reads it). Costs one session creation: the small GPT's step, about 0.3 s.
 */
export async function optimizedModel(model: Uint8Array, opts: SessionOptions): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-ort-'));
  try {
    const path = join(dir, 'optimized.onnx');
    // onnxruntime warns that an 'all'-level model may hold hardware-specific ops; that is the point.
    const s = await ort.InferenceSession.create(model, { ...ortOptions(opts), optimizedModelFilePath: path, logSeverityLevel: 3 });
    await s.release();
    return new Uint8Array(readFileSync(path));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A tensor with its dims, as an inference session takes and returns them. */
export interface Named { dtype: DType; dims: readonly number[]; data: TypedArray }

export interface InferenceOptions {
  threads: number;
  /** onnxruntime's own graph optimization level (default 'all'; 'disabled' runs the graph as written). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
}

/** A session over any ONNX model (deploy/): feeds and results by name, with their dims and dtypes. */
export interface InferenceSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Readonly<Record<string, Named>>, outputs?: readonly string[]): Promise<Record<string, Named>>;
  release(): Promise<void>;
}

/** Opens an ONNX model for inference; onnxruntime's refusal (a corrupt file, an unknown op) is rethrown naming `source`. */
export async function createInferenceSession(model: Uint8Array, opts: InferenceOptions, source = 'model'): Promise<InferenceSession> {
  let s: ort.InferenceSession;
  try {
    s = await ort.InferenceSession.create(model, {
      intraOpNumThreads: opts.threads, interOpNumThreads: 1, executionMode: 'sequential',
      graphOptimizationLevel: opts.optimization ?? 'all', logSeverityLevel: 3,
    });
  } catch (e) {
    throw new Error(`${source}: onnxruntime cannot load it: ${(e as Error).message}`);
  }
  return {
    inputNames: s.inputNames,
    outputNames: s.outputNames,
    async run(feeds, outputs) {
      const f: Record<string, ort.Tensor> = {};
      for (const [k, x] of Object.entries(feeds)) f[k] = toOrt({ dtype: x.dtype, shape: x.dims, data: x.data });
      const out = outputs === undefined ? await s.run(f) : await s.run(f, outputs as string[]);
      const r: Record<string, Named> = {};
      for (const [k, t] of Object.entries(out)) r[k] = { dtype: t.type as DType, dims: t.dims, data: t.data as TypedArray };
      return r;
    },
    release: () => s.release(),
  };
}

const toFlush: ort.InferenceSession[] = [];
/** onnxruntime writes a session's trace when profiling ends: end every profiled session at exit. */
function profiled(s: ort.InferenceSession): void {
  if (toFlush.push(s) === 1) process.once('beforeExit', () => { for (const x of toFlush) x.endProfiling(); });
}

function toOrt(x: Feed): ort.Tensor {
  if (x.dtype === 'bfloat16') throw new Error('onnxruntime-node has no bfloat16 tensors; cast to float32 in the graph');
  if (x.data.buffer instanceof SharedArrayBuffer) throw new Error('onnxruntime-node rejects SharedArrayBuffer-backed tensors; copy into an ArrayBuffer');
  return new ort.Tensor(x.dtype as ort.Tensor.Type, x.data as ort.Tensor.DataType, x.shape as number[]);
}
