/**
 * Image classification datasets: n uint8 images [n, C, H, W] and n integer labels. Record i has
 * fields x float32 [C, H, W] (pixel / 255, then the dataset's transform) and y int64 [] (its label).
 */
import type { Rng } from '../tensor/random.js';
import type { DataRecord, Dataset, FieldSpec, ImageDatasetSpec, IntArray } from './record.js';
import { ImageTransformer } from './transforms.js';
import type { ImageTransform } from './transforms.js';

export interface ImageDatasetOptions {
  /** n * C * H * W pixels, image-major, each image in [C, H, W] order. */
  pixels: Uint8Array;
  /** n labels. */
  labels: IntArray;
  /** One image's shape [C, H, W]. */
  shape: readonly [number, number, number];
  /** Applied to every record (default: none, x = pixel / 255). */
  transform?: ImageTransform;
  /** Names the dataset in record descriptions and errors. Default 'images'. */
  name?: string;
}

export type { ImageDatasetSpec };

/** A typed array in shared memory: itself when it already is, else a copy in a new SharedArrayBuffer. */
function shared<A extends Uint8Array | Uint16Array | Int32Array | Uint32Array>(a: A, make: (b: SharedArrayBuffer) => A): A {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const s = make(new SharedArrayBuffer(a.byteLength));
  s.set(a);
  return s;
}

/**
 * uint8 images with integer labels. Pixels and labels are moved into shared memory once (if they
 * are not there already), so a prefetch worker reads the same bytes without a copy.
 *
 * @example
 *   const ds = new ImageDataset({ pixels, labels, shape: [1, 28, 28], transform: { normalize: MNIST_NORMALIZE } });
 *   const [x, y] = ds.record(0); // Float32Array(784), Int32Array [label]
 *   const augmented = ds.withTransform({ normalize: MNIST_NORMALIZE, randomCrop: { padding: 2 } });
 */
export class ImageDataset implements Dataset {
  readonly size: number;
  readonly fields: readonly FieldSpec[];
  readonly pixels: Uint8Array;
  readonly labels: IntArray;
  readonly shape: readonly [number, number, number];
  readonly name: string;
  readonly transform: ImageTransformer;
  private readonly imageSize: number;

  constructor(opts: ImageDatasetOptions) {
    const name = opts.name ?? 'images';
    const who = `ImageDataset ${name}`;
    const { shape } = opts;
    if (!(Array.isArray(shape) && shape.length === 3 && shape.every((d) => Number.isInteger(d) && d >= 1))) {
      throw new Error(`${who}: shape must be [C, H, W] of positive integers, got ${JSON.stringify(shape)}`);
    }
    if (!(opts.pixels instanceof Uint8Array)) throw new Error(`${who}: pixels must be a Uint8Array, got ${Object.prototype.toString.call(opts.pixels)}`);
    const n = opts.labels.length;
    this.imageSize = shape[0] * shape[1] * shape[2];
    if (opts.pixels.length !== n * this.imageSize) {
      throw new Error(`${who}: pixels has ${opts.pixels.length} values; ${n} labels of images [${shape.join(', ')}] need ${n * this.imageSize}`);
    }
    if (n < 1) throw new Error(`${who}: labels is empty; a dataset needs at least one image`);
    this.size = n;
    this.name = name;
    this.shape = [shape[0], shape[1], shape[2]];
    this.transform = new ImageTransformer(opts.transform ?? {}, this.shape, `${who}: transform`);
    this.pixels = shared(opts.pixels, (b) => new Uint8Array(b));
    const l = opts.labels;
    this.labels = l instanceof Uint8Array ? shared(l, (b) => new Uint8Array(b)) : l instanceof Uint16Array ? shared(l, (b) => new Uint16Array(b))
      : l instanceof Int32Array ? shared(l, (b) => new Int32Array(b)) : shared(l, (b) => new Uint32Array(b));
    this.fields = [{ name: 'x', dtype: 'float32', shape: [...this.shape] }, { name: 'y', dtype: 'int64', shape: [] }];
  }

  static fromSpec(spec: ImageDatasetSpec): ImageDataset {
    return new ImageDataset(spec);
  }

  /** The same images and labels (shared, not copied) under another transform. */
  withTransform(transform: ImageTransform, name = this.name): ImageDataset {
    return new ImageDataset({ pixels: this.pixels, labels: this.labels, shape: this.shape, transform, name });
  }

  /** The uint8 pixels of image i (a view). */
  image(i: number): Uint8Array {
    if (!(Number.isInteger(i) && i >= 0 && i < this.size)) throw new RangeError(`${this.describe(i)} is outside [0, ${this.size})`);
    return this.pixels.subarray(i * this.imageSize, (i + 1) * this.imageSize);
  }

  label(i: number): number { return this.labels[i]!; }

  /** x: the transformed image (its random draws from `rng`); y: the label. */
  record(i: number, rng?: Rng): DataRecord {
    const img = this.image(i);
    return [this.transform.apply(img, this.transform.draw(rng)), Int32Array.of(this.labels[i]!)];
  }

  describe(i: number): string { return `${this.name}[${i}]`; }

  spec(): ImageDatasetSpec {
    const s: ImageDatasetSpec = { kind: 'images', pixels: this.pixels, labels: this.labels, shape: this.shape, name: this.name };
    if (Object.keys(this.transform.spec).length > 0) s.transform = this.transform.spec;
    return s;
  }
}
