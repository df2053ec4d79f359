/**
 * What a record is: typed fields with a dtype and a per-row shape, the `Dataset` interface every
 * kind implements, and the specs by which a prefetch worker rebuilds each kind. The kinds
 * themselves live in dataset.ts (tokens), images.ts and arrays.ts; this file imports none of them.
 */
import type { Rng } from '../tensor/random.js';
import type { ImageTransform } from './transforms.js';

/** Integer storage: bytes, 16-bit ids (vocabulary <= 65536), or 32-bit ids / labels. */
export type IntArray = Uint8Array | Uint16Array | Int32Array | Uint32Array;
/** Token storage (an `IntArray`). */
export type TokenArray = IntArray;

/** The dtypes a batch field can have (what the model's inputs take). */
export type FieldDType = 'int64' | 'float32';

/** One field of every record: its name (the batch field's name), dtype and per-row shape. */
export interface FieldSpec {
  readonly name: string;
  readonly dtype: FieldDType;
  /** Shape of one row, e.g. [T] for tokens, [C, H, W] for an image, [] for a scalar label. */
  readonly shape: readonly number[];
}

/** One field's values for one record, flat in row-major order: integer ids for int64, floats for float32. */
export type FieldValues = IntArray | Float32Array;
/** A record: one `FieldValues` per field, in the dataset's field order. */
export type DataRecord = readonly FieldValues[];

/**
 * Anything a `BatchMaker` reads. The BatchMaker validates every record against `fields` (a record
 * of the wrong shape is skipped like one `record` throws on), so `record` need not check its own
 * output.
 *
 * @example
 *   const ds: Dataset = new TokenDataset(tokens, 256);
 *   ds.fields; // [{ name: 'x', dtype: 'int64', shape: [256] }, { name: 'y', dtype: 'int64', shape: [256] }]
 */
export interface Dataset {
  /** Number of records: indices 0..size-1. */
  readonly size: number;
  readonly fields: readonly FieldSpec[];
  /**
   * Record i (views when possible, never to be written). `rng` is the generator of the batch the
   * record goes into, for random transforms; records of one batch draw from it in row order. May
   * throw for a bad record.
   */
  record(i: number, rng?: Rng): DataRecord;
  /** Names record i in warnings and errors ("tokens[1200..1457)", "mnist-train[12]"). */
  describe(i: number): string;
  /** A structured-clonable description that `datasetFromSpec` turns back into this dataset. */
  spec(): DatasetSpec;
}

export type TokenDatasetSpec = { kind: 'tokens'; tokens: TokenArray; ctx: number };
export type ImageDatasetSpec = {
  kind: 'images'; pixels: Uint8Array; labels: IntArray; shape: readonly [number, number, number]; name: string; transform?: ImageTransform;
};
export type ArrayDatasetSpec = { kind: 'arrays'; name: string; fields: { name: string; shape: number[]; data: FieldValues }[] };
/**
 * A dataset built by a module: `module` (an absolute path, a file: or data: URL) default-exports
 * `(args) => Dataset | Promise<Dataset>`; `args` must be structured-clonable.
 */
export type ModuleDatasetSpec = { kind: 'module'; module: string; args?: unknown };
/** What crosses to a prefetch worker: every dataset kind's description, one union. */
export type DatasetSpec = TokenDatasetSpec | ImageDatasetSpec | ArrayDatasetSpec | ModuleDatasetSpec;

/** Number of values in one row of `shape` (1 for a scalar). */
export const rowSize = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

