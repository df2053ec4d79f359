/**
 * Datasets of typed records. A dataset declares its fields (name, dtype, per-row shape); record i
 * is one flat array per field, in field order, and a batch stacks B records into one array per
 * field of shape [B, ...rowShape] (types in record.ts). The kinds:
 *
 * - `TokenDataset`: language-modelling windows, fields x int64 [T] and y int64 [T] (y is x shifted
 *   left by one; both are views of one window of T + 1 tokens).
 * - `ImageDataset` (images.ts): uint8 images, fields x float32 [C, H, W] and y int64 [] (a label).
 * - `ArrayDataset` (arrays.ts): rows of typed arrays in memory, any fields (PyTorch's TensorDataset).
 * - a module dataset (arrays.ts): whatever a module's default export builds from its arguments.
 *
 * A dataset is described by a structured-clonable `DatasetSpec`, so a prefetch worker can rebuild it
 * in its own thread (`datasetFromSpec`); its tokens or pixels travel in a SharedArrayBuffer (or are
 * copied once when the spec is made), never per batch.
 */
import { ArrayDataset, moduleDataset } from './arrays.js';
import { ImageDataset } from './images.js';
import type { DataRecord, Dataset, DatasetSpec, FieldSpec, TokenArray } from './record.js';

export type { ArrayDatasetSpec, DataRecord, Dataset, DatasetSpec, FieldDType, FieldSpec, FieldValues, ImageDatasetSpec, IntArray, ModuleDatasetSpec, TokenArray, TokenDatasetSpec } from './record.js';
export { rowSize } from './record.js';

/**
 * One 1-D token array; record i is the window tokens[i .. i + ctx + 1), as fields x = window[0..ctx)
 * and y = window[1..ctx + 1).
 *
 * `size` is `tokens.length - ctx - 1`, the range torch_brown.py draws starts from
 * (`torch.randint(0, len - T - 1)`, exclusive), so the very last window is never a record: random
 * starts and `evalWindows` then index records exactly as the reference does.
 *
 * @example
 *   const ds = new TokenDataset(brownSplit().train, 256);
 *   const [x, y] = ds.record(0); // two views of ds.window(0), 256 tokens each
 */
export class TokenDataset implements Dataset {
  readonly size: number;
  readonly fields: readonly FieldSpec[];

  constructor(readonly tokens: TokenArray, readonly ctx: number) {
    if (!(Number.isInteger(ctx) && ctx >= 1)) throw new Error(`TokenDataset: ctx must be a positive integer, got ${ctx}`);
    this.size = tokens.length - ctx - 1;
    if (this.size < 1) throw new Error(`TokenDataset: ${tokens.length} tokens hold no window of ctx + 1 = ${ctx + 1} with a start in [0, len - ctx - 1); need at least ${ctx + 2}`);
    this.fields = [{ name: 'x', dtype: 'int64', shape: [ctx] }, { name: 'y', dtype: 'int64', shape: [ctx] }];
  }

  /** The ctx + 1 tokens of record i (a view). */
  window(i: number): TokenArray {
    if (!(Number.isInteger(i) && i >= 0 && i < this.size)) throw new RangeError(`TokenDataset: record ${i} is outside [0, ${this.size})`);
    return this.tokens.subarray(i, i + this.ctx + 1);
  }

  /** x and y as views of the window; a window of the wrong length gives fields the BatchMaker rejects. */
  record(i: number): DataRecord {
    const w = this.window(i);
    return [w.subarray(0, w.length - 1), w.subarray(1)];
  }

  describe(i: number): string { return `tokens[${i}..${i + this.ctx + 1})`; }

  /**
   * Tokens in a SharedArrayBuffer are shared with a worker; others are copied into it. A view of a
   * larger buffer (e.g. `brownSplit().val`) is compacted first, since structured cloning a view
   * copies its whole underlying buffer.
   */
  spec(): DatasetSpec {
    const t = this.tokens;
    const whole = t.buffer instanceof SharedArrayBuffer || t.byteLength === t.buffer.byteLength;
    return { kind: 'tokens', tokens: whole ? t : t.slice(), ctx: this.ctx };
  }
}

/**
 * The dataset a spec describes (in a prefetch worker: the main thread's dataset, sharing its
 * memory). Module specs import their module: use `loadDataset` for those.
 */
export function datasetFromSpec(spec: DatasetSpec): Dataset {
  if (spec.kind === 'tokens') return new TokenDataset(spec.tokens, spec.ctx);
  if (spec.kind === 'images') return ImageDataset.fromSpec(spec);
  if (spec.kind === 'arrays') return ArrayDataset.fromSpec(spec);
  if (spec.kind === 'module') throw new Error(`datasetFromSpec: dataset module ${spec.module.slice(0, 80)} must be loaded with loadDataset (it imports the module)`);
  throw new Error(`datasetFromSpec: unknown dataset kind ${JSON.stringify((spec as { kind: unknown }).kind)}`);
}

/** Any spec's dataset, importing the module of a module spec. */
export async function loadDataset(spec: DatasetSpec): Promise<Dataset> {
  return spec.kind === 'module' ? moduleDataset(spec) : datasetFromSpec(spec);
}

/**
 * The fixed evaluation windows of torch_brown.py's `evaluate`: start i is
 * `i * (len - T - 1) // n` for i in 0..n-1 (used with batch 1, in order).
 */
export function evalWindows(dataset: { size: number }, n = 20): number[] {
  if (!(Number.isInteger(n) && n >= 1)) throw new Error(`evalWindows: n must be a positive integer, got ${n}`);
  return Array.from({ length: n }, (_, i) => Math.floor((i * dataset.size) / n));
}
