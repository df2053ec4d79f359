/**
 * The safetensors format (huggingface/safetensors), written and read without dependencies:
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  UTF-8 JSON header, padded with spaces so that N % 8 == 0:
 *              {"__metadata__": {string: string},
 *               name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 *   [rest]     raw little-endian tensor data; offsets are relative to the byte after the header
 *
 * Files written here lay tensors out back to back in header order, so the reference Python
 * reader (`safetensors.safe_open`, `safetensors.numpy.load_file`) reads them. The reader accepts
 * any order but checks what the reference checks and more: a header length inside the file, valid
 * JSON, known dtypes, shapes of non-negative integers, byte lengths equal to numel * element size,
 * and offsets that cover the data section exactly once (contiguous, no overlap, no trailing
 * bytes). Every failure is a `CheckpointError` whose message starts with the file it read.
 *
 * Decoded tensors are copies with their own aligned buffers; F16 and BF16 come back as raw
 * Uint16Array bits (as weft carries them elsewhere), BOOL as Uint8Array.
 *
 * @example
 *   const bytes = encodeSafetensors(new Map([['w', { shape: [2], data: Float32Array.of(1, 2) }]]), { step: '7' });
 *   const { tensors, metadata } = decodeSafetensors(bytes, 'model.safetensors');
 */
import type { DType, TypedArray } from '../ir/dtype.js';
import { fmt } from '../ir/shape.js';

/** Every failure to write or read a checkpoint; the message names the file and what is wrong. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

/** safetensors element types weft reads and writes. */
export type SafeDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U16' | 'U8' | 'BOOL';

interface DTypeInfo { bytes: number; weft: DType; array: new (buf: ArrayBuffer) => TypedArray }

const DTYPES: Record<SafeDType, DTypeInfo> = {
  F64: { bytes: 8, weft: 'float64', array: Float64Array },
  F32: { bytes: 4, weft: 'float32', array: Float32Array },
  F16: { bytes: 2, weft: 'float16', array: Uint16Array },
  BF16: { bytes: 2, weft: 'bfloat16', array: Uint16Array },
  I64: { bytes: 8, weft: 'int64', array: BigInt64Array },
  I32: { bytes: 4, weft: 'int32', array: Int32Array },
  I16: { bytes: 2, weft: 'int16', array: Int16Array },
  I8: { bytes: 1, weft: 'int8', array: Int8Array },
  U16: { bytes: 2, weft: 'uint16', array: Uint16Array },
  U8: { bytes: 1, weft: 'uint8', array: Uint8Array },
  BOOL: { bytes: 1, weft: 'bool', array: Uint8Array },
};

const isSafeDType = (d: unknown): d is SafeDType => typeof d === 'string' && Object.hasOwn(DTYPES, d);

/** The weft element type a safetensors dtype holds (F16 -> 'float16', carried as Uint16Array bits). */
export const weftDType = (d: SafeDType): DType => DTYPES[d].weft;

/** A tensor to write: `dtype` may be left out except for Uint16Array data (F16, BF16 or U16). */
export interface TensorIn {
  readonly shape: readonly number[];
  readonly data: TypedArray;
  readonly dtype?: SafeDType;
}

/** A decoded tensor: row-major data in its own buffer. */
export interface SafeTensor<A extends TypedArray = TypedArray> {
  dtype: SafeDType;
  shape: number[];
  data: A;
}

/** Named tensors, in order: a Map, or a plain object (own keys in insertion order). */
export type TensorsIn = ReadonlyMap<string, TensorIn> | Readonly<Record<string, TensorIn>>;

export interface Decoded {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

/** The reference reader refuses headers over 100 MB (safetensors' MAX_HEADER_SIZE). */
const MAX_HEADER = 100_000_000;

// Typed arrays are host-endian and the format is little-endian: refuse rather than byte-swap.
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

const count = (n: number | bigint): string => n.toLocaleString('en-US');

function dtypeOfArray(name: string, t: TensorIn, source: string): SafeDType {
  if (t.dtype !== undefined) {
    if (!isSafeDType(t.dtype)) throw new CheckpointError(`${source}: tensor '${name}' has unknown dtype '${String(t.dtype)}'`);
    return t.dtype;
  }
  const d = t.data;
  if (d instanceof Float32Array) return 'F32';
  if (d instanceof Float64Array) return 'F64';
  if (d instanceof BigInt64Array) return 'I64';
  if (d instanceof Int32Array) return 'I32';
  if (d instanceof Int16Array) return 'I16';
  if (d instanceof Int8Array) return 'I8';
  if (d instanceof Uint8Array) return 'U8';
  throw new CheckpointError(`${source}: tensor '${name}' holds a ${d.constructor.name}, which could be F16, BF16 or U16: give its dtype`);
}

/** The array type each dtype is carried in (a Float32Array cannot be written as F64). */
function checkArray(name: string, dtype: SafeDType, data: TypedArray, source: string): void {
  const want = DTYPES[dtype].array;
  if (!(data instanceof want)) throw new CheckpointError(`${source}: tensor '${name}' is ${dtype}, which is carried in a ${want.name}, got a ${data.constructor.name}`);
}

function checkShape(shape: unknown, what: string): number {
  if (!Array.isArray(shape)) throw new CheckpointError(`${what}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  let n = 1;
  for (const [i, d] of shape.entries()) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new CheckpointError(`${what}: shape ${JSON.stringify(shape)} has entry ${i} = ${JSON.stringify(d)}, expected a non-negative integer`);
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new CheckpointError(`${what}: shape ${JSON.stringify(shape)} has more elements than a file can hold`);
  return n;
}

/** Serializes named tensors (laid out in iteration order) and optional string metadata. */
export function encodeSafetensors(tensors: TensorsIn, metadata?: Readonly<Record<string, string>>, source = 'encodeSafetensors'): Uint8Array {
  const { parts, bytes } = safetensorsParts(tensors, metadata, source);
  const out = new Uint8Array(bytes);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/**
 * A safetensors file as the pieces to write in order (the header, then a zero-copy view of each
 * tensor's data), so a large file is streamed to disk without one buffer holding all of it.
 */
export function safetensorsParts(tensors: TensorsIn, metadata?: Readonly<Record<string, string>>, source = 'encodeSafetensors'): { parts: Uint8Array[]; bytes: number } {
  const entries: [string, TensorIn][] = tensors instanceof Map ? [...tensors] : Object.entries(tensors as Record<string, TensorIn>);
  const parts: Uint8Array[] = [];
  const typed = entries.map(([name, t]) => {
    const dtype = dtypeOfArray(name, t, source);
    checkArray(name, dtype, t.data, source);
    const n = checkShape(t.shape, `${source}: tensor '${name}'`);
    if (t.data.length !== n) throw new CheckpointError(`${source}: tensor '${name}' has shape ${fmt(t.shape)} (${count(n)} elements) but ${count(t.data.length)} values`);
    parts.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return [name, t.shape, dtype] as const;
  });
  const { head, bytes } = safetensorsHeader(typed, metadata, source);
  return { parts: [head, ...parts], bytes };
}

/**
 * The header of a safetensors file holding `entries` (name, shape, dtype) in that order, each
 * tensor's data following the last's; `bytes` the whole file's length and `sizes` each tensor's
 * element count. Data can then be written without being held all at once.
 */
export function safetensorsHeader(entries: readonly (readonly [string, readonly number[], SafeDType])[], metadata?: Readonly<Record<string, string>>, source = 'encodeSafetensors'): { head: Uint8Array; bytes: number; sizes: Map<string, number> } {
  if (!LITTLE_ENDIAN) throw new CheckpointError(`${source}: safetensors is little-endian and this host is big-endian`);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new CheckpointError(`${source}: metadata '${k}' must be a string, got ${typeof v}`);
    }
    header['__metadata__'] = { ...metadata };
  }
  let offset = 0;
  const sizes = new Map<string, number>();
  for (const [name, shape, dtype] of entries) {
    if (name === '' || name === '__metadata__') throw new CheckpointError(`${source}: '${name}' cannot be a tensor name`);
    if (sizes.has(name)) throw new CheckpointError(`${source}: tensor '${name}' appears twice`);
    const n = checkShape(shape, `${source}: tensor '${name}'`);
    const len = n * DTYPES[dtype].bytes;
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + len] };
    sizes.set(name, n);
    offset += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  head.fill(0x20, 8 + json.length, 8 + padded);
  return { head, bytes: head.length + offset, sizes };
}

/**
 * Parses and validates a safetensors file's bytes; `source` (the file's path) starts every error
 * message. Tensors come back in header order.
 */
export function decodeSafetensors(bytes: Uint8Array, source: string): Decoded {
  const fail = (msg: string): never => { throw new CheckpointError(`${source}: ${msg}`); };
  if (!LITTLE_ENDIAN) fail('safetensors is little-endian and this host is big-endian');
  if (bytes.length < 8) fail(`file is ${count(bytes.length)} bytes, too short to hold the 8-byte header length (truncated?)`);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) fail(`header length ${count(n64)} (first 8 bytes) runs past the end of the file: only ${count(bytes.length - 8)} bytes follow (truncated, or not a safetensors file?)`);
  const n = Number(n64);
  if (n > MAX_HEADER) fail(`header length ${count(n)} exceeds the format's limit of ${count(MAX_HEADER)} bytes`);
  if (n < 2 || bytes[8] !== 0x7b) fail(`header does not start with '{' (not a safetensors file?)`);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) fail('header must be a JSON object');

  const metadata: Record<string, string> = {};
  const specs: { name: string; dtype: SafeDType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, spec] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) fail('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(spec as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ '${k}' must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v as string;
      }
      continue;
    }
    specs.push({ name, ...tensorSpec(name, spec, fail) });
  }

  // The offsets must tile the data section: sorted by (begin, end), each begins where the last ended.
  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  let cursor = 0;
  for (const s of [...specs].sort((a, b) => a.begin - b.begin || a.end - b.end)) {
    if (s.end > dataLen) fail(`tensor '${s.name}' data_offsets [${s.begin}, ${s.end}] run past the end of the data (${count(dataLen)} bytes; truncated?)`);
    if (s.begin < cursor) fail(`tensor '${s.name}' data_offsets [${s.begin}, ${s.end}] overlap the previous tensor, which ends at ${cursor}`);
    if (s.begin > cursor) fail(`tensor '${s.name}' data_offsets [${s.begin}, ${s.end}] leave a gap: the previous tensor ends at ${cursor}`);
    cursor = s.end;
  }
  if (cursor !== dataLen) fail(`${count(dataLen - cursor)} bytes after the last tensor (data ends at ${count(cursor)} of ${count(dataLen)})`);

  const tensors = new Map<string, SafeTensor>();
  for (const s of specs) {
    const at = bytes.byteOffset + dataStart;
    const data = new DTYPES[s.dtype].array(bytes.buffer.slice(at + s.begin, at + s.end) as ArrayBuffer);
    tensors.set(s.name, { dtype: s.dtype, shape: s.shape, data });
  }
  return { tensors, metadata };
}

function tensorSpec(name: string, spec: unknown, fail: (msg: string) => never): { dtype: SafeDType; shape: number[]; begin: number; end: number } {
  const what = `tensor '${name}'`;
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) fail(`${what} must be an object {dtype, shape, data_offsets}, got ${JSON.stringify(spec)}`);
  const o = spec as Record<string, unknown>;
  const extra = Object.keys(o).filter((k) => k !== 'dtype' && k !== 'shape' && k !== 'data_offsets');
  if (extra.length) fail(`${what} has unknown keys ${extra.join(', ')} (expected dtype, shape, data_offsets)`);
  if (!isSafeDType(o['dtype'])) fail(`${what} has unknown dtype ${JSON.stringify(o['dtype'])} (known: ${Object.keys(DTYPES).join(', ')})`);
  const dtype = o['dtype'] as SafeDType;
  let numel = 0;
  try {
    numel = checkShape(o['shape'], what);
  } catch (e) {
    fail((e as Error).message);
  }
  const off = o['data_offsets'];
  const okOffset = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (!Array.isArray(off) || off.length !== 2 || !okOffset(off[0]) || !okOffset(off[1]) || off[0] > off[1]) {
    fail(`${what} data_offsets must be [begin, end] with integers 0 <= begin <= end, got ${JSON.stringify(off)}`);
  }
  const [begin, end] = off as [number, number];
  const want = numel * DTYPES[dtype].bytes;
  if (end - begin !== want) fail(`${what} is ${dtype} ${fmt(o['shape'] as number[])}, which needs ${count(want)} bytes, but data_offsets [${begin}, ${end}] hold ${count(end - begin)}`);
  return { dtype, shape: [...(o['shape'] as number[])], begin, end };
}
