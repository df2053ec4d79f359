/**
 * A parameter server's shard checkpoint as one safetensors file (train/safetensors.ts). For each
 * table, by its integer id t:
 *
 *   "t.keys"        I32 [n]       row keys, ascending as exportRows gives them
 *   "t.values"      F32 [n, dim]
 *   "t.versions"    I32 [n]
 *   "t.state.NAME"  F32 [n, dim] or I32 [n]: the optimizer's state (parallel/ps/store.ts PS_STATE:
 *                   none for sgd; accum for adagrad; m, v, steps for adam), which also names the
 *                   optimizer: no separate field can disagree with the arrays
 *
 * The files are layout-free: each server writes the rows it holds, and a job restarted on any
 * number of servers reads every file and keeps the keys its new ring gives it:
 *
 *   for (const f of files) for (const blob of decodeShard(read(f), f).blobs)
 *     store.importRows(blob, (k) => ring.owner(rowKey(blob.table, k)) === me);
 *
 * This lives in train rather than next to the store because safetensors.ts is train's, and
 * parallel may not import train (test/layers.test.ts); train may import parallel.
 */
import { PS_STATE } from '../parallel/ps/store.js';
import type { PsOptimizerKind, RowsBlob } from '../parallel/ps/store.js';
import { CheckpointError, decodeSafetensors, encodeSafetensors } from './safetensors.js';
import type { SafeTensor, TensorIn } from './safetensors.js';

const KINDS = Object.keys(PS_STATE) as PsOptimizerKind[];

/** The state names of `kind`, in file order. */
const stateNames = (kind: PsOptimizerKind): string[] => [...PS_STATE[kind].perElement, ...PS_STATE[kind].perRow];

/** Encodes the rows of one server's tables (one blob per table) and string metadata as safetensors bytes. */
export function encodeShard(blobs: readonly RowsBlob[], meta: Record<string, string>): Uint8Array {
  const where = 'encodeShard';
  const tensors = new Map<string, TensorIn>();
  for (const b of blobs) {
    const t = b.table;
    if (tensors.has(`${t}.keys`)) throw new CheckpointError(`${where}: table ${t} is given twice`);
    if (!KINDS.includes(b.optimizer)) throw new CheckpointError(`${where}: table ${t} has unknown optimizer '${b.optimizer}'`);
    const want = stateNames(b.optimizer);
    const got = Object.keys(b.state);
    if (got.length !== want.length || want.some((s) => !got.includes(s))) {
      throw new CheckpointError(`${where}: table ${t} (${b.optimizer}) must carry state ${want.join(', ') || 'none'}, got ${got.join(', ') || 'none'}`);
    }
    const n = b.keys.length;
    tensors.set(`${t}.keys`, { shape: [n], data: b.keys });
    tensors.set(`${t}.values`, { shape: [n, b.dim], data: b.values });
    tensors.set(`${t}.versions`, { shape: [n], data: b.versions });
    for (const s of PS_STATE[b.optimizer].perElement) tensors.set(`${t}.state.${s}`, { shape: [n, b.dim], data: b.state[s]!, dtype: 'F32' });
    for (const s of PS_STATE[b.optimizer].perRow) tensors.set(`${t}.state.${s}`, { shape: [n], data: b.state[s]!, dtype: 'I32' });
  }
  return encodeSafetensors(tensors, meta, where);
}

/**
 * Decodes a shard file's bytes; `source` (the file's path) starts every error, which names the
 * tensor. Blobs come back in file order.
 */
export function decodeShard(bytes: Uint8Array, source: string): { blobs: RowsBlob[]; meta: Record<string, string> } {
  const { tensors, metadata } = decodeSafetensors(bytes, source);
  const fail = (msg: string): never => { throw new CheckpointError(`${source}: ${msg}`); };
  const byTable = new Map<number, Map<string, SafeTensor>>();
  for (const [name, t] of tensors) {
    const m = /^(0|[1-9]\d*)\.(keys|values|versions|state\.[A-Za-z_]\w*)$/.exec(name);
    if (m === null) fail(`tensor '${name}' is not a shard tensor (expected <table>.keys, .values, .versions or .state.<name>)`);
    const id = Number(m![1]);
    if (!byTable.has(id)) byTable.set(id, new Map());
    byTable.get(id)!.set(m![2]!, t);
  }
  const blobs: RowsBlob[] = [];
  for (const [table, parts] of byTable) {
    const take = (part: string, dtype: 'I32' | 'F32', rank: number): SafeTensor => {
      const t = parts.get(part) ?? fail(`table ${table} has no tensor '${table}.${part}'`);
      if (t.dtype !== dtype || t.shape.length !== rank) fail(`tensor '${table}.${part}' must be ${dtype} of rank ${rank}, got ${t.dtype} [${t.shape.join(', ')}]`);
      return t;
    };
    const keys = take('keys', 'I32', 1);
    const n = keys.shape[0]!;
    const values = take('values', 'F32', 2);
    const dim = values.shape[1]!;
    const rows = (t: SafeTensor, part: string, want: number[]): void => {
      if (t.shape.some((d, i) => d !== want[i])) fail(`tensor '${table}.${part}' has shape [${t.shape.join(', ')}], expected [${want.join(', ')}] (${table}.keys has ${n} rows)`);
    };
    rows(values, 'values', [n, dim]);
    if (dim < 1) fail(`tensor '${table}.values' has dim 0`);
    const versions = take('versions', 'I32', 1);
    rows(versions, 'versions', [n]);
    const got = [...parts.keys()].filter((p) => p.startsWith('state.')).map((p) => p.slice(6));
    const kind = KINDS.find((k) => { const w = stateNames(k); return w.length === got.length && w.every((s) => got.includes(s)); })
      ?? fail(`table ${table} carries state ${got.join(', ') || 'none'}, which is no optimizer's (${KINDS.map((k) => `${k}: ${stateNames(k).join(', ') || 'none'}`).join('; ')})`);
    const state: Record<string, Float32Array | Int32Array> = {};
    for (const s of PS_STATE[kind].perElement) { const t = take(`state.${s}`, 'F32', 2); rows(t, `state.${s}`, [n, dim]); state[s] = t.data as Float32Array; }
    for (const s of PS_STATE[kind].perRow) { const t = take(`state.${s}`, 'I32', 1); rows(t, `state.${s}`, [n]); state[s] = t.data as Int32Array; }
    const k = keys.data as Int32Array;
    for (let i = 0; i < n; i++) if (k[i]! < 0) fail(`tensor '${table}.keys' has keys[${i}] = ${k[i]}, outside [0, 2^31)`);
    blobs.push({ table, dim, optimizer: kind, keys: k, values: values.data as Float32Array, versions: versions.data as Int32Array, state });
  }
  return { blobs, meta: metadata };
}
