/**
 * Inference latency and throughput of ONNX models (`weft bench-infer`): every model is opened once
 * per thread count, fed seeded random inputs shaped from its declared inputs (a symbolic dim named
 * like a batch takes the batch size; others take `dims`), and run in alternating blocks, model
 * after model, so drift on a shared machine falls on all alike. Latency is per run (p50 / p99 of
 * the timed runs); throughput is batch / latency (and tokens/s where an input has a sequence dim).
 */
import { allocate, dtypeFromOnnx } from '../ir/dtype.js';
import type { DType, TypedArray } from '../ir/dtype.js';
import { decodeModel } from '../ir/onnx/model.js';
import type { OnnxValueInfo } from '../ir/onnx/model.js';
import { cpuInfo } from '../runtime/cpu.js';
import type { CpuInfo } from '../runtime/cpu.js';
import { createInferenceSession } from '../runtime/ort.js';
import type { InferenceSession, Named } from '../runtime/ort.js';
import { Rng } from '../tensor/random.js';
import { readModelFile } from './model_file.js';

export interface BenchInferOptions {
  /** The models, by label (e.g. { fp32: 'model.onnx', int8: 'model.int8.onnx' }); the first is the baseline of the ratios. */
  models: Record<string, string>;
  batches: readonly number[];
  threads: readonly number[];
  /** Sizes of the other symbolic dims, by name (e.g. { seq: 128, past: 0 }); a missing one is an error naming it. */
  dims?: Record<string, number>;
  /** Timed runs per model per block, blocks per configuration, and untimed runs first. */
  runs?: number;
  blocks?: number;
  warmup?: number;
  /** Integer inputs are drawn in [0, intHigh) (token ids: the vocabulary). Default 256. */
  intHigh?: number;
  seed?: number;
  /** The key file of encrypted models (deploy/model_file.ts); default: the environment variable WEFT_MODEL_KEY. */
  keyFile?: string;
}

export interface InferFigure {
  model: string;
  threads: number;
  batch: number;
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
  /** Examples (batch rows) per second at p50. */
  examples_per_s: number;
  /** Tokens per second at p50, where an input has a sequence dim. */
  tokens_per_s?: number;
  /** Throughput over the first model's at the same threads and batch. */
  speedup?: number;
}

export interface BenchInferReport {
  bench: 'infer';
  machine: Pick<CpuInfo, 'model' | 'isa' | 'cores' | 'flags'>;
  models: Record<string, { path: string; bytes: number; nodes: number }>;
  runs: number;
  blocks: number;
  results: InferFigure[];
}

/** Names a symbolic dim takes when it is the batch (a served model's leading dim must be one). */
export const BATCH_NAMES = /^(batch|batch_size|n|N|b|B)$/;
const SEQ_NAMES = /^(seq|sequence|seq_len|sequence_length|T|new|tokens)$/;

/** A symbolic dim's size: the batch, or `dims[name]` (an error naming the dim, the input and the file otherwise). */
function dimSize(d: number | string | null, input: string, file: string, batch: number, dims: Record<string, number>): number {
  if (typeof d === 'number') return d;
  if (d === null) throw new Error(`${file}: input '${input}' has a dim with neither a size nor a name; give the model a shape`);
  if (dims[d] !== undefined) return dims[d]!;
  if (BATCH_NAMES.test(d)) return batch;
  throw new Error(`${file}: input '${input}' has the symbolic dim '${d}'; give its size (--dim ${d}=N)`);
}

function randomFeed(vi: OnnxValueInfo, file: string, batch: number, dims: Record<string, number>, rng: Rng, intHigh: number): Named {
  if (vi.shape === null) throw new Error(`${file}: input '${vi.name}' declares no shape`);
  const dtype: DType = dtypeFromOnnx(vi.elemType, `${file}: input '${vi.name}'`);
  const shape = vi.shape.map((d) => dimSize(d, vi.name, file, batch, dims));
  const n = shape.reduce((p, q) => p * q, 1);
  const data: TypedArray = allocate(dtype, n);
  if (data instanceof BigInt64Array) for (let i = 0; i < n; i++) data[i] = BigInt(Math.floor(rng.uniform() * intHigh));
  else if (data instanceof Float32Array || data instanceof Float64Array) for (let i = 0; i < n; i++) data[i] = rng.normal();
  else for (let i = 0; i < n; i++) data[i] = Math.floor(rng.uniform() * Math.min(intHigh, 128));
  return { dtype, dims: shape, data };
}

/** Tokens a run processes: batch x the size of the first sequence-named dim, if any. */
function tokensPerRun(inputs: readonly OnnxValueInfo[], batch: number, dims: Record<string, number>): number | null {
  for (const vi of inputs) for (const d of vi.shape ?? []) if (typeof d === 'string' && SEQ_NAMES.test(d)) return batch * (dims[d] ?? 0);
  return null;
}

const pct = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

export async function benchInfer(o: BenchInferOptions): Promise<BenchInferReport> {
  const runs = o.runs ?? 20;
  const blocks = o.blocks ?? 3;
  const warmup = o.warmup ?? 3;
  const dims = o.dims ?? {};
  const labels = Object.keys(o.models);
  if (labels.length === 0) throw new Error('benchInfer: no models');
  const files = labels.map((l) => {
    const path = o.models[l]!;
    const bytes = readModelFile(path, { keyFile: o.keyFile });
    const m = decodeModel(bytes, path);
    const inits = new Set(m.graph.initializers.map((t) => t.name));
    return { label: l, path, bytes, inputs: m.graph.inputs.filter((i) => !inits.has(i.name)), nodes: m.graph.nodes.length };
  });
  const results: InferFigure[] = [];
  for (const threads of o.threads) {
    const sessions: InferenceSession[] = [];
    for (const f of files) sessions.push(await createInferenceSession(f.bytes, { threads }, f.path));
    try {
      for (const batch of o.batches) {
        const rng = new Rng(o.seed ?? 0);
        const feeds = files.map((f) => Object.fromEntries(f.inputs.map((vi) => [vi.name, randomFeed(vi, f.path, batch, dims, rng, o.intHigh ?? 256)])));
        const times: number[][] = files.map(() => []);
        for (let k = 0; k < files.length; k++) for (let i = 0; i < warmup; i++) await sessions[k]!.run(feeds[k]!);
        for (let blk = 0; blk < blocks; blk++) {
          for (let k = 0; k < files.length; k++) {
            for (let i = 0; i < runs; i++) {
              const t0 = process.hrtime.bigint();
              await sessions[k]!.run(feeds[k]!);
              times[k]!.push(Number(process.hrtime.bigint() - t0) / 1e6);
            }
          }
        }
        files.forEach((f, k) => {
          const s = [...times[k]!].sort((a, b) => a - b);
          const p50 = +pct(s, 50).toFixed(4); // the throughputs follow from the reported latency
          const tokens = tokensPerRun(f.inputs, batch, dims);
          results.push({
            model: f.label, threads, batch, p50_ms: p50, p99_ms: +pct(s, 99).toFixed(4),
            mean_ms: +(s.reduce((a, b) => a + b, 0) / s.length).toFixed(3), examples_per_s: +((batch * 1000) / p50).toFixed(1),
            ...(tokens !== null ? { tokens_per_s: +((tokens * 1000) / p50).toFixed(1) } : {}),
          });
        });
        const base = results.find((r) => r.model === labels[0] && r.threads === threads && r.batch === batch)!;
        for (const r of results) if (r.threads === threads && r.batch === batch) r.speedup = +(base.p50_ms / r.p50_ms).toFixed(3);
      }
    } finally {
      for (const s of sessions) await s.release();
    }
  }
  const c = cpuInfo();
  return {
    bench: 'infer', machine: { model: c.model, isa: c.isa, cores: c.cores, flags: c.flags },
    models: Object.fromEntries(files.map((f) => [f.label, { path: f.path, bytes: f.bytes.length, nodes: f.nodes }])),
    runs: runs * blocks, blocks, results,
  };
}
